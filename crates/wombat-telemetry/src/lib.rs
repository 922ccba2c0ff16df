//! OpenTelemetry glue shared by the crates that make outgoing calls or
//! serve requests: whether traces are on, the extra spans that exist only
//! then, and W3C `traceparent` in and out. It sits at the bottom of the
//! layering beside `wombat-core`, which stays pure data and logic.
//!
//! The binary installs the exporter and flips [`enable`] once at start-up.
//! Until then (and for good when no OTLP endpoint is configured) every
//! function here is one relaxed atomic load: no span is created, no header
//! is parsed or written, nothing is allocated on the request path.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);
static CAPTURE_CONTENT: AtomicBool = AtomicBool::new(false);

/// Marks traces as exported. Call once, after the OpenTelemetry layer and
/// the W3C propagator are installed; `capture_content` allows prompt and
/// reply text on spans (`WOMBAT_OTEL_CAPTURE_CONTENT`).
pub fn enable(capture_content: bool) {
    CAPTURE_CONTENT.store(capture_content, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether traces are exported (an OTLP endpoint is configured).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether prompt and reply text may be recorded on spans. Off unless
/// explicitly enabled: they can hold personal data.
#[inline]
pub fn capture_content() -> bool {
    enabled() && CAPTURE_CONTENT.load(Ordering::Relaxed)
}

/// An `info` span that exists only when traces are exported; otherwise
/// [`tracing::Span::none`], which costs nothing to enter or record into.
/// Same syntax as [`tracing::info_span!`].
#[macro_export]
macro_rules! otel_span {
    ($($arg:tt)*) => {
        if $crate::enabled() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Makes `span` (just created, not yet entered) a child of the caller's
/// trace named by `traceparent`/`tracestate` in `headers`. Does nothing
/// when traces are off or the headers carry no valid context (the span then
/// starts a trace of its own).
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderReader(headers)));
    // Fails only when the span is disabled (filtered out) or already
    // started; either way it keeps a trace of its own.
    let _ = span.set_parent(cx);
}

/// The `traceparent`/`tracestate` headers naming the current span, for an
/// outgoing request; `None` when traces are off (the common case: the
/// caller adds nothing).
pub fn outgoing_headers() -> Option<http::HeaderMap> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut headers = http::HeaderMap::new();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderWriter(&mut headers));
    });
    (!headers.is_empty()).then_some(headers)
}

/// Sets an attribute `span` cannot declare as a `tracing` field (a float,
/// or more than the 32 fields a span may name). No-op when traces are off.
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

/// Sets a string-array attribute (`gen_ai.response.finish_reasons`), which
/// `tracing` fields cannot express. No-op when traces are off.
pub fn set_string_array(span: &tracing::Span, key: &'static str, values: &[&str]) {
    if enabled() {
        let values = values
            .iter()
            .map(|v| opentelemetry::StringValue::from((*v).to_owned()))
            .collect();
        span.set_attribute(
            key,
            opentelemetry::Value::Array(opentelemetry::Array::String(values)),
        );
    }
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderWriter<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes only `traceparent`/`tracestate` with values
        // it formatted itself; anything unencodable is skipped.
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_adds_nothing() {
        // No test in this crate calls `enable`.
        assert!(!enabled());
        assert!(!capture_content());
        assert!(outgoing_headers().is_none());
        let span = otel_span!("x");
        assert!(span.is_none());
    }
}
