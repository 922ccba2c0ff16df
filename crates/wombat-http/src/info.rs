//! The read-only endpoints: `/health`, `/usage`, `/context`, `/skills`,
//! `/boot` (and `POST /boot/complete`), `/metrics`.

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use wombat_workspace::{PromptRequest, SkillCounts, WorkspaceHealth};

use crate::app::App;
use crate::error::ApiError;
use crate::request::{Body, full, json_response};

/// Probe timeout of `GET /health?deep=true`.
const DEEP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    workspace: WorkspaceHealth,
    skills: SkillCounts,
    backend: BackendHealth<'a>,
    llm: LlmHealth<'a>,
    config: ConfigHealth<'a>,
}

#[derive(Serialize)]
struct BackendHealth<'a> {
    url: Option<&'a str>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LlmHealth<'a> {
    /// `ok` when the default model's provider has a key (or needs none),
    /// `unconfigured` otherwise.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(flatten)]
    summary: &'a wombat_llm::LlmSummary,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigHealth<'a> {
    port: u16,
    default_task: Option<&'a str>,
    model: &'a str,
    fallback_model: Option<&'a str>,
}

/// `GET /health`: never needs the daemon key, never reveals a secret.
pub(crate) async fn health(app: &App, deep: bool) -> http::Response<Body> {
    let workspace = app.workspace.health();
    let llm = &app.llm_summary;
    // The provider that serves the default model (`LLM_MODEL_DEFAULT` may
    // name another one than `LLM_PROVIDER`) is the one that needs a key.
    let provider = wombat_core::ModelRef::parse(&llm.model, llm.default_provider)
        .map_or(llm.default_provider, |m| m.provider);
    let llm_ready = llm.keys.get(&provider).copied().unwrap_or(true);
    let backend_url = app.backend.as_ref().map(|b| b.url.as_str());
    let (backend_status, backend_error) = match (&app.backend, deep) {
        (None, _) => (
            "error",
            Some("backend not configured: set BACKEND_URL and AGENT_JWT_SECRET".to_owned()),
        ),
        (Some(_), false) => ("unchecked", None),
        (Some(b), true) => {
            match tokio::time::timeout(DEEP_PROBE_TIMEOUT, b.client.health_check()).await {
                Ok(Ok(())) => ("ok", None),
                Ok(Err(e)) => ("error", Some(e.to_string())),
                Err(_) => (
                    "error",
                    Some(format!(
                        "no answer within {}s",
                        DEEP_PROBE_TIMEOUT.as_secs()
                    )),
                ),
            }
        }
    };
    let healthy = workspace.status == "ok" && backend_status != "error" && llm_ready;
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        skills: app.workspace.skill_counts(),
        workspace,
        backend: BackendHealth {
            url: backend_url,
            status: backend_status,
            error: backend_error,
        },
        llm: LlmHealth {
            status: if llm_ready { "ok" } else { "unconfigured" },
            hint: (!llm_ready).then(|| {
                let envs = provider.api_key_envs().join(" or ");
                format!(
                    "no API key for provider {:?}: set {envs}, or LLM_PROVIDER=echo for an offline round trip",
                    provider.as_str()
                )
            }),
            summary: llm,
        },
        config: ConfigHealth {
            port: app.config.port,
            default_task: app.config.default_task.as_deref(),
            model: &llm.model,
            fallback_model: llm.fallback_model.as_deref(),
        },
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /usage[?user_id=]`.
pub(crate) fn usage(app: &App, user_id: Option<&str>) -> http::Response<Body> {
    json_response(StatusCode::OK, &app.usage.report(user_id))
}

/// `GET /context?role=`.
pub(crate) fn context(app: &App, role: Option<&str>) -> Result<http::Response<Body>, ApiError> {
    let role = role.unwrap_or("agent");
    let stats = app
        .workspace
        .context_stats(&PromptRequest::new(role, jiff::Timestamp::now()))
        .map_err(crate::agent::workspace_error)?;
    Ok(json_response(StatusCode::OK, &stats))
}

/// `GET /skills`.
pub(crate) fn skills(app: &App) -> http::Response<Body> {
    json_response(StatusCode::OK, &app.workspace.skills_report())
}

/// `GET /boot`.
pub(crate) fn boot(app: &App) -> http::Response<Body> {
    json_response(StatusCode::OK, &app.workspace.boot_status())
}

/// `POST /boot/complete`: writes the boot marker. The write and the reload
/// it triggers are blocking file I/O, so they run off the async workers.
///
/// A failure is the server's state, not the caller's request: 503, with a
/// body that names no path (the path and the cause go to the log only).
pub(crate) async fn boot_complete(app: &App) -> Result<http::Response<Body>, ApiError> {
    let workspace = app.workspace.clone();
    let outcome = tokio::task::spawn_blocking(move || workspace.complete_boot()).await;
    let (code, message) = match outcome {
        Ok(Ok(())) => {
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            ));
        }
        Ok(Err(e @ wombat_workspace::Error::WorkspaceMissing { .. })) => {
            tracing::warn!(error = %e, "boot marker not written");
            (
                "workspace_unavailable",
                "the workspace folder is missing; boot cannot be marked complete",
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "boot marker not written");
            (
                "boot_marker_failed",
                "the boot marker could not be written; see the server log",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "boot marker task failed");
            (
                "boot_marker_failed",
                "the boot marker could not be written; see the server log",
            )
        }
    };
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code,
        message,
    ))
}

/// `GET /metrics` in the Prometheus text format.
pub(crate) fn metrics(app: &App) -> http::Response<Body> {
    let mut resp = http::Response::new(full(app.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
