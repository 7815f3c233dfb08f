//! gatehouse's own pool of HTTP/1.1 connections to one plain `http://` upstream address, on
//! hyper's connection API: the path every ordinary API call takes, kept short.
//!
//! Rules:
//! 1. Each worker thread has its own [`Lane`] (see [`super::clients::set_lane`]); a lane is
//!    locked by the thread that owns it (and by threads that never set a lane, which share
//!    lane 0), so its lock is not contended under load.
//! 2. A connection goes back to its lane once its response is read to the end (at once when
//!    the whole response came with its head), never while an answer is still on the wire; a
//!    response dropped half-read closes its connection.
//! 3. The newest idle connection is taken first (it is the least likely to have been closed by
//!    the upstream's keep-alive timer); one idle for `server.upstream_idle_timeout` is closed
//!    by gatehouse, and at most `server.upstream_pool_max_idle` stay idle.
//! 4. A pooled connection found closed, or that hands the request back unwritten, is dropped
//!    and the request goes out on the next one (or a new one): nothing was sent, so this is
//!    not a retry. Whether a written request may be sent again is [`super::retry`]'s call,
//!    with what the connection heard ([`Answered`]) in the [`Failure`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::Sent;
use super::clients::{Answered, Conn, Failure, PoolSettings, dial};

/// One worker's connections to one address, for request bodies `B`.
pub struct Lane<B = Sent> {
    addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Idle<B>>,
}

struct Idle<B> {
    /// Oldest first.
    conns: VecDeque<(Live<B>, Instant)>,
    /// Whether a task is on its way to close the connections that idle too long.
    reaping: bool,
}

/// A connection: the handle to send on, and what the upstream sent since the last request.
struct Live<B> {
    sender: SendRequest<B>,
    answered: Answered,
}

impl<B> Lane<B> {
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Arc<Lane<B>> {
        Arc::new(Lane {
            addr,
            settings,
            idle: Mutex::new(Idle {
                conns: VecDeque::new(),
                reaping: false,
            }),
        })
    }
}

impl<B> Lane<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or on a new one when
    /// none is idle or `conn` asks for a fresh one.
    pub async fn send(
        self: Arc<Self>,
        mut req: Request<B>,
        conn: Conn,
    ) -> Result<Response<Returning<B>>, Failure> {
        if conn == Conn::Pooled {
            while let Some(mut live) = self.take() {
                // What it heard of an earlier answer is not this request's.
                live.answered.clear();
                match live.sender.try_send_request(req).await {
                    Ok(res) => return Ok(self.returning(res, live)),
                    Err(mut e) => match e.take_message() {
                        // Rule 4: closed before it took the request.
                        Some(back) => req = back,
                        None => return Err(Failure::sent(e.into_error(), live.answered.heard())),
                    },
                }
            }
        }
        let mut live = self.dial().await?;
        match live.sender.try_send_request(req).await {
            Ok(res) => Ok(self.returning(res, live)),
            // Closed before it took the request: as good as no connection (nothing was sent,
            // whatever the method).
            Err(e) if e.message().is_some() => Err(Failure::connect(e.into_error())),
            Err(e) => Err(Failure::sent(e.into_error(), live.answered.heard())),
        }
    }

    async fn dial(&self) -> Result<Live<B>, Failure> {
        let stream = dial(self.addr, self.settings.connect_timeout)
            .await
            .map_err(Failure::connect)?;
        let answered = stream.tap().clone();
        let (sender, connection) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::connect)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Live { sender, answered })
    }

    /// The response, with its connection coming back to the lane once it is read (rule 2).
    fn returning(
        self: Arc<Self>,
        res: Response<Incoming>,
        live: Live<B>,
    ) -> Response<Returning<B>> {
        let (parts, body) = res.into_parts();
        let home = if body.is_end_stream() || live.sender.is_ready() {
            self.put(live);
            None
        } else {
            Some((live, self))
        };
        Response::from_parts(parts, Returning { body, home })
    }

    /// The newest idle connection still open; every connection idle too long is closed.
    fn take(&self) -> Option<Live<B>> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some((live, since)) = idle.conns.pop_back() {
            if now.duration_since(since) >= self.settings.idle_timeout {
                // The newest is too old: so is every other.
                idle.conns.clear();
                return None;
            }
            if !live.sender.is_closed() {
                return Some(live);
            }
        }
        None
    }

    /// Parks a connection whose response is read: once it is ready for the next request,
    /// while fewer than `max_idle` are parked.
    fn put(self: Arc<Self>, mut live: Live<B>) {
        if live.sender.is_closed() || self.settings.max_idle == 0 {
            return;
        }
        if !live.sender.is_ready() {
            // The connection has not yet noticed the end of the answer, or is still writing
            // the request body after an early answer (seldom for answers that come whole:
            // no such task showed in the load-test profile): park it once it is ready, and
            // never hand out one that may still be busy.
            tokio::spawn(async move {
                if live.sender.ready().await.is_ok() {
                    self.park(live);
                }
            });
            return;
        }
        self.park(live);
    }

    fn park(self: Arc<Self>, live: Live<B>) {
        let reap = {
            let mut idle = self.lock();
            if idle.conns.len() >= self.settings.max_idle {
                // Make room by the ones the upstream closed, if any.
                idle.conns.retain(|(parked, _)| !parked.sender.is_closed());
                if idle.conns.len() >= self.settings.max_idle {
                    return;
                }
            }
            idle.conns.push_back((live, Instant::now()));
            !std::mem::replace(&mut idle.reaping, true)
        };
        if reap {
            tokio::spawn(reap_idle(Arc::downgrade(&self)));
        }
    }

    /// Closes the connections idle for `idle_timeout`; when the next will be.
    fn close_idle(&self, now: Instant) -> Option<Instant> {
        let timeout = self.settings.idle_timeout;
        let mut idle = self.lock();
        while idle.conns.front().is_some_and(|(live, since)| {
            now.duration_since(*since) >= timeout || live.sender.is_closed()
        }) {
            idle.conns.pop_front();
        }
        let next = idle.conns.front().map(|(_, since)| *since + timeout);
        idle.reaping = next.is_some();
        next
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<B>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Idle connections (tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().conns.len()
    }
}

/// Rule 3: closes the lane's connections as they reach the idle timeout, and ends when none
/// is idle (the next one parked starts it again) or the lane is gone.
async fn reap_idle<B>(lane: Weak<Lane<B>>)
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let next = match lane.upgrade() {
            Some(lane) => lane.close_idle(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => tokio::time::sleep_until(at + Duration::from_millis(1)).await,
            None => return,
        }
    }
}

/// A response body from a pooled connection: returns the connection to its lane at its end.
pub struct Returning<B = Sent> {
    body: Incoming,
    home: Option<(Live<B>, Arc<Lane<B>>)>,
}

impl<B> Returning<B> {
    /// A body whose connection is not gatehouse's to return (another client's).
    pub fn unpooled(body: Incoming) -> Returning<B> {
        Returning { body, home: None }
    }
}

impl<B> Returning<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn release(&mut self) {
        if let Some((live, lane)) = self.home.take() {
            lane.put(live);
        }
    }
}

impl<B> HttpBody for Returning<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            // Trailers end a body (hyper's server polls no further), as the last bytes of a
            // sized one do.
            Poll::Ready(Some(Ok(f))) if f.is_trailers() || this.body.is_end_stream() => {
                this.release();
            }
            // A failed body's connection is closed with it (the handle is dropped).
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
