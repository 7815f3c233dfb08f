//! `[session]`'s Redis keys: exactly one topology, credentials kept out of URLs (URLs get
//! logged), and TLS files that read and parse. Every error names its key and never echoes a
//! URL or a password, since either may hold a secret.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::super::env::{ENV_REDIS_PASSWORD, ENV_REDIS_URL, EnvSource};
use super::super::file::SessionFile;
use super::super::{RedisClientCert, RedisConfig, RedisTopology};
use super::Errors;
use crate::secret::Secret;

const URL_KEY: &str = "session.redis_url";
const NODES_KEY: &str = "session.redis_cluster_nodes";
const SENTINELS_KEY: &str = "session.redis_sentinels";
const MASTER_KEY: &str = "session.redis_sentinel_master";
const PASSWORD_KEYS: &str =
    "session.redis_password, session.redis_password_file or env GATEHOUSE_REDIS_PASSWORD";

/// The Redis store's config, or `None` when it is unusable (the errors say why).
pub(super) fn redis(
    f: &SessionFile,
    env: &dyn EnvSource,
    errs: &mut Errors,
) -> Option<RedisConfig> {
    let env_url = env.var(ENV_REDIS_URL);
    let url_key = if env_url.is_some() {
        format!("env {ENV_REDIS_URL}")
    } else {
        URL_KEY.to_owned()
    };
    let url = env_url.or_else(|| f.redis_url.clone());
    let topology = topology(f, url.as_deref(), &url_key, errs);
    let tls = topology.as_ref().is_some_and(uses_tls);
    let (ca_pem, client_cert) = tls_files(f, tls, errs);
    let (username, password) = credentials(f, env, errs);
    Some(RedisConfig {
        topology: topology?,
        username,
        password,
        ca_pem,
        client_cert,
    })
}

/// The Redis keys set in a file whose store is not Redis: they would be ignored.
pub(super) fn ignored_keys(f: &SessionFile) -> Vec<&'static str> {
    let set = [
        (URL_KEY, f.redis_url.is_some()),
        (NODES_KEY, f.redis_cluster_nodes.is_some()),
        (SENTINELS_KEY, f.redis_sentinels.is_some()),
        (MASTER_KEY, f.redis_sentinel_master.is_some()),
        ("session.redis_username", f.redis_username.is_some()),
        ("session.redis_password", f.redis_password.is_some()),
        (
            "session.redis_password_file",
            f.redis_password_file.is_some(),
        ),
        ("session.redis_ca_file", f.redis_ca_file.is_some()),
        (
            "session.redis_client_cert_file",
            f.redis_client_cert_file.is_some(),
        ),
        (
            "session.redis_client_key_file",
            f.redis_client_key_file.is_some(),
        ),
    ];
    set.into_iter()
        .filter_map(|(key, is_set)| is_set.then_some(key))
        .collect()
}

fn uses_tls(t: &RedisTopology) -> bool {
    let first = match t {
        RedisTopology::Server(url) => Some(url),
        RedisTopology::Cluster(nodes) => nodes.first(),
        RedisTopology::Sentinel { sentinels, .. } => sentinels.first(),
    };
    first.is_some_and(|u| u.starts_with("rediss:"))
}

