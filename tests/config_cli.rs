//! The command line and the config: `gatehouse keygen`, `gatehouse check`, and environment
//! overrides, run through the real binary and through `Config::from_toml`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse::config::{Config, ConfigErrors, ENV_CLIENT_SECRET, ENV_SESSION_KEYS};
use gatehouse::cookie::KeyRing;

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

const VALID: &str = r#"
[server]
listen = "127.0.0.1:0"
public_origin = "https://app.example.com"

[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "from-file"

[session]
keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]

[[routes]]
path = "/api/"
upstream = "http://127.0.0.1:9000"
auth = "required"
"#;

/// Every kind of problem `validate` knows, one of each, and no unknown key.
const INVALID: &str = r#"
[server]
public_origin = "https://app.example.com"

[oidc]
issuer = "http://id.example.com"
client_id = "bff"
client_secret = "s"

[session]
store = "redis"
keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "AAEC"]
cookie_domain = "example.com"
idle_timeout = "a while"

[[routes]]
path = "/api/"
upstream = "not a url"
auth = "required"

[[routes]]
path = "/opt/"
upstream = "http://127.0.0.1:9000"
auth = "maybe"

[[routes]]
path = "/app/"
static_dir = "./no-such-directory-for-gatehouse-tests"
auth = "none"
"#;

/// Each problem in [`INVALID`]: the key it must be reported under and a word of the message.
const INVALID_PROBLEMS: [(&str, &str); 8] = [
    ("oidc.issuer", "https"),
    ("session.redis_url", "required"),
    ("session.keys[1]", "32 bytes"),
    ("session.cookie_domain", "__Host-"),
    ("session.idle_timeout", "duration"),
    ("routes[0].upstream", "not a url"),
    ("routes[1].auth", "maybe"),
    ("routes[2].static_dir", "does not exist"),
];

