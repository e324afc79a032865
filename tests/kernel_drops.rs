//! What happens to datagrams while the daemon does not read (stopped with SIGSTOP): those
//! the kernel drops at a full receive buffer show in /metrics as
//! `ravpnd_dropped_total{cause="receive_buffer"}`, equal to the sockets' own `drops` in
//! /proc/net/udp; those that waited longer than `[radius] max_queue_delay` are dropped unread
//! as `cause="queue_delay"`. Every wait shows in `ravpnd_request_queue_seconds`,
//! and in the answered requests' `ravpnd_request_duration_seconds`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::daemon::{default_config, signal, SECRET};
use crate::support::packet::{Client, Request};
use crate::support::TestDaemon;

const SERIES: &str = "ravpnd_dropped_total{cause=\"receive_buffer\"}";
/// The receive buffer the daemon asks for (`UDP_RECV_BUFFER` in src/server.rs).
const ASKED: usize = 8 << 20;
const PAYLOAD: usize = 1024;

#[test]
fn kernel_receive_buffer_drops_are_counted() {
    let d = TestDaemon::start();
    assert!(
        d.metrics().contains(&format!("{SERIES} 0\n")),
        "the series exists from the start: {}",
        d.metrics()
    );
    // SO_RCVBUF is capped at rmem_max and doubled by the kernel; every datagram costs at
    // least its payload, so twice the buffer in payload bytes overflows it.
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let n = (2 * 2 * ASKED.min(rmem_max) / PAYLOAD).max(20_000);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stopped = Stopped::new(d.pid());
    for addr in [d.auth_addr, d.acct_addr] {
        for _ in 0..n {
            tx.send_to(&[0u8; PAYLOAD], addr).unwrap();
        }
    }
    let (auth, acct) = (kernel_drops(d.auth_addr), kernel_drops(d.acct_addr));
    assert!(
        auth > 0 && acct > 0,
        "the buffers overflowed: {auth} and {acct} of {n} each dropped"
    );
    drop(stopped);
    assert_eq!(d.metric(SERIES), (auth + acct) as f64, "{}", d.metrics());
    // Another scrape adds nothing: only new drops are added.
    assert_eq!(d.metric(SERIES), (auth + acct) as f64);
}

const LATE: &str = "ravpnd_dropped_total{cause=\"queue_delay\"}";

/// A request queued while the daemon is stopped for 0.8 s: dropped unread with
/// `max_queue_delay = "300ms"`, answered with `"0s"` (never drop); a fresh one is answered
/// either way.
#[test]
fn requests_queued_longer_than_max_queue_delay_are_dropped_unread() {
    for (delay, dropped) in [("300ms", true), ("0s", false)] {
        let config = default_config(true).replace(
            "[store]",
            &format!("max_queue_delay = \"{delay}\"\n[store]"),
        );
        let d = TestDaemon::with_config(&config);
        d.add_vpn_user("alice", "pw-alice-1");
        let c = Client::new(d.auth_addr);
        let request = |id| {
            Request::access(id)
                .user(b"alice")
                .password("pw-alice-1", SECRET)
                .build(SECRET)
        };
        let stopped = Stopped::new(d.pid());
        c.send(&request(1));
        std::thread::sleep(Duration::from_millis(800));
        drop(stopped);
        let answer = c.recv_within(Duration::from_secs(2));
        assert_eq!(answer.is_none(), dropped, "max_queue_delay = {delay}");
        assert_eq!(d.metric(LATE), if dropped { 1.0 } else { 0.0 }, "{delay}");
        c.send(&request(2));
        assert!(
            c.recv_within(Duration::from_secs(2)).is_some(),
            "a fresh request is answered ({delay})"
        );
        assert_eq!(d.metric(LATE), if dropped { 1.0 } else { 0.0 }, "{delay}");
        // Both waits are in the queue histogram, answered or not: 0.8 s and a fresh one.
        let queued = |le: &str| d.metric(&format!("{QUEUED}_bucket{{le=\"{le}\"}}"));
        assert_eq!(d.metric(&format!("{QUEUED}_count")), 2.0, "{delay}");
        assert_eq!(queued("0.5"), 1.0, "{delay}: {}", d.metrics());
        assert_eq!(queued("2.5"), 2.0, "{delay}");
        // The answered ones' latency counts from arrival, the wait included.
        let took = |le: &str| d.metric(&format!("{TOOK}_bucket{{le=\"{le}\"}}"));
        let answered = if dropped { 1.0 } else { 2.0 };
        assert_eq!(d.metric(&format!("{TOOK}_count")), answered, "{delay}");
        assert_eq!(took("0.5"), 1.0, "{delay}: the fresh one only");
    }
}

const QUEUED: &str = "ravpnd_request_queue_seconds";
const TOOK: &str = "ravpnd_request_duration_seconds";

/// SIGSTOP until dropped, then SIGCONT, even when an assertion fails.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Self {
        signal(pid, "STOP");
        let stopped = Stopped(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while state(pid) != Some('T') {
            assert!(Instant::now() < deadline, "ravpnd {pid} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// The process state letter from /proc/<pid>/stat (`T`: stopped).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// The `drops` column of the IPv4 socket bound to `addr`, from /proc/net/udp.
fn kernel_drops(addr: SocketAddr) -> u64 {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("IPv4 expected: {addr}")
    };
    // The kernel prints the address as the number its network-order bytes make.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .unwrap_or_else(|| panic!("{local} not in /proc/net/udp:\n{table}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}
