//! `POST /api/agents/send` and `POST /api/agents/stream`: validate, resolve
//! the task thread, build the prompt, call the LLM, persist the reply,
//! notify the webhook, record usage.
//!
//! Order of effects, and why: everything that can be checked without I/O is
//! checked first (so a bad request costs nothing), then the task is resolved
//! (so a broken backend does not burn LLM money), then the LLM is called.
//! Once the LLM has answered, nothing is lost: usage is recorded before the
//! backend write, and a failed write returns the reply in the 502 body.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures::StreamExt;
use http::StatusCode;
use hyper::body::Incoming;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use wombat_core::controlplane::{ActorType, NewDocument, NewMessage};
use wombat_core::{ChatMessage, Cost, SessionKey, Usage};
use wombat_llm::{ModelChoice, RouteRequest, RoutedEvent, Tier};
use wombat_workspace::{PromptMode, PromptRequest};

use crate::app::App;
use crate::error::ApiError;
use crate::request::{Body, json_response, read_json};
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
    Ok(o)
}

/// A request that passed every check that needs no I/O.
struct Prepared {
    req: SendRequest,
    key: SessionKey,
    opts: Options,
    webhook: Option<Target>,
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
    let system = app
        .workspace
        .system_prompt(&prompt)
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
    app.llm
        .resolve(&route.model)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((
        Prepared {
            req,
            key,
            opts,
            webhook,
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
            idempotency_key: Some(format!("msg:{request_key}")),
        })
        .await
        .map_err(|e| backend_error(app, "posting the message", &e))?;
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
}

async fn read_send_request(
    app: &App,
    req: http::Request<Incoming>,
) -> Result<SendRequest, ApiError> {
    let (parts, body) = req.into_parts();
    read_json(&parts.headers, body, app.config.max_body_bytes).await
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
        let deadline = app.config.request_timeout;
        match tokio::time::timeout(deadline, send_inner(&app, &p, route)).await {
            Ok(result) => result,
            Err(_) => {
                fire_webhook(&app, &p, None, None, Some("request deadline exceeded"));
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "deadline_exceeded",
                    format!("request did not finish within {}s", deadline.as_secs()),
                ))
            }
        }
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
) -> Result<http::Response<Body>, ApiError> {
    let task_id = resolve_task(app, p)
        .await?
        .ok_or_else(|| ApiError::bad_request(NO_TASK))?;
    let permit = llm_permit(app)?;
    let routed = app.llm.complete(route).await;
    drop(permit);
    let routed = match routed {
        Ok(r) => r,
        Err(e) => {
            let err = llm_error(app, &e);
            fire_webhook(app, p, Some(&task_id), None, Some(&err.message));
            return Err(err);
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
    };
    record(app, p.key.user_id(), &answer);
    let request_key = uuid::Uuid::new_v4().simple().to_string();
    let warning = context_warning(app, &answer.model, answer.usage.prompt_tokens);
    match persist(app, p, &task_id, &answer, &request_key).await {
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
                },
            ))
        }
        Err(err) => {
            // Nothing lost: the caller gets the reply and can persist it.
            fire_webhook(app, p, Some(&task_id), Some(&answer), Some(&err.message));
            Err(
                ApiError::new(StatusCode::BAD_GATEWAY, "backend_write_failed", err.message)
                    .with_details(json!({
                        "task_id": task_id,
                        "response": answer.text,
                        "usage": answer.usage,
                        "cost": answer.cost,
                        "model": answer.model,
                        "provider": answer.provider,
                    })),
            )
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
}

