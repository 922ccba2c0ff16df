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

use futures::StreamExt;
use http::StatusCode;
use serde_json::{Map, Value, json};
use wombat_controlplane::ControlPlane;
use wombat_core::{ChatMessage, Cost, ModelRef, SessionKey, Usage};
use wombat_governance::Admitted;
use wombat_llm::{RouteRequest, RoutedEvent};
use wombat_workspace::PromptRequest;

use crate::ApiError;
use crate::deadline::Deadline;
use crate::events::EventSink;
use crate::host::Host;
use crate::options::{Options, options, warning_json};
use crate::persist::{
    NOTIFICATION_ALREADY_ANSWERED, WriteFailure, message_key, persist_within, request_key,
};
use crate::request::SendRequest;

const DEFAULT_KICKOFF_NOTE: &str = "Draft a concise plan based on the user's request.";

/// Longest accepted `user_id` and task title. They end up in JWT claims,
/// backend queries and map keys, so they are bounded.
const MAX_ID_CHARS: usize = 256;
const MAX_TITLE_CHARS: usize = 1024;

/// The error of a send that names no task (0.1.0's message).
pub const NO_TASK: &str =
    "Task not specified. Provide task_id, task_title, or set WOMBAT_DEFAULT_TASK env var.";

/// A request that passed every check that needs no I/O.
pub struct Prepared<H: Host> {
    pub(crate) req: SendRequest,
    pub(crate) key: SessionKey,
    pub(crate) opts: Options,
    webhook: Option<H::Webhook>,
    /// The model asked for first (the one billed when a stream is abandoned
    /// before the provider reports which model answered).
    primary: ModelRef,
    route: RouteRequest,
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
/// # Errors
/// 400 naming the problem (empty or over-long fields, bad session key,
/// metadata of the wrong type, unknown model, unusable webhook).
pub fn prepare<H: Host>(host: &H, req: SendRequest) -> Result<Prepared<H>, ApiError> {
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
        .map(|w| host.validate_webhook(w))
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
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    messages.extend(req.messages.iter().cloned());
    messages.push(ChatMessage::user(user_message));
    let mut route = RouteRequest::new(opts.model.clone(), messages);
    route.system = Some(system);
    // 0.1.0 always sent a temperature (0.4); so do we, so that switching
    // daemons does not change how the model writes.
    route.temperature = Some(opts.temperature.unwrap_or(host.settings().temperature));
    let primary = host
        .llm()
        .resolve(&route.model)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Prepared {
        req,
        key,
        opts,
        webhook,
        primary,
        route,
    })
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
    } else if matches!(e, wombat_llm::Error::MissingApiKey { .. }) {
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
async fn resolve_task<H: Host>(host: &H, p: &Prepared<H>) -> Result<Option<String>, ApiError> {
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
    let task = agent
        .find_or_create_task(
            title,
            p.req.task_description.as_deref(),
            p.req.task_metadata.clone(),
        )
        .instrument(wombat_telemetry::otel_span!("resolve_task"))
        .await
        .map_err(|e| backend_error(host, "resolving the task", &e))?;
    Ok(Some(task.id))
}

use tracing::Instrument;

/// A run past its checks: task resolved, LLM slot taken, first step
/// admitted. Everything from here on is reported through the sink.
pub struct Started<H: Host> {
    p: Prepared<H>,
    task_id: Option<String>,
    permit: H::Permit,
    admitted: Option<Admitted>,
    /// The soft-limit warning of the admission (boxed: rare, and this lives
    /// in a stream's task).
    budget_warning: Option<Box<Value>>,
}

impl<H: Host> Started<H> {
    /// The task the reply will be written to (`None`: a stream that names
    /// no task, which is not persisted).
    pub fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }
}

/// Resolves the task under the request deadline, takes an LLM slot and
/// admits the first step. Failures here still have a status of their own
/// (a stream has not answered `200` yet). `require_task`: a request that
/// names no task is refused (`send`) rather than run unpersisted (`stream`,
/// as 0.1.0's stream endpoint did).
///
/// # Errors
/// 400 (no task), 502/503/504 (backend), 429 (overloaded, limits).
pub async fn start<H: Host>(
    host: &H,
    mut p: Prepared<H>,
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
    let permit = host.llm_permit()?;
    let admitted = host
        .admit(
            p.key.user_id(),
            p.opts.limits.as_ref(),
            &p.route,
            &p.primary.model,
        )
        .await?;
    let budget_warning = admitted
        .as_ref()
        .and_then(|a| a.warning.as_ref())
        .map(|w| Box::new(warning_json(w)));
    Ok(Started {
        p,
        task_id,
        permit,
        admitted,
        budget_warning,
    })
}

/// What the LLM produced over the run, however it was called.
#[derive(Debug)]
pub struct Answer {
    /// The reply text.
    pub text: String,
    /// Usage of the run.
    pub usage: Usage,
    /// Cost of the run.
    pub cost: Cost,
    /// The provider that answered last.
    pub provider: &'static str,
    /// The model that answered last.
    pub model: String,
    attempts: u32,
    failovers: u32,
    /// The soft-limit warning of the admission, for the response and webhook.
    pub budget_warning: Option<Box<Value>>,
}

impl Answer {
    /// The message's `attachments`.
    pub(crate) fn attachment(&self) -> Value {
        json!({
            "model": self.model,
            "provider": self.provider,
            "usage": self.usage,
            "cost": self.cost,
        })
    }
}

