//! `check`'s refusals for the Redis keys, each naming its key.

use std::collections::HashMap;

use super::super::super::{Config, ConfigErrors, RedisTopology, StoreConfig};

/// The shared minimal config with a Redis `[session]`.
fn base() -> String {
    format!(
        "{}[session]\nstore = \"redis\"\nkeys = [\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]\n",
        super::super::tests::BASE
    )
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every problem reported for `[session]` + `lines`, as "key: message".
fn problems_with(lines: &str, env: &HashMap<String, String>) -> Vec<String> {
    match Config::from_toml(&format!("{}{lines}", base()), env) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}

fn problems(lines: &str) -> Vec<String> {
    problems_with(lines, &HashMap::new())
}

fn keys(lines: &str) -> Vec<String> {
    problems(lines)
        .iter()
        .map(|p| p.split(": ").next().unwrap_or_default().to_owned())
        .collect()
}

fn redis(lines: &str, env: &HashMap<String, String>) -> super::RedisConfig {
    match Config::from_toml(&format!("{}{lines}", base()), env) {
        Ok(Config {
            session:
                super::super::super::SessionConfig {
                    store: StoreConfig::Redis(r),
                    ..
                },
            ..
        }) => r,
        Ok(_) => panic!("not a redis store"),
        Err(e) => panic!("{e}"),
    }
}

/// A file in the temp dir with `contents`, removed when dropped.
struct Temp(std::path::PathBuf);

impl Temp {
    fn new(contents: &[u8]) -> Temp {
        let n: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("gatehouse-redis-test-{n:x}"));
        std::fs::write(&path, contents).unwrap();
        Temp(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn self_signed() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[test]
fn each_topology_alone_is_accepted() {
    let one = redis("redis_url = \"rediss://redis.internal:6380/0\"", &env(&[]));
    assert_eq!(
        one.topology,
        RedisTopology::Server("rediss://redis.internal:6380/0".into())
    );
    let cluster = redis(
        "redis_cluster_nodes = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
        &env(&[]),
    );
    assert!(matches!(cluster.topology, RedisTopology::Cluster(n) if n.len() == 2));
    let sentinel = redis(
        "redis_sentinels = [\"redis://10.0.0.5:26379\"]\nredis_sentinel_master = \"mymaster\"",
        &env(&[]),
    );
    assert!(
        matches!(sentinel.topology, RedisTopology::Sentinel { master, .. } if master == "mymaster")
    );
}

#[test]
fn exactly_one_topology_must_be_set() {
    assert_eq!(keys(""), ["session.redis_url"], "none");
    assert_eq!(
        keys("redis_url = \"redis://a\"\nredis_cluster_nodes = [\"redis://b:7000\"]"),
        ["session.redis_cluster_nodes"]
    );
    assert_eq!(
        keys(
            "redis_cluster_nodes = [\"redis://b:7000\"]\nredis_sentinels = [\"redis://c:26379\"]\nredis_sentinel_master = \"m\""
        ),
        ["session.redis_sentinels"]
    );
    let from_env = problems_with(
        "redis_cluster_nodes = [\"redis://b:7000\"]",
        &env(&[("GATEHOUSE_REDIS_URL", "redis://a")]),
    );
    assert_eq!(from_env.len(), 1, "{from_env:?}");
    assert!(
        from_env[0]
            .starts_with("session.redis_cluster_nodes: conflicts with env GATEHOUSE_REDIS_URL"),
        "{from_env:?}"
    );
    assert_eq!(
        keys("redis_cluster_nodes = []"),
        ["session.redis_cluster_nodes"]
    );
}

#[test]
fn sentinels_and_their_master_name_come_together() {
    assert_eq!(
        keys("redis_sentinels = [\"redis://c:26379\"]"),
        ["session.redis_sentinel_master"]
    );
    assert_eq!(
        keys("redis_url = \"redis://a\"\nredis_sentinel_master = \"m\""),
        ["session.redis_sentinel_master"]
    );
}

#[test]
fn a_password_in_a_url_is_refused_without_echoing_it() {
    for lines in [
        "redis_url = \"redis://:hunter2-url@a:6379\"",
        "redis_url = \"rediss://user:hunter2-url@a:6379\"",
        "redis_cluster_nodes = [\"redis://b:7000\", \"redis://:hunter2-url@c:7000\"]",
        "redis_sentinels = [\"redis://:hunter2-url@c:26379\"]\nredis_sentinel_master = \"m\"",
    ] {
        let list = problems(lines);
        assert_eq!(list.len(), 1, "{lines}: {list:?}");
        assert!(list[0].contains("must not contain credentials"), "{list:?}");
        assert!(
            !list[0].contains("hunter2"),
            "the password is echoed: {list:?}"
        );
    }
    assert_eq!(
        keys("redis_cluster_nodes = [\"redis://b:7000\", \"redis://:pw@c:7000\"]"),
        ["session.redis_cluster_nodes[1]"]
    );
    let from_env = problems_with(
        "",
        &env(&[("GATEHOUSE_REDIS_URL", "redis://:hunter2-env@a")]),
    );
    assert_eq!(from_env.len(), 1);
    assert!(
        from_env[0].starts_with("env GATEHOUSE_REDIS_URL: "),
        "{from_env:?}"
    );
    assert!(!from_env[0].contains("hunter2"));
}

#[test]
fn urls_must_be_redis_urls_without_insecure_and_consistent() {
    assert_eq!(keys("redis_url = \"http://a\""), ["session.redis_url"]);
    assert_eq!(
        keys("redis_url = \"rediss://a#insecure\""),
        ["session.redis_url"]
    );
    assert_eq!(
        keys("redis_url = \"redis://a/notadb\""),
        ["session.redis_url"]
    );
    assert_eq!(
        keys("redis_cluster_nodes = [\"redis://b:7000\", \"rediss://c:7000\"]"),
        ["session.redis_cluster_nodes[1]"]
    );
    assert_eq!(
        keys("redis_cluster_nodes = [\"redis://b:7000/3\"]"),
        ["session.redis_cluster_nodes[0]"]
    );
}

#[test]
fn the_password_comes_from_env_then_key_then_file() {
    let file = Temp::new(b"from-file\n");
    let lines = format!(
        "redis_url = \"redis://a\"\nredis_username = \"gatehouse\"\nredis_password_file = \"{}\"",
        file.path()
    );
    let r = redis(&lines, &env(&[]));
    assert_eq!(r.password.as_ref().map(|p| p.expose()), Some("from-file"));
    assert_eq!(r.username.as_deref(), Some("gatehouse"));
    let r = redis(&lines, &env(&[("GATEHOUSE_REDIS_PASSWORD", "from-env")]));
    assert_eq!(r.password.as_ref().map(|p| p.expose()), Some("from-env"));
    let r = redis(
        "redis_url = \"redis://a\"\nredis_password = \"inline\"",
        &env(&[]),
    );
    assert_eq!(r.password.as_ref().map(|p| p.expose()), Some("inline"));
    assert_eq!(
        keys(&format!("{lines}\nredis_password = \"inline\"")),
        ["session.redis_password_file"],
        "two sources in the file"
    );
    assert_eq!(
        keys("redis_url = \"redis://a\"\nredis_password_file = \"/nonexistent/gh-pw\""),
        ["session.redis_password_file"]
    );
    assert_eq!(
        keys("redis_url = \"redis://a\"\nredis_username = \"gatehouse\""),
        ["session.redis_username"],
        "a user without a password"
    );
    assert_eq!(
        keys("redis_url = \"redis://a\"\nredis_password = \"\""),
        ["session.redis_password"]
    );
}

#[test]
fn tls_files_are_read_checked_and_used_only_with_rediss() {
    let (cert, key) = self_signed();
    let (ca, k) = (Temp::new(cert.as_bytes()), Temp::new(key.as_bytes()));
    let r = redis(
        &format!(
            "redis_url = \"rediss://a\"\nredis_ca_file = \"{}\"\nredis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"",
            ca.path(),
            ca.path(),
            k.path()
        ),
        &env(&[]),
    );
    assert_eq!(r.ca_pem.as_deref(), Some(cert.as_bytes()));
    assert!(r.client_cert.is_some());

    let ca_line = format!("redis_ca_file = \"{}\"", ca.path());
    assert_eq!(
        keys(&format!("redis_url = \"redis://a\"\n{ca_line}")),
        ["session.redis_ca_file"],
        "plain redis:// would ignore the CA"
    );
    let garbage = Temp::new(b"not a certificate");
    for bad in [garbage.path(), "/nonexistent/gh-ca.pem".to_owned()] {
        assert_eq!(
            keys(&format!(
                "redis_url = \"rediss://a\"\nredis_ca_file = \"{bad}\""
            )),
            ["session.redis_ca_file"]
        );
    }
    let broken = Temp::new(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert_eq!(
        keys(&format!(
            "redis_url = \"rediss://a\"\nredis_ca_file = \"{}\"",
            broken.path()
        )),
        ["session.redis_ca_file"],
        "PEM framing around something that is no certificate"
    );
    assert_eq!(
        keys(&format!(
            "redis_url = \"rediss://a\"\nredis_client_cert_file = \"{}\"",
            ca.path()
        )),
        ["session.redis_client_key_file"]
    );
    let (_, other_key) = self_signed();
    let other = Temp::new(other_key.as_bytes());
    assert_eq!(
        keys(&format!(
            "redis_url = \"rediss://a\"\nredis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"",
            ca.path(),
            other.path()
        )),
        ["session.redis_client_key_file"],
        "a key that does not belong to the certificate"
    );
}

#[test]
fn redis_keys_with_the_memory_store_are_a_warning() {
    let text = format!("{}redis_cluster_nodes = [\"redis://b:7000\"]", base())
        .replace("store = \"redis\"", "store = \"memory\"");
    let config = Config::from_toml(&text, &HashMap::new()).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.starts_with("session.redis_cluster_nodes is set")),
        "{:?}",
        config.warnings
    );
}
