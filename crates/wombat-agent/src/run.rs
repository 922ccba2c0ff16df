//! The pipeline: [`prepare`] (checks without I/O), [`start`] (task, LLM
//! slot, admission), [`execute`] (LLM step, settle, record, persist,
//! webhook). `send` and `stream` both go through all three; they differ
//! only in their [`EventSink`] and in whether a task is required.
//!
//! Order of effects, and why: everything that can be checked without I/O is
//! checked first (so a bad request costs nothing), then the task is resolved
//! (so a broken backend does not burn LLM money), then the LLM is called.
//! Once the LLM has answered, nothing is lost: usage is recorded before the
//! backend write, and a failed write still returns the reply.

use std::time::Duration;

use futures::StreamExt;
use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value, json};
use wombat_controlplane::ControlPlane;
use wombat_core::json::JsonText;
use wombat_core::{
    ChatMessage, Cost, ModelRef, Part, Role, SessionKey, ToolCall, ToolResult, Usage,
};
use wombat_governance::Admitted;
use wombat_llm::{
    InvalidToolCall, ModelChoice, RouteRequest, RoutedEvent, Tier, ToolChoice, ToolSpec,
};
use wombat_workspace::PromptRequest;

use crate::ApiError;
use crate::deadline::Deadline;
use crate::events::EventSink;
use crate::host::Host;
use crate::options::{Options, options, warning_json};
use crate::persist::{
    NOTIFICATION_ALREADY_ANSWERED, WriteFailure, message_key, persist_within, request_key,
};
use crate::request::{CallerTool, SendRequest};
use crate::tools::{Tenant, ToolCallRef, ToolOutcome, bounded};

const DEFAULT_KICKOFF_NOTE: &str = "Draft a concise plan based on the user's request.";

/// Longest accepted `user_id` and task title. They end up in JWT claims,
/// backend queries and map keys, so they are bounded.
const MAX_ID_CHARS: usize = 256;
const MAX_TITLE_CHARS: usize = 1024;

/// The error of a send that names no task (0.1.0's message).
pub const NO_TASK: &str =
    "Task not specified. Provide task_id, task_title, or set WOMBAT_DEFAULT_TASK env var.";

/// A request that passed every check that needs no I/O: what the run knows
/// of it, and its first LLM request.
pub struct Prepared<H: Host> {
    info: RunInfo<H>,
    /// The LLM request. It stays here for the whole run (the loop changes
    /// it while it reads [`RunInfo`]): one copy per run, not a second one
    /// beside a moved-out placeholder.
    route: RouteRequest,
}

/// What a run knows of its request, read (never changed) from its start to
/// its end. A [`Prepared`] dereferences to it.
pub struct RunInfo<H: Host> {
    pub(crate) req: SendRequest,
    pub(crate) key: SessionKey,
    pub(crate) opts: Options,
    /// Boxed: most requests have none, and this struct lives (in a box
    /// sized to the allocator's next class up) for a whole run, a held
    /// stream's included; inline, a target took 136 bytes of every run.
    webhook: Option<Box<H::Webhook>>,
    /// The model asked for first (the one billed when a stream is abandoned
    /// before the provider reports which model answered).
    primary: ModelRef,
    /// Names of the request's caller tools (their specs are in the route).
    caller_tools: Vec<String>,
}

impl<H: Host> std::ops::Deref for Prepared<H> {
    type Target = RunInfo<H>;

    fn deref(&self) -> &RunInfo<H> {
        &self.info
    }
}

/// An empty request standing in for one moved out (no allocation).
fn placeholder() -> RouteRequest {
    RouteRequest::new(ModelChoice::Tier(Tier::Default), Vec::new())
}

/// Most caller tools one request may declare.
const MAX_CALLER_TOOLS: usize = 128;

/// Whether `name` is a tool name every provider accepts
/// (`[A-Za-z0-9_-]{1,64}`).
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The request's `tools`, checked: OpenAI's function shape, valid unique
/// names, object schemas.
fn caller_tools(tools: &[CallerTool]) -> Result<Vec<ToolSpec>, ApiError> {
    if tools.len() > MAX_CALLER_TOOLS {
        return Err(ApiError::bad_request(format!(
            "tools has {} entries; at most {MAX_CALLER_TOOLS} are accepted",
            tools.len()
        )));
    }
    let mut specs: Vec<ToolSpec> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::bad_request(format!(
                "tools[{i}].type must be \"function\", got {:?}",
                t.kind
            )));
        }
        let name = &t.function.name;
        if !valid_tool_name(name) {
            return Err(ApiError::bad_request(format!(
                "tools[{i}].function.name must be 1-64 characters of A-Z, a-z, 0-9, _ or -, got {name:?}"
            )));
        }
        if specs.iter().any(|s| &s.name == name) {
            return Err(ApiError::bad_request(format!(
                "tools[{i}].function.name {name:?} is declared twice"
            )));
        }
        let parameters = match &t.function.parameters {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "tools[{i}].function.parameters must be a JSON Schema object"
                )));
            }
        };
        let mut spec = ToolSpec::new(name.clone(), parameters);
        spec.description.clone_from(&t.function.description);
        specs.push(spec);
    }
    Ok(specs)
}