/// Whether and where the reply was stored.
#[derive(Debug)]
pub enum Persisted {
    /// No task was named (a stream): nothing to store.
    NoTask,
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

/// How one LLM step ended.
enum StepEnd {
    /// The provider finished: the complete answer, with its real usage.
    Answered(Answer),
    /// The provider failed; nothing known was consumed (released).
    Failed(ApiError),
    /// Cut mid-generation (client gone: `None`; deadline or size: the
    /// error): what was generated is billed on an estimate.
    Cut(Option<ApiError>),
}

/// The longest streamed reply kept (and relayed): the cap on a non-streamed
/// provider body.
const MAX_STREAMED_REPLY_BYTES: usize = wombat_llm::MAX_SUCCESS_BODY;

/// Runs the LLM phase and everything after it: settle, record, persist,
/// webhook. A client that goes away (the sink closes) cancels the provider
/// call, and what was generated until then is recorded as estimated usage;
/// once the LLM has answered, the reply is persisted and announced even if
/// nobody is left to read it.
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
    let Started {
        mut p,
        task_id,
        permit,
        admitted,
        budget_warning,
    } = run;
    let route = std::mem::replace(
        &mut p.route,
        RouteRequest::new(p.opts.model.clone(), Vec::new()),
    );
    let mut consumed = Consumed::new(&route);
    let end = {
        // Pinned here, dropped with this block: `consumed` is free again below.
        let llm = std::pin::pin!(async { Ok(step(host, route, sink, &mut consumed).await) });
        tokio::select! {
            biased;
            () = sink.closed() => {
                tracing::info!("client disconnected; stream cancelled");
                StepEnd::Cut(None)
            }
            finished = deadline.bound(llm) => finished.unwrap_or_else(|e| StepEnd::Cut(Some(e))),
        }
    };
    drop(permit);
    let mut answer = match end {
        StepEnd::Answered(answer) => answer,
        StepEnd::Failed(e) => {
            host.release(admitted).await;
            fire_webhook(host, &p, task_id.as_deref(), None, Some(&e.message));
            return Err(Stop::Failed(e));
        }
        StepEnd::Cut(error) => {
            if consumed.opened {
                let (usage, cost) = record_abandoned(host, &p, &consumed);
                host.account(admitted, p.key.user_id(), &usage, &cost, true)
                    .await;
            } else {
                // Nothing paid for that the provider reported; released.
                host.release(admitted).await;
            }
            return Err(match error {
                Some(e) => {
                    let message = if e.code == "deadline_exceeded" {
                        "request deadline exceeded"
                    } else {
                        e.message.as_str()
                    };
                    fire_webhook(host, &p, task_id.as_deref(), None, Some(message));
                    Stop::Failed(e)
                }
                None => Stop::Abandoned,
            });
        }
    };
    answer.budget_warning = budget_warning;
    // From here on the reply is paid for: nothing may drop it.
    record(host, p.key.user_id(), &answer);
    host.account(
        admitted,
        p.key.user_id(),
        &answer.usage,
        &answer.cost,
        false,
    )
    .await;
    let context_warning = context_warning(host, &answer.model, answer.usage.prompt_tokens);
    let persisted = match task_id.as_deref() {
        Some(task) => {
            let key = request_key(&p);
            match persist_within(host, &p, task, &answer, &key, deadline).await {
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
        &p,
        task_id.as_deref(),
        Some(&answer),
        persist_error.as_deref(),
    );
    Ok(Reply {
        task_id,
        answer,
        context_warning,
        persisted,
    })
}

/// One LLM step: the whole reply (JSON) or relayed as it comes (SSE), the
/// text accumulating in `consumed`.
async fn step<H: Host, S: EventSink>(
    host: &H,
    route: RouteRequest,
    sink: &S,
    consumed: &mut Consumed,
) -> StepEnd {
    if !S::STREAMING {
        return match host.llm().complete(route).await {
            Ok(routed) => StepEnd::Answered(Answer {
                text: routed.completion.text,
                usage: routed.completion.usage,
                cost: routed.cost,
                provider: routed.provider.as_str(),
                model: routed.model,
                attempts: routed.attempts,
                failovers: routed.failovers,
                budget_warning: None,
            }),
            Err(e) => StepEnd::Failed(llm_error(host, &e)),
        };
    }
    if !sink.start().await {
        return StepEnd::Cut(None);
    }
    let mut events = match Box::pin(host.llm().stream(route)).await {
        Ok(s) => s,
        Err(e) => return StepEnd::Failed(llm_error(host, &e)),
    };
    consumed.opened = true;
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
            Ok(RoutedEvent::Done {
                usage,
                cost,
                provider,
                model,
                attempts,
                failovers,
                ..
            }) => {
                return StepEnd::Answered(Answer {
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
            // No tools are declared to the model yet, so a provider cannot
            // send tool-call events here; should one anyway, it is not text
            // for the client.
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

/// Records the usage of a step cut before the provider reported it: the
/// provider bills what it generated, so the ledger and metrics must show it,
/// marked as an estimate. Priced on the model asked for first (a failover
/// model is only known from the final event).
fn record_abandoned<H: Host>(host: &H, p: &Prepared<H>, consumed: &Consumed) -> (Usage, Cost) {
    let usage = consumed.estimate();
    let cost = host.llm().pricing().cost(&p.primary.model, &usage);
    host.record_usage(p.key.user_id(), &usage, &cost, true);
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

fn record<H: Host>(host: &H, user_id: &str, a: &Answer) {
    host.record_usage(user_id, &a.usage, &a.cost, false);
    host.observe_llm(a.provider, &a.model, true, &a.usage, a.cost.total_micros());
    host.observe_route(a.attempts, a.failovers);
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
    p: &Prepared<H>,
    task_id: Option<&str>,
    answer: Option<&Answer>,
    error: Option<&str>,
) {
    if let Some(target) = &p.webhook {
        host.fire_webhook(target, crate::webhook::event(p, task_id, answer, error));
    }
}
