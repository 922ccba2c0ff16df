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
    /// `ok` when every provider of a configured model has the key it needs,
    /// `unconfigured` when the default model's provider lacks one,
    /// `degraded` when only another tier's or the fallback's does.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(flatten)]
    summary: &'a wombat_llm::LlmSummary,
}

/// 0.1.0's `config` object, same keys, types and values (`"(not set)"` for
/// unset strings, `model` as configured, without a provider prefix added),
/// followed by additions.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigHealth<'a> {
    port: u16,
    default_task: &'a str,
    model: &'a str,
    fallback_model: &'a str,
    /// Addition: the provider of the default model.
    provider: wombat_core::Provider,
    /// Addition: the default model as `provider/model`.
    qualified_model: &'a str,
    /// Addition: the fallback's provider, `null` when unset.
    fallback_provider: Option<wombat_core::Provider>,
    /// Addition: the fallback as `provider/model`, `null` when unset.
    qualified_fallback_model: Option<&'a str>,
}

/// What 0.1.0 showed for an unset string in `/health`'s `config`.
const NOT_SET: &str = "(not set)";

/// `GET /health`: never needs the daemon key, never reveals a secret.
pub(crate) async fn health(app: &App, deep: bool) -> http::Response<Body> {
    let workspace = app.workspace.health();
    let llm = &app.llm_summary;
    let llm_config = app.llm.config();
    // The provider that serves the default model (`LLM_MODEL_DEFAULT` may
    // name another one than `LLM_PROVIDER`).
    let provider_of = |model: &str| {
        wombat_core::ModelRef::parse(model, llm.default_provider)
            .map_or(llm.default_provider, |m| m.provider)
    };
    let provider = provider_of(&llm.model);
    // Every provider of a configured model (default, cheap, best, fallback)
    // that needs a key must have one: a missing fallback key only shows
    // when the primary fails, which is the worst moment to find out.
    let missing = llm.missing_keys();
    let default_ready = !missing.contains(&provider);
    let llm_ready = missing.is_empty();
    let backend_url = app.backend.as_ref().map(|b| b.url.as_str());
    let (backend_status, backend_error) = match (&app.backend, deep) {
        (None, _) => (
            "error",
            Some("backend not configured: set BACKEND_URL and AGENT_JWT_SECRET".to_owned()),
        ),
        (Some(_), false) => ("unchecked", None),
        (Some(b), true) => {
            // Boxed: the probe (a backend call, ~1.1 KB of future) would
            // otherwise size every request's handler future through the
            // router's `match`, which each request copies into a box.
            let probe = Box::pin(b.client.health_check());
            match tokio::time::timeout(DEEP_PROBE_TIMEOUT, probe).await {
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
            status: match (default_ready, llm_ready) {
                (true, true) => "ok",
                (false, _) => "unconfigured",
                (true, false) => "degraded",
            },
            hint: (!llm_ready).then(|| missing_keys_hint(llm, &missing, default_ready)),
            summary: llm,
        },
        config: ConfigHealth {
            port: app.config.port,
            default_task: app.config.default_task.as_deref().unwrap_or(NOT_SET),
            model: &llm_config.default_model,
            fallback_model: llm_config.fallback_model.as_deref().unwrap_or(NOT_SET),
            provider,
            qualified_model: &llm.model,
            fallback_provider: llm.fallback_model.as_deref().map(provider_of),
            qualified_fallback_model: llm.fallback_model.as_deref(),
        },
    };
    json_response(StatusCode::OK, &body)
}

/// One sentence per provider without its key, naming the models that use it
/// and the variable to set (never a value).
fn missing_keys_hint(
    llm: &wombat_llm::LlmSummary,
    missing: &[wombat_core::Provider],
    default_ready: bool,
) -> String {
    let mut parts: Vec<String> = missing
        .iter()
        .map(|p| {
            let uses = llm
                .providers
                .get(p)
                .map(|s| s.uses.join(", "))
                .unwrap_or_default();
            format!(
                "no API key for provider {:?} (used by: {uses}): set {}",
                p.as_str(),
                p.api_key_envs().join(" or ")
            )
        })
        .collect();
    if !default_ready {
        parts.push("or LLM_PROVIDER=echo for an offline round trip".to_owned());
    }
    parts.join("; ")
}

/// Days of the `byDay` series of a shared `/usage`.
const USAGE_SERIES_DAYS: u16 = 31;

/// `GET /usage[?user_id=]`: from the shared store when one is configured
/// (the sum over every replica, with a per-day series), else this process's
/// ledger (0.1.0's shape).
pub(crate) async fn usage(
    app: &App,
    user_id: Option<&str>,
) -> Result<http::Response<Body>, ApiError> {
    if !app.governor.is_shared() {
        return Ok(json_response(StatusCode::OK, &app.usage.report(user_id)));
    }
    let snapshot = app
        .governor
        .usage(user_id, USAGE_SERIES_DAYS)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "usage_unavailable",
                format!("the shared usage store is unreachable: {e}"),
            )
        })?;
    Ok(json_response(
        StatusCode::OK,
        &crate::usage::UsageResponse::from_snapshot(&snapshot, user_id),
    ))
}

/// `GET /context?role=`.
pub(crate) fn context(app: &App, role: Option<&str>) -> Result<http::Response<Body>, ApiError> {
    let role = role.unwrap_or("agent");
    let stats = app
        .workspace
        .context_stats(&PromptRequest::new(role, jiff::Timestamp::now()))
        .map_err(wombat_agent::workspace_error)?;
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
    let mut text = app.metrics.render();
    crate::governance::render_metrics(app, &mut text);
    let mut resp = http::Response::new(full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
