//! Keeps `docs/control-plane.openapi.yaml` in sync with the reference
//! backend, in both directions: every documented operation is served (an
//! optional one exactly when its feature is advertised), accepts the
//! document's own examples and answers with the documented status and
//! schema; and every route the backend implements is documented, either as
//! contract or as `x-wombat-reference-only`. It does not judge contract
//! semantics such as idempotency or isolation (the conformance suite does).
//!
//! The router in `src/api.rs` is private, so the backend's routes are listed
//! here by hand ([`REFERENCE_ROUTES`]); that list is checked against the
//! live server (per path, exactly the listed methods are served) and against
//! the path patterns written in `src/api.rs`.

use std::collections::{BTreeMap, BTreeSet};

use gray_matter::engine::{Engine, YAML};
use serde_json::{Value, json};
use wombat_controlplane::task_idempotency_key;
use wombat_mc_lite::{RunningMcLite, enqueue_notification};

use crate::support::*;

const SPEC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/control-plane.openapi.yaml"
);
const ROUTER_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api.rs");

/// Every route wombat-mc-lite serves, as `(method, path template)`.
const REFERENCE_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/api/mission-control/capabilities"),
    ("GET", "/api/mission-control/tasks"),
    ("POST", "/api/mission-control/tasks"),
    ("GET", "/api/mission-control/tasks/{id}/messages"),
    ("GET", "/api/mission-control/tasks/{id}/documents"),
    ("POST", "/api/mission-control/messages"),
    ("POST", "/api/mission-control/documents"),
    ("POST", "/api/mission-control/heartbeat"),
    ("POST", "/api/mission-control/standup"),
    ("GET", "/api/mission-control/dispatch/undelivered"),
    ("POST", "/api/mission-control/dispatch/notifications"),
    (
        "POST",
        "/api/mission-control/dispatch/notifications/{id}/deliver",
    ),
    ("GET", "/api/mission-control/tool-requests"),
    ("POST", "/api/mission-control/tool-requests"),
    ("GET", "/api/mission-control/tool-requests/{id}"),
    ("PATCH", "/api/mission-control/tool-requests/{id}"),
    ("POST", "/api/mission-control/tool-requests/{id}/consume"),
];

/// Methods probed when asking the live server which ones a path serves.
const PROBED_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Schemas the contract must define.
const CONTRACT_SCHEMAS: &[&str] = &[
    "Task",
    "TaskPage",
    "NewTask",
    "NewMessage",
    "Message",
    "NewDocument",
    "Document",
    "Capabilities",
    "Delivery",
    "ErrorBody",
];

const HTTP_METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options"];

/// Who an operation authenticates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Agent,
    Internal,
    None,
}

/// One operation of the document.
#[derive(Debug)]
struct Op {
    method: String,
    path: String,
    operation_id: String,
    reference_only: bool,
    optional: bool,
    feature: Option<String>,
    auth: Auth,
    raw: Value,
}

impl Op {
    fn label(&self) -> String {
        format!("{} {} ({})", self.method, self.path, self.operation_id)
    }
}

fn load_spec() -> Value {
    let text = std::fs::read_to_string(SPEC_PATH)
        .unwrap_or_else(|e| panic!("cannot read {SPEC_PATH}: {e}"));
    YAML::parse(&text)
        .unwrap_or_else(|e| panic!("{SPEC_PATH} is not valid YAML: {e}"))
        .deserialize::<Value>()
        .unwrap_or_else(|e| panic!("{SPEC_PATH} does not map to JSON: {e}"))
}

/// Follows `$ref`s (local JSON pointers only) until a concrete node.
fn resolve<'a>(spec: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = node.get("$ref").and_then(Value::as_str) else {
            return node;
        };
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are allowed, got {reference}"));
        node = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {reference} does not resolve"));
    }
    panic!("$ref chain too long")
}

