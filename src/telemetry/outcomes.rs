//! What happened, counted: logins, logouts, refreshes, store and provider calls. Each helper
//! is one `metrics` facade call whose labels come from the fixed sets below.

use std::time::Instant;

use metrics::{Key, Label, Metadata, Recorder as _};
use metrics_exporter_prometheus::PrometheusRecorder;
use tracing::Instrument as _;

use super::metrics::{
    JWKS_REFRESHES_TOTAL, LOGINS_TOTAL, LOGOUTS_TOTAL, PROVIDER_REQUESTS_TOTAL, REFRESHES_TOTAL,
    SESSIONS_CREATED_TOTAL, STORE_ERRORS_TOTAL,
};
use crate::error::Error;
use crate::oidc::OidcError;

/// The `result` label of `gatehouse_logins_total`: two milestones, then each failure class.
pub const LOGIN_RESULTS: [&str; 15] = [
    "started",
    "completed",
    "provider_not_ready",
    "invalid_callback",
    "unknown_state",
    "issuer_mismatch",
    "access_denied",
    "provider_refused",
    "token_rejected",
    "invalid_token_response",
    "invalid_id_token",
    "provider_unavailable",
    "store_error",
    "rate_limited",
    "other",
];

/// `/auth/login` redirected the browser to the provider.
pub fn login_started() {
    metrics::counter!(LOGINS_TOTAL, "result" => "started").increment(1);
}

/// A callback created a session.
pub fn login_completed() {
    metrics::counter!(LOGINS_TOTAL, "result" => "completed").increment(1);
}

/// `/auth/login` or the callback failed with `e`.
pub fn login_failed(e: &Error) {
    metrics::counter!(LOGINS_TOTAL, "result" => login_failure(e)).increment(1);
}

/// The failure class of a login error (one of [`LOGIN_RESULTS`]).
pub fn login_failure(e: &Error) -> &'static str {
    match e {
        Error::Oidc(o) => match o {
            OidcError::NotReady | OidcError::Discovery(_) => "provider_not_ready",
            OidcError::DuplicateParam(_) | OidcError::MissingParam(_) => "invalid_callback",
            OidcError::UnknownState => "unknown_state",
            OidcError::IssuerMismatch(_) => "issuer_mismatch",
            OidcError::ProviderRefused { code } if code == "access_denied" => "access_denied",
            OidcError::ProviderRefused { .. } => "provider_refused",
            OidcError::TokenRejected(_) => "token_rejected",
            OidcError::InvalidTokenResponse(_) => "invalid_token_response",
            OidcError::InvalidIdToken(_) => "invalid_id_token",
            OidcError::ProviderUnavailable(_) => "provider_unavailable",
            OidcError::InvalidLogoutToken(_) => "other",
        },
        Error::Store(_) => "store_error",
        Error::RateLimited(_) => "rate_limited",
        _ => "other",
    }
}

/// The `kind` label of `gatehouse_logouts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutKind {
    /// The user's `/auth/logout` ended their session.
    User,
    /// A verified back-channel logout token was acted on.
    BackChannel,
}

impl LogoutKind {
    pub const ALL: [LogoutKind; 2] = [LogoutKind::User, LogoutKind::BackChannel];

    pub fn as_str(self) -> &'static str {
        match self {
            LogoutKind::User => "user",
            LogoutKind::BackChannel => "back-channel",
        }
    }
}

pub fn logout(kind: LogoutKind) {
    metrics::counter!(LOGOUTS_TOTAL, "kind" => kind.as_str()).increment(1);
}

/// The `result` label of `gatehouse_refreshes_total`: how one request's due refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    /// This request refreshed and stored the new tokens.
    Ok,
    /// Another request or instance refreshed meanwhile; this one waited and used its tokens.
    LockWait,
    /// The provider refused the refresh token: the session ended.
    InvalidGrant,
    /// The provider failed otherwise (down, slow, another error): the session is kept.
    ProviderError,
    /// The refreshed ID token failed validation: the session ended.
    IdTokenRejected,
    /// Another holder kept the claim longer than one refresh may take.
    LockTimeout,
    /// The session has no refresh token.
    NoRefreshToken,
    /// The store failed while claiming, reading or writing.
    StoreError,
    /// The session ended while the refresh ran.
    SessionEnded,
    /// A newer token write won; this one's tokens were revoked.
    Overtaken,
}

impl RefreshResult {
    pub const ALL: [RefreshResult; 10] = [
        RefreshResult::Ok,
        RefreshResult::LockWait,
        RefreshResult::InvalidGrant,
        RefreshResult::ProviderError,
        RefreshResult::IdTokenRejected,
        RefreshResult::LockTimeout,
        RefreshResult::NoRefreshToken,
        RefreshResult::StoreError,
        RefreshResult::SessionEnded,
        RefreshResult::Overtaken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Ok => "ok",
            RefreshResult::LockWait => "lock_wait",
            RefreshResult::InvalidGrant => "invalid_grant",
            RefreshResult::ProviderError => "provider_error",
            RefreshResult::IdTokenRejected => "id_token_rejected",
            RefreshResult::LockTimeout => "lock_timeout",
            RefreshResult::NoRefreshToken => "no_refresh_token",
            RefreshResult::StoreError => "store_error",
            RefreshResult::SessionEnded => "session_ended",
            RefreshResult::Overtaken => "overtaken",
        }
    }

    /// The class of a refresh that ended in `e` where no branch said more.
    pub fn of_error(e: &Error) -> RefreshResult {
        match e {
            Error::Store(_) => RefreshResult::StoreError,
            Error::Unauthenticated => RefreshResult::SessionEnded,
            _ => RefreshResult::ProviderError,
        }
    }
}

