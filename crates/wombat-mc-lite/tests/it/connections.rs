//! The reference backend's connection deadlines and cap (the same policy as
//! the daemon's): silent sockets, half an h2 preface, h2 idle after
//! SETTINGS, a trickled body, and connections beyond the cap.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wombat_mc_lite::{ConnectionLimits, DbLocation, RunningMcLite};

use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(20);

async fn short() -> RunningMcLite {
    let mut cfg = config(DbLocation::Memory);
    cfg.limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    start(cfg).await
}

async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    tokio::time::timeout(PATIENCE, async {
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
    .expect("the server must close the connection")
}

#[tokio::test]
async fn silent_half_preface_and_idle_h2_connections_are_closed() {
    let mc = short().await;
    let mut silent = TcpStream::connect(mc.addr()).await.unwrap();
    let mut half = TcpStream::connect(mc.addr()).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut h2 = TcpStream::connect(mc.addr()).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    assert!(until_closed(&mut silent).await.is_empty());
    until_closed(&mut half).await;
    let got = until_closed(&mut h2).await;
    assert!(got.len() >= 9 && got[3] == 4, "no SETTINGS frame: {got:?}");
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let mc = short().await;
    let mut s = TcpStream::connect(mc.addr()).await.unwrap();
    let head = format!(
        "POST /api/mission-control/tasks HTTP/1.1\r\nhost: x\r\nx-agent-token: {}\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{{\"title\":",
        token("alice")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let mut cfg = config(DbLocation::Memory);
    cfg.limits.max_connections = 1;
    let mc = start(cfg).await;
    let silent = TcpStream::connect(mc.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("{}/health", mc.url());
    let health = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!health.is_finished(), "served beyond max_connections = 1");
    drop(silent);
    let status = tokio::time::timeout(PATIENCE, health)
        .await
        .expect("served once the slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}