fn operations(spec: &Value) -> Vec<Op> {
    let default_security = &spec["security"];
    let mut ops = Vec::new();
    let paths = spec["paths"].as_object().expect("paths is an object");
    for (path, item) in paths {
        let item = item.as_object().expect("path item is an object");
        for (method, op) in item {
            if !HTTP_METHODS.contains(&method.as_str()) {
                continue;
            }
            let security = op.get("security").unwrap_or(default_security);
            let auth = match security.as_array().map(Vec::as_slice) {
                Some([]) => Auth::None,
                Some([req]) if req.get("AgentToken").is_some() => Auth::Agent,
                Some([req]) if req.get("InternalToken").is_some() => Auth::Internal,
                other => panic!("{method} {path}: unsupported security {other:?}"),
            };
            ops.push(Op {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                operation_id: op["operationId"].as_str().unwrap_or_default().to_owned(),
                reference_only: op["x-wombat-reference-only"] == json!(true),
                optional: op["x-wombat-optional"] == json!(true),
                feature: op["x-wombat-feature"].as_str().map(str::to_owned),
                auth,
                raw: op.clone(),
            });
        }
    }
    ops.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    ops
}

/// Checks `value` against an OpenAPI 3.0 schema subset: `$ref`, `oneOf`,
/// `nullable`, `type`, `required`, `properties`, `items`, `enum`,
/// `minLength`. Unknown properties are allowed (backends may add fields).
fn check_schema(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if value.is_null() {
        let typed = schema.get("type").is_some() || schema.get("oneOf").is_some();
        if typed && schema["nullable"] != json!(true) {
            errors.push(format!("{at}: null where the schema does not allow it"));
        }
        return;
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let matches = alternatives.iter().any(|alt| {
            let mut scratch = Vec::new();
            check_schema(spec, alt, value, at, &mut scratch);
            scratch.is_empty()
        });
        if !matches {
            errors.push(format!("{at}: {value} matches no oneOf alternative"));
        }
        return;
    }
    let Some(ty) = schema["type"].as_str() else {
        return;
    };
    let type_ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        other => {
            errors.push(format!("{at}: unknown schema type {other}"));
            return;
        }
    };
    if !type_ok {
        errors.push(format!("{at}: expected {ty}, got {value}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(min), Some(s)) = (schema["minLength"].as_u64(), value.as_str())
        && (s.chars().count() as u64) < min
    {
        errors.push(format!("{at}: shorter than {min} characters"));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("required names are strings");
            if !object.contains_key(name) {
                errors.push(format!("{at}: required property {name} is missing"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, sub) in properties {
                if let Some(v) = object.get(name) {
                    check_schema(spec, sub, v, &format!("{at}.{name}"), errors);
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            check_schema(spec, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

fn assert_matches(spec: &Value, schema: &Value, value: &Value, what: &str) {
    let mut errors = Vec::new();
    check_schema(spec, schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{what} does not match its schema:\n  {}\nvalue: {value}",
        errors.join("\n  ")
    );
}

/// Every `$ref` anywhere in the document.
fn collect_refs<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
    match node {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                out.push(r);
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn spec_is_well_formed_and_its_examples_match_its_schemas() {
    let spec = load_spec();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "openapi version: {}",
        spec["openapi"]
    );
    assert_eq!(spec["info"]["version"], "v1");

    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        // Panics with the offending reference when it does not resolve.
        resolve(&spec, &json!({ "$ref": r }));
    }

    for (name, header) in [
        ("AgentToken", "X-Agent-Token"),
        ("InternalToken", "X-Internal-Token"),
    ] {
        let scheme = &spec["components"]["securitySchemes"][name];
        assert_eq!(scheme["type"], "apiKey", "{name}");
        assert_eq!(scheme["in"], "header", "{name}");
        assert_eq!(scheme["name"], header, "{name}");
    }
    for name in CONTRACT_SCHEMAS {
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "schema {name} is missing"
        );
    }

    let ops = operations(&spec);
    let mut ids = BTreeSet::new();
    let features = &spec["components"]["schemas"]["Features"];
    let required_flags: Vec<&Value> = features["required"].as_array().unwrap().iter().collect();
    let mut gated_flags = BTreeSet::new();
    for op in &ops {
        let label = op.label();
        assert!(!op.operation_id.is_empty(), "{label}: no operationId");
        assert!(ids.insert(op.operation_id.clone()), "{label}: duplicate id");
        assert!(
            op.raw["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{label}: no responses"
        );
        assert!(
            !(op.reference_only && op.optional),
            "{label}: reference-only and optional at once"
        );
        if let Some(flag) = &op.feature {
            assert!(op.optional, "{label}: a feature flag implies optional");
            assert!(
                features["properties"][flag].is_object(),
                "{label}: unknown capabilities flag {flag}"
            );
            assert!(
                !required_flags.contains(&&json!(flag)),
                "{label}: {flag} is a required feature"
            );
            gated_flags.insert(flag.clone());
        }
        // An optional parameter of a required operation may be gated too
        // (`title` of `GET tasks`, by `task_title_filter`).
        for param in op.raw["parameters"].as_array().into_iter().flatten() {
            let param = resolve(&spec, param);
            if let Some(flag) = param["x-wombat-feature"].as_str() {
                assert!(
                    param["required"] != json!(true),
                    "{label}: a gated parameter must be optional"
                );
                assert!(
                    features["properties"][flag].is_object(),
                    "{label}: unknown capabilities flag {flag}"
                );
                gated_flags.insert(flag.to_owned());
            }
        }
        if op.auth != Auth::None {
            assert!(
                op.raw["responses"]["401"].is_object(),
                "{label}: authenticated but no 401 documented"
            );
        }

        if let Some(media) = op.raw["requestBody"]["content"]["application/json"].as_object() {
            let example = media
                .get("example")
                .unwrap_or_else(|| panic!("{label}: request body without example"));
            assert_matches(
                &spec,
                &media["schema"],
                example,
                &format!("{label} request example"),
            );
        }
        for (status, response) in op.raw["responses"].as_object().unwrap() {
            let response = resolve(&spec, response);
            if let Some(media) = response["content"]["application/json"].as_object()
                && let Some(example) = media.get("example")
            {
                assert_matches(
                    &spec,
                    &media["schema"],
                    example,
                    &format!("{label} {status} example"),
                );
            }
        }
    }
    // Every optional flag of the capabilities is backed by an operation.
    let optional_flags: BTreeSet<String> = features["properties"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !required_flags.contains(&&json!(k)))
        .cloned()
        .collect();
    assert_eq!(optional_flags, gated_flags);
    let caps = &spec["components"]["schemas"]["Capabilities"];
    assert_matches(&spec, caps, &caps["example"], "Capabilities example");

    // The task example shows the key Wombat really sends for tenant user-1.
    let task = &spec["paths"]["/api/mission-control/tasks"]["post"]["requestBody"]["content"]["application/json"]
        ["example"];
    let title = task["title"].as_str().unwrap();
    assert_eq!(
        task["idempotency_key"],
        task_idempotency_key("user-1", title),
        "createTask example key"
    );
}

/// A backend with one task, one queued notification and one pending tool
/// request for `TENANT`.
struct Fixture {
    server: RunningMcLite,
    task_id: String,
    notification_id: String,
    tool_request_id: String,
}

const TENANT: &str = "openapi-tenant";

async fn fixture() -> Fixture {
    let server = start_memory().await;
    let (status, task) = as_user(
        &server,
        TENANT,
        "POST",
        "tasks",
        Some(json!({"title": "OpenAPI fixture"})),
    )
    .await;
    assert_eq!(status, 200, "{task}");
    let ntf = enqueue_notification(
        &server.url(),
        INTERNAL,
        TENANT,
        &format!("user:{TENANT}:agent"),
        "fixture notification",
    )
    .await
    .unwrap();
    let (status, tool_request) = as_user(
        &server,
        TENANT,
        "POST",
        "tool-requests",
        Some(json!({"task_id": task["id"], "tool": "t", "arguments": {}, "call_id": "c"})),
    )
    .await;
    assert_eq!(status, 200, "{tool_request}");
    Fixture {
        task_id: task["id"].as_str().unwrap().to_owned(),
        notification_id: ntf["notification_id"].as_str().unwrap().to_owned(),
        tool_request_id: tool_request["id"].as_str().unwrap().to_owned(),
        server,
    }
}

impl Fixture {
    /// The path with `{id}` replaced by a real id of the right kind.
    fn concrete_path(&self, path: &str) -> String {
        // Operations run in path order, so the pending request is read,
        // then approved (PATCH), then consumed.
        let id = if path.starts_with("/api/mission-control/dispatch/notifications/") {
            &self.notification_id
        } else if path.starts_with("/api/mission-control/tool-requests/") {
            &self.tool_request_id
        } else {
            &self.task_id
        };
        path.replace("{id}", id)
    }

    /// The document's example with ids and tenant replaced by real ones.
    fn localise(&self, example: &Value) -> Value {
        match example {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = match k.as_str() {
                            "task_id" => json!(self.task_id),
                            "user_id" => json!(TENANT),
                            _ => self.localise(v),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.localise(v)).collect()),
            other => other.clone(),
        }
    }

    /// The URL of `op` with its documented query examples.
    fn url(&self, spec: &Value, op: &Op) -> String {
        let mut query = Vec::new();
        for param in op.raw["parameters"].as_array().into_iter().flatten() {
            let param = resolve(spec, param);
            if param["in"] != "query" {
                continue;
            }
            let name = param["name"].as_str().unwrap();
            let value = if name == "user_id" {
                Some(TENANT.to_owned())
            } else {
                param.get("example").map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            match value {
                Some(v) => query.push(format!("{name}={v}")),
                None if param["required"] == json!(true) => {
                    panic!(
                        "{}: required query parameter {name} has no example",
                        op.label()
                    )
                }
                None => {}
            }
        }
        let mut url = format!("{}{}", self.server.url(), self.concrete_path(&op.path));
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }
}

/// The JSON schema documented for `status` of `op`, if any.
fn response_schema<'a>(spec: &'a Value, op: &'a Op, status: u16) -> Option<&'a Value> {
    let response = op.raw["responses"].get(status.to_string())?;
    resolve(spec, response)["content"]["application/json"].get("schema")
}

#[tokio::test]
async fn every_documented_operation_is_served_as_documented() {
    let spec = load_spec();
    let fx = fixture().await;
    let agent = token(TENANT);
    let (status, caps) = as_user(&fx.server, TENANT, "GET", "capabilities", None).await;
    assert_eq!(status, 200);

    for op in operations(&spec) {
        let label = op.label();
        let url = fx.url(&spec, &op);
        let body = op.raw["requestBody"]["content"]["application/json"]
            .get("example")
            .map(|e| fx.localise(e).to_string());
        let auth: Vec<(&str, &str)> = match op.auth {
            Auth::Agent => vec![("x-agent-token", agent.as_str())],
            Auth::Internal => vec![("x-internal-token", INTERNAL)],
            Auth::None => vec![],
        };
        let (status, answer) = call(&op.method, &url, &auth, body.as_deref()).await;

        if let Some(flag) = &op.feature
            && caps["features"][flag] != json!(true)
        {
            // Not advertised, so it must not be served either.
            assert_eq!(
                status, 404,
                "{label}: served although {flag} is not advertised"
            );
            continue;
        }
        assert!(
            (200..300).contains(&status),
            "{label}: the documented example answered {status} {answer}"
        );
        assert!(
            op.raw["responses"].get(status.to_string()).is_some(),
            "{label}: answered {status}, which is not documented"
        );
        if let Some(schema) = response_schema(&spec, &op, status) {
            assert_matches(&spec, schema, &answer, &format!("{label} answer"));
        }

        if op.auth != Auth::None {
            let (status, error) = call(&op.method, &url, &[], body.as_deref()).await;
            assert_eq!(status, 401, "{label} without a token: {error}");
            let schema = response_schema(&spec, &op, 401)
                .unwrap_or_else(|| panic!("{label}: 401 has no JSON schema"));
            assert_matches(&spec, schema, &error, &format!("{label} 401 answer"));
        }
    }
}

/// One request without credentials; `(status, Allow header)`.
async fn probe(method: &str, url: &str) -> (u16, Option<String>) {
    let resp = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .send()
        .await
        .unwrap();
    let allow = resp
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), allow)
}

#[tokio::test]
async fn every_route_of_the_reference_backend_is_documented() {
    let spec = load_spec();
    let ops = operations(&spec);
    let documented: BTreeSet<(String, String)> = ops
        .iter()
        .map(|op| (op.method.clone(), op.path.clone()))
        .collect();
    let listed: BTreeSet<(String, String)> = REFERENCE_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    for route in &listed {
        assert!(
            documented.contains(route),
            "{} {} is served by mc-lite but missing from {SPEC_PATH}",
            route.0,
            route.1
        );
    }
    for op in ops.iter().filter(|op| op.reference_only) {
        assert!(
            listed.contains(&(op.method.clone(), op.path.clone())),
            "{} is marked reference-only but mc-lite does not serve it",
            op.label()
        );
    }

    // Ask the live server which methods each known path serves: an
    // unauthenticated request to a served method is never 404 or 405
    // (authentication comes after routing), and 405s name the served ones.
    let fx = fixture().await;
    let mut expected: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in &ops {
        expected.entry(op.path.as_str()).or_default();
    }
    for (method, path) in REFERENCE_ROUTES {
        expected.entry(path).or_default().insert(method);
    }
    for (path, methods) in &expected {
        let url = format!("{}{}", fx.server.url(), fx.concrete_path(path));
        let mut served = BTreeSet::new();
        for method in PROBED_METHODS {
            let (status, allow) = probe(method, &url).await;
            if status == 405 {
                let mut allowed: Vec<&str> = allow
                    .as_deref()
                    .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"))
                    .split(',')
                    .map(str::trim)
                    .collect();
                allowed.sort_unstable();
                assert_eq!(
                    allowed,
                    methods.iter().copied().collect::<Vec<_>>(),
                    "Allow of {path}"
                );
            } else if status != 404 {
                served.insert(*method);
            }
        }
        assert_eq!(&served, methods, "methods mc-lite serves on {path}");
    }
}

/// Path templates written in the router's `Endpoint::route`: the literal
/// `path == "..."` matches and the slice patterns under the
/// `strip_prefix("...")` prefix, with bindings turned into `{id}`.
fn router_paths(source: &str) -> BTreeSet<String> {
    let start = source
        .find("fn route(")
        .expect("src/api.rs has no `fn route(`; update tests/it/openapi.rs");
    let end = source[start..]
        .find("fn allowed(")
        .expect("src/api.rs has no `fn allowed(`; update tests/it/openapi.rs");
    let body = &source[start..start + end];
    let quoted_after = |marker: &str| -> Vec<String> {
        body.match_indices(marker)
            .filter_map(|(i, _)| {
                let rest = &body[i + marker.len()..];
                let rest = rest.strip_prefix('"')?;
                rest.find('"').map(|j| rest[..j].to_owned())
            })
            .collect()
    };
    let prefix = quoted_after("strip_prefix(");
    assert_eq!(prefix.len(), 1, "one strip_prefix in fn route: {prefix:?}");
    let prefix = prefix[0].trim_end_matches('/');
    let mut paths: BTreeSet<String> = quoted_after("path == ").into_iter().collect();
    for (i, _) in body.match_indices("[\"") {
        let rest = &body[i + 1..];
        let close = rest.find(']').expect("slice pattern is closed");
        let segments: Vec<String> = rest[..close]
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .map_or_else(|| "{id}".to_owned(), str::to_owned)
            })
            .collect();
        paths.insert(format!("{prefix}/{}", segments.join("/")));
    }
    paths
}

#[test]
fn route_list_matches_the_router_source() {
    let source = std::fs::read_to_string(ROUTER_SOURCE).unwrap();
    let in_source = router_paths(&source);
    let listed: BTreeSet<String> = REFERENCE_ROUTES
        .iter()
        .map(|(_, p)| (*p).to_owned())
        .collect();
    assert_eq!(
        in_source, listed,
        "the paths of src/api.rs differ from REFERENCE_ROUTES in tests/it/openapi.rs; \
         update the list and docs/control-plane.openapi.yaml"
    );
}

#[test]
fn router_paths_reads_slice_patterns() {
    let source = r#"
        fn route(path: &str) -> Option<Self> {
            if path == "/health" { return Some(Self::Health); }
            let rest = path.strip_prefix("/api/x/")?;
            Some(match segs.as_slice() {
                ["a"] => Self::A,
                ["a", id, "b"] if !id.is_empty() => Self::B(id),
                _ => return None,
            })
        }
        fn allowed(&self) {}
    "#;
    let paths: Vec<String> = router_paths(source).into_iter().collect();
    assert_eq!(paths, ["/api/x/a", "/api/x/a/{id}/b", "/health"]);
}
