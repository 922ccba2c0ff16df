//! A scripted fake provider server on `127.0.0.1:0`: one HTTP/1.1 request per
//! connection, answered with the next scripted reply, every request recorded.
//! Bodies can be written in 1–3 byte pieces with flushes and tiny pauses so
//! the client really sees split reads, cut mid-body, or never answered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is json")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
enum Body {
    /// `Content-Length` body.
    Full(Vec<u8>),
    /// `Transfer-Encoding: chunked`; `split` writes 1–3 byte chunks with
    /// pauses; `cut` drops the connection before the final chunk.
    Chunked {
        bytes: Vec<u8>,
        split: Option<u64>,
        cut: bool,
    },
    /// No length: the body ends when the connection closes.
    UntilClose(Vec<u8>),
    /// Headers and these bytes, then silence with the connection open.
    Stall(Vec<u8>),
    /// Read the request, never answer.
    Hang,
    /// Chunked: these bytes, then `x` forever (until the client goes away).
    Endless(Vec<u8>),
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::raw(status, "application/json", body.to_string())
    }

    pub fn raw(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: Body::Full(body.into()),
        }
    }

    pub fn sse(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: Body::Chunked {
                bytes: body.into(),
                split: None,
                cut: false,
            },
        }
    }

    /// An SSE body that ends by closing the connection (no length, not chunked).
    pub fn sse_until_close(body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: Body::UntilClose(body.into()),
            ..Self::sse("")
        }
    }

    /// Sends `body` and then nothing more, keeping the connection open.
    pub fn sse_stall(body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: Body::Stall(body.into()),
            ..Self::sse("")
        }
    }

    /// A 200 of `content_type` whose chunked body is `prefix` followed by an
    /// endless run of `x` (an endless JSON string or SSE line).
    pub fn endless(content_type: &str, prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: Body::Endless(prefix.into()),
        }
    }

    pub fn hang() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: Body::Hang,
        }
    }

    /// Writes the (chunked) body in 1–3 byte pieces chosen by `seed`.
    pub fn split(mut self, seed: u64) -> Self {
        if let Body::Chunked { split, .. } = &mut self.body {
            *split = Some(seed);
        }
        self
    }

    /// Drops the connection before the chunked body's terminating chunk.
    pub fn cut(mut self) -> Self {
        if let Body::Chunked { cut, .. } = &mut self.body {
            *cut = true;
        }
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

pub struct FakeServer {
    base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Notified when a client closes a stalled connection.
    pub client_closed: Arc<Notify>,
}

impl FakeServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(replies)));
        let client_closed = Arc::new(Notify::new());
        let (reqs, closed) = (requests.clone(), client_closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                socket.set_nodelay(true).expect("nodelay");
                let (reqs, script, closed) = (reqs.clone(), script.clone(), closed.clone());
                tokio::spawn(async move {
                    serve(socket, reqs, script, closed).await;
                });
            }
        });
        Self {
            base: format!("http://{addr}"),
            requests,
            client_closed,
        }
    }

    /// `http://127.0.0.1:port` followed by `suffix` (e.g. `/v1`).
    pub fn url(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }
}

async fn serve(
    mut socket: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    closed: Arc<Notify>,
) {
    let Some(recorded) = read_request(&mut socket).await else {
        return;
    };
    requests.lock().expect("lock").push(recorded);
    let reply = script.lock().expect("lock").pop_front().unwrap_or_else(|| {
        Reply::json(
            418,
            serde_json::json!({"error": {"message": "fake server: no scripted reply", "type": "test"}}),
        )
    });
    let _ = write_reply(&mut socket, reply, &closed).await;
}

async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn write_reply(socket: &mut TcpStream, reply: Reply, closed: &Notify) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\n",
        reply.status,
        reason(reply.status)
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match reply.body {
        Body::Hang => {
            std::future::pending::<()>().await;
            Ok(())
        }
        Body::Full(bytes) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(&bytes).await?;
            socket.shutdown().await
        }
        Body::UntilClose(bytes) => {
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(&bytes).await?;
            socket.shutdown().await
        }
        Body::Endless(prefix) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            socket.write_all(head.as_bytes()).await?;
            write_chunk(socket, &prefix).await?;
            let filler = vec![b'x'; 64 * 1024];
            // Ends when the client closes the connection (a write fails).
            loop {
                write_chunk(socket, &filler).await?;
            }
        }
        Body::Stall(bytes) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            socket.write_all(head.as_bytes()).await?;
            write_chunk(socket, &bytes).await?;
            socket.flush().await?;
            // Wait until the client goes away: a read returns 0 or fails.
            let mut tmp = [0u8; 64];
            loop {
                match socket.read(&mut tmp).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            closed.notify_one();
            Ok(())
        }
        Body::Chunked { bytes, split, cut } => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            socket.write_all(head.as_bytes()).await?;
            match split {
                None => write_chunk(socket, &bytes).await?,
                Some(seed) => {
                    let mut rng = fastrand::Rng::with_seed(seed);
                    let mut rest = &bytes[..];
                    while !rest.is_empty() {
                        let n = rng.usize(1..=3).min(rest.len());
                        write_chunk(socket, &rest[..n]).await?;
                        socket.flush().await?;
                        rest = &rest[n..];
                        tokio::time::sleep(Duration::from_micros(300)).await;
                    }
                }
            }
            if !cut {
                socket.write_all(b"0\r\n\r\n").await?;
            }
            socket.flush().await?;
            socket.shutdown().await
        }
    }
}

async fn write_chunk(socket: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    socket
        .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
        .await?;
    socket.write_all(bytes).await?;
    socket.write_all(b"\r\n").await
}
