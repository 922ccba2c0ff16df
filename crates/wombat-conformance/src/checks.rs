//! The checks: raw HTTP probes of a backend (so malformed and forged tokens
//! can be sent) judged against every MUST of `CONTROL_PLANE.md`. Rendering
//! results is `report`'s job; this module only probes and judges.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use wombat_controlplane::jwt::{self, AgentClaims, JwtConfig};
use wombat_core::controlplane::{CONTRACT_VERSION, Features};

use crate::report::{CheckResult, Outcome, Report};

/// Most pages the runner follows when walking a task list.
const MAX_PAGES: usize = 200;
/// Role claimed by the runner's tokens.
const ROLE: &str = "conformance";

/// How the runner authenticates.
#[derive(Clone)]
pub enum AuthInput {
    /// A ready-made agent token (`AGENT_TOKEN`): one tenant only, so the
    /// isolation and expiry checks are skipped.
    Token(String),
    /// The shared secret (`AGENT_JWT_SECRET` + algorithm): the runner mints
    /// tokens for two fresh tenants.
    Secret(JwtConfig),
}

impl fmt::Debug for AuthInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::Secret(cfg) => f.debug_tuple("Secret").field(cfg).finish(),
        }
    }
}

/// Input of a run.
#[derive(Clone)]
pub struct ConformanceConfig {
    /// Backend base URL (`CONTROL_PLANE_URL`).
    pub base_url: String,
    /// Token or secret.
    pub auth: AuthInput,
    /// `INTERNAL_TOKEN`, needed to probe an advertised dispatch feature.
    pub internal_token: Option<String>,
    /// Timeout of each request.
    pub request_timeout: Duration,
}

