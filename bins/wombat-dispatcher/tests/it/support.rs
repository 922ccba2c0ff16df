//! Shared helpers: the reference backend and the real daemon in-process, a
//! scriptable fake HTTP server, and dispatcher construction.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wombat_controlplane::{JwtAlgorithm, JwtConfig, jwt};
use wombat_dispatcher::{Dispatcher, DispatcherConfig};
use wombat_http::config::Settings;
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};

pub const SECRET: &str = "dispatcher-test-secret";
pub const INTERNAL: &str = "dispatcher-internal-token";

pub fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn jwt_config() -> JwtConfig {
    JwtConfig::new(SECRET, JwtAlgorithm::HS256).unwrap()
}

pub async fn start_backend() -> RunningMcLite {
    let mut cfg = McLiteConfig::new(jwt_config(), DbLocation::Memory);
    cfg.internal_token = Some(INTERNAL.into());
    McLite::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A private copy of `workspace-examples/default` in a temporary folder:
/// tests never depend on the repository's own files, which a user may have
/// changed (e.g. with a `.boot-complete` left by `POST /boot/complete`).
pub fn example_workspace() -> tempfile::TempDir {
    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workspace-examples/default");
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&source, copy.path());
    let _ = std::fs::remove_file(copy.path().join(".boot-complete"));
    copy
}

/// The real daemon, started through `wombat_server::run`.
pub struct Daemon {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    /// The daemon's copy of the example workspace.
    _workspace: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon (echo provider) on `port` in front of `backend_url`;
    /// `None` when the port could not be bound.
    async fn try_start(backend_url: &str, port: u16) -> Option<Self> {
        Self::try_start_with(backend_url, port, Some("Notifications")).await
    }