/// Maps a workspace error (bad role, unknown zone) to 400.
pub fn workspace_error(e: wombat_workspace::Error) -> ApiError {
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

/// Checks a request without I/O and builds its first LLM request.
///
/// Boxed (~1 KB): it moves into the run's start and on into the run's
/// state, and every async frame it passes through by value lays it out
/// (twice: argument and local) and copies it.
///
/// # Errors
/// 400 naming the problem (empty or over-long fields, bad session key,
/// metadata of the wrong type, unknown model, unusable webhook).
pub fn prepare<H: Host>(host: &H, mut req: SendRequest) -> Result<Box<Prepared<H>>, ApiError> {
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
    // A request that carries the results of caller tools continues the
    // model's turn: it may come without a new user message.
    // The history and the caller's tool definitions move into the LLM
    // request: the run keeps `req` to its end, and a copy of either would
    // live (and be cloned per send) beside it.
    let history = std::mem::take(&mut req.messages);
    let continues = history.last().is_some_and(|m| m.role == Role::Tool);
    if req.message.trim().is_empty() && !continues {
        return Err(ApiError::bad_request("message must not be empty"));
    }
    let key = SessionKey::parse_for_user(&req.session_key, &req.user_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let opts = options(req.metadata.as_ref())?;
    let webhook = req
        .webhook
        .as_deref()
        .map(|w| host.validate_webhook(w).map(Box::new))
        .transpose()?;
    let mut prompt = PromptRequest::new(key.role(), jiff::Timestamp::now()).mode(opts.mode);
    if let Some(tz) = &opts.timezone {
        prompt = prompt.timezone(tz);
    }
    if let Some(sp) = &opts.system_prompt {
        prompt = prompt.system_prompt(sp);
    }
    let system = wombat_telemetry::otel_span!("build_prompt")
        .in_scope(|| host.workspace().system_prompt(&prompt))
        .map_err(workspace_error)?;
    let user_message = if opts.kickoff_plan {
        let note = opts.kickoff_note.as_deref().unwrap_or(DEFAULT_KICKOFF_NOTE);
        format!("{note}\n\nUser request: {}", req.message)
    } else {
        req.message.clone()
    };
    let mut messages = history;
    messages.reserve_exact(1);
    if !req.message.trim().is_empty() {
        messages.push(ChatMessage::user(user_message));
    }
    let specs = match req.tools.take() {
        Some(tools) => caller_tools(&tools)?,
        None => Vec::new(),
    };
    let caller_tools = specs.iter().map(|s| s.name.clone()).collect();
    let mut route = RouteRequest::new(opts.model.clone(), messages);
    route.tools = specs;
    route.system = Some(system);
    // 0.1.0 always sent a temperature (0.4); so do we, so that switching
    // daemons does not change how the model writes.
    route.temperature = Some(opts.temperature.unwrap_or(host.settings().temperature));
    let primary = host
        .llm()
        .resolve(&route.model)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Box::new(Prepared {
        info: RunInfo {
            req,
            key,
            opts,
            webhook,
            primary,
            caller_tools,
        },
        route,
    }))
}

/// The backend, or 503 when none is configured.
pub(crate) fn backend<H: Host>(host: &H) -> Result<&ControlPlane, ApiError> {
    host.control_plane().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_not_configured",
            "backend not configured: set BACKEND_URL and AGENT_JWT_SECRET",
        )
    })
}

