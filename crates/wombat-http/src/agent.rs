//! `POST /api/agents/send` and `POST /api/agents/stream`: validate, resolve
//! the task thread, build the prompt, call the LLM, persist the reply,
//! notify the webhook, record usage.
//!
//! Order of effects, and why: everything that can be checked without I/O is
//! checked first (so a bad request costs nothing), then the task is resolved
//! (so a broken backend does not burn LLM money), then the LLM is called.
//! Once the LLM has answered, nothing is lost: usage is recorded before the
//! backend write, and a failed write returns the reply in the 502 body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::server::RequestBody as Incoming;
use futures::StreamExt;
use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;
use wombat_core::controlplane::{ActorType, NewDocument, NewMessage};
use wombat_core::{ChatMessage, Cost, ModelRef, SessionKey, Usage};
use wombat_llm::{ModelChoice, RouteRequest, RoutedEvent, Tier};
use wombat_workspace::{PromptMode, PromptRequest};

use crate::app::App;
use crate::error::ApiError;
use crate::governance;
use crate::request::{Body, Field, Kind, json_response, read_payload};
use crate::sse;
use crate::webhook::{Target, WebhookSpec};

const DEFAULT_KICKOFF_NOTE: &str = "Draft a concise plan based on the user's request.";
const DEFAULT_PLAN_TITLE: &str = "Plan";

/// Accepts an id given as a JSON string or number.
fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "task_id must be a string or a number, got {other}"
            )));
        }
    })
}

/// The request body of `send` and `stream`.
#[derive(Debug, Deserialize)]
pub(crate) struct SendRequest {
    user_id: String,
    session_key: String,
    message: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default, deserialize_with = "opt_id")]
    task_id: Option<String>,
    #[serde(default)]
    task_title: Option<String>,
    #[serde(default)]
    task_description: Option<String>,
    #[serde(default)]
    task_metadata: Option<Value>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    webhook: Option<WebhookSpec>,
}

/// The top level of 0.1.0's zod schema for `send`/`stream`, to answer a
/// payload that does not fit it as 0.1.0 did (see [`read_payload`]).
const SEND_SCHEMA: &[Field] = &[
    Field::required("user_id", Kind::String),
    Field::required("session_key", Kind::String),
    Field::required("message", Kind::String),
    Field::optional("messages", Kind::Array),
    Field::optional("task_id", Kind::StringOrNumber),
    Field::optional("task_title", Kind::String),
    Field::optional("task_description", Kind::String),
    Field::optional("task_metadata", Kind::Any),
    Field::optional("metadata", Kind::Object),
    Field::optional("stream", Kind::Boolean),
    Field::optional("webhook", Kind::Object),
];

/// `metadata` keys the daemon understands, type-checked.
#[derive(Debug)]
struct Options {
    system_prompt: Option<String>,
    kickoff_plan: bool,
    kickoff_note: Option<String>,
    plan_title: Option<String>,
    timezone: Option<String>,
    mode: PromptMode,
    model: ModelChoice,
    /// `metadata.temperature`; `None` means `WOMBAT_TEMPERATURE`.
    temperature: Option<f32>,
    /// `metadata.limits`: the tenant's plan limits, from the trusted caller.
    limits: Option<wombat_governance::Limits>,
}

fn options(metadata: Option<&Map<String, Value>>) -> Result<Options, ApiError> {
    let mut o = Options {
        system_prompt: None,
        kickoff_plan: false,
        kickoff_note: None,
        plan_title: None,
        timezone: None,
        mode: PromptMode::Full,
        model: ModelChoice::Tier(Tier::Default),
        temperature: None,
        limits: None,
    };
    let Some(m) = metadata else {
        return Ok(o);
    };
    let string = |key: &str| -> Result<Option<String>, ApiError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "metadata.{key} must be a string"
            ))),
        }
    };
    o.system_prompt = string("system_prompt")?;
    o.kickoff_plan = match m.get("kickoff_plan") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "metadata.kickoff_plan must be a boolean",
            ));
        }
    };
    o.kickoff_note = string("kickoff_note")?;
    o.plan_title = string("plan_title")?;
    o.timezone = string("timezone")?.filter(|s| !s.trim().is_empty());
    o.mode = match string("prompt_mode")?.as_deref() {
        None | Some("full") => PromptMode::Full,
        Some("minimal") => PromptMode::Minimal,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "metadata.prompt_mode must be \"full\" or \"minimal\", got {other:?}"
            )));
        }
    };
    let tier = match string("model_tier")?.as_deref() {
        None | Some("default") => Tier::Default,
        Some("cheap") => Tier::Cheap,
        Some("best") => Tier::Best,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "metadata.model_tier must be \"cheap\", \"default\" or \"best\", got {other:?}"
            )));
        }
    };
    o.model = match string("model")?.filter(|s| !s.trim().is_empty()) {
        Some(model) => ModelChoice::Explicit(model),
        None => ModelChoice::Tier(tier),
    };
    o.temperature = match m.get("temperature") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => Some(t as f32),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "metadata.temperature must be a number between 0 and 2, got {n}"
                )));
            }
        },
        Some(_) => {
            return Err(ApiError::bad_request(
                "metadata.temperature must be a number between 0 and 2",
            ));
        }
    };
    o.limits = governance::parse_limits(m)?;
    Ok(o)
}

