//! Check results and their renderings: the console summary,
//! `conformance.json` and JUnit `junit.xml`. No network here.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The backend behaved as the contract requires.
    Pass,
    /// It did not.
    Fail,
    /// Not applicable (feature not advertised, or input missing).
    Skip,
}

impl Outcome {
    /// `PASS`, `FAIL` or `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Stable snake_case name.
    pub name: String,
    /// Verdict.
    pub outcome: Outcome,
    /// What was seen (why it failed or was skipped).
    pub message: String,
    /// Wall time of the check.
    pub duration_ms: u64,
}

/// The results of one run against one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The backend's base URL.
    pub base_url: String,
    /// `secret` (tokens minted by the runner) or `token` (a given token).
    pub auth_mode: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Total wall time.
    pub duration_ms: u64,
    /// Results in the order the checks ran.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// How many checks ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// True when no check failed.
    pub fn is_success(&self) -> bool {
        self.count(Outcome::Fail) == 0
    }

    /// The result of the check called `name`.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// One line per check and a totals line.
    pub fn console_summary(&self) -> String {
        let mut out = format!(
            "conformance of {} (auth: {})\n",
            self.base_url, self.auth_mode
        );
        for c in &self.checks {
            let _ = writeln!(out, "{}  {:<26} {}", c.outcome.label(), c.name, c.message);
        }
        let _ = write!(
            out,
            "{} passed, {} failed, {} skipped ({} ms)",
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip),
            self.duration_ms
        );
        out
    }

    /// The `conformance.json` document.
    pub fn to_json(&self) -> Value {
        json!({
            "contract_version": wombat_core::controlplane::CONTRACT_VERSION,
            "base_url": self.base_url,
            "auth_mode": self.auth_mode,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "success": self.is_success(),
            "summary": {
                "total": self.checks.len(),
                "passed": self.count(Outcome::Pass),
                "failed": self.count(Outcome::Fail),
                "skipped": self.count(Outcome::Skip),
            },
            "checks": self.checks,
        })
    }

    /// The JUnit XML document (one test suite, one test case per check).
    pub fn to_junit(&self) -> String {
        let secs = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let (n, f, s) = (
            self.checks.len(),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip),
        );
        let _ = writeln!(
            x,
            "<testsuites name=\"wombat-conformance\" tests=\"{n}\" failures=\"{f}\" skipped=\"{s}\" errors=\"0\" time=\"{}\">",
            secs(self.duration_ms)
        );
        let _ = writeln!(
            x,
            "  <testsuite name=\"control-plane-v1\" tests=\"{n}\" failures=\"{f}\" skipped=\"{s}\" errors=\"0\" time=\"{}\" timestamp=\"{}\">",
            secs(self.duration_ms),
            escape(&self.started_at)
        );
        let _ = writeln!(
            x,
            "    <properties><property name=\"base_url\" value=\"{}\"/><property name=\"auth_mode\" value=\"{}\"/></properties>",
            escape(&self.base_url),
            escape(&self.auth_mode)
        );
        for c in &self.checks {
            let _ = write!(
                x,
                "    <testcase classname=\"conformance\" name=\"{}\" time=\"{}\"",
                escape(&c.name),
                secs(c.duration_ms)
            );
            match c.outcome {
                Outcome::Pass => {
                    let _ = writeln!(
                        x,
                        "><system-out>{}</system-out></testcase>",
                        escape(&c.message)
                    );
                }
                Outcome::Fail => {
                    let _ = writeln!(
                        x,
                        "><failure message=\"{0}\" type=\"conformance\">{0}</failure></testcase>",
                        escape(&c.message)
                    );
                }
                Outcome::Skip => {
                    let _ = writeln!(
                        x,
                        "><skipped message=\"{}\"/></testcase>",
                        escape(&c.message)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }

    /// Writes `conformance.json` and `junit.xml` into `dir` (created if
    /// missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let fail = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
        let json_path = dir.join("conformance.json");
        let pretty = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        std::fs::write(&json_path, pretty + "\n").map_err(fail(&json_path))?;
        let xml_path = dir.join("junit.xml");
        std::fs::write(&xml_path, self.to_junit()).map_err(fail(&xml_path))?;
        Ok(())
    }
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0
/// cannot carry.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            base_url: "http://x".into(),
            auth_mode: "secret".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 1500,
            checks: vec![
                CheckResult {
                    name: "a".into(),
                    outcome: Outcome::Pass,
                    message: "ok".into(),
                    duration_ms: 3,
                },
                CheckResult {
                    name: "b".into(),
                    outcome: Outcome::Fail,
                    message: "expected 401, got <200> & \"x\"\u{1}".into(),
                    duration_ms: 4,
                },
                CheckResult {
                    name: "c".into(),
                    outcome: Outcome::Skip,
                    message: "not advertised".into(),
                    duration_ms: 0,
                },
            ],
        }
    }

    #[test]
    fn junit_counts_and_escapes() {
        let xml = report().to_junit();
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("expected 401, got &lt;200&gt; &amp; &quot;x&quot;</failure>"),
            "{xml}"
        );
        assert!(
            xml.contains("<skipped message=\"not advertised\"/>"),
            "{xml}"
        );
        assert!(!xml.contains('\u{1}'));
    }

    #[test]
    fn json_and_console() {
        let r = report();
        assert!(!r.is_success());
        let j = r.to_json();
        assert_eq!(
            j["summary"],
            json!({"total": 3, "passed": 1, "failed": 1, "skipped": 1})
        );
        assert_eq!(j["checks"][1]["outcome"], "fail");
        let text = r.console_summary();
        assert!(text.contains("FAIL  b "), "{text}");
        assert!(
            text.ends_with("1 passed, 1 failed, 1 skipped (1500 ms)"),
            "{text}"
        );
    }
}
