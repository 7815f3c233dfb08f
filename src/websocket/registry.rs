//! The open WebSockets of this instance, by the session they belong to: the cap
//! (`server.max_websockets`), the signal that closes every socket of a session that ended
//! here, and the one that closes them all at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::session::EndObserver;

/// Why gatehouse closes a socket, and the close frame it sends both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The session ended (logout, back-channel logout, idle or absolute expiry, a refresh
    /// the provider refused): 4401, "log in again", like HTTP's 401.
    SessionEnded,
    /// No byte either way for the route's `websocket_idle_timeout`: 4408, like HTTP's 408.
    Idle,
    /// Gatehouse is shutting down: 1001 Going Away.
    Shutdown,
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::SessionEnded => 4401,
            Close::Idle => 4408,
            Close::Shutdown => 1001,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Close::SessionEnded => "session ended",
            Close::Idle => "idle timeout",
            Close::Shutdown => "going away",
        }
    }
}

/// Every cap-counted socket has an entry; its sender tells the relay to close.
struct Entry {
    session: Option<String>,
    close: watch::Sender<Option<Close>>,
}

#[derive(Default)]
struct Open {
    sockets: HashMap<u64, Entry>,
    /// Session store key → the ids of its sockets.
    by_session: HashMap<String, Vec<u64>>,
}

/// This instance's open WebSockets.
pub struct Sockets {
    max: usize,
    open: Mutex<Open>,
    next_id: AtomicU64,
    stopping: AtomicBool,
}

/// The cap is reached, or the server is stopping.
#[derive(Debug, Clone, Copy)]
pub struct Refused;

impl Sockets {
    pub fn new(max: usize) -> Sockets {
        Sockets {
            max,
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more socket, of the session stored under `session` if any. Refused at the
    /// cap and once shutdown began. Dropping the [`Registered`] frees the place.
    pub fn register(self: &Arc<Self>, session: Option<&str>) -> Result<Registered, Refused> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(Refused);
        }
        let mut open = self.lock();
        if open.sockets.len() >= self.max {
            return Err(Refused);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(None);
        open.sockets.insert(
            id,
            Entry {
                session: session.map(str::to_owned),
                close,
            },
        );
        if let Some(key) = session {
            open.by_session.entry(key.to_owned()).or_default().push(id);
        }
        crate::telemetry::metrics::websocket_opened();
        Ok(Registered {
            sockets: Arc::clone(self),
            id,
            closed,
        })
    }

    /// How many sockets are open (or being opened).
    pub fn len(&self) -> usize {
        self.lock().sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells every socket of the session stored under `key` to close.
    pub fn close_session(&self, key: &str, why: Close) {
        let open = self.lock();
        for id in open.by_session.get(key).into_iter().flatten() {
            if let Some(entry) = open.sockets.get(id) {
                entry.close.send_replace(Some(why));
            }
        }
    }

    /// Tells every socket to close, and refuses new ones from now on.
    pub fn close_all(&self, why: Close) {
        self.stopping.store(true, Ordering::Release);
        for entry in self.lock().sockets.values() {
            entry.close.send_replace(Some(why));
        }
    }

    fn remove(&self, id: u64) {
        let mut open = self.lock();
        let Some(entry) = open.sockets.remove(&id) else {
            return;
        };
        if let Some(key) = entry.session
            && let Some(ids) = open.by_session.get_mut(&key)
        {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                open.by_session.remove(&key);
            }
        }
    }
}

/// Sessions ended on this instance close their sockets at once.
impl EndObserver for Sockets {
    fn session_ended(&self, key: &str) {
        self.close_session(key, Close::SessionEnded);
    }
}

/// One counted socket; dropping it frees its place.
pub struct Registered {
    sockets: Arc<Sockets>,
    id: u64,
    closed: watch::Receiver<Option<Close>>,
}

impl Registered {
    /// Completes with the reason once the socket is told to close.
    pub fn closing(&self) -> watch::Receiver<Option<Close>> {
        self.closed.clone()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sockets.remove(self.id);
        crate::telemetry::metrics::websocket_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_sockets_and_a_closed_one_frees_its_place() {
        let sockets = Arc::new(Sockets::new(2));
        let a = sockets.register(Some("s:1")).unwrap();
        let _b = sockets.register(None).unwrap();
        assert!(sockets.register(None).is_err(), "a third over a cap of 2");
        drop(a);
        assert!(sockets.register(Some("s:1")).is_ok());
    }

    #[test]
    fn ending_a_session_closes_its_sockets_only() {
        let sockets = Arc::new(Sockets::new(10));
        let mine = [
            sockets.register(Some("s:1")).unwrap(),
            sockets.register(Some("s:1")).unwrap(),
        ];
        let other = sockets.register(Some("s:2")).unwrap();
        let bare = sockets.register(None).unwrap();
        sockets.session_ended("s:1");
        for r in &mine {
            assert_eq!(*r.closing().borrow(), Some(Close::SessionEnded));
        }
        assert_eq!(*other.closing().borrow(), None);
        assert_eq!(*bare.closing().borrow(), None);
    }

    #[test]
    fn shutdown_closes_every_socket_and_refuses_new_ones() {
        let sockets = Arc::new(Sockets::new(10));
        let a = sockets.register(Some("s:1")).unwrap();
        let b = sockets.register(None).unwrap();
        sockets.close_all(Close::Shutdown);
        assert_eq!(*a.closing().borrow(), Some(Close::Shutdown));
        assert_eq!(*b.closing().borrow(), Some(Close::Shutdown));
        assert!(sockets.register(None).is_err());
    }

    #[test]
    fn dropped_sockets_leave_no_index_behind() {
        let sockets = Arc::new(Sockets::new(10));
        drop(sockets.register(Some("s:1")).unwrap());
        assert!(sockets.is_empty());
        assert!(sockets.lock().by_session.is_empty());
    }
}
