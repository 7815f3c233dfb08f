//! Metrics in tests: each test thread records into its own gatehouse's recorder (as log
//! capture does), and scrapes are parsed from the Prometheus text format.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse::app::App;

thread_local! {
    static LOCAL: RefCell<Option<metrics::LocalRecorderGuard<'static>>> = const { RefCell::new(None) };
}

/// Makes `app`'s recorder this thread's (the first gatehouse of a test wins), so the facade
/// counters of everything the test runs land in the registry `app` serves on `/metrics`.
pub fn record_here(app: &Arc<App>) {
    let Some(recorder) = app.metrics.recorder() else {
        return;
    };
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        if local.is_none() {
            // Leaked: the guard lives as long as the thread, the recorder as long as the test.
            let recorder: &'static _ = Box::leak(Box::new(recorder));
            *local = Some(metrics::set_default_local_recorder(recorder));
        }
    });
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(parse_line)
            .collect();
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the series `name` with exactly `labels`; 0 when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map_or(0.0, |s| s.value)
    }

    /// The sum over every series of `name`.
    pub fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

fn parse_line(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("name and value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
    };
    let Some((name, labels)) = series.split_once('{') else {
        return Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        };
    };
    let labels = labels.strip_suffix('}').expect("closing brace");
    Sample {
        name: name.to_owned(),
        labels: parse_labels(labels),
        value,
    }
}

/// `a="x",b="y\"z"` (values escaped as the text format escapes them).
fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => match chars.next().expect("escaped char").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// Scrapes `/metrics` of a gatehouse started with `server.metrics_listen`.
pub async fn scrape(app: &App) -> Scrape {
    let addr = app.metrics.local_addr().expect("metrics_listen is set");
    let res = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(&res.text().await.unwrap())
}

/// `config` with a metrics listener on a free loopback port.
pub fn with_metrics(config: &str) -> String {
    config.replacen(
        "[server]\n",
        "[server]\nmetrics_listen = \"127.0.0.1:0\"\n",
        1,
    )
}
