//! A fixture shared by the test processes of one run (nextest runs each test in a process of
//! its own): the first test to need it starts it, later ones find it through a state file,
//! and a small supervisor stops it two seconds after the last test using it has exited.
//!
//! The directory holds `state` (what the fixture is), `pids` (what to stop) and `users/`,
//! one file per lease named `<pid>-<n>`. `<dir>.lock`, created exclusively, serializes
//! starting, joining and stopping; a lock whose holder died is taken over.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Stops the fixture once no lease's process is alive for 2 s (10 polls).
const SUPERVISOR: &str = r#"
dir=$1 lock=$2 idle=0
while :; do
  sleep 0.2
  busy=0
  for f in "$dir"/users/*; do
    [ -e "$f" ] || continue
    pid=${f##*/}; pid=${pid%%-*}
    if kill -0 "$pid" 2>/dev/null; then busy=1; else rm -f "$f"; fi
  done
  if [ "$busy" = 1 ]; then idle=0; continue; fi
  idle=$((idle+1))
  [ "$idle" -lt 10 ] && continue
  ( set -o noclobber; echo $$ > "$lock" ) 2>/dev/null || continue
  if ls "$dir"/users/* >/dev/null 2>&1; then rm -f "$lock"; idle=0; continue; fi
  pids=$(cat "$dir/pids" 2>/dev/null)
  rm -f "$dir/state"
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  rm -rf "$dir"
  rm -f "$lock"
  exit 0
done
"#;

/// Held while a test uses the fixture.
pub struct Lease(PathBuf);

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The exclusive lock, released on drop.
struct Lock(PathBuf);

impl Lock {
    async fn take(path: PathBuf) -> Lock {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Lock(path);
                }
                Err(_) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    // Empty: the holder is between creating and writing the file.
                    if let Ok(pid) = holder.trim().parse::<u32>()
                        && !alive(pid)
                    {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} stayed locked",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn lease_in(dir: &Path) -> Lease {
    static N: AtomicU32 = AtomicU32::new(0);
    let users = dir.join("users");
    std::fs::create_dir_all(&users).unwrap();
    let name = format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let path = users.join(name);
    std::fs::write(&path, b"").unwrap();
    Lease(path)
}

/// Joins the fixture `name`, or starts it: `start(dir, record_pid)` brings it up (recording
/// each process with `record_pid`) and returns its state; `usable(state)` says whether a
/// found fixture still answers. Returns the state and this test's lease.
pub async fn join<S, U>(name: &str, start: S, usable: U) -> (String, Lease)
where
    S: AsyncFnOnce(&Path, &dyn Fn(u32)) -> String,
    U: AsyncFnOnce(&str) -> bool,
{
    let dir = std::env::temp_dir().join(format!("gatehouse-shared-{name}"));
    let lock = Lock::take(dir.with_extension("lock")).await;
    if let Ok(state) = std::fs::read_to_string(dir.join("state"))
        && supervised(&dir)
        && usable(&state).await
    {
        let lease = lease_in(&dir);
        drop(lock);
        return (state, lease);
    }
    // Nothing usable: clear what a dead run left and start afresh. The lease comes first, so
    // the supervisor stops whatever gets started should this test die half-way.
    stop_leftovers(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lease = lease_in(&dir);
    let mut supervisor = Command::new("bash")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("supervisor")
        .arg(&dir)
        .arg(dir.with_extension("lock"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("supervisor"), supervisor.id().to_string()).unwrap();
    super::proc::reap(move || supervisor.wait());
    let pids_file = dir.join("pids");
    let record = |pid: u32| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&pids_file)
            .unwrap();
        writeln!(f, "{pid}").unwrap();
    };
    let state = start(&dir, &record).await;
    std::fs::write(dir.join("state"), &state).unwrap();
    drop(lock);
    (state, lease)
}

fn supervised(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("supervisor"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_some_and(alive)
}

/// Kills what an earlier run's fixture left in `dir` (a supervisor that died with it).
fn stop_leftovers(dir: &Path) {
    if let Ok(pids) = std::fs::read_to_string(dir.join("pids")) {
        for pid in pids.lines().filter_map(|p| p.trim().parse::<u32>().ok()) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
    if let Ok(pid) = std::fs::read_to_string(dir.join("supervisor")) {
        let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
    }
    let _ = std::fs::remove_dir_all(dir);
}
