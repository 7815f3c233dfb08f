//! The route table: what serves a path (an upstream, or a directory of files), and how it
//! is authenticated.
//! Longest prefix wins; a prefix without a trailing slash matches whole segments only
//! (`/api` matches `/api` and `/api/x`, never `/apix`).

use std::time::Duration;

use http::uri::{Authority, Scheme};

use crate::csrf::CsrfPolicy;
use crate::static_files::StaticSite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A session is required; the access token is attached. No session → 401.
    Required,
    /// The token is attached when there is a session; without one the request goes on bare.
    Optional,
    /// Gatehouse never attaches a token (static assets, public pages).
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Optional => "optional",
            AuthMode::None => "none",
        }
    }
}

/// One address of an upstream: scheme and authority only; the request's path is kept as it is.
/// Two are the same when their scheme and authority are (`host` follows from the authority).
#[derive(Debug, Clone)]
pub struct Origin {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `authority` as the `Host` header every request to it carries: made once, shared by
    /// every request (a clone is a reference count, not a copy).
    pub host: http::HeaderValue,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        self.scheme == other.scheme && self.authority == other.authority
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scheme.hash(state);
        self.authority.hash(state);
    }
}

impl Origin {
    /// Parses `http(s)://host[:port]` (no path, query or credentials).
    pub fn parse(raw: &str) -> Result<Origin, String> {
        let uri: http::Uri = raw
            .parse()
            .map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{raw:?} needs a scheme: http://host:port"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!("{raw:?}: upstreams are http:// or https://"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{raw:?} needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{raw:?} must not contain credentials"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{raw:?} must not have a path or query; requests keep their own path"
            ));
        }
        let host = http::HeaderValue::from_str(authority.as_str())
            .map_err(|_| format!("{raw:?}: the host cannot be a Host header"))?;
        Ok(Origin {
            scheme,
            authority,
            host,
        })
    }

    /// The port the origin is reached on (the scheme's default when the URL names none).
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            })
    }
}

/// The optional active health check of an upstream route (`health_path`, `health_interval`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Asked with `GET` on every address; a 2xx or 3xx answer is healthy.
    pub path: String,
    pub interval: Duration,
}

/// Where a route forwards to: one or more origins, all equal (same header hygiene, same
/// token rules, each `https://` one verified against its own host name). Which address a
/// request goes to, and when it is sent again, is [`crate::proxy`]'s business.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Never empty: [`Upstream::new`] refuses an empty list.
    origins: Vec<Origin>,
    /// PUT and DELETE may be sent again like GET when they failed before any response
    /// (`retry_idempotent_writes`).
    pub retry_idempotent_writes: bool,
    pub health: Option<HealthCheck>,
    /// Where the forwarder keeps this upstream's group once found (no part of its value).
    pub(crate) group: crate::proxy::balance::GroupCell,
}

impl Upstream {
    /// `None` when `origins` is empty.
    pub fn new(
        origins: Vec<Origin>,
        retry_idempotent_writes: bool,
        health: Option<HealthCheck>,
    ) -> Option<Upstream> {
        (!origins.is_empty()).then_some(Upstream {
            origins,
            retry_idempotent_writes,
            health,
            group: Default::default(),
        })
    }

    /// One origin, no retry of writes, no active health check.
    pub fn parse(raw: &str) -> Result<Upstream, String> {
        Ok(Upstream {
            origins: vec![Origin::parse(raw)?],
            retry_idempotent_writes: false,
            health: None,
            group: Default::default(),
        })
    }

    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }

    /// The first origin's authority: what names the upstream in errors, and the `Host` the
    /// request is prepared with (the forwarder sets the picked origin's).
    pub fn authority(&self) -> &Authority {
        // Never out of bounds: `new` and `parse` never build an empty list.
        &self.origins[0].authority
    }
}

/// What a route does with a request: each kind has its own phase in the pipeline.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// Forward to an upstream (`upstream = ...`).
    Upstream(Upstream),
    /// Serve files from a directory (`static_dir = ...`).
    Static(StaticSite),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub target: RouteTarget,
    pub auth: AuthMode,
    pub csrf: CsrfPolicy,
    /// Time allowed for the upstream's response headers (or its answer to a WebSocket
    /// handshake); bodies are bounded by `stream_idle_timeout` only.
    pub timeout: Duration,
    /// A streamed exchange ends when neither body moved for this long.
    pub stream_idle_timeout: Duration,
    /// A relayed WebSocket is closed when no byte went either way for this long.
    pub websocket_idle_timeout: Duration,
    /// Speak HTTP/2 only to the upstream (prior knowledge on `http://`: h2c, gRPC).
    pub upstream_http2: bool,
    /// Largest request body forwarded (`max_body`): a larger one is refused with 413.
    pub max_body: Option<u64>,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            None => false,
            Some(rest) => self.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        }
    }
}

/// Routes sorted by prefix length, longest first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self { routes }
    }

    /// The route for `path`, the longest matching prefix.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Whether `prefix` may be configured as a route's `path`: an absolute path of unreserved
/// characters (letters, digits, `- . _ ~`) and `/`, without dot segments or empty segments.
/// Kept to the alphabet whose escapes [`is_routable_path`] refuses, so that no request path
/// can match a prefix once an upstream decodes it without matching it as sent.
pub fn is_valid_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && prefix.bytes().all(|b| is_unreserved(b) || b == b'/')
        && !prefix.split('/').any(|seg| seg == "." || seg == "..")
        && !prefix.contains("//")
}

