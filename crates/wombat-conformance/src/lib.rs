//! Conformance runner of the Control Plane Contract v1: probes a running
//! backend over raw HTTP (so it can send missing, malformed, forged and
//! expired tokens) and judges every MUST of `CONTROL_PLANE.md` — the six
//! original checks (capabilities v1, create with a key, idempotent repeat,
//! list contains it, post message, post document), 401 for bad tokens,
//! tenant isolation, 409 on a reused key, 400 on bad payloads, error bodies,
//! pagination, and optional features only when advertised.
//!
//! It does not start a backend (see `cargo xtask conformance --local`) and
//! does not read the environment; the `wombat-conformance` binary does.

mod checks;
mod error;
mod report;

pub use checks::{AuthInput, ConformanceConfig, run};
pub use error::{Error, Result};
pub use report::{CheckResult, Outcome, Report};