fn topology(
    f: &SessionFile,
    url: Option<&str>,
    url_key: &str,
    errs: &mut Errors,
) -> Option<RedisTopology> {
    let present: Vec<&str> = [
        (url_key, url.is_some()),
        (NODES_KEY, f.redis_cluster_nodes.is_some()),
        (SENTINELS_KEY, f.redis_sentinels.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if f.redis_sentinel_master.is_some() && f.redis_sentinels.is_none() {
        errs.push(MASTER_KEY, format!("only used with {SENTINELS_KEY}"));
    }
    match present.as_slice() {
        [] => {
            errs.push(
                URL_KEY,
                format!(
                    "required when session.store = \"redis\" (or env {ENV_REDIS_URL}); for \
                     Redis Cluster set {NODES_KEY}, for Sentinel {SENTINELS_KEY} and {MASTER_KEY}"
                ),
            );
            return None;
        }
        [_] => {}
        [first, rest @ ..] => {
            for key in rest {
                errs.push(
                    *key,
                    format!(
                        "conflicts with {first}: set exactly one of {URL_KEY}, {NODES_KEY} \
                         and {SENTINELS_KEY}"
                    ),
                );
            }
            return None;
        }
    }
    if let Some(url) = url {
        return server_url(url_key, url, errs).map(RedisTopology::Server);
    }
    if let Some(nodes) = &f.redis_cluster_nodes {
        return url_list(NODES_KEY, nodes, false, errs).map(RedisTopology::Cluster);
    }
    let sentinels = url_list(SENTINELS_KEY, f.redis_sentinels.as_deref()?, true, errs);
    let master = match f.redis_sentinel_master.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() && !m.contains(char::is_whitespace) => Some(m.to_owned()),
        Some(_) => {
            errs.push(MASTER_KEY, "must be a master name without spaces");
            None
        }
        None => {
            errs.push(
                MASTER_KEY,
                format!("required with {SENTINELS_KEY}: the name the sentinels monitor"),
            );
            None
        }
    };
    Some(RedisTopology::Sentinel {
        sentinels: sentinels?,
        master: master?,
    })
}

/// A list of node URLs, all redis:// or all rediss://.
fn url_list(key: &str, raw: &[String], sentinel: bool, errs: &mut Errors) -> Option<Vec<String>> {
    if raw.is_empty() {
        errs.push(key, "must list at least one node");
        return None;
    }
    let mut urls = Vec::new();
    for (i, item) in raw.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        let Some(url) = parse(&item_key, item, errs) else {
            continue;
        };
        if !matches!(url.path(), "" | "/") {
            let why = if sentinel {
                "must not name a database (sentinels have none)"
            } else {
                "must not name a database (Redis Cluster has only database 0)"
            };
            errs.push(&item_key, why);
            continue;
        }
        if urls
            .first()
            .is_some_and(|first: &String| !first.starts_with(&format!("{}:", url.scheme())))
        {
            errs.push(
                &item_key,
                format!("mixes redis:// and rediss://; every entry of {key} must use the same"),
            );
            continue;
        }
        urls.push(item.trim().to_owned());
    }
    (urls.len() == raw.len()).then_some(urls)
}

fn server_url(key: &str, raw: &str, errs: &mut Errors) -> Option<String> {
    parse(key, raw, errs)?;
    Some(raw.trim().to_owned())
}

/// A redis:// or rediss:// URL without credentials and without `#insecure`.
fn parse(key: &str, raw: &str, errs: &mut Errors) -> Option<url::Url> {
    let raw = raw.trim();
    let Some(url) =
        redis::parse_redis_url(raw).filter(|u| matches!(u.scheme(), "redis" | "rediss"))
    else {
        errs.push(key, "must be a redis:// or rediss:// URL");
        return None;
    };
    if url.password().is_some() || !url.username().is_empty() {
        // The URL is not echoed: it holds a password.
        errs.push(
            key,
            format!(
                "must not contain credentials (URLs are logged); set session.redis_username \
                 and the password in {PASSWORD_KEYS}"
            ),
        );
        return None;
    }
    if url.fragment() == Some("insecure") {
        errs.push(
            key,
            "#insecure would turn off certificate checks; trust a private CA with session.redis_ca_file instead",
        );
        return None;
    }
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(raw) {
        errs.push(key, format!("invalid: {e}"));
        return None;
    }
    Some(url)
}

fn credentials(
    f: &SessionFile,
    env: &dyn EnvSource,
    errs: &mut Errors,
) -> (Option<String>, Option<Secret>) {
    if f.redis_password.is_some() && f.redis_password_file.is_some() {
        errs.push(
            "session.redis_password_file",
            "set only one of session.redis_password and session.redis_password_file",
        );
    }
    let (key, password) = if let Some(p) = env.var(ENV_REDIS_PASSWORD) {
        (format!("env {ENV_REDIS_PASSWORD}"), Some(p))
    } else if let Some(p) = &f.redis_password {
        ("session.redis_password".to_owned(), Some(p.clone()))
    } else if let Some(path) = &f.redis_password_file {
        let key = "session.redis_password_file".to_owned();
        match std::fs::read_to_string(path) {
            Ok(s) => (key, Some(s.trim().to_owned())),
            Err(e) => {
                errs.push(&key, format!("cannot read {path}: {e}"));
                (key, None)
            }
        }
    } else {
        (String::new(), None)
    };
    let password = password.map(Secret::new);
    if password.as_ref().is_some_and(|p| p.expose().is_empty()) {
        errs.push(key, "must not be empty");
    }
    let username = f
        .redis_username
        .as_deref()
        .map(str::trim)
        .map(str::to_owned);
    match &username {
        Some(u) if u.is_empty() || u.contains(char::is_whitespace) => {
            errs.push(
                "session.redis_username",
                "must be an ACL user name without spaces",
            );
        }
        Some(_) if password.is_none() => {
            errs.push(
                "session.redis_username",
                format!("needs a password: set {PASSWORD_KEYS}"),
            );
        }
        _ => {}
    }
    (username, password)
}