/// RFC 3986 §2.3: a percent-encoded unreserved character is the same URI as the character
/// itself, so servers may decode it before routing.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Whether `path` (raw, as received) is safe to route: the path the policy sees must be
/// the path the upstream gets, so anything a server might normalize differently is refused:
/// dot segments (raw or %-encoded), encoded `/` or `\`, backslashes, `;` parameters, empty
/// segments, control characters, non-origin-form targets, and escaped unreserved characters
/// (`/%61pi` is `/api` to a server that normalizes it).
pub fn is_routable_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    // One pass over the bytes (every request's path goes through here); escapes and dot
    // segments, which few paths have, are looked at only when the pass saw a `%` or a `.`.
    let (mut escaped, mut dotted, mut prev) = (false, false, 0u8);
    for &b in bytes {
        if !b.is_ascii_graphic() || b == b'\\' || b == b';' || (b == b'/' && prev == b'/') {
            return false;
        }
        escaped |= b == b'%';
        dotted |= b == b'.';
        prev = b;
    }
    if escaped && !escapes_are_safe(path) {
        return false;
    }
    !dotted || !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// No escape in `path` that a server might decode into a different path: of `/`, `\`, `.`,
/// NUL, `;`, `#`, `?` or `%`, or of an unreserved character.
fn escapes_are_safe(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let refused = ["%2f", "%5c", "%2e", "%00", "%3b", "%23", "%3f", "%25"];
    !refused.iter().any(|p| lower.contains(p)) && !escaped_bytes(path.as_bytes()).any(is_unreserved)
}

/// The byte each valid `%XY` escape of `path` stands for.
fn escaped_bytes(path: &[u8]) -> impl Iterator<Item = u8> + '_ {
    path.windows(3).filter_map(|w| match w {
        [b'%', hi, lo] => {
            let hex = |b: &u8| char::from(*b).to_digit(16);
            Some(u8::try_from(hex(hi)? * 16 + hex(lo)?).unwrap_or(0))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn route(prefix: &str) -> Route {
        Route {
            prefix: prefix.into(),
            target: RouteTarget::Upstream(Upstream::parse("http://127.0.0.1:1").unwrap()),
            auth: AuthMode::None,
            csrf: CsrfPolicy::new(
                HeaderName::from_static("x-csrf"),
                HeaderValue::from_static("1"),
                &url::Url::parse("http://127.0.0.1").unwrap(),
            ),
            timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(1),
            websocket_idle_timeout: Duration::from_secs(1),
            max_body: None,
            upstream_http2: false,
        }
    }

    #[test]
    fn longest_prefix_wins_and_segments_are_respected() {
        let t = RouteTable::new(vec![route("/"), route("/api"), route("/api/admin/")]);
        assert_eq!(t.find("/api/admin/x").unwrap().prefix, "/api/admin/");
        assert_eq!(t.find("/api/x").unwrap().prefix, "/api");
        assert_eq!(t.find("/api").unwrap().prefix, "/api");
        assert_eq!(t.find("/apix").unwrap().prefix, "/");
        assert!(
            RouteTable::new(vec![route("/api/")])
                .find("/other")
                .is_none()
        );
    }

    #[test]
    fn paths_that_could_be_normalized_differently_are_refused() {
        for bad in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E%2E/x",
            "/api%2fadmin",
            "/api/%5cadmin",
            "/api\\admin",
            "/api;jsessionid=1",
            "//evil.com/api",
            "/api//x",
            "/api/%00",
            "/api/%23frag",
            "api/x",
            "http://evil.com/api",
            "/a b",
            "/api/%252e%252e/",
        ] {
            assert!(!is_routable_path(bad), "{bad}");
        }
        for good in [
            "/",
            "/api/users/42",
            "/static/app.js",
            "/a-b_c~d.e",
            "/api/%20x",
        ] {
            assert!(is_routable_path(good), "{good}");
        }
    }

    #[test]
    fn an_escaped_unreserved_character_is_refused_so_a_decoding_upstream_sees_the_routed_path() {
        for bad in [
            "/%61pi/x",
            "/ap%69",
            "/api/%41dmin",
            "/%7euser",
            "/%2D",
            "/a%5f",
        ] {
            assert!(!is_routable_path(bad), "{bad}");
        }
        for good in ["/api/a%40b.com", "/caf%C3%A9", "/a%20b", "/%21"] {
            assert!(is_routable_path(good), "{good}");
        }
    }

    #[test]
    fn route_prefixes_are_unreserved_characters_and_slashes_only() {
        for good in ["/", "/api", "/api/", "/a-b_c.d~e/", "/v1/users"] {
            assert!(is_valid_prefix(good), "{good}");
        }
        for bad in [
            "api", "/a@b", "/a:b", "/a%61", "/a b", "/a//b", "/a/../b", "/a;b", "/é",
        ] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn upstreams_must_be_http_or_https_origins() {
        assert!(Upstream::parse("http://10.0.0.1:9000").is_ok());
        assert_eq!(Origin::parse("https://api.internal").unwrap().port(), 443);
        assert_eq!(Origin::parse("http://api.internal").unwrap().port(), 80);
        assert!(Upstream::new(Vec::new(), false, None).is_none());
        for bad in [
            "ftp://x",
            "http://u:p@x",
            "http://x/base",
            "x:80",
            "http://x/?q",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
