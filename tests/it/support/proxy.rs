//! A TCP proxy of the tests' own that injects the faults real networks and
//! busy registries produce, between a client and a real server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What goes wrong, and how often.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// The first `busy` connections get `429 Too Many Requests` with
    /// `Retry-After: 1` and are closed.
    pub busy: usize,
    /// The first connection to carry more than this many bytes towards the
    /// server is cut there, mid-request.
    pub cut_upstream_after: Option<u64>,
    /// On every connection, the byte at this offset of the server's answers
    /// is flipped.
    pub flip_downstream_at: Option<u64>,
}

pub struct FaultProxy {
    pub addr: String,
    /// 429 answers given.
    pub busy_served: Arc<AtomicUsize>,
    /// Connections cut.
    pub cuts: Arc<AtomicUsize>,
    /// Bytes passed on towards the server, on all connections.
    pub upstream_bytes: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (busy_served, cuts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let upstream_bytes = Arc::new(AtomicUsize::new(0));
        let (served, cut, carried) = (busy_served.clone(), cuts.clone(), upstream_bytes.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                if served.load(Ordering::SeqCst) < faults.busy {
                    served.fetch_add(1, Ordering::SeqCst);
                    let mut head = [0u8; 4096];
                    let _ = client.read(&mut head);
                    let _ = client.write_all(
                        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (up_in, up_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (cut, carried) = (cut.clone(), carried.clone());
                let cut_at = faults.cut_upstream_after.map(|at| (at, cut));
                std::thread::spawn(move || pump(up_in, up_out, None, cut_at, Some(carried)));
                std::thread::spawn(move || {
                    pump(server, client, faults.flip_downstream_at, None, None)
                });
            }
        });
        FaultProxy {
            addr,
            busy_served,
            cuts,
            upstream_bytes,
        }
    }
}

/// Copy `from` to `to`, flipping one byte at `flip`, or cutting both ends
/// past `cut` bytes if no connection was cut yet; counts into `carried`.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flip: Option<u64>,
    cut: Option<(u64, Arc<AtomicUsize>)>,
    carried: Option<Arc<AtomicUsize>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut seen = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((at, cuts)) = &cut {
            if seen + n as u64 > *at
                && cuts
                    .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
        if let Some(at) = flip {
            if seen <= at && at < seen + n as u64 {
                buf[(at - seen) as usize] ^= 0x55;
            }
        }
        seen += n as u64;
        if let Some(c) = &carried {
            c.fetch_add(n, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
