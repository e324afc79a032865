//! Datagrams the kernel dropped at the RADIUS sockets (receive buffer full), counted as
//! `ravpnd_dropped_total{cause="receive_buffer"}`: they never reach the listener.
//!
//! Each socket's counter is the `drops` column of its line (found by inode) in
//! `/proc/net/udp` or `/proc/net/udp6`, read when `/metrics` is scraped.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tracing::debug;

use crate::metrics::{DropCause, METRICS};

/// The watched sockets and their last reading.
pub struct KernelDrops {
    sockets: Mutex<Vec<Watched>>,
    logged: AtomicBool,
}

struct Watched {
    inode: u64,
    table: &'static str,
    /// The kernel's counter at the last reading (a 32-bit counter that may wrap).
    last: u32,
}

impl KernelDrops {
    /// Watches sockets this process just bound: their counters start at 0, so every drop in
    /// their life is counted. A socket whose inode cannot be read is left out (logged).
    pub fn watch(sockets: &[&UdpSocket]) -> Self {
        let watched = sockets
            .iter()
            .filter_map(|s| match (inode(s), s.local_addr()) {
                (Ok(inode), Ok(addr)) => Some(Watched {
                    inode,
                    table: if addr.is_ipv6() {
                        "/proc/net/udp6"
                    } else {
                        "/proc/net/udp"
                    },
                    last: 0,
                }),
                (Err(e), _) | (_, Err(e)) => {
                    debug!(error = %e, "kernel drops of a RADIUS socket not counted");
                    None
                }
            })
            .collect();
        Self {
            sockets: Mutex::new(watched),
            logged: AtomicBool::new(false),
        }
    }

    /// Adds the drops since the last reading to the counter (never backwards).
    pub fn refresh(&self) {
        let mut sockets = self.sockets.lock();
        for s in sockets.iter_mut() {
            let now = std::fs::read_to_string(s.table)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    drops_of(&text, s.inode).ok_or_else(|| format!("inode {} not listed", s.inode))
                });
            match now {
                Ok(now) => METRICS
                    .dropped(DropCause::ReceiveBuffer)
                    .inc_by(s.advance(now)),
                Err(why) => self.log_once(s.table, &why),
            }
        }
    }

    fn log_once(&self, table: &str, why: &str) {
        if !self.logged.swap(true, Ordering::Relaxed) {
            debug!(table, why, "kernel receive-buffer drops not counted");
        }
    }
}

impl Watched {
    /// Takes a new reading; returns the drops since the last one.
    fn advance(&mut self, now: u32) -> u64 {
        let delta = now.wrapping_sub(self.last);
        self.last = now;
        u64::from(delta)
    }
}

/// The socket's inode (`st_ino`), its key in `/proc/net/udp`.
fn inode(socket: &UdpSocket) -> std::io::Result<u64> {
    let fd = socket.as_fd().try_clone_to_owned()?;
    Ok(std::fs::File::from(fd).metadata()?.ino())
}

/// The `drops` column (the last) of the line whose inode (the 10th field) is `inode`, in the
/// text of `/proc/net/udp` or `/proc/net/udp6`. The kernel prints it as a signed 32-bit
/// number; it is returned as the unsigned counter it is.
fn drops_of(table: &str, inode: u64) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        let drops: i64 = fields.last()?.parse().ok()?;
        Some(drops as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  310: 0100007F:A5D1 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4182133 2 0000000000000000 0
  743: 00000000:0714 00000000:0000 07 00000000:00840000 00:00000000 00000000     0        0 4175003 2 0000000000000000 1034178
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1236: 00000000000000000000000000000000:0714 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 23456 2 0000000000000000 17
 1237: 0000000000000000FFFF00000100007F:0715 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 23457 2 0000000000000000 -2
";

    #[test]
    fn finds_the_drops_of_an_ipv4_socket() {
        assert_eq!(drops_of(UDP, 4175003), Some(1_034_178));
        assert_eq!(drops_of(UDP, 4182133), Some(0));
    }

    #[test]
    fn finds_the_drops_of_an_ipv6_socket() {
        assert_eq!(drops_of(UDP6, 23456), Some(17));
        // Printed signed once past 2^31: the counter wrapped, not went negative.
        assert_eq!(drops_of(UDP6, 23457), Some(u32::MAX - 1));
    }

    #[test]
    fn unknown_inode_and_garbage_give_nothing() {
        assert_eq!(drops_of(UDP, 1), None);
        assert_eq!(drops_of("", 4175003), None);
        assert_eq!(drops_of("header\n  1: short line 4175003\n", 4175003), None);
        // The header line is never taken for a socket.
        assert_eq!(drops_of(UDP, 0), None);
    }

    #[test]
    fn readings_give_deltas_across_a_wrap() {
        let mut w = Watched {
            inode: 1,
            table: "/proc/net/udp",
            last: 0,
        };
        assert_eq!(w.advance(0), 0);
        assert_eq!(w.advance(10), 10);
        assert_eq!(w.advance(10), 0);
        assert_eq!(w.advance(u32::MAX - 1), u64::from(u32::MAX) - 11);
        assert_eq!(w.advance(3), 5);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_bound_socket_is_found_by_its_inode() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(socket) = UdpSocket::bind(addr) else {
                continue; // no IPv6 here
            };
            let w = KernelDrops::watch(&[&socket]);
            let w = &w.sockets.lock()[0];
            let table = std::fs::read_to_string(w.table).unwrap();
            assert_eq!(drops_of(&table, w.inode), Some(0), "{addr} in {table}");
        }
    }
}
