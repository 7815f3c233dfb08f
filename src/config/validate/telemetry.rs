//! `server.metrics_listen` and `[telemetry]`: where metrics are served and spans exported.

use std::net::SocketAddr;

use url::Url;

use super::super::file::*;
use super::super::*;
use super::Errors;

/// The OTLP/HTTP path of the traces signal, appended to the configured base URL.
const TRACES_PATH: &str = "/v1/traces";

pub(super) fn telemetry(
    f: &TelemetryFile,
    metrics_listen: Option<&str>,
    listen: SocketAddr,
    errs: &mut Errors,
    warnings: &mut Vec<String>,
) -> TelemetryConfig {
    let metrics_listen = metrics_listen.and_then(|raw| metrics_address(raw, listen, errs));
    if let Some(addr) = metrics_listen
        && !addr.ip().is_loopback()
    {
        warnings.push(format!(
            "server.metrics_listen = {addr} is not a loopback address: make sure only your monitoring can reach it"
        ));
    }
    TelemetryConfig {
        metrics_listen,
        otlp: otlp(f, errs),
    }
}

/// A socket address that is not the public listener's (nor one that would share its socket).
fn metrics_address(raw: &str, listen: SocketAddr, errs: &mut Errors) -> Option<SocketAddr> {
    let key = "server.metrics_listen";
    let addr = match raw.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(e) => {
            errs.push(key, format!("invalid address {raw:?}: {e}"));
            return None;
        }
    };
    let same_port = addr.port() != 0 && addr.port() == listen.port();
    let overlapping =
        addr.ip() == listen.ip() || addr.ip().is_unspecified() || listen.ip().is_unspecified();
    if same_port && overlapping {
        errs.push(
            key,
            format!(
                "{addr} is the public listener (server.listen = {listen}): metrics need a listener of their own"
            ),
        );
        return None;
    }
    Some(addr)
}

fn otlp(f: &TelemetryFile, errs: &mut Errors) -> Option<OtlpConfig> {
    let raw = f.otlp_endpoint.as_deref()?;
    let endpoint = traces_endpoint(raw, errs);
    let service_name = f
        .service_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if service_name.trim().is_empty() || service_name.len() > 255 {
        errs.push(
            "telemetry.service_name",
            "must be 1 to 255 characters, not blank",
        );
    }
    let sample_ratio = f.sample_ratio.unwrap_or(DEFAULT_SAMPLE_RATIO);
    if !(0.0..=1.0).contains(&sample_ratio) {
        errs.push(
            "telemetry.sample_ratio",
            "must be between 0.0 (none) and 1.0 (every trace)",
        );
    }
    Some(OtlpConfig {
        endpoint: endpoint?,
        service_name,
        sample_ratio,
    })
}

/// `http(s)://host[:port][/base]` → the traces endpoint, `…/v1/traces` (as the OpenTelemetry
/// spec builds it from `OTEL_EXPORTER_OTLP_ENDPOINT`); a URL already ending so is kept.
fn traces_endpoint(raw: &str, errs: &mut Errors) -> Option<Url> {
    let key = "telemetry.otlp_endpoint";
    let mut url = match Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            errs.push(key, format!("invalid URL {raw:?}: {e}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        errs.push(
            key,
            "must be an http:// or https:// URL of an OTLP/HTTP collector, e.g. \"http://127.0.0.1:4318\"",
        );
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        errs.push(
            key,
            "must not contain credentials (use OTEL_EXPORTER_OTLP_HEADERS)",
        );
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        errs.push(key, "must not have a query or fragment");
        return None;
    }
    if !url.path().ends_with(TRACES_PATH) {
        let path = format!("{}{TRACES_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::super::super::{Config, ConfigErrors, NoEnv};

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
public_origin = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "s"
"#;

    fn load(extra_server: &str, telemetry: &str) -> Result<Config, Vec<String>> {
        let text = BASE.replacen("[server]", &format!("[server]\n{extra_server}"), 1)
            + "[telemetry]\n"
            + telemetry;
        Config::from_toml(&text, &NoEnv).map_err(|e| match e {
            ConfigErrors::Invalid(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn metrics_and_tracing_are_off_by_default() {
        let config = load("", "").unwrap();
        assert!(config.telemetry.metrics_listen.is_none());
        assert!(config.telemetry.otlp.is_none());
    }

    #[test]
    fn the_metrics_listener_is_refused_where_it_would_be_the_public_one() {
        for same in ["127.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"] {
            let errors = load(&format!("metrics_listen = \"{same}\""), "").unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("server.metrics_listen:")
                        && e.contains("listener of their own")),
                "{same}: {errors:?}"
            );
        }
        let errors = load("metrics_listen = \"localhost:9090\"", "").unwrap_err();
        assert!(errors[0].starts_with("server.metrics_listen: invalid address"));
        let config = load("metrics_listen = \"127.0.0.1:9090\"", "").unwrap();
        assert_eq!(
            config.telemetry.metrics_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert!(
            !config.warnings.iter().any(|w| w.contains("metrics_listen")),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn a_metrics_listener_off_loopback_is_accepted_with_a_warning() {
        let config = load("metrics_listen = \"0.0.0.0:9090\"", "").unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("server.metrics_listen") && w.contains("loopback")),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn the_otlp_endpoint_is_a_base_url_that_gets_the_traces_path() {
        let endpoint = |raw: &str| {
            load("", &format!("otlp_endpoint = \"{raw}\""))
                .unwrap()
                .telemetry
                .otlp
                .unwrap()
                .endpoint
                .to_string()
        };
        assert_eq!(
            endpoint("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            endpoint("https://otel.internal/otlp/"),
            "https://otel.internal/otlp/v1/traces"
        );
        assert_eq!(
            endpoint("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
        let otlp = load("", "otlp_endpoint = \"http://c:4318\"")
            .unwrap()
            .telemetry
            .otlp
            .unwrap();
        assert_eq!(otlp.service_name, "gatehouse");
        assert!((otlp.sample_ratio - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn bad_telemetry_values_name_their_key() {
        for (telemetry, key) in [
            (
                "otlp_endpoint = \"grpc://c:4317\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://u:p@c:4318\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://c:4318/?x=1\"",
                "telemetry.otlp_endpoint",
            ),
            ("otlp_endpoint = \"not a url\"", "telemetry.otlp_endpoint"),
            (
                "otlp_endpoint = \"http://c:4318\"\nsample_ratio = 1.5",
                "telemetry.sample_ratio",
            ),
            (
                "otlp_endpoint = \"http://c:4318\"\nservice_name = \" \"",
                "telemetry.service_name",
            ),
            (
                "otlp_endpointt = \"http://c:4318\"",
                "telemetry.otlp_endpointt",
            ),
        ] {
            let errors = load("", telemetry).unwrap_err();
            assert!(
                errors.iter().any(|e| e.starts_with(&format!("{key}:"))),
                "{telemetry}: {errors:?}"
            );
        }
    }
}
