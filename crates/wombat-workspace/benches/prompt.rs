//! Prompt assembly cost: a full system prompt from `workspace-examples/default`
//! (soul, identity, rules, one skill, time block) and a minimal one.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wombat_workspace::{PromptMode, PromptRequest, SkillEnv, Workspace, WorkspaceOptions};

fn prompt(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workspace-examples/default");
    let options = WorkspaceOptions {
        default_timezone: Some("UTC".to_owned()),
        skill_env: SkillEnv::new("linux"),
        refresh_interval: Duration::ZERO,
        ..WorkspaceOptions::default()
    };
    let ws = Workspace::open(&path, options).expect("open the example workspace");
    let now: jiff::Timestamp = "2026-02-02T03:15:00Z".parse().expect("timestamp");

    c.bench_function("system_prompt/full/default-zone", |b| {
        b.iter(|| ws.system_prompt(black_box(&PromptRequest::new("assistant", now))))
    });
    c.bench_function("system_prompt/full/request-zone", |b| {
        let request = PromptRequest::new("assistant", now).timezone("America/Los_Angeles");
        b.iter(|| ws.system_prompt(black_box(&request)))
    });
    c.bench_function("system_prompt/minimal", |b| {
        let request = PromptRequest::new("assistant", now).mode(PromptMode::Minimal);
        b.iter(|| ws.system_prompt(black_box(&request)))
    });
}

criterion_group!(benches, prompt);
criterion_main!(benches);
