//! The optional active health check of a route (`health_path`, `health_interval`): every
//! interval, `GET health_path` on each address over a fresh HTTP/1.1 connection, with the
//! origin's `Host`, no cookie and no token. A 2xx or 3xx answer brings an address that was out
//! back in at once; anything else (another status, no connection, no answer within the
//! interval, at most 10 s) takes it out until a check passes.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::{HOST, USER_AGENT};
use http_body_util::Empty;

use super::balance::{Endpoint, Group, Registry};
use super::clients::Conn;

/// The longest a probe waits for its answer.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(10);

/// Starts the group's health check, if it has one; it stops when the group is dropped.
pub fn start(group: &Arc<Group>, registry: &Arc<Registry>) {
    let Some(check) = group.upstream.health.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (group, registry): (Weak<Group>, Weak<Registry>) =
        (Arc::downgrade(group), Arc::downgrade(registry));
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(group), Some(registry)) = (group.upgrade(), registry.upgrade()) else {
                return;
            };
            let endpoints = group.endpoints(&registry).await;
            let wait = check.interval.min(MAX_PROBE_WAIT);
            let probes = endpoints.iter().map(|e| probe(e, &check.path, wait));
            futures_util::future::join_all(probes).await;
        }
    });
}

async fn probe(endpoint: &Endpoint, path: &str, wait: Duration) {
    let origin = &endpoint.origin;
    let uri = format!("{}://{}{}", origin.scheme, origin.authority, path);
    let Ok(req) = Request::get(uri)
        .header(HOST, origin.host.clone())
        .header(USER_AGENT, "gatehouse-health-check")
        .body(Empty::<Bytes>::new())
    else {
        return;
    };
    let client = endpoint.clients.http1(Conn::Fresh);
    let verdict = match tokio::time::timeout(wait, client.request(req)).await {
        Ok(Ok(res)) if res.status().is_success() || res.status().is_redirection() => Ok(()),
        Ok(Ok(res)) => Err(format!("answered {}", res.status())),
        Ok(Err(e)) => Err(crate::oidc::error_chain(&e)),
        Err(_) => Err(format!("no answer within {wait:?}")),
    };
    let passed = verdict.is_ok();
    if !endpoint.checked(passed) {
        return;
    }
    match verdict {
        Ok(()) => {
            tracing::info!(upstream = %origin.authority, addr = %endpoint.addr, "the health check passed: the address is back in");
        }
        Err(why) => {
            tracing::warn!(upstream = %origin.authority, addr = %endpoint.addr, path, "the health check failed ({why}): the address is out until it passes");
        }
    }
}