/// A failed backend call as the API reports it (504 for a timeout, else 502).
pub(crate) fn backend_error<H: Host>(
    host: &H,
    doing: &str,
    e: &wombat_controlplane::Error,
) -> ApiError {
    host.backend_failed();
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

/// Maps an LLM failure to the API: which provider/model failed and why
/// (and counts the failed call).
pub fn llm_error<H: Host + ?Sized>(host: &H, e: &wombat_llm::Error) -> ApiError {
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
    } else if e.kind() == wombat_llm::ErrorKind::MissingApiKey {
        (StatusCode::SERVICE_UNAVAILABLE, "llm_not_configured")
    } else {
        (StatusCode::BAD_GATEWAY, e.code())
    };
    if let Some(f) = e.failure() {
        host.observe_llm(f.provider.as_str(), &f.model, false, &Usage::default(), 0);
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

/// Resolves the task thread: `task_id`, else find-or-create by `task_title`,
/// else by `WOMBAT_DEFAULT_TASK`. `Ok(None)` when none was specified.
async fn resolve_task<H: Host>(host: &H, p: &RunInfo<H>) -> Result<Option<String>, ApiError> {
    if let Some(id) = p.req.task_id.as_ref().filter(|s| !s.is_empty()) {
        // The reply will have to be written: without a backend, refuse
        // before any tokens are spent.
        backend(host)?;
        return Ok(Some(id.clone()));
    }
    let Some(title) = p
        .req
        .task_title
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .or(host.settings().default_task.as_deref())
    else {
        return Ok(None);
    };
    let backend = backend(host)?;
    let agent = backend.agent(p.key.user_id(), p.key.role());
    let id = agent
        .find_or_create_task_id(
            title,
            p.req.task_description.as_deref(),
            p.req.task_metadata.clone(),
        )
        .instrument(wombat_telemetry::otel_span!("resolve_task"))
        .await
        .map_err(|e| backend_error(host, "resolving the task", &e))?;
    Ok(Some(id))
}

use tracing::Instrument;

/// A run past its checks: task resolved, tools listed, LLM slot taken,
/// first step admitted. Everything from here on is reported through the
/// sink.
///
/// Boxed: it moves from the handler into a stream's task and then into
/// [`execute`], and every async frame it passes through by value keeps a
/// slot of its size; a pointer keeps a held stream's task small.
pub struct Started<H: Host>(Box<StartedParts<H>>);

struct StartedParts<H: Host> {
    p: Box<Prepared<H>>,
    task_id: Option<String>,
    /// Held until the LLM phase ends (`None` after).
    permit: Option<H::Permit>,
    admitted: Option<Admitted>,
    /// The soft-limit warning of the admission (boxed: rare, and this lives
    /// in a stream's task).
    budget_warning: Option<Box<Value>>,
    /// Names of the tools the host's [`crate::tools::ToolSource`] offers
    /// this tenant (empty without one).
    server_tools: Vec<String>,
    /// Those of them that need a person's approval.
    approval_tools: Vec<String>,
    /// The approved (or rejected) call this send resumed, if any.
    resumed: Vec<TraceEntry>,
}

impl<H: Host> Started<H> {
    /// The task the reply will be written to (`None`: a stream that names
    /// no task, which is not persisted).
    pub fn task_id(&self) -> Option<&str> {
        self.0.task_id.as_deref()
    }
}

/// The tenant of a request, for tool sources.
fn tenant<'a, H: Host>(p: &'a RunInfo<H>, token: Option<&'a str>) -> Tenant<'a> {
    Tenant {
        user_id: p.key.user_id(),
        role: p.key.role(),
        agent_token: token,
        traceparent: None,
    }
}

/// Declares the host's tools for this tenant to the model. A source that
/// cannot list its tools leaves them out (logged): the run goes on, as with
/// a tool server that is down. A caller tool named like a server tool is
/// refused (names must be unique).
async fn list_tools<H: Host>(
    host: &H,
    p: &mut Prepared<H>,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let Some(source) = host.tool_source() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let token = host.agent_token(p.key.user_id(), p.key.role());
    let listed = source.list(tenant(p, token.as_deref())).await;
    let tools = match listed {
        Ok(tools) => tools,
        Err(e) => {
            tracing::warn!(error = %e, "tools unavailable for this request");
            return Ok((Vec::new(), Vec::new()));
        }
    };
    let mut names = Vec::with_capacity(tools.len());
    let mut approval = Vec::new();
    for t in tools {
        if p.caller_tools.contains(&t.name) {
            return Err(ApiError::bad_request(format!(
                "tool name {:?} is already a server tool; rename the caller tool",
                t.name
            )));
        }
        if names.contains(&t.name) {
            continue;
        }
        if t.requires_approval {
            if host.control_plane().is_none() {
                // Approvals are tool requests in the backend: without one,
                // a tool that needs an approval is not offered at all.
                continue;
            }
            approval.push(t.name.clone());
        }
        let mut spec = ToolSpec::new(t.name.clone(), t.input_schema);
        spec.description = Some(t.description);
        p.route.tools.push(spec);
        names.push(t.name);
    }
    Ok((names, approval))
}

/// Resolves the task under the request deadline, lists the tools, takes an
/// LLM slot and admits the first step. Failures here still have a status of
/// their own (a stream has not answered `200` yet). `require_task`: a
/// request that names no task is refused (`send`) rather than run
/// unpersisted (`stream`, as 0.1.0's stream endpoint did).
///
/// # Errors
/// 400 (no task, tool name clash), 502/503/504 (backend), 429
/// (overloaded, limits).
pub async fn start<H: Host>(
    host: &H,
    mut p: Box<Prepared<H>>,
    deadline: &mut Deadline<'_>,
    require_task: bool,
) -> Result<Started<H>, ApiError> {
    // Retry waits are weighed against what this request has left.
    p.route.deadline = Some(deadline.at());
    let resolved = deadline.bound(std::pin::pin!(resolve_task(host, &p))).await;
    if deadline.exceeded() {
        fire_webhook(host, &p, None, None, Some("request deadline exceeded"));
    }
    let task_id = resolved?;
    if require_task && task_id.is_none() {
        return Err(ApiError::bad_request(NO_TASK));
    }
    let (server_tools, approval_tools) = if host.tool_source().is_some() {
        let listed = deadline
            .bound(std::pin::pin!(list_tools(host, &mut p)))
            .await;
        if deadline.exceeded() {
            fire_webhook(
                host,
                &p,
                task_id.as_deref(),
                None,
                Some("request deadline exceeded"),
            );
        }
        listed?
    } else {
        (Vec::new(), Vec::new())
    };
    let permit = host.llm_permit()?;
    let admitted = host
        .admit(
            p.key.user_id(),
            p.opts.limits.as_deref(),
            &p.route,
            &p.primary.model,
        )
        .await?;
    let budget_warning = admitted
        .as_ref()
        .and_then(|a| a.warning.as_ref())
        .map(|w| Box::new(warning_json(w)));
    let mut resumed = Vec::new();
    if let Some(id) = crate::approval::resume_id(p.req.metadata.as_ref()) {
        let result = Box::pin(resume(host, &mut p, task_id.as_deref(), &id, &server_tools)).await;
        match result {
            Ok(entry) => resumed.push(entry),
            Err(e) => {
                host.release(admitted).await;
                return Err(e);
            }
        }
    }
    Ok(Started(Box::new(StartedParts {
        p,
        task_id,
        permit: Some(permit),
        admitted,
        budget_warning,
        server_tools,
        approval_tools,
        resumed,
    })))
}

/// Resumes an approval: consumes the decision (at most once), runs the
/// approved call (or tells the model it was rejected) and rebuilds the turn
/// from the request's context, the result last.
async fn resume<H: Host>(
    host: &H,
    p: &mut Prepared<H>,
    task_id: Option<&str>,
    id: &str,
    server_tools: &[String],
) -> Result<TraceEntry, ApiError> {
    if task_id.is_none() {
        return Err(ApiError::bad_request(
            "metadata.tool_request_id needs the task it belongs to (task_id or task_title)",
        ));
    }
    let agent = backend(host)?.agent(p.key.user_id(), p.key.role());
    let record = crate::approval::consume(&agent, id).await?;
    let arguments = match &record.arguments {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let call = ToolCall::new(record.call_id.clone(), record.tool.clone(), arguments);
    let limits = host.settings().tools;
    let (call, outcome, took) = if crate::approval::approved(&record) {
        if server_tools.contains(&record.tool) {
            let token = host.agent_token(p.key.user_id(), p.key.role());
            let mut ran = run_calls(host, p, token.as_deref(), vec![call], limits).await;
            ran.pop().ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "tool call lost",
                )
            })?
        } else {
            let outcome = ToolOutcome::error(format!(
                "tool {} was approved but is no longer available",
                record.tool
            ));
            (call, outcome, Duration::ZERO)
        }
    } else {
        let reason = record
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let outcome = ToolOutcome::error(format!("a person rejected this call{reason}"));
        (call, outcome, Duration::ZERO)
    };
    tracing::info!(tool = %call.name.escape_debug(), approved = crate::approval::approved(&record), "approval resumed");
    host.observe_tool(&call.name, outcome.is_error, took);
    // The turn goes on from the call: the send's own message (the
    // notification's text) is not added after the result.
    if !p.req.message.trim().is_empty() {
        p.route.messages.pop();
    }
    p.route.messages.extend(crate::approval::turn(&record));
    let content = bounded(outcome.content, limits.max_result_bytes);
    let entry = TraceEntry {
        id: call.id.clone(),
        name: call.name,
        arguments: call.arguments,
        is_error: outcome.is_error,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        result: crate::tools::truncate(&content.to_text(), TRACE_RESULT_BYTES).into_owned(),
    };
    let mut result = ToolResult::new(call.id, content);
    result.is_error = outcome.is_error;
    p.route.messages.push(ChatMessage::tool_result(result));
    Ok(entry)
}

/// One executed (or refused) tool call, for the message attachment and the
/// webhook.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEntry {
    /// The call's id.
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments the model gave.
    pub arguments: Map<String, Value>,
    /// Whether it failed.
    pub is_error: bool,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The start of the result (at most [`TRACE_RESULT_BYTES`] bytes).
    pub result: String,
}

/// How much of a tool result the trace keeps.
pub const TRACE_RESULT_BYTES: usize = 512;

/// What the LLM produced over the run, however it was called.
#[derive(Debug)]
pub struct Answer {
    /// The reply text (of the last step).
    pub text: String,
    /// Usage of the run, summed over its steps.
    pub usage: Usage,
    /// Cost of the run, summed over its steps.
    pub cost: Cost,
    /// The provider that answered last.
    pub provider: &'static str,
    /// The model that answered last.
    pub model: String,
    attempts: u32,
    failovers: u32,
    /// Prompt tokens of the last step (for the context warning).
    prompt_tokens: u64,
    /// The soft-limit warning of the admission, for the response and webhook.
    pub budget_warning: Option<Box<Value>>,
    /// The tool calls the run executed, in order.
    pub trace: Vec<TraceEntry>,
    /// The tool requests the run waits for (`awaiting_approval`):
    /// `[{id, tool, arguments}]`.
    pub tool_requests: Option<Value>,
}

