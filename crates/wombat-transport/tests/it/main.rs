//! The client against raw TCP fakes on loopback: proxies (forwarding and
//! `CONNECT`), timeouts, redirects, user info, pooling, error texts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use wombat_transport::{Client, ErrorKind, Target};

/// Reads one request head (up to the blank line).
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A server answering every request head it reads with `answer`; the
/// heads go to the returned channel, the number of connections to the
/// counter.
async fn serve(
    answer: &'static [u8],
) -> (String, mpsc::UnboundedReceiver<String>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let head = read_head(&mut s).await;
                    if head.is_empty() {
                        return;
                    }
                    let _ = tx.send(head);
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("127.0.0.1:{}", addr.port()), rx, connections)
}

fn get(url: &str) -> http::Request<Bytes> {
    Target::parse(url)
        .expect("target")
        .request(Method::GET)
        .body(Bytes::new())
        .expect("request")
}

async fn body_of(resp: &mut wombat_transport::Response) -> String {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).expect("utf-8")
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn connections_are_pooled_and_user_info_becomes_basic_auth() {
    let (addr, mut heads, connections) = serve(OK).await;
    let client = Client::builder()
        .user_agent("wombat-test")
        .build()
        .expect("client");
    for _ in 0..3 {
        let mut resp = client
            .send(get(&format!("http://al%20ice:s3cret@{addr}/v1/x?q=1")))
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(body_of(&mut resp).await, "ok");
    }
    let head = heads.recv().await.expect("a request");
    assert!(head.starts_with("GET /v1/x?q=1 HTTP/1.1\r\n"), "{head}");
    // base64("al ice:s3cret")
    assert!(
        head.contains("authorization: Basic YWwgaWNlOnMzY3JldA==\r\n"),
        "{head}"
    );
    assert!(head.contains("user-agent: wombat-test\r\n"), "{head}");
    assert!(!head.contains("s3cret@"), "{head}");
    // Exactly one `Host`, the target's authority without its user info.
    assert_eq!(head.matches("host: ").count(), 1, "{head}");
    assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let (addr, mut heads, _) = serve(
        b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/steal\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let client = Client::builder().build().expect("client");
    let resp = client
        .send(get(&format!("http://{addr}/a")))
        .await
        .expect("send");
    assert_eq!(resp.status(), 302);
    assert!(
        heads
            .recv()
            .await
            .expect("one request")
            .starts_with("GET /a ")
    );
    assert!(heads.try_recv().is_err(), "the redirect was not followed");
}

#[tokio::test]
async fn a_forwarding_proxy_gets_absolute_form_and_its_credentials() {
    let (proxy, mut heads, _) = serve(OK).await;
    let client = Client::builder()
        .proxy(format!("http://pu:pp@{proxy}"))
        .build()
        .expect("client");
    // The target's host does not resolve: only the proxy is dialled.
    let mut resp = client
        .send(get("http://backend.invalid:8080/api/x"))
        .await
        .expect("send through the proxy");
    assert_eq!(body_of(&mut resp).await, "ok");
    let head = heads.recv().await.expect("the proxy saw the request");
    assert!(
        head.starts_with("GET http://backend.invalid:8080/api/x HTTP/1.1\r\n"),
        "{head}"
    );
    // base64("pu:pp")
    assert_eq!(
        header(&head, "proxy-authorization"),
        Some("Basic cHU6cHA="),
        "{head}"
    );
    assert_eq!(
        header(&head, "host"),
        Some("backend.invalid:8080"),
        "{head}"
    );
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel() {
    let (proxy, mut heads, _) = serve(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
    let client = Client::builder()
        .proxy(format!("http://pu:pp@{proxy}"))
        .build()
        .expect("client");
    let err = client
        .send(get(
            "https://user:key@provider.invalid/v1/chat?key=AIza-secret",
        ))
        .await
        .expect_err("the proxy refused the tunnel");
    assert_eq!(err.kind(), ErrorKind::Connect);
    let head = heads.recv().await.expect("the proxy saw the CONNECT");
    assert!(
        head.starts_with("CONNECT provider.invalid:443 HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(
        header(&head, "proxy-authorization"),
        Some("Basic cHU6cHA="),
        "{head}"
    );
    let text = err.describe();
    assert!(!text.contains("AIza") && !text.contains("key@"), "{text}");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error_without_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let client = Client::builder().build().expect("client");
    let err = client
        .send(get(&format!(
            "http://user:pw@127.0.0.1:{port}/x?key=sk-secret"
        )))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Connect);
    let text = err.describe();
    assert!(
        !text.contains("sk-secret") && !text.contains("pw"),
        "{text}"
    );
}

#[tokio::test]
async fn the_read_timeout_bounds_headers_and_every_chunk() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        // First connection: never answers. Second: a chunk, then silence.
        let (mut silent, _) = listener.accept().await.expect("accept");
        read_head(&mut silent).await;
        let (mut s, _) = listener.accept().await.expect("accept");
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop((silent, s));
    });
    let client = Client::builder()
        .read_timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let err = client
        .send(get(&format!("http://{addr}/")))
        .await
        .expect_err("no headers came");
    assert!(err.is_timeout(), "{err:?}");
    let mut resp = client
        .send(get(&format!("http://{addr}/")))
        .await
        .expect("headers");
    assert_eq!(
        resp.chunk().await.expect("a chunk"),
        Some(Bytes::from("hello"))
    );
    let err = resp.chunk().await.expect_err("no second chunk came");
    assert!(err.is_timeout(), "{err:?}");
}

/// The value of header `name` (any case) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn the_connect_timeout_covers_a_proxy_that_never_answers_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        // Accepts, reads the CONNECT, never answers.
        let (mut s, _) = listener.accept().await.expect("accept");
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let client = Client::builder()
        .connect_timeout(Duration::from_millis(300))
        .proxy(format!("http://{proxy}"))
        .build()
        .expect("client");
    // No read timeout: only the connect timeout can end this wait (without
    // it, the error would come when the proxy hangs up, 30 s on, and not
    // be a timeout).
    let err = client
        .send(get("https://provider.invalid/v1/chat"))
        .await
        .expect_err("the tunnel never opened");
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn proxies_other_than_http_are_refused_when_the_client_is_built() {
    for url in [
        "https://proxy.example:3128",
        "socks5://u:secret@proxy.example:1080",
    ] {
        let err = Client::builder().proxy(url).build().expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Builder);
        let text = err.describe();
        assert!(text.contains("only http:// proxy URLs"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        let builder = format!("{:?}", Client::builder().proxy(url));
        assert!(!builder.contains("secret"), "{builder}");
    }
}

#[tokio::test]
async fn a_caller_pausing_between_chunks_is_not_charged_for_its_pause() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (resumed_tx, mut resumed_rx) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
            .await
            .expect("write");
        // The next chunk only once the caller is back, and a little later.
        let _ = resumed_rx.recv().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"1\r\nb\r\n0\r\n\r\n").await.expect("write");
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let client = Client::builder()
        .read_timeout(Duration::from_millis(400))
        .build()
        .expect("client");
    let mut resp = client
        .send(get(&format!("http://{addr}/")))
        .await
        .expect("headers");
    assert_eq!(resp.chunk().await.expect("a"), Some(Bytes::from("a")));
    // Longer than the read timeout, between two reads.
    tokio::time::sleep(Duration::from_millis(700)).await;
    resumed_tx.send(()).expect("server alive");
    assert_eq!(
        resp.chunk().await.expect("b within the timeout"),
        Some(Bytes::from("b"))
    );
}
