//! Streaming bodies through: each frame (data or trailers) is passed on the moment it
//! arrives, never collected; the only limit on a long body is idle time. One [`IdleClock`]
//! is shared by a request's body and its response's, so an exchange is idle only when
//! neither direction has moved for the route's `stream_idle_timeout` (a gRPC stream whose
//! client is silent while the server talks stays up).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// When an exchange (or a relayed socket) last moved.
#[derive(Debug)]
pub struct IdleClock {
    started: Instant,
    last_ms: AtomicU64,
}

impl IdleClock {
    pub fn new() -> Arc<IdleClock> {
        Arc::new(IdleClock {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Something moved now.
    pub fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// When the exchange becomes idle for `timeout` if nothing moves before.
    pub fn deadline(&self, timeout: Duration) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + timeout
    }

    /// Completes once nothing moved for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let deadline = self.deadline(timeout);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The body stalled: nothing moved either way for the route's `stream_idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("stream idle for {0:?} (stream_idle_timeout)")]
pub struct StreamIdle(pub Duration);

/// The request body grew past the route's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes (max_body)")]
pub struct BodyLimit(pub u64);

/// The body length a request declares in `Content-Length`, when it declares a valid one.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// A body passed through frame by frame, ended with [`StreamIdle`] when the exchange stalls
/// and with [`BodyLimit`] when it outgrows its limit.
pub struct Watched<B> {
    inner: B,
    clock: Arc<IdleClock>,
    timeout: Duration,
    /// The limit and the bytes still allowed under it.
    budget: Option<(u64, u64)>,
    /// Armed only once the body first has to wait, so bodies that are ready at once cost
    /// no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Watched<B> {
    pub fn new(inner: B, clock: Arc<IdleClock>, timeout: Duration) -> Self {
        Self {
            inner,
            clock,
            timeout,
            budget: None,
            timer: None,
        }
    }

    /// Ends the body with [`BodyLimit`] once more than `max` bytes went through.
    pub fn limited(mut self, max: Option<u64>) -> Self {
        self.budget = max.map(|max| (max, max));
        self
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &frame {
                this.clock.touch();
                if let (Some((max, left)), Some(data)) = (&mut this.budget, frame.data_ref()) {
                    let len = data.len() as u64;
                    if len > *left {
                        return Poll::Ready(Some(Err(Box::new(BodyLimit(*max)))));
                    }
                    *left -= len;
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        loop {
            let deadline = this.clock.deadline(this.timeout);
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            ready!(timer.as_mut().poll(cx));
            // The timer fired; the other direction may have moved meanwhile.
            if Instant::now() >= this.clock.deadline(this.timeout) {
                return Poll::Ready(Some(Err(Box::new(StreamIdle(this.timeout)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    type Chunks = StreamBody<
        futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>,
    >;

    /// A body that yields a chunk after each of `gaps`.
    fn paced(gaps: &[u64]) -> Chunks {
        let gaps = gaps.to_vec();
        let stream = futures_util::stream::unfold(0usize, move |i| {
            let gaps = gaps.clone();
            async move {
                let gap = *gaps.get(i)?;
                tokio::time::sleep(Duration::from_millis(gap)).await;
                Some((Ok(Frame::data(Bytes::from_static(b"x"))), i + 1))
            }
        });
        StreamBody::new(Box::pin(stream) as futures_util::stream::BoxStream<'static, _>)
    }

    #[tokio::test]
    async fn a_body_passes_up_to_its_limit_and_ends_with_an_error_one_byte_past_it() {
        let exact = Watched::new(paced(&[0; 5]), IdleClock::new(), Duration::from_secs(1));
        let bytes = exact.limited(Some(5)).collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 5, "exactly at the limit is allowed");

        let mut over =
            Watched::new(paced(&[0; 6]), IdleClock::new(), Duration::from_secs(1)).limited(Some(5));
        for _ in 0..5 {
            assert!(over.frame().await.unwrap().is_ok());
        }
        let err = over.frame().await.unwrap().unwrap_err();
        assert!(
            matches!(err.downcast_ref::<BodyLimit>(), Some(BodyLimit(5))),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_moving_is_never_cut_however_long_it_lasts() {
        let body = Watched::new(paced(&[900; 100]), IdleClock::new(), Duration::from_secs(1));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 100, "90 s of chunks 0.9 s apart");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_idle_for_the_timeout_ends_with_an_error() {
        let mut body = Watched::new(paced(&[10, 1500]), IdleClock::new(), Duration::from_secs(1));
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<StreamIdle>(), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_in_the_other_direction_keeps_a_silent_body_alive() {
        let clock = IdleClock::new();
        let mut quiet = Watched::new(paced(&[3000]), Arc::clone(&clock), Duration::from_secs(1));
        let talker = Arc::clone(&clock);
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                talker.touch();
            }
        });
        assert!(
            quiet.frame().await.unwrap().is_ok(),
            "3 s of silence on this side, the other side moved every 0.5 s"
        );
    }
}
