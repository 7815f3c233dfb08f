//! Static routes: a route that serves an SPA's files from `static_dir` instead of proxying.
//! Which file, which encoding, the validators and the headers are decided here; opening the
//! file, `Range` and streaming the body are tower-http's `ServeFile`, given exactly the file
//! and the headers decided on.
//!
//! Rules:
//! 1. Only GET and HEAD are served (405, by the pipeline's static phase).
//! 2. Only regular files under the canonical `static_dir` are ever served, with the path
//!    rules of [`resolve`] (no dot segments, encoded separators, NUL, hidden names, symlinks
//!    out). A refused path is 404, never the fallback; directories are never listed.
//! 3. A missing file gets the `spa_fallback` document when there is one and the request's
//!    `Accept` names `text/html` (a navigation to a client-side route); anything else missing
//!    is 404, so a stale script URL fails loudly instead of receiving HTML.
//! 4. `<file>.br` / `<file>.gz` is served instead when it exists, passes rule 2 and
//!    `Accept-Encoding` allows it ([`encoding`]), with `Content-Encoding` and the original's
//!    type. Every file response says `Vary: Accept-Encoding` (fallback answers add `Accept`).
//! 5. Each representation has a strong `ETag` and `Last-Modified`; conditional requests and
//!    `If-Range` follow [`conditional`]; a multi-range request gets the whole file.
//! 6. `Cache-Control` follows [`policy`]: HTML and the fallback `no-cache`, `immutable`
//!    patterns a year, the rest `no-cache`; `private` on authenticated routes.
//! 7. Every answer is `X-Content-Type-Options: nosniff`; HTML documents add the route's
//!    `Content-Security-Policy` and `Referrer-Policy: strict-origin-when-cross-origin`.

pub mod access;
pub mod conditional;
pub mod encoding;
pub mod policy;
pub mod resolve;

use std::io;
use std::path::PathBuf;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, ETAG, LAST_MODIFIED, RANGE,
    REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use mime_guess::mime::Mime;
use tower_http::services::ServeFile;

use crate::response::{self, Body};
use conditional::{Outcome, Validators};
use encoding::Encoding;
use policy::{Pattern, Scope};
use resolve::{Found, Resolved};

/// The `Content-Security-Policy` of HTML documents when a route sets none: same-origin
/// scripts, styles, fetches and frames only; no plugins, no framing by others.
pub const DEFAULT_CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// A static route's files and how they are served. Built by config validation, which has
/// checked that the directory exists and the fallback is a file inside it.
#[derive(Debug, Clone)]
pub struct StaticSite {
    /// `static_dir`, canonicalized at start-up: nothing outside it is ever served.
    pub root: PathBuf,
    /// `spa_fallback`, relative to `root` (`index.html`), served for client-side routes.
    pub fallback: Option<String>,
    /// `immutable`: fingerprinted files, cached for a year.
    pub immutable: Vec<Pattern>,
    /// `content_security_policy` of HTML documents.
    pub csp: HeaderValue,
    /// `private` caching on authenticated routes.
    pub scope: Scope,
}

#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("no such file")]
    NotFound,
    #[error("If-Match or If-Unmodified-Since does not hold")]
    PreconditionFailed,
    #[error("cannot read under static_dir {root}: {source}")]
    Io {
        root: String,
        #[source]
        source: io::Error,
    },
}

impl StaticError {
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            StaticError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such file"),
            StaticError::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the file does not match the request's precondition",
            ),
            StaticError::Io { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the file could not be read",
            ),
        }
    }
}

/// The file chosen to answer a request.
struct Choice {
    /// What was asked for (or the fallback): its name decides type and caching.
    asked: Box<Found>,
    /// What is sent: `asked` or a precompressed sibling.
    sent: Box<Found>,
    encoding: Option<Encoding>,
    fallback: bool,
}

