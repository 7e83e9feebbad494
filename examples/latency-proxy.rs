//! A TCP proxy that holds every byte for a fixed one-way delay, so a benchmark can put the
//! local registry as far away as a real one: `latency-proxy LISTEN TARGET RTT_MS`.
//!
//! A new connection waits one round trip before it is opened (TCP's handshake); then data in
//! each direction arrives half a round trip after it was sent, without limiting throughput.

#[path = "../tests/common/delay.rs"]
mod delay;

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

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
                delay::delayed_copy(in_read, out_write, rtt / 2),
                delay::delayed_copy(out_read, in_write, rtt / 2)
            );
        });
    }
}
