//! A TCP forwarder on a loopback address of its own: a directory server that can be made to
//! "come back" (start the forwarder where nothing listened) or die (drop it: the listener
//! closes and every forwarded connection is shut down).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A loopback address (127.57.X.Y, X.Y near `near`) where nothing listens on `port` yet,
/// distinct from every other one handed out by this process.
pub fn free_address(near: Ipv4Addr, port: u16) -> Ipv4Addr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let [_, _, x, y] = near.octets();
    for _ in 0..256 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) as u8;
        let address = Ipv4Addr::new(127, 57, x, y.wrapping_add(n));
        if TcpListener::bind((address, port)).is_ok() {
            return address;
        }
    }
    panic!("no free loopback address 127.57.{x}.* for port {port}");
}

pub struct TcpProxy {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Forwards every connection to `listen` to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> TcpProxy {
        // A proxy just dropped on the same address can hold it for a moment (its connections
        // closing: seen once in a full-suite run, "Address already in use").
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(listen) {
                Ok(l) => break l,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind {listen}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    };
                    client.set_nonblocking(false).unwrap();
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let mut held = conns.lock().unwrap();
                    held.push(client.try_clone().unwrap());
                    held.push(server.try_clone().unwrap());
                    drop(held);
                    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(server, client);
                }
            })
        };
        TcpProxy {
            stop,
            conns,
            accept: Some(accept),
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}