impl StaticSite {
    /// Answers a GET or HEAD for `path`, which the route with `prefix` matched.
    pub async fn serve<B>(
        &self,
        prefix: &str,
        req: &Request<B>,
    ) -> Result<Response<Body>, StaticError> {
        let relative = relative_path(prefix, req.uri().path());
        let choice = self.choose(relative, req.headers()).await?;
        let mime = policy::content_type(&choice.asked.relative);
        let meta = &choice.sent.metadata;
        let validators = Validators::new(
            meta.len(),
            meta.modified().ok(),
            choice.encoding.map(Encoding::token),
        );
        let headers = self.headers(&choice, &mime, &validators);
        let range = match conditional::evaluate(req.headers(), &validators) {
            Outcome::NotModified => {
                let mut res = Response::new(response::full(Bytes::new()));
                *res.status_mut() = StatusCode::NOT_MODIFIED;
                res.headers_mut().extend(headers);
                return Ok(res);
            }
            Outcome::PreconditionFailed => return Err(StaticError::PreconditionFailed),
            Outcome::Serve { range } => range,
        };
        // ServeFile sees only the method and the one Range we honour: every other decision
        // (encoding, validators, conditionals) was made above.
        let mut inner = Request::new(Empty::<Bytes>::new());
        if req.method() == Method::HEAD {
            *inner.method_mut() = Method::HEAD;
        }
        if let Some(r) = req
            .headers()
            .get(RANGE)
            .filter(|r| range && !is_multi_range(r))
        {
            inner.headers_mut().insert(RANGE, r.clone());
        }
        let res = ServeFile::new_with_mime(&choice.sent.path, &mime)
            .try_call(inner)
            .await
            .map_err(|source| self.io(source))?;
        let (mut parts, body) = res.into_parts();
        match parts.status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                if let Some(e) = choice.encoding {
                    parts
                        .headers
                        .insert(CONTENT_ENCODING, HeaderValue::from_static(e.token()));
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {}
            // Deleted between our look and ServeFile's open.
            StatusCode::NOT_FOUND => return Err(StaticError::NotFound),
            other => {
                return Err(self.io(io::Error::other(format!("file service answered {other}"))));
            }
        }
        parts.headers.extend(headers);
        Ok(Response::from_parts(parts, response::file(body)))
    }

    /// Rules 2-4: the file for `relative`, the fallback, or nothing; then its best variant.
    async fn choose(&self, relative: &str, headers: &HeaderMap) -> Result<Choice, StaticError> {
        let resolved = resolve::resolve(&self.root, relative)
            .await
            .map_err(|e| self.io(e))?;
        let (asked, fallback) = match resolved {
            Resolved::File(found) => (found, false),
            Resolved::Refused => return Err(StaticError::NotFound),
            Resolved::Missing => match &self.fallback {
                Some(doc) if access::accepts_html(headers) => {
                    match resolve::resolve(&self.root, doc)
                        .await
                        .map_err(|e| self.io(e))?
                    {
                        Resolved::File(found) => (found, true),
                        _ => return Err(StaticError::NotFound),
                    }
                }
                _ => return Err(StaticError::NotFound),
            },
        };
        for encoding in encoding::acceptable(headers) {
            let sibling = resolve::sibling(&self.root, &asked, encoding.suffix())
                .await
                .map_err(|e| self.io(e))?;
            if let Some(sent) = sibling {
                return Ok(Choice {
                    asked,
                    sent,
                    encoding: Some(encoding),
                    fallback,
                });
            }
        }
        Ok(Choice {
            sent: asked.clone(),
            asked,
            encoding: None,
            fallback,
        })
    }

    /// Rules 4-7: the headers of this representation, for 200, 206, 304 and 416 alike.
    fn headers(&self, choice: &Choice, mime: &Mime, validators: &Validators) -> HeaderMap {
        let html = policy::is_html(mime);
        let immutable = !choice.fallback
            && self
                .immutable
                .iter()
                .any(|p| p.matches(&choice.asked.relative));
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            policy::cache_control(self.scope, html || choice.fallback, immutable),
        );
        h.insert(
            VARY,
            HeaderValue::from_static(if choice.fallback {
                "Accept-Encoding, Accept"
            } else {
                "Accept-Encoding"
            }),
        );
        if let Some(etag) = validators.etag_header() {
            h.insert(ETAG, etag);
        }
        if let Some(date) = validators.last_modified_header() {
            h.insert(LAST_MODIFIED, date);
        }
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if html {
            h.insert(CONTENT_SECURITY_POLICY, self.csp.clone());
            h.insert(
                REFERRER_POLICY,
                HeaderValue::from_static("strict-origin-when-cross-origin"),
            );
        }
        h
    }

    fn io(&self, source: io::Error) -> StaticError {
        StaticError::Io {
            root: self.root.display().to_string(),
            source,
        }
    }
}

/// The request path below the route's prefix, without its leading `/`.
fn relative_path<'p>(prefix: &str, path: &'p str) -> &'p str {
    let rest = path.get(prefix.len()..).unwrap_or("");
    rest.strip_prefix('/').unwrap_or(rest)
}

/// Several ranges would need a multipart body; the whole file is the simpler valid answer.
fn is_multi_range(range: &HeaderValue) -> bool {
    range.as_bytes().contains(&b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relative_path_drops_the_prefix_and_one_slash() {
        assert_eq!(relative_path("/", "/"), "");
        assert_eq!(relative_path("/", "/assets/a.js"), "assets/a.js");
        assert_eq!(relative_path("/app/", "/app/a.js"), "a.js");
        assert_eq!(relative_path("/app", "/app"), "");
        assert_eq!(relative_path("/app", "/app/"), "");
        assert_eq!(relative_path("/app", "/app/x/"), "x/");
        assert_eq!(relative_path("/app", "/app//x"), "/x", "one slash only");
    }
}