impl ConformanceConfig {
    /// A config with a 10 s request timeout and no internal token.
    pub fn new(base_url: impl Into<String>, auth: AuthInput) -> Self {
        Self {
            base_url: base_url.into(),
            auth,
            internal_token: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for ConformanceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConformanceConfig")
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .field(
                "internal_token",
                &self.internal_token.as_ref().map(|_| "<redacted>"),
            )
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The verdict and message of one check.
type Verdict = (Outcome, String);

fn pass(msg: impl Into<String>) -> Verdict {
    (Outcome::Pass, msg.into())
}

fn fail(msg: impl Into<String>) -> Verdict {
    (Outcome::Fail, msg.into())
}

fn skip(msg: impl Into<String>) -> Verdict {
    (Outcome::Skip, msg.into())
}

/// A response as the runner saw it.
struct Probe {
    status: u16,
    content_type: String,
    body: Option<Value>,
    text: String,
}

impl Probe {
    fn id(&self) -> Option<String> {
        match self.body.as_ref()?.get("id")? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Status plus the start of the body, for messages.
    fn describe(&self) -> String {
        let snippet: String = self.text.chars().take(160).collect();
        if snippet.is_empty() {
            format!("{}", self.status)
        } else {
            format!("{} {snippet}", self.status)
        }
    }

    fn is_create_ok(&self) -> bool {
        self.status == 200 || self.status == 201
    }
}

enum Body {
    None,
    Json(Value),
    Raw(&'static str),
}

/// One recorded error response, for the error-body check.
struct ErrorSeen {
    what: String,
    status: u16,
    has_error_text: bool,
}

struct Runner {
    http: reqwest::Client,
    base: String,
    run: String,
    secret: Option<JwtConfig>,
    token_a: String,
    token_b: Option<String>,
    user_a: Option<String>,
    internal_token: Option<String>,
    features: Features,
    /// Whether `capabilities` answered; optional checks say so when skipped.
    features_known: bool,
    task_id: Option<String>,
    task_body: Value,
    /// Tool requests created by the tool-request checks, in order.
    tool_requests: Vec<String>,
    errors_seen: Vec<ErrorSeen>,
    results: Vec<CheckResult>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs every check against the backend and returns the report. Only a
/// broken config is an error; an unreachable backend yields failed checks.
pub async fn run(config: &ConformanceConfig) -> crate::Result<Report> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now().to_string();
    let base = config.base_url.trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(crate::Error::Config(format!(
            "CONTROL_PLANE_URL must be an http(s) URL, got {:?}",
            config.base_url
        )));
    }
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| crate::Error::Config(format!("cannot build HTTP client: {e}")))?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let now = unix_now();
    let (secret, token_a, token_b, user_a, auth_mode) = match &config.auth {
        AuthInput::Token(token) => {
            let user = jwt::decode_unverified(token).ok().map(|c| c.user_id);
            (None, token.clone(), None, user, "token")
        }
        AuthInput::Secret(cfg) => {
            let (ua, ub) = (
                format!("conformance-{run}-a"),
                format!("conformance-{run}-b"),
            );
            let mint = |u: &str| {
                jwt::mint(cfg, u, ROLE, None, now)
                    .map_err(|e| crate::Error::Config(format!("cannot mint a token: {e}")))
            };
            (
                Some(cfg.clone()),
                mint(&ua)?,
                Some(mint(&ub)?),
                Some(ua),
                "secret",
            )
        }
    };
    let task_body = json!({
        "title": format!("conformance {run}"),
        "description": "Created by the Wombat conformance runner",
        "idempotency_key": format!("conformance-{run}-task"),
    });
    let mut r = Runner {
        http,
        base: base.clone(),
        run,
        secret,
        token_a,
        token_b,
        user_a,
        internal_token: config.internal_token.clone().filter(|t| !t.is_empty()),
        features: Features::default(),
        features_known: false,
        task_id: None,
        task_body,
        tool_requests: Vec::new(),
        errors_seen: Vec::new(),
        results: Vec::new(),
    };
    macro_rules! check {
        ($name:literal, $method:ident) => {{
            let t = Instant::now();
            let (outcome, message) = r.$method().await;
            r.results.push(CheckResult {
                name: $name.to_owned(),
                outcome,
                message,
                duration_ms: u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }};
    }
    check!("capabilities", capabilities);
    check!("create_task", create_task);
    check!("create_task_idempotent", create_task_again);
    check!("list_contains_task", list_contains_task);
    check!("post_message", post_message);
    check!("post_document", post_document);
    check!("auth_missing_token", auth_missing);
    check!("auth_malformed_token", auth_malformed);
    check!("auth_wrong_signature", auth_wrong_signature);
    check!("auth_expired_token", auth_expired);
    check!("tenant_isolation_read", isolation_read);
    check!("tenant_isolation_write", isolation_write);
    check!("idempotency_conflict", idempotency_conflict);
    check!("missing_fields_400", missing_fields);
    check!("malformed_json_400", malformed_json);
    check!("pagination", pagination);
    check!("heartbeat", heartbeat);
    check!("standup", standup);
    check!("notifications_dispatch", dispatch);
    check!("events_sse", events_sse);
    check!("tool_requests", tool_requests);
    check!("tool_requests_idempotent", tool_requests_idempotent);
    check!("tool_requests_isolation", tool_requests_isolation);
    check!("tool_requests_list", tool_requests_list);
    check!("tool_requests_resolve", tool_requests_resolve);
    check!("tool_requests_consume", tool_requests_consume);
    check!("task_title_filter", task_title_filter);
    check!("error_bodies", error_bodies);
    Ok(Report {
        base_url: base,
        auth_mode: auth_mode.to_owned(),
        started_at,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        checks: r.results,
    })
}

impl Runner {
    /// Sends one request to `/api/mission-control/<path>`.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> Result<Probe, String> {
        self.call_with(method, path, token, None, body).await
    }

    async fn call_with(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        internal: Option<&str>,
        body: Body,
    ) -> Result<Probe, String> {
        let url = format!("{}/api/mission-control/{path}", self.base);
        let what = format!("{method} {path}");
        let mut req = self.http.request(method, url);
        if let Some(token) = token {
            req = req.header("X-Agent-Token", token);
        }
        if let Some(internal) = internal {
            req = req.header("X-Internal-Token", internal);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Raw(s) => req.header("Content-Type", "application/json").body(s),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{what}: request failed: {e}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if content_type.starts_with("text/event-stream") {
            // An SSE stream never ends; the headers are all we judge.
            return Ok(Probe {
                status,
                content_type,
                body: None,
                text: String::new(),
            });
        }
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{what}: reading the body failed: {e}"))?;
        let body = serde_json::from_str::<Value>(&text).ok();
        if status >= 400 {
            let has_error_text = body
                .as_ref()
                .and_then(|b| b.get("error"))
                .is_some_and(|e| e.as_str().is_some_and(|s| !s.is_empty()));
            self.errors_seen.push(ErrorSeen {
                what,
                status,
                has_error_text,
            });
        }
        Ok(Probe {
            status,
            content_type,
            body,
            text,
        })
    }

    async fn capabilities(&mut self) -> Verdict {
        let token = self.token_a.clone();
        let p = match self
            .call(Method::GET, "capabilities", Some(&token), Body::None)
            .await
        {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        if p.status != 200 {
            return fail(format!("expected 200, got {}", p.describe()));
        }
        let Some(body) = p.body else {
            return fail("body is not JSON");
        };
        let version = body["contract_version"].as_str().unwrap_or_default();
        if version != CONTRACT_VERSION {
            return fail(format!(
                "contract_version is {:?}, expected \"v1\"",
                body["contract_version"]
            ));
        }
        match serde_json::from_value::<Features>(body["features"].clone()) {
            Ok(f) => {
                self.features = f;
                self.features_known = true;
            }
            Err(e) => return fail(format!("features is not an object of booleans: {e}")),
        }
        let f = self.features;
        let optional: Vec<&str> = [
            ("notifications_dispatch", f.notifications_dispatch),
            ("events_sse", f.events_sse),
            ("heartbeat", f.heartbeat),
            ("standup", f.standup),
            ("tool_requests", f.tool_requests),
            ("tool_requests_consume", f.tool_requests_consume),
            ("task_title_filter", f.task_title_filter),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
        if !(f.tasks && f.messages && f.documents) {
            return fail("features.tasks, messages and documents must be true");
        }
        pass(format!(
            "contract v1; optional features: {}",
            if optional.is_empty() {
                "none".to_owned()
            } else {
                optional.join(", ")
            }
        ))
    }

    async fn create_task(&mut self) -> Verdict {
        let (token, body) = (self.token_a.clone(), self.task_body.clone());
        match self
            .call(Method::POST, "tasks", Some(&token), Body::Json(body))
            .await
        {
            Ok(p) if p.is_create_ok() => match p.id() {
                Some(id) => {
                    self.task_id = Some(id.clone());
                    pass(format!("created task {id} ({})", p.status))
                }
                None => fail(format!("no id in the response: {}", p.describe())),
            },
            Ok(p) => fail(format!("expected 200 or 201, got {}", p.describe())),
            Err(e) => fail(e),
        }
    }

    async fn create_task_again(&mut self) -> Verdict {
        let Some(first) = self.task_id.clone() else {
            return skip("needs create_task");
        };
        let (token, body) = (self.token_a.clone(), self.task_body.clone());
        match self
            .call(Method::POST, "tasks", Some(&token), Body::Json(body))
            .await
        {
            Ok(p) if p.is_create_ok() => match p.id() {
                Some(id) if id == first => {
                    pass(format!("same key and payload returned task {id} again"))
                }
                Some(id) => fail(format!(
                    "same key and payload created a second task {id} (first {first})"
                )),
                None => fail(format!("no id in the response: {}", p.describe())),
            },
            Ok(p) => fail(format!("expected 200 or 201, got {}", p.describe())),
            Err(e) => fail(e),
        }
    }

    /// Walks `GET tasks` with `token`; `Ok((ids, pages))`.
    async fn all_task_ids(
        &mut self,
        token: &str,
        limit: Option<u32>,
    ) -> Result<(Vec<String>, usize), String> {
        let (items, pages) = self.all_items("tasks", token, limit).await?;
        Ok((items.into_iter().map(|(id, _)| id).collect(), pages))
    }

    /// Walks the list at `base` (a path, possibly with a query) with
    /// `token`, following `next_cursor`; `Ok(((id, item) of every item,
    /// pages))`.
    async fn all_items(
        &mut self,
        base: &str,
        token: &str,
        limit: Option<u32>,
    ) -> Result<(Vec<(String, Value)>, usize), String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let mut path = String::from(base);
            let mut sep = if base.contains('?') { '&' } else { '?' };
            if let Some(limit) = limit {
                path.push_str(&format!("{sep}limit={limit}"));
                sep = '&';
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("{sep}cursor={}", encode_query(c)));
            }
            let p = self
                .call(Method::GET, &path, Some(token), Body::None)
                .await?;
            if p.status != 200 {
                return Err(format!("GET {path}: expected 200, got {}", p.describe()));
            }
            let body = p.body.unwrap_or_default();
            let Some(items) = body["items"].as_array() else {
                return Err(format!("GET {path}: no items array"));
            };
            if let Some(limit) = limit
                && items.len() > limit as usize
            {
                return Err(format!(
                    "GET {path}: {} items for limit={limit}",
                    items.len()
                ));
            }
            for item in items {
                match &item["id"] {
                    Value::String(s) => out.push((s.clone(), item.clone())),
                    Value::Number(n) => out.push((n.to_string(), item.clone())),
                    _ => return Err(format!("GET {path}: an item has no id")),
                }
            }
            match body.get("next_cursor") {
                None | Some(Value::Null) => return Ok((out, page)),
                Some(Value::String(next)) if next.is_empty() => return Ok((out, page)),
                Some(Value::String(next)) => {
                    if cursor.as_deref() == Some(next.as_str()) {
                        return Err(format!("GET {path}: next_cursor repeats the cursor"));
                    }
                    cursor = Some(next.clone());
                }
                Some(other) => {
                    return Err(format!(
                        "GET {path}: next_cursor is {other}, expected a string or null"
                    ));
                }
            }
        }
        Err(format!("{base} list did not end within {MAX_PAGES} pages"))
    }

    async fn list_contains_task(&mut self) -> Verdict {
        let Some(id) = self.task_id.clone() else {
            return skip("needs create_task");
        };
        let token = self.token_a.clone();
        match self.all_task_ids(&token, None).await {
            Ok((ids, pages)) if ids.contains(&id) => pass(format!(
                "task {id} listed ({} tasks, {pages} page(s))",
                ids.len()
            )),
            Ok((ids, pages)) => fail(format!(
                "task {id} missing from {} listed tasks ({pages} page(s))",
                ids.len()
            )),
            Err(e) => fail(e),
        }
    }

    async fn post_message(&mut self) -> Verdict {
        let Some(task_id) = self.task_id.clone() else {
            return skip("needs create_task");
        };
        let body = json!({
            "task_id": task_id,
            "content": "Conformance check message",
            "actor_type": "agent",
            "agent_role": ROLE,
            "idempotency_key": format!("conformance-{}-message", self.run),
        });
        let token = self.token_a.clone();
        match self
            .call(Method::POST, "messages", Some(&token), Body::Json(body))
            .await
        {
            Ok(p) if p.is_create_ok() => match p.id() {
                Some(id) => pass(format!("message {id} ({})", p.status)),
                None => fail(format!("no id in the response: {}", p.describe())),
            },
            Ok(p) => fail(format!("expected 200 or 201, got {}", p.describe())),
            Err(e) => fail(e),
        }
    }

    async fn post_document(&mut self) -> Verdict {
        let Some(task_id) = self.task_id.clone() else {
            return skip("needs create_task");
        };
        let body = json!({
            "title": "Conformance plan",
            "content": "# Plan\n\n1. Check the contract.",
            "doc_type": "plan",
            "task_id": task_id,
            "idempotency_key": format!("conformance-{}-document", self.run),
        });
        let token = self.token_a.clone();
        match self
            .call(Method::POST, "documents", Some(&token), Body::Json(body))
            .await
        {
            Ok(p) if p.is_create_ok() => match p.id() {
                Some(id) => pass(format!("document {id} ({})", p.status)),
                None => fail(format!("no id in the response: {}", p.describe())),
            },
            Ok(p) => fail(format!("expected 200 or 201, got {}", p.describe())),
            Err(e) => fail(e),
        }
    }

    /// Sends a read and a write with `token` (or none); both must be 401.
    async fn expect_401(&mut self, token: Option<&str>, label: &str) -> Verdict {
        let write = json!({
            "title": format!("conformance {} must be refused", self.run),
            "idempotency_key": format!("conformance-{}-refused-{}", self.run, uuid::Uuid::new_v4().simple()),
        });
        let mut seen = Vec::new();
        for (method, body) in [(Method::GET, Body::None), (Method::POST, Body::Json(write))] {
            let m = method.to_string();
            match self.call(method, "tasks", token, body).await {
                Ok(p) if p.status == 401 => seen.push(format!("{m} tasks → 401")),
                Ok(p) => {
                    return fail(format!(
                        "{label}: {m} tasks answered {}, expected 401",
                        p.describe()
                    ));
                }
                Err(e) => return fail(e),
            }
        }
        pass(seen.join(", "))
    }

    async fn auth_missing(&mut self) -> Verdict {
        self.expect_401(None, "no X-Agent-Token").await
    }

    async fn auth_malformed(&mut self) -> Verdict {
        self.expect_401(Some("not-a-jwt"), "malformed token").await
    }

    async fn auth_wrong_signature(&mut self) -> Verdict {
        let algorithm = self
            .secret
            .as_ref()
            .map(JwtConfig::algorithm)
            .unwrap_or_default();
        let forged_secret = format!("wrong-{}", uuid::Uuid::new_v4().simple());
        let user = self
            .user_a
            .clone()
            .unwrap_or_else(|| "conformance-probe".into());
        let token = JwtConfig::new(forged_secret, algorithm)
            .ok()
            .and_then(|cfg| jwt::mint(&cfg, &user, ROLE, None, unix_now()).ok());
        match token {
            Some(t) => {
                self.expect_401(Some(&t), "token signed with another secret")
                    .await
            }
            None => fail("could not mint a probe token"),
        }
    }

    async fn auth_expired(&mut self) -> Verdict {
        let (Some(cfg), Some(user)) = (self.secret.clone(), self.user_a.clone()) else {
            return skip(
                "needs AGENT_JWT_SECRET to mint an expired token (only AGENT_TOKEN given)",
            );
        };
        let now = unix_now();
        let mut claims = AgentClaims::new(&user, ROLE, None, now.saturating_sub(3 * 3600));
        claims.exp = now.saturating_sub(3600);
        match jwt::mint_claims(&cfg, &claims) {
            Ok(t) => self.expect_401(Some(&t), "token expired an hour ago").await,
            Err(e) => fail(format!("could not mint a probe token: {e}")),
        }
    }

    async fn isolation_read(&mut self) -> Verdict {
        let Some(token_b) = self.token_b.clone() else {
            return skip(
                "needs AGENT_JWT_SECRET to act as a second tenant (only AGENT_TOKEN given)",
            );
        };
        let Some(id) = self.task_id.clone() else {
            return skip("needs create_task");
        };
        match self.all_task_ids(&token_b, None).await {
            Ok((ids, _)) if ids.contains(&id) => {
                fail(format!("tenant B sees tenant A's task {id} in its list"))
            }
            Ok((ids, _)) => pass(format!(
                "tenant B lists {} task(s), none of tenant A's",
                ids.len()
            )),
            Err(e) => fail(format!("tenant B cannot list its own tasks: {e}")),
        }
    }

    async fn isolation_write(&mut self) -> Verdict {
        let Some(token_b) = self.token_b.clone() else {
            return skip(
                "needs AGENT_JWT_SECRET to act as a second tenant (only AGENT_TOKEN given)",
            );
        };
        let Some(id) = self.task_id.clone() else {
            return skip("needs create_task");
        };
        let run = self.run.clone();
        let probes = [
            (
                "messages",
                json!({"task_id": id, "content": "cross-tenant write", "idempotency_key": format!("conformance-{run}-xmsg")}),
            ),
            (
                "documents",
                json!({"title": "cross-tenant", "content": "x", "task_id": id, "idempotency_key": format!("conformance-{run}-xdoc")}),
            ),
        ];
        let mut seen = Vec::new();
        for (path, body) in probes {
            match self
                .call(Method::POST, path, Some(&token_b), Body::Json(body))
                .await
            {
                Ok(p) if p.status == 403 || p.status == 404 => {
                    seen.push(format!("POST {path} → {}", p.status))
                }
                Ok(p) if p.status < 300 => {
                    return fail(format!(
                        "tenant B wrote to tenant A's task {id} via POST {path} ({})",
                        p.status
                    ));
                }
                Ok(p) => {
                    return fail(format!(
                        "POST {path} to another tenant's task answered {}, expected 403 or 404",
                        p.describe()
                    ));
                }
                Err(e) => return fail(e),
            }
        }
        // Idempotency keys are per tenant: B reusing A's key must not get A's task.
        let body = self.task_body.clone();
        match self
            .call(Method::POST, "tasks", Some(&token_b), Body::Json(body))
            .await
        {
            Ok(p) if p.is_create_ok() && p.id().as_deref() == Some(id.as_str()) => {
                return fail(format!(
                    "tenant B reusing tenant A's idempotency key got tenant A's task {id}"
                ));
            }
            Ok(p) if p.status >= 500 => {
                return fail(format!(
                    "tenant B reusing a key of tenant A: {}",
                    p.describe()
                ));
            }
            Ok(p) => seen.push(format!("B reusing A's key → {} (not A's task)", p.status)),
            Err(e) => return fail(e),
        }
        pass(seen.join(", "))
    }

    async fn idempotency_conflict(&mut self) -> Verdict {
        if self.task_id.is_none() {
            return skip("needs create_task");
        }
        let mut body = self.task_body.clone();
        body["title"] = json!(format!("conformance {} (different payload)", self.run));
        let token = self.token_a.clone();
        match self
            .call(Method::POST, "tasks", Some(&token), Body::Json(body))
            .await
        {
            Ok(p) if p.status == 409 => pass("same key with a different payload → 409"),
            Ok(p) => fail(format!(
                "same key with a different payload answered {}, expected 409",
                p.describe()
            )),
            Err(e) => fail(e),
        }
    }

    async fn missing_fields(&mut self) -> Verdict {
        let task_id = self.task_id.clone().unwrap_or_else(|| "missing".into());
        let probes = [
            ("tasks", json!({"description": "no title"})),
            ("messages", json!({"task_id": task_id})),
            (
                "documents",
                json!({"task_id": task_id, "content": "no title"}),
            ),
        ];
        let token = self.token_a.clone();
        let mut seen = Vec::new();
        for (path, body) in probes {
            match self
                .call(Method::POST, path, Some(&token), Body::Json(body))
                .await
            {
                Ok(p) if p.status == 400 => seen.push(format!("POST {path} → 400")),
                Ok(p) => {
                    return fail(format!(
                        "POST {path} without a required field answered {}, expected 400",
                        p.describe()
                    ));
                }
                Err(e) => return fail(e),
            }
        }
        pass(seen.join(", "))
    }

    async fn malformed_json(&mut self) -> Verdict {
        let token = self.token_a.clone();
        match self
            .call(
                Method::POST,
                "tasks",
                Some(&token),
                Body::Raw("{\"title\": "),
            )
            .await
        {
            Ok(p) if p.status == 400 => pass("POST tasks with broken JSON → 400"),
            Ok(p) => fail(format!(
                "broken JSON answered {}, expected 400",
                p.describe()
            )),
            Err(e) => fail(e),
        }
    }

    async fn pagination(&mut self) -> Verdict {
        let token = self.token_a.clone();
        let mut created = Vec::new();
        for i in 0..3 {
            let body = json!({
                "title": format!("conformance {} page {i}", self.run),
                "idempotency_key": format!("conformance-{}-page-{i}", self.run),
            });
            match self
                .call(Method::POST, "tasks", Some(&token), Body::Json(body))
                .await
            {
                Ok(p) if p.is_create_ok() => match p.id() {
                    Some(id) => created.push(id),
                    None => return fail(format!("no id in the response: {}", p.describe())),
                },
                Ok(p) => return fail(format!("creating tasks for the probe: {}", p.describe())),
                Err(e) => return fail(e),
            }
        }
        let first = match self
            .call(Method::GET, "tasks?limit=2", Some(&token), Body::None)
            .await
        {
            Ok(p) if p.status == 200 => p.body.unwrap_or_default(),
            Ok(p) => return fail(format!("GET tasks?limit=2 answered {}", p.describe())),
            Err(e) => return fail(e),
        };
        let count = first["items"].as_array().map_or(0, Vec::len);
        let has_cursor = first["next_cursor"].as_str().is_some_and(|c| !c.is_empty());
        if count > 2 && !has_cursor {
            return skip(format!(
                "limit is not honoured ({count} items for limit=2) and no next_cursor: pagination not offered"
            ));
        }
        match self.all_task_ids(&token, Some(2)).await {
            Ok((ids, pages)) => {
                let mut unique = ids.clone();
                unique.sort();
                unique.dedup();
                if unique.len() != ids.len() {
                    return fail("a task appeared on two pages");
                }
                if let Some(missing) = created.iter().find(|id| !ids.contains(id)) {
                    return fail(format!(
                        "task {missing} never appeared while following next_cursor"
                    ));
                }
                pass(format!(
                    "limit=2 honoured; {} tasks over {pages} pages via next_cursor",
                    ids.len()
                ))
            }
            Err(e) => fail(e),
        }
    }

    async fn heartbeat(&mut self) -> Verdict {
        if !self.features.heartbeat {
            return self.not_advertised();
        }
        let Some(user) = self.user_a.clone() else {
            return skip("cannot read user_id from AGENT_TOKEN");
        };
        self.expect_json_post("heartbeat", json!({ "user_id": user }))
            .await
    }

    async fn standup(&mut self) -> Verdict {
        if !self.features.standup {
            return self.not_advertised();
        }
        let Some(user) = self.user_a.clone() else {
            return skip("cannot read user_id from AGENT_TOKEN");
        };
        self.expect_json_post("standup", json!({ "user_id": user, "timezone": "UTC" }))
            .await
    }

    async fn expect_json_post(&mut self, path: &str, body: Value) -> Verdict {
        let token = self.token_a.clone();
        match self
            .call(Method::POST, path, Some(&token), Body::Json(body))
            .await
        {
            Ok(p)
                if (200..300).contains(&p.status)
                    && p.body.as_ref().is_some_and(Value::is_object) =>
            {
                pass(format!("POST {path} → {} with a JSON object", p.status))
            }
            Ok(p) => fail(format!(
                "POST {path} answered {}, expected 2xx with a JSON object",
                p.describe()
            )),
            Err(e) => fail(e),
        }
    }

    async fn dispatch(&mut self) -> Verdict {
        if !self.features.notifications_dispatch {
            return self.not_advertised();
        }
        let Some(internal) = self.internal_token.clone() else {
            return skip("advertised, but INTERNAL_TOKEN was not given to the runner");
        };
        let path = "dispatch/undelivered?limit_users=1&limit_notifications=1";
        match self
            .call_with(Method::GET, path, None, None, Body::None)
            .await
        {
            Ok(p) if p.status == 401 || p.status == 403 => {}
            Ok(p) => {
                return fail(format!(
                    "GET {path} without X-Internal-Token answered {}, expected 401 or 403",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        let p = match self
            .call_with(Method::GET, path, None, Some(&internal), Body::None)
            .await
        {
            Ok(p) if p.status == 200 => p,
            Ok(p) => {
                return fail(format!(
                    "GET {path} answered {}, expected 200",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        };
        let Some(deliveries) = p.body.as_ref().and_then(|b| b["deliveries"].as_array()) else {
            return fail("no deliveries array in the response");
        };
        for d in deliveries {
            for field in ["notification_id", "user_id", "session_key", "content"] {
                if d.get(field).is_none_or(Value::is_null) {
                    return fail(format!("a delivery lacks {field}"));
                }
            }
        }
        pass(format!(
            "undelivered → {} deliveries; refused without the internal token",
            deliveries.len()
        ))
    }

    async fn events_sse(&mut self) -> Verdict {
        if !self.features.events_sse {
            return self.not_advertised();
        }
        let token = self.token_a.clone();
        match self
            .call(Method::GET, "events", Some(&token), Body::None)
            .await
        {
            Ok(p) if p.status == 200 && p.content_type.starts_with("text/event-stream") => {
                pass("GET events → 200 text/event-stream")
            }
            Ok(p) => fail(format!(
                "GET events answered {} ({}), expected 200 text/event-stream",
                p.status, p.content_type
            )),
            Err(e) => fail(e),
        }
    }

    /// The create body of the runner's tool request number `n`.
    fn tool_request_body(&self, task_id: &str, n: u32) -> Value {
        json!({
            "task_id": task_id,
            "tool": "conformance__probe",
            "arguments": {"n": n},
            "call_id": format!("conformance-{}-call-{n}", self.run),
            "agent_role": ROLE,
            "idempotency_key": format!("conformance-{}-tool-request-{n}", self.run),
        })
    }

    /// Why a tool-request check cannot run: not advertised, no task, or
    /// (with `needs_request`) no tool request from the first check.
    fn tool_request_gate(&self, needs_request: bool) -> Option<Verdict> {
        if !self.features.tool_requests {
            return Some(self.not_advertised());
        }
        if self.task_id.is_none() {
            return Some(skip("needs create_task"));
        }
        if needs_request && self.tool_requests.is_empty() {
            return Some(skip("needs tool_requests"));
        }
        None
    }

    /// `POST tool-requests` (expects 200/201 with an id); `Ok((id, body))`.
    async fn create_tool_request(
        &mut self,
        token: &str,
        body: Value,
    ) -> Result<(String, Value), String> {
        let p = self
            .call(Method::POST, "tool-requests", Some(token), Body::Json(body))
            .await?;
        if !p.is_create_ok() {
            return Err(format!(
                "POST tool-requests answered {}, expected 200 or 201",
                p.describe()
            ));
        }
        let id = p
            .id()
            .ok_or_else(|| format!("POST tool-requests: no id in {}", p.describe()))?;
        Ok((id, p.body.unwrap_or_default()))
    }

    /// `GET tool-requests/{id}` as `token`.
    async fn get_tool_request(&mut self, token: &str, id: &str) -> Result<Probe, String> {
        let path = format!("tool-requests/{}", encode_query(id));
        self.call(Method::GET, &path, Some(token), Body::None).await
    }

    /// `PATCH tool-requests/{id}` with `body` as `token`.
    async fn patch_tool_request(
        &mut self,
        token: &str,
        id: &str,
        body: Value,
    ) -> Result<Probe, String> {
        let path = format!("tool-requests/{}", encode_query(id));
        self.call(Method::PATCH, &path, Some(token), Body::Json(body))
            .await
    }

    /// If advertised: create a tool request (pending, fields echoed) and
    /// read it back by id.
    async fn tool_requests(&mut self) -> Verdict {
        if let Some(v) = self.tool_request_gate(false) {
            return v;
        }
        let task_id = self.task_id.clone().unwrap_or_default();
        let token = self.token_a.clone();
        let body = self.tool_request_body(&task_id, 0);
        let (id, created) = match self.create_tool_request(&token, body.clone()).await {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        if created["status"] != "pending" {
            return fail(format!(
                "a new tool request has status {}, expected \"pending\"",
                created["status"]
            ));
        }
        for field in ["tool", "call_id", "arguments"] {
            if created[field] != body[field] {
                return fail(format!(
                    "POST tool-requests answered {field} {}, sent {}",
                    created[field], body[field]
                ));
            }
        }
        match self.get_tool_request(&token, &id).await {
            Ok(p) if p.status == 200 && p.id().as_deref() == Some(id.as_str()) => {
                let status = p.body.as_ref().map(|b| b["status"].clone());
                if status != Some(json!("pending")) {
                    return fail(format!(
                        "GET tool-requests/{id} has status {}, expected \"pending\"",
                        status.unwrap_or_default()
                    ));
                }
            }
            Ok(p) => {
                return fail(format!(
                    "GET tool-requests/{id} answered {}, expected 200 with that id",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        self.tool_requests.push(id.clone());
        pass(format!(
            "created tool request {id} (pending) and read it back"
        ))
    }

    /// Same key and payload → the same request; same key, other payload → 409.
    async fn tool_requests_idempotent(&mut self) -> Verdict {
        if let Some(v) = self.tool_request_gate(true) {
            return v;
        }
        let (task_id, first) = (
            self.task_id.clone().unwrap_or_default(),
            self.tool_requests[0].clone(),
        );
        let token = self.token_a.clone();
        let body = self.tool_request_body(&task_id, 0);
        match self.create_tool_request(&token, body.clone()).await {
            Ok((id, _)) if id == first => {}
            Ok((id, _)) => {
                return fail(format!(
                    "same key and payload created a second tool request {id} (first {first})"
                ));
            }
            Err(e) => return fail(e),
        }
        let mut other = body;
        other["arguments"] = json!({"n": "different"});
        match self
            .call(
                Method::POST,
                "tool-requests",
                Some(&token),
                Body::Json(other),
            )
            .await
        {
            Ok(p) if p.status == 409 => {
                pass("same key and payload → the same request; a different payload → 409")
            }
            Ok(p) => fail(format!(
                "same key with a different payload answered {}, expected 409",
                p.describe()
            )),
            Err(e) => fail(e),
        }
    }

    /// Tenant B cannot read, resolve, list or create on tenant A's.
    async fn tool_requests_isolation(&mut self) -> Verdict {
        if let Some(v) = self.tool_request_gate(true) {
            return v;
        }
        let Some(token_b) = self.token_b.clone() else {
            return skip(
                "needs AGENT_JWT_SECRET to act as a second tenant (only AGENT_TOKEN given)",
            );
        };
        let (task_id, id) = (
            self.task_id.clone().unwrap_or_default(),
            self.tool_requests[0].clone(),
        );
        match self.get_tool_request(&token_b, &id).await {
            Ok(p) if p.status == 404 => {}
            Ok(p) => {
                return fail(format!(
                    "tenant b reading tenant a's tool request {id} answered {}, expected 404",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        match self
            .patch_tool_request(&token_b, &id, json!({"status": "approved"}))
            .await
        {
            Ok(p) if p.status == 404 => {}
            Ok(p) => {
                return fail(format!(
                    "tenant b approving tenant a's tool request {id} answered {}, expected 404",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        match self.all_items("tool-requests", &token_b, None).await {
            Ok((items, _)) if items.iter().any(|(i, _)| *i == id) => {
                return fail(format!("tenant b lists tenant a's tool request {id}"));
            }
            Ok(_) => {}
            Err(e) => return fail(format!("tenant b cannot list its tool requests: {e}")),
        }
        let mut body = self.tool_request_body(&task_id, 0);
        body["idempotency_key"] = json!(format!("conformance-{}-tool-request-x", self.run));
        match self
            .call(
                Method::POST,
                "tool-requests",
                Some(&token_b),
                Body::Json(body),
            )
            .await
        {
            Ok(p) if p.status == 403 || p.status == 404 => {}
            Ok(p) => {
                return fail(format!(
                    "tenant b creating a tool request on tenant a's task answered {}, expected 403 or 404",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        let token = self.token_a.clone();
        match self.get_tool_request(&token, &id).await {
            Ok(p)
                if p.status == 200 && p.body.as_ref().is_some_and(|b| b["status"] == "pending") =>
            {
                pass("tenant b: GET and PATCH → 404, not listed, cannot create on a's task")
            }
            Ok(p) => fail(format!(
                "after tenant b's attempts, tenant a's request answered {}",
                p.describe()
            )),
            Err(e) => fail(e),
        }
    }

    /// Three requests over pages of two via `next_cursor`; the `status` and
    /// `task_id` filters.
    async fn tool_requests_list(&mut self) -> Verdict {
        if let Some(v) = self.tool_request_gate(true) {
            return v;
        }
        let task_id = self.task_id.clone().unwrap_or_default();
        let token = self.token_a.clone();
        for n in 1..3 {
            let body = self.tool_request_body(&task_id, n);
            match self.create_tool_request(&token, body).await {
                Ok((id, _)) => self.tool_requests.push(id),
                Err(e) => return fail(e),
            }
        }
        let ids = self.tool_requests.clone();
        let (items, pages) = match self.all_items("tool-requests", &token, Some(2)).await {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let listed: Vec<&String> = items.iter().map(|(i, _)| i).collect();
        let mut unique = listed.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != listed.len() {
            return fail("a tool request appeared on two pages");
        }
        if let Some(missing) = ids.iter().find(|id| !listed.contains(id)) {
            return fail(format!(
                "tool request {missing} never appeared while following next_cursor"
            ));
        }
        let filtered = format!(
            "tool-requests?status=pending&task_id={}",
            encode_query(&task_id)
        );
        match self.all_items(&filtered, &token, None).await {
            Ok((items, _)) => {
                if let Some((id, _)) = items
                    .iter()
                    .find(|(_, v)| v["status"] != "pending" || v["task_id"] != json!(task_id))
                {
                    return fail(format!("GET {filtered} listed {id}, which does not match"));
                }
                if let Some(missing) = ids.iter().find(|id| !items.iter().any(|(i, _)| i == *id)) {
                    return fail(format!("GET {filtered} did not list {missing}"));
                }
            }
            Err(e) => return fail(e),
        }
        pass(format!(
            "limit=2 honoured; {} requests over {pages} pages; status and task_id filters",
            listed.len()
        ))
    }

    /// PATCH approves or rejects a pending request; a second PATCH is 409.
    async fn tool_requests_resolve(&mut self) -> Verdict {
        if let Some(v) = self.tool_request_gate(true) {
            return v;
        }
        if self.tool_requests.len() < 3 {
            return skip("needs tool_requests_list");
        }
        let token = self.token_a.clone();
        let (a, r) = (self.tool_requests[0].clone(), self.tool_requests[1].clone());
        for (id, body, status) in [
            (&a, json!({"status": "approved"}), "approved"),
            (
                &r,
                json!({"status": "rejected", "reason": "conformance"}),
                "rejected",
            ),
        ] {
            match self.patch_tool_request(&token, id, body).await {
                Ok(p)
                    if p.status == 200
                        && p.body.as_ref().is_some_and(|b| b["status"] == status) => {}
                Ok(p) => {
                    return fail(format!(
                        "PATCH tool-requests/{id} to {status} answered {}, expected 200 with status {status}",
                        p.describe()
                    ));
                }
                Err(e) => return fail(e),
            }
        }
        match self
            .patch_tool_request(&token, &a, json!({"status": "rejected"}))
            .await
        {
            Ok(p) if p.status == 409 => {}
            Ok(p) => {
                return fail(format!(
                    "a second PATCH of tool-requests/{a} answered {}, expected 409",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        match self.get_tool_request(&token, &a).await {
            Ok(p) if p.body.as_ref().is_some_and(|b| b["status"] == "approved") => {
                pass("pending → approved and pending → rejected; a second PATCH → 409")
            }
            Ok(p) => fail(format!(
                "after a refused second PATCH, GET tool-requests/{a} answered {}",
                p.describe()
            )),
            Err(e) => fail(e),
        }
    }

    /// If `tool_requests_consume` is advertised: pending → 409
    /// `tool_request_pending`; resolved → 200 with `consumed_at`, once;
    /// again → 409 `tool_request_consumed`; another tenant → 404.
    async fn tool_requests_consume(&mut self) -> Verdict {
        if !self.features.tool_requests_consume {
            return self.not_advertised();
        }
        if let Some(v) = self.tool_request_gate(true) {
            return v;
        }
        if self.tool_requests.len() < 3 {
            return skip("needs tool_requests_list");
        }
        let token = self.token_a.clone();
        let (approved, pending) = (self.tool_requests[0].clone(), self.tool_requests[2].clone());
        let consume = |id: &str| format!("tool-requests/{}/consume", encode_query(id));
        let expect_code = |p: &Probe, code: &str| {
            p.status == 409 && p.body.as_ref().is_some_and(|b| b["code"] == code)
        };
        match self
            .call(Method::POST, &consume(&pending), Some(&token), Body::None)
            .await
        {
            Ok(p) if expect_code(&p, "tool_request_pending") => {}
            Ok(p) => {
                return fail(format!(
                    "consuming a pending request answered {}, expected 409 tool_request_pending",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        if let Some(token_b) = self.token_b.clone() {
            match self
                .call(
                    Method::POST,
                    &consume(&approved),
                    Some(&token_b),
                    Body::None,
                )
                .await
            {
                Ok(p) if p.status == 404 => {}
                Ok(p) => {
                    return fail(format!(
                        "tenant b consuming tenant a's request answered {}, expected 404",
                        p.describe()
                    ));
                }
                Err(e) => return fail(e),
            }
        }
        match self
            .call(Method::POST, &consume(&approved), Some(&token), Body::None)
            .await
        {
            Ok(p)
                if p.status == 200
                    && p.body.as_ref().is_some_and(|b| {
                        b["status"] == "approved" && b["consumed_at"].as_str().is_some()
                    }) => {}
            Ok(p) => {
                return fail(format!(
                    "consuming an approved request answered {}, expected 200 with consumed_at",
                    p.describe()
                ));
            }
            Err(e) => return fail(e),
        }
        match self
            .call(Method::POST, &consume(&approved), Some(&token), Body::None)
            .await
        {
            Ok(p) if expect_code(&p, "tool_request_consumed") => pass(
                "pending → 409 tool_request_pending; approved → 200 once, then 409 tool_request_consumed",
            ),
            Ok(p) => fail(format!(
                "consuming a request twice answered {}, expected 409 tool_request_consumed",
                p.describe()
            )),
            Err(e) => fail(e),
        }
    }

    /// If advertised: `GET tasks?title=<the created task's title>` lists
    /// that task and only tasks with that title; an unused title lists
    /// nothing; the second tenant (when the runner has one) does not get the
    /// first tenant's task under its title.
    async fn task_title_filter(&mut self) -> Verdict {
        if !self.features.task_title_filter {
            return self.not_advertised();
        }
        let Some(id) = self.task_id.clone() else {
            return skip("needs create_task");
        };
        let title = self.task_body["title"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let token = self.token_a.clone();
        let path = format!("tasks?title={}", encode_query(&title));
        let items = match self.titled(&path, &token).await {
            Ok(items) => items,
            Err(e) => return fail(e),
        };
        if !items.iter().any(|t| t.0 == id) {
            return fail(format!("GET {path} did not list task {id}"));
        }
        if let Some((other, t)) = items.iter().find(|t| t.1 != title) {
            return fail(format!("GET {path} listed task {other} titled {t:?}"));
        }
        let unused = format!(
            "tasks?title={}",
            encode_query(&format!("no such title {}", self.run))
        );
        match self.titled(&unused, &token).await {
            Ok(items) if items.is_empty() => {}
            Ok(items) => {
                return fail(format!(
                    "GET {unused} listed {} task(s), expected none",
                    items.len()
                ));
            }
            Err(e) => return fail(e),
        }
        let Some(token_b) = self.token_b.clone() else {
            return pass(format!(
                "GET {path} → only that title; an unused title → none"
            ));
        };
        // Tenant B may have a task of that title of its own (the isolation
        // checks create one), but never A's.
        match self.titled(&path, &token_b).await {
            Ok(items) if !items.iter().any(|t| t.0 == id) => pass(format!(
                "GET {path} → only that title; an unused title → none; the other tenant does not see it"
            )),
            Ok(_) => fail(format!(
                "tenant b listed tenant a's task {id} under its title"
            )),
            Err(e) => fail(e),
        }
    }

    /// `(id, title)` of the first page of a filtered task list.
    async fn titled(&mut self, path: &str, token: &str) -> Result<Vec<(String, String)>, String> {
        let p = self
            .call(Method::GET, path, Some(token), Body::None)
            .await?;
        if p.status != 200 {
            return Err(format!("GET {path}: expected 200, got {}", p.describe()));
        }
        let items = p
            .body
            .as_ref()
            .and_then(|b| b.get("items"))
            .and_then(Value::as_array)
            .ok_or_else(|| format!("GET {path}: no items array"))?;
        Ok(items
            .iter()
            .map(|t| {
                let id = match &t["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (id, t["title"].as_str().unwrap_or_default().to_owned())
            })
            .collect())
    }

    fn not_advertised(&self) -> Verdict {
        if self.features_known {
            skip("not advertised")
        } else {
            skip("capabilities unavailable, so not probed")
        }
    }

    async fn error_bodies(&mut self) -> Verdict {
        if self.errors_seen.is_empty() {
            return skip("no error responses were observed");
        }
        let bad: Vec<String> = self
            .errors_seen
            .iter()
            .filter(|e| !e.has_error_text)
            .map(|e| format!("{} ({})", e.what, e.status))
            .collect();
        if bad.is_empty() {
            pass(format!(
                "all {} error responses carry a JSON `error` string",
                self.errors_seen.len()
            ))
        } else {
            let shown: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
            fail(format!(
                "{} error response(s) without a JSON `error` string: {}",
                bad.len(),
                shown.join(", ")
            ))
        }
    }
}

/// Percent-encodes a cursor for a query string.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_escaped() {
        assert_eq!(encode_query("a b/c=d&"), "a%20b%2Fc%3Dd%26");
        assert_eq!(encode_query("Zx-9_.~"), "Zx-9_.~");
    }

    #[test]
    fn tokens_are_redacted_in_debug() {
        let cfg = ConformanceConfig::new("http://x", AuthInput::Token("eyJsecret".into()));
        assert!(!format!("{cfg:?}").contains("eyJsecret"));
    }
}