/// A request that passed every check that needs no I/O.
struct Prepared {
    req: SendRequest,
    key: SessionKey,
    opts: Options,
    webhook: Option<Target>,
    /// The model asked for first (the one billed when a stream is abandoned
    /// before the provider reports which model answered).
    primary: ModelRef,
}

/// Longest accepted `user_id` and task title. They end up in JWT claims,
/// backend queries and map keys, so they are bounded.
const MAX_ID_CHARS: usize = 256;
const MAX_TITLE_CHARS: usize = 1024;

/// Maps a workspace error (bad role, unknown zone) to 400.
pub(crate) fn workspace_error(e: wombat_workspace::Error) -> ApiError {
    match e {
        wombat_workspace::Error::InvalidRole { .. }
        | wombat_workspace::Error::UnknownTimeZone { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "workspace_error",
            other.to_string(),
        ),
    }
}

fn prepare(app: &App, req: SendRequest) -> Result<(Prepared, RouteRequest), ApiError> {
    if req.user_id.trim().is_empty() {
        return Err(ApiError::bad_request("user_id must not be empty"));
    }
    if req.user_id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::bad_request(format!(
            "user_id is longer than {MAX_ID_CHARS} characters"
        )));
    }
    if req
        .task_title
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "task_title is longer than {MAX_TITLE_CHARS} characters"
        )));
    }
    if req.message.trim().is_empty() {
        return Err(ApiError::bad_request("message must not be empty"));
    }
    let key = SessionKey::parse_for_user(&req.session_key, &req.user_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let opts = options(req.metadata.as_ref())?;
    let webhook = req
        .webhook
        .as_ref()
        .map(|w| app.webhooks.validate(w))
        .transpose()?;
    let mut prompt = PromptRequest::new(key.role(), jiff::Timestamp::now()).mode(opts.mode);
    if let Some(tz) = &opts.timezone {
        prompt = prompt.timezone(tz);
    }
    if let Some(sp) = &opts.system_prompt {
        prompt = prompt.system_prompt(sp);
    }
    let system = wombat_telemetry::otel_span!("build_prompt")
        .in_scope(|| app.workspace.system_prompt(&prompt))
        .map_err(workspace_error)?;
    let user_message = if opts.kickoff_plan {
        let note = opts.kickoff_note.as_deref().unwrap_or(DEFAULT_KICKOFF_NOTE);
        format!("{note}\n\nUser request: {}", req.message)
    } else {
        req.message.clone()
    };
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    messages.extend(req.messages.iter().cloned());
    messages.push(ChatMessage::user(user_message));
    let mut route = RouteRequest::new(opts.model.clone(), messages);
    route.system = Some(system);
    // 0.1.0 always sent a temperature (0.4); so do we, so that switching
    // daemons does not change how the model writes.
    route.temperature = Some(opts.temperature.unwrap_or(app.config.temperature));
    let primary = app
        .llm
        .resolve(&route.model)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((
        Prepared {
            req,
            key,
            opts,
            webhook,
            primary,
        },
        route,
    ))
}

/// Resolves the task thread: `task_id`, else find-or-create by `task_title`,
/// else by `WOMBAT_DEFAULT_TASK`. `Ok(None)` when none was specified.
async fn resolve_task(app: &App, p: &Prepared) -> Result<Option<String>, ApiError> {
    if let Some(id) = p.req.task_id.as_ref().filter(|s| !s.is_empty()) {
        // The reply will have to be written: without a backend, refuse
        // before any tokens are spent.
        backend(app)?;
        return Ok(Some(id.clone()));
    }
    let Some(title) = p
        .req
        .task_title
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .or(app.config.default_task.as_deref())
    else {
        return Ok(None);
    };
    let backend = backend(app)?;
    let agent = backend.client.agent(p.key.user_id(), p.key.role());
    let task = agent
        .find_or_create_task(
            title,
            p.req.task_description.as_deref(),
            p.req.task_metadata.clone(),
        )
        .instrument(wombat_telemetry::otel_span!("resolve_task"))
        .await
        .map_err(|e| backend_error(app, "resolving the task", &e))?;
    Ok(Some(task.id))
}

const NO_TASK: &str =
    "Task not specified. Provide task_id, task_title, or set WOMBAT_DEFAULT_TASK env var.";

fn backend(app: &App) -> Result<&crate::app::Backend, ApiError> {
    app.backend.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_not_configured",
            "backend not configured: set BACKEND_URL and AGENT_JWT_SECRET",
        )
    })
}

