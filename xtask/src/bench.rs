//! `cargo xtask bench [--quick] [--pgo]`: builds `wombat-server` (and xtask itself)
//! in release mode, starts an in-process fake LLM and fake backend on
//! loopback, runs the server against them and measures throughput,
//! latency, overhead over the fakes, CPU per request, memory, open SSE
//! streams and startup time. Prints a table with pass/fail per target and
//! writes JSON to `<target dir>/bench/`.
//!
//! Everything (load generator, fakes, server) shares this machine's cores;
//! the numbers are for comparing builds on one machine, not absolutes. It
//! does not profile: see docs/BENCHMARKS.md for how hot spots were found.
//!
//! The debug `cargo xtask` only builds and then re-executes the release
//! xtask (`bench --runner ...`) under `sh -c 'ulimit -n <hard limit>'`, so
//! the fakes and the load generator are optimised and both xtask and the
//! server (its child) may open as many sockets as the hard limit allows.

mod fakes;
mod load;
mod stats;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cargo::{build_bins, workspace_root};
use hyper::body::Bytes;
use serde_json::{Value, json};

use fakes::Fakes;
use load::{Scenario, Targets};
use stats::Percentiles;

/// The daemon's package.
pub(crate) const SERVER_PKG: &str = "wombat-server";
const SERVER_BIN: &str = "wombat-server";
/// The floor (`xtask/floor`): the least a server can spend per send.
pub(crate) const FLOOR_PKG: &str = "bench-floor";
const XTASK_BIN: &str = "xtask";
/// How long the server may take to answer `/health` before we give up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrency levels of the `send` runs.
const SEND_LEVELS: [usize; 3] = [1, 16, 64];
/// Concurrency levels of the `stream` runs.
const STREAM_LEVELS: [usize; 2] = [1, 16];
const HEALTH_CONCURRENCY: usize = 16;

/// Entry point; `args` are the words after `bench`.
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--runner") {
        return runner(&args[1..]);
    }
    let (mut quick, mut pgo) = (false, false);
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            "--pgo" => pgo = true,
            other => {
                bail!("unknown bench option {other:?} (usage: cargo xtask bench [--quick] [--pgo])")
            }
        }
    }
    let root = workspace_root();
    // XTASK_BENCH_FLOOR=0 leaves the floor out (not built, not run).
    let with_floor = std::env::var("XTASK_BENCH_FLOOR").map_or(true, |v| v != "0");
    let bins = match pgo {
        // Both sides profile-guided, so that the ratio compares like with like.
        true => {
            let xtask = crate::pgo::release_xtask(&root)?;
            let built = crate::pgo::build(&root, &xtask, with_floor)?;
            let mut bins = BTreeMap::from([
                (XTASK_BIN.to_owned(), xtask),
                (SERVER_BIN.to_owned(), built.server),
            ]);
            bins.extend(built.floor.map(|f| (FLOOR_PKG.to_owned(), f)));
            bins
        }
        false => build(&root, with_floor)?,
    };
    let server = bins
        .get(SERVER_BIN)
        .with_context(|| format!("cargo did not report the {SERVER_BIN} executable"))?;
    let xtask = bins
        .get(XTASK_BIN)
        .with_context(|| format!("cargo did not report the {XTASK_BIN} executable"))?;
    let floor = match with_floor {
        true => Some(
            bins.get(FLOOR_PKG)
                .with_context(|| format!("cargo did not report the {FLOOR_PKG} executable"))?,
        ),
        false => None,
    };
    // <target>/release/wombat-server → <target>/bench (<target>/pgo/use/release/… →
    // <target>/pgo/use/bench for --pgo)
    let out_dir = server
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("bench"))
        .context("cannot derive the target directory from the server path")?;
    let status = runner_command(
        xtask,
        server,
        floor.map(PathBuf::as_path),
        &out_dir,
        &root,
        quick,
    )
    .status()
    .context("starting the release xtask")?;
    if !status.success() {
        bail!("benchmark failed ({status})");
    }
    Ok(())
}

/// `xtask bench --runner ...` for the release `xtask`, under `sh -c 'ulimit
/// -n <hard limit>'` (see the module's doc); also the training run of
/// `cargo xtask pgo`.
pub(crate) fn runner_command(
    xtask: &Path,
    server: &Path,
    floor: Option<&Path>,
    out_dir: &Path,
    root: &Path,
    quick: bool,
) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#)
        .arg(xtask)
        .args(["bench", "--runner", "--server"])
        .arg(server)
        .arg("--out")
        .arg(out_dir)
        .arg("--root")
        .arg(root);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(floor) = floor {
        cmd.arg("--floor").arg(floor);
    }
    cmd
}

/// `cargo build --release -p wombat-server`, then the same for the floor
/// (unless left out) and xtask; executables by name. One invocation each, so
/// that the server and the floor are built with exactly their own features
/// (one invocation would unify xtask's into the dependencies they share).
fn build(root: &Path, with_floor: bool) -> Result<BTreeMap<String, PathBuf>> {
    let mut bins = BTreeMap::new();
    let packages = [SERVER_PKG, FLOOR_PKG, "xtask"];
    for package in packages
        .into_iter()
        .filter(|p| with_floor || *p != FLOOR_PKG)
    {
        println!("bench: cargo build --release -p {package}");
        bins.extend(build_bins(root, &["--release", "-p", package])?);
    }
    Ok(bins)
}

/// Settings of one benchmark run.
#[derive(Debug)]
struct Config {
    server: PathBuf,
    /// The floor server, run beside the daemon when given.
    floor: Option<PathBuf>,
    out_dir: PathBuf,
    root: PathBuf,
    quick: bool,
}

impl Config {
    fn parse(args: &[String]) -> Result<Self> {
        let mut it = args.iter();
        let (mut server, mut out_dir, mut root, mut quick) = (None, None, None, false);
        let mut floor = None;
        while let Some(a) = it.next() {
            match a.as_str() {
                "--server" => server = it.next().map(PathBuf::from),
                "--floor" => floor = it.next().map(PathBuf::from),
                "--out" => out_dir = it.next().map(PathBuf::from),
                "--root" => root = it.next().map(PathBuf::from),
                "--quick" => quick = true,
                other => bail!("unknown runner option {other:?}"),
            }
        }
        Ok(Self {
            server: server.context("--server is required")?,
            floor,
            out_dir: out_dir.context("--out is required")?,
            root: root.context("--root is required")?,
            quick,
        })
    }

    /// Length of one measured run.
    fn duration(&self) -> Duration {
        if self.quick {
            Duration::from_millis(700)
        } else {
            Duration::from_secs(3)
        }
    }

    fn startups(&self) -> usize {
        if self.quick { 3 } else { 7 }
    }

    fn open_streams(&self) -> usize {
        if self.quick { 1_000 } else { 10_000 }
    }
}

