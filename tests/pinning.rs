//! `[radius] pin_workers`: with one worker per CPU the daemon may use, each RADIUS
//! authentication worker runs on a CPU of its own (read from the threads'
//! `Cpus_allowed_list`); the accounting workers, and every worker when they are fewer than the
//! CPUs or the option is off, keep every CPU.

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

/// Polls until the daemon's workers have started (and placed themselves) as `want` says;
/// then, since a worker pins itself just after it starts under its name, looks again a little
/// later: a match of unpinned workers must not be one caught before they pinned.
fn wait_for(pid: u32, want: &[(String, Vec<usize>)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = workers(pid);
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "workers {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(workers(pid), want, "and 300 ms later");
}

fn config(workers: usize, pin: Option<bool>) -> String {
    let mut extra = format!("workers = {workers}\n");
    if let Some(pin) = pin {
        extra += &format!("pin_workers = {pin}\n");
    }
    default_config(true).replacen("[radius]\n", &format!("[radius]\n{extra}"), 1)
}

const LOGGED: &str = "pinning the RADIUS authentication workers, one per CPU";

#[test]
fn authentication_workers_one_per_cpu_are_pinned_each_to_its_own() {
    // The daemon inherits this thread's CPUs: as the kernel lists them (every CPU of the
    // mask, which an unpinned worker keeps) and as the daemon sees them (those online).
    let raw = allowed(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
    let cpus = ravpnd::radius::pinning::allowed_cpus();
    let n = cpus.len();
    let unpinned = |kind: &str, count: usize| -> Vec<(String, Vec<usize>)> {
        (0..count)
            .map(|i| (format!("radius-{kind}-{i}"), raw.clone()))
            .collect()
    };
    let sorted = |mut v: Vec<(String, Vec<usize>)>| {
        v.sort();
        v
    };
    if n >= 2 {
        let d = TestDaemon::with_config(&config(n, None));
        let pinned = cpus
            .iter()
            .enumerate()
            .map(|(i, &cpu)| (format!("radius-auth-{i}"), vec![cpu]));
        // The accounting workers stay free.
        wait_for(
            d.pid(),
            &sorted(pinned.chain(unpinned("acct", n)).collect()),
        );
        assert!(d.log().contains(LOGGED), "{}", d.log());
        // Off: every worker keeps every CPU.
        let d = TestDaemon::with_config(&config(n, Some(false)));
        wait_for(
            d.pid(),
            &sorted([unpinned("acct", n), unpinned("auth", n)].concat()),
        );
        assert!(!d.log().contains(LOGGED), "{}", d.log());
    } else {
        eprintln!("one CPU here: only the unpinned cases can be checked");
    }
    // Fewer workers than CPUs: not crowded onto the first ones.
    let mut fewer = vec![1];
    if n >= 3 {
        fewer.push(n - 1); // more than one worker, yet fewer than the CPUs
    }
    for workers in fewer {
        let d = TestDaemon::with_config(&config(workers, Some(true)));
        wait_for(
            d.pid(),
            &sorted([unpinned("acct", workers), unpinned("auth", workers)].concat()),
        );
        assert!(!d.log().contains(LOGGED), "{}", d.log());
    }
}

#[test]
fn cpu_lists_parse() {
    assert_eq!(parse_list("0-2,5\n"), [0, 1, 2, 5]);
    assert_eq!(parse_list("3"), [3]);
}
