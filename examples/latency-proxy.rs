//! A TCP proxy that holds every byte for a fixed one-way delay, so a benchmark can put the
//! local registry as far away as a real one: `latency-proxy LISTEN TARGET RTT_MS`.
//!
//! A new connection waits one round trip before it is opened (TCP's handshake); then data in
//! each direction arrives half a round trip after it was sent, without limiting throughput.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target, rtt_ms] = args.as_slice() else {
        eprintln!("usage: latency-proxy LISTEN TARGET RTT_MS");
        std::process::exit(2);
    };
    let rtt = Duration::from_millis(rtt_ms.parse().map_err(std::io::Error::other)?);
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (inbound, _) = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            tokio::time::sleep(rtt).await;
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                delayed_copy(in_read, out_write, rtt / 2),
                delayed_copy(out_read, in_write, rtt / 2)
            );
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (chunks, mut pending) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            if chunks
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = pending.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}