/// Validation and task resolution happen before the `200` so that they can
/// still answer with a proper status; from then on failures are `error`
/// events. A request that names no task streams without persisting, as
/// 0.1.0's stream endpoint did (`done` says `persisted: false`).
///
/// A client that disconnects cancels the provider call; once the LLM has
/// finished, the reply is persisted and announced even if nobody is left to
/// read the `done` event.
async fn start_stream(app: &Arc<App>, body: SendRequest) -> Result<http::Response<Body>, ApiError> {
    let (p, route) = prepare(app, body)?;
    let task_id = resolve_task(app, &p).await?;
    let permit = llm_permit(app)?;
    let (resp, tx) = sse::response();
    let app = app.clone();
    let work = async move {
        app.metrics.streams_open.fetch_add(1, Relaxed);
        let deadline = app.config.request_timeout;
        let answer = tokio::select! {
            () = tx.closed() => {
                tracing::info!("client disconnected; stream cancelled");
                None
            }
            finished = tokio::time::timeout(deadline, stream_llm(&app, &p, route, task_id.as_deref(), &tx)) => match finished {
                Ok(answer) => answer,
                Err(_) => {
                    let msg = format!("request did not finish within {}s", deadline.as_secs());
                    fire_webhook(&app, &p, task_id.as_deref(), None, Some(&msg));
                    tx.send("error", &StreamError { r#type: "error", error: &msg, code: Some("deadline_exceeded") }).await;
                    None
                }
            },
        };
        drop(permit);
        if let Some(answer) = answer {
            // Boxed, like the provider call and the error paths in
            // `stream_llm`: the task's size is that of its largest await
            // point for the stream's whole life, and these states never
            // coexist with the long phase of relaying deltas. Together they
            // make the task ~800 B smaller (3,640 -> 2,848 B).
            Box::pin(finish_stream(&app, &p, task_id.as_deref(), answer, &tx)).await;
        }
        app.metrics.streams_open.fetch_sub(1, Relaxed);
    };
    tokio::spawn(work.instrument(tracing::Span::current()));
    Ok(resp)
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

/// The LLM phase: `start`, then a `chunk` per delta. Returns the complete
/// answer, or `None` when the stream failed (already reported) or the
/// client left.
async fn stream_llm(
    app: &App,
    p: &Prepared,
    route: RouteRequest,
    task_id: Option<&str>,
    tx: &sse::SseSender,
) -> Option<Answer> {
    if !tx.send("start", &json!({"type": "start"})).await {
        return None;
    }
    let mut events = match Box::pin(app.llm.stream(route)).await {
        Ok(s) => s,
        Err(e) => {
            let err = llm_error(app, &e);
            Box::pin(stream_failed(app, p, task_id, tx, &err.message, err.code)).await;
            return None;
        }
    };
    let mut text = String::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(RoutedEvent::Delta(delta)) => {
                text.push_str(&delta);
                let chunk = Chunk {
                    r#type: "chunk",
                    data: &delta,
                };
                if !tx.send("chunk", &chunk).await {
                    return None;
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
                return Some(Answer {
                    text,
                    usage,
                    cost,
                    provider: provider.as_str(),
                    model,
                    attempts,
                    failovers,
                });
            }
            Err(e) => {
                let err = llm_error(app, &e);
                Box::pin(stream_failed(app, p, task_id, tx, &err.message, err.code)).await;
                return None;
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
    None
}

/// The persistence phase: usage, the backend write, the webhook, `done`.
async fn finish_stream(
    app: &App,
    p: &Prepared,
    task_id: Option<&str>,
    answer: Answer,
    tx: &sse::SseSender,
) {
    record(app, p.key.user_id(), &answer);
    let (message_id, persist_error) = match task_id {
        Some(task_id) => {
            let key = uuid::Uuid::new_v4().simple().to_string();
            match persist(app, p, task_id, &answer, &key).await {
                Ok((id, _)) => (Some(id), None),
                Err(e) => {
                    tracing::error!(error = %e.message, "streamed reply could not be persisted");
                    (None, Some(e.message))
                }
            }
        }
        None => (None, None),
    };
    fire_webhook(app, p, task_id, Some(&answer), persist_error.as_deref());
    tx.send(
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
        },
    )
    .await;
}
