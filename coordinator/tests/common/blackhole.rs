//! A loopback TCP proxy that can black-hole its traffic, like a dead switch
//! or a dropped route: once told to, it keeps every TCP connection open but
//! forwards nothing, and accepts new connections that go nowhere either. The
//! peers see no reset and no FIN, only silence. It can heal again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How often a pump looks at the switch while it waits: the black hole takes
/// effect within this, and bytes read just then are dropped, as on a real link.
const POLL_MS: u64 = 10;
/// Read buffer of one direction of one connection.
const BUF_BYTES: usize = 16 * 1024;

pub struct Blackhole {
    /// `127.0.0.1:port` to connect to instead of the target.
    pub addr: String,
    holed: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    /// Forward connections to `target` (`host:port`).
    pub async fn start(target: String) -> Blackhole {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let holed = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let (h, s) = (holed.clone(), stopped.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = l.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, h.clone(), s.clone()));
                tokio::spawn(pump(ro, wi, h.clone(), s.clone()));
            }
        });
        Blackhole { addr, holed, stopped, accept }
    }

    /// From now on nothing passes, in either direction, on any connection.
    pub fn black_hole(&self) {
        self.holed.store(true, Ordering::SeqCst);
    }

    /// Forward again (bytes lost meanwhile stay lost).
    pub fn heal(&self) {
        self.holed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.accept.abort();
    }
}

/// Copy `r` to `w` while the link is up; while it is black-holed, hold both
/// ends open and move nothing.
async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, holed: Arc<AtomicBool>, stopped: Arc<AtomicBool>) {
    let mut buf = vec![0u8; BUF_BYTES];
    while !stopped.load(Ordering::SeqCst) {
        if holed.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            continue;
        }
        let n = match tokio::time::timeout(Duration::from_millis(POLL_MS), r.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => continue,
        };
        if holed.load(Ordering::SeqCst) {
            continue; // read just as the link went dark: lost
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
