//! The addresses of a route's upstream, which one a request goes to, and which are out.
//!
//! Rules:
//! 1. Every IP address of every origin of a route is one endpoint; a host name is resolved
//!    when the route is first used and again every [`RESOLVE_EVERY`] (a headless service, DNS
//!    round robin), and the route balances over all of its addresses. A failed lookup keeps
//!    the addresses it had.
//! 2. Round robin over the endpoints that are in, each worker thread with its own cursor (no
//!    counter shared between cores).
//! 3. Passive health: an endpoint that refuses a connection (or resets a fresh one) is out
//!    for a cool-down of 1 s, doubled at each failure after it came back, up to 30 s. Failures
//!    of requests sent before it went out do not count again. Any answer brings it back in.
//! 4. With an active health check (`health_path`), a failed check takes the endpoint out
//!    until a check passes; a passing check also ends a cool-down.
//! 5. When every endpoint is out, the request fails at once (502 `upstream_unavailable`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::clients::EndpointClients;
use crate::routes::{Origin, Upstream};

/// How often a host name of an upstream is looked up again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// The first cool-down of an endpoint that failed, and the longest.
pub const COOL_DOWN_FIRST: Duration = Duration::from_secs(1);
pub const COOL_DOWN_MAX: Duration = Duration::from_secs(30);

/// One address of an origin, with its connection pools and its health.
pub struct Endpoint {
    pub origin: Origin,
    pub addr: SocketAddr,
    pub clients: EndpointClients,
    health: Health,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.origin.authority, self.addr)
    }
}