fn backend_error(app: &App, doing: &str, e: &wombat_controlplane::Error) -> ApiError {
    app.metrics.backend_errors.fetch_add(1, Relaxed);
    let status = match e {
        wombat_controlplane::Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(
        status,
        "backend_error",
        format!("backend failed while {doing}: {e}"),
    )
}

/// Maps an LLM failure to the API: which provider/model failed and why.
pub(crate) fn llm_error(app: &App, e: &wombat_llm::Error) -> ApiError {
    let mut details = Map::new();
    if let Some(f) = e.failure() {
        details.insert("provider".into(), json!(f.provider.as_str()));
        details.insert("model".into(), json!(f.model));
        if let Some(s) = f.status {
            details.insert("upstream_status".into(), json!(s));
        }
    }
    let (status, code) = if e.is_rate_limited() {
        (StatusCode::TOO_MANY_REQUESTS, "llm_rate_limited")
    } else if e.is_timeout() {
        (StatusCode::GATEWAY_TIMEOUT, "llm_timeout")
    } else if matches!(e, wombat_llm::Error::MissingApiKey { .. }) {
        (StatusCode::SERVICE_UNAVAILABLE, "llm_not_configured")
    } else {
        (StatusCode::BAD_GATEWAY, e.code())
    };
    if let Some(f) = e.failure() {
        app.metrics
            .observe_llm(f.provider.as_str(), &f.model, false, 0, 0, 0);
    }
    let mut err = ApiError::new(status, code, e.to_string()).with_details(Value::Object(details));
    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = e
            .retry_after()
            .map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
        err = err.with_retry_after(secs);
    }
    err
}

/// Takes an LLM slot or answers 429.
pub(crate) fn llm_permit(app: &App) -> Result<OwnedSemaphorePermit, ApiError> {
    app.llm_permits.clone().try_acquire_owned().map_err(|_| {
        app.metrics.llm_rejected.fetch_add(1, Relaxed);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too many LLM calls in flight; retry shortly",
        )
        .with_retry_after(1)
    })
}

fn context_warning(app: &App, model: &str, prompt_tokens: u64) -> Option<String> {
    let window = app.llm.pricing().context_window(model);
    if window == 0 {
        return None;
    }
    let pct = prompt_tokens as f64 * 100.0 / window as f64;
    (pct > app.config.context_warning_threshold).then(|| {
        format!("Context usage is {pct:.1}% of {window} tokens. Consider compacting history.")
    })
}

/// What a successful LLM call produced, however it was made.
struct Answer {
    text: String,
    usage: Usage,
    cost: Cost,
    provider: &'static str,
    model: String,
    attempts: u32,
    failovers: u32,
    /// The soft-limit warning of the admission, for the response and webhook
    /// (boxed: rare, and `Answer` lives in the stream task's state).
    budget_warning: Option<Box<Value>>,
}

/// Admission of the request's LLM call (see [`governance::admit`]) and its
/// soft-limit warning.
async fn admit(
    app: &App,
    p: &Prepared,
    route: &RouteRequest,
) -> Result<(Option<wombat_governance::Admitted>, Option<Box<Value>>), ApiError> {
    let admitted = governance::admit(
        app,
        p.key.user_id(),
        p.opts.limits.as_ref(),
        route,
        &p.primary.model,
    )
    .await?;
    let warning = admitted
        .as_ref()
        .and_then(|a| a.warning.as_ref())
        .map(|w| Box::new(governance::warning_json(w)));
    Ok((admitted, warning))
}

fn record(app: &App, user_id: &str, a: &Answer) {
    app.usage.record(user_id, &a.usage, &a.cost);
    app.metrics.observe_llm(
        a.provider,
        &a.model,
        true,
        a.usage.prompt_tokens,
        a.usage.completion_tokens,
        a.cost.total_micros(),
    );
    app.metrics.observe_route(a.attempts, a.failovers);
}

/// The idempotency key of a request's reply message.
fn message_key(request_key: &str) -> String {
    format!("msg:{request_key}")
}

/// Writes the reply (and the plan document) to the backend.
async fn persist(
    app: &App,
    p: &Prepared,
    task_id: &str,
    a: &Answer,
    request_key: &str,
) -> Result<(String, Option<String>), ApiError> {
    let backend = backend(app)?;
    let agent = backend.client.agent(p.key.user_id(), p.key.role());
    let message = agent
        .post_message(NewMessage {
            task_id: task_id.to_owned(),
            content: a.text.clone(),
            actor_type: Some(ActorType::Agent),
            actor_id: None,
            agent_role: Some(p.key.role().to_owned()),
            attachments: Some(json!({
                "model": a.model,
                "provider": a.provider,
                "usage": a.usage,
                "cost": a.cost,
            })),
            idempotency_key: Some(message_key(request_key)),
        })
        .await
        .map_err(|e| match (&e, notification_id(p)) {
            // The reply key of a notification is derived from its id, so a
            // 409 means a reply to it is already stored: a redelivery after
            // a lost acknowledgement, answered differently by a
            // non-deterministic model. Not a backend failure: the dispatcher
            // takes it as delivered instead of retrying (and paying) again.
            (wombat_controlplane::Error::Status { status: 409, .. }, Some(id)) => ApiError::new(
                StatusCode::CONFLICT,
                NOTIFICATION_ALREADY_ANSWERED,
                format!(
                    "a reply to notification {} is already stored; this one was not",
                    json!(id)
                ),
            ),
            _ => backend_error(app, "posting the message", &e),
        })?;
    let document_id = if p.opts.kickoff_plan {
        let doc = agent
            .post_document(NewDocument {
                title: p
                    .opts
                    .plan_title
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PLAN_TITLE.to_owned()),
                content: a.text.clone(),
                doc_type: Some("plan".to_owned()),
                task_id: task_id.to_owned(),
                idempotency_key: Some(format!("doc:{request_key}")),
            })
            .await
            .map_err(|e| backend_error(app, "posting the plan document", &e))?;
        Some(doc.id)
    } else {
        None
    };
    Ok((message.id, document_id))
}