impl Answer {
    /// The message's `attachments`, written once, straight from the answer
    /// (keys in the order a JSON object of them had before: sorted). The
    /// bytes are those serde_json writes for [`Attachment`]: see the test.
    pub(crate) fn attachment(&self) -> JsonText {
        JsonText::object(|obj| {
            obj.with("cost", |out| self.cost.write_json(out))
                .str("model", &self.model)
                .str("provider", self.provider)
                .opt_value("tool_requests", self.tool_requests.as_ref());
            if !self.trace.is_empty() {
                obj.value("tools", &self.trace);
            }
            obj.with("usage", |out| self.usage.write_json(out));
        })
    }

    /// Adds a later step's answer: usage and cost summed, the rest taken
    /// from the later step.
    fn then(self, next: Answer) -> Answer {
        Answer {
            usage: self.usage + next.usage,
            cost: next.cost.combine(&self.cost),
            trace: self.trace,
            budget_warning: self.budget_warning,
            tool_requests: self.tool_requests,
            ..next
        }
    }
}

/// Whether and where the reply was stored.
#[derive(Debug)]
pub enum Persisted {
    /// No task was named (a stream): nothing to store.
    NoTask,
    /// The run waits for the caller's tool results: nothing is written for
    /// this turn.
    Deferred,
    /// Stored.
    Stored {
        /// The agent message.
        message_id: String,
        /// The plan document of a kickoff.
        document_id: Option<String>,
    },
    /// Not stored; the reply is still returned.
    Failed {
        /// Why.
        failure: WriteFailure,
        /// The key the write used: a caller that stores the reply itself
        /// sends the same key and never ends up with two messages.
        idempotency_key: String,
    },
}

/// The model called caller tools: the caller executes them and sends the
/// results in the next request's `messages`.
#[derive(Debug)]
pub struct RequiresAction {
    /// The calls for the caller, in OpenAI's shape
    /// (`[{id, type: "function", function: {name, arguments}}]`).
    pub tool_calls: Value,
    /// The messages of this turn to append to the history before the
    /// caller's results: the assistant message with every call of the
    /// turn, and the results of the calls the daemon ran itself.
    pub messages: Value,
}

/// A finished run.
#[derive(Debug)]
pub struct Reply {
    /// The task the reply belongs to.
    pub task_id: Option<String>,
    /// What the LLM answered.
    pub answer: Answer,
    /// Set when the prompt filled much of the model's context window.
    pub context_warning: Option<String>,
    /// Whether it was stored.
    pub persisted: Persisted,
    /// Set when the run stopped for the caller's tools.
    pub requires_action: Option<RequiresAction>,
}

impl Reply {
    /// The error a caller that waits for the whole reply gets when the
    /// write failed: 409 for a redelivered notification that already has a
    /// reply, else 502 `backend_write_failed`, with the reply in `details`
    /// so nothing is lost. `None` when nothing failed.
    pub fn write_error(&self) -> Option<ApiError> {
        let Persisted::Failed {
            failure,
            idempotency_key,
        } = &self.persisted
        else {
            return None;
        };
        let (status, code) = match failure {
            WriteFailure::Failed(e) if e.code == NOTIFICATION_ALREADY_ANSWERED => {
                (StatusCode::CONFLICT, NOTIFICATION_ALREADY_ANSWERED)
            }
            _ => (StatusCode::BAD_GATEWAY, "backend_write_failed"),
        };
        let a = &self.answer;
        Some(
            ApiError::new(status, code, failure.message()).with_details(json!({
                "task_id": self.task_id,
                "response": a.text,
                "usage": a.usage,
                "cost": a.cost,
                "model": a.model,
                "provider": a.provider,
                "write": match failure {
                    WriteFailure::Failed(_) => "failed",
                    WriteFailure::TimedOut => "timed_out",
                },
                "idempotency_key": idempotency_key,
            })),
        )
    }
}

/// Why a run stopped without a reply.
#[derive(Debug)]
pub enum Stop {
    /// A failure, already announced to the webhook; the caller reports it
    /// (status or `error` event).
    Failed(ApiError),
    /// The client went away; nothing left to report to.
    Abandoned,
}

/// What one step has consumed so far. It lives outside the LLM future so
/// that it survives that future being dropped (client gone, deadline), when
/// the tokens the provider already generated must still be accounted for.
#[derive(Default)]
struct Consumed {
    /// Characters of the prompt (system prompt and messages).
    prompt_chars: usize,
    /// The reply text received so far.
    text: String,
    /// Whether the provider accepted the request (from then on it bills).
    opened: bool,
    /// Whether the sink was told the LLM phase began (`start`, once).
    started: bool,
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
            started: false,
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

/// How one LLM step ended.
#[expect(
    clippy::large_enum_variant,
    reason = "the answer is the common case; boxing it would cost every send an allocation"
)]
enum StepEnd {
    /// The provider finished: the complete answer, with its real usage, and
    /// the tool calls it asked for.
    Answered(Answer, Vec<ToolCall>, Vec<InvalidToolCall>),
    /// The provider failed; nothing known was consumed (released).
    Failed(ApiError),
    /// Cut mid-generation (client gone: `None`; deadline or size: the
    /// error): what was generated is billed on an estimate.
    Cut(Option<ApiError>),
}

/// How the whole loop ended.
enum LoopEnd {
    /// A text answer.
    Answered(Answer),
    /// The model called caller tools.
    RequiresAction(Answer, RequiresAction),
    /// The model called tools that need an approval: requests created.
    AwaitingApproval(Answer),
    /// A step failed, or a later step was refused by the limits.
    Failed(ApiError),
    /// A step was cut (see [`StepEnd::Cut`]).
    Cut(Option<ApiError>),
}

/// What the loop has consumed so far, outside its future so that it
/// survives that future being dropped (client gone, deadline).
struct Ledger {
    /// The current step.
    consumed: Consumed,
    /// The current step's admission, until it is settled.
    admitted: Option<Admitted>,
    /// The steps answered so far, summed (`None` before the first; boxed:
    /// only a run with tools has one, and the ledger lives in every run's
    /// frame).
    total: Option<Box<Answer>>,
}

/// The longest streamed reply kept (and relayed): the cap on a non-streamed
/// provider body.
const MAX_STREAMED_REPLY_BYTES: usize = wombat_llm::MAX_SUCCESS_BODY;

