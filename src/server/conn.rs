//! One connection's bookkeeping: requests in flight (to close idle connections, HTTP/2 pings
//! or not), the per-client-IP cap, the response body that reports when it is done, and what
//! a WebSocket upgraded from the connection holds so that it stays counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::response::Body;
use crate::telemetry::metrics::OpenConnection;

/// Requests in flight on one connection and when it last became idle.
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `started` at which `in_flight` last dropped to zero.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request as started; it ends when the guard drops (with its response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// How long the connection has had nothing in flight, or `None` while it has.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Completes once the connection has been idle for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let wait = match self.idle_for() {
                Some(idle) if idle >= timeout => return,
                Some(idle) => timeout - idle,
                None => timeout,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in flight; dropping it ends it.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is done or dropped.
pub struct Tracked {
    inner: Body,
    guard: Option<InFlight>,
}

impl Tracked {
    pub fn new(inner: Body, guard: InFlight) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What keeps a connection counted: its place under `server.max_connections`, its per-IP
/// slot, and the sender that graceful shutdown waits on. Held by the connection's task and by
/// every WebSocket upgraded from it, so an upgraded socket is still a connection.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
    _alive: mpsc::Sender<()>,
    /// Counts the connection in `gatehouse_open_connections` while it lives.
    _open: OpenConnection,
}

impl Slot {
    pub fn new(
        permit: OwnedSemaphorePermit,
        ip: IpSlot,
        alive: mpsc::Sender<()>,
        open: OpenConnection,
    ) -> Arc<Slot> {
        Arc::new(Slot {
            _permit: permit,
            _ip: ip,
            _alive: alive,
            _open: open,
        })
    }
}

/// Put into the extensions of a request that may upgrade, so that the socket it becomes can
/// hold its connection (see [`ConnHandle::hold`]).
#[derive(Clone)]
pub struct ConnHandle {
    slot: Arc<Slot>,
    activity: Arc<Activity>,
}

impl ConnHandle {
    pub fn new(slot: Arc<Slot>, activity: Arc<Activity>) -> ConnHandle {
        ConnHandle { slot, activity }
    }

    /// Keeps the connection counted and busy (never idle-closed) until the hold drops.
    pub fn hold(&self) -> ConnHold {
        ConnHold {
            _slot: Arc::clone(&self.slot),
            _busy: self.activity.begin(),
        }
    }
}

/// A WebSocket's hold on the connection it came from.
pub struct ConnHold {
    _slot: Arc<Slot>,
    _busy: InFlight,
}

/// Open connections per client IP.
pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection counted against its IP; dropping it frees the slot.
pub struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    /// `max == 0` means no cap.
    pub fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` when it has `max` open.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 {
            return Some(IpSlot(Arc::clone(self), ip));
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot(Arc::clone(self), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if self.0.max == 0 {
            return;
        }
        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_ip_cap_counts_open_connections_per_address() {
        let limits = PerIp::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = limits.acquire(a).unwrap();
        let _second = limits.acquire(a).unwrap();
        assert!(limits.acquire(a).is_none(), "a third from the same IP");
        assert!(limits.acquire(b).is_some(), "another IP is unaffected");
        drop(first);
        assert!(
            limits.acquire(a).is_some(),
            "a closed connection frees its slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let activity = Activity::new();
        let request = activity.begin();
        let idle = tokio::time::timeout(
            Duration::from_secs(5),
            activity.idle(Duration::from_secs(1)),
        );
        assert!(idle.await.is_err(), "busy for 5 s: never idle");
        drop(request);
        tokio::time::timeout(
            Duration::from_millis(1100),
            activity.idle(Duration::from_secs(1)),
        )
        .await
        .expect("idle one second after the last request ended");
    }
}
