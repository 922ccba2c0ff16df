//! `wombat-conformance`: runs the Control Plane Contract v1 checks against
//! `CONTROL_PLANE_URL`, prints one line per check, writes
//! `conformance.json` and `junit.xml`, and exits 1 if any check failed
//! (64 on bad configuration). The logic lives in this package's library
//! (`wombat_conformance_bin`), shared with `wombat conformance`.

use std::process::ExitCode;

fn main() -> ExitCode {
    wombat_conformance_bin::main_entry()
}