/// Runs the LLM steps (and tool calls between them) and everything after:
/// settle, record, persist, webhook. A client that goes away (the sink
/// closes) cancels the current step, and what it generated until then is
/// recorded as estimated usage beside the steps already answered; once the
/// LLM has answered, the reply is persisted and announced even if nobody is
/// left to read it.
///
/// # Errors
/// [`Stop::Failed`] with the error to report (already sent to the webhook),
/// or [`Stop::Abandoned`] when the client is gone.
pub async fn execute<H: Host, S: EventSink>(
    host: &H,
    run: Started<H>,
    sink: &S,
    deadline: &mut Deadline<'_>,
) -> Result<Reply, Stop> {
    // The run's state stays behind its box, used through references: moved
    // out, every part would be a slot of this future, which a stream's task
    // holds for as long as the stream is open.
    let mut run = run.0;
    let StartedParts {
        p,
        task_id,
        admitted,
        server_tools,
        approval_tools,
        ..
    } = &mut *run;
    // The loop changes the route and reads the rest.
    let Prepared { info: p, route } = &mut **p;
    let p = &*p;
    let mut ledger = Ledger {
        consumed: Consumed::default(),
        admitted: admitted.take(),
        total: None,
    };
    let end = {
        // Pinned here, dropped with this block: `ledger` is free again below.
        let work = std::pin::pin!(async {
            let tools = Tools {
                server: server_tools,
                approval: approval_tools,
            };
            Ok(run_loop(host, p, task_id.as_deref(), route, tools, sink, &mut ledger).await)
        });
        tokio::select! {
            biased;
            () = sink.closed() => {
                tracing::info!("client disconnected; stream cancelled");
                LoopEnd::Cut(None)
            }
            finished = deadline.bound(work) => finished.unwrap_or_else(|e| LoopEnd::Cut(Some(e))),
        }
    };
    // Everything after the LLM phase in its own future, boxed for a stream
    // (`S::cold`): `end` and what follows from it never take room in the
    // future a held stream waits in.
    S::cold(conclude::<H, S>(host, &mut run, ledger, end, deadline)).await
}

/// The run after its LLM phase: release or settle, record, persist, webhook.
async fn conclude<H: Host, S: EventSink>(
    host: &H,
    run: &mut StartedParts<H>,
    mut ledger: Ledger,
    end: LoopEnd,
    deadline: &mut Deadline<'_>,
) -> Result<Reply, Stop> {
    let StartedParts {
        p,
        task_id,
        permit,
        budget_warning,
        resumed,
        ..
    } = run;
    let p = &*p;
    drop(permit.take());
    let (mut answer, requires_action) = match end {
        LoopEnd::Answered(answer) | LoopEnd::AwaitingApproval(answer) => (answer, None),
        LoopEnd::RequiresAction(answer, action) => (answer, Some(action)),
        LoopEnd::Failed(e) => {
            host.release(ledger.admitted.take()).await;
            record_partial(host, p, ledger.total.as_deref(), false);
            fire_webhook(host, p, task_id.as_deref(), None, Some(&e.message));
            return Err(Stop::Failed(e));
        }
        LoopEnd::Cut(error) => {
            let mut estimated = false;
            let total = if ledger.consumed.opened {
                let (usage, cost) = estimate_cut(host, p, &ledger.consumed);
                host.account(ledger.admitted.take(), p.key.user_id(), &usage, &cost, true)
                    .await;
                estimated = true;
                Some(match ledger.total.take() {
                    Some(t) => (t.usage + usage, cost.combine(&t.cost)),
                    None => (usage, cost),
                })
            } else {
                // Nothing paid for that the provider reported; released.
                host.release(ledger.admitted.take()).await;
                ledger.total.take().map(|t| (t.usage, t.cost))
            };
            if let Some((usage, cost)) = total {
                host.record_usage(p.key.user_id(), &usage, &cost, estimated);
            }
            return Err(match error {
                Some(e) => {
                    let message = if e.code == "deadline_exceeded" {
                        "request deadline exceeded"
                    } else {
                        e.message.as_str()
                    };
                    fire_webhook(host, p, task_id.as_deref(), None, Some(message));
                    Stop::Failed(e)
                }
                None => Stop::Abandoned,
            });
        }
    };
    answer.budget_warning = budget_warning.take();
    if !resumed.is_empty() {
        let later = std::mem::take(&mut answer.trace);
        answer.trace = std::mem::take(resumed);
        answer.trace.extend(later);
    }
    if answer.tool_requests.is_some() && answer.text.is_empty() {
        answer.text = "Waiting for a person to approve a tool call.".to_owned();
    }
    // From here on the reply is paid for: nothing may drop it.
    host.record_usage(p.key.user_id(), &answer.usage, &answer.cost, false);
    let context_warning = context_warning(host, &answer.model, answer.prompt_tokens);
    if let Some(action) = requires_action {
        fire_requires_action(host, p, task_id.as_deref(), &answer, &action);
        return Ok(Reply {
            task_id: task_id.take(),
            answer,
            context_warning,
            persisted: Persisted::Deferred,
            requires_action: Some(action),
        });
    }
    let persisted = match task_id.as_deref() {
        Some(task) => {
            let key = request_key(p);
            match S::cold(persist_within(host, p, task, &answer, &key, deadline)).await {
                Ok((message_id, document_id)) => Persisted::Stored {
                    message_id,
                    document_id,
                },
                Err(failure) => {
                    let message = failure.message();
                    match &failure {
                        WriteFailure::Failed(e) if e.code == NOTIFICATION_ALREADY_ANSWERED => {
                            tracing::warn!(error = %message, "redelivered notification already answered");
                        }
                        _ => {
                            tracing::error!(error = %message, "reply could not be persisted; returned to the caller")
                        }
                    }
                    Persisted::Failed {
                        failure,
                        idempotency_key: message_key(&key),
                    }
                }
            }
        }
        None => Persisted::NoTask,
    };
    let persist_error = match &persisted {
        Persisted::Failed { failure, .. } => Some(failure.message()),
        _ => None,
    };
    fire_webhook(
        host,
        p,
        task_id.as_deref(),
        Some(&answer),
        persist_error.as_deref(),
    );
    Ok(Reply {
        task_id: task_id.take(),
        answer,
        context_warning,
        persisted,
        requires_action: None,
    })
}

/// Records the usage of the steps a failed run had already paid for.
fn record_partial<H: Host>(host: &H, p: &RunInfo<H>, total: Option<&Answer>, estimated: bool) {
    if let Some(t) = total {
        host.record_usage(p.key.user_id(), &t.usage, &t.cost, estimated);
    }
}

/// The host's tools of a run.
#[derive(Clone, Copy)]
struct Tools<'a> {
    server: &'a [String],
    approval: &'a [String],
}