/// The CA and the client certificate files, read and checked; only meaningful with rediss://.
fn tls_files(
    f: &SessionFile,
    tls: bool,
    errs: &mut Errors,
) -> (Option<Vec<u8>>, Option<RedisClientCert>) {
    let only_tls = |key: &str, errs: &mut Errors| {
        errs.push(
            key,
            "only used with rediss:// URLs (TLS); plain redis:// would ignore it",
        );
    };
    let ca_pem = f.redis_ca_file.as_deref().and_then(|path| {
        let key = "session.redis_ca_file";
        if !tls {
            only_tls(key, errs);
            return None;
        }
        ca_file(key, path, errs)
    });
    let client = match (&f.redis_client_cert_file, &f.redis_client_key_file) {
        (None, None) => None,
        (Some(_), None) => {
            errs.push(
                "session.redis_client_key_file",
                "required with session.redis_client_cert_file",
            );
            None
        }
        (None, Some(_)) => {
            errs.push(
                "session.redis_client_cert_file",
                "required with session.redis_client_key_file",
            );
            None
        }
        (Some(_), Some(_)) if !tls => {
            only_tls("session.redis_client_cert_file", errs);
            None
        }
        (Some(cert), Some(key)) => client_cert(cert, key, errs),
    };
    (ca_pem, client)
}

fn read(key: &str, path: &str, errs: &mut Errors) -> Option<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| errs.push(key, format!("cannot read {path}: {e}")))
        .ok()
}

/// The certificates of a PEM file, each parsed; `None` (with an error) when there is none.
fn certificates(
    key: &str,
    path: &str,
    pem: &[u8],
    errs: &mut Errors,
) -> Option<Vec<CertificateDer<'static>>> {
    match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            errs.push(key, format!("{path} holds no PEM certificate"));
            None
        }
        Err(e) => {
            errs.push(key, format!("{path} is not valid PEM: {e}"));
            None
        }
    }
}

fn ca_file(key: &str, path: &str, errs: &mut Errors) -> Option<Vec<u8>> {
    let pem = read(key, path, errs)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(key, path, &pem, errs)? {
        if let Err(e) = roots.add(cert) {
            errs.push(
                key,
                format!("{path} holds a certificate that cannot be a trust anchor: {e}"),
            );
            return None;
        }
    }
    Some(pem)
}

fn client_cert(cert_path: &str, key_path: &str, errs: &mut Errors) -> Option<RedisClientCert> {
    let (cert_key, key_key) = (
        "session.redis_client_cert_file",
        "session.redis_client_key_file",
    );
    let cert_pem = read(cert_key, cert_path, errs)?;
    let chain = certificates(cert_key, cert_path, &cert_pem, errs)?;
    let key_pem = read(key_key, key_path, errs)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| {
            errs.push(
                key_key,
                format!("{key_path} holds no usable PEM private key: {e}"),
            )
        })
        .ok()?;
    // rustls checks that the key is supported and belongs to the certificate.
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, private)
        .map_err(|e| {
            errs.push(key_key, format!("{key_path} does not fit {cert_path}: {e}"));
        })
        .ok()?;
    let key_pem = String::from_utf8(key_pem)
        .map_err(|_| errs.push(key_key, format!("{key_path} is not PEM text")))
        .ok()?;
    Some(RedisClientCert {
        cert_pem,
        key_pem: Secret::new(key_pem),
    })
}

#[cfg(test)]
mod tests;
