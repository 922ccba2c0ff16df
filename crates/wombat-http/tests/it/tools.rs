//! The tool loop end to end: tools the daemon runs (a test `ToolSource`),
//! caller tools across two requests, with the echo provider's `/tool`
//! directives and with the OpenAI fake, send and stream alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use wombat_agent::tools::{ListError, Tenant, ToolCallRef, ToolInfo, ToolOutcome, ToolSource};
use wombat_core::ToolContent;

use crate::support::{Reply, patiently, send_body, setup};

/// Tools for the tests: `lookup` answers JSON, `fail` fails, `slow` never
/// answers in time, `pair` waits for a second concurrent `pair` call.
struct TestTools {
    calls: AtomicUsize,
    slow_dropped: AtomicUsize,
    pair: Barrier,
}

impl TestTools {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            slow_dropped: AtomicUsize::new(0),
            pair: Barrier::new(2),
        })
    }
}

/// Counts the `slow` calls whose future was dropped (cancelled).
struct DropGuard<'a>(&'a AtomicUsize);

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn info(name: &str) -> ToolInfo {
    ToolInfo {
        name: name.to_owned(),
        description: format!("the {name} test tool"),
        input_schema: json!({"type": "object", "properties": {"key": {"type": "string"}}}),
        requires_approval: false,
    }
}

impl ToolSource for TestTools {
    fn list<'a>(&'a self, _tenant: Tenant<'a>) -> BoxFuture<'a, Result<Vec<ToolInfo>, ListError>> {
        Box::pin(async { Ok(["lookup", "fail", "slow", "pair"].map(info).to_vec()) })
    }

    fn call<'a>(&'a self, tenant: Tenant<'a>, call: ToolCallRef<'a>) -> BoxFuture<'a, ToolOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match call.name {
                "lookup" => ToolOutcome::ok(ToolContent::Json(
                    json!({"found": call.arguments.get("key"), "for": tenant.user_id}),
                )),
                "fail" => ToolOutcome::error("lookup service is down"),
                "slow" => {
                    let _guard = DropGuard(&self.slow_dropped);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    ToolOutcome::ok(ToolContent::Text("late".into()))
                }
                "pair" => {
                    match tokio::time::timeout(Duration::from_secs(20), self.pair.wait()).await {
                        Ok(_) => ToolOutcome::ok(ToolContent::Text("paired".into())),
                        Err(_) => ToolOutcome::error("ran alone"),
                    }
                }
                other => ToolOutcome::error(format!("no tool {other}")),
            }
        })
    }
}

/// A send whose last user message scripts the echo provider's calls.
fn echo_body(user: &str, message: &str, extra: Value) -> Value {
    let mut body = send_body(user, extra);
    body["message"] = json!(message);
    body
}

