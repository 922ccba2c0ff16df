//! Shared helpers: starting the reference backend and a runner config.

use wombat_conformance::{AuthInput, ConformanceConfig, Outcome, Report};
use wombat_controlplane::{JwtAlgorithm, JwtConfig};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};

pub const SECRET: &str = "conformance-test-secret";
pub const INTERNAL: &str = "conformance-internal";

pub fn jwt() -> JwtConfig {
    JwtConfig::new(SECRET, JwtAlgorithm::HS384).unwrap()
}

pub async fn reference() -> RunningMcLite {
    let mut cfg = McLiteConfig::new(jwt(), DbLocation::Memory);
    cfg.internal_token = Some(INTERNAL.into());
    McLite::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn secret_config(url: &str) -> ConformanceConfig {
    let mut cfg = ConformanceConfig::new(url, AuthInput::Secret(jwt()));
    cfg.internal_token = Some(INTERNAL.into());
    cfg
}

pub fn outcome(report: &Report, name: &str) -> Outcome {
    report
        .check(name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .outcome
}

pub fn message<'a>(report: &'a Report, name: &str) -> &'a str {
    &report.check(name).unwrap().message
}
