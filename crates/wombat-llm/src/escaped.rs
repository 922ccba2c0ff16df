//! System prompts kept escaped as JSON string literals, so that a request
//! body does not escape the same few kilobytes again on every call.
//!
//! A daemon sends every request of a role the same system prompt: the
//! workspace files, which change when the workspace does, and a time block
//! that changes once a minute. Escaping it into the chat body was the largest
//! single cost of building a request (about a tenth of the daemon's
//! instructions per send, by callgrind). [`EscapeCache`] remembers the
//! escaped form of the last few long system prompts, found again by exact
//! comparison of the text: a hit costs a length check, a `memcmp` and an
//! `Arc` clone; a miss escapes as before and keeps the result.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// Strings shorter than this are escaped in place: a lookup would cost
/// about as much as it saves.
const MIN_CACHED_BYTES: usize = 512;

/// Longer strings are not kept (a request's own system prompt can be large;
/// the workspace's is bounded by its budget, well below this).
const MAX_CACHED_BYTES: usize = 256 * 1024;

/// Entries kept: a few roles and time zones in a minute, with room to
/// spare; a miss replaces the oldest entry.
const SLOTS: usize = 16;

/// One string and its JSON literal (quotes included).
#[derive(Debug)]
pub(crate) struct Escaped {
    text: Box<str>,
    json: Box<RawValue>,
}

/// A bounded cache of escaped system prompts, shared by the clones of an
/// adapter. At most [`SLOTS`] entries of at most [`MAX_CACHED_BYTES`] of
/// text each (and their escaped form) are held.
#[derive(Debug, Default)]
pub(crate) struct EscapeCache {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Arc<Escaped>>,
    /// The entry a miss replaces once all slots are used.
    next: usize,
}

impl EscapeCache {
    /// The escaped form of `text`, from the cache or made (and kept) now;
    /// `None` for a string too short or too long to be worth keeping, which
    /// the caller serializes as usual.
    pub(crate) fn get(&self, text: &str) -> Option<Arc<Escaped>> {
        if !(MIN_CACHED_BYTES..=MAX_CACHED_BYTES).contains(&text.len()) {
            return None;
        }
        {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = slots
                .entries
                .iter()
                .find(|e| e.text.len() == text.len() && *e.text == *text)
            {
                return Some(Arc::clone(hit));
            }
        }
        // Escaped outside the lock; two concurrent misses of the same text
        // both escape it and the second entry is a harmless duplicate.
        let json = serde_json::value::to_raw_value(text).ok()?;
        let made = Arc::new(Escaped {
            text: text.into(),
            json,
        });
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.entries.len() < SLOTS {
            slots.entries.push(Arc::clone(&made));
        } else {
            let at = slots.next;
            slots.entries[at] = Arc::clone(&made);
            slots.next = (at + 1) % SLOTS;
        }
        Some(made)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

/// A string field of a request body: borrowed text, escaped when the body
/// is written, or an [`Escaped`] literal written as it is.
#[derive(Debug, Clone)]
pub(crate) enum Text<'a> {
    /// Escaped while serializing.
    Plain(std::borrow::Cow<'a, str>),
    /// Already a JSON string literal.
    Escaped(&'a Escaped),
}

impl<'a> Text<'a> {
    /// `text`, through `escaped` when that is its cached form.
    pub(crate) fn of(text: &'a str, escaped: Option<&'a Escaped>) -> Self {
        match escaped {
            Some(e) if *e.text == *text => Self::Escaped(e),
            _ => Self::Plain(std::borrow::Cow::Borrowed(text)),
        }
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Plain(text) => serializer.serialize_str(text),
            Self::Escaped(e) => e.json.serialize(serializer),
        }
    }
}

/// An owned string field that may carry its cached escaped form (set by
/// the adapter after the body is built).
#[derive(Debug)]
pub(crate) struct OwnedText {
    pub(crate) text: String,
    pub(crate) escaped: Option<Arc<Escaped>>,
}

impl OwnedText {
    /// `text`, to be escaped when written unless a cached form is set.
    pub(crate) fn new(text: String) -> Self {
        Self {
            text,
            escaped: None,
        }
    }
}

impl Serialize for OwnedText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Text::of(&self.text, self.escaped.as_deref()).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(tag: &str) -> String {
        format!("{tag}: \"quoted\", a\ttab, a \\ and\nnewlines, \u{1} and ünïcödé ✓ ").repeat(20)
    }

    #[test]
    fn escaped_text_serializes_exactly_as_plain_text() {
        let cache = EscapeCache::default();
        for text in [long("a"), long("b"), "x".repeat(MIN_CACHED_BYTES)] {
            let e = cache.get(&text).expect("cached");
            let via_cache = serde_json::to_string(&Text::of(&text, Some(&e))).expect("json");
            let plain = serde_json::to_string(&text).expect("json");
            assert_eq!(via_cache, plain);
            let back: String = serde_json::from_str(&via_cache).expect("valid JSON");
            assert_eq!(back, text);
        }
    }

    #[test]
    fn the_same_text_is_found_again_and_others_are_not_confused() {
        let cache = EscapeCache::default();
        let a = long("a");
        let first = cache.get(&a).expect("cached");
        let again = cache.get(&a.clone()).expect("cached");
        assert!(Arc::ptr_eq(&first, &again));
        // Same length, different text: a different entry.
        let b = long("b");
        assert_eq!(a.len(), b.len());
        let other = cache.get(&b).expect("cached");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(
            serde_json::to_string(&Text::of(&b, Some(&other))).expect("json"),
            serde_json::to_string(&b).expect("json")
        );
        // An entry for other text is never written in place of this one.
        assert!(matches!(Text::of(&b, Some(&first)), Text::Plain(_)));
    }

    #[test]
    fn short_and_huge_strings_are_not_kept_and_the_cache_is_bounded() {
        let cache = EscapeCache::default();
        assert!(cache.get("short").is_none());
        assert!(cache.get(&"y".repeat(MAX_CACHED_BYTES + 1)).is_none());
        for i in 0..SLOTS * 3 {
            cache
                .get(&format!("{i:04} {}", "z".repeat(MIN_CACHED_BYTES)))
                .expect("cached");
        }
        assert_eq!(cache.len(), SLOTS);
        // The newest entries are the ones kept.
        let newest = format!("{:04} {}", SLOTS * 3 - 1, "z".repeat(MIN_CACHED_BYTES));
        let kept = cache.get(&newest).expect("cached");
        assert!(Arc::ptr_eq(&kept, &cache.get(&newest).expect("cached")));
        assert_eq!(cache.len(), SLOTS);
        assert_eq!(*kept.text, *newest);
    }
}
