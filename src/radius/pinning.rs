//! One CPU per RADIUS authentication worker (`[radius] pin_workers`).
//!
//! The workers of a socket block on it together, and the kernel wakes whichever waits. Left to
//! the scheduler, two of them often take turns on one CPU while the other CPU runs something
//! else: the woken one preempts its sibling, and the sibling's batch — requests already read,
//! not yet answered — waits a scheduler slice (milliseconds) for it to finish. With each on a
//! CPU of its own, no authentication worker waits for another (only for other threads: the
//! accounting workers, the runtime's, other processes'). Pinned only when the workers are one
//! per CPU the process may use: with fewer (a CPU quota, `workers` set lower) pinning would
//! crowd them onto the first CPUs, with more they would share some anyway.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs this process may run on (its affinity mask), in ascending order; empty when the
/// kernel does not say.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

/// The CPU of each of `workers` workers: one each, in order, when there are exactly as many
/// workers as `cpus`; `None` otherwise.
pub fn plan(workers: usize, cpus: Vec<usize>) -> Option<Vec<usize>> {
    (workers > 1 && workers == cpus.len()).then_some(cpus)
}

/// Binds the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    // Pid 0: the calling thread (sched_setaffinity applies to one thread, not the process).
    sched_setaffinity(Pid::from_raw(0), &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_pinned_only_one_per_cpu() {
        assert_eq!(plan(2, vec![0, 1]), Some(vec![0, 1]));
        // The CPUs of a cpuset need not start at 0 nor be contiguous.
        assert_eq!(plan(3, vec![2, 5, 7]), Some(vec![2, 5, 7]));
        assert_eq!(plan(1, vec![0, 1]), None, "fewer workers than CPUs");
        assert_eq!(plan(4, vec![0, 1]), None, "more workers than CPUs");
        assert_eq!(
            plan(2, vec![0, 1, 2]),
            None,
            "not crowded onto the first CPUs"
        );
        assert_eq!(
            plan(1, vec![3]),
            None,
            "one worker on one CPU: nothing to spread"
        );
        assert_eq!(plan(2, vec![]), None, "the CPUs unknown");
    }

    #[test]
    fn a_pinned_thread_runs_on_its_cpu_only() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty(), "a process runs on at least one CPU");
        let last = *cpus.last().unwrap();
        // A thread of its own: pinning is per thread and must not narrow the test runner's.
        let seen = std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            allowed_cpus()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![last]);
    }
}
