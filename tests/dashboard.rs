//! `examples/grafana-dashboard.json` loads: valid JSON in Grafana's dashboard shape, every
//! query names metrics and labels gatehouse exports, and every metric has a panel.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::BTreeSet;

use gatehouse::telemetry::metrics::ALL;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../examples/grafana-dashboard.json");
/// Labels of gatehouse's series, plus what Prometheus adds (`instance`, `job`).
const LABELS: [&str; 9] = [
    "route", "status", "result", "kind", "op", "endpoint", "version", "le", "instance",
];

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("examples/grafana-dashboard.json is JSON")
}

/// Every PromQL expression: panel targets and template variable queries.
fn queries(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for var in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// The `gatehouse_*` identifiers of `expr`, with histogram series suffixes taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("gatehouse_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        names.push(base.to_owned());
        i = end;
    }
    names
}

/// Label names in `{label=…}` matchers and `by (…)` clauses.
fn label_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in expr.split('{').skip(1) {
        let inside = part.split('}').next().unwrap();
        for matcher in inside.split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    for part in expr.split("by (").skip(1) {
        let inside = part.split(')').next().unwrap();
        names.extend(inside.split(',').map(|s| s.trim().to_owned()));
    }
    names
}

#[test]
fn the_dashboard_is_grafana_json_whose_panels_each_query_something() {
    let d = dashboard();
    assert!(d["title"].is_string() && d["uid"].is_string());
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30);
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        assert!(p["title"].is_string(), "{p}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "gridPos.{k} of {}", p["title"]);
        }
        if p["type"] != "row" {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{} has no query", p["title"]);
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
}

#[test]
fn every_query_names_existing_metrics_and_labels_and_every_metric_is_shown() {
    let d = dashboard();
    let mut used = BTreeSet::new();
    for expr in queries(&d) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{expr} queries no gatehouse metric");
        for name in names {
            assert!(
                ALL.contains(&name.as_str()),
                "{name} (in {expr}) is not exported"
            );
            used.insert(name);
        }
        for label in label_names(&expr) {
            assert!(LABELS.contains(&label.as_str()), "label {label} in {expr}");
        }
        let balanced = |open: char, close: char| {
            expr.chars().filter(|c| *c == open).count()
                == expr.chars().filter(|c| *c == close).count()
        };
        assert!(
            balanced('(', ')') && balanced('{', '}') && balanced('[', ']'),
            "{expr}"
        );
    }
    for name in ALL {
        assert!(used.contains(name), "{name} has no panel");
    }
}

#[test]
fn the_name_reader_takes_histogram_suffixes_off_only() {
    assert_eq!(
        metric_names(
            "rate(gatehouse_request_duration_seconds_bucket[5m]) / gatehouse_requests_total"
        ),
        [
            "gatehouse_request_duration_seconds",
            "gatehouse_requests_total"
        ]
    );
    assert_eq!(
        metric_names("gatehouse_sessions_created_total"),
        ["gatehouse_sessions_created_total"]
    );
}
