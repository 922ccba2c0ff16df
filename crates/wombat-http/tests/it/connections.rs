//! Connection hardening: every phase of a connection has a deadline (first
//! bytes, headers, body, keep-alive idle, h2 idle), and the number of open
//! connections is capped. Raw TCP sockets play the misbehaving clients; the
//! deadlines are shortened through the same settings an operator uses.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Deadlines of one second: generous enough for a loaded machine to serve a
/// real request, short enough that a test waits little.
fn short_deadlines() -> Setup {
    setup()
        .env("WOMBAT_HEADER_TIMEOUT_SECS", "1")
        .env("WOMBAT_BODY_TIMEOUT_SECS", "1")
        .env("WOMBAT_KEEP_ALIVE_TIMEOUT_SECS", "1")
}

async fn connect(h: &Harness) -> TcpStream {
    let addr = h.url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (EOF or reset); what it sent.
/// Fails (instead of hanging) if the server keeps the socket open.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    patiently("the server to close the connection", async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let h = short_deadlines().start().await;
    let mut s = connect(&h).await;
    let got = until_closed(&mut s).await;
    assert!(got.is_empty(), "nothing to answer: {got:?}");
}

#[tokio::test]
async fn half_an_h2_preface_is_closed() {
    let h = short_deadlines().start().await;
    let mut s = connect(&h).await;
    // The first half of `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`: hyper-util's
    // protocol detection waits for the rest.
    s.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    until_closed(&mut s).await;
}

#[tokio::test]
async fn an_h2c_connection_idle_after_settings_is_closed() {
    let h = short_deadlines().start().await;
    let mut s = connect(&h).await;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("settings");
    let got = until_closed(&mut s).await;
    // The server spoke HTTP/2 (its SETTINGS frame) before giving up on us.
    assert!(got.len() >= 9 && got[3] == 4, "no SETTINGS frame: {got:?}");
}

#[tokio::test]
async fn trickled_headers_are_cut() {
    let h = short_deadlines().start().await;
    let mut s = connect(&h).await;
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    // One header byte every 200 ms: progress, but never a complete head.
    let writer = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    patiently("the server to cut the trickled headers", writer).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let h = short_deadlines().start().await;
    let mut s = connect(&h).await;
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let got = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let h = short_deadlines().start().await;
    let mut s = connect(&h).await;
    s.write_all(
        b"POST /api/agents/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"user_id\":",
    )
    .await
    .expect("write");
    let got = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"body_timeout\""), "{text}");
    assert!(text.contains("WOMBAT_BODY_TIMEOUT_SECS"), "{text}");
}

#[tokio::test]
async fn a_trickled_body_gets_408() {
    let h = short_deadlines().start().await;
    let mut s = connect(&h).await;
    s.write_all(
        b"POST /api/agents/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n",
    )
    .await
    .expect("write");
    let (mut r, mut w) = s.into_split();
    // One byte every 100 ms: it would take hours to finish.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let got = patiently("the 408", async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while !all.windows(4).any(|w| w == b"\r\n\r\n") {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        all
    })
    .await;
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn a_request_within_the_deadlines_is_served() {
    // The deadlines do not cut a well-behaved client: a body sent in two
    // parts, and a second request on the same keep-alive connection.
    let h = setup()
        .env("WOMBAT_HEADER_TIMEOUT_SECS", "5")
        .env("WOMBAT_BODY_TIMEOUT_SECS", "5")
        .env("WOMBAT_KEEP_ALIVE_TIMEOUT_SECS", "5")
        .start()
        .await;
    h.llm.always(Reply::text("hi"));
    let body = send_body("alice", json!({"task_title": "Deadlines"})).to_string();
    let mut s = connect(&h).await;
    let head = format!(
        "POST /api/agents/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let (a, b) = body.split_at(body.len() / 2);
    s.write_all(a.as_bytes()).await.expect("first half");
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b.as_bytes()).await.expect("second half");
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("second request");
    let got = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let h = setup()
        .env("WOMBAT_MAX_CONNECTIONS", "2")
        .env("WOMBAT_HEADER_TIMEOUT_SECS", "60")
        .start()
        .await;
    // Two silent clients take both slots.
    let first = connect(&h).await;
    let _second = connect(&h).await;
    // Give the accept loop time to take both (it is the one being tested:
    // a health check racing it could otherwise win a slot).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = tokio::spawn({
        let http = h.http.clone();
        let url = format!("{}/health", h.url);
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // While both slots are taken the third connection is not served...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !health.is_finished(),
        "a third connection was served beyond WOMBAT_MAX_CONNECTIONS=2"
    );
    // ...and once one closes, it is.
    drop(first);
    let status = patiently("/health once a slot frees", health)
        .await
        .expect("task")
        .expect("health answers");
    assert_eq!(status, 200);
}
