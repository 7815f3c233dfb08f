//! One relayed socket: bytes both ways as they come (a read is written out before the next
//! read, so a slow side slows the other: back-pressure, and never more than one buffer per
//! direction in memory), until either side closes, the session ends, the socket idles, or
//! gatehouse shuts down. Closing is done cleanly: each direction finishes the frame it is in,
//! gatehouse writes its close frame into both (masked towards the upstream), waits briefly
//! for the browser's close reply, then ends the streams (FIN, not RST).

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use rand::Rng as _;
use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::frame::{Frames, close_frame};
use super::registry::{Close, Registered};
use crate::app::App;
use crate::proxy::stream::IdleClock;
use crate::server::ConnHold;
use crate::session::{Loaded, now_ms};

/// Bytes read at once per direction.
const BUFFER: usize = 16 * 1024;
/// Sessions are re-read from the store about this often (±25 %, so sockets opened together
/// do not read together).
const SESSION_CHECK: Duration = Duration::from_secs(2);
/// After gatehouse decides to close, or one side has gone: how long the rest may take.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

pub(super) struct Relay {
    pub registered: Registered,
    pub session: Option<Loaded>,
    pub idle_timeout: Duration,
    pub hold: Option<ConnHold>,
    pub route: String,
}

type Io = TokioIo<Upgraded>;

pub(super) async fn run(app: Arc<App>, relay: Relay, client: OnUpgrade, upstream: OnUpgrade) {
    let Relay {
        registered,
        session,
        idle_timeout,
        hold,
        route,
    } = relay;
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, route, "websocket upgrade did not complete");
            return;
        }
    };
    let opened = Instant::now();
    tracing::info!(route, "websocket opened");
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let clock = IdleClock::new();
    let (stop, stopping) = watch::channel(None);
    let down = pump(
        upstream_read,
        client_write,
        Toward::Client,
        stopping.clone(),
        &clock,
    );
    let up = pump(
        client_read,
        upstream_write,
        Toward::Upstream,
        stopping,
        &clock,
    );
    tokio::pin!(down, up);
    let watch = watch_session(&app, session);
    tokio::pin!(watch);
    let mut closing = registered.closing();
    let (mut down_done, mut up_done) = (false, false);
    let mut give_up: Option<Instant> = None;
    let mut why: Option<Close> = None;
    loop {
        let until = give_up.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = &mut down, if !down_done => down_done = true,
            () = &mut up, if !up_done => up_done = true,
            changed = closing.changed(), if why.is_none() => {
                why = match changed {
                    Ok(()) => *closing.borrow_and_update(),
                    Err(_) => Some(Close::Shutdown),
                };
            }
            () = &mut watch, if why.is_none() => why = Some(Close::SessionEnded),
            () = clock.idle(idle_timeout), if why.is_none() => why = Some(Close::Idle),
            () = tokio::time::sleep_until(until), if give_up.is_some() => break,
        }
        if down_done && up_done {
            break;
        }
        if let Some(reason) = why
            && stop.borrow().is_none()
        {
            stop.send_replace(Some(reason));
        }
        if give_up.is_none() && (why.is_some() || down_done || up_done) {
            give_up = Some(Instant::now() + CLOSE_GRACE);
        }
    }
    tracing::info!(
        route,
        closed_by = why.map_or("peer", |w| w.reason()),
        seconds = opened.elapsed().as_secs(),
        "websocket closed"
    );
    // Only now is the socket's place under the cap, and its connection's, given back.
    drop((registered, hold));
}

/// Completes when the session is gone from the store or expired; never without a session.
/// A store that fails keeps the socket open (like any request, a store outage is not a logout).
async fn watch_session(app: &App, session: Option<Loaded>) {
    let Some(mut loaded) = session else {
        return std::future::pending().await;
    };
    loop {
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        tokio::time::sleep(SESSION_CHECK.mul_f64(jitter)).await;
        match app.sessions.reload(&loaded).await {
            Ok(Some(current)) if now_ms() < current.idle_expires_at_ms(app.sessions.idle()) => {
                loaded = current;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not re-check a websocket's session; keeping it open");
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Toward {
    Client,
    Upstream,
}

/// Copies one direction until its source ends or gatehouse closes the socket; then writes
/// the close frame (at a frame boundary) and ends the destination.
async fn pump(
    mut from: ReadHalf<Io>,
    mut to: WriteHalf<Io>,
    toward: Toward,
    mut stop: watch::Receiver<Option<Close>>,
    clock: &IdleClock,
) {
    let mut buf = vec![0u8; BUFFER];
    let mut frames = Frames::default();
    let mut why: Option<Close> = None;
    loop {
        if let Some(reason) = why {
            if frames.at_boundary() {
                return close(from, to, toward, reason, frames).await;
            }
            if frames.is_broken() {
                // No place to put a frame: end the stream plainly.
                let _ = to.shutdown().await;
                return;
            }
        }
        let limit = if why.is_some() {
            frames.to_boundary().min(BUFFER)
        } else {
            BUFFER
        };
        let read = tokio::select! {
            read = from.read(&mut buf[..limit]) => read,
            changed = stop.changed(), if why.is_none() => {
                if changed.is_err() {
                    return;
                }
                why = *stop.borrow_and_update();
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        frames.feed(&buf[..n]);
        clock.touch();
        if write(&mut to, &buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn write(to: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

/// Writes gatehouse's close frame and ends the destination. Towards the upstream, the
/// browser's bytes are then read (and dropped) until its close reply arrives, so its socket
/// is not reset with unread data.
async fn close(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    toward: Toward,
    why: Close,
    mut frames: Frames,
) {
    let frame = close_frame(why.code(), why.reason(), toward == Toward::Upstream);
    let _ = write(&mut to, &frame).await;
    let _ = to.shutdown().await;
    drop(to);
    if toward == Toward::Client {
        return;
    }
    let mut buf = vec![0u8; BUFFER];
    while !frames.saw_close() && !frames.is_broken() {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => frames.feed(&buf[..n]),
        }
    }
}
