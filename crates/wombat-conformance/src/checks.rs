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
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let mut path = String::from("tasks");
            let mut sep = '?';
            if let Some(limit) = limit {
                path.push_str(&format!("?limit={limit}"));
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
                    Value::String(s) => ids.push(s.clone()),
                    Value::Number(n) => ids.push(n.to_string()),
                    _ => return Err(format!("GET {path}: an item has no id")),
                }
            }
            match body.get("next_cursor") {
                None | Some(Value::Null) => return Ok((ids, page)),
                Some(Value::String(next)) if next.is_empty() => return Ok((ids, page)),
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
        Err(format!("task list did not end within {MAX_PAGES} pages"))
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

    async fn tool_requests(&mut self) -> Verdict {
        if !self.features.tool_requests {
            return self.not_advertised();
        }
        let token = self.token_a.clone();
        match self
            .call(Method::GET, "tool-requests", Some(&token), Body::None)
            .await
        {
            Ok(p) if (200..300).contains(&p.status) => {
                pass(format!("GET tool-requests → {}", p.status))
            }
            Ok(p) => fail(format!(
                "GET tool-requests answered {}, expected 2xx",
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
