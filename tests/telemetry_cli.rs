//! The documented telemetry settings, and `gatehouse run` through the real binary with
//! `GATEHOUSE_LOG_FORMAT=json`, `/metrics` and trace export on: every stderr line is a JSON
//! object, the process-wide recorder counts, and SIGTERM loses neither the last log lines nor
//! the last spans.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::collector::{Collector, SERVER, attr};
use support::prometheus::Scrape;
use support::*;

/// The running binary and its stderr, line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Running {
    fn start(config: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        cmd.arg("--config").arg(config).args(args);
        cmd.env_remove("GATEHOUSE_LOG")
            .env_remove("GATEHOUSE_LOG_FORMAT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (each must be JSON) with `message`, read so far or waited for.
    async fn wait_for(&mut self, message: &str) -> Value {
        if let Some(v) = self.seen.iter().find(|v| v["message"] == message) {
            return v.clone();
        }
        for _ in 0..500 {
            while let Ok(line) = self.lines.try_recv() {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                self.seen.push(v.clone());
                if v["message"] == message {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no {message:?} line in {:#?}", self.seen);
    }

    /// SIGTERM, then every remaining line until the process exits.
    async fn stop(mut self) -> Vec<Value> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..500 {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = self
            .child
            .try_wait()
            .unwrap()
            .expect("exited after SIGTERM");
        assert!(status.success(), "{status}");
        // The reader thread ends with the pipe.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            self.seen.push(v);
        }
        self.seen
    }
}

#[tokio::test]
async fn json_logs_metrics_and_traces_through_the_binary_lose_nothing_at_shutdown() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let collector = Collector::start().await;
    let text = config(&provider, &upstream, "")
        .replace("{listen}", "127.0.0.1:0")
        .replace("{origin}", "http://127.0.0.1:8080")
        .replacen(
            "[server]\n",
            "[server]\nmetrics_listen = \"127.0.0.1:0\"\nallowed_hosts = [\"127.0.0.1\"]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
            1,
        )
        + &format!(
            "\n[telemetry]\notlp_endpoint = \"http://{}\"\nservice_name = \"gh-cli-test\"\n",
            collector.addr
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();

    let mut run = Running::start(&path, &[("GATEHOUSE_LOG_FORMAT", "json")], &[]);
    let listening = run.wait_for("gatehouse listening").await;
    let metrics = run.wait_for("serving /metrics").await;
    let addr = listening["listen"].as_str().unwrap().to_owned();
    let metrics = metrics["listen"].as_str().unwrap().to_owned();

    let http = reqwest::Client::new();
    let res = http
        .get(format!("http://{addr}/healthz"))
        .header("x-request-id", "cli-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "cli-test-1");
    let access = run.wait_for("request").await;
    assert_eq!(access["route"], "healthz");
    assert_eq!(access["span"]["request_id"], "cli-test-1");

    // The binary installed its recorder for the whole process.
    let scrape = http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = Scrape::parse(&scrape);
    let healthz = [("route", "healthz"), ("status", "2xx")];
    assert_eq!(scrape.value("gatehouse_requests_total", &healthz), 1.0);
    assert_eq!(scrape.value("gatehouse_jwks_refreshes_total", &[]), 1.0);

    // A burst answered just before SIGTERM: every access line still reaches stderr.
    for i in 0..200 {
        let res = http
            .get(format!("http://{addr}/healthz"))
            .header("x-request-id", format!("cli-burst-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let lines = run.stop().await;
    let burst = lines
        .iter()
        .filter(|l| {
            l["message"] == "request"
                && l["span"]["request_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("cli-burst-"))
        })
        .count();
    assert_eq!(
        burst, 200,
        "one access line per request, none lost at shutdown"
    );
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    let end = messages.len();
    assert!(
        messages[end.saturating_sub(3)..].contains(&"all connections closed"),
        "the last lines were written before exit: {messages:?}"
    );
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    // The span of the request was exported before exit.
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.kind == SERVER && attr(s, "request_id").as_deref() == Some("cli-test-1")),
        "{spans:#?}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["--log-format", "xml", "keygen"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("text or json"),
        "{err}"
    );
}

#[test]
fn the_commented_telemetry_lines_of_config_toml_are_valid_when_uncommented() {
    let text = include_str!("../config.toml")
        .replace("# metrics_listen = ", "metrics_listen = ")
        .replace("# [telemetry]", "[telemetry]")
        .replace("# otlp_endpoint = ", "otlp_endpoint = ")
        .replace("# service_name = ", "service_name = ")
        .replace("# sample_ratio = ", "sample_ratio = ");
    let config = gatehouse::config::Config::from_toml(&text, &gatehouse::config::NoEnv)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.telemetry.metrics_listen,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    let otlp = config.telemetry.otlp.unwrap();
    assert_eq!(otlp.endpoint.as_str(), "http://127.0.0.1:4318/v1/traces");
}

#[test]
fn the_readmes_json_log_line_is_one_json_object_with_the_documented_fields() {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("### Logs").unwrap()..];
    let block = section.split("```json\n").nth(1).unwrap();
    let line = block.split("\n```").next().unwrap();
    assert_eq!(line.lines().count(), 1);
    let v: Value = serde_json::from_str(line).unwrap();
    for field in [
        "timestamp",
        "level",
        "message",
        "target",
        "method",
        "route",
        "status",
    ] {
        assert!(!v[field].is_null(), "{field}");
    }
    assert!(v["span"]["request_id"].is_string());
}
