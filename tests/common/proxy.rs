//! A TCP proxy in front of a real server, for injecting network faults into the tests: it
//! forwards bytes both ways until told to stall (hold every byte, keep the connections), to
//! reset (close every open connection with a TCP RST), or to refuse (reset new connections as
//! they come). It runs on a thread of its own, so sync and async tests can drive it alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Bytes already read are held (not lost) until forwarding resumes.
    Stall,
    /// New connections are reset at once; open ones keep going.
    Refuse,
}

struct Control {
    mode: watch::Sender<Mode>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: AtomicUsize,
}

/// A fault-injecting proxy to `target`; it stops when dropped.
pub struct FaultProxy {
    address: SocketAddr,
    control: Arc<Control>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub fn start(target: &str) -> Self {
        let target = target.to_string();
        let (mode, _) = watch::channel(Mode::Forward);
        let (resets, _) = watch::channel(0);
        let control = Arc::new(Control {
            mode,
            resets,
            accepted: AtomicUsize::new(0),
        });
        let shared = control.clone();
        let (address, stop) =
            serve_in_background(move |listener| accept_loop(listener, target, shared));
        FaultProxy {
            address,
            control,
            _stop: stop,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Stops forwarding: every byte is held, connections stay open, new ones are accepted.
    pub fn stall(&self) {
        self.control.mode.send_replace(Mode::Stall);
    }

    /// Forwards again, held bytes first.
    pub fn resume(&self) {
        self.control.mode.send_replace(Mode::Forward);
    }

    /// Resets new connections as they come (the server looks down); `resume` ends it.
    pub fn refuse(&self) {
        self.control.mode.send_replace(Mode::Refuse);
    }

    /// How many connections clients opened through the proxy so far.
    #[allow(
        dead_code,
        reason = "examples/chaos includes this file and counts none"
    )]
    pub fn connections(&self) -> usize {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection with a TCP reset.
    pub fn reset(&self) {
        self.control.resets.send_modify(|n| *n += 1);
    }
}

/// Runs `serve` on a loopback listener of its own, on a thread of its own, until the returned
/// sender is dropped.
pub fn serve_in_background<F, Fut>(serve: F) -> (SocketAddr, tokio::sync::oneshot::Sender<()>)
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
            ready
                .send(listener.local_addr().expect("proxy address"))
                .expect("report the address");
            tokio::select! {
                _ = serve(listener) => {}
                _ = stopped => {}
            }
        });
    });
    (address.recv().expect("proxy started"), stop)
}

async fn accept_loop(listener: TcpListener, target: String, control: Arc<Control>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        control.accepted.fetch_add(1, Ordering::SeqCst);
        if *control.mode.borrow() == Mode::Refuse {
            reset_on_drop(&client);
            drop(client);
            continue;
        }
        let target = target.clone();
        let control = control.clone();
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(&target).await {
                connection(client, server, &control).await;
            }
        });
    }
}

/// Pumps one connection both ways until either side closes or a reset is asked for.
async fn connection(client: TcpStream, server: TcpStream, control: &Control) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut resets = control.resets.subscribe();
    resets.mark_unchanged();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = pump(
        &mut client_read,
        &mut server_write,
        control.mode.subscribe(),
    );
    let down = pump(
        &mut server_read,
        &mut client_write,
        control.mode.subscribe(),
    );
    let reset = tokio::select! {
        _ = async { tokio::join!(up, down) } => false,
        _ = resets.changed() => true,
    };
    if reset {
        reset_on_drop(client_read.as_ref());
        reset_on_drop(server_read.as_ref());
    }
}

/// Closed with linger 0, a socket sends RST instead of FIN.
// Deprecated because a linger above 0 blocks the dropping thread; 0 never does.
#[allow(deprecated)]
fn reset_on_drop(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Hold what was read while stalled: a paused network loses nothing.
        if mode.wait_for(|m| *m != Mode::Stall).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The kubeconfig `kubeconfig` with its server behind the proxy at `proxy` (`host:port`),
/// written under `dir`.
pub fn kubeconfig_via(
    proxy: &str,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    let server = format!("https://{}", server_of(kubeconfig));
    let proxied = text.replace(&server, &format!("https://{proxy}"));
    let path = dir.join("kubeconfig-via-proxy");
    std::fs::write(&path, proxied).expect("write the kubeconfig");
    path
}

/// The API server's `host:port` in a kubeconfig.
pub fn server_of(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("an https server in the kubeconfig")
        .to_string()
}
