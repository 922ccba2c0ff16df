//! What a run needs from the process that embeds it: the composed parts
//! (LLM router, workspace, control plane), the per-process limits (the LLM
//! slot, governance), and where its observations go (usage ledger,
//! metrics, webhooks). `wombat-http` implements it for its daemon state.
//!
//! Static dispatch: the pipeline is generic over the host, so a send pays
//! no virtual call or allocation for this indirection.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use wombat_controlplane::ControlPlane;
use wombat_core::{Cost, Usage};
use wombat_governance::{Admitted, Limits};
use wombat_llm::{RouteRequest, Router};
use wombat_workspace::Workspace;

use crate::ApiError;
use crate::request::WebhookSpec;
use crate::tools::{LoopLimits, ToolSource};

/// The settings of a run, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WOMBAT_REQUEST_TIMEOUT_SECS`: bounds task resolution and every LLM
    /// step (and tool call) of a request.
    pub request_timeout: Duration,
    /// `WOMBAT_TEMPERATURE`, used when the request sets none.
    pub temperature: f32,
    /// `WOMBAT_DEFAULT_TASK`: the task title used when a request names none.
    pub default_task: Option<String>,
    /// `WOMBAT_CONTEXT_WARNING_THRESHOLD` (percent of the context window).
    pub context_warning_threshold: f64,
    /// The tool loop's limits (`WOMBAT_TOOL_*`).
    pub tools: LoopLimits,
}

/// The process a run is embedded in.
pub trait Host: Send + Sync {
    /// A validated webhook destination.
    type Webhook: Clone + Send + Sync + 'static;
    /// A slot of the process-wide LLM concurrency cap, held while the LLM
    /// is called.
    type Permit: Send + 'static;

    /// The run's settings.
    fn settings(&self) -> &Settings;
    /// The LLM router.
    fn llm(&self) -> &Router;
    /// The workspace (prompts).
    fn workspace(&self) -> &Workspace;
    /// The backend, when one is configured.
    fn control_plane(&self) -> Option<&ControlPlane>;

    /// Takes an LLM slot, or answers why not (429 `overloaded`).
    ///
    /// # Errors
    /// When every slot is taken.
    fn llm_permit(&self) -> Result<Self::Permit, ApiError>;

    /// Checks `user`'s limits before one LLM step to `model` and reserves
    /// its estimate. `Ok(None)`: no limit applies (nothing to settle).
    fn admit(
        &self,
        user: &str,
        limits: Option<&Limits>,
        route: &RouteRequest,
        model: &str,
    ) -> impl Future<Output = Result<Option<Admitted>, ApiError>> + Send;

    /// Releases an admission whose step consumed nothing known.
    fn release(&self, admitted: Option<Admitted>) -> impl Future<Output = ()> + Send;

    /// Settles an admission with a step's usage (and adds it to a shared
    /// ledger, when there is one).
    fn account(
        &self,
        admitted: Option<Admitted>,
        user: &str,
        usage: &Usage,
        cost: &Cost,
        estimated: bool,
    ) -> impl Future<Output = ()> + Send;

    /// Validates a request's webhook.
    ///
    /// # Errors
    /// When the URL or headers are not acceptable (400).
    fn validate_webhook(&self, spec: &WebhookSpec) -> Result<Self::Webhook, ApiError>;

    /// Delivers `event` in the background (never blocks the run).
    fn fire_webhook(&self, target: &Self::Webhook, event: Value);

    /// Counts one LLM step (successful or not) against the model that
    /// answered or failed.
    fn observe_llm(&self, provider: &str, model: &str, ok: bool, usage: &Usage, cost_micros: u64);

    /// Counts the retries and failovers of one successful step.
    fn observe_route(&self, attempts: u32, failovers: u32);

    /// Adds usage to the per-process ledger (`/usage`); `estimated` when the
    /// provider never reported it (a stream cut mid-generation).
    fn record_usage(&self, user: &str, usage: &Usage, cost: &Cost, estimated: bool);

    /// Counts a failed backend call.
    fn backend_failed(&self);

    /// The tools this process runs itself (MCP servers, …); `None`: only
    /// caller tools.
    fn tool_source(&self) -> Option<&dyn ToolSource> {
        None
    }

    /// The tenant's agent JWT for tool sources that act through the
    /// backend (`None` without a backend).
    fn agent_token(&self, user: &str, role: &str) -> Option<String> {
        let _ = (user, role);
        None
    }

    /// Counts one tool call (metrics per tool: calls, errors, latency).
    fn observe_tool(&self, name: &str, is_error: bool, elapsed: Duration) {
        let _ = (name, is_error, elapsed);
    }
}