/// The code of a send whose notification already has a stored reply.
pub(crate) const NOTIFICATION_ALREADY_ANSWERED: &str = "notification_already_answered";

/// The key a request's writes are derived from: random per request, except
/// for a dispatched notification (`metadata.notification_id`), whose reply
/// is keyed by the notification id so that a redelivery (acknowledgement
/// lost) cannot store a second message.
fn request_key(p: &Prepared) -> String {
    notification_id(p).map_or_else(
        || uuid::Uuid::new_v4().simple().to_string(),
        |id| wombat_controlplane::notification_message_key(&id),
    )
}

/// `metadata.notification_id` (a string or a number), which the dispatcher
/// sends with every notification it delivers.
fn notification_id(p: &Prepared) -> Option<String> {
    match p.req.metadata.as_ref()?.get("notification_id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A webhook event: `agent.completed` when `error` is `None`, else
/// `agent.error`. The reply, usage and cost are included whenever the LLM
/// answered, so a receiver can still keep a reply whose write failed.
fn webhook_event(
    p: &Prepared,
    task_id: Option<&str>,
    answer: Option<&Answer>,
    error: Option<&str>,
) -> Value {
    let mut event = json!({
        "event": if error.is_none() { "agent.completed" } else { "agent.error" },
        "timestamp": jiff::Timestamp::now().to_string(),
        "task_id": task_id,
        "user_id": p.key.user_id(),
        "role": p.key.role(),
        "metadata": p.req.metadata,
    });
    if let Some(a) = answer {
        event["response"] = json!(a.text);
        event["usage"] = json!(a.usage);
        event["cost"] = json!(a.cost);
        if let Some(w) = &a.budget_warning {
            event["budget_warning"] = (**w).clone();
        }
    }
    if let Some(error) = error {
        event["error"] = json!(error);
    }
    event
}

fn fire_webhook(
    app: &App,
    p: &Prepared,
    task_id: Option<&str>,
    answer: Option<&Answer>,
    error: Option<&str>,
) {
    if let Some(target) = &p.webhook {
        app.webhooks
            .fire(target.clone(), webhook_event(p, task_id, answer, error));
    }
}

#[derive(Serialize)]
struct SendResponse<'a> {
    status: &'static str,
    task_id: &'a str,
    response: &'a str,
    usage: &'a Usage,
    cost: &'a Cost,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_warning: Option<String>,
    model: &'a str,
    provider: &'a str,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_warning: Option<&'a Value>,
}

async fn read_send_request(
    app: &App,
    req: http::Request<Incoming>,
) -> Result<SendRequest, ApiError> {
    let (parts, body) = req.into_parts();
    read_payload(&parts.headers, body, app.config.max_body_bytes, SEND_SCHEMA).await
}

/// How long a reply the LLM has already produced may still spend on its
/// backend write once the request deadline has (nearly) passed. The reply is
/// paid for: a write that needs a moment more is worth it, and the caller
/// gets the reply either way (in the 502 body when the write does not make
/// it), so the response may come up to this much after the deadline.
const WRITE_GRACE: Duration = Duration::from_secs(1);

/// The one deadline policy of an agent request, for `send` and `stream`
/// alike: `WOMBAT_REQUEST_TIMEOUT_SECS` counted from the moment the body was
/// read bounds task resolution and the LLM call (504 `deadline_exceeded`).
/// Once the LLM has answered, the deadline no longer cancels anything that
/// would lose the reply: the backend write gets the time left (at least
/// [`WRITE_GRACE`]) and, if it fails or runs out of time, the reply still
/// reaches the caller. One timer (pinned by the caller, no allocation),
/// reset for the write.
struct Deadline<'t> {
    timer: Pin<&'t mut Sleep>,
    total: Duration,
    /// Whether [`Deadline::bound`] gave up on its work.
    exceeded: bool,
}

/// The instant a request that starts now must be done by.
fn deadline_at(app: &App) -> Instant {
    Instant::now() + app.config.request_timeout
}