/// Where a call goes.
enum Target {
    /// The host's tool source runs it, once a person approved it.
    Approval,
    /// The host's tool source runs it.
    Server,
    /// The caller runs it (the run stops with `requires_action`).
    Caller,
}

/// The loop: a step, its tool calls, the next step, … until a text answer,
/// caller tools, or the step limit.
async fn run_loop<H: Host, S: EventSink>(
    host: &H,
    p: &RunInfo<H>,
    task_id: Option<&str>,
    route: &mut RouteRequest,
    tools: Tools<'_>,
    sink: &S,
    ledger: &mut Ledger,
) -> LoopEnd {
    let limits = host.settings().tools;
    // Where this turn began (its user message): what an approval request
    // stores to rebuild it.
    let turn_begin = route
        .messages
        .iter()
        .rposition(|m| m.role == Role::User)
        .unwrap_or(0);
    let mut step_no: u32 = 0;
    let mut token: Option<Option<String>> = None;
    loop {
        step_no += 1;
        if step_no > 1 {
            // Each step is admitted (and reserved) on its own: a long loop
            // cannot outspend the budget by more than one step's estimate.
            // Boxed: only a run that called tools gets here, and the
            // admission's future would otherwise size every step's frame.
            match Box::pin(host.admit(
                p.key.user_id(),
                p.opts.limits.as_deref(),
                route,
                &p.primary.model,
            ))
            .await
            {
                Ok(a) => ledger.admitted = a,
                Err(e) => return LoopEnd::Failed(e),
            }
        }
        let last = step_no >= limits.max_steps;
        if last && !route.tools.is_empty() {
            // The last step allowed must answer in text.
            route.tool_choice = Some(ToolChoice::None);
        }
        // Without tools there is exactly one step: the request moves into
        // it, no copy.
        let mut request = Some(if route.tools.is_empty() {
            std::mem::replace(route, placeholder())
        } else {
            route.clone()
        });
        if S::STREAMING {
            // Only a stream can be cut mid-step and need the estimate.
            let started = ledger.consumed.started;
            ledger.consumed = request.as_ref().map(Consumed::new).unwrap_or_default();
            ledger.consumed.started = started;
        }
        let stepped = step(host, &mut request, sink, &mut ledger.consumed).await;
        let cx = Cx {
            host,
            p,
            task_id,
            tools,
            sink,
            limits,
            turn_begin,
            last,
        };
        // What follows a step in its own future, boxed for a stream
        // (`S::cold`): the answer and the calls never take room in the
        // future a held stream waits in.
        let next = S::cold(after_step(cx, route, ledger, &mut token, stepped)).await;
        if let Some(end) = next {
            return end;
        }
    }
}

/// After a step: settle it, then the answer, or the tool phase (`None`:
/// the loop goes on with the next step).
async fn after_step<H: Host, S: EventSink>(
    cx: Cx<'_, H, S>,
    route: &mut RouteRequest,
    ledger: &mut Ledger,
    token: &mut Option<Option<String>>,
    stepped: StepEnd,
) -> Option<LoopEnd> {
    let host = cx.host;
    let (answer, calls, invalid) = match stepped {
        StepEnd::Answered(a, calls, invalid) => (a, calls, invalid),
        StepEnd::Failed(e) => return Some(LoopEnd::Failed(e)),
        StepEnd::Cut(e) => return Some(LoopEnd::Cut(e)),
    };
    ledger.consumed.opened = false;
    host.observe_llm(
        answer.provider,
        &answer.model,
        true,
        &answer.usage,
        answer.cost.total_micros(),
    );
    host.observe_route(answer.attempts, answer.failovers);
    host.account(
        ledger.admitted.take(),
        cx.p.key.user_id(),
        &answer.usage,
        &answer.cost,
        false,
    )
    .await;
    if calls.is_empty() && invalid.is_empty() {
        return Some(LoopEnd::Answered(match ledger.total.take() {
            Some(t) => t.then(answer),
            None => answer,
        }));
    }
    // Boxed: a cold phase for a run without tools.
    Box::pin(after_calls(
        cx,
        route,
        ledger,
        token,
        (answer, calls, invalid),
    ))
    .await
}

/// What the tool phase of a step works with, besides the loop's state.
struct Cx<'a, H: Host, S> {
    host: &'a H,
    p: &'a RunInfo<H>,
    task_id: Option<&'a str>,
    tools: Tools<'a>,
    sink: &'a S,
    limits: crate::tools::LoopLimits,
    /// Where this turn began (its user message).
    turn_begin: usize,
    /// This was the last step allowed.
    last: bool,
}