fn runner(args: &[String]) -> Result<()> {
    let cfg = Config::parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let report = rt.block_on(bench(&cfg));
    // Held streams and idle connections must not delay the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    let report = report?;
    print_report(&report);
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let name = match (report.get("only"), cfg.quick) {
        (Some(_), _) => "only.json",
        (None, true) => "quick.json",
        (None, false) => "bench.json",
    };
    let path = cfg.out_dir.join(name);
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("\nJSON: {}", path.display());
    Ok(())
}

/// The daemon under test; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spawns the server and waits for its first `200` on `/health`;
    /// returns it with the time from spawn to that answer.
    async fn start(cfg: &Config, fakes: &Fakes, log: &Path) -> Result<(Self, Duration)> {
        Self::start_with(cfg, fakes, log, &[]).await
    }

    /// [`Server::start`] with extra environment variables.
    async fn start_with(
        cfg: &Config,
        fakes: &Fakes,
        log: &Path,
        extra: &[(&str, String)],
    ) -> Result<(Self, Duration)> {
        Self::start_binary(&cfg.server, cfg, fakes, log, extra).await
    }

    /// Starts `binary` (the daemon or the floor) with the daemon's
    /// environment plus `extra`.
    async fn start_binary(
        binary: &Path,
        cfg: &Config,
        fakes: &Fakes,
        log: &Path,
        extra: &[(&str, String)],
    ) -> Result<(Self, Duration)> {
        let name = binary.file_name().map_or_else(
            || binary.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let workspace = cfg.root.join("workspace-examples/default");
        // XTASK_BENCH_WRAPPER (e.g. "valgrind --tool=callgrind") runs the
        // server under a profiler; see docs/BENCHMARKS.md.
        let wrapper = std::env::var("XTASK_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.current_dir(log.parent().unwrap_or(&cfg.root))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BACKEND_URL", format!("http://{}", fakes.backend))
            .env("AGENT_JWT_SECRET", "bench")
            .env("OPENAI_BASE_URL", format!("http://{}/v1", fakes.llm))
            .env("OPENAI_API_KEY", "sk-bench")
            .env("WOMBAT_HOST", "127.0.0.1")
            .env("WOMBAT_PORT", port.to_string())
            .env("WOMBAT_WORKSPACE", &workspace)
            .env("WOMBAT_MAX_CONCURRENT_LLM", "20000")
            .env("RUST_LOG", "warn")
            .env("WOMBAT_SHUTDOWN_TIMEOUT_SECS", "2")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Self { child, addr };
        loop {
            if health_ok(addr).await {
                return Ok((server, spawned.elapsed()));
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited during startup ({status}); see {}",
                    log.display()
                );
            }
            if spawned.elapsed() > STARTUP_TIMEOUT {
                bail!("{name} did not become healthy within {STARTUP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

impl Drop for Server {
    /// SIGTERM first (a profiler wrapping the server writes its output on a
    /// clean exit), SIGKILL if it has not exited after a grace period.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

async fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut c) = load::connect_h1(addr).await else {
        return false;
    };
    let mut req = hyper::Request::new(http_body_util::Full::new(Bytes::new()));
    *req.uri_mut() = hyper::Uri::from_static("/health");
    if let Ok(v) = addr.to_string().parse() {
        req.headers_mut().insert(hyper::header::HOST, v);
    }
    matches!(c.send_request(req).await, Ok(r) if r.status() == hyper::StatusCode::OK)
}

/// The value of the counter `name` in the daemon's `/metrics`, if it has it.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    use http_body_util::BodyExt as _;
    let mut c = load::connect_h1(addr).await.ok()?;
    let mut req = hyper::Request::new(http_body_util::Full::new(Bytes::new()));
    *req.uri_mut() = hyper::Uri::from_static("/metrics");
    req.headers_mut()
        .insert(hyper::header::HOST, addr.to_string().parse().ok()?);
    let body = c
        .send_request(req)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What the server process did during a run.
#[derive(Debug, Default)]
struct Measured {
    run: load::RunResult,
    server_ticks: stats::CpuTicks,
    xtask_ticks: u64,
    rss_peak_kb: u64,
}

async fn measure(
    scenario: Scenario,
    targets: &Arc<Targets>,
    concurrency: usize,
    duration: Duration,
    pid: u32,
) -> Result<Measured> {
    let ready = load::prepare(scenario, targets.clone(), concurrency).await?;
    let peak = Arc::new(AtomicU64::new(stats::rss_kb(pid).unwrap_or(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                if let Some(kb) = stats::rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::AcqRel);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (s0, x0) = (stats::cpu_ticks(pid), stats::self_cpu_ticks());
    let run = ready.run(duration).await;
    let (s1, x1) = (stats::cpu_ticks(pid), stats::self_cpu_ticks());
    stop.store(true, Ordering::Release);
    let _ = sampler.await;
    let delta = |a: Option<stats::CpuTicks>, b: Option<stats::CpuTicks>| {
        b.zip(a).map_or_else(Default::default, |(b, a)| b.since(a))
    };
    Ok(Measured {
        run,
        server_ticks: delta(s0, s1),
        xtask_ticks: delta(x0, x1).total(),
        rss_peak_kb: peak.load(Ordering::Acquire),
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// One run as JSON, with latency in microseconds.
fn run_json(m: &mut Measured, hz: u64, with_server: bool) -> Value {
    let r = &mut m.run;
    let lat = Percentiles::of(&mut r.latencies);
    let ttfc = Percentiles::of(&mut r.ttfc);
    let server_ticks = m.server_ticks.total();
    let total_ticks = server_ticks + m.xtask_ticks;
    let mut v = json!({
        "requests": r.ok,
        "errors": r.errors,
        "first_error": r.first_error,
        "seconds": r.elapsed.as_secs_f64(),
        "rps": stats::rate(r.ok, r.elapsed),
        "latency_us": {"p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "max": lat.max},
        "xtask_cpu_us_per_request": stats::cpu_per_request_us(m.xtask_ticks, hz, r.ok),
    });
    if !r.ttfc.is_empty() {
        v["ttfc_us"] = json!({"p50": ttfc.p50, "p90": ttfc.p90, "p99": ttfc.p99, "max": ttfc.max});
        v["chunks"] = json!(r.chunks);
        v["chunks_per_s"] = json!(stats::rate(r.chunks, r.elapsed));
    }
    if with_server {
        v["server_cpu_us_per_request"] = json!(stats::cpu_per_request_us(server_ticks, hz, r.ok));
        v["server_cpu_system_share"] = json!(if server_ticks == 0 {
            0.0
        } else {
            m.server_ticks.system as f64 / server_ticks as f64
        });
        v["server_cpu_share"] = json!(if total_ticks == 0 {
            0.0
        } else {
            server_ticks as f64 / total_ticks as f64
        });
        v["server_rss_peak_kb"] = json!(m.rss_peak_kb);
    }
    v
}

/// Wombat's percentiles minus the fakes' (µs); `key` is `latency_us` or `ttfc_us`.
fn overhead(wombat: &Value, fake: &Value, key: &str) -> Value {
    let d = |p: &str| {
        wombat[key][p].as_f64().unwrap_or(f64::NAN) - fake[key][p].as_f64().unwrap_or(f64::NAN)
    };
    json!({"p50": d("p50"), "p90": d("p90"), "p99": d("p99")})
}

fn check_run(what: &str, v: &Value) -> Result<()> {
    if v["requests"].as_u64().unwrap_or(0) == 0 {
        bail!(
            "{what}: no request succeeded (first error: {})",
            v["first_error"].as_str().unwrap_or("none")
        );
    }
    Ok(())
}

async fn bench(cfg: &Config) -> Result<Value> {
    let hz = clock_ticks();
    let duration = cfg.duration();
    std::fs::create_dir_all(&cfg.out_dir)?;
    let log = cfg.out_dir.join("server-stderr.log");
    let _ = std::fs::remove_file(&log);
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let machine = json!({
        "nproc": nproc,
        "cpu_model": stats::cpu_model(),
        "mem_total_kb": stats::mem_total_kb(),
        "loadavg_before": stats::loadavg(),
        "nofile_limit": stats::nofile_limit(),
        "clock_ticks_per_s": hz,
    });
    println!(
        "bench: {nproc} CPU(s) ({}), {} MiB RAM, load average {}, open-files limit {}",
        stats::cpu_model().unwrap_or_default(),
        stats::mem_total_kb().unwrap_or(0) / 1024,
        stats::loadavg().unwrap_or_default(),
        stats::nofile_limit().map_or_else(|| "?".to_owned(), |n| n.to_string()),
    );
    println!(
        "bench: the load generator, both fakes and the server share these {nproc} cores; server log level warn (no access logs)"
    );

    let fakes = Fakes::start().await?;
    println!(
        "bench: fake LLM on {}, fake backend on {}",
        fakes.llm, fakes.backend
    );

    // Startup: spawn → first 200 on /health, several times; keep the last.
    let mut startups = Vec::new();
    let mut server = None;
    for _ in 0..cfg.startups() {
        drop(server.take());
        let (s, took) = Server::start(cfg, &fakes, &log).await?;
        startups.push(took);
        server = Some(s);
    }
    let server = server.context("no server started")?;
    let startup_all: Vec<f64> = startups.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let startup_ms = stats::median(&mut startups).as_secs_f64() * 1e3;
    let pid = server.pid();
    println!(
        "bench: server pid {pid} on {}; startup median {startup_ms:.1} ms",
        server.addr
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle_kb = stats::rss_kb(pid).unwrap_or(0);

    let agent_body = Bytes::from(
        json!({
            "user_id": "bench",
            "session_key": "user:bench:agent",
            "message": "Hello from the benchmark",
            "task_title": fakes::TASK_TITLE,
        })
        .to_string(),
    );
    // Warm up (connection pools, token cache) and capture what the daemon
    // sends upstream, which the "fakes alone" runs then replay.
    let warm = Arc::new(Targets {
        server: server.addr,
        llm: fakes.llm,
        backend: fakes.backend,
        agent_body: agent_body.clone(),
        chat_body: Bytes::new(),
        stream_body: Bytes::new(),
        message_body: Bytes::new(),
    });
    for scenario in [Scenario::Send, Scenario::Stream] {
        let mut m = measure(scenario, &warm, 8, Duration::from_millis(400), pid).await?;
        check_run(
            &format!("warm-up {scenario:?}"),
            &run_json(&mut m, hz, false),
        )?;
        if m.run.errors > 0 {
            bail!(
                "warm-up {scenario:?}: {} error(s), first: {}",
                m.run.errors,
                m.run.first_error.unwrap_or_default()
            );
        }
    }
    // The floor, started now that the fakes hold what the daemon sent
    // upstream (it sends the same chat bodies), and warmed up the same way.
    let mut floor = match &cfg.floor {
        Some(binary) => Some(start_floor(binary, cfg, &fakes, &agent_body, hz).await?),
        None => None,
    };
    // XTASK_BENCH_ONLY=send[:<concurrency>]|hold|limits runs just that part (for a profiler
    // wrapped around the server with XTASK_BENCH_WRAPPER); the floor runs right
    // after the daemon in each.
    let only = std::env::var("XTASK_BENCH_ONLY").ok();
    match only
        .as_deref()
        .map(|o| o.split_once(':').unwrap_or((o, "16")))
    {
        Some(("send", c)) => {
            let c: usize = c.parse().context("XTASK_BENCH_ONLY=send:<concurrency>")?;
            let before = fakes.state.calls();
            let mut m = measure(Scenario::Send, &warm, c, duration, pid).await?;
            let calls = upstream_calls(before, fakes.state.calls(), m.run.ok);
            let mut run = run_json(&mut m, hz, true);
            run["upstream_calls_per_request"] = calls;
            // `send` as before; `wombat` too, so the floor's helpers read it.
            let mut out =
                json!({"only": "send", "concurrency": c, "send": run.clone(), "wombat": run});
            if let Some(floor) = &floor {
                add_floor_run(&mut out, Scenario::Send, &fakes, floor, c, duration, hz).await?;
            }
            return Ok(out);
        }
        Some(("hold", _)) => {
            let held = hold_streams(cfg, &fakes, &server, &agent_body).await?;
            // Stop the daemon first: its pool keeps thousands of idle
            // connections to the fake LLM, whose sockets (in this process)
            // would leave the floor's streams short of file descriptors.
            drop(server);
            let mut out = json!({"only": "hold", "open_streams": held});
            if let Some(floor) = &floor {
                let f = hold_streams(cfg, &fakes, &floor.server, &agent_body).await?;
                out["held_vs_floor"] = held_vs_floor(&out["open_streams"], &f);
                out["open_streams_floor"] = f;
            }
            return Ok(out);
        }
        Some(("limits", _)) => {
            drop(floor);
            drop(server);
            let limits = limit_runs(cfg, &fakes, &log, &agent_body, hz).await?;
            return Ok(json!({"only": "limits", "limits": limits}));
        }
        Some(_) => {
            bail!("XTASK_BENCH_ONLY must be send[:<concurrency>], hold or limits, not {only:?}")
        }
        None => {}
    }
    let captured = fakes.state.captured();
    let targets = Arc::new(Targets {
        chat_body: captured
            .chat
            .context("the daemon never called the fake LLM")?,
        stream_body: captured
            .stream
            .context("the daemon never streamed from the fake LLM")?,
        message_body: captured
            .message
            .context("the daemon never posted a message to the fake backend")?,
        server: warm.server,
        llm: warm.llm,
        backend: warm.backend,
        agent_body: warm.agent_body.clone(),
    });

    let mut send = Vec::new();
    for c in SEND_LEVELS {
        let mut fake = measure(Scenario::FakeSend, &targets, c, duration, pid).await?;
        let before = fakes.state.calls();
        let mut wombat = measure(Scenario::Send, &targets, c, duration, pid).await?;
        let calls = upstream_calls(before, fakes.state.calls(), wombat.run.ok);
        let (fake, mut wombat) = (
            run_json(&mut fake, hz, false),
            run_json(&mut wombat, hz, true),
        );
        wombat["upstream_calls_per_request"] = calls;
        check_run(&format!("send c={c}"), &wombat)?;
        check_run(&format!("fakes alone c={c}"), &fake)?;
        println!(
            "bench: send c={c}: {:.0} req/s (fakes alone {:.0} seq/s)",
            wombat["rps"].as_f64().unwrap_or(0.0),
            fake["rps"].as_f64().unwrap_or(0.0)
        );
        let mut entry = json!({"concurrency": c, "overhead_us": overhead(&wombat, &fake, "latency_us"), "wombat": wombat, "fakes_alone": fake});
        if let Some(floor) = &floor {
            add_floor_run(&mut entry, Scenario::Send, &fakes, floor, c, duration, hz).await?;
        }
        send.push(entry);
    }
    let mut stream = Vec::new();
    for c in STREAM_LEVELS {
        let mut fake = measure(Scenario::FakeStream, &targets, c, duration, pid).await?;
        let before = fakes.state.calls();
        let mut wombat = measure(Scenario::Stream, &targets, c, duration, pid).await?;
        let calls = upstream_calls(before, fakes.state.calls(), wombat.run.ok);
        let (fake, mut wombat) = (
            run_json(&mut fake, hz, false),
            run_json(&mut wombat, hz, true),
        );
        wombat["upstream_calls_per_request"] = calls;
        check_run(&format!("stream c={c}"), &wombat)?;
        check_run(&format!("fake stream c={c}"), &fake)?;
        println!(
            "bench: stream c={c}: {:.0} streams/s, {:.0} chunks/s",
            wombat["rps"].as_f64().unwrap_or(0.0),
            wombat["chunks_per_s"].as_f64().unwrap_or(0.0)
        );
        let mut entry = json!({"concurrency": c, "ttfc_overhead_us": overhead(&wombat, &fake, "ttfc_us"), "overhead_us": overhead(&wombat, &fake, "latency_us"), "wombat": wombat, "fakes_alone": fake});
        if let Some(floor) = &floor {
            add_floor_run(&mut entry, Scenario::Stream, &fakes, floor, c, duration, hz).await?;
        }
        stream.push(entry);
    }
    let mut h = measure(
        Scenario::Health,
        &targets,
        HEALTH_CONCURRENCY,
        duration,
        pid,
    )
    .await?;
    let health = run_json(&mut h, hz, true);
    check_run("health", &health)?;
    println!(
        "bench: health c={HEALTH_CONCURRENCY}: {:.0} req/s",
        health["rps"].as_f64().unwrap_or(0.0)
    );

    let held = hold_streams(cfg, &fakes, &server, &agent_body).await?;
    drop(server);
    // The floor's held streams right after the daemon's, both after their load runs.
    let held_floor = match floor.take() {
        Some(floor) => Some(hold_streams(cfg, &fakes, &floor.server, &agent_body).await?),
        None => None,
    };
    // The same on a fresh server: RSS with many streams depends on what the
    // heap went through before (see docs/BENCHMARKS.md).
    let (fresh, _) = Server::start(cfg, &fakes, &log).await?;
    let fresh_targets = Arc::new(Targets {
        server: fresh.addr,
        llm: fakes.llm,
        backend: fakes.backend,
        agent_body: agent_body.clone(),
        chat_body: Bytes::new(),
        stream_body: Bytes::new(),
        message_body: Bytes::new(),
    });
    let mut w = measure(
        Scenario::Send,
        &fresh_targets,
        8,
        Duration::from_millis(400),
        fresh.pid(),
    )
    .await?;
    check_run("fresh warm-up", &run_json(&mut w, hz, false))?;
    let held_fresh = hold_streams(cfg, &fakes, &fresh, &agent_body).await?;
    drop(fresh);
    let limits = limit_runs(cfg, &fakes, &log, &agent_body, hz).await?;
    let mut report = json!({
        "machine": machine,
        "loadavg_after": stats::loadavg(),
        "quick": cfg.quick,
        "run_seconds": duration.as_secs_f64(),
        "startup_ms": {"median": startup_ms, "all": startup_all},
        "rss_idle_kb": rss_idle_kb,
        "upstream_body_bytes": {
            "chat": targets.chat_body.len(),
            "stream": targets.stream_body.len(),
            "message": targets.message_body.len(),
        },
        "send": send,
        "stream": stream,
        "health": health,
        "open_streams": held,
        "open_streams_fresh": held_fresh,
        "limits": limits,
    });
    if let Some(held_floor) = held_floor {
        report["held_vs_floor"] = held_vs_floor(&report["open_streams"], &held_floor);
        report["open_streams_floor"] = held_floor;
    }
    Ok(report)
}

/// The floor server, running, with the targets that point the load generator at it.
struct Floor {
    server: Server,
    targets: Arc<Targets>,
}

/// Starts the floor with the daemon's environment and the chat bodies the
/// daemon sent during its warm-up (so both send the same bytes upstream),
/// and warms it up like the daemon.
async fn start_floor(
    binary: &Path,
    cfg: &Config,
    fakes: &Fakes,
    agent_body: &Bytes,
    hz: u64,
) -> Result<Floor> {
    let captured = fakes.state.captured();
    let mut env = Vec::new();
    for (var, file, body) in [
        (
            "WOMBAT_FLOOR_CHAT_BODY",
            "floor-chat-body.json",
            captured.chat,
        ),
        (
            "WOMBAT_FLOOR_STREAM_BODY",
            "floor-stream-body.json",
            captured.stream,
        ),
    ] {
        let body = body.with_context(|| format!("the daemon sent no body for {var}"))?;
        let path = cfg.out_dir.join(file);
        std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        env.push((var, path.display().to_string()));
    }
    let log = cfg.out_dir.join("floor-stderr.log");
    let (server, took) = Server::start_binary(binary, cfg, fakes, &log, &env).await?;
    println!(
        "bench: floor pid {} on {} (startup {:.1} ms)",
        server.pid(),
        server.addr,
        took.as_secs_f64() * 1e3
    );
    let targets = Arc::new(Targets {
        server: server.addr,
        llm: fakes.llm,
        backend: fakes.backend,
        agent_body: agent_body.clone(),
        chat_body: Bytes::new(),
        stream_body: Bytes::new(),
        message_body: Bytes::new(),
    });
    for scenario in [Scenario::Send, Scenario::Stream] {
        let mut m = measure(
            scenario,
            &targets,
            8,
            Duration::from_millis(400),
            server.pid(),
        )
        .await?;
        check_run(
            &format!("floor warm-up {scenario:?}"),
            &run_json(&mut m, hz, false),
        )?;
        if m.run.errors > 0 {
            bail!(
                "floor warm-up {scenario:?}: {} error(s), first: {}",
                m.run.errors,
                m.run.first_error.unwrap_or_default()
            );
        }
    }
    Ok(Floor { server, targets })
}

/// Runs `scenario` on the floor right after the daemon's run and adds it,
/// with the daemon/floor ratios, to `entry`.
async fn add_floor_run(
    entry: &mut Value,
    scenario: Scenario,
    fakes: &Fakes,
    floor: &Floor,
    c: usize,
    duration: Duration,
    hz: u64,
) -> Result<()> {
    let before = fakes.state.calls();
    let mut m = measure(scenario, &floor.targets, c, duration, floor.server.pid()).await?;
    let calls = upstream_calls(before, fakes.state.calls(), m.run.ok);
    let mut v = run_json(&mut m, hz, true);
    v["upstream_calls_per_request"] = calls;
    check_run(&format!("floor {scenario:?} c={c}"), &v)?;
    let ratio = vs_floor(&entry["wombat"], &v);
    println!(
        "bench: floor {scenario:?} c={c}: {:.0} req/s; daemon/floor CPU per request {:.2}×, p50 {:.2}×",
        f(&v["rps"]),
        f(&ratio["server_cpu"]),
        f(&ratio["p50"]),
    );
    entry["floor"] = v;
    entry["vs_floor"] = ratio;
    Ok(())
}

/// Upstream calls per successful request between two snapshots of the
/// fakes' counters (a request that failed may have made some too).
fn upstream_calls(before: [u64; 3], after: [u64; 3], requests: u64) -> Value {
    let per = |i: usize| {
        if requests == 0 {
            f64::NAN
        } else {
            after[i].saturating_sub(before[i]) as f64 / requests as f64
        }
    };
    json!({"list_tasks": per(0), "chat": per(1), "messages": per(2)})
}

/// Daemon / floor for one run: server CPU per request and p50 latency.
fn vs_floor(wombat: &Value, floor: &Value) -> Value {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    json!({
        "server_cpu": ratio(
            f(&wombat["server_cpu_us_per_request"]),
            f(&floor["server_cpu_us_per_request"]),
        ),
        "p50": ratio(f(&wombat["latency_us"]["p50"]), f(&floor["latency_us"]["p50"])),
    })
}

/// Memory of held streams: RSS with them open, and per stream (growth over
/// the RSS before opening, divided by the streams open), daemon and floor.
fn held_vs_floor(wombat: &Value, floor: &Value) -> Value {
    let per_stream = |h: &Value| {
        let (open, before) = (f(&h["server_rss_kb"]), f(&h["server_rss_before_kb"]));
        let n = f(&h["opened"]);
        if n > 0.0 {
            (open - before) * 1024.0 / n
        } else {
            f64::NAN
        }
    };
    let (w, fl) = (per_stream(wombat), per_stream(floor));
    let (wr, fr) = (f(&wombat["server_rss_kb"]), f(&floor["server_rss_kb"]));
    json!({
        "wombat_bytes_per_stream": w,
        "floor_bytes_per_stream": fl,
        "per_stream": if fl > 0.0 { w / fl } else { f64::NAN },
        "wombat_rss_kb": wr,
        "floor_rss_kb": fr,
        "rss": if fr > 0.0 { wr / fr } else { f64::NAN },
    })
}

/// A `redis-server` for the limits run; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start(dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let redis = Self { child, port };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!("redis-server did not listen within {STARTUP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rounds of the limits comparison: each measures the in-memory store's
/// daemon, then the Redis store's, back to back.
const LIMIT_ROUNDS: usize = 3;

/// `send` at c=1 with per-user limits in force (a requests-per-minute limit
/// no run reaches, so every send is admitted, settled and, with Redis,
/// recorded in the shared ledger): one daemon with the in-memory store and
/// one on a local `redis-server`, both started up front and measured in
/// alternation over [`LIMIT_ROUNDS`] rounds, so that the machine's drift
/// falls on both. Reports what Redis adds per send as the median of the
/// rounds' differences: the daemon's CPU, the p50 latency; and the Redis
/// server's own CPU.
async fn limit_runs(
    cfg: &Config,
    fakes: &Fakes,
    log: &Path,
    agent_body: &Bytes,
    hz: u64,
) -> Result<Value> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("bench: redis-server not installed; limits runs skipped");
        return Ok(json!({"skipped": "redis-server not installed"}));
    }
    let redis = Redis::start(&cfg.out_dir).await?;
    let limits = [
        ("WOMBAT_RATE_RPM", "1000000000".to_owned()),
        // The admission counters are read from it after the runs.
        ("WOMBAT_METRICS_PUBLIC", "true".to_owned()),
    ];
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let mut daemons = Vec::new();
    for (name, with_redis) in [("memory", false), ("redis", true)] {
        let mut env = limits.to_vec();
        if with_redis {
            env.push(("WOMBAT_REDIS_URL", url.clone()));
        }
        let (server, _) = Server::start_with(cfg, fakes, log, &env).await?;
        let targets = Arc::new(Targets {
            server: server.addr,
            llm: fakes.llm,
            backend: fakes.backend,
            agent_body: agent_body.clone(),
            chat_body: Bytes::new(),
            stream_body: Bytes::new(),
            message_body: Bytes::new(),
        });
        let mut w = measure(
            Scenario::Send,
            &targets,
            4,
            Duration::from_millis(400),
            server.pid(),
        )
        .await?;
        check_run(
            &format!("limits {name} warm-up"),
            &run_json(&mut w, hz, false),
        )?;
        daemons.push((name, with_redis, server, targets));
    }
    let mut rounds: Vec<serde_json::Map<String, Value>> = Vec::new();
    for round in 0..LIMIT_ROUNDS {
        let mut runs = serde_json::Map::new();
        for (name, with_redis, server, targets) in &daemons {
            let r0 = stats::cpu_ticks(redis.child.id());
            let mut m = measure(Scenario::Send, targets, 1, cfg.duration(), server.pid()).await?;
            let r1 = stats::cpu_ticks(redis.child.id());
            let mut v = run_json(&mut m, hz, true);
            check_run(&format!("limits {name} c=1"), &v)?;
            if m.run.errors > 0 {
                bail!(
                    "limits {name}: {} error(s), first: {}",
                    m.run.errors,
                    m.run.first_error.unwrap_or_default()
                );
            }
            if *with_redis {
                let ticks = r1.zip(r0).map_or(0, |(b, a)| b.since(a).total());
                v["redis_cpu_us_per_request"] =
                    json!(stats::cpu_per_request_us(ticks, hz, m.run.ok));
            }
            println!(
                "bench: limits round {} ({name} store) send c=1: {:.0} req/s, p50 {:.3} ms, {:.1} µs server CPU/send",
                round + 1,
                f(&v["rps"]),
                f(&v["latency_us"]["p50"]) / 1e3,
                f(&v["server_cpu_us_per_request"]),
            );
            runs.insert((*name).to_owned(), v);
        }
        rounds.push(runs);
    }
    let added = |key: fn(&Value) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .map(|r| key(&r["redis"]) - key(&r["memory"]))
            .collect()
    };
    let cpu = added(|v| f(&v["server_cpu_us_per_request"]));
    let p50 = added(|v| f(&v["latency_us"]["p50"]));
    let redis_cpu: Vec<f64> = rounds
        .iter()
        .map(|r| f(&r["redis"]["redis_cpu_us_per_request"]))
        .collect();
    // How the Redis daemon admitted: from grants it held, or with a round trip.
    let mut admissions = serde_json::Map::new();
    if let Some((_, _, server, _)) = daemons.iter().find(|d| d.1) {
        for name in [
            "wombat_limits_admitted_total",
            "wombat_limits_admitted_local_total",
        ] {
            admissions.insert(name.to_owned(), json!(metric(server.addr, name).await));
        }
    }
    let last = rounds.last().cloned().unwrap_or_default();
    Ok(json!({
        "concurrency": 1,
        "rounds": LIMIT_ROUNDS,
        "memory": last.get("memory"),
        "redis": last.get("redis"),
        "redis_added_server_cpu_us_per_send": median_f64(&cpu),
        "redis_added_p50_us": median_f64(&p50),
        "redis_server_cpu_us_per_send": median_f64(&redis_cpu),
        "redis_added_server_cpu_us_per_round": cpu,
        "redis_added_p50_us_per_round": p50,
        "redis_daemon_admissions": admissions,
        "all_rounds": rounds,
    }))
}

/// The median of `values` (0 for none).
fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Opens many SSE streams that the fake LLM holds after their first chunk,
/// measures the server with all of them open, then releases them.
async fn hold_streams(cfg: &Config, fakes: &Fakes, server: &Server, body: &Bytes) -> Result<Value> {
    let target = cfg.open_streams();
    let pid = server.pid();
    let state = &fakes.state;
    state.hold.store(true, Ordering::Release);
    let rss_before_kb = stats::rss_kb(pid).unwrap_or(0);
    let started = Instant::now();
    let streams = load::open_streams(server.addr, body.clone(), target).await?;
    let deadline = Duration::from_secs(if cfg.quick { 30 } else { 120 });
    let mut last_print = Instant::now();
    loop {
        let (o, f) = (
            streams.opened.load(Ordering::Acquire),
            streams.failed.load(Ordering::Acquire),
        );
        if o + f >= target || started.elapsed() > deadline {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            println!("bench: open streams {o}/{target} ({f} failed)");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = streams.opened.load(Ordering::Acquire);
    let failed = streams.failed.load(Ordering::Acquire);
    let held_by_fake = state.held.load(Ordering::Acquire);
    let rss_open_kb = stats::rss_kb(pid).unwrap_or(0);
    let fds = stats::open_fds(pid);
    let first_error = streams
        .first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    println!(
        "bench: {opened}/{target} streams open ({failed} failed) in {open_seconds:.1} s; server RSS {} MiB, {} fds",
        rss_open_kb / 1024,
        fds.map_or_else(|| "?".to_owned(), |n| n.to_string())
    );
    // Release in steps so the daemon's backend writes do not all open new
    // connections at the same moment.
    let released = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut released = 0;
            while released < target {
                state.release.add_permits(200);
                released += 200;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let finished = streams.finish(deadline).await;
    let _ = released.await;
    state.hold.store(false, Ordering::Release);
    // Leftover permits would let later holds through.
    let _ = state
        .release
        .try_acquire_many(state.release.available_permits() as u32)
        .map(|p| p.forget());
    println!("bench: {finished}/{opened} held streams completed with their done event");
    Ok(json!({
        "target": target,
        "transport": format!("h2c, {} streams per connection", load::STREAMS_PER_CONNECTION),
        "opened": opened,
        "failed": failed,
        "first_error": first_error,
        "held_by_fake_llm": held_by_fake,
        "seconds_to_open": open_seconds,
        "server_rss_before_kb": rss_before_kb,
        "server_rss_kb": rss_open_kb,
        "server_open_fds": fds,
        "completed_after_release": finished,
    }))
}

// ---- report ----

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1e3)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn print_report(r: &Value) {
    if let Some(only) = r.get("only") {
        println!(
            "\n{only} only: {}",
            serde_json::to_string_pretty(r).unwrap_or_default()
        );
        print_floor(r);
        return;
    }
    println!(
        "\n== Wombat benchmark ({}) ==",
        if r["quick"] == true { "quick" } else { "full" }
    );
    let m = &r["machine"];
    println!(
        "machine: {} cores, {}, {} MiB; load average before {} / after {}; {:.1} s per run",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_total_kb"].as_u64().unwrap_or(0) / 1024,
        m["loadavg_before"].as_str().unwrap_or("?"),
        r["loadavg_after"].as_str().unwrap_or("?"),
        f(&r["run_seconds"]),
    );
    println!(
        "NOTE: load generator, fakes and server share the same cores; all latencies are client-side on loopback.\n"
    );
    println!(
        "| {:<24} | {:>3} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} | {:>11} | {:>9} | {:>8} |",
        "run",
        "c",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "srv CPU/req",
        "srv share",
        "srv RSS"
    );
    let widths = [26, 5, 11, 10, 10, 10, 8, 13, 11, 10];
    println!("|{}|", widths.map(|w| "-".repeat(w)).join("|"));
    let row = |name: &str, c: &Value, v: &Value| {
        let server = v.get("server_cpu_us_per_request").is_some();
        println!(
            "| {:<24} | {:>3} | {:>9.0} | {:>8} | {:>8} | {:>8} | {:>6} | {:>11} | {:>9} | {:>8} |",
            name,
            c.to_string(),
            f(&v["rps"]),
            ms(f(&v["latency_us"]["p50"])),
            ms(f(&v["latency_us"]["p90"])),
            ms(f(&v["latency_us"]["p99"])),
            v["errors"].to_string(),
            if server {
                format!("{:.0} µs", f(&v["server_cpu_us_per_request"]))
            } else {
                "-".into()
            },
            if server {
                format!("{:.0} %", f(&v["server_cpu_share"]) * 100.0)
            } else {
                "-".into()
            },
            if server {
                format!(
                    "{} MiB",
                    v["server_rss_peak_kb"].as_u64().unwrap_or(0) / 1024
                )
            } else {
                "-".into()
            },
        );
    };
    let overhead_row = |name: &str, c: &Value, o: &Value| {
        println!(
            "| {:<24} | {:>3} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} | {:>11} | {:>9} | {:>8} |",
            name,
            c.to_string(),
            "",
            ms(f(&o["p50"])),
            ms(f(&o["p90"])),
            ms(f(&o["p99"])),
            "",
            "",
            "",
            ""
        );
    };
    for s in r["send"].as_array().into_iter().flatten() {
        let c = &s["concurrency"];
        row("send (Wombat)", c, &s["wombat"]);
        row("  fakes alone (3 calls)", c, &s["fakes_alone"]);
        overhead_row("  = added by Wombat", c, &s["overhead_us"]);
    }
    for s in r["stream"].as_array().into_iter().flatten() {
        let c = &s["concurrency"];
        row("stream (Wombat)", c, &s["wombat"]);
        row("  fakes alone (3 calls)", c, &s["fakes_alone"]);
        overhead_row("  = added by Wombat", c, &s["overhead_us"]);
    }
    row("health", &json!(HEALTH_CONCURRENCY), &r["health"]);

    println!("\nstreaming (50 chunks per reply):");
    for s in r["stream"].as_array().into_iter().flatten() {
        let (w, fk, o) = (&s["wombat"], &s["fakes_alone"], &s["ttfc_overhead_us"]);
        println!(
            "  c={:<3} time to first chunk p50 {} ms (fakes alone {} ms, added {} ms), p99 {} ms (added {} ms); {:.0} chunks/s",
            s["concurrency"],
            ms(f(&w["ttfc_us"]["p50"])),
            ms(f(&fk["ttfc_us"]["p50"])),
            ms(f(&o["p50"])),
            ms(f(&w["ttfc_us"]["p99"])),
            ms(f(&o["p99"])),
            f(&w["chunks_per_s"]),
        );
    }
    for (key, when) in [
        ("open_streams", "after the load runs"),
        ("open_streams_fresh", "fresh server"),
    ] {
        let h = &r[key];
        println!(
            "\nopen SSE streams ({when}): {}/{} open ({} failed) over {}, server RSS {} MiB (before {} MiB), {} fds; {} completed after release",
            h["opened"],
            h["target"],
            h["failed"],
            h["transport"].as_str().unwrap_or("?"),
            h["server_rss_kb"].as_u64().unwrap_or(0) / 1024,
            h["server_rss_before_kb"].as_u64().unwrap_or(0) / 1024,
            h["server_open_fds"],
            h["completed_after_release"],
        );
        if let Some(e) = h["first_error"].as_str() {
            println!("  first stream error: {e}");
        }
    }
    print_floor(r);
    let st = &r["startup_ms"];
    println!(
        "startup to healthy: median {:.1} ms (all: {})",
        f(&st["median"]),
        st["all"]
    );

    let l = &r["limits"];
    if l.get("redis").is_some() {
        println!(
            "\nper-user limits, send c=1, median of {} alternating rounds: Redis store vs in-memory store adds \
             {:.1} µs of daemon CPU per send (target < 20; rounds {}) and {:.3} ms p50 (target < 0.2; rounds {} µs); \
             redis-server itself used {:.1} µs per send",
            l["rounds"],
            f(&l["redis_added_server_cpu_us_per_send"]),
            l["redis_added_server_cpu_us_per_round"],
            f(&l["redis_added_p50_us"]) / 1e3,
            l["redis_added_p50_us_per_round"],
            f(&l["redis_server_cpu_us_per_send"]),
        );
    }
    println!(
        "\n| {:<44} | {:>30} | {:<6} |",
        "target", "measured", "result"
    );
    println!("|{}|{}|{}|", "-".repeat(46), "-".repeat(32), "-".repeat(8));
    for (name, measured, ok) in targets(r) {
        println!("| {name:<44} | {measured:>30} | {:<6} |", verdict(ok));
    }
    for s in r["send"].as_array().into_iter().flatten() {
        if s["concurrency"] == 64 {
            let w = &s["wombat"];
            let cpu = f(&w["server_cpu_us_per_request"]);
            println!(
                "\nat c=64 the server used {:.0} % of the CPU time spent (the rest: load generator and fakes); \
                 fakes alone reached {:.0} three-call sequences/s; at {cpu:.0} µs/send ({:.0} % of it in the kernel) \
                 the server alone could do ~{:.0} sends/s on {} cores",
                f(&w["server_cpu_share"]) * 100.0,
                f(&s["fakes_alone"]["rps"]),
                f(&w["server_cpu_system_share"]) * 100.0,
                if cpu > 0.0 {
                    1e6 * f(&r["machine"]["nproc"]) / cpu
                } else {
                    0.0
                },
                r["machine"]["nproc"],
            );
        }
    }
}

/// The daemon beside the floor: CPU per request and p50 per run, memory of
/// held streams, each with the daemon/floor ratio (nothing when the floor
/// was left out).
fn print_floor(r: &Value) {
    let mut runs = Vec::new();
    for (kind, key) in [("send", "send"), ("stream", "stream")] {
        match &r[key] {
            Value::Array(a) => runs.extend(a.iter().map(|s| (kind, s))),
            _ if r.get("only").and_then(Value::as_str) == Some(kind) => runs.push((kind, r)),
            _ => {}
        }
    }
    let runs: Vec<_> = runs
        .into_iter()
        .filter(|(_, s)| s.get("floor").is_some())
        .collect();
    let held = r.get("held_vs_floor");
    if runs.is_empty() && held.is_none() {
        return;
    }
    println!(
        "\nagainst the floor (xtask/floor: the daemon's upstream calls and nothing else; \
         ratio = daemon / floor; calls = upstream calls per request, daemon / floor):"
    );
    if !runs.is_empty() {
        println!(
            "| {:<6} | {:>3} | {:>13} | {:>13} | {:>7} | {:>13} | {:>13} | {:>7} | {:>11} |",
            "run",
            "c",
            "daemon CPU/req",
            "floor CPU/req",
            "ratio",
            "daemon p50 ms",
            "floor p50 ms",
            "ratio",
            "calls d / f"
        );
        println!(
            "|{}|",
            [8, 5, 16, 15, 9, 15, 15, 9, 13]
                .map(|w| "-".repeat(w))
                .join("|")
        );
    }
    for (kind, s) in runs {
        let (wombat, floor) = (&s["wombat"], &s["floor"]);
        let calls = |v: &Value| {
            let c = &v["upstream_calls_per_request"];
            f(&c["list_tasks"]) + f(&c["chat"]) + f(&c["messages"])
        };
        println!(
            "| {:<6} | {:>3} | {:>11.0} µs | {:>10.0} µs | {:>6.2}× | {:>13} | {:>13} | {:>6.2}× | {:>4.1} / {:>4.1} |",
            kind,
            s["concurrency"].to_string(),
            f(&wombat["server_cpu_us_per_request"]),
            f(&floor["server_cpu_us_per_request"]),
            f(&s["vs_floor"]["server_cpu"]),
            ms(f(&wombat["latency_us"]["p50"])),
            ms(f(&floor["latency_us"]["p50"])),
            f(&s["vs_floor"]["p50"]),
            calls(wombat),
            calls(floor),
        );
    }
    if let Some(h) = held {
        println!(
            "held streams ({} open on the daemon, {} on the floor): RSS {} MiB vs {} MiB ({:.2}×); \
             {:.1} KiB vs {:.1} KiB per stream ({:.2}×)",
            r["open_streams"]["opened"],
            r["open_streams_floor"]["opened"],
            h["wombat_rss_kb"].as_f64().unwrap_or(0.0) as u64 / 1024,
            h["floor_rss_kb"].as_f64().unwrap_or(0.0) as u64 / 1024,
            f(&h["rss"]),
            f(&h["wombat_bytes_per_stream"]) / 1024.0,
            f(&h["floor_bytes_per_stream"]) / 1024.0,
            f(&h["per_stream"]),
        );
    }
}

/// `(target, measured, pass)` for each target of the issue.
fn targets(r: &Value) -> Vec<(String, String, bool)> {
    let send = |c: u64| {
        r["send"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["concurrency"] == c))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (s1, s64) = (send(1), send(64));
    let cpu = f(&s64["wombat"]["server_cpu_us_per_request"]);
    let add50 = f(&s1["overhead_us"]["p50"]);
    let add99 = f(&s1["overhead_us"]["p99"]);
    let rps = f(&s64["wombat"]["rps"]);
    // The targets are in MB (10^6 bytes); /proc reports KiB. Compare in MB and
    // show MiB beside it, so the two units are never mixed up.
    let mb = |kib: &Value| kib.as_u64().unwrap_or(0) as f64 * 1024.0 / 1e6;
    let both = |megabytes: f64| {
        let mib = megabytes * 1e6 / (1024.0 * 1024.0);
        format!("{megabytes:.1} MB ({mib:.1} MiB)")
    };
    let rss_idle = mb(&r["rss_idle_kb"]);
    let rss64 = mb(&s64["wombat"]["server_rss_peak_kb"]);
    let streams = |key: &str, when: &str| {
        let h = &r[key];
        let opened = h["opened"].as_u64().unwrap_or(0);
        let rss = mb(&h["server_rss_kb"]);
        (
            format!("{} open streams in ≤ 300 MB ({when})", h["target"]),
            format!("{opened} in {}", both(rss)),
            opened > 0 && Some(opened) == h["target"].as_u64() && rss <= 300.0,
        )
    };
    let stream1 = r["stream"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["concurrency"] == 1))
        .cloned()
        .unwrap_or(Value::Null);
    let ttfc = f(&stream1["ttfc_overhead_us"]["p50"]);
    let startup = f(&r["startup_ms"]["median"]);
    vec![
        (
            "CPU per send (c=64) ≤ 100 µs".into(),
            format!("{cpu:.0} µs"),
            cpu <= 100.0,
        ),
        (
            "added latency c=1 p50 ≤ 0.3 ms".into(),
            format!("{} ms", ms(add50)),
            add50 <= 300.0,
        ),
        (
            "added latency c=1 p99 ≤ 1 ms".into(),
            format!("{} ms", ms(add99)),
            add99 <= 1000.0,
        ),
        (
            "sends/s at c=64 ≥ 8,000".into(),
            format!("{rps:.0}/s"),
            rps >= 8000.0,
        ),
        ("RSS idle ≤ 20 MB".into(), both(rss_idle), rss_idle <= 20.0),
        ("RSS under c=64 ≤ 64 MB".into(), both(rss64), rss64 <= 64.0),
        streams("open_streams_fresh", "fresh"),
        streams("open_streams", "after load"),
        (
            "first chunk adds ≤ 1 ms (c=1, p50)".into(),
            format!("{} ms", ms(ttfc)),
            ttfc <= 1000.0,
        ),
        (
            "startup to healthy ≤ 100 ms (median)".into(),
            format!("{startup:.1} ms"),
            startup <= 100.0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_subtracts_percentiles() {
        let w = json!({"latency_us": {"p50": 900.0, "p90": 1500.0, "p99": 3000.0}});
        let fk = json!({"latency_us": {"p50": 600.0, "p90": 1000.0, "p99": 2000.0}});
        assert_eq!(
            overhead(&w, &fk, "latency_us"),
            json!({"p50": 300.0, "p90": 500.0, "p99": 1000.0})
        );
    }

    #[test]
    fn runner_options_are_parsed_and_checked() {
        let args: Vec<String> = ["--server", "/s", "--out", "/o", "--root", "/r", "--quick"]
            .map(String::from)
            .to_vec();
        let cfg = Config::parse(&args).expect("valid");
        assert!(cfg.quick);
        assert_eq!(cfg.server, PathBuf::from("/s"));
        assert_eq!(cfg.open_streams(), 1_000);
        assert!(Config::parse(&["--bogus".to_owned()]).is_err());
        assert!(Config::parse(&[]).is_err());
        assert_eq!(cfg.floor, None);
        let with_floor: Vec<String> = [
            "--server", "/s", "--out", "/o", "--root", "/r", "--floor", "/f",
        ]
        .map(String::from)
        .to_vec();
        let cfg = Config::parse(&with_floor).expect("valid");
        assert_eq!(cfg.floor, Some(PathBuf::from("/f")));
    }

    #[test]
    fn floor_ratios_are_daemon_over_floor() {
        let w = json!({"server_cpu_us_per_request": 120.0, "latency_us": {"p50": 900.0}});
        let fl = json!({"server_cpu_us_per_request": 60.0, "latency_us": {"p50": 600.0}});
        assert_eq!(vs_floor(&w, &fl), json!({"server_cpu": 2.0, "p50": 1.5}));
        let zero = json!({"server_cpu_us_per_request": 0.0, "latency_us": {"p50": 0.0}});
        assert!(f(&vs_floor(&w, &zero)["server_cpu"]).is_nan());
    }

    #[test]
    fn upstream_calls_are_per_successful_request() {
        let v = upstream_calls([10, 20, 30], [10, 120, 130], 100);
        assert_eq!(v, json!({"list_tasks": 0.0, "chat": 1.0, "messages": 1.0}));
        assert!(f(&upstream_calls([0; 3], [1; 3], 0)["chat"]).is_nan());
    }

    #[test]
    fn held_streams_compare_growth_per_stream() {
        let w = json!({"opened": 1000, "server_rss_before_kb": 10_000, "server_rss_kb": 40_000});
        let fl = json!({"opened": 1000, "server_rss_before_kb": 5_000, "server_rss_kb": 25_000});
        let h = held_vs_floor(&w, &fl);
        assert_eq!(f(&h["wombat_bytes_per_stream"]), 30_000.0 * 1024.0 / 1000.0);
        assert_eq!(f(&h["per_stream"]), 1.5);
        assert_eq!(f(&h["rss"]), 1.6);
    }
}
