//! When a request may be sent again, and the body slot that makes it possible.
//!
//! Rules:
//! 1. A request is sent again only when it failed before its response head arrived, and only
//!    while its body was never polled: the body waits in a [`BodySlot`] and a [`Lent`] takes
//!    it out on the first poll, so a body that was (even partly) forwarded cannot come back.
//! 2. A connection that could not be made sent nothing: the request goes to another address
//!    whatever its method (rule 1 still holds; nothing polled the body).
//! 3. A request that was written and then failed (the pooled connection was closed under it,
//!    or the address reset it) is sent once more, on a fresh connection, only when its method
//!    is safe to repeat: GET, HEAD, OPTIONS, and PUT/DELETE with `retry_idempotent_writes`.
//! 4. An answer, whatever its status, is never retried, and neither is a request whose
//!    connection received any byte after the request was written (part of a response head
//!    counts: see [`super::clients::Answered`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Method;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// Rule 3: whether a request written to an upstream may be written again.
pub fn is_repeatable(method: &Method, idempotent_writes: bool) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => true,
        Method::PUT | Method::DELETE => idempotent_writes,
        _ => false,
    }
}

/// A request body parked until an attempt polls it.
pub struct BodySlot<B> {
    /// The attempt allowed to take the body, and the body while nobody took it.
    inner: Mutex<(u32, Option<B>)>,
}

impl<B> BodySlot<B> {
    pub fn new(body: B) -> Arc<BodySlot<B>> {
        Arc::new(BodySlot {
            inner: Mutex::new((0, Some(body))),
        })
    }

    /// The body for the next attempt, or `None` when an earlier attempt polled it (rule 1).
    /// An earlier attempt's [`Lent`] can no longer take it.
    pub fn lend(self: &Arc<Self>) -> Option<Lent<B>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.1.as_ref()?;
        inner.0 = inner.0.wrapping_add(1);
        Some(Lent {
            slot: Arc::clone(self),
            attempt: inner.0,
            body: None,
        })
    }

    fn with<R>(&self, attempt: u32, f: impl FnOnce(Option<&B>) -> R) -> R {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(inner.1.as_ref().filter(|_| inner.0 == attempt))
    }

    fn take(&self, attempt: u32) -> Option<B> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.0 == attempt {
            inner.1.take()
        } else {
            None
        }
    }
}

/// One attempt's view of the body: takes it out of the slot on its first poll.
pub struct Lent<B> {
    slot: Arc<BodySlot<B>>,
    attempt: u32,
    body: Option<B>,
}

impl<B> HttpBody for Lent<B>
where
    B: HttpBody<Data = Bytes, Error = Box<dyn std::error::Error + Send + Sync>> + Unpin,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.body.is_none() {
            this.body = this.slot.take(this.attempt);
        }
        match &mut this.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            // A later attempt has it: this one is over.
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self
                .slot
                .with(self.attempt, |b| b.is_none_or(HttpBody::is_end_stream)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.slot.with(self.attempt, |b| {
                b.map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};

    type Boxed =
        http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn body(text: &'static str) -> Boxed {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn an_unpolled_body_is_lent_again_and_a_polled_one_never() {
        let slot = BodySlot::new(body("payload"));
        let first = slot.lend().unwrap();
        assert_eq!(first.size_hint().exact(), Some(7), "hyper sees the length");
        drop(first);
        let second = slot.lend().expect("never polled: may be sent again");
        let bytes = second.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "payload");
        assert!(slot.lend().is_none(), "polled once: never sent twice");
    }

    #[tokio::test]
    async fn an_earlier_attempt_cannot_take_the_body_back() {
        let slot = BodySlot::new(body("x"));
        let stale = slot.lend().unwrap();
        let fresh = slot.lend().unwrap();
        assert!(stale.collect().await.unwrap().to_bytes().is_empty());
        assert_eq!(fresh.collect().await.unwrap().to_bytes(), "x");
    }

    #[test]
    fn only_safe_methods_repeat_and_writes_only_when_configured() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(is_repeatable(&m, false), "{m}");
        }
        for m in [Method::PUT, Method::DELETE] {
            assert!(!is_repeatable(&m, false), "{m}");
            assert!(is_repeatable(&m, true), "{m}");
        }
        for m in [Method::POST, Method::PATCH] {
            assert!(!is_repeatable(&m, true), "{m}");
        }
    }
}