/// After a step that called tools: the assistant turn into the history,
/// the server calls run, their results sent and added; approvals and
/// caller tools end the run. `None`: the loop goes on to the next step.
async fn after_calls<H: Host, S: EventSink>(
    cx: Cx<'_, H, S>,
    route: &mut RouteRequest,
    ledger: &mut Ledger,
    token: &mut Option<Option<String>>,
    (answer, calls, invalid): (Answer, Vec<ToolCall>, Vec<InvalidToolCall>),
) -> Option<LoopEnd> {
    let Cx {
        host,
        p,
        task_id,
        tools,
        sink,
        limits,
        turn_begin,
        last,
    } = cx;
    let text = answer.text.clone();
    ledger.total = Some(Box::new(match ledger.total.take() {
        Some(t) => t.then(answer),
        None => answer,
    }));
    if last {
        return Some(LoopEnd::Failed(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "tool_loop_limit",
            format!(
                "the model still called tools at the last allowed step ({} of WOMBAT_TOOL_MAX_STEPS)",
                limits.max_steps
            ),
        )));
    }
    // The assistant turn as the model said it, then one result per call.
    let mut parts = Vec::with_capacity(1 + calls.len() + invalid.len());
    if !text.is_empty() {
        parts.push(Part::text(text));
    }
    parts.extend(calls.iter().cloned().map(Part::ToolCall));
    parts.extend(invalid.iter().map(|c| Part::ToolCall(c.to_call())));
    let turn_start = route.messages.len();
    route
        .messages
        .push(ChatMessage::with_parts(Role::Assistant, parts));
    let target = |name: &str| {
        if tools.approval.iter().any(|t| t == name) {
            Some(Target::Approval)
        } else if tools.server.iter().any(|t| t == name) {
            Some(Target::Server)
        } else if p.caller_tools.iter().any(|t| t == name) {
            Some(Target::Caller)
        } else {
            None
        }
    };
    let mut for_caller = Vec::new();
    let mut for_approval = Vec::new();
    let mut to_run = Vec::new();
    let mut results: Vec<(ToolCall, ToolOutcome, Duration)> = Vec::new();
    for call in calls {
        match target(&call.name) {
            Some(Target::Server) => to_run.push(call),
            Some(Target::Approval) if task_id.is_some() => for_approval.push(call),
            Some(Target::Approval) => {
                let outcome = ToolOutcome::error(format!(
                    "{} needs a person's approval, which needs a task; name one to use it",
                    call.name
                ));
                results.push((call, outcome, Duration::ZERO));
            }
            Some(Target::Caller) => for_caller.push(call),
            None => {
                let outcome = ToolOutcome::error(format!(
                    "unknown tool {:?}; use one of the declared tools",
                    call.name
                ));
                results.push((call, outcome, Duration::ZERO));
            }
        }
    }
    for call in invalid {
        let outcome = ToolOutcome::error(format!(
            "the arguments of {} are not a JSON object: {}",
            call.name, call.error
        ));
        results.push((call.to_call(), outcome, Duration::ZERO));
    }
    if !to_run.is_empty() {
        let token = token
            .get_or_insert_with(|| host.agent_token(p.key.user_id(), p.key.role()))
            .as_deref();
        results.extend(Box::pin(run_calls(host, p, token, to_run, limits)).await);
    }
    let mut trace = ledger.total.as_mut().map(|t| &mut t.trace);
    for (call, outcome, took) in results {
        let ToolCall {
            id,
            name,
            arguments,
            ..
        } = call;
        host.observe_tool(&name, outcome.is_error, took);
        let content = bounded(outcome.content, limits.max_result_bytes);
        if !sink
            .tool_result(&id, &name, outcome.is_error, &content)
            .await
        {
            return Some(LoopEnd::Cut(None));
        }
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(TraceEntry {
                id: id.clone(),
                name,
                arguments,
                is_error: outcome.is_error,
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                result: crate::tools::truncate(&content.to_text(), TRACE_RESULT_BYTES).into_owned(),
            });
        }
        let mut result = ToolResult::new(id, content);
        result.is_error = outcome.is_error;
        route.messages.push(ChatMessage::tool_result(result));
    }
    if let (false, Some(task)) = (for_approval.is_empty(), task_id) {
        let Some(backend) = host.control_plane() else {
            return Some(LoopEnd::Failed(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_not_configured",
                "approvals need a backend",
            )));
        };
        let agent = backend.agent(p.key.user_id(), p.key.role());
        let key = request_key(p);
        let mut requests = Vec::with_capacity(for_approval.len());
        for call in &for_approval {
            // Boxed: a cold phase, kept out of a stream task's size.
            let created = Box::pin(crate::approval::create(
                &agent,
                task,
                p.key.role(),
                call,
                &route.messages[turn_begin..],
                &key,
            ))
            .await;
            match created {
                Ok(r) => {
                    requests.push(json!({"id": r.id, "tool": r.tool, "arguments": r.arguments}))
                }
                Err(e) => {
                    return Some(LoopEnd::Failed(backend_error(
                        host,
                        "creating a tool request",
                        &e,
                    )));
                }
            }
        }
        let Some(mut total) = ledger.total.take() else {
            return Some(LoopEnd::Failed(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "tool loop lost its answer",
            )));
        };
        total.tool_requests = Some(Value::Array(requests));
        return Some(LoopEnd::AwaitingApproval(*total));
    }
    if !for_caller.is_empty() {
        let tool_calls: Vec<Value> = for_caller
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": Value::Object(c.arguments.clone()).to_string(),
                    },
                })
            })
            .collect();
        let messages = json!(route.messages[turn_start..]);
        let Some(total) = ledger.total.take() else {
            return Some(LoopEnd::Failed(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "tool loop lost its answer",
            )));
        };
        return Some(LoopEnd::RequiresAction(
            *total,
            RequiresAction {
                tool_calls: Value::Array(tool_calls),
                messages,
            },
        ));
    }
    None
}

/// Runs a step's server-side calls, concurrently (at most
/// `limits.max_concurrent` at a time), each bounded by the per-tool
/// timeout. Results come back in call order.
async fn run_calls<H: Host>(
    host: &H,
    p: &RunInfo<H>,
    token: Option<&str>,
    calls: Vec<ToolCall>,
    limits: crate::tools::LoopLimits,
) -> Vec<(ToolCall, ToolOutcome, Duration)> {
    let Some(source) = host.tool_source() else {
        return calls
            .into_iter()
            .map(|c| {
                (
                    c,
                    ToolOutcome::error("no tool source is configured"),
                    Duration::ZERO,
                )
            })
            .collect();
    };
    let tenant = tenant(p, token);
    futures::stream::iter(calls)
        .map(|call| async move {
            let started = tokio::time::Instant::now();
            let call_ref = ToolCallRef {
                id: &call.id,
                name: &call.name,
                arguments: &call.arguments,
            };
            let outcome = tokio::time::timeout(limits.tool_timeout, source.call(tenant, call_ref))
                .await
                .unwrap_or_else(|_| {
                    ToolOutcome::error(format!(
                        "tool {} did not answer within {}s",
                        call.name,
                        limits.tool_timeout.as_secs_f64()
                    ))
                });
            let took = started.elapsed();
            if outcome.is_error {
                tracing::info!(tool = %call.name.escape_debug(), "tool call failed; the model is told");
            }
            (call, outcome, took)
        })
        .buffered(limits.max_concurrent.max(1))
        .collect()
        .await
}

