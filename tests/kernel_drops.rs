//! Datagrams the kernel drops at a full receive buffer (the daemon stopped, so nothing
//! reads) show in /metrics as `ravpnd_dropped_total{cause="receive_buffer"}`, equal to the
//! sockets' own `drops` in /proc/net/udp.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::daemon::signal;
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
