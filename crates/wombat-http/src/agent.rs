//! `POST /api/agents/send` and `POST /api/agents/stream`: parsing and
//! framing only. The run itself (validate, resolve the task, build the
//! prompt, LLM, persist, webhook) is `wombat-agent`'s one pipeline; this
//! module implements its [`Host`] for the daemon's state and writes its
//! events either as one JSON response or as server-sent events.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::server::RequestBody as Incoming;
use http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use wombat_agent::events::{Chunk, Done, StreamError, ToolCallEvent, ToolResultEvent};
use wombat_agent::tools::ToolSource;
use wombat_agent::{
    Deadline, EventSink, Host, Persisted, Reply, SendRequest, Settings, Stop, WebhookSpec,
    deadline_at,
};
use wombat_controlplane::ControlPlane;
use wombat_core::json::ObjectWriter;
use wombat_core::{Cost, ToolContent, Usage};
use wombat_governance::{Admitted, Limits};
use wombat_llm::{RouteRequest, Router};
use wombat_workspace::Workspace;

use crate::app::App;
use crate::error::ApiError;
use crate::governance;
use crate::request::{Body, Field, Kind, json_bytes_response, json_response, read_payload};
use crate::sse;
use crate::webhook::Target;

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
    Field::optional("tools", Kind::Array),
];

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

impl Host for App {
    type Webhook = Target;
    type Permit = OwnedSemaphorePermit;

    fn settings(&self) -> &Settings {
        &self.agent
    }

    fn llm(&self) -> &Router {
        &self.llm
    }

    fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    fn control_plane(&self) -> Option<&ControlPlane> {
        self.backend.as_ref().map(|b| &b.client)
    }

    fn llm_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        llm_permit(self)
    }

    async fn admit(
        &self,
        user: &str,
        limits: Option<&Limits>,
        route: &RouteRequest,
        model: &str,
    ) -> Result<Option<Admitted>, ApiError> {
        governance::admit(self, user, limits, route, model).await
    }

    async fn release(&self, admitted: Option<Admitted>) {
        governance::release(self, admitted).await;
    }

    async fn account(
        &self,
        admitted: Option<Admitted>,
        user: &str,
        usage: &Usage,
        cost: &Cost,
        estimated: bool,
    ) {
        governance::account(self, admitted, user, usage, cost, estimated).await;
    }

    fn validate_webhook(&self, spec: &WebhookSpec) -> Result<Target, ApiError> {
        self.webhooks.validate(spec)
    }

    fn fire_webhook(&self, target: &Target, event: Value) {
        self.webhooks.fire(target.clone(), event);
    }

    fn observe_llm(&self, provider: &str, model: &str, ok: bool, usage: &Usage, cost_micros: u64) {
        self.metrics.observe_llm(
            provider,
            model,
            ok,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost_micros,
        );
    }

    fn observe_route(&self, attempts: u32, failovers: u32) {
        self.metrics.observe_route(attempts, failovers);
    }

    fn record_usage(&self, user: &str, usage: &Usage, cost: &Cost, estimated: bool) {
        if estimated {
            self.usage.record_estimate(user, usage, cost);
            self.metrics.llm_usage_estimated.fetch_add(1, Relaxed);
        } else {
            self.usage.record(user, usage, cost);
        }
    }

    fn backend_failed(&self) {
        self.metrics.backend_errors.fetch_add(1, Relaxed);
    }

    fn tool_source(&self) -> Option<&dyn ToolSource> {
        self.tool_source.as_deref()
    }

    fn agent_token(&self, user: &str, role: &str) -> Option<String> {
        let backend = self.backend.as_ref()?;
        match backend.client.agent(user, role).token() {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::warn!(error = %e, "cannot mint the agent token for tools");
                None
            }
        }
    }

    fn observe_tool(&self, name: &str, is_error: bool, elapsed: Duration) {
        self.metrics.observe_tool(name, is_error, elapsed);
    }
}

async fn read_send_request(
    app: &App,
    req: &mut http::Request<Incoming>,
) -> Result<SendRequest, ApiError> {
    read_payload(req, app.config.max_body_bytes, SEND_SCHEMA).await
}

/// The sink of a caller that waits for the whole reply: nothing is relayed
/// as it comes, and the caller going away does not cancel the run.
struct JsonSink;

impl EventSink for JsonSink {
    const STREAMING: bool = false;
    type Cold<F: Future + Send> = F;

    fn cold<F: Future + Send>(f: F) -> F {
        f
    }

    async fn start(&self) -> bool {
        true
    }