#[tokio::test]
async fn echo_round_trip_send_runs_the_tool_and_persists_the_trace() {
    let tools = TestTools::new();
    let h = setup()
        .default_model("echo/test")
        .tools(tools.clone())
        .start()
        .await;
    let body = echo_body(
        "alice",
        "/tool lookup {\"key\":\"k1\"}",
        json!({"task_title": "Tools", "webhook": {"url": h.hooks.url}}),
    );
    let r = h.post("/api/agents/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    let text = v["response"].as_str().expect("response");
    assert!(
        text.contains("- lookup: {\"for\":\"alice\",\"found\":\"k1\"}"),
        "the model saw the result: {text}"
    );
    assert_eq!(tools.calls.load(Ordering::SeqCst), 1);
    let task = v["task_id"].as_str().expect("task id");
    let messages = h.messages("alice", task).await;
    assert_eq!(messages.len(), 1, "one agent message for the whole run");
    let trace = &messages[0]["attachments"]["tools"];
    assert_eq!(trace[0]["name"], "lookup", "{trace}");
    assert_eq!(trace[0]["arguments"], json!({"key": "k1"}));
    assert_eq!(trace[0]["is_error"], false);
    // Usage is the sum of both steps, everywhere.
    let usage = &v["usage"];
    assert_eq!(messages[0]["attachments"]["usage"], *usage);
    let hook = h.hooks.wait(1).await[0].json();
    assert_eq!(hook["event"], "agent.completed");
    assert_eq!(hook["usage"], *usage);
    assert_eq!(hook["tools"][0]["name"], "lookup");
    let report = h.get("/usage?user_id=alice").await.json();
    assert_eq!(report["requestCount"], 1, "{report}");
    assert_eq!(report["totalTokens"], usage["total_tokens"], "{report}");
    let metrics = h.get("/metrics").await.text;
    assert!(
        metrics.contains("wombat_tool_calls_total{tool=\"lookup\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wombat_llm_calls_total{provider=\"echo\",model=\"test\"} 2"),
        "two LLM steps: {metrics}"
    );
}

#[tokio::test]
async fn echo_round_trip_stream_sends_tool_events_then_chunks_then_done() {
    let tools = TestTools::new();
    let h = setup()
        .default_model("echo/test")
        .tools(tools.clone())
        .start()
        .await;
    let body = echo_body(
        "alice",
        "/tool lookup {\"key\":\"k2\"}",
        json!({"task_title": "Tools"}),
    );
    let events = h.sse("/api/agents/stream", &body).await.rest().await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"), "{names:?}");
    let call = names
        .iter()
        .position(|e| *e == "tool_call")
        .expect("tool_call");
    let result = names
        .iter()
        .position(|e| *e == "tool_result")
        .expect("tool_result");
    let first_chunk = names.iter().position(|e| *e == "chunk").expect("chunk");
    assert!(call < result && result < first_chunk, "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let (_, c) = &events[call];
    assert_eq!(c["type"], "tool_call");
    assert_eq!(c["name"], "lookup");
    assert_eq!(c["arguments"], json!({"key": "k2"}));
    let (_, r) = &events[result];
    assert_eq!(r["type"], "tool_result");
    assert_eq!(r["id"], c["id"]);
    assert_eq!(r["is_error"], false);
    assert_eq!(r["content"], "{\"for\":\"alice\",\"found\":\"k2\"}");
    let text: String = events
        .iter()
        .filter(|(e, _)| e == "chunk")
        .map(|(_, d)| d["data"].as_str().unwrap_or_default())
        .collect();
    assert!(text.contains("- lookup: "), "{text}");
    let (_, done) = events.last().expect("done");
    assert_eq!(done["persisted"], true, "{done}");
    let report = h.get("/usage?user_id=alice").await.json();
    assert_eq!(
        report["totalTokens"], done["usage"]["total_tokens"],
        "{report}"
    );
}

#[tokio::test]
async fn openai_round_trip_send_and_stream_feed_results_back() {
    for streaming in [false, true] {
        let tools = TestTools::new();
        let h = setup().tools(tools.clone()).start().await;
        h.llm.script([
            Reply::calls(&[("call_a", "lookup", json!({"key": "k9"}))]),
            Reply::text("Found it."),
        ]);
        let body = send_body("alice", json!({"task_title": "Tools"}));
        let (text, usage) = if streaming {
            let events = h.sse("/api/agents/stream", &body).await.rest().await;
            let call = events
                .iter()
                .find(|(e, _)| e == "tool_call")
                .expect("tool_call");
            assert_eq!(call.1["id"], "call_a");
            assert_eq!(call.1["arguments"], json!({"key": "k9"}));
            let result = events
                .iter()
                .find(|(e, _)| e == "tool_result")
                .expect("tool_result");
            assert_eq!(result.1["content"], "{\"for\":\"alice\",\"found\":\"k9\"}");
            let text: String = events
                .iter()
                .filter(|(e, _)| e == "chunk")
                .map(|(_, d)| d["data"].as_str().unwrap_or_default())
                .collect();
            let (event, done) = events.last().expect("done").clone();
            assert_eq!(event, "done", "{done}");
            (text, done["usage"].clone())
        } else {
            let r = h.post("/api/agents/send", &body).await;
            assert_eq!(r.status, 200, "{}", r.text);
            (
                r.json()["response"].as_str().unwrap_or_default().to_owned(),
                r.json()["usage"].clone(),
            )
        };
        assert_eq!(text, "Found it.");
        assert_eq!(usage["prompt_tokens"], 2250, "summed over steps: {usage}");
        assert_eq!(usage["completion_tokens"], 170, "{usage}");
        let requests = h.llm.requests();
        assert_eq!(requests.len(), 2);
        let first = requests[0].json();
        let declared: Vec<&str> = first["tools"]
            .as_array()
            .expect("tools declared")
            .iter()
            .filter_map(|t| t["function"]["name"].as_str())
            .collect();
        assert_eq!(declared, ["lookup", "fail", "slow", "pair"]);
        let second = requests[1].json();
        let messages = second["messages"].as_array().expect("messages");
        let n = messages.len();
        assert_eq!(messages[n - 2]["role"], "assistant");
        assert_eq!(messages[n - 2]["tool_calls"][0]["id"], "call_a");
        assert_eq!(messages[n - 1]["role"], "tool");
        assert_eq!(messages[n - 1]["tool_call_id"], "call_a");
        assert_eq!(
            messages[n - 1]["content"],
            "{\"for\":\"alice\",\"found\":\"k9\"}"
        );
    }
}

#[tokio::test]
async fn parallel_calls_run_concurrently() {
    let tools = TestTools::new();
    let h = setup()
        .default_model("echo/test")
        .tools(tools.clone())
        .start()
        .await;
    // Each `pair` call waits for the other: they finish only if both are
    // in flight at once.
    let body = echo_body(
        "alice",
        "/tool pair {}\n/tool pair {}",
        json!({"task_title": "Tools"}),
    );
    let r = h.post("/api/agents/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = r.json()["response"].as_str().unwrap_or_default().to_owned();
    assert_eq!(text.matches("- pair: paired").count(), 2, "{text}");
}

#[tokio::test]
async fn a_tool_error_and_a_timeout_are_fed_back_to_the_model() {
    let tools = TestTools::new();
    let h = setup()
        .default_model("echo/test")
        .env("WOMBAT_TOOL_TIMEOUT_SECS", "1")
        .tools(tools.clone())
        .start()
        .await;
    let body = echo_body(
        "alice",
        "/tool fail {}\n/tool slow {}\n/tool nosuch {}",
        json!({"task_title": "Tools", "tools": [{"type": "function", "function": {"name": "nosuch"}}]}),
    );
    // `nosuch` is declared by the caller: it stops the run for the caller,
    // after the server-side calls ran.
    let r = h.post("/api/agents/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "requires_action", "{v}");
    let messages = v["messages"].as_array().expect("messages");
    let results: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(results.len(), 2, "{v}");
    assert_eq!(results[0]["content"], "lookup service is down");
    assert_eq!(results[0]["is_error"], true);
    assert_eq!(results[1]["content"], "tool slow did not answer within 1s");
    assert_eq!(results[1]["is_error"], true);
    assert_eq!(
        tools.slow_dropped.load(Ordering::SeqCst),
        1,
        "the slow call was dropped"
    );
    // Without a caller tool the model gets the errors and answers.
    let body = echo_body(
        "alice",
        "/tool fail {}\n/tool slow {}",
        json!({"task_title": "Tools"}),
    );
    let r = h.post("/api/agents/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = r.json()["response"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("- fail failed: lookup service is down"),
        "{text}"
    );
    assert!(
        text.contains("- slow failed: tool slow did not answer within 1s"),
        "{text}"
    );
    let metrics = h.get("/metrics").await.text;
    assert!(
        metrics.contains("wombat_tool_errors_total{tool=\"slow\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_last_allowed_step_must_answer_in_text() {
    let tools = TestTools::new();
    let h = setup()
        .env("WOMBAT_TOOL_MAX_STEPS", "2")
        .tools(tools.clone())
        .start()
        .await;
    h.llm.always(Reply::calls(&[(
        "call_x",
        "lookup",
        json!({"key": "again"}),
    )]));
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "Tools"})),
        )
        .await;
    r.assert_error(502, "tool_loop_limit");
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2, "max steps bounds the LLM calls");
    assert!(requests[0].json().get("tool_choice").is_none());
    assert_eq!(requests[1].json()["tool_choice"], "none");
    // Both paid steps are on the ledger.
    let report = h.get("/usage?user_id=alice").await.json();
    assert_eq!(report["totalTokens"], 2040, "{report}");
}

#[tokio::test]
async fn caller_tools_stop_the_run_and_resume_with_the_results() {
    let h = setup().default_model("echo/test").start().await;
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }}]);
    let message = "/tool get_weather {\"city\":\"Paris\"}";
    let body = echo_body(
        "alice",
        message,
        json!({"task_title": "Weather", "tools": tools, "webhook": {"url": h.hooks.url}}),
    );
    let r = h.post("/api/agents/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "requires_action", "{v}");
    let call = &v["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
        .expect("JSON arguments");
    assert_eq!(args, json!({"city": "Paris"}));
    let task = v["task_id"].as_str().expect("task").to_owned();
    assert!(
        h.messages("alice", &task).await.is_empty(),
        "nothing written for this turn"
    );
    let hook = h.hooks.wait(1).await[0].json();
    assert_eq!(hook["event"], "agent.requires_action", "{hook}");
    // The caller runs the tool and sends the results.
    let mut history = vec![json!({"role": "user", "content": message})];
    history.extend(v["messages"].as_array().expect("messages").iter().cloned());
    history.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21°C"}));
    let mut next = send_body(
        "alice",
        json!({"task_id": task, "tools": tools, "messages": history}),
    );
    next["message"] = json!("");
    let r = h.post("/api/agents/send", &next).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert!(
        v["response"]
            .as_str()
            .unwrap_or_default()
            .contains("- get_weather: sunny, 21°C"),
        "{v}"
    );
    assert_eq!(h.messages("alice", &task).await.len(), 1);
    // The stream says the same in its `done`.
    let events = h.sse("/api/agents/stream", &body).await.rest().await;
    let (event, done) = events.last().expect("done");
    assert_eq!(event, "done");
    assert_eq!(done["status"], "requires_action", "{done}");
    assert_eq!(done["persisted"], false);
    assert_eq!(done["tool_calls"][0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn bad_caller_tools_are_refused_naming_the_problem() {
    let h = setup().start().await;
    for (tools, needle) in [
        (json!([{"type": "retrieval"}]), "tools"),
        (
            json!([{"type": "retrieval", "function": {"name": "a"}}]),
            "tools[0].type",
        ),
        (
            json!([{"type": "function", "function": {"name": "has space"}}]),
            "tools[0].function.name",
        ),
        (
            json!([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]),
            "declared twice",
        ),
        (
            json!([{"type": "function", "function": {"name": "a", "parameters": "x"}}]),
            "parameters",
        ),
    ] {
        let r = h
            .post(
                "/api/agents/send",
                &send_body("alice", json!({"task_title": "T", "tools": tools})),
            )
            .await;
        let v = r.assert_error(400, "invalid_request");
        assert!(v.to_string().contains(needle), "{needle}: {v}");
    }
    assert!(h.llm.requests().is_empty());
}

#[tokio::test]
async fn a_client_gone_mid_loop_cancels_the_tool_and_records_usage() {
    let tools = TestTools::new();
    let h = setup()
        .default_model("echo/test")
        .tools(tools.clone())
        .start()
        .await;
    let body = echo_body("alice", "/tool slow {}", json!({"task_title": "Tools"}));
    let mut sse = h.sse("/api/agents/stream", &body).await;
    loop {
        let (event, _) = sse.next().await.expect("an event");
        if event == "tool_call" {
            break;
        }
    }
    drop(sse);
    patiently("the slow call to be cancelled", async {
        while tools.slow_dropped.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let report = patiently("usage to be recorded", async {
        loop {
            let report = h.get("/usage?user_id=alice").await.json();
            if report["requestCount"] == 1 {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        report["totalTokens"].as_u64().unwrap_or_default() > 0,
        "{report}"
    );
    assert!(h.tasks("alice").await.len() == 1);
}

#[tokio::test]
async fn mcp_tools_of_the_reference_backend_act_as_the_tenant() {
    let h = setup().default_model("echo/test").mcp().start().await;
    let body = echo_body(
        "alice",
        "/tool mc__create_task {\"title\":\"Filed by a tool\"}",
        json!({"task_title": "Tools"}),
    );
    let r = h.post("/api/agents/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = r.json()["response"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("- mc__create_task: "), "{text}");
    assert!(!text.contains("failed"), "{text}");
    let titles = |tasks: Vec<Value>| -> Vec<String> {
        tasks
            .iter()
            .filter_map(|t| t["title"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        titles(h.tasks("alice").await).contains(&"Filed by a tool".to_owned()),
        "the tool ran as alice"
    );
    assert!(
        !titles(h.tasks("bob").await).contains(&"Filed by a tool".to_owned()),
        "and only as alice"
    );
}

#[tokio::test]
async fn mcp_tools_are_declared_with_the_reference_backend() {
    let h = setup().mcp().start().await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("alice", json!({"task_title": "Tools"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let first = h.llm.requests()[0].json();
    let declared: Vec<&str> = first["tools"]
        .as_array()
        .expect("tools declared")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(declared.contains(&"mc__search_tasks"), "{declared:?}");
    assert!(declared.contains(&"mc__create_task"), "{declared:?}");
    assert!(
        declared.contains(&"mc__delete_document"),
        "destructive, offered behind an approval: {declared:?}"
    );
}

/// A person's decision on a tool request, made in the reference backend.
async fn decide(
    h: &crate::support::Harness,
    user: &str,
    id: &str,
    approve: bool,
    reason: Option<&str>,
) {
    use wombat_core::controlplane::{ToolRequestDecision, ToolRequestStatus};
    let url = h.mc.as_ref().expect("mc-lite").url();
    let cp = wombat_controlplane::ControlPlane::new(wombat_controlplane::ControlPlaneConfig::new(
        url,
        crate::support::jwt_config(),
    ))
    .expect("client");
    let decision = ToolRequestDecision {
        status: if approve {
            ToolRequestStatus::Approved
        } else {
            ToolRequestStatus::Rejected
        },
        reason: reason.map(str::to_owned),
    };
    cp.agent(user, "agent")
        .resolve_tool_request(id, &decision)
        .await
        .expect("decided");
}

/// A task with a plan document, and a send that asks to delete it (a
/// destructive tool: it needs an approval). Returns (task, document,
/// tool request id).
async fn awaiting_delete(h: &crate::support::Harness) -> (String, String, String) {
    let r = h
        .post(
            "/api/agents/send",
            &send_body(
                "alice",
                json!({"task_title": "Docs", "metadata": {"kickoff_plan": true}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let task = r.json()["task_id"].as_str().expect("task").to_owned();
    let doc = r.json()["document_id"]
        .as_str()
        .expect("document")
        .to_owned();
    let body = echo_body(
        "alice",
        &format!("/tool mc__delete_document {{\"document_id\":\"{doc}\"}}"),
        json!({"task_id": task}),
    );
    let r = h.post("/api/agents/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "awaiting_approval", "{v}");
    assert_eq!(v["tool_requests"][0]["tool"], "mc__delete_document");
    assert_eq!(
        v["tool_requests"][0]["arguments"],
        json!({"document_id": doc})
    );
    let id = v["tool_requests"][0]["id"].as_str().expect("id").to_owned();
    let messages = h.messages("alice", &task).await;
    let waiting = messages.last().expect("the waiting message");
    assert_eq!(
        waiting["attachments"]["tool_requests"][0]["id"],
        id.as_str()
    );
    assert_eq!(
        h.documents("alice", &task).await.len(),
        1,
        "nothing deleted yet"
    );
    (task, doc, id)
}

fn resume_body(user: &str, task: &str, id: &str) -> Value {
    let mut body = send_body(
        user,
        json!({"task_id": task, "metadata": {"tool_request_id": id}}),
    );
    body["message"] = json!("Your tool request was decided.");
    body
}

#[tokio::test]
async fn an_approval_waits_then_resumes_exactly_once() {
    let h = setup().default_model("echo/test").mcp().start().await;
    let (task, _doc, id) = awaiting_delete(&h).await;
    let resume = resume_body("alice", &task, &id);
    h.post("/api/agents/send", &resume)
        .await
        .assert_error(409, "tool_request_pending");
    // Another tenant cannot consume it.
    let bob_task = h.create_task("bob", "Bob's").await;
    h.post("/api/agents/send", &resume_body("bob", &bob_task, &id))
        .await
        .assert_error(404, "tool_request_not_found");
    decide(&h, "alice", &id, true, None).await;
    let r = h.post("/api/agents/send", &resume).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    let text = v["response"].as_str().unwrap_or_default();
    assert!(text.contains("- mc__delete_document: "), "{text}");
    assert!(!text.contains("failed"), "{text}");
    assert!(
        h.documents("alice", &task).await.is_empty(),
        "the approved call ran"
    );
    let messages = h.messages("alice", &task).await;
    let last = messages.last().expect("reply");
    assert_eq!(
        last["attachments"]["tools"][0]["name"],
        "mc__delete_document"
    );
    // Replayed (a redelivery, a retry): never a second execution.
    h.post("/api/agents/send", &resume)
        .await
        .assert_error(409, "tool_request_consumed");
}

#[tokio::test]
async fn a_rejected_call_is_told_to_the_model_and_not_run() {
    let h = setup().default_model("echo/test").mcp().start().await;
    let (task, _doc, id) = awaiting_delete(&h).await;
    decide(&h, "alice", &id, false, Some("keep it")).await;
    let r = h
        .post("/api/agents/send", &resume_body("alice", &task, &id))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = r.json()["response"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("- mc__delete_document failed: a person rejected this call: keep it"),
        "{text}"
    );
    assert_eq!(h.documents("alice", &task).await.len(), 1, "not deleted");
}
