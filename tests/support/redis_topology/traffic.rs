//! Steady traffic from one browser while a topology breaks, and what it saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::{COOKIE, Gatehouse, set_cookies};

/// One answer: when (since the traffic started), its status, whether it touched the cookie.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub at: Duration,
    pub status: u16,
    pub set_cookie: bool,
}

/// API calls with one session cookie every 25 ms, each followed by a `/readyz`, until
/// stopped (at most 30 s).
pub struct Traffic {
    pub api: Arc<Mutex<Vec<Seen>>>,
    pub ready: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    start: Instant,
}

impl Traffic {
    pub fn start(gh: &Gatehouse, cookie: String) -> Traffic {
        let traffic = Traffic {
            api: Arc::default(),
            ready: Arc::default(),
            stop: Arc::default(),
            start: Instant::now(),
        };
        let (api, ready, stop, start) = (
            Arc::clone(&traffic.api),
            Arc::clone(&traffic.ready),
            Arc::clone(&traffic.stop),
            traffic.start,
        );
        let (api_url, ready_url) = (gh.url("/api/x"), gh.url("/readyz"));
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                let res = http
                    .get(&api_url)
                    .header("x-csrf", "1")
                    .header("cookie", format!("{COOKIE}={cookie}"))
                    .send()
                    .await
                    .unwrap();
                api.lock().unwrap().push(Seen {
                    at: start.elapsed(),
                    status: res.status().as_u16(),
                    set_cookie: !set_cookies(res.headers()).is_empty(),
                });
                let status = http.get(&ready_url).send().await.unwrap().status();
                ready.lock().unwrap().push(Seen {
                    at: start.elapsed(),
                    status: status.as_u16(),
                    set_cookie: false,
                });
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        traffic
    }

    /// Now, on the traffic's clock.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits until the last ten API answers after `since` are 200, then stops the traffic.
    pub async fn wait_recovered(&self, since: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let after: Vec<u16> = self
                .api
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.at > since)
                .map(|s| s.status)
                .collect();
            if after.len() >= 10 && after.iter().rev().take(10).all(|s| *s == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "no recovery: {after:?}");
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Asserts what a failover may cost: 503s (never a 401 or another status), no cookie
    /// touched, and no longer than `most` from the first failure to the last.
    pub fn assert_only_brief_503s(&self, most: Duration) {
        let seen = self.api.lock().unwrap().clone();
        assert!(
            seen.iter().all(|s| s.status == 200 || s.status == 503),
            "only 200 and 503, never a 401: {seen:?}"
        );
        assert!(
            seen.iter().all(|s| !s.set_cookie),
            "the cookie is never cleared"
        );
        let failed: Vec<Duration> = seen
            .iter()
            .filter(|s| s.status != 200)
            .map(|s| s.at)
            .collect();
        if let (Some(first), Some(last)) = (failed.first(), failed.last()) {
            assert!(
                *last - *first < most,
                "503 for {:?}: {seen:?}",
                *last - *first
            );
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