    /// Like `try_start`, with `WOMBAT_DEFAULT_TASK` set only when given.
    async fn try_start_with(
        backend_url: &str,
        port: u16,
        default_task: Option<&str>,
    ) -> Option<Self> {
        let example = example_workspace();
        let workspace = example.path().display().to_string();
        let port_text = port.to_string();
        let mut s = settings(&[
            ("WOMBAT_HOST", "127.0.0.1"),
            ("WOMBAT_PORT", &port_text),
            ("BACKEND_URL", backend_url),
            ("AGENT_JWT_SECRET", SECRET),
            ("LLM_PROVIDER", "echo"),
            ("WOMBAT_WORKSPACE", &workspace),
            ("WOMBAT_INCLUDE_TIME_CONTEXT", "false"),
        ]);
        if let Some(task) = default_task {
            s.insert("WOMBAT_DEFAULT_TASK".into(), task.into());
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let mut task = tokio::spawn(async move {
            wombat_server::run(s, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        // Wait until /health answers, or the server task ends (bind failed).
        for _ in 0..500 {
            if task.is_finished() {
                let result = (&mut task).await.unwrap();
                assert!(
                    result.as_ref().err().is_some_and(|e| e.contains("binding")),
                    "daemon stopped: {result:?}"
                );
                return None;
            }
            if let Ok(r) = http.get(format!("{url}/health")).send().await
                && r.status().is_success()
            {
                return Some(Self {
                    url,
                    stop: Some(stop),
                    task: Some(task),
                    _workspace: example,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("daemon did not become healthy on port {port}");
    }

    /// Starts the daemon on `port`, which must be free.
    pub async fn start_on(backend_url: &str, port: u16) -> Self {
        Self::try_start(backend_url, port)
            .await
            .expect("port taken")
    }

    /// Starts the daemon on some free port (retrying if another process
    /// grabbed the port in between).
    pub async fn start(backend_url: &str) -> Self {
        for _ in 0..10 {
            if let Some(d) = Self::try_start(backend_url, free_port()).await {
                return d;
            }
        }
        panic!("no free port for the daemon");
    }

    /// A daemon without `WOMBAT_DEFAULT_TASK`, as after a first install.
    pub async fn start_without_default_task(backend_url: &str) -> Self {
        for _ in 0..10 {
            if let Some(d) = Self::try_start_with(backend_url, free_port(), None).await {
                return d;
            }
        }
        panic!("no free port for the daemon");
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn dispatcher(backend_url: &str, daemon_url: &str, extra: &[(&str, &str)]) -> Dispatcher {
    let mut s = settings(&[
        ("BACKEND_URL", backend_url),
        ("INTERNAL_TOKEN", INTERNAL),
        ("AGENT_DAEMON_URL", daemon_url),
    ]);
    for (k, v) in extra {
        s.insert((*k).to_owned(), (*v).to_owned());
    }
    Dispatcher::new(DispatcherConfig::from_settings(&s).unwrap()).unwrap()
}

pub async fn enqueue(backend: &RunningMcLite, user: &str, content: &str) -> String {
    let v = wombat_mc_lite::enqueue_notification(
        &backend.url(),
        INTERNAL,
        user,
        &format!("user:{user}:agent"),
        content,
    )
    .await
    .unwrap();
    v["notification_id"].as_str().unwrap().to_owned()
}

pub async fn undelivered(backend: &RunningMcLite) -> Vec<Value> {
    let v: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/mission-control/dispatch/undelivered",
            backend.url()
        ))
        .header("X-Internal-Token", INTERNAL)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["deliveries"].as_array().unwrap().clone()
}

/// `GET /api/mission-control/<path>` as `user`'s agent.
pub async fn read_as(backend: &RunningMcLite, user: &str, path: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jwt::mint(&jwt_config(), user, "agent", None, now).unwrap();
    reqwest::Client::new()
        .get(format!("{}/api/mission-control/{path}", backend.url()))
        .header("X-Agent-Token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Message contents of `user`'s task titled `title`, oldest first.
pub async fn messages_of(backend: &RunningMcLite, user: &str, title: &str) -> Vec<String> {
    let tasks = read_as(backend, user, "tasks?limit=100").await;
    let Some(task) = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == title)
    else {
        return Vec::new();
    };
    let id = task["id"].as_str().unwrap();
    let msgs = read_as(backend, user, &format!("tasks/{id}/messages?limit=100")).await;
    msgs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// A request a fake server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Seen) -> (u16, Value) + Send + Sync;

/// A fake HTTP server: answers with `handler`, records every request.
pub struct Fake {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    pub async fn start(handler: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (st, h) = (Arc::clone(&seen), Arc::clone(&handler));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (st, h) = (Arc::clone(&st), Arc::clone(&h));
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (st, h) = (Arc::clone(&st), Arc::clone(&h));
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.unwrap().to_bytes();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path_and_query: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect(),
                                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                            };
                            let (status, reply) = h(&seen);
                            st.lock().unwrap().push(seen);
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(reply.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            seen,
        }
    }

    /// Requests whose path starts with `prefix`, in arrival order.
    pub fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path_and_query.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A fake backend listing `deliveries` (until acknowledged) and recording
/// acknowledgements.
pub async fn fake_backend(deliveries: Vec<Value>) -> Fake {
    let pending = Arc::new(Mutex::new(VecDeque::from(deliveries)));
    Fake::start(move |req| {
        let path = req.path_and_query.as_str();
        if req.header("x-internal-token") != Some(INTERNAL) {
            return (401, json!({"error": "bad internal token"}));
        }
        if path.starts_with("/api/mission-control/dispatch/undelivered") {
            let list: Vec<Value> = pending.lock().unwrap().iter().cloned().collect();
            return (200, json!({ "deliveries": list }));
        }
        if let Some(rest) = path.strip_prefix("/api/mission-control/dispatch/notifications/") {
            let id = rest.split('/').next().unwrap_or_default().to_owned();
            pending
                .lock()
                .unwrap()
                .retain(|d| d["notification_id"].as_str() != Some(id.as_str()));
            return (200, json!({ "status": "ok" }));
        }
        (404, json!({"error": "not found"}))
    })
    .await
}
