//! What the log tests share: a writer that keeps what it is given, and a fixed clock.

use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Keeps every byte written to it; clones share the bytes.
#[derive(Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// A writer for a layer (`with_writer`).
    pub fn writer(&self) -> impl Fn() -> Buffer + Send + Sync + 'static {
        let buffer = self.clone();
        move || buffer.clone()
    }
}

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The same instant for every line, so two formatters' lines compare equal.
pub struct Fixed;

impl FormatTime for Fixed {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str("2026-01-05T10:00:00.123456Z")
    }
}
