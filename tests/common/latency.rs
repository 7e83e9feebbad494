//! A TCP proxy in front of a real server that delays every byte by a one-way delay: a slow
//! network, not a broken one (nothing is lost or reordered). A test uses
//! it to make every request of a client take a known time, e.g. a deploy's lock renewal and
//! release at its end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::delay::delayed_copy;
use super::proxy::{kubeconfig_via, serve_in_background};

/// A proxy to `target` holding every chunk for its delay; it stops when dropped.
pub struct SlowProxy {
    address: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SlowProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`), each byte
    /// `delay` after it came.
    pub fn start(target: &str, delay: Duration) -> Self {
        let target = target.to_string();
        let (address, stop) =
            serve_in_background(move |listener| accept_slowly(listener, target, delay));
        SlowProxy {
            address,
            _stop: stop,
        }
    }

    /// The test cluster's kubeconfig with its server behind this proxy, written under `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let kubeconfig = PathBuf::from(super::testenv("KUBECONFIG"));
        kubeconfig_via(&self.address.to_string(), &kubeconfig, dir)
    }
}

async fn accept_slowly(listener: TcpListener, target: String, delay: Duration) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                delayed_copy(client_read, server_write, delay),
                delayed_copy(server_read, client_write, delay)
            );
        });
    }
}
