//! Sending a batch's replies: one `sendmmsg`, with the replies of one length to one
//! destination coalesced into a single segmented send (UDP generic segmentation, `UDP_SEGMENT`).
//!
//! A gateway sends every request from one port, and the replies of one profile have one
//! length, so under load most of a batch goes to one address in one size. Segmented, the
//! kernel's send path (routing, headers, netfilter, the device queue) runs once for the group
//! instead of once per datagram; the datagrams are cut apart by the NIC, by the kernel just
//! before the device, or — on loopback — at the receiving socket. The receiver sees ordinary
//! datagrams. Measured on loopback: ravpnd's CPU per request ~0.7× (docs/PERFORMANCE.md).

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, sendmmsg, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tracing::{debug, info};

use super::batch::BATCH;

/// Longest reply sent as a segment. The kernel never fragments a segment, so each must fit the
/// path's MTU whole: 1,200 bytes fits the smallest IPv6 allows (1,280) with the headers. An
/// Access-Accept is ~100 bytes; a longer reply goes out as a datagram of its own.
const SEGMENT_MAX: usize = 1200;
/// Most segments in one send: the kernel's `UDP_MAX_SEGMENTS`.
const SEGMENTS_MAX: usize = 64;
/// Most bytes in one send: a UDP datagram's 64 KiB, less the headers.
const SEND_MAX: usize = 65_000;

/// Replies waiting to be sent together.
pub struct Outbox {
    replies: Vec<(Vec<u8>, SocketAddr)>,
    /// Headers for replies sent alone: no control message.
    single: MultiHeaders<SockaddrStorage>,
    /// Headers with room for the `UDP_SEGMENT` control message. Apart from `single`'s because
    /// nix leaves each header's control length as allocated.
    segmented: MultiHeaders<SockaddrStorage>,
    /// Off where the kernel has no UDP segmentation, and once it refused a segmented send on
    /// this socket (IPsec on the route, a device without checksum offload): every reply is
    /// then sent alone.
    segment: bool,
    /// Segmented sends made (each carrying two replies or more).
    segmented_sends: u64,
}

impl Outbox {
    /// For replies sent on `socket`: segmented if its kernel has UDP segmentation (Linux 4.18).
    /// An older kernel ignores the control message and would send a group as one datagram of
    /// all its replies, so it is asked first: it knows the socket option of the same name.
    pub fn new(socket: &impl AsFd) -> Self {
        let segment = getsockopt(socket, sockopt::UdpGsoSegment).is_ok();
        if !segment {
            debug!("no UDP segmentation in this kernel: each reply goes alone");
        }
        Self {
            replies: Vec::with_capacity(BATCH),
            single: MultiHeaders::preallocate(BATCH, None),
            segmented: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
            segment,
            segmented_sends: 0,
        }
    }

    pub fn push(&mut self, reply: Vec<u8>, to: SocketAddr) {
        self.replies.push((reply, to));
    }

    /// Sends every queued reply. UDP sends do not block in practice (the socket buffer drains
    /// at wire speed); a reply the kernel refuses is the same as a lost datagram: the NAS
    /// retransmits. So a failure is logged and the rest still go out.
    pub fn flush(&mut self, socket: &UdpSocket) {
        if self.segment {
            // Groups adjacent; the order of replies within a batch does not matter to a NAS,
            // which matches each by its identifier.
            self.replies.sort_unstable_by_key(|(r, to)| (r.len(), *to));
        }
        let (mut alone, mut groups) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < self.replies.len() {
            let (len, to) = (self.replies[i].0.len(), self.replies[i].1);
            let most = if self.segment && len <= SEGMENT_MAX {
                SEGMENTS_MAX.min(SEND_MAX / len.max(1))
            } else {
                1
            };
            let same = self.replies[i..]
                .iter()
                .take(most)
                .take_while(|(r, t)| r.len() == len && *t == to)
                .count();
            match same {
                1 => alone.push(i),
                _ => groups.push(i..i + same),
            }
            i += same;
        }
        // One call per segment size (the control message is shared by a call's messages).
        let mut g = 0;
        while g < groups.len() {
            let len = self.replies[groups[g].start].0.len();
            let calls = groups[g..]
                .iter()
                .take(BATCH)
                .take_while(|r| self.replies[r.start].0.len() == len)
                .count();
            self.send_segmented(socket, len, &groups[g..g + calls], &mut alone);
            g += calls;
        }
        self.send_alone(socket, &alone);
        self.replies.clear();
    }

