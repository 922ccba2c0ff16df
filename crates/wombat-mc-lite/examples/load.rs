//! A small load generator for mc-lite: each worker repeats what the daemon
//! does per titled `/send` against the backend (one `GET /tasks` page, one
//! `POST /messages` with a fresh idempotency key) for a fixed time, then the
//! program prints the throughput and, when it can see the server process,
//! the server's CPU time per send.
//!
//! ```text
//! # in-process server on a temporary SQLite file (CPU figure includes the client)
//! cargo run --release -p wombat-mc-lite --example load -- --secs 10 --concurrency 32
//! # against a running server (e.g. `wombat-mc-lite` with AGENT_JWT_SECRET=load-secret)
//! cargo run --release -p wombat-mc-lite --example load -- \
//!     --url http://127.0.0.1:9001 --secret load-secret --server-pid <pid>
//! ```
//!
//! It is a measuring tool, not a test: it asserts nothing beyond every call
//! answering 200.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measuring tool: any failure should stop it loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wombat_controlplane::{JwtAlgorithm, JwtConfig, jwt};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig};

struct Args {
    url: Option<String>,
    secret: String,
    secs: u64,
    concurrency: usize,
    users: usize,
    server_pid: Option<u32>,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: None,
        secret: "load-secret".into(),
        secs: 10,
        concurrency: 32,
        users: 8,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = Some(value),
            "--secret" => args.secret = value,
            "--secs" => args.secs = value.parse().expect("--secs"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency"),
            "--users" => args.users = value.parse().expect("--users"),
            "--server-pid" => args.server_pid = Some(value.parse().expect("--server-pid")),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// utime + stime of a process in clock ticks (Linux `/proc/<pid>/stat`).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second; 100 on every Linux this runs on.
const TICKS_PER_SEC: f64 = 100.0;

#[tokio::main]
async fn main() {
    let args = parse_args();
    let jwt_config = JwtConfig::new(args.secret.clone(), JwtAlgorithm::HS256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, _server, pid) = match &args.url {
        Some(url) => (
            url.trim_end_matches('/').to_owned(),
            None,
            args.server_pid.map(|p| p.to_string()),
        ),
        None => {
            let cfg = McLiteConfig::new(
                jwt_config.clone(),
                DbLocation::File(dir.path().join("load.db")),
            );
            let server = McLite::start(cfg, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            (server.url(), Some(server), Some("self".to_owned()))
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // One task per user, like a daemon whose sessions each write to one thread.
    let mut users = Vec::new();
    for u in 0..args.users {
        let user = format!("load-user-{u}");
        let token = jwt::mint(&jwt_config, &user, "agent", None, now).unwrap();
        let task: Value = http
            .post(format!("{url}/api/mission-control/tasks"))
            .header("x-agent-token", &token)
            .json(&json!({"title": "load", "idempotency_key": format!("load-task-{u}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        users.push((token, task["id"].as_str().unwrap().to_owned()));
    }
    let users = Arc::new(users);
    let sends = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let before = pid.as_deref().and_then(cpu_ticks);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (http, users, sends, url) = (
            http.clone(),
            Arc::clone(&users),
            Arc::clone(&sends),
            url.clone(),
        );
        workers.push(tokio::spawn(async move {
            let (token, task_id) = &users[w % users.len()];
            let mut n = 0u64;
            while Instant::now() < deadline {
                let list = http
                    .get(format!("{url}/api/mission-control/tasks?limit=50"))
                    .header("x-agent-token", token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(list.status(), 200);
                list.bytes().await.unwrap();
                let post = http
                    .post(format!("{url}/api/mission-control/messages"))
                    .header("x-agent-token", token)
                    .json(&json!({
                        "task_id": task_id,
                        "content": "a reply of ordinary length, about as long as a short answer",
                        "actor_type": "agent",
                        "agent_role": "agent",
                        "idempotency_key": format!("msg:{}", uuid::Uuid::new_v4().simple()),
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(post.status(), 200);
                post.bytes().await.unwrap();
                n += 1;
                sends.fetch_add(1, Ordering::Relaxed);
            }
            n
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = pid.as_deref().and_then(cpu_ticks);
    let total = sends.load(Ordering::Relaxed);
    println!(
        "sends={total} secs={elapsed:.1} sends_per_sec={:.0} concurrency={} users={}",
        total as f64 / elapsed,
        args.concurrency,
        args.users
    );
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = (a - b) as f64 / TICKS_PER_SEC;
        let whose = if args.url.is_some() {
            "server"
        } else {
            "server+client (one process)"
        };
        println!(
            "cpu_{}={cpu:.2}s cpu_percent={:.0} cpu_ms_per_send={:.3}",
            whose.split(' ').next().unwrap_or(whose),
            cpu * 100.0 / elapsed,
            cpu * 1000.0 / total.max(1) as f64
        );
        println!("(cpu measured for: {whose})");
    }
}
