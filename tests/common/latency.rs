//! A TCP proxy in front of a real server that delays every byte by a one-way delay, changeable
//! while it runs: a slow network, not a broken one (nothing is lost or reordered). A test uses
//! it to make every request of a client take a known time, e.g. a deploy's lock renewal and
//! release at its end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::delay::delayed_copy;
use super::proxy::{serve_in_background, server_of};

/// A proxy to `target` holding every chunk for its delay; it stops when dropped.
pub struct SlowProxy {
    address: std::net::SocketAddr,
    /// The one-way delay, in milliseconds.
    delay_ms: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SlowProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`), each byte
    /// `delay` after it came.
    pub fn start(target: &str, delay: Duration) -> Self {
        let target = target.to_string();
        let delay_ms = Arc::new(AtomicU64::new(millis(delay)));
        let shared = delay_ms.clone();
        let (address, stop) =
            serve_in_background(move |listener| accept_slowly(listener, target, shared));
        SlowProxy {
            address,
            delay_ms,
            _stop: stop,
        }
    }

    /// Bytes read from now on are held for `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(millis(delay), Ordering::SeqCst);
    }

    /// The test cluster's kubeconfig with its server behind this proxy, written under `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let kubeconfig = PathBuf::from(super::testenv("KUBECONFIG"));
        let text = std::fs::read_to_string(&kubeconfig).expect("read the kubeconfig");
        let server = format!("https://{}", server_of(&kubeconfig));
        let proxied = text.replace(&server, &format!("https://{}", self.address));
        let path = dir.join("kubeconfig-via-slow-proxy");
        std::fs::write(&path, proxied).expect("write the kubeconfig");
        path
    }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

async fn accept_slowly(listener: TcpListener, target: String, delay_ms: Arc<AtomicU64>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        let delay_ms = delay_ms.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                delayed_copy(client_read, server_write, delay_ms.clone()),
                delayed_copy(server_read, client_write, delay_ms)
            );
        });
    }
}
