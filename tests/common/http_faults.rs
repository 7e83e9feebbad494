//! An HTTP/1.1 proxy in front of a plain-HTTP registry, for injecting registry faults: each
//! rule (a method and a path fragment, for a number of requests) resets the connection,
//! answers with a status of its own (503, 429 with `Retry-After`, 403), forwards the request
//! late, or forwards it and spoils the answer (a header rewritten, a byte of the body changed,
//! the connection reset halfway). It records every request and the status it was answered. It speaks one request per connection, and answers a TLS hello
//! as a plain HTTP server does (400), so clients fall back to plain HTTP as with the real one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::proxy::serve_in_background;

/// What a rule does to the requests it matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Close the connection with a TCP reset, answering nothing.
    Reset,
    /// Answer with this status and these headers, empty body.
    Answer(u16, Vec<(&'static str, &'static str)>),
    /// Forward, then replace this header's value in the answer.
    Header(&'static str, &'static str),
    /// Forward, then change one byte of the answer's body.
    Body,
    /// Forward, send half of the answer, then reset.
    CutShort,
    /// Forward after this long.
    Delay(Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    method: &'static str,
    path: String,
    remaining: usize,
    fault: Fault,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    /// `METHOD /path` of every request, in order.
    seen: Vec<String>,
    /// `METHOD /path` and the status it was answered (none for a reset), as answers went.
    answered: Vec<(String, Option<u16>)>,
}

/// A fault-injecting HTTP proxy to `target`; it stops when dropped.
pub struct HttpFaults {
    address: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl HttpFaults {
    pub fn start(target: &str) -> Self {
        let target = target.to_string();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let (address, stop) = serve_in_background(move |listener| serve(listener, target, state));
        HttpFaults {
            address,
            shared,
            _stop: stop,
        }
    }

    /// `127.0.0.1:PORT`: use it as the registry's host.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// The next `times` requests whose method is `method` (or any, `*`) and whose path holds
    /// `path` meet `fault`.
    pub fn fault(&self, method: &'static str, path: &str, times: usize, fault: Fault) {
        self.lock().rules.push(Rule {
            method,
            path: path.to_string(),
            remaining: times,
            fault,
        });
    }

    /// Every request so far, as `METHOD /path`.
    pub fn seen(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    /// Every request answered so far, as `METHOD /path` and the status (none for a reset).
    pub fn answered(&self) -> Vec<(String, Option<u16>)> {
        self.lock().answered.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn serve(listener: TcpListener, target: String, shared: Arc<Mutex<Shared>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = one_request(client, &target, &shared).await;
        });
    }
}

async fn one_request(
    mut client: TcpStream,
    target: &str,
    shared: &Mutex<Shared>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut client).await? else {
        return client.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
    };
    let line = request_line(&request);
    let fault = {
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.seen.push(line.clone());
        take_fault(&mut shared.rules, &line)
    };
    let record = |status: Option<u16>| {
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.answered.push((line.clone(), status));
    };
    match fault {
        Some(Fault::Reset) => {
            record(None);
            reset(client)
        }
        Some(Fault::Answer(status, headers)) => {
            record(Some(status));
            let mut head =
                format!("HTTP/1.1 {status} Fault\r\nContent-Length: 0\r\nConnection: close\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            client.write_all(head.as_bytes()).await
        }
        other => {
            if let Some(Fault::Delay(delay)) = other {
                tokio::time::sleep(delay).await;
            }
            let mut answer = forward(target, &request).await?;
            record(status_of(&answer));
            match other {
                Some(Fault::Header(name, value)) => answer = with_header(&answer, name, value),
                Some(Fault::Body) => spoil_body(&mut answer),
                Some(Fault::CutShort) => {
                    client.write_all(&answer[..answer.len() / 2]).await?;
                    return reset(client);
                }
                _ => {}
            }
            client.write_all(&answer).await
        }
    }
}

/// The status code of an HTTP answer's first line.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(&answer[..answer.len().min(32)]);
    text.split(' ').nth(1)?.parse().ok()
}

fn take_fault(rules: &mut [Rule], line: &str) -> Option<Fault> {
    let (method, path) = line.split_once(' ').unwrap_or((line, ""));
    let rule = rules.iter_mut().find(|r| {
        r.remaining > 0 && (r.method == "*" || r.method == method) && path.contains(&r.path)
    })?;
    rule.remaining -= 1;
    Some(rule.fault.clone())
}

// Deprecated because a linger above 0 blocks the dropping thread; 0 never does.
#[allow(deprecated)]
fn reset(stream: TcpStream) -> std::io::Result<()> {
    stream.set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

/// The request's head and body; `None` when it is not HTTP (a TLS hello).
async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        request.extend_from_slice(&buffer[..read]);
        if !request[0].is_ascii_uppercase() {
            return Ok(None);
        }
        if let Some(end) = find(&request, b"\r\n\r\n") {
            let wanted = end + 4 + content_length(&request[..end]);
            while request.len() < wanted {
                let read = client.read(&mut buffer).await?;
                if read == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..read]);
            }
            return Ok(Some(request));
        }
    }
}

fn request_line(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let first = text.lines().next().unwrap_or_default();
    let mut parts = first.split(' ');
    format!(
        "{} {}",
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default()
    )
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends the request upstream (one request, then close) and returns the whole answer.
async fn forward(target: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut upstream = TcpStream::connect(target).await?;
    let end = find(request, b"\r\n\r\n").unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..end]);
    let mut rewritten: Vec<String> = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_string)
        .collect();
    rewritten.push("Connection: close".into());
    upstream
        .write_all(format!("{}\r\n\r\n", rewritten.join("\r\n")).as_bytes())
        .await?;
    upstream
        .write_all(&request[(end + 4).min(request.len())..])
        .await?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).await?;
    Ok(answer)
}

fn with_header(answer: &[u8], name: &str, value: &str) -> Vec<u8> {
    let end = find(answer, b"\r\n\r\n").unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..end]);
    let lines: Vec<String> = head
        .lines()
        .map(|l| match l.split_once(':') {
            Some((n, _)) if n.eq_ignore_ascii_case(name) => format!("{n}: {value}"),
            _ => l.to_string(),
        })
        .collect();
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&answer[end..]);
    out
}

fn spoil_body(answer: &mut [u8]) {
    if let Some(end) = find(answer, b"\r\n\r\n")
        && let Some(byte) = answer.get_mut(end + 4)
    {
        *byte ^= 0x20;
    }
}
