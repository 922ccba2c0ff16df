//! Server-sent events: a response body fed by a bounded channel, and the
//! event framing. The producer learns that the client went away when the
//! channel closes (hyper drops the body), which is how a disconnect cancels
//! the provider call.
//!
//! When shutdown's drain deadline passes with the stream still open, the body
//! ends with one `error` event (`server shutting down`) instead of a bare
//! close, so the client can tell a cut stream from a finished one.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::request::Body;

/// Events buffered between the producer and the socket. Small on purpose:
/// a slow client slows the producer down instead of growing memory.
const CHANNEL_CAPACITY: usize = 16;

/// How long a stream's last event (`done`, or the deadline's `error`) may
/// wait for room in the channel. A client that has not taken a single event
/// for this long has stopped reading (a full TCP or HTTP/2 window); waiting
/// for it without limit would keep the stream's task, and with the
/// deadline's event its LLM permit and admission, for as long as the client
/// keeps the connection open.
const LAST_EVENT_WAIT: Duration = Duration::from_secs(5);

/// The event a stream cut at the drain deadline ends with.
const SHUTDOWN_EVENT: &[u8] =
    b"event: error\ndata: {\"type\":\"error\",\"error\":\"server shutting down\",\"code\":\"shutting_down\"}\n\n";

/// Resolves when the server cuts open streams.
type Cut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The body half: yields whatever the producer sends, ends when it is done
/// — or with [`SHUTDOWN_EVENT`] when the server cuts it.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    /// `None` once the stream has been cut.
    cut: Option<Cut>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(cut) = self.cut.as_mut() else {
            return Poll::Ready(None);
        };
        if cut.as_mut().poll(cx).is_ready() {
            self.cut = None;
            self.rx.close();
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(SHUTDOWN_EVENT)))));
        }
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// The producer half.
pub(crate) struct SseSender {
    tx: mpsc::Sender<Bytes>,
}

impl SseSender {
    /// Sends one event; `false` when the client has gone away.
    pub(crate) async fn send<T: Serialize>(&self, event: &str, data: &T) -> bool {
        self.tx.send(frame(event, data)).await.is_ok()
    }

    /// Sends the stream's last event, waiting at most [`LAST_EVENT_WAIT`]
    /// for room; `false` when the client has gone away or stopped reading.
    pub(crate) async fn send_last<T: Serialize>(&self, event: &str, data: &T) -> bool {
        tokio::time::timeout(LAST_EVENT_WAIT, self.send(event, data))
            .await
            .unwrap_or(false)
    }

    /// Resolves when the client has gone away.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Formats one event: `event: <name>\ndata: <json>\n\n`.
pub(crate) fn frame<T: Serialize>(event: &str, data: &T) -> Bytes {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut buf, data).is_err() {
        buf.extend_from_slice(br#"{"type":"error","error":"failed to serialise event"}"#);
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// A `200 text/event-stream` response and the sender that feeds it. `cut`
/// turns `true` when the server's drain deadline passes.
pub(crate) fn response(cut: &watch::Receiver<bool>) -> (http::Response<Body>, SseSender) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let mut cut = cut.clone();
    let cut: Cut = Box::pin(async move {
        // A dropped sender (the daemon is gone) is not a cut.
        if cut.wait_for(|cut| *cut).await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let body = ChannelBody { rx, cut: Some(cut) };
    let mut resp = http::Response::new(UnsyncBoxBody::new(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (resp, SseSender { tx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_events_and_ends_with_the_producer() {
        let (_cut, never) = watch::channel(false);
        let (resp, tx) = response(&never);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        tokio::spawn(async move {
            assert!(
                tx.send("start", &serde_json::json!({"type": "start"}))
                    .await
            );
            #[derive(Serialize)]
            struct Chunk<'a> {
                r#type: &'a str,
                data: &'a str,
            }
            let chunk = Chunk {
                r#type: "chunk",
                data: "Hel\nlo",
            };
            assert!(tx.send("chunk", &chunk).await);
        });
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            b"event: start\ndata: {\"type\":\"start\"}\n\nevent: chunk\ndata: {\"type\":\"chunk\",\"data\":\"Hel\\nlo\"}\n\n"
        );
    }

    #[tokio::test]
    async fn dropped_body_closes_the_sender() {
        let (_cut, never) = watch::channel(false);
        let (resp, tx) = response(&never);
        drop(resp);
        tx.closed().await;
        assert!(!tx.send("chunk", &1).await);
    }

    #[tokio::test]
    async fn a_cut_stream_ends_with_an_error_event() {
        let (cut, rx) = watch::channel(false);
        let (resp, tx) = response(&rx);
        let mut body = resp.into_body();
        assert!(
            tx.send("start", &serde_json::json!({"type": "start"}))
                .await
        );
        let first = body.frame().await.expect("frame").expect("ok");
        assert!(first.data_ref().expect("data").starts_with(b"event: start"));
        cut.send(true).expect("receiver alive");
        let last = body.frame().await.expect("frame").expect("ok");
        let text = String::from_utf8(last.into_data().expect("data").to_vec()).expect("utf8");
        assert_eq!(
            text,
            "event: error\ndata: {\"type\":\"error\",\"error\":\"server shutting down\",\"code\":\"shutting_down\"}\n\n"
        );
        let data: serde_json::Value =
            serde_json::from_str(text.trim_end().trim_start_matches("event: error\ndata: "))
                .expect("json");
        assert_eq!(data["error"], "server shutting down");
        assert!(
            body.frame().await.is_none(),
            "the body ends after the error event"
        );
        assert!(
            !tx.send("chunk", &1).await,
            "the producer learns the stream is gone"
        );
    }
}
