//! The operator's MCP servers as a [`ToolSource`]: `wombat-mcp`'s
//! [`McpTools`] behind the run loop's trait.
//!
//! Tenancy is `wombat-mcp`'s: every MCP request carries the tenant's agent
//! JWT and no client is shared between tenants. Without an agent JWT (no
//! backend configured) MCP tools are unavailable rather than called
//! anonymously: a server that scopes by the token must never see a request
//! it cannot attribute.

use futures::future::BoxFuture;
use serde_json::Value;
use wombat_mcp::{McpTenant, McpTools};

use super::{ListError, Tenant, ToolCallRef, ToolInfo, ToolOutcome, ToolSource};

/// Why MCP tools are unavailable without an agent JWT.
const NO_TOKEN: &str = "MCP tools need the tenant's agent JWT, and no backend is configured";

/// MCP tools as a tool source (cheap to clone).
#[derive(Debug, Clone)]
pub struct McpSource {
    tools: McpTools,
}

impl McpSource {
    /// Wraps the configured MCP servers' tools.
    pub fn new(tools: McpTools) -> Self {
        Self { tools }
    }
}

/// The tenant as `wombat-mcp` takes it, or `None` without an agent JWT.
fn mcp_tenant(tenant: Tenant<'_>) -> Option<McpTenant> {
    let token = tenant.agent_token?;
    let mut t = McpTenant::new(tenant.user_id, token);
    if let Some(tp) = tenant.traceparent {
        t = t.with_traceparent(tp);
    }
    Some(t)
}

impl ToolSource for McpSource {
    fn list<'a>(&'a self, tenant: Tenant<'a>) -> BoxFuture<'a, Result<Vec<ToolInfo>, ListError>> {
        Box::pin(async move {
            let Some(t) = mcp_tenant(tenant) else {
                return Err(ListError(NO_TOKEN.to_owned()));
            };
            Ok(self
                .tools
                .list(&t)
                .await
                .into_iter()
                .map(|info| ToolInfo {
                    name: info.name,
                    description: info.description,
                    input_schema: info.input_schema,
                    requires_approval: info.requires_approval,
                })
                .collect())
        })
    }

    fn call<'a>(&'a self, tenant: Tenant<'a>, call: ToolCallRef<'a>) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            let Some(t) = mcp_tenant(tenant) else {
                return ToolOutcome::error(NO_TOKEN);
            };
            let outcome = self
                .tools
                .call(&t, call.name, Value::Object(call.arguments.clone()))
                .await;
            ToolOutcome {
                content: outcome.content,
                is_error: outcome.is_error,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use wombat_mcp::{McpConfig, McpOptions};

    fn source() -> McpSource {
        // Nothing listens on port 9 of loopback (discard); never reached
        // in these tests anyway.
        let config = McpConfig::parse(
            r#"{"mcpServers": {"mc": {"url": "http://127.0.0.1:9/mcp"}}}"#,
            "test",
        )
        .expect("valid config");
        McpSource::new(McpTools::new(config, McpOptions::default()).expect("client"))
    }

    #[tokio::test]
    async fn without_an_agent_token_nothing_is_listed_or_called() {
        let tenant = Tenant {
            user_id: "u1",
            role: "agent",
            agent_token: None,
            traceparent: None,
        };
        let source = source();
        let listed = source.list(tenant).await;
        assert_eq!(listed, Err(ListError(NO_TOKEN.to_owned())));
        let args = Map::new();
        let outcome = source
            .call(
                tenant,
                ToolCallRef {
                    id: "c1",
                    name: "mc__search_tasks",
                    arguments: &args,
                },
            )
            .await;
        assert_eq!(outcome, ToolOutcome::error(NO_TOKEN));
    }
}
