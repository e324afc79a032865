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
        // Messages as ranges of `replies`: a group (one destination, one length), or one reply.
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
                1 => alone.push(i..i + 1),
                _ => groups.push(i..i + same),
            }
            i += same;
        }
        let iov: Vec<IoSlice<'_>> = self.replies.iter().map(|(r, _)| IoSlice::new(r)).collect();
        // One call per segment size (the control message is shared by a call's messages).
        let mut g = 0;
        while g < groups.len() {
            if !self.segment {
                // Refused below: what is left goes out one datagram each.
                alone.extend(groups[g..].iter().flat_map(each));
                break;
            }
            let len = iov[groups[g].start].len();
            let same = groups[g..]
                .iter()
                .take_while(|m| iov[m.start].len() == len)
                .count();
            let mut rest = &groups[g..g + same];
            g += same;
            while !rest.is_empty() {
                let size = len as u16; // ≤ SEGMENT_MAX
                let (sent, failed) = send(
                    socket,
                    &mut self.segmented,
                    &iov,
                    &self.replies,
                    rest,
                    Some(size),
                );
                self.segmented_sends += sent as u64;
                let Some(e) = failed else { break };
                // A group the kernel refuses goes out one datagram each.
                if matches!(
                    e,
                    Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP
                ) {
                    info!(error = %e, "the kernel refuses segmented UDP sends on this socket; each reply goes alone");
                    self.segment = false;
                    alone.extend(rest[sent..].iter().flat_map(each));
                    break;
                }
                // This destination only (EMSGSIZE: its path's MTU is below SEGMENT_MAX).
                debug!(to = %self.replies[rest[sent].start].1, error = %e, "segmented send failed");
                alone.extend(each(&rest[sent]));
                rest = &rest[sent + 1..];
            }
        }
        let mut rest = &alone[..];
        while !rest.is_empty() {
            let (sent, failed) = send(socket, &mut self.single, &iov, &self.replies, rest, None);
            let Some(e) = failed else { break };
            // Skipped: the next call retries from the one after it.
            debug!(to = %self.replies[rest[sent].start].1, error = %e, "sendmmsg failed");
            rest = &rest[sent + 1..];
        }
        self.replies.clear();
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

/// A message's replies as messages of one reply each.
fn each(m: &Range<usize>) -> impl Iterator<Item = Range<usize>> {
    m.clone().map(|i| i..i + 1)
}

/// Sends `messages` (each a range of `iov`, to the destination of its first reply), as many
/// per call as `headers` hold, `size` making each a segmented send. Stops at the first the
/// kernel refuses: how many went, and the error if one was refused (`messages[sent]`'s).
fn send(
    socket: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    iov: &[IoSlice<'_>],
    replies: &[(Vec<u8>, SocketAddr)],
    messages: &[Range<usize>],
    size: Option<u16>,
) -> (usize, Option<Errno>) {
    let parts: Vec<&[IoSlice<'_>]> = messages.iter().map(|m| &iov[m.clone()]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = messages
        .iter()
        .map(|m| Some(SockaddrStorage::from(replies[m.start].1)))
        .collect();
    let segment = size.as_ref().map(ControlMessage::UdpGsoSegments);
    let mut sent = 0;
    while sent < messages.len() {
        match sendmmsg(
            socket.as_raw_fd(),
            headers,
            parts[sent..].iter(),
            &addrs[sent..],
            segment.as_slice(),
            MsgFlags::empty(),
        ) {
            // `sendmmsg` stops at the first message it cannot send; the next call says why.
            Ok(done) => sent += done.count().max(1),
            Err(e) => return (sent, Some(e)),
        }
    }
    (sent, None)
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
