//! Validation as a whole: every key named in its error, defaults, what is refused together.

use super::super::{Config, NoEnv};

/// A minimal valid config; other modules' tests build on it.
pub(super) const BASE: &str = r#"
[server]
public_origin = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "s"
[[routes]]
path = "/api/"
upstream = "https://api.internal"
auth = "required"
"#;

/// The keys `text` is refused for; empty when it is accepted.
pub(super) fn refused(text: &str) -> Vec<String> {
    match Config::from_toml(text, &NoEnv) {
        Ok(_) => Vec::new(),
        Err(super::super::ConfigErrors::Invalid(errors)) => {
            errors.into_iter().map(|e| e.key).collect()
        }
        Err(other) => vec![other.to_string()],
    }
}

fn with(section: &str, line: &str) -> String {
    BASE.replacen(section, &format!("{section}\n{line}"), 1)
}

#[test]
fn the_base_config_is_accepted() {
    assert!(refused(BASE).is_empty(), "{:?}", refused(BASE));
}

#[test]
fn session_cookies_must_be_host_only_by_name() {
    let text = format!("{BASE}\n[session]\ncookie_name = \"gatehouse\"");
    assert_eq!(refused(&text), ["session.cookie_name"]);
    let text =
        format!("{BASE}\n[session]\ncookie_name = \"__Host-app\"\ncookie_domain = \"example.com\"");
    assert_eq!(refused(&text), ["session.cookie_domain"]);
}

#[test]
fn the_anti_forgery_header_must_be_a_custom_x_header() {
    for name in [
        "Accept-Language",
        "Content-Language",
        "Range",
        "Cookie",
        "Sec-Fetch-Dest",
    ] {
        let text = format!("{BASE}\n[auth]\ncsrf_header = \"{name}\"");
        assert_eq!(refused(&text), ["auth.csrf_header"], "{name}");
    }
    assert!(
        refused(&format!(
            "{BASE}\n[auth]\ncsrf_header = \"X-Requested-With\""
        ))
        .is_empty()
    );
}

#[test]
fn plain_http_to_a_remote_host_on_a_token_route_needs_an_explicit_opt_in() {
    let plain = BASE.replace("https://api.internal", "http://api.internal");
    assert_eq!(refused(&plain), ["routes[0].upstream"]);
    assert!(
        refused(
            &with("auth = \"required\"", "allow_plain_http = true")
                .replace("https://api.internal", "http://api.internal")
        )
        .is_empty()
    );
    assert!(
        refused(&plain.replace("required", "none")).is_empty(),
        "public routes carry no token"
    );
    assert!(
        refused(&BASE.replace("https://api.internal", "http://127.0.0.1:9100")).is_empty(),
        "loopback is fine"
    );
}

#[test]
fn a_refresh_lease_shorter_than_one_provider_call_and_write_is_refused() {
    // Defaults: 10 s provider timeout, 2 s store timeout, 2 s clock margin: at least 16 s.
    assert_eq!(
        refused(&format!("{BASE}\n[session]\nrefresh_lock_lease = \"15s\"")),
        ["session.refresh_lock_lease"]
    );
    assert!(refused(&format!("{BASE}\n[session]\nrefresh_lock_lease = \"16s\"")).is_empty());
    let config = Config::from_toml(BASE, &NoEnv).unwrap();
    assert_eq!(
        config.session.refresh_lock_lease,
        std::time::Duration::from_secs(16),
        "unset, the lease is the shortest safe one"
    );
}

#[test]
fn trusted_proxies_and_the_login_rate_limit_name_the_bad_entry() {
    assert_eq!(
        refused(&with(
            "public_origin = \"https://app.example.com\"",
            "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"10.0.0.0/33\", \"lb.internal\"]"
        )),
        ["server.trusted_proxies[2]", "server.trusted_proxies[3]"]
    );
    assert_eq!(
        refused(&format!("{BASE}\n[auth]\nlogin_rate_burst = 0")),
        ["auth.login_rate_burst"]
    );
    let off = Config::from_toml(&format!("{BASE}\n[auth]\nlogin_rate_limit = 0"), &NoEnv).unwrap();
    assert!(off.auth.login_rate.is_none());
    let default = Config::from_toml(BASE, &NoEnv).unwrap();
    let (per_minute, burst) = default.auth.login_rate.unwrap();
    assert_eq!((per_minute.get(), burst.get()), (30, 10));
}

#[test]
fn allowed_hosts_and_strip_headers_name_the_bad_entry() {
    assert_eq!(
        refused(&with(
            "public_origin = \"https://app.example.com\"",
            "allowed_hosts = [\"ok.example\", \"user@bad\"]"
        )),
        ["server.allowed_hosts[1]"]
    );
    assert_eq!(
        refused(&with(
            "public_origin = \"https://app.example.com\"",
            "strip_request_headers = [\"X-Ok-*\", \"bad header\"]"
        )),
        ["server.strip_request_headers[1]"]
    );
    let config = Config::from_toml(BASE, &NoEnv).unwrap();
    assert_eq!(
        config.server.allowed_hosts,
        ["app.example.com:443", "app.example.com"]
    );
}

