//! The request path's metrics (requests, their latency, upstream latency and retries, per
//! route; session store calls' latency, per operation), kept per worker: each worker adds to
//! slots of its own, on cache lines of their own, and a scrape sums the slots. The Prometheus recorder's histograms push every sample onto
//! one list shared by every thread (contended atomics per sample, a block allocated every few
//! dozen, drained later); these count into their fixed buckets in place, and nothing on the
//! request path writes memory another worker writes.
//!
//! Rules:
//! 1. A thread adds to the slots of its lane ([`crate::proxy::clients::lane`]); threads that
//!    are no worker share lane 0. Adds are atomic, so sharing a lane is only slower.
//! 2. A scrape reads each slot once; a request counted meanwhile shows in the next scrape, in
//!    its counter and its histogram alike (never in one and not the other for long).
//! 3. The text is the Prometheus exposition format the recorder writes for the same series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::metrics::{REQUEST_BUCKETS, STATUS_CLASSES, STORE_BUCKETS};
use super::outcomes::STORE_OPS;

/// Buckets of [`REQUEST_BUCKETS`] (and of [`STORE_BUCKETS`]), plus `+Inf`.
const BUCKETS: usize = REQUEST_BUCKETS.len() + 1;
const _: () = assert!(STORE_BUCKETS.len() + 1 == BUCKETS);
/// Lanes of a store's tally: the store is made before the worker count is known to it, and a
/// lane is a few kilobytes.
const STORE_LANES: usize = 16;

/// One latency histogram's slots: a count per bucket (not cumulative) and the sum.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn record(&self, bounds: &[f64], elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = bounds.partition_point(|&bound| bound < seconds);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Adds these slots to `(counts, nanos)`, a sum over lanes.
    fn add_to(&self, (counts, nanos): &mut ([u64; BUCKETS], u64)) {
        for (total, count) in counts.iter_mut().zip(&self.counts) {
            *total += count.load(Ordering::Relaxed);
        }
        *nanos += self.sum_nanos.load(Ordering::Relaxed);
    }
}

/// One lane's slots for one route, alone on its cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Lane {
    requests: [AtomicU64; STATUS_CLASSES.len()],
    retries: AtomicU64,
    duration: Histogram,
    upstream: Histogram,
}

/// The request-path metrics of one route (or endpoint).
pub struct RouteTally {
    lanes: Box<[Lane]>,
}

impl RouteTally {
    /// Slots for `lanes` workers.
    pub fn new(lanes: usize) -> RouteTally {
        RouteTally {
            lanes: (0..lanes.max(1)).map(|_| Lane::default()).collect(),
        }
    }

    fn lane(&self) -> &Lane {
        let lane = crate::proxy::clients::lane();
        &self.lanes[lane % self.lanes.len()]
    }

    /// An answered request of status class `class`, `elapsed` until its response head.
    pub fn request(&self, class: usize, elapsed: Duration) {
        let lane = self.lane();
        if let Some(count) = lane.requests.get(class) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        lane.duration.record(&REQUEST_BUCKETS, elapsed);
    }

    /// Time until the upstream's response head arrived (or the call failed).
    pub fn upstream(&self, elapsed: Duration) {
        self.lane().upstream.record(&REQUEST_BUCKETS, elapsed);
    }

    pub fn retry(&self) {
        self.lane().retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Every lane's slots summed.
    fn sum(&self) -> Sums {
        let mut sums = Sums::default();
        for lane in &*self.lanes {
            let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
            for (sum, count) in sums.requests.iter_mut().zip(&lane.requests) {
                *sum += read(count);
            }
            sums.retries += read(&lane.retries);
            lane.duration.add_to(&mut sums.duration);
            lane.upstream.add_to(&mut sums.upstream);
        }
        sums
    }
}

#[derive(Default)]
struct Sums {
    requests: [u64; STATUS_CLASSES.len()],
    retries: u64,
    /// Counts per bucket and the sum in nanoseconds.
    duration: ([u64; BUCKETS], u64),
    upstream: ([u64; BUCKETS], u64),
}

/// The four families of these metrics for `routes`, in the exposition format: `names` are
/// the families' names and help texts, requests, request duration, upstream duration and
/// retries in that order.
pub fn render<'a>(
    out: &mut String,
    names: [(&str, &str); 4],
    routes: impl Iterator<Item = (&'a str, &'a RouteTally)> + Clone,
) {
    let sums: Vec<(&str, Sums)> = routes.map(|(route, tally)| (route, tally.sum())).collect();
    let [requests, duration, upstream, retries] = names;
    family(out, requests, "counter");
    for (route, sums) in &sums {
        let route = escaped(route);
        for (class, count) in STATUS_CLASSES.iter().zip(sums.requests) {
            let _ = writeln!(
                out,
                "{}{{route=\"{route}\",status=\"{class}\"}} {count}",
                requests.0
            );
        }
    }
    for (histogram, pick) in [
        (
            duration,
            (|s: &Sums| s.duration) as fn(&Sums) -> ([u64; BUCKETS], u64),
        ),
        (upstream, |s: &Sums| s.upstream),
    ] {
        family(out, histogram, "histogram");
        for (route, sums) in &sums {
            let (counts, nanos) = pick(sums);
            let label = ("route", escaped(route));
            write_histogram(out, histogram.0, &label, &REQUEST_BUCKETS, &counts, nanos);
        }
    }
    family(out, retries, "counter");
    for (route, sums) in &sums {
        let _ = writeln!(
            out,
            "{}{{route=\"{}\"}} {}",
            retries.0,
            escaped(route),
            sums.retries
        );
    }
}