impl<'t> Deadline<'t> {
    /// `timer` is `sleep_until(deadline_at(..))`, pinned where the request's
    /// work runs.
    fn new(app: &App, timer: Pin<&'t mut Sleep>) -> Self {
        Self {
            timer,
            total: app.config.request_timeout,
            exceeded: false,
        }
    }

    /// Runs `work` until the deadline; 504 when it fires first (`work` is
    /// dropped, which is safe before the LLM has answered: nothing is paid
    /// for that would be lost).
    ///
    /// `work` comes pinned by the caller: an async fn keeps a by-value
    /// argument in its own state beside the copy it polls, which doubled the
    /// LLM phase in every open stream's task (5,248 B; 3,880 B without the
    /// copy and with the deadline's error event boxed).
    async fn bound<T>(
        &mut self,
        work: Pin<&mut impl Future<Output = Result<T, ApiError>>>,
    ) -> Result<T, ApiError> {
        tokio::select! {
            biased;
            result = work => return result,
            () = self.timer.as_mut() => {}
        }
        self.exceeded = true;
        Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            format!(
                "request did not finish within {}s",
                self.total.as_secs_f64()
            ),
        ))
    }

    /// Runs the backend write of an answered request: until the deadline, or
    /// [`WRITE_GRACE`] from now if that is later. `None` when it ran out of
    /// time; the write may then still land (its idempotency key makes a
    /// retry by anyone who knows the key harmless), but the daemon never
    /// starts another write with a different key.
    async fn write<T>(&mut self, work: Pin<&mut impl Future<Output = T>>) -> Option<T> {
        let at = self.timer.deadline().max(Instant::now() + WRITE_GRACE);
        self.timer.as_mut().reset(at);
        tokio::select! {
            biased;
            result = work => Some(result),
            () = self.timer.as_mut() => None,
        }
    }
}

/// Task resolution under the request deadline; the same for send and stream.
async fn resolve_task_within(
    app: &App,
    p: &Prepared,
    deadline: &mut Deadline<'_>,
) -> Result<Option<String>, ApiError> {
    deadline.bound(std::pin::pin!(resolve_task(app, p))).await
}

/// Why a backend write did not happen.
enum WriteFailure {
    /// The backend refused or failed (after the client's retries).
    Failed(ApiError),
    /// The request deadline (plus the grace) passed first; the write may
    /// still land.
    TimedOut,
}

impl WriteFailure {
    fn message(&self) -> String {
        match self {
            Self::Failed(e) => e.message.clone(),
            Self::TimedOut => {
                "backend write did not finish within the request deadline; it may still be stored"
                    .to_owned()
            }
        }
    }
}

/// Writes an answered reply under the request deadline. The idempotency key
/// is derived from `request_key`, made once per request: the control-plane
/// client's own retries resend the same body, so at most one message (and
/// one plan document) is stored per request.
async fn persist_within(
    app: &App,
    p: &Prepared,
    task_id: &str,
    a: &Answer,
    request_key: &str,
    deadline: &mut Deadline<'_>,
) -> Result<(String, Option<String>), WriteFailure> {
    match deadline
        .write(std::pin::pin!(persist(app, p, task_id, a, request_key)))
        .await
    {
        Some(Ok(ids)) => Ok(ids),
        Some(Err(e)) => Err(WriteFailure::Failed(e)),
        None => {
            app.metrics.backend_errors.fetch_add(1, Relaxed);
            Err(WriteFailure::TimedOut)
        }
    }
}

/// `POST /api/agents/send` (or SSE when `stream: true`).
///
/// The work runs in its own task: a client that goes away stops waiting for
/// the answer but does not cancel it, so a reply the LLM already produced is
/// still written to the backend and announced to the webhook.
pub(crate) async fn send(
    app: &Arc<App>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let body = read_send_request(app, req).await?;
    if body.stream {
        return start_stream(app, body).await;
    }
    let (p, route) = prepare(app, body)?;
    let app = app.clone();
    let work = async move {
        let at = deadline_at(&app);
        let timer = std::pin::pin!(tokio::time::sleep_until(at));
        let mut deadline = Deadline::new(&app, timer);
        // Retry waits are weighed against what this request has left.
        let mut route = route;
        route.deadline = Some(at);
        let result = send_inner(&app, &p, route, &mut deadline).await;
        if deadline.exceeded {
            fire_webhook(&app, &p, None, None, Some("request deadline exceeded"));
        }
        result
    };
    tokio::spawn(work.instrument(tracing::Span::current()))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("request task failed: {e}"),
            ))
        })
}

