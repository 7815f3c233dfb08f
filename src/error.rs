//! The one place errors become HTTP responses.
//!
//! Errors are classified by whose fault they are: the browser's (4xx), the provider's or an
//! upstream's (502/503/504), or ours (500). The response carries a stable `error` code and a
//! generic message, `Cache-Control: no-store`, and never internals; the detail is logged once
//! by the request pipeline. Converting has no side effects.

use http::{Response, StatusCode};
use serde_json::json;

use crate::csrf::CsrfError;
use crate::oidc::OidcError;
use crate::response::{self, Body};
use crate::session::StoreError;
use crate::static_files::StaticError;
use crate::websocket::WebSocketError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no session")]
    Unauthenticated,
    #[error("anti-forgery check failed: {0}")]
    Csrf(#[from] CsrfError),
    #[error("request path is not accepted: it could be read differently upstream")]
    BadPath,
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request head larger than the limit")]
    HeadTooLarge,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("too many requests from this client; retry in {0:?}")]
    RateLimited(std::time::Duration),
    /// The `Host` is not ours; `Some` redirects a navigation to the public origin.
    #[error("request names a host that is not this application's")]
    WrongHost(Option<String>),
    #[error("logout request lacks this session's sid")]
    LogoutForbidden,
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("token refresh failed and the access token expired: {0}")]
    RefreshUnavailable(String),
    #[error("upstream {upstream} is unreachable: {detail}")]
    UpstreamUnavailable { upstream: String, detail: String },
    #[error("upstream {upstream} did not answer within {seconds}s")]
    UpstreamTimeout { upstream: String, seconds: u64 },
    #[error(transparent)]
    Static(#[from] StaticError),
    #[error(transparent)]
    WebSocket(#[from] WebSocketError),
}

impl Error {
    /// Status, stable code and the message shown to the client.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", "log in first"),
            Error::Csrf(_) => (
                StatusCode::FORBIDDEN,
                "csrf",
                "request refused by the anti-forgery check",
            ),
            Error::BadPath => (
                StatusCode::BAD_REQUEST,
                "bad_path",
                "request path not accepted",
            ),
            Error::NoRoute => (StatusCode::NOT_FOUND, "not_found", "no route for this path"),
            Error::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            ),
            Error::HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
                "request headers too large",
            ),
            Error::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body too large",
            ),
            Error::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many sign-in attempts, try again shortly",
            ),
            Error::WrongHost(Some(_)) => (
                StatusCode::TEMPORARY_REDIRECT,
                "wrong_host",
                "this application lives at another address",
            ),
            Error::WrongHost(None) => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                "this server does not answer for that host",
            ),
            Error::LogoutForbidden => (
                StatusCode::FORBIDDEN,
                "csrf",
                "logout must carry this session's sid or the anti-forgery header",
            ),
            Error::Oidc(e) => e.parts(),
            Error::Static(e) => e.parts(),
            Error::WebSocket(e) => e.parts(),
            Error::RefreshUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                "could not renew access with the identity provider, try again shortly",
            ),
            Error::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "session store unavailable, try again shortly",
            ),
            Error::UpstreamUnavailable { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "upstream unavailable",
            ),
            Error::UpstreamTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "upstream timed out",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// JSON for API clients; a small HTML page for browser navigations (`wants_html`). Both
    /// name the request's id, for the user to quote and the operator to find in the logs.
    pub fn into_response(self, wants_html: bool, request_id: &str) -> Response<Body> {
        if let Error::WrongHost(Some(to)) = &self {
            let mut res = response::redirect(to);
            *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            return res;
        }
        let (status, code, message) = self.parts();
        let mut res = if wants_html {
            response::html(
                status,
                response::page(
                    "Sign-in problem",
                    &format!("{message} (request id {request_id})"),
                    Some(("/", "Back to the application")),
                ),
            )
        } else {
            response::json(
                status,
                &json!({ "error": code, "message": message, "request_id": request_id }),
            )
        };
        let retry_after = match self {
            Error::RateLimited(wait) => Some(wait.as_secs().max(1)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(5),
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_fault() {
        assert_eq!(Error::Unauthenticated.status(), 401);
        assert_eq!(Error::Csrf(CsrfError::MissingHeader).status(), 403);
        let up = Error::UpstreamUnavailable {
            upstream: "http://x".into(),
            detail: "refused".into(),
        };
        assert_eq!(up.status(), 502);
        assert_eq!(
            Error::UpstreamTimeout {
                upstream: "x".into(),
                seconds: 1
            }
            .status(),
            504
        );
        assert_eq!(
            Error::Store(StoreError::Timeout(std::time::Duration::from_secs(1))).status(),
            503
        );
    }

    async fn body_text(res: Response<Body>) -> String {
        use http_body_util::BodyExt as _;
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn bodies_never_carry_the_internal_detail() {
        let internal = || Error::UpstreamUnavailable {
            upstream: "http://10.1.2.3:9".into(),
            detail: "secret-internal".into(),
        };
        let res = internal().into_response(false, "rid-1");
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = body_text(res).await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "upstream_unavailable");
        assert_eq!(json["request_id"], "rid-1");
        for leak in ["secret-internal", "10.1.2.3"] {
            assert!(!body.contains(leak), "{leak} in {body}");
        }
        let page = body_text(internal().into_response(true, "rid-2")).await;
        assert!(page.contains("request id rid-2"), "{page}");
        for leak in ["secret-internal", "10.1.2.3"] {
            assert!(!page.contains(leak), "{leak} in {page}");
        }
    }
}