/// One labelled series of a histogram: its cumulative buckets, sum and count.
fn write_histogram(
    out: &mut String,
    name: &str,
    (label, value): &(&str, String),
    bounds: &[f64],
    counts: &[u64; BUCKETS],
    nanos: u64,
) {
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += counts[BUCKETS - 1];
    let seconds = Duration::from_nanos(nanos).as_secs_f64();
    let _ = writeln!(
        out,
        "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {seconds}");
    let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {cumulative}");
}

/// One lane's slots for a store's calls, one histogram per operation of [`STORE_OPS`].
#[derive(Default)]
#[repr(align(128))]
struct StoreLane {
    ops: [Histogram; STORE_OPS.len()],
}

/// The latency of one session store's calls, by operation.
pub struct StoreTally {
    lanes: Box<[StoreLane]>,
}

impl Default for StoreTally {
    fn default() -> Self {
        StoreTally {
            lanes: (0..STORE_LANES).map(|_| StoreLane::default()).collect(),
        }
    }
}

impl StoreTally {
    /// A call of `op` (a name in [`STORE_OPS`]; others are not counted) that took `elapsed`.
    pub fn record(&self, op: &str, elapsed: Duration) {
        let Some(i) = STORE_OPS.iter().position(|o| *o == op) else {
            return;
        };
        let lane = &self.lanes[crate::proxy::clients::lane() % self.lanes.len()];
        lane.ops[i].record(&STORE_BUCKETS, elapsed);
    }

    /// The family `(name, help)`, every operation's series included (zero until called).
    pub fn render(&self, out: &mut String, (name, help): (&str, &str)) {
        family(out, (name, help), "histogram");
        for (i, op) in STORE_OPS.iter().enumerate() {
            let mut sum = ([0u64; BUCKETS], 0);
            for lane in &*self.lanes {
                lane.ops[i].add_to(&mut sum);
            }
            let (counts, nanos) = sum;
            let label = ("op", (*op).to_owned());
            write_histogram(out, name, &label, &STORE_BUCKETS, &counts, nanos);
        }
    }
}

fn family(out: &mut String, (name, help): (&str, &str), kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the exposition format quotes it.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [(&str, &str); 4] = [
        ("t_requests_total", "Requests."),
        ("t_request_seconds", "Request time."),
        ("t_upstream_seconds", "Upstream time."),
        ("t_retries_total", "Retries."),
    ];

    fn rendered(tally: &RouteTally) -> String {
        let mut out = String::new();
        render(&mut out, NAMES, [("/a\"b/", tally)].into_iter());
        out
    }

    #[test]
    fn every_lane_counts_and_a_scrape_sums_the_lanes() {
        let tally = RouteTally::new(2);
        std::thread::scope(|s| {
            for lane in 0..3 {
                let tally = &tally;
                s.spawn(move || {
                    crate::proxy::clients::set_lane(lane);
                    tally.request(1, Duration::from_micros(500));
                    tally.request(4, Duration::from_millis(3));
                    tally.upstream(Duration::from_secs(90));
                    tally.retry();
                });
            }
        });
        let text = rendered(&tally);
        for line in [
            "t_requests_total{route=\"/a\\\"b/\",status=\"2xx\"} 3",
            "t_requests_total{route=\"/a\\\"b/\",status=\"5xx\"} 3",
            "t_requests_total{route=\"/a\\\"b/\",status=\"1xx\"} 0",
            "t_request_seconds_bucket{route=\"/a\\\"b/\",le=\"0.001\"} 3",
            "t_request_seconds_bucket{route=\"/a\\\"b/\",le=\"0.0025\"} 3",
            "t_request_seconds_bucket{route=\"/a\\\"b/\",le=\"0.005\"} 6",
            "t_request_seconds_bucket{route=\"/a\\\"b/\",le=\"60\"} 6",
            "t_request_seconds_bucket{route=\"/a\\\"b/\",le=\"+Inf\"} 6",
            "t_request_seconds_sum{route=\"/a\\\"b/\"} 0.0105",
            "t_request_seconds_count{route=\"/a\\\"b/\"} 6",
            "t_upstream_seconds_bucket{route=\"/a\\\"b/\",le=\"60\"} 0",
            "t_upstream_seconds_bucket{route=\"/a\\\"b/\",le=\"+Inf\"} 3",
            "t_upstream_seconds_sum{route=\"/a\\\"b/\"} 270",
            "t_retries_total{route=\"/a\\\"b/\"} 3",
            "# TYPE t_request_seconds histogram",
            "# HELP t_retries_total Retries.",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn store_calls_are_counted_by_operation_in_the_store_buckets() {
        let tally = StoreTally::default();
        tally.record("get", Duration::from_micros(50));
        tally.record("get", Duration::from_millis(2));
        tally.record("not-an-op", Duration::from_millis(2));
        let mut text = String::new();
        tally.render(&mut text, ("t_store_seconds", "Store time."));
        for line in [
            "t_store_seconds_bucket{op=\"get\",le=\"0.0001\"} 1",
            "t_store_seconds_bucket{op=\"get\",le=\"0.0025\"} 2",
            "t_store_seconds_count{op=\"get\"} 2",
            "t_store_seconds_count{op=\"ping\"} 0",
            "# TYPE t_store_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(text.matches("_count{").count(), STORE_OPS.len());
    }

    #[test]
    fn a_latency_on_a_bound_counts_in_that_bucket() {
        let tally = RouteTally::new(1);
        tally.request(1, Duration::from_millis(1));
        let text = rendered(&tally);
        assert!(
            text.contains("t_request_seconds_bucket{route=\"/a\\\"b/\",le=\"0.001\"} 1"),
            "{text}"
        );
    }
}