    /// One message per group, its replies as segments of `len` bytes. A group the kernel
    /// refuses is added to `alone`.
    fn send_segmented(
        &mut self,
        socket: &UdpSocket,
        len: usize,
        groups: &[Range<usize>],
        alone: &mut Vec<usize>,
    ) {
        let size = len as u16; // ≤ SEGMENT_MAX
        let slices: Vec<Vec<IoSlice<'_>>> = groups
            .iter()
            .map(|g| {
                self.replies[g.clone()]
                    .iter()
                    .map(|(r, _)| IoSlice::new(r))
                    .collect()
            })
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = groups
            .iter()
            .map(|g| Some(SockaddrStorage::from(self.replies[g.start].1)))
            .collect();
        let mut sent = 0;
        while sent < groups.len() {
            match sendmmsg(
                socket.as_raw_fd(),
                &mut self.segmented,
                slices[sent..].iter(),
                &addrs[sent..],
                [ControlMessage::UdpGsoSegments(&size)],
                MsgFlags::empty(),
            ) {
                Ok(done) => {
                    let done = done.count().max(1);
                    self.segmented_sends += done as u64;
                    sent += done;
                }
                Err(e @ (Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)) => {
                    info!(error = %e, "the kernel refuses segmented UDP sends on this socket; each reply goes alone");
                    self.segment = false;
                    groups[sent..].iter().for_each(|g| alone.extend(g.clone()));
                    return;
                }
                // This destination only (EMSGSIZE: its path's MTU is below SEGMENT_MAX).
                Err(e) => {
                    debug!(to = %self.replies[groups[sent].start].1, error = %e, "segmented send failed");
                    alone.extend(groups[sent].clone());
                    sent += 1;
                }
            }
        }
    }