async fn send_inner(
    app: &App,
    p: &Prepared,
    route: RouteRequest,
    deadline: &mut Deadline<'_>,
) -> Result<http::Response<Body>, ApiError> {
    let task_id = resolve_task_within(app, p, deadline)
        .await?
        .ok_or_else(|| ApiError::bad_request(NO_TASK))?;
    let permit = llm_permit(app)?;
    let (admitted, budget_warning) = admit(app, p, &route).await?;
    let routed = deadline
        .bound(std::pin::pin!(async { Ok(app.llm.complete(route).await) }))
        .await;
    drop(permit);
    let routed = match routed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            governance::release(app, admitted).await;
            let err = llm_error(app, &e);
            fire_webhook(app, p, Some(&task_id), None, Some(&err.message));
            return Err(err);
        }
        Err(e) => {
            // The deadline cut the call: what it consumed is unknown (no
            // usage without a reply), so the reservation is released.
            governance::release(app, admitted).await;
            return Err(e);
        }
    };
    let answer = Answer {
        text: routed.completion.text,
        usage: routed.completion.usage,
        cost: routed.cost,
        provider: routed.provider.as_str(),
        model: routed.model,
        attempts: routed.attempts,
        failovers: routed.failovers,
        budget_warning,
    };
    // From here on the reply is paid for: nothing may drop it.
    record(app, p.key.user_id(), &answer);
    governance::account(
        app,
        admitted,
        p.key.user_id(),
        &answer.usage,
        &answer.cost,
        false,
    )
    .await;
    let request_key = request_key(p);
    let warning = context_warning(app, &answer.model, answer.usage.prompt_tokens);
    match persist_within(app, p, &task_id, &answer, &request_key, deadline).await {
        Ok((message_id, document_id)) => {
            fire_webhook(app, p, Some(&task_id), Some(&answer), None);
            Ok(json_response(
                StatusCode::OK,
                &SendResponse {
                    status: "ok",
                    task_id: &task_id,
                    response: &answer.text,
                    usage: &answer.usage,
                    cost: &answer.cost,
                    context_warning: warning,
                    model: &answer.model,
                    provider: answer.provider,
                    message_id: &message_id,
                    document_id: document_id.as_deref(),
                    budget_warning: answer.budget_warning.as_deref(),
                },
            ))
        }
        Err(failure) => {
            // Nothing lost: the caller gets the reply and can persist it.
            // `write` says whether the message may still appear ("timed_out")
            // or was refused ("failed"); `idempotency_key` is the key the
            // write used, so a caller that stores the reply itself can send
            // the same key and never end up with two messages.
            let message = failure.message();
            let (status, code) = match &failure {
                WriteFailure::Failed(e) if e.code == NOTIFICATION_ALREADY_ANSWERED => {
                    tracing::warn!(error = %message, "redelivered notification already answered");
                    (StatusCode::CONFLICT, NOTIFICATION_ALREADY_ANSWERED)
                }
                _ => {
                    tracing::error!(error = %message, "reply could not be persisted; returned in the 502 body");
                    (StatusCode::BAD_GATEWAY, "backend_write_failed")
                }
            };
            fire_webhook(app, p, Some(&task_id), Some(&answer), Some(&message));
            Err(ApiError::new(status, code, message).with_details(json!({
                "task_id": task_id,
                "response": answer.text,
                "usage": answer.usage,
                "cost": answer.cost,
                "model": answer.model,
                "provider": answer.provider,
                "write": match failure {
                    WriteFailure::Failed(_) => "failed",
                    WriteFailure::TimedOut => "timed_out",
                },
                "idempotency_key": message_key(&request_key),
            })))
        }
    }
}

/// `POST /api/agents/stream`.
pub(crate) async fn stream(
    app: &Arc<App>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let body = read_send_request(app, req).await?;
    start_stream(app, body).await
}

#[derive(Serialize)]
struct Chunk<'a> {
    r#type: &'static str,
    data: &'a str,
}

#[derive(Serialize)]
struct StreamError<'a> {
    r#type: &'static str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct Done<'a> {
    r#type: &'static str,
    usage: &'a Usage,
    cost: &'a Cost,
    model: &'a str,
    provider: &'a str,
    task_id: Option<&'a str>,
    message_id: Option<&'a str>,
    persisted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    persist_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_warning: Option<&'a Value>,
}

/// What a stream has consumed so far. It lives outside the LLM future so
/// that it survives that future being dropped (client gone, deadline), when
/// the tokens the provider already generated must still be accounted for.
struct Consumed {
    /// Characters of the prompt (system prompt and messages).
    prompt_chars: usize,
    /// The reply text received so far.
    text: String,
    /// Whether the provider accepted the request (from then on it bills).
    opened: bool,
}

impl Consumed {
    fn new(route: &RouteRequest) -> Self {
        let prompt_chars = route.system.as_deref().map_or(0, str::len)
            + route
                .messages
                .iter()
                .map(ChatMessage::text_len)
                .sum::<usize>();
        Self {
            prompt_chars,
            text: String::new(),
            opened: false,
        }
    }

    /// 0.1.0's estimate, `ceil(chars / 4)`, for prompt and reply so far.
    /// Bytes stand in for characters: the estimate errs high for non-Latin
    /// text, which is the safe side for spend accounting.
    fn estimate(&self) -> Usage {
        Usage::new(
            self.prompt_chars.div_ceil(4) as u64,
            self.text.len().div_ceil(4) as u64,
        )
    }
}

