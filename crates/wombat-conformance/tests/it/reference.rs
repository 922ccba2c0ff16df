//! The runner against the reference backend.

use wombat_conformance::{AuthInput, ConformanceConfig, Outcome};
use wombat_controlplane::jwt;

use crate::support::*;

const ALL_CHECKS: [&str; 28] = [
    "capabilities",
    "create_task",
    "create_task_idempotent",
    "list_contains_task",
    "post_message",
    "post_document",
    "auth_missing_token",
    "auth_malformed_token",
    "auth_wrong_signature",
    "auth_expired_token",
    "tenant_isolation_read",
    "tenant_isolation_write",
    "idempotency_conflict",
    "missing_fields_400",
    "malformed_json_400",
    "pagination",
    "heartbeat",
    "standup",
    "notifications_dispatch",
    "events_sse",
    "tool_requests",
    "tool_requests_idempotent",
    "tool_requests_isolation",
    "tool_requests_list",
    "tool_requests_resolve",
    "tool_requests_consume",
    "task_title_filter",
    "error_bodies",
];

#[tokio::test]
async fn every_check_passes_and_reports_are_written() {
    let server = reference().await;
    let report = wombat_conformance::run(&secret_config(&server.url()))
        .await
        .unwrap();
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ALL_CHECKS);
    assert!(report.is_success(), "{}", report.console_summary());
    for name in ALL_CHECKS {
        let expected = if name == "events_sse" {
            Outcome::Skip
        } else {
            Outcome::Pass
        };
        assert_eq!(
            outcome(&report, name),
            expected,
            "{name}: {}",
            message(&report, name)
        );
    }
    assert_eq!(message(&report, "events_sse"), "not advertised");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    report.write(&out).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("conformance.json")).unwrap())
            .unwrap();
    assert_eq!(json["success"], true);
    assert_eq!(json["summary"]["failed"], 0);
    assert_eq!(json["summary"]["passed"], 27);
    assert_eq!(json["checks"].as_array().unwrap().len(), 28);
    assert_eq!(json["auth_mode"], "secret");
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert_eq!(xml.matches("<testcase ").count(), 28);
    assert!(
        xml.contains("tests=\"28\" failures=\"0\" skipped=\"1\""),
        "{xml}"
    );
    assert!(!xml.contains(SECRET) && !json.to_string().contains(SECRET));
}

#[tokio::test]
async fn a_ready_token_skips_the_multi_tenant_checks() {
    let server = reference().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jwt::mint(&jwt(), "token-user", "agent", None, now).unwrap();
    let mut cfg = ConformanceConfig::new(server.url(), AuthInput::Token(token));
    cfg.internal_token = Some(INTERNAL.into());
    let report = wombat_conformance::run(&cfg).await.unwrap();
    assert!(report.is_success(), "{}", report.console_summary());
    for name in [
        "auth_expired_token",
        "tenant_isolation_read",
        "tenant_isolation_write",
        "tool_requests_isolation",
    ] {
        assert_eq!(outcome(&report, name), Outcome::Skip, "{name}");
        assert!(message(&report, name).contains("AGENT_TOKEN"), "{name}");
    }
    // The user id is read from the token, so heartbeat is still probed.
    assert_eq!(outcome(&report, "heartbeat"), Outcome::Pass);
    assert_eq!(outcome(&report, "auth_wrong_signature"), Outcome::Pass);
    // One tenant is enough for the rest of the tool-request checks.
    for name in [
        "tool_requests",
        "tool_requests_idempotent",
        "tool_requests_list",
        "tool_requests_resolve",
        "tool_requests_consume",
    ] {
        assert_eq!(
            outcome(&report, name),
            Outcome::Pass,
            "{name}: {}",
            message(&report, name)
        );
    }
}

#[tokio::test]
async fn an_unreachable_backend_fails_without_hanging() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let report = wombat_conformance::run(&secret_config(&url)).await.unwrap();
    assert!(!report.is_success());
    assert_eq!(outcome(&report, "capabilities"), Outcome::Fail);
    assert!(
        message(&report, "capabilities").contains("request failed"),
        "{}",
        message(&report, "capabilities")
    );
    assert_eq!(outcome(&report, "create_task_idempotent"), Outcome::Skip);
    assert_eq!(
        message(&report, "heartbeat"),
        "capabilities unavailable, so not probed"
    );
}

#[tokio::test]
async fn a_non_http_url_is_a_config_error() {
    let cfg = secret_config("localhost:9001");
    assert!(matches!(
        wombat_conformance::run(&cfg).await,
        Err(wombat_conformance::Error::Config(_))
    ));
}