#[test]
fn a_route_prefix_outside_letters_digits_and_dash_dot_underscore_tilde_is_refused() {
    for path in ["/a@b/", "/api:v1", "/%61pi/"] {
        assert_eq!(
            refused(&BASE.replace("\"/api/\"", &format!("{path:?}"))),
            ["routes[0].path"],
            "{path}"
        );
    }
}

#[test]
fn a_config_that_does_not_parse_never_repeats_a_secret_value() {
    let key = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg";
    let texts = [
        // A key written as a string instead of a list: toml names the value it got.
        format!("{BASE}\n[session]\nkeys = \"{key}\""),
        // A syntax error on the secret's line: toml quotes the line.
        BASE.replace(
            "client_secret = \"s\"",
            &format!("client_secret = \"{key}\" x"),
        ),
        BASE.replace(
            "client_secret = \"s\"",
            &format!("client_secret = 'a\"{key}' x"),
        ),
    ];
    for text in texts {
        let Err(e) = Config::from_toml(&text, &NoEnv) else {
            panic!("accepted {text}");
        };
        let shown = e.to_string();
        assert!(
            shown.starts_with("config is not valid TOML: line "),
            "{shown}"
        );
        assert!(!shown.contains(key), "{shown}");
    }
}

#[test]
fn max_body_takes_bytes_or_a_unit_and_refuses_anything_else_by_name() {
    let limit = |value: &str| {
        let config = Config::from_toml(
            &with("auth = \"required\"", &format!("max_body = {value}")),
            &NoEnv,
        )
        .unwrap();
        config.routes.iter().next().unwrap().max_body
    };
    assert_eq!(limit("4096"), Some(4096));
    assert_eq!(limit("\"512KiB\""), Some(512 << 10));
    assert_eq!(limit("\"10MiB\""), Some(10 << 20));
    assert_eq!(limit("\"2 MB\""), Some(2_000_000));
    for bad in [
        "0",
        "-1",
        "\"lots\"",
        "\"5 parsecs\"",
        "\"99999999999999GiB\"",
    ] {
        assert_eq!(
            refused(&with("auth = \"required\"", &format!("max_body = {bad}"))),
            ["routes[0].max_body"],
            "{bad}"
        );
    }
    let shown = match Config::from_toml(&with("auth = \"required\"", "max_body = \"lots\""), &NoEnv)
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(shown.contains("invalid size \"lots\";"), "{shown}");
    let unlimited = Config::from_toml(&with("auth = \"required\"", ""), &NoEnv).unwrap();
    assert_eq!(
        unlimited.routes.iter().next().unwrap().max_body,
        None,
        "off by default"
    );
}