/// How the LLM phase of a stream ended.
enum Outcome {
    /// The provider finished: the complete answer, with its real usage.
    Answered(Answer),
    /// An error was reported to the client (and the webhook).
    Failed,
    /// The client went away, or the deadline passed, mid-generation.
    Abandoned,
}

/// Validation and task resolution happen before the `200` so that they can
/// still answer with a proper status (504 when the request deadline passes
/// while resolving, as for `send`); from then on failures are `error`
/// events. A request that names no task streams without persisting, as
/// 0.1.0's stream endpoint did (`done` says `persisted: false`).
///
/// A client that disconnects cancels the provider call, and what was
/// generated until then is recorded as estimated usage; once the LLM has
/// finished, the reply is persisted and announced even if nobody is left to
/// read the `done` event.
async fn start_stream(app: &Arc<App>, body: SendRequest) -> Result<http::Response<Body>, ApiError> {
    let (p, mut route) = prepare(app, body)?;
    let at = deadline_at(app);
    // Retry waits are weighed against what this request has left.
    route.deadline = Some(at);
    let task_id = {
        let timer = std::pin::pin!(tokio::time::sleep_until(at));
        let mut deadline = Deadline::new(app, timer);
        let resolved = resolve_task_within(app, &p, &mut deadline).await;
        if deadline.exceeded {
            fire_webhook(app, &p, None, None, Some("request deadline exceeded"));
        }
        resolved?
    };
    let permit = llm_permit(app)?;
    let (admitted, budget_warning) = admit(app, &p, &route).await?;
    let (resp, tx) = sse::response(&app.stream_cut);
    let app = app.clone();
    let work = async move {
        // The same deadline, continued in the task that outlives the handler.
        let timer = std::pin::pin!(tokio::time::sleep_until(at));
        let mut deadline = Deadline::new(&app, timer);
        app.metrics.streams_open.fetch_add(1, Relaxed);
        let mut consumed = Consumed::new(&route);
        let outcome = {
            // Pinned here, dropped with this block: `consumed` is free again below.
            let llm = std::pin::pin!(async {
                Ok(stream_llm(&app, &p, route, task_id.as_deref(), &tx, &mut consumed).await)
            });
            tokio::select! {
                () = tx.closed() => {
                    tracing::info!("client disconnected; stream cancelled");
                    Outcome::Abandoned
                }
                finished = deadline.bound(llm) => match finished {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        fire_webhook(&app, &p, task_id.as_deref(), None, Some(&e.message));
                        // Bounded: a client that stopped reading must not keep
                        // the permit below for as long as it holds the connection.
                        // Boxed: a cold state, kept out of the task's size.
                        Box::pin(tx.send_last("error", &StreamError { r#type: "error", error: &e.message, code: Some(e.code) })).await;
                        Outcome::Abandoned
                    }
                },
            }
        };
        drop(permit);
        match &outcome {
            Outcome::Answered(answer) => {
                let (usage, cost) = (&answer.usage, &answer.cost);
                governance::account(&app, admitted, p.key.user_id(), usage, cost, false).await;
            }
            Outcome::Abandoned if consumed.opened => {
                let cost = record_abandoned(&app, &p, &consumed);
                let usage = consumed.estimate();
                governance::account(&app, admitted, p.key.user_id(), &usage, &cost, true).await;
            }
            // Nothing paid for that the provider reported; released.
            Outcome::Abandoned | Outcome::Failed => governance::release(&app, admitted).await,
        }
        match outcome {
            // Boxed, like the provider call and the error paths in
            // `stream_llm`: the task's size is that of its largest await
            // point for the stream's whole life, and these states never
            // coexist with the long phase of relaying deltas. Together they
            // make the task ~800 B smaller (3,640 -> 2,848 B).
            Outcome::Answered(mut answer) => {
                answer.budget_warning = budget_warning;
                Box::pin(finish_stream(
                    &app,
                    &p,
                    task_id.as_deref(),
                    answer,
                    &tx,
                    &mut deadline,
                ))
                .await;
            }
            Outcome::Abandoned | Outcome::Failed => {}
        }
        app.metrics.streams_open.fetch_sub(1, Relaxed);
    };
    tokio::spawn(work.instrument(tracing::Span::current()));
    Ok(resp)
}

/// Records the usage of a stream cut before the provider reported it: the
/// provider bills what it generated, so the ledger and metrics must show it,
/// marked as an estimate. Priced on the model asked for first (a failover
/// model is only known from the final event). Returns that cost.
fn record_abandoned(app: &App, p: &Prepared, consumed: &Consumed) -> Cost {
    let usage = consumed.estimate();
    let cost = app.llm.pricing().cost(&p.primary.model, &usage);
    app.usage.record_estimate(p.key.user_id(), &usage, &cost);
    app.metrics.observe_llm(
        p.primary.provider.as_str(),
        &p.primary.model,
        true,
        usage.prompt_tokens,
        usage.completion_tokens,
        cost.total_micros(),
    );
    app.metrics.llm_usage_estimated.fetch_add(1, Relaxed);
    tracing::info!(
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        "abandoned stream: estimated usage recorded"
    );
    cost
}

/// Sends `error` to the client and the webhook.
async fn stream_failed(
    app: &App,
    p: &Prepared,
    task_id: Option<&str>,
    tx: &sse::SseSender,
    message: &str,
    code: &str,
) {
    fire_webhook(app, p, task_id, None, Some(message));
    tx.send(
        "error",
        &StreamError {
            r#type: "error",
            error: message,
            code: Some(code),
        },
    )
    .await;
}

/// The longest streamed reply kept (and relayed): the cap on a non-streamed
/// provider body.
const MAX_STREAMED_REPLY_BYTES: usize = wombat_llm::MAX_SUCCESS_BODY;

/// The LLM phase: `start`, then a `chunk` per delta, the text accumulating
/// in `consumed`.
async fn stream_llm(
    app: &App,
    p: &Prepared,
    route: RouteRequest,
    task_id: Option<&str>,
    tx: &sse::SseSender,
    consumed: &mut Consumed,
) -> Outcome {
    if !tx.send("start", &json!({"type": "start"})).await {
        return Outcome::Abandoned;
    }
    let mut events = match Box::pin(app.llm.stream(route)).await {
        Ok(s) => s,
        Err(e) => {
            let err = llm_error(app, &e);
            Box::pin(stream_failed(app, p, task_id, tx, &err.message, err.code)).await;
            return Outcome::Failed;
        }
    };
    consumed.opened = true;
    while let Some(event) = events.next().await {
        match event {
            Ok(RoutedEvent::Delta(delta)) => {
                // The same bound as a non-streamed reply's body: a provider
                // that never stops must not grow this without limit (the
                // deadline bounds time, not bytes). The tokens so far are
                // billed, so it counts as abandoned: usage is estimated.
                if consumed.text.len() + delta.len() > MAX_STREAMED_REPLY_BYTES {
                    let message = format!(
                        "LLM reply exceeded {} MiB; stream stopped",
                        MAX_STREAMED_REPLY_BYTES / (1024 * 1024)
                    );
                    Box::pin(stream_failed(
                        app,
                        p,
                        task_id,
                        tx,
                        &message,
                        "llm_reply_too_large",
                    ))
                    .await;
                    return Outcome::Abandoned;
                }
                consumed.text.push_str(&delta);
                let chunk = Chunk {
                    r#type: "chunk",
                    data: &delta,
                };
                if !tx.send("chunk", &chunk).await {
                    return Outcome::Abandoned;
                }
            }
            Ok(RoutedEvent::Done {
                usage,
                cost,
                provider,
                model,
                attempts,
                failovers,
                ..
            }) => {
                return Outcome::Answered(Answer {
                    text: std::mem::take(&mut consumed.text),
                    usage,
                    cost,
                    provider: provider.as_str(),
                    model,
                    attempts,
                    failovers,
                    budget_warning: None,
                });
            }
            // The daemon declares no tools to the model yet, so a provider
            // cannot send tool-call events here; should one anyway, it is not
            // text for the client.
            Ok(_) => {}
            Err(e) => {
                let err = llm_error(app, &e);
                Box::pin(stream_failed(app, p, task_id, tx, &err.message, err.code)).await;
                return Outcome::Failed;
            }
        }
    }
    stream_failed(
        app,
        p,
        task_id,
        tx,
        "LLM stream ended without a final event",
        "llm_stream_incomplete",
    )
    .await;
    Outcome::Failed
}

/// The persistence phase: usage, the backend write (under the same deadline
/// policy as `send`), the webhook, `done`.
async fn finish_stream(
    app: &App,
    p: &Prepared,
    task_id: Option<&str>,
    answer: Answer,
    tx: &sse::SseSender,
    deadline: &mut Deadline<'_>,
) {
    record(app, p.key.user_id(), &answer);
    let (message_id, persist_error) = match task_id {
        Some(task_id) => {
            let key = request_key(p);
            match persist_within(app, p, task_id, &answer, &key, deadline).await {
                Ok((id, _)) => (Some(id), None),
                Err(failure) => {
                    let message = failure.message();
                    tracing::error!(error = %message, "streamed reply could not be persisted");
                    (None, Some(message))
                }
            }
        }
        None => (None, None),
    };
    fire_webhook(app, p, task_id, Some(&answer), persist_error.as_deref());
    tx.send_last(
        "done",
        &Done {
            r#type: "done",
            usage: &answer.usage,
            cost: &answer.cost,
            model: &answer.model,
            provider: answer.provider,
            task_id,
            persisted: message_id.is_some(),
            message_id: message_id.as_deref(),
            persist_error: persist_error.as_deref(),
            context_warning: context_warning(app, &answer.model, answer.usage.prompt_tokens),
            budget_warning: answer.budget_warning.as_deref(),
        },
    )
    .await;
}
