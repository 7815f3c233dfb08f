//! The whole product in a real browser: panva's oidc-provider, a demo API and SPA, gatehouse in
//! front of them, and headless Chromium logging in, calling the API and logging out.
//! The flow itself lives in `tests/e2e/run.mjs`; this test builds gatehouse and runs it.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// run.mjs bounds itself to about a minute; this is the backstop if it hangs anyway.
const TIMEOUT: Duration = Duration::from_secs(120);
/// After SIGTERM, run.mjs closes Chromium and stops its services; then SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

#[test]
fn browser_login_api_logout_against_oidc_provider() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/e2e/node_modules").is_dir(),
        "tests/e2e/node_modules is missing: run scripts/test.sh, which installs it \
         (npm ci --prefix tests/e2e) and starts Redis and installs Chromium when needed"
    );

    let mut child = Command::new("node")
        .arg("tests/e2e/run.mjs")
        .current_dir(root)
        .env("GATEHOUSE_BIN", env!("CARGO_BIN_EXE_gatehouse"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can stop node and everything it started.
        .process_group(0)
        .spawn()
        .expect("cannot start `node` (Node.js 20 or later must be on PATH)");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let status = wait_or_stop(&mut child).expect("wait for node");
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    println!("{stdout}");

    match status {
        Some(status) => assert!(
            status.success(),
            "tests/e2e/run.mjs failed ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
        None => panic!(
            "tests/e2e/run.mjs did not finish within {TIMEOUT:?} and was stopped\n\
             --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

/// Waits for the child; past `TIMEOUT`, stops its process group and returns `None`.
fn wait_or_stop(child: &mut Child) -> io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    while started.elapsed() < TIMEOUT {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        thread::sleep(Duration::from_millis(200));
    }
    signal_group(child.id(), "TERM");
    let stopping = Instant::now();
    while stopping.elapsed() < GRACE {
        if child.try_wait()?.is_some() {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(200));
    }
    signal_group(child.id(), "KILL");
    child.wait()?;
    Ok(None)
}

/// `kill -SIGNAL -PGID` through the shell, as std has no process-group kill.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} -{pgid}"))
        .status();
}

/// Reads a pipe to the end on a thread, so a chatty child never blocks on a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}
