//! Log lines gathered per worker thread and handed to the background writer in batches, so a
//! request's access-log line costs an append to a local buffer, not a cross-thread wakeup.
//!
//! Rules:
//! 1. Only threads that asked ([`Batching::start`], the server's workers) batch; every other
//!    thread's lines go to the background writer one by one, as before.
//! 2. A batch goes out when it reaches [`BATCH_BYTES`], at every [`flush`] (each worker runs
//!    one every [`FLUSH_EVERY`]) and when the thread stops batching or ends: a graceful
//!    shutdown loses no line, and an idle instance's lines are at most that late.
//! 3. Lines are whole: the formatter writes each event in one `write_all`, and a batch is
//!    only cut between writes.

use std::cell::RefCell;
use std::io::{self, Write};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// A batch this large goes out at once.
pub const BATCH_BYTES: usize = 32 * 1024;
/// How often a worker hands over what it gathered.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// This thread's pending lines and where they go.
struct Pending {
    lines: Vec<u8>,
    out: Option<Box<dyn Write>>,
}

impl Pending {
    fn send(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        if let Some(out) = &mut self.out {
            // The background writer is lossless; an error here means it has stopped.
            let _ = out.write_all(&self.lines);
        }
        self.lines.clear();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.send();
    }
}

thread_local! {
    /// `Some` while this thread batches.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// While alive, log lines written on this thread are batched; dropping it sends the rest.
#[must_use = "batching stops when this is dropped"]
pub struct Batching(());

impl Batching {
    pub fn start() -> Batching {
        PENDING.with(|p| {
            p.borrow_mut().get_or_insert_with(|| Pending {
                lines: Vec::with_capacity(BATCH_BYTES),
                out: None,
            });
        });
        Batching(())
    }
}

impl Drop for Batching {
    fn drop(&mut self) {
        // Dropping the `Pending` sends what it holds.
        let _ = PENDING.try_with(|p| p.borrow_mut().take());
    }
}

/// Hands this thread's pending lines to the background writer now.
pub fn flush() {
    let _ = PENDING.try_with(|p| {
        if let Ok(mut pending) = p.try_borrow_mut()
            && let Some(pending) = pending.as_mut()
        {
            pending.send();
        }
    });
}

/// Wraps the background writer: lines of batching threads are gathered, others pass through.
#[derive(Clone)]
pub struct Batched<W> {
    inner: W,
}

impl<W> Batched<W> {
    pub fn new(inner: W) -> Self {
        Batched { inner }
    }
}

impl<'a, W> MakeWriter<'a> for Batched<W>
where
    W: MakeWriter<'a> + Clone + Write + 'static,
{
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { batched: self }
    }
}

/// One event's output.
pub struct Line<'a, W> {
    batched: &'a Batched<W>,
}

impl<'a, W> Write for Line<'a, W>
where
    W: MakeWriter<'a> + Clone + Write + 'static,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let gathered = PENDING.try_with(|p| {
            // A line logged while this thread's batch is being sent goes straight through.
            let Ok(mut pending) = p.try_borrow_mut() else {
                return false;
            };
            let Some(pending) = pending.as_mut() else {
                return false;
            };
            if pending.out.is_none() {
                pending.out = Some(Box::new(self.batched.inner.clone()));
            }
            pending.lines.extend_from_slice(buf);
            if pending.lines.len() >= BATCH_BYTES {
                pending.send();
            }
            true
        });
        if gathered == Ok(true) {
            Ok(buf.len())
        } else {
            self.batched.inner.make_writer().write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Counts the writes that reach it and keeps their bytes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(usize, Vec<u8>)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut seen = self.0.lock().unwrap();
            seen.0 += 1;
            seen.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    fn line(batched: &Batched<Sink>, text: &str) {
        batched.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_thread_that_does_not_batch_writes_each_line_at_once() {
        let sink = Sink::default();
        let batched = Batched::new(sink.clone());
        std::thread::spawn(move || {
            line(&batched, "one\n");
            line(&batched, "two\n");
        })
        .join()
        .unwrap();
        assert_eq!(*sink.0.lock().unwrap(), (2, b"one\ntwo\n".to_vec()));
    }

    #[test]
    fn a_batching_thread_sends_its_lines_in_one_write_at_flush_and_when_it_stops() {
        let sink = Sink::default();
        let batched = Batched::new(sink.clone());
        let seen = sink.clone();
        std::thread::spawn(move || {
            let batching = Batching::start();
            line(&batched, "a\n");
            line(&batched, "b\n");
            assert_eq!(seen.0.lock().unwrap().0, 0, "gathered, not yet written");
            flush();
            assert_eq!(*seen.0.lock().unwrap(), (1, b"a\nb\n".to_vec()));
            line(&batched, "c\n");
            drop(batching);
            assert_eq!(
                *seen.0.lock().unwrap(),
                (2, b"a\nb\nc\n".to_vec()),
                "nothing lost"
            );
            line(&batched, "d\n");
        })
        .join()
        .unwrap();
        assert_eq!(
            sink.0.lock().unwrap().0,
            3,
            "after it stopped, lines go one by one"
        );
    }

    #[test]
    fn a_full_batch_goes_out_without_waiting_for_a_flush() {
        let sink = Sink::default();
        let batched = Batched::new(sink.clone());
        let seen = sink.clone();
        std::thread::spawn(move || {
            let _batching = Batching::start();
            let long = "x".repeat(1023) + "\n";
            for _ in 0..BATCH_BYTES / 1024 {
                line(&batched, &long);
            }
            let (writes, bytes) = &*seen.0.lock().unwrap();
            assert_eq!((*writes, bytes.len()), (1, BATCH_BYTES));
        })
        .join()
        .unwrap();
    }
}
