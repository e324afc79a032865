//! Batched UDP receive (`recvmmsg`; the replies leave through `outbox`): under load one
//! system call takes every datagram already queued, so the kernel's per-call cost and the
//! wake-ups are paid once per batch instead of once per request. With one datagram waiting it
//! is a plain receive: a batch never waits to fill (`MSG_WAITFORONE`).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{recvmmsg, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage};
use nix::sys::time::TimeSpec;

use super::packet::MAX_LEN;

/// Most datagrams taken per receive call. The replies to a batch go out together after its
/// last request, so this bounds the wait a batch adds: 16 cached decisions are ~0.1 ms.
pub const BATCH: usize = 16;

/// Receive buffers for one worker thread, reused for every batch.
pub struct Inbox {
    /// One byte more than the largest legal packet, so that an oversized one is seen as such.
    bufs: Vec<Box<[u8; MAX_LEN + 1]>>,
    headers: MultiHeaders<SockaddrStorage>,
    /// The last batch: buffer index, length, source and kernel arrival time of each datagram.
    received: Vec<(usize, usize, SocketAddr, Option<SystemTime>)>,
    busy_poll: Duration,
    /// The last receive got something: traffic is flowing, polling may catch the next one.
    flowing: bool,
}

impl Inbox {
    /// `busy_poll`: how long to poll the socket, after a batch, before blocking.
    pub fn new(busy_poll: Duration) -> Self {
        Self {
            bufs: (0..BATCH).map(|_| Box::new([0u8; MAX_LEN + 1])).collect(),
            // Room for the arrival time the kernel adds on sockets with SO_TIMESTAMPNS. nix
            // leaves each header's control length as the last receive set it, so the option
            // must be on before the first receive; then every datagram carries the same
            // control message and the room stays.
            headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec))),
            received: Vec::with_capacity(BATCH),
            busy_poll,
            flowing: false,
        }
    }

    /// Waits until at least one datagram arrives (or the socket's read timeout passes) and
    /// takes every one already queued, up to `BATCH`. Returns how many.
    ///
    /// Right after a batch it first polls for up to `busy_poll`: a thread that blocks gives up
    /// its CPU, and an idle virtual CPU takes tens of microseconds to wake for the next
    /// datagram. An idle daemon never polls: only a receive that got something starts it.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        if self.flowing && !self.busy_poll.is_zero() {
            let until = Instant::now() + self.busy_poll;
            loop {
                match self.receive_with(socket, MsgFlags::MSG_WAITFORONE | MsgFlags::MSG_DONTWAIT) {
                    Ok(n) if n > 0 => return Ok(n),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let received = self.receive_with(socket, MsgFlags::MSG_WAITFORONE);
        self.flowing = matches!(received, Ok(n) if n > 0);
        received
    }

    fn receive_with(&mut self, socket: &UdpSocket, flags: MsgFlags) -> io::Result<usize> {
        self.received.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            flags,
            None,
        )
        .map_err(io::Error::from)?;
        for (buf, msg) in results.enumerate() {
            // Datagrams from a source that is not IP (cannot happen on a UDP/IP socket) are
            // skipped rather than trusted.
            if let Some(source) = msg.address.as_ref().and_then(socket_addr) {
                let arrived = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::ScmTimestampns(t) => Some(arrival(t)),
                        _ => None,
                    })
                });
                self.received.push((buf, msg.bytes, source, arrived));
            }
        }
        Ok(self.received.len())
    }

    /// The `i`th datagram of the last batch and its source.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let (buf, len, source, _) = self.received[i];
        (&self.bufs[buf][..len], source)
    }

    /// When the kernel queued the `i`th datagram, if the socket has SO_TIMESTAMPNS.
    pub fn arrived(&self, i: usize) -> Option<SystemTime> {
        self.received[i].3
    }
}