#[test]
fn server_workers_defaults_to_one_per_core_and_refuses_zero() {
    let origin = "public_origin = \"https://app.example.com\"";
    for bad in ["workers = 0", "workers = 5000"] {
        assert_eq!(refused(&with(origin, bad)), ["server.workers"], "{bad}");
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let config = Config::from_toml(BASE, &NoEnv).unwrap();
    assert_eq!(config.server.workers, cores);
    let config = Config::from_toml(&with(origin, "workers = 3"), &NoEnv).unwrap();
    assert_eq!(config.server.workers, 3);
}

#[test]
fn websocket_and_streaming_keys_are_validated_and_named() {
    assert_eq!(
        refused(&with(
            "public_origin = \"https://app.example.com\"",
            "max_websockets = 0"
        )),
        ["server.max_websockets"]
    );
    assert_eq!(
        refused(&with("auth = \"required\"", "stream_idle_timeout = \"0s\"")),
        ["routes[0].stream_idle_timeout"]
    );
    assert_eq!(
        refused(&with(
            "auth = \"required\"",
            "websocket_idle_timeout = \"soon\""
        )),
        ["routes[0].websocket_idle_timeout"]
    );
    let config = Config::from_toml(
        &with(
            "auth = \"required\"",
            "upstream_http2 = true\nwebsocket_idle_timeout = \"30s\"",
        ),
        &NoEnv,
    )
    .unwrap();
    let route = config.routes.iter().next().unwrap();
    assert!(route.upstream_http2);
    assert_eq!(route.websocket_idle_timeout.as_secs(), 30);
    assert_eq!(route.stream_idle_timeout.as_secs(), 300, "default 5m");
    assert_eq!(config.server.max_websockets, 10_000);
}

#[test]
fn tolerances_that_weaken_token_checks_are_capped() {
    assert_eq!(
        refused(&with("client_secret = \"s\"", "clock_skew = \"1d\"")),
        ["oidc.clock_skew"]
    );
    assert_eq!(
        refused(&with("client_secret = \"s\"", "max_id_token_age = \"2h\"")),
        ["oidc.max_id_token_age"]
    );
    assert_eq!(
        refused(&with("client_secret = \"s\"", "timeout = \"100000000y\"")),
        ["oidc.timeout"]
    );
    assert_eq!(
        refused(&format!("{BASE}\n[session]\nmax_lifetime = \"5000d\"")),
        ["session.max_lifetime"]
    );
}

#[test]
fn the_issuer_is_kept_exactly_as_written() {
    for issuer in [
        "https://t.auth0.com/",
        "https://id.example.com",
        "https://kc/realms/x",
    ] {
        let text = BASE.replace("https://id.example.com", issuer);
        let config = Config::from_toml(&text, &NoEnv).unwrap();
        assert_eq!(config.oidc.issuer, issuer);
    }
    let query = BASE.replace("https://id.example.com", "https://id.example.com/?x=1");
    assert_eq!(refused(&query), ["oidc.issuer"]);
}

#[test]
fn auth_params_refuse_parameters_gatehouse_sets_itself() {
    for name in [
        "state",
        "nonce",
        "code_challenge",
        "redirect_uri",
        "client_id",
        "response_type",
        "scope",
        "prompt",
        "response_mode",
    ] {
        let line = format!("auth_params = {{ {name} = \"x\" }}");
        assert_eq!(
            refused(&with("client_secret = \"s\"", &line)),
            [format!("oidc.auth_params.{name}")],
            "{name}"
        );
    }
    let ok = with(
        "client_secret = \"s\"",
        r#"auth_params = { audience = "https://api", access_type = "offline" }"#,
    );
    let config = Config::from_toml(&ok, &NoEnv).unwrap();
    assert_eq!(
        config.oidc.auth_params,
        [
            ("access_type".to_owned(), "offline".to_owned()),
            ("audience".to_owned(), "https://api".to_owned())
        ]
    );
}

#[test]
fn without_discovery_the_login_endpoints_are_required() {
    let off = with("client_secret = \"s\"", "discovery = false");
    assert_eq!(
        refused(&off),
        [
            "oidc.authorization_endpoint",
            "oidc.token_endpoint",
            "oidc.jwks_uri"
        ]
    );
    let complete = with(
        "client_secret = \"s\"",
        "discovery = false\nauthorization_endpoint = \"https://id.example.com/a\"\ntoken_endpoint = \"https://other.example.com/t\"\njwks_uri = \"https://id.example.com/k\"",
    );
    assert!(refused(&complete).is_empty(), "{:?}", refused(&complete));
    let plain = with(
        "client_secret = \"s\"",
        "end_session_endpoint = \"http://id.example.com/logout\"",
    );
    assert_eq!(refused(&plain), ["oidc.end_session_endpoint"]);
}

#[test]
fn the_post_logout_redirect_param_must_be_a_free_parameter_name() {
    for bad in ["", "a b", "id_token_hint", "client_id"] {
        let line = format!("post_logout_redirect_param = \"{bad}\"");
        assert_eq!(
            refused(&with("client_secret = \"s\"", &line)),
            ["oidc.post_logout_redirect_param"],
            "{bad:?}"
        );
    }
    let cognito = with(
        "client_secret = \"s\"",
        "post_logout_redirect_param = \"logout_uri\"",
    );
    assert!(refused(&cognito).is_empty());
}

#[test]
fn metadata_refresh_bounds_are_ordered_and_capped() {
    let inverted = with(
        "client_secret = \"s\"",
        "metadata_refresh_min = \"2h\"\nmetadata_refresh_max = \"1h\"",
    );
    assert_eq!(refused(&inverted), ["oidc.metadata_refresh_min"]);
    let long = with("client_secret = \"s\"", "metadata_refresh_max = \"2d\"");
    assert_eq!(refused(&long), ["oidc.metadata_refresh_max"]);
}

#[test]
fn an_unreadable_provider_ca_file_names_oidc_ca_file() {
    let line = "ca_file = \"/nonexistent/gatehouse-ca.pem\"";
    assert_eq!(
        refused(&with("client_secret = \"s\"", line)),
        ["oidc.ca_file"]
    );
}

#[test]
fn the_forwarded_host_is_the_public_origins_host_and_port() {
    let host = |origin: &str| {
        let text = BASE.replace("https://app.example.com", origin);
        let config = Config::from_toml(&text, &NoEnv).unwrap();
        config.server.origin_host.to_str().unwrap().to_owned()
    };
    assert_eq!(host("https://app.example.com"), "app.example.com");
    assert_eq!(host("https://app.example.com:8443"), "app.example.com:8443");
    assert_eq!(
        host("https://app.example.com:443"),
        "app.example.com",
        "default port"
    );
}