pub fn refresh(result: RefreshResult) {
    metrics::counter!(REFRESHES_TOTAL, "result" => result.as_str()).increment(1);
}

pub fn session_created() {
    metrics::counter!(SESSIONS_CREATED_TOTAL).increment(1);
}

/// The `op` label of the store metrics: the [`crate::session::Store`] methods.
pub const STORE_OPS: [&str; 10] = [
    "get",
    "set",
    "replace",
    "delete",
    "exists",
    "put_new",
    "index_add",
    "index_remove",
    "index_take",
    "ping",
];

/// Runs one store call `op` in a `store` span, timing it into `tally` and counting its
/// failure.
pub async fn store_call<T, E>(
    op: &'static str,
    backend: &'static str,
    tally: &super::tally::StoreTally,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = super::trace::store_span(op, backend);
    let started = Instant::now();
    // Without a tracer the span records nothing: no wrapper (a move of the whole call).
    let result = if span.is_disabled() {
        call.await
    } else {
        call.instrument(span.clone()).await
    };
    tally.record(op, started.elapsed());
    if result.is_err() {
        metrics::counter!(STORE_ERRORS_TOTAL, "op" => op).increment(1);
        super::trace::failed(&span);
    }
    result
}

/// The `endpoint` label of `gatehouse_provider_requests_total`.
pub const PROVIDER_ENDPOINTS: [&str; 4] = ["discovery", "jwks", "token", "revocation"];
/// Its `result` label (see [`ProviderResult`]).
pub const PROVIDER_RESULTS: [&str; 4] = ["ok", "error_response", "timeout", "unreachable"];

/// How one provider call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderResult {
    /// A 2xx answer.
    Ok,
    /// Any other status (an OAuth error such as `invalid_grant` included).
    ErrorResponse,
    /// No answer within `oidc.timeout`.
    Timeout,
    /// No usable answer: connection refused or reset, TLS failure, an oversized body.
    Unreachable,
}

impl ProviderResult {
    pub fn as_str(self) -> &'static str {
        PROVIDER_RESULTS[self as usize]
    }
}

pub fn provider_request(endpoint: &'static str, result: ProviderResult) {
    metrics::counter!(PROVIDER_REQUESTS_TOTAL, "endpoint" => endpoint, "result" => result.as_str())
        .increment(1);
}

/// A fetched signing-key set was installed.
pub fn jwks_refreshed() {
    metrics::counter!(JWKS_REFRESHES_TOTAL).increment(1);
}

/// Registers every series of the fixed label sets, so they read 0 before their first event.
pub(super) fn preregister(recorder: &PrometheusRecorder, metadata: &Metadata<'static>) {
    let counter = |name: &'static str, labels: Vec<Label>| {
        let _ = recorder.register_counter(&Key::from_parts(name, labels), metadata);
    };
    for result in LOGIN_RESULTS {
        counter(LOGINS_TOTAL, vec![Label::new("result", result)]);
    }
    for kind in LogoutKind::ALL {
        counter(LOGOUTS_TOTAL, vec![Label::new("kind", kind.as_str())]);
    }
    for result in RefreshResult::ALL {
        counter(REFRESHES_TOTAL, vec![Label::new("result", result.as_str())]);
    }
    counter(SESSIONS_CREATED_TOTAL, Vec::new());
    counter(JWKS_REFRESHES_TOTAL, Vec::new());
    for op in STORE_OPS {
        counter(STORE_ERRORS_TOTAL, vec![Label::new("op", op)]);
    }
    for endpoint in PROVIDER_ENDPOINTS {
        for result in PROVIDER_RESULTS {
            counter(
                PROVIDER_REQUESTS_TOTAL,
                vec![
                    Label::new("endpoint", endpoint),
                    Label::new("result", result),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_results_name_their_label_values() {
        let all = [
            ProviderResult::Ok,
            ProviderResult::ErrorResponse,
            ProviderResult::Timeout,
            ProviderResult::Unreachable,
        ];
        let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, PROVIDER_RESULTS);
    }

    #[test]
    fn every_login_failure_class_is_a_registered_result() {
        let errors = [
            Error::Oidc(OidcError::NotReady),
            Error::Oidc(OidcError::MissingParam("code")),
            Error::Oidc(OidcError::UnknownState),
            Error::Oidc(OidcError::IssuerMismatch("missing")),
            Error::Oidc(OidcError::ProviderRefused {
                code: "access_denied".into(),
            }),
            Error::Oidc(OidcError::ProviderRefused {
                code: "server_error".into(),
            }),
            Error::Oidc(OidcError::TokenRejected("invalid_grant".into())),
            Error::Oidc(OidcError::InvalidTokenResponse("x".into())),
            Error::Oidc(OidcError::InvalidIdToken("x".into())),
            Error::Oidc(OidcError::ProviderUnavailable("x".into())),
            Error::Store(crate::session::StoreError::Seal),
            Error::RateLimited(std::time::Duration::from_secs(1)),
            Error::NoRoute,
        ];
        let classes: Vec<&str> = errors.iter().map(login_failure).collect();
        assert_eq!(classes, LOGIN_RESULTS[2..]);
    }
}
