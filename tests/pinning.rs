//! `[radius] pin_workers`: with one worker per CPU the daemon may use, each RADIUS worker of a
//! socket runs on a CPU of its own (read from the threads' `Cpus_allowed_list`); with fewer
//! workers, or the option off, they keep every CPU.

use std::time::{Duration, Instant};

use crate::support::daemon::default_config;
use crate::support::TestDaemon;

/// `0-2,5` → [0, 1, 2, 5].
fn parse_list(list: &str) -> Vec<usize> {
    list.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

fn allowed(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in status");
    parse_list(line)
}

/// The CPUs each `radius-*` worker of `pid` may run on, by thread name.
fn workers(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let name = name.trim().to_string();
            name.starts_with("radius-").then(|| {
                Some((
                    name,
                    allowed(&std::fs::read_to_string(dir.join("status")).ok()?),
                ))
            })?
        })
        .collect();
    out.sort();
    out
}

/// Polls until the daemon's workers have started (and placed themselves) as `want` says.
fn wait_for(pid: u32, want: &[(String, Vec<usize>)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = workers(pid);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "workers {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(workers: usize, pin: Option<bool>) -> String {
    let mut extra = format!("workers = {workers}\n");
    if let Some(pin) = pin {
        extra += &format!("pin_workers = {pin}\n");
    }
    default_config(true).replacen("[radius]\n", &format!("[radius]\n{extra}"), 1)
}

#[test]
fn workers_one_per_cpu_are_pinned_each_to_its_own() {
    // The daemon inherits this thread's CPUs.
    let cpus = allowed(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
    let n = cpus.len();
    let every = |kind: &str, count: usize| -> Vec<(String, Vec<usize>)> {
        (0..count)
            .map(|i| (format!("radius-{kind}-{i}"), cpus.clone()))
            .collect()
    };
    if n >= 2 {
        let d = TestDaemon::with_config(&config(n, None));
        let mut want: Vec<(String, Vec<usize>)> = ["acct", "auth"]
            .iter()
            .flat_map(|kind| {
                cpus.iter()
                    .enumerate()
                    .map(move |(i, &cpu)| (format!("radius-{kind}-{i}"), vec![cpu]))
            })
            .collect();
        want.sort();
        wait_for(d.pid(), &want);
        assert!(
            d.log().contains("pinning the RADIUS workers, one per CPU"),
            "{}",
            d.log()
        );
        // Off: every worker keeps every CPU.
        let d = TestDaemon::with_config(&config(n, Some(false)));
        let mut want = [every("acct", n), every("auth", n)].concat();
        want.sort();
        wait_for(d.pid(), &want);
    } else {
        eprintln!("one CPU here: only the unpinned case can be checked");
    }
    // Fewer workers than CPUs (one): not crowded onto the first CPU.
    let d = TestDaemon::with_config(&config(1, Some(true)));
    let mut want = [every("acct", 1), every("auth", 1)].concat();
    want.sort();
    wait_for(d.pid(), &want);
    assert!(
        !d.log().contains("pinning the RADIUS workers"),
        "{}",
        d.log()
    );
}

#[test]
fn cpu_lists_parse() {
    assert_eq!(parse_list("0-2,5\n"), [0, 1, 2, 5]);
    assert_eq!(parse_list("3"), [3]);
}
