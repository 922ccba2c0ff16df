//! Integration tests of the conformance runner: all checks pass against the
//! reference backend, and the relevant ones fail against deliberately
//! broken fakes.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod broken;
mod reference;
mod support;