/// A kernel timestamp (CLOCK_REALTIME) as a `SystemTime`.
fn arrival(t: TimeSpec) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec() as u32)
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::outbox::Outbox;
    use super::*;

    #[test]
    fn a_batch_takes_every_queued_datagram_and_replies_reach_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&vec![i as u8; 10 + i], server.local_addr().unwrap())
                .unwrap();
        }
        // Loopback delivery is synchronous: all three are queued before the call.
        let mut inbox = Inbox::new(Duration::ZERO);
        assert_eq!(inbox.receive(&server).unwrap(), 3);
        let mut outbox = Outbox::new(&server);
        for (i, client) in clients.iter().enumerate() {
            let (datagram, source) = inbox.get(i);
            assert_eq!(datagram, &vec![i as u8; 10 + i][..]);
            assert_eq!(source, client.local_addr().unwrap());
            outbox.push(datagram.iter().map(|b| b + 1).collect(), source);
        }
        outbox.flush(&server);
        assert!(outbox.is_empty());
        for (i, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &vec![i as u8 + 1; 10 + i][..]);
        }
    }

    #[test]
    fn ipv6_sources_are_kept() {
        let Ok(server) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client
            .send_to(b"ping", server.local_addr().unwrap())
            .unwrap();
        let mut inbox = Inbox::new(Duration::ZERO);
        assert_eq!(inbox.receive(&server).unwrap(), 1);
        let (datagram, source) = inbox.get(0);
        assert_eq!(
            (datagram, source),
            (&b"ping"[..], client.local_addr().unwrap())
        );
        let mut outbox = Outbox::new(&server);
        outbox.push(b"pong".to_vec(), source);
        outbox.flush(&server);
        let mut buf = [0u8; 8];
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
    }

    #[test]
    fn an_oversized_datagram_is_seen_as_longer_than_any_packet() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&[7u8; MAX_LEN + 100], server.local_addr().unwrap())
            .unwrap();
        let mut inbox = Inbox::new(Duration::ZERO);
        assert_eq!(inbox.receive(&server).unwrap(), 1);
        assert_eq!(inbox.get(0).0.len(), MAX_LEN + 1);
    }

    #[test]
    fn arrival_times_come_with_so_timestampns_only() {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(b"plain", plain.local_addr().unwrap())
            .unwrap();
        let mut inbox = Inbox::new(Duration::ZERO);
        assert_eq!(inbox.receive(&plain).unwrap(), 1);
        assert_eq!(inbox.arrived(0), None);

        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        // As the daemon does: before the first receive (see `Inbox::new`).
        let mut inbox = Inbox::new(Duration::ZERO);
        nix::sys::socket::setsockopt(
            &server,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        )
        .unwrap();
        // The kernel turns time-stamping on for its receive path asynchronously after the
        // first socket asks: a datagram queued before that is stamped when read. So the
        // first ones may show no wait; one of a few must show the 50 ms it was queued.
        let mut waits = Vec::new();
        for _ in 0..10 {
            let before = SystemTime::now();
            client.send_to(b"stamped", to).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(inbox.receive(&server).unwrap(), 1);
            let after = SystemTime::now();
            assert_eq!(inbox.get(0).0, b"stamped");
            let arrived = inbox.arrived(0).expect("a kernel timestamp");
            assert!(
                arrived >= before - Duration::from_millis(5),
                "{arrived:?} vs {before:?}"
            );
            let waited = after.duration_since(arrived).unwrap_or_default();
            waits.push(waited);
            if waited >= Duration::from_millis(45) {
                return;
            }
        }
        panic!("no datagram was stamped when queued: waits {waits:?}");
    }

    #[test]
    fn busy_polling_takes_what_comes_and_then_sleeps() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut inbox = Inbox::new(Duration::from_millis(1));
        client.send_to(b"first", to).unwrap();
        assert_eq!(inbox.receive(&server).unwrap(), 1);
        // Polling now: a datagram sent meanwhile is taken.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(300));
            client.send_to(b"second", to).unwrap();
        });
        assert_eq!(inbox.receive(&server).unwrap(), 1);
        assert_eq!(inbox.get(0).0, b"second");
        sender.join().unwrap();
        // Nothing more: the poll gives up and the blocking receive times out as usual.
        let started = Instant::now();
        let err = inbox.receive(&server).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        assert!(started.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn the_read_timeout_still_ends_an_empty_wait() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let err = Inbox::new(Duration::ZERO).receive(&server).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
    }
}