/// The real binary, with none of gatehouse's environment variables inherited.
fn gatehouse(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for var in [
        "GATEHOUSE_CONFIG",
        "GATEHOUSE_LOG",
        "GATEHOUSE_OIDC_CLIENT_SECRET",
        "GATEHOUSE_SESSION_KEYS",
        "GATEHOUSE_REDIS_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).output().expect("run the gatehouse binary")
}

/// Output as text: stdout then stderr.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config file in the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let n: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("gatehouse-{name}-{n:x}.toml"));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn problems(result: Result<Config, ConfigErrors>) -> Vec<String> {
    match result {
        Ok(_) => panic!("config accepted"),
        Err(ConfigErrors::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("expected validation errors, got: {other}"),
    }
}

fn key(b64: &str) -> [u8; 32] {
    STANDARD.decode(b64).unwrap().try_into().unwrap()
}

#[test]
fn keygen_prints_a_fresh_32_byte_key_in_base64() {
    let runs: Vec<String> = (0..2)
        .map(|_| {
            let out = gatehouse(&["keygen"]);
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .collect();
    for k in &runs {
        let bytes = STANDARD.decode(k).unwrap_or_else(|e| panic!("{k:?}: {e}"));
        assert_eq!(bytes.len(), 32, "{k}");
    }
    assert_ne!(runs[0], runs[1], "every key is fresh");
}

#[test]
fn keygen_output_is_accepted_as_a_session_key() {
    let out = gatehouse(&["keygen"]);
    let fresh = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let text = VALID.replace(KEY_A, &fresh);
    assert!(text.contains(&fresh));
    Config::from_toml(&text, &HashMap::new()).unwrap();
}

#[test]
fn check_accepts_a_valid_config() {
    let file = TempFile::new("valid", VALID);
    let out = gatehouse(&["check", "--config", file.path()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok"), "{}", text(&out));
}

#[test]
fn check_lists_every_problem_with_its_key() {
    let file = TempFile::new("invalid", INVALID);
    let out = gatehouse(&["check", "--config", file.path()]);
    assert!(!out.status.success());
    let report = text(&out);
    for (key, word) in INVALID_PROBLEMS {
        let line = report
            .lines()
            .find(|l| l.contains(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{key} not reported in:\n{report}"));
        assert!(
            line.to_lowercase().contains(&word.to_lowercase()),
            "{key}: {line}"
        );
    }
    assert!(!report.contains("panicked"), "{report}");
}

#[test]
fn check_names_an_unknown_key() {
    let text_with_typo = VALID.replace(
        "client_id = \"bff\"",
        "client_id = \"bff\"\nclient_scret = \"x\"",
    );
    let file = TempFile::new("unknown", &text_with_typo);
    let out = gatehouse(&["check", "--config", file.path()]);
    assert!(!out.status.success());
    let report = text(&out);
    assert!(
        report.contains("oidc.client_scret: unknown key"),
        "{report}"
    );
}

#[test]
fn check_lists_an_unknown_key_together_with_every_other_problem() {
    let config = INVALID.replace(
        "client_id = \"bff\"",
        "client_id = \"bff\"\nclient_scret = \"x\"",
    );
    let file = TempFile::new("unknown-and-invalid", &config);
    let out = gatehouse(&["check", "--config", file.path()]);
    assert!(!out.status.success());
    let report = text(&out);
    assert!(report.contains("client_scret"), "{report}");
    for (key, _) in INVALID_PROBLEMS {
        assert!(
            report.contains(&format!("{key}: ")),
            "{key} missing:\n{report}"
        );
    }
}

#[test]
fn check_with_a_missing_file_names_the_path() {
    let n: u64 = rand::random();
    let path = std::env::temp_dir().join(format!("gatehouse-missing-{n:x}.toml"));
    let path = path.to_str().unwrap();
    let out = gatehouse(&["check", "--config", path]);
    assert!(!out.status.success());
    assert!(text(&out).contains(path), "{}", text(&out));
}

#[test]
fn check_reads_secrets_from_the_environment() {
    let without = VALID
        .replace("client_secret = \"from-file\"\n", "")
        .replace(
            &format!("keys = [\"{KEY_A}\"]\n"),
            "store = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n",
        );
    let file = TempFile::new("env", &without);
    let out = gatehouse(&["check", "--config", file.path()]);
    assert!(!out.status.success(), "no secret, no keys: {}", text(&out));
    let report = text(&out);
    assert!(report.contains("oidc.client_secret: "), "{report}");
    assert!(report.contains("session.keys: "), "{report}");

    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config", file.path()])
        .env("GATEHOUSE_OIDC_CLIENT_SECRET", "from-env")
        .env("GATEHOUSE_SESSION_KEYS", format!("{KEY_B},{KEY_A}"))
        .env_remove("GATEHOUSE_REDIS_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn environment_secret_overrides_the_file() {
    let file_only = Config::from_toml(VALID, &HashMap::new()).unwrap();
    assert_eq!(file_only.oidc.client_secret.expose(), "from-file");

    let config = Config::from_toml(VALID, &env(&[(ENV_CLIENT_SECRET, "from-env")])).unwrap();
    assert_eq!(config.oidc.client_secret.expose(), "from-env");
}

#[test]
fn environment_session_keys_override_the_file() {
    let e = env(&[(ENV_SESSION_KEYS, &format!("{KEY_B}, {KEY_A}"))]);
    let config = Config::from_toml(VALID, &e).unwrap();
    let ring = &config.session.keys;
    // The environment's first key seals; both open.
    let sealed = ring.seal("c", b"payload");
    let b_only = KeyRing::new(vec![key(KEY_B)]);
    assert_eq!(
        b_only.open("c", &sealed).as_deref().map(Vec::as_slice),
        Some(&b"payload"[..])
    );
    let from_a = KeyRing::new(vec![key(KEY_A)]).seal("c", b"old");
    assert!(
        ring.open("c", &from_a).is_some(),
        "the file's key is listed too via env"
    );

    // Without the environment, the file's single key seals.
    let file_only = Config::from_toml(VALID, &HashMap::new()).unwrap();
    let sealed = file_only.session.keys.seal("c", b"payload");
    assert!(b_only.open("c", &sealed).is_none());

    // Problems in the environment's keys are reported under session.keys.
    let bad = env(&[(ENV_SESSION_KEYS, &format!("{KEY_B},AAEC"))]);
    let list = problems(Config::from_toml(VALID, &bad));
    assert!(
        list.iter().any(|p| p.starts_with("session.keys[1]: ")),
        "{list:?}"
    );
}

#[test]
fn from_toml_reports_every_problem_of_the_invalid_config() {
    let list = problems(Config::from_toml(INVALID, &HashMap::new()));
    for (key, _) in INVALID_PROBLEMS {
        assert!(
            list.iter().any(|p| p.starts_with(&format!("{key}: "))),
            "{key} missing from {list:?}"
        );
    }
}