/// One LLM step: the whole reply (JSON) or relayed as it comes (SSE), the
/// text accumulating in `consumed`.
async fn step<H: Host, S: EventSink>(
    host: &H,
    route: &mut Option<RouteRequest>,
    sink: &S,
    consumed: &mut Consumed,
) -> StepEnd {
    // Taken by reference and moved out here: an async fn keeps a by-value
    // argument in its state for its whole life, beside the copy it passes
    // on (in a stream's task, for as long as the stream is open).
    let Some(route) = route.take() else {
        return StepEnd::Failed(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "LLM step without a request",
        ));
    };
    if !S::STREAMING {
        // Through `cold`: in place for a caller waiting for the whole reply;
        // for a stream (which never gets here) a pointer instead of the
        // call's whole future in the frame a held stream waits in.
        return match S::cold(host.llm().complete(route)).await {
            Ok(routed) => {
                let prompt_tokens = routed.completion.usage.prompt_tokens;
                StepEnd::Answered(
                    Answer {
                        text: routed.completion.text,
                        usage: routed.completion.usage,
                        cost: routed.cost,
                        provider: routed.provider.as_str(),
                        model: routed.model,
                        attempts: routed.attempts,
                        failovers: routed.failovers,
                        prompt_tokens,
                        budget_warning: None,
                        trace: Vec::new(),
                        tool_requests: None,
                    },
                    routed.completion.tool_calls,
                    routed.completion.invalid_tool_calls,
                )
            }
            Err(e) => StepEnd::Failed(llm_error(host, &e)),
        };
    }
    if !consumed.started {
        if !sink.start().await {
            return StepEnd::Cut(None);
        }
        consumed.started = true;
    }
    let mut events = match Box::pin(host.llm().stream(route)).await {
        Ok(s) => s,
        Err(e) => return StepEnd::Failed(llm_error(host, &e)),
    };
    consumed.opened = true;
    let mut calls: Vec<(usize, ToolCall)> = Vec::new();
    let mut invalid: Vec<InvalidToolCall> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(RoutedEvent::Delta(delta)) => {
                // The same bound as a non-streamed reply's body: a provider
                // that never stops must not grow this without limit (the
                // deadline bounds time, not bytes). The tokens so far are
                // billed, so it counts as cut: usage is estimated.
                if consumed.text.len() + delta.len() > MAX_STREAMED_REPLY_BYTES {
                    let message = format!(
                        "LLM reply exceeded {} MiB; stream stopped",
                        MAX_STREAMED_REPLY_BYTES / (1024 * 1024)
                    );
                    return StepEnd::Cut(Some(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "llm_reply_too_large",
                        message,
                    )));
                }
                consumed.text.push_str(&delta);
                if !sink.text(&delta).await {
                    return StepEnd::Cut(None);
                }
            }
            Ok(RoutedEvent::ToolCall { index, call }) => {
                if !sink.tool_call(&call.id, &call.name, &call.arguments).await {
                    return StepEnd::Cut(None);
                }
                calls.push((index, call));
            }
            Ok(RoutedEvent::ToolCallInvalid(call)) => {
                if !sink.tool_call(&call.id, &call.name, &Map::new()).await {
                    return StepEnd::Cut(None);
                }
                invalid.push(call);
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
                calls.sort_by_key(|(i, _)| *i);
                invalid.sort_by_key(|c| c.index);
                return StepEnd::Answered(
                    Answer {
                        text: std::mem::take(&mut consumed.text),
                        prompt_tokens: usage.prompt_tokens,
                        usage,
                        cost,
                        provider: provider.as_str(),
                        model,
                        attempts,
                        failovers,
                        budget_warning: None,
                        trace: Vec::new(),
                        tool_requests: None,
                    },
                    calls.into_iter().map(|(_, c)| c).collect(),
                    invalid,
                );
            }
            // Partial tool calls: only complete ones reach the client.
            Ok(_) => {}
            Err(e) => return StepEnd::Failed(llm_error(host, &e)),
        }
    }
    StepEnd::Failed(ApiError::new(
        StatusCode::BAD_GATEWAY,
        "llm_stream_incomplete",
        "LLM stream ended without a final event",
    ))
}

/// The usage of a step cut before the provider reported it: the provider
/// bills what it generated, so metrics and the limits must show it, marked
/// as an estimate. Priced on the model asked for first (a failover model is
/// only known from the final event).
fn estimate_cut<H: Host>(host: &H, p: &RunInfo<H>, consumed: &Consumed) -> (Usage, Cost) {
    let usage = consumed.estimate();
    let cost = host.llm().pricing().cost(&p.primary.model, &usage);
    host.observe_llm(
        p.primary.provider.as_str(),
        &p.primary.model,
        true,
        &usage,
        cost.total_micros(),
    );
    tracing::info!(
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        "abandoned stream: estimated usage recorded"
    );
    (usage, cost)
}

fn context_warning<H: Host>(host: &H, model: &str, prompt_tokens: u64) -> Option<String> {
    let window = host.llm().pricing().context_window(model);
    if window == 0 {
        return None;
    }
    let pct = prompt_tokens as f64 * 100.0 / window as f64;
    (pct > host.settings().context_warning_threshold).then(|| {
        format!("Context usage is {pct:.1}% of {window} tokens. Consider compacting history.")
    })
}

/// Announces the run's end to the request's webhook, if it has one.
fn fire_webhook<H: Host>(
    host: &H,
    p: &RunInfo<H>,
    task_id: Option<&str>,
    answer: Option<&Answer>,
    error: Option<&str>,
) {
    if let Some(target) = &p.webhook {
        host.fire_webhook(target, crate::webhook::event(p, task_id, answer, error));
    }
}

/// Announces a run that stopped for caller tools.
fn fire_requires_action<H: Host>(
    host: &H,
    p: &RunInfo<H>,
    task_id: Option<&str>,
    answer: &Answer,
    action: &RequiresAction,
) {
    if let Some(target) = &p.webhook {
        host.fire_webhook(
            target,
            crate::webhook::requires_action(p, task_id, answer, action),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the attachment was before it was written field by field:
    /// the writer must give the same bytes.
    #[derive(Serialize)]
    struct Attachment<'a> {
        cost: &'a Cost,
        model: &'a str,
        provider: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_requests: Option<&'a Value>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        tools: &'a [TraceEntry],
        usage: &'a Usage,
    }

    fn answer(trace: Vec<TraceEntry>, tool_requests: Option<Value>) -> Answer {
        let usage = Usage::new(1_234, 56);
        Answer {
            text: "hi".into(),
            cost: Cost::from_micros("gpt-4o-mini", &usage, 185, 34, true),
            usage,
            provider: "openai",
            model: "gpt-4o-mini \"quoted\" é".into(),
            attempts: 1,
            failovers: 0,
            prompt_tokens: 1_234,
            budget_warning: None,
            trace,
            tool_requests,
        }
    }

    #[test]
    fn the_attachment_is_what_serde_writes() {
        let entry = TraceEntry {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments: json!({"q": "a\nb", "n": 2.5})
                .as_object()
                .cloned()
                .expect("object"),
            is_error: false,
            duration_ms: 7,
            result: "{\"ok\":true}".into(),
        };
        let requests = json!([{"id": "call_2", "tool": "pay", "arguments": {"amount": 3}}]);
        for a in [
            answer(Vec::new(), None),
            answer(vec![entry.clone()], None),
            answer(vec![entry], Some(requests)),
        ] {
            let want = serde_json::to_string(&Attachment {
                cost: &a.cost,
                model: &a.model,
                provider: a.provider,
                tool_requests: a.tool_requests.as_ref(),
                tools: &a.trace,
                usage: &a.usage,
            })
            .expect("serialises");
            assert_eq!(a.attachment().get(), want);
        }
    }
}