    async fn text(&self, _delta: &str) -> bool {
        true
    }

    async fn tool_call(&self, _id: &str, _name: &str, _arguments: &Map<String, Value>) -> bool {
        true
    }

    async fn tool_result(
        &self,
        _id: &str,
        _name: &str,
        _is_error: bool,
        _content: &ToolContent,
    ) -> bool {
        true
    }

    async fn closed(&self) {
        std::future::pending::<()>().await;
    }
}

/// `POST /api/agents/send` (or SSE when `stream: true`).
///
/// The work runs in its own task: a client that goes away stops waiting for
/// the answer but does not cancel it, so a reply the LLM already produced is
/// still written to the backend and announced to the webhook.
pub(crate) async fn send(
    app: &Arc<App>,
    req: &mut http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let body = read_send_request(app, req).await?;
    if body.stream {
        // Boxed: its future (the run's start, ~6 KB) would otherwise size
        // this one, and so every request's handler future, which is moved
        // (copied) into a box per request.
        return Box::pin(start_stream(app, body)).await;
    }
    let p = wombat_agent::prepare(&**app, body)?;
    let app = app.clone();
    let work = async move {
        let timer = std::pin::pin!(tokio::time::sleep_until(deadline_at(&app.agent)));
        let mut deadline = Deadline::new(&app.agent, timer);
        // Both phases boxed: in place they would size this task's future
        // (6.7 KB), which the spawn moves several times; boxed, each is
        // copied once into its box and the task is a few hundred bytes.
        let run = Box::pin(wombat_agent::start(&*app, p, &mut deadline, true)).await?;
        match Box::pin(wombat_agent::execute(&*app, run, &JsonSink, &mut deadline)).await {
            Ok(reply) => Ok(send_response(&reply)),
            Err(Stop::Failed(e)) => Err(e),
            // The JSON sink never closes.
            Err(Stop::Abandoned) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "request abandoned",
            )),
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

/// The JSON answer of a finished run: 200 with the reply, or (write failed)
/// the error carrying the reply in its details.
fn send_response(reply: &Reply) -> http::Response<Body> {
    use crate::error::HttpError;
    if let Some(action) = &reply.requires_action {
        let a = &reply.answer;
        return json_response(
            StatusCode::OK,
            &json!({
                "status": "requires_action",
                "task_id": reply.task_id,
                "tool_calls": action.tool_calls,
                "messages": action.messages,
                "response": a.text,
                "usage": a.usage,
                "cost": a.cost,
                "model": a.model,
                "provider": a.provider,
                "budget_warning": a.budget_warning,
            }),
        );
    }
    let Persisted::Stored {
        message_id,
        document_id,
    } = &reply.persisted
    else {
        return match reply.write_error() {
            Some(e) => e.into_response(),
            None => ApiError::bad_request(wombat_agent::NO_TASK).into_response(),
        };
    };
    let a = &reply.answer;
    // Written field by field (keys as they are, values escaped by
    // serde_json): the bytes a derived `Serialize` wrote, in a third of the
    // work. An answer is a few hundred bytes and more: start at 1 KiB.
    let mut out = Vec::with_capacity(1024);
    let mut obj = ObjectWriter::new(&mut out);
    obj.str(
        "status",
        if a.tool_requests.is_some() {
            "awaiting_approval"
        } else {
            "ok"
        },
    )
    .str("task_id", reply.task_id.as_deref().unwrap_or_default())
    .str("response", &a.text)
    .with("usage", |out| a.usage.write_json(out))
    .with("cost", |out| a.cost.write_json(out))
    .opt_str("context_warning", reply.context_warning.as_deref())
    .str("model", &a.model)
    .str("provider", a.provider)
    .str("message_id", message_id)
    .opt_str("document_id", document_id.as_deref())
    .opt_value("budget_warning", a.budget_warning.as_deref())
    .opt_value("tool_requests", a.tool_requests.as_ref());
    obj.end();
    json_bytes_response(StatusCode::OK, out)
}

/// `POST /api/agents/stream`.
pub(crate) async fn stream(
    app: &Arc<App>,
    req: &mut http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let body = read_send_request(app, req).await?;
    // Boxed for the same reason as in `send`.
    Box::pin(start_stream(app, body)).await
}

/// The sink of a stream: a frame per event.
struct SseSink(sse::SseSender);

impl EventSink for SseSink {
    const STREAMING: bool = true;
    type Cold<F: Future + Send> = Pin<Box<F>>;

    fn cold<F: Future + Send>(f: F) -> Pin<Box<F>> {
        Box::pin(f)
    }

    async fn start(&self) -> bool {
        self.0.send("start", &json!({"type": "start"})).await
    }

    async fn text(&self, delta: &str) -> bool {
        let chunk = Chunk {
            r#type: "chunk",
            data: delta,
        };
        self.0.send("chunk", &chunk).await
    }

    async fn tool_call(&self, id: &str, name: &str, arguments: &Map<String, Value>) -> bool {
        let event = ToolCallEvent {
            r#type: "tool_call",
            id,
            name,
            arguments,
        };
        self.0.send("tool_call", &event).await
    }

    async fn tool_result(
        &self,
        id: &str,
        name: &str,
        is_error: bool,
        content: &ToolContent,
    ) -> bool {
        let event = ToolResultEvent {
            r#type: "tool_result",
            id,
            name,
            is_error,
            content: &content.to_text(),
        };
        self.0.send("tool_result", &event).await
    }

    async fn closed(&self) {
        self.0.closed().await;
    }
}

/// Writes a stream's last event: `done` with the reply, or `error`.
async fn finish_stream(sink: &SseSink, result: Result<wombat_agent::Reply, Stop>) {
    match result {
        Ok(reply) => {
            let a = &reply.answer;
            let (message_id, persist_error) = match &reply.persisted {
                Persisted::Stored { message_id, .. } => (Some(message_id.as_str()), None),
                Persisted::Failed { failure, .. } => (None, Some(failure.message())),
                Persisted::NoTask | Persisted::Deferred => (None, None),
            };
            // Bounded: a client that stopped reading must not keep this
            // task for as long as it holds the connection.
            sink.0
                .send_last(
                    "done",
                    &Done {
                        r#type: "done",
                        usage: &a.usage,
                        cost: &a.cost,
                        model: &a.model,
                        provider: a.provider,
                        task_id: reply.task_id.as_deref(),
                        persisted: message_id.is_some(),
                        message_id,
                        persist_error: persist_error.as_deref(),
                        context_warning: reply.context_warning.as_deref(),
                        budget_warning: a.budget_warning.as_deref(),
                        status: if reply.requires_action.is_some() {
                            Some("requires_action")
                        } else if a.tool_requests.is_some() {
                            Some("awaiting_approval")
                        } else {
                            None
                        },
                        tool_calls: reply.requires_action.as_ref().map(|r| &r.tool_calls),
                        messages: reply.requires_action.as_ref().map(|r| &r.messages),
                        tool_requests: a.tool_requests.as_ref(),
                    },
                )
                .await;
        }
        Err(Stop::Failed(e)) => {
            sink.0
                .send_last(
                    "error",
                    &StreamError {
                        r#type: "error",
                        error: &e.message,
                        code: Some(e.code),
                    },
                )
                .await;
        }
        Err(Stop::Abandoned) => {}
    }
}

/// Validation, task resolution, the LLM slot and the first admission happen
/// before the `200` so that they can still answer with a proper status
/// (504 when the request deadline passes while resolving, as for `send`);
/// from then on failures are `error` events. A request that names no task
/// streams without persisting, as 0.1.0's stream endpoint did (`done` says
/// `persisted: false`).
async fn start_stream(app: &Arc<App>, body: SendRequest) -> Result<http::Response<Body>, ApiError> {
    let p = wombat_agent::prepare(&**app, body)?;
    let at = deadline_at(&app.agent);
    let run = {
        let timer = std::pin::pin!(tokio::time::sleep_until(at));
        let mut deadline = Deadline::new(&app.agent, timer);
        wombat_agent::start(&**app, p, &mut deadline, false).await?
    };
    let (resp, tx) = sse::response(&app.stream_cut);
    let app = app.clone();
    let work = async move {
        // The same deadline, continued in the task that outlives the handler.
        let timer = std::pin::pin!(tokio::time::sleep_until(at));
        let mut deadline = Deadline::new(&app.agent, timer);
        app.metrics.streams_open.fetch_add(1, Relaxed);
        let sink = SseSink(tx);
        // Bound first: a future in the `match` itself would live (and take
        // room in this task) through the arms' awaits too. The last event is
        // written by its own boxed future: the result then never takes room
        // in this task, which waits in `execute` for the stream's whole life.
        let result = wombat_agent::execute(&*app, run, &sink, &mut deadline).await;
        Box::pin(finish_stream(&sink, result)).await;
        app.metrics.streams_open.fetch_sub(1, Relaxed);
    };
    tokio::spawn(work.instrument(tracing::Span::current()));
    Ok(resp)
}