/// Rule 3, in atomics so the request path takes no lock.
struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` until which the endpoint is out; 0 = in.
    out_until: AtomicU64,
    /// Failures in a row since the endpoint last answered.
    failures: AtomicU32,
    /// The active health check failed, and has not passed since.
    check_failed: AtomicBool,
}

impl Health {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Endpoint {
    pub fn new(origin: Origin, addr: SocketAddr, clients: EndpointClients) -> Endpoint {
        Endpoint {
            origin,
            addr,
            clients,
            health: Health {
                epoch: Instant::now(),
                out_until: AtomicU64::new(0),
                failures: AtomicU32::new(0),
                check_failed: AtomicBool::new(false),
            },
        }
    }

    pub fn is_in(&self) -> bool {
        let until = self.health.out_until.load(Ordering::Acquire);
        (until == 0 || until <= self.health.now_ms())
            && !self.health.check_failed.load(Ordering::Acquire)
    }

    /// The active health check's verdict: a failed check keeps the endpoint out until a
    /// check passes. Returns whether the verdict changed.
    pub fn checked(&self, passed: bool) -> bool {
        let changed = self.health.check_failed.swap(!passed, Ordering::AcqRel) == passed;
        if passed {
            self.answered();
        }
        changed
    }

    /// The endpoint failed (rule 3); returns the cool-down it started, if this failure took
    /// it out.
    pub fn failed(&self) -> Option<Duration> {
        let h = &self.health;
        let now = h.now_ms();
        let until = h.out_until.load(Ordering::Acquire);
        if until > now {
            return None;
        }
        let failures = h.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let cool = COOL_DOWN_FIRST
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(COOL_DOWN_MAX);
        let cool_ms = u64::try_from(cool.as_millis()).unwrap_or(u64::MAX);
        h.out_until
            .compare_exchange(
                until,
                now.saturating_add(cool_ms).max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .ok()
            .map(|_| cool)
    }

    /// The endpoint answered: it is in, its failures forgotten. Returns whether it was out.
    pub fn answered(&self) -> bool {
        let h = &self.health;
        if h.failures.load(Ordering::Acquire) == 0 {
            return false;
        }
        h.failures.store(0, Ordering::Release);
        h.out_until.store(0, Ordering::Release);
        true
    }
}

/// The endpoints of one upstream (a route's list of origins), shared by every route and
/// config version that names the same list.
pub struct Group {
    pub upstream: Upstream,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Whether a host name is among the origins (else the endpoints never change).
    named: bool,
    resolved: tokio::sync::OnceCell<()>,
    resolved_at: Mutex<Instant>,
    resolving: AtomicBool,
    /// One per worker thread (`clients::lane`), each on its own cache line.
    cursors: Box<[Cursor]>,
}

/// A round-robin position, alone on its cache line so that workers never share one.
#[repr(align(64))]
#[derive(Default)]
struct Cursor(AtomicUsize);

impl Group {
    pub fn new(upstream: Upstream, registry: &Registry) -> Group {
        let fixed: Vec<Arc<Endpoint>> = upstream
            .origins()
            .iter()
            .filter_map(|o| {
                let ip = o.authority.host().trim_matches(['[', ']']);
                let ip = ip.parse::<std::net::IpAddr>().ok()?;
                Some(registry.endpoint(o, SocketAddr::new(ip, o.port())))
            })
            .collect();
        let named = fixed.len() < upstream.origins().len();
        Group {
            upstream,
            endpoints: ArcSwap::from_pointee(fixed),
            named,
            resolved: tokio::sync::OnceCell::new(),
            resolved_at: Mutex::new(Instant::now()),
            resolving: AtomicBool::new(false),
            cursors: (0..registry.clients.lanes())
                .map(|_| Cursor::default())
                .collect(),
        }
    }

    /// The endpoints now (rule 1): the first call of a group with host names waits for them;
    /// later calls start a lookup in the background when the last is older than
    /// [`RESOLVE_EVERY`].
    pub async fn endpoints(self: &Arc<Self>, registry: &Arc<Registry>) -> Arc<Vec<Arc<Endpoint>>> {
        if self.named {
            self.resolved
                .get_or_init(|| async {
                    self.resolve(registry).await;
                })
                .await;
            let stale = self
                .resolved_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed()
                >= RESOLVE_EVERY;
            if stale && !self.resolving.swap(true, Ordering::AcqRel) {
                let (group, registry) = (Arc::clone(self), Arc::clone(registry));
                tokio::spawn(async move {
                    group.resolve(&registry).await;
                    group.resolving.store(false, Ordering::Release);
                });
            }
        }
        self.endpoints.load_full()
    }

    /// Looks every origin up; keeps the old addresses of an origin whose lookup fails.
    async fn resolve(&self, registry: &Registry) {
        let old = self.endpoints.load_full();
        let mut all = Vec::with_capacity(old.len());
        for origin in self.upstream.origins() {
            let host = origin.authority.host().trim_matches(['[', ']']);
            if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                all.push(registry.endpoint(origin, SocketAddr::new(ip, origin.port())));
                continue;
            }
            match (registry.lookup)(host.to_owned(), origin.port()).await {
                Ok(mut addrs) => {
                    addrs.sort();
                    addrs.dedup();
                    if addrs.is_empty() {
                        all.extend(old.iter().filter(|e| e.origin == *origin).cloned());
                    }
                    all.extend(addrs.into_iter().map(|a| registry.endpoint(origin, a)));
                }
                Err(e) => {
                    tracing::warn!(upstream = %origin.authority, error = %e, "cannot resolve the upstream's host name; keeping its known addresses");
                    all.extend(old.iter().filter(|e| e.origin == *origin).cloned());
                }
            }
        }
        self.endpoints.store(Arc::new(all));
        *self
            .resolved_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Rule 2 and 4: the next endpoint that is in, skipping `tried`.
    pub fn pick<'e>(
        &self,
        endpoints: &'e [Arc<Endpoint>],
        tried: &[Arc<Endpoint>],
    ) -> Option<&'e Arc<Endpoint>> {
        let n = endpoints.len();
        let cursor = &self.cursors[super::clients::lane() % self.cursors.len()];
        let start = cursor.0.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .filter_map(|i| endpoints.get(start.wrapping_add(i) % n))
            .find(|e| e.is_in() && !tried.iter().any(|t| Arc::ptr_eq(t, e)))
    }
}

/// The group an [`Upstream`] of a loaded config was found to be, kept beside it so that its
/// requests reach the group with no look-up and no shared count taken. It is no part of the
/// upstream's value: comparisons and hashes skip it, and a clone starts empty.
#[derive(Default)]
pub struct GroupCell(OnceLock<(u64, Arc<Group>)>);

impl Clone for GroupCell {
    fn clone(&self) -> GroupCell {
        GroupCell::default()
    }
}

impl PartialEq for GroupCell {
    fn eq(&self, _: &GroupCell) -> bool {
        true
    }
}

impl Eq for GroupCell {}

impl std::hash::Hash for GroupCell {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for GroupCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCell")
    }
}

/// Tells registries apart, so that a cell filled by one is never read by another.
static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

/// Every endpoint and group alive in this process, so that health and pools are shared by
/// the routes (and the config versions) that name the same address.
pub struct Registry {
    id: u64,
    endpoints: Mutex<HashMap<(Origin, SocketAddr), Weak<Endpoint>>>,
    groups: ArcSwap<HashMap<Upstream, Arc<Group>>>,
    /// Builds an endpoint's clients.
    pub clients: super::clients::Factory,
    /// The system resolver (tests put their own).
    lookup: Lookup,
}

/// Looks a host name up: its addresses with the port.
pub type Lookup = Arc<
    dyn Fn(
            String,
            u16,
        ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>
        + Send
        + Sync,
>;

fn system_lookup() -> Lookup {
    Arc::new(|host, port| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    })
}

impl Registry {
    pub fn new(clients: super::clients::Factory) -> Registry {
        Registry {
            endpoints: Mutex::default(),
            id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            groups: ArcSwap::default(),
            clients,
            lookup: system_lookup(),
        }
    }

    /// The endpoint of `origin` at `addr`, made when no group holds it.
    pub fn endpoint(&self, origin: &Origin, addr: SocketAddr) -> Arc<Endpoint> {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (origin.clone(), addr);
        if let Some(e) = map.get(&key).and_then(Weak::upgrade) {
            return e;
        }
        map.retain(|_, e| e.strong_count() > 0);
        let e = Arc::new(Endpoint::new(
            origin.clone(),
            addr,
            self.clients.endpoint(origin, addr),
        ));
        map.insert(key, Arc::downgrade(&e));
        e
    }

    /// The group of `upstream`: after the first request of a config, the one its cell keeps
    /// (see [`GroupCell`]); else [`Registry::group`].
    pub fn group_of<'u>(self: &Arc<Self>, upstream: &'u Upstream) -> Cow<'u, Arc<Group>> {
        let (id, group) = upstream
            .group
            .0
            .get_or_init(|| (self.id, self.group(upstream)));
        if *id == self.id {
            Cow::Borrowed(group)
        } else {
            Cow::Owned(self.group(upstream))
        }
    }

    /// The group of `upstream` (lock-free when it exists), made on first use.
    pub fn group(self: &Arc<Self>, upstream: &Upstream) -> Arc<Group> {
        if let Some(g) = self.groups.load().get(upstream) {
            return Arc::clone(g);
        }
        let mut made = None;
        let mut created = None;
        self.groups.rcu(|groups| {
            let mut groups = HashMap::clone(groups);
            created = None;
            let g = groups.entry(upstream.clone()).or_insert_with(|| {
                let g = Arc::new(Group::new(upstream.clone(), self));
                created = Some(Arc::clone(&g));
                g
            });
            made = Some(Arc::clone(g));
            groups
        });
        if let Some(g) = &created {
            super::health::start(g, self);
        }
        made.unwrap_or_else(|| Arc::new(Group::new(upstream.clone(), self)))
    }

    /// Keeps the groups of `upstreams` (the routes now configured), dropping the others: a
    /// group no route names stops its health check once its last request is done.
    pub fn retain<'u>(self: &Arc<Self>, upstreams: impl Iterator<Item = &'u Upstream>) {
        let keep: Vec<&Upstream> = upstreams.collect();
        let old = self.groups.load_full();
        let mut groups: HashMap<Upstream, Arc<Group>> = old
            .iter()
            .filter(|(u, _)| keep.contains(u))
            .map(|(u, g)| (u.clone(), Arc::clone(g)))
            .collect();
        let mut new = Vec::new();
        for u in keep {
            groups.entry(u.clone()).or_insert_with(|| {
                let g = Arc::new(Group::new(u.clone(), self));
                new.push(Arc::clone(&g));
                g
            });
        }
        self.groups.store(Arc::new(groups));
        for g in &new {
            super::health::start(g, self);
        }
    }
}

#[cfg(test)]
mod tests;
