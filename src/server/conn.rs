//! One connection's bookkeeping: requests in flight (to close idle connections, HTTP/2 pings
//! or not), the time an HTTP/1 client has been sending a request head (to drop slow ones),
//! the per-client-IP cap, the response body that reports when it is done, and what a
//! WebSocket upgraded from the connection holds so that it stays counted.
//!
//! Both deadlines share one timer per connection that moves only when it has to: it is
//! pulled earlier when a head starts, and left alone while requests come and go, so a
//! request costs no timer of its own (see [`Expiry`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, Sleep};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::response::Body;
use crate::tap::{Tap, Tapped};
use crate::telemetry::metrics::OpenConnection;

/// `head_since_ms` when no request head is being received.
const NO_HEAD: u64 = u64::MAX;

/// Requests in flight on one connection, when it last became idle, and when the head of the
/// next request started to arrive.
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `started` at which `in_flight` last dropped to zero.
    idle_since_ms: AtomicU64,
    /// Milliseconds since `started` at which the first bytes of a request head came in while
    /// nothing was in flight, until that request starts; [`NO_HEAD`] otherwise. Bytes read
    /// while a request is in flight are its body as far as this can tell, so a head that a
    /// client pipelines behind a request is not timed: `idle_timeout` bounds it instead.
    head_since_ms: AtomicU64,
}

impl Activity {
    /// `head_started`: the connection opens with a request head on its way (HTTP/1: the
    /// first bytes are already there), so the head timeout runs from now.
    pub fn new(head_started: bool) -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(if head_started { 0 } else { NO_HEAD }),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request as started; it ends when the guard drops (with its response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since_ms.store(NO_HEAD, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// Bytes came in: with nothing in flight, they begin the next request's head.
    fn received(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since_ms.load(Ordering::Acquire) == NO_HEAD
        {
            self.head_since_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// When the connection expires if nothing changes, and why: `head` (when given) after a
    /// request head began to arrive, else `idle` after it last became idle; `None` while busy.
    fn due(&self, idle: Duration, head: Option<Duration>) -> Option<(Instant, Expired)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, after: Duration| self.started + Duration::from_millis(ms) + after;
        let head_since = self.head_since_ms.load(Ordering::Acquire);
        // A connection part way through a head is not idle: the head has its own time, whatever
        // `idle_timeout` says (a graceful close would wait for the head to finish).
        match head {
            Some(head) if head_since != NO_HEAD => Some((at(head_since, head), Expired::SlowHead)),
            _ => Some((
                at(self.idle_since_ms.load(Ordering::Acquire), idle),
                Expired::Idle,
            )),
        }
    }
}

/// Why a connection's time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing in flight for `server.idle_timeout`.
    Idle,
    /// A request head still unfinished after `server.header_read_timeout`.
    SlowHead,
}

/// Completes once the connection has had nothing in flight for `idle`, or (with `head`) a
/// request head has been arriving for longer than `head` (a client too slow to send its
/// headers). Polled after the connection, so it sees a head start as soon as it happens.
pub struct Expiry {
    activity: Arc<Activity>,
    idle: Duration,
    head: Option<Duration>,
    timer: Pin<Box<Sleep>>,
}

impl Expiry {
    pub fn new(activity: Arc<Activity>, idle: Duration, head: Option<Duration>) -> Expiry {
        let first = activity
            .due(idle, head)
            .map_or_else(|| Instant::now() + idle, |(at, _)| at);
        Expiry {
            activity,
            idle,
            head,
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }
}

impl Future for Expiry {
    type Output = Expired;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Expired> {
        let this = &mut *self;
        loop {
            // Only ever pulled earlier here: a later deadline waits for the timer to fire.
            if let Some((due, _)) = this.activity.due(this.idle, this.head)
                && due < this.timer.deadline()
            {
                this.timer.as_mut().reset(due);
            }
            ready!(this.timer.as_mut().poll(cx));
            let now = Instant::now();
            match this.activity.due(this.idle, this.head) {
                Some((due, why)) if due <= now => return Poll::Ready(why),
                Some((due, _)) => this.timer.as_mut().reset(due),
                None => this.timer.as_mut().reset(now + this.idle),
            }
        }
    }
}

/// A client's TCP connection that tells its [`Activity`] when bytes arrive.
pub type ClientStream = Tapped<Arc<Activity>>;

impl Tap for Arc<Activity> {
    fn read(&self) {
        self.received();
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

    /// An expiry of `activity` after `idle` seconds idle, or `head` seconds into a head.
    fn expiry(activity: &Arc<Activity>, idle: u64, head: Option<u64>) -> Pin<Box<Expiry>> {
        let head = head.map(Duration::from_secs);
        Box::pin(Expiry::new(
            Arc::clone(activity),
            Duration::from_secs(idle),
            head,
        ))
    }

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
        let activity = Activity::new(false);
        let request = activity.begin();
        let mut expiry = expiry(&activity, 1, None);
        let busy = tokio::time::timeout(Duration::from_secs(5), &mut expiry).await;
        assert!(busy.is_err(), "busy for 5 s: never idle");
        drop(request);
        let why = tokio::time::timeout(Duration::from_millis(1100), &mut expiry)
            .await
            .expect("idle one second after the last request ended");
        assert_eq!(why, Expired::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_outlives_the_head_timeout_until_a_head_starts() {
        let activity = Activity::new(false);
        let mut expiry = expiry(&activity, 60, Some(2));
        let idle = tokio::time::timeout(Duration::from_secs(10), &mut expiry).await;
        assert!(
            idle.is_err(),
            "10 s idle with no head: kept for idle_timeout"
        );
        activity.received();
        let started = Instant::now();
        let why = tokio::time::timeout(Duration::from_millis(2100), &mut expiry)
            .await
            .expect("a head still unfinished 2 s after it began ends the connection");
        assert_eq!(why, Expired::SlowHead);
        assert!(started.elapsed() >= Duration::from_secs(2), "not before");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_in_progress_gets_the_head_timeout_even_past_idle_timeout() {
        let activity = Activity::new(true);
        let mut expiry = expiry(&activity, 1, Some(3));
        let early = tokio::time::timeout(Duration::from_millis(2900), &mut expiry).await;
        assert!(early.is_err(), "idle_timeout (1 s) does not cut a head");
        let why = tokio::time::timeout(Duration::from_millis(200), &mut expiry)
            .await
            .expect("cut at the head timeout");
        assert_eq!(why, Expired::SlowHead);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_that_arrive_while_a_request_is_in_flight_start_no_head() {
        let activity = Activity::new(false);
        let mut expiry = expiry(&activity, 60, Some(1));
        let request = activity.begin();
        activity.received();
        let busy = tokio::time::timeout(Duration::from_secs(5), &mut expiry).await;
        assert!(busy.is_err(), "a request body is no slow head");
        drop(request);
        let idle = tokio::time::timeout(Duration::from_secs(5), &mut expiry).await;
        assert!(idle.is_err(), "idle after it, no head begun");
    }
}