    /// The replies at `which`, one datagram each, in one call per `BATCH`.
    fn send_alone(&mut self, socket: &UdpSocket, which: &[usize]) {
        let mut start = 0;
        while start < which.len() {
            let batch = &which[start..(start + BATCH).min(which.len())];
            let slices: Vec<[IoSlice<'_>; 1]> = batch
                .iter()
                .map(|&i| [IoSlice::new(&self.replies[i].0)])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = batch
                .iter()
                .map(|&i| Some(SockaddrStorage::from(self.replies[i].1)))
                .collect();
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                socket.as_raw_fd(),
                &mut self.single,
                slices.iter(),
                &addrs,
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                // `sendmmsg` stops at the first datagram it cannot send; the next call retries
                // from there, or skips it if it was that one that failed.
                Ok(sent) => start += sent.count().max(1),
                Err(e) => {
                    debug!(to = %self.replies[batch[0]].1, error = %e, "sendmmsg failed");
                    start += 1;
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Replies and where they go.
    type Queued = Vec<(Vec<u8>, SocketAddr)>;
    /// Per client, the payloads it received (sorted).
    type Received = Vec<Vec<Vec<u8>>>;

    /// What each client received (sorted), checking that `n` datagrams arrived in all.
    fn collect(clients: &[UdpSocket], n: usize) -> Received {
        let mut got = vec![Vec::new(); clients.len()];
        let mut buf = [0u8; 2048];
        for (c, sock) in clients.iter().enumerate() {
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            while let Ok(len) = sock.recv(&mut buf) {
                got[c].push(buf[..len].to_vec());
            }
            got[c].sort();
        }
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), n, "{got:?}");
        got
    }

    /// Replies for `clients`: `(client, length, count)`, each payload distinct.
    fn replies(clients: &[UdpSocket], spec: &[(usize, usize, usize)]) -> (Queued, Received) {
        let mut out = Vec::new();
        let mut want = vec![Vec::new(); clients.len()];
        for (k, &(c, len, count)) in spec.iter().enumerate() {
            for j in 0..count {
                let mut r = vec![k as u8; len];
                r[0] = j as u8;
                want[c].push(r.clone());
                out.push((r, clients[c].local_addr().unwrap()));
            }
        }
        want.iter_mut().for_each(|w| w.sort());
        (out, want)
    }

    fn sockets(at: &str) -> Option<(UdpSocket, Vec<UdpSocket>)> {
        let server = UdpSocket::bind(at).ok()?;
        let clients = (0..2).map(|_| UdpSocket::bind(at).unwrap()).collect();
        Some((server, clients))
    }

    #[test]
    fn replies_of_one_length_to_one_sender_leave_together_and_arrive_apart() {
        for at in ["127.0.0.1:0", "[::1]:0"] {
            let Some((server, clients)) = sockets(at) else {
                continue; // no IPv6 loopback on this machine
            };
            // Client 0: five of 30 bytes, two of 40, one of 25 (alone); client 1: three of 30,
            // one too long to be a segment. Interleaved, as a batch's replies are.
            let (mut rs, want) = replies(
                &clients,
                &[(0, 30, 5), (1, 30, 3), (0, 40, 2), (0, 25, 1), (1, 1300, 1)],
            );
            rs.reverse();
            rs.swap(1, 7);
            let mut outbox = Outbox::new(&server);
            let n = rs.len();
            rs.into_iter().for_each(|(r, to)| outbox.push(r, to));
            outbox.flush(&server);
            assert!(outbox.is_empty());
            assert_eq!(outbox.segmented_sends, 3, "{at}");
            assert_eq!(collect(&clients, n), want, "{at}");
        }
    }

    #[test]
    fn a_socket_that_refuses_segments_gets_every_reply_alone() {
        let (server, clients) = sockets("127.0.0.1:0").unwrap();
        // The kernel refuses segmentation without UDP checksums (EINVAL), as it does on
        // routes it cannot segment (EIO).
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a pointer to a c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(
                server.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let (rs, want) = replies(&clients, &[(0, 30, 4), (1, 30, 2)]);
        let mut outbox = Outbox::new(&server);
        rs.into_iter().for_each(|(r, to)| outbox.push(r, to));
        outbox.flush(&server);
        assert!(!outbox.segment);
        assert_eq!(outbox.segmented_sends, 0);
        assert_eq!(collect(&clients, 6), want);
        // And from then on, without trying again.
        let (rs, want) = replies(&clients, &[(0, 50, 3)]);
        rs.into_iter().for_each(|(r, to)| outbox.push(r, to));
        outbox.flush(&server);
        assert_eq!(collect(&clients, 3)[0], want[0]);
    }

    #[test]
    fn segments_are_used_only_on_a_socket_whose_kernel_knows_them() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(Outbox::new(&udp).segment);
        // A socket the option does not apply to answers as an older kernel's UDP would.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!Outbox::new(&tcp).segment);
    }

    #[test]
    fn a_group_larger_than_the_kernel_takes_is_split() {
        let (server, clients) = sockets("127.0.0.1:0").unwrap();
        let big = SEGMENT_MAX; // 65,000 / 1,200: 54 a send
        let (rs, want) = replies(&clients, &[(0, big, 60), (1, 20, 70)]);
        let mut outbox = Outbox::new(&server);
        rs.into_iter().for_each(|(r, to)| outbox.push(r, to));
        outbox.flush(&server);
        assert_eq!(outbox.segmented_sends, 4); // 54 + 6, 64 + 6
        let got = collect(&clients, 130);
        assert_eq!(got, want);
    }
}
