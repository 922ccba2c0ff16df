//! Writing JSON objects with fixed keys straight into a byte buffer, and
//! reading JSON bytes with one UTF-8 check instead of one per string.
//!
//! serde_json escapes every object key it writes, byte by byte, and goes
//! through the `Serialize` machinery for every field; for a small struct of
//! numbers (a [`Cost`](crate::Cost), a [`Usage`](crate::Usage)) that is most
//! of its cost. [`ObjectWriter`] writes keys known at compile time as they
//! are and only escapes values, through serde_json itself, so the output is
//! byte for byte what `serde_json::to_writer` writes for the same fields in
//! the same order (numbers and strings formatted by the same code).
//!
//! ```
//! use wombat_core::json::ObjectWriter;
//!
//! let mut out = Vec::new();
//! let mut obj = ObjectWriter::new(&mut out);
//! obj.str("name", "Ada \"the\" first");
//! obj.u64("tokens", 42);
//! obj.f64("cost", 0.000125);
//! obj.end();
//! assert_eq!(out, br#"{"name":"Ada \"the\" first","tokens":42,"cost":0.000125}"#);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `serde_json::from_slice`, faster on valid UTF-8 and the same otherwise.
///
/// `from_slice` checks the UTF-8 of every string it reads, a call per
/// string whose overhead dominates for the short strings of an API body;
/// one check of the whole body and `from_str` (which trusts it) does the
/// same work once. Invalid UTF-8 falls back to `from_slice`, so the error
/// (and its line and column) is the one `from_slice` gives.
///
/// # Errors
/// As `serde_json::from_slice`.
///
/// ```
/// let n: Vec<u32> = wombat_core::json::from_slice(b"[1, 2]").unwrap();
/// assert_eq!(n, [1, 2]);
/// let e = wombat_core::json::from_slice::<String>(b"\"\xff\"").unwrap_err();
/// assert!(e.to_string().contains("invalid unicode"), "{e}");
/// ```
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// JSON text known to be valid: written by serde_json or an
/// [`ObjectWriter`], or checked once when made from other text.
///
/// The owned counterpart of a `Box<RawValue>` for text this process has
/// just written: a `RawValue` can only be made from text by parsing it
/// again, which for a small object costs more than writing it did.
///
/// ```
/// use wombat_core::json::JsonText;
///
/// let text = JsonText::object(|obj| {
///     obj.str("model", "gpt-4o-mini").u64("tokens", 3);
/// });
/// assert_eq!(text.get(), r#"{"model":"gpt-4o-mini","tokens":3}"#);
/// assert!(JsonText::parse("{\"a\":".into()).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// `value` as serde_json writes it.
    ///
    /// # Errors
    /// When `value`'s `Serialize` fails (a map with non-string keys, say).
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::to_string(value).map(|s| Self(s.into_boxed_str()))
    }

    /// One object, written field by field with `write`. The fields
    /// [`ObjectWriter::with`] writes are the caller's to keep valid.
    pub fn object(write: impl FnOnce(&mut ObjectWriter<'_>)) -> Self {
        let mut out = Vec::with_capacity(256);
        let mut obj = ObjectWriter::new(&mut out);
        write(&mut obj);
        obj.end();
        // The writer's keys are `&str` and its values serde_json's output:
        // this does not fail unless a `with` closure wrote other bytes, and
        // then the lossy text is still what it wrote, not a panic.
        Self(match String::from_utf8(out) {
            Ok(text) => text.into_boxed_str(),
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into(),
        })
    }

    /// `text`, checked to be one JSON value.
    ///
    /// # Errors
    /// When `text` is not valid JSON.
    pub fn parse(text: String) -> serde_json::Result<Self> {
        serde_json::value::RawValue::from_string(text).map(Self::from)
    }

    /// The text.
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl From<Box<serde_json::value::RawValue>> for JsonText {
    fn from(raw: Box<serde_json::value::RawValue>) -> Self {
        Self(raw.into())
    }
}

/// Written as the JSON it holds (by serde_json; other formats see a
/// `RawValue`). The hot path writes it with [`ObjectWriter::json`] instead:
/// this checks the text again.
impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(deserializer).map(Self::from)
    }
}

/// Writes one JSON object, field by field, into a byte buffer. Finish it
/// with [`end`](Self::end).
///
/// Keys are written without escaping: they must be plain ASCII with no `"`,
/// `\` or control characters, which the `&'static str` field names of a
/// wire type are.
#[derive(Debug)]
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Starts an object (`{`) at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    #[inline]
    fn key(&mut self, key: &'static str) {
        debug_assert!(
            key.bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
            "a key that needs escaping: {key:?}"
        );
        // One reservation for the separator, the quoted key and the colon.
        self.out.reserve(key.len() + 4);
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string field, escaped as serde_json escapes it.
    #[inline]
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        self.value_only(value);
        self
    }

    /// A string field when `value` is `Some`; nothing when it is `None`
    /// (serde's `skip_serializing_if = "Option::is_none"`).
    #[inline]
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    /// An unsigned integer field.
    #[inline]
    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.key(key);
        self.value_only(&value);
        self
    }

    /// A number field; a non-finite number is `null`, as serde_json writes it.
    #[inline]
    pub fn f64(&mut self, key: &'static str, value: f64) -> &mut Self {
        self.key(key);
        self.value_only(&value);
        self
    }

    /// A boolean field.
    #[inline]
    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// Any serialisable field, through serde_json.
    ///
    /// A value whose `Serialize` fails (a map with non-string keys, a
    /// custom error) is written as `null`; the types Wombat writes cannot
    /// fail.
    pub fn value<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> &mut Self {
        self.key(key);
        self.value_only(value);
        self
    }

    /// [`value`](Self::value) when `value` is `Some`; nothing when it is
    /// `None`.
    pub fn opt_value<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: Option<&T>,
    ) -> &mut Self {
        if let Some(value) = value {
            self.value(key, value);
        }
        self
    }

    /// A field whose value is JSON text already checked (a
    /// [`RawValue`](serde_json::value::RawValue)), written as it is.
    #[inline]
    pub fn raw(&mut self, key: &'static str, value: &serde_json::value::RawValue) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(value.get().as_bytes());
        self
    }

    /// A field whose value is [`JsonText`], written as it is.
    #[inline]
    pub fn json(&mut self, key: &'static str, value: &JsonText) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(value.get().as_bytes());
        self
    }

    /// A field whose value is written by `write` (a nested object, with
    /// [`ObjectWriter::new`] on the buffer it is given).
    pub fn with(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        write(self.out);
        self
    }

    #[inline]
    fn value_only<T: Serialize + ?Sized>(&mut self, value: &T) {
        let start = self.out.len();
        if serde_json::to_writer(&mut *self.out, value).is_err() {
            // Whatever part of the value was written goes: the object
            // stays valid JSON.
            self.out.truncate(start);
            self.out.extend_from_slice(b"null");
        }
    }

    /// Closes the object (`}`).
    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Through serde both ways it is the JSON it holds, not a string.
    #[test]
    fn json_text_is_raw_json_to_serde() {
        let text = JsonText::to_json(&json!({"a": [1, "x"]})).expect("serialises");
        let written = serde_json::to_string(&vec![text.clone()]).expect("serialises");
        assert_eq!(written, r#"[{"a":[1,"x"]}]"#);
        let read: Vec<JsonText> = serde_json::from_str(r#"[ {"a": [1, "x"]} ]"#).expect("reads");
        assert_eq!(read[0].get(), r#"{"a": [1, "x"]}"#);
        assert!(JsonText::parse("not json".into()).is_err());
        let mut out = Vec::new();
        let mut obj = ObjectWriter::new(&mut out);
        obj.json("t", &text);
        obj.end();
        assert_eq!(out, br#"{"t":{"a":[1,"x"]}}"#);
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let mut out = Vec::new();
        let mut obj = ObjectWriter::new(&mut out);
        obj.str("s", "tab\t quote\" slash\\ nul\u{0} é 🦘")
            .u64("n", u64::MAX)
            .f64("f", 1e-7)
            .f64("g", 123.456)
            .f64("nan", f64::NAN)
            .bool("t", true)
            .bool("f2", false)
            .opt_str("absent", None)
            .opt_value::<u8>("absent2", None)
            .value("v", &json!({"b": [1, 2], "a": null}))
            .with("o", |out| {
                let mut inner = ObjectWriter::new(out);
                inner.u64("x", 0);
                inner.end();
            })
            .with("empty", |out| ObjectWriter::new(out).end())
            .raw(
                "raw",
                &serde_json::value::RawValue::from_string(r#"{"z": [1, "\u0041"]}"#.to_owned())
                    .expect("JSON"),
            );
        obj.end();
        let expected = serde_json::to_vec(&json!({
            "s": "tab\t quote\" slash\\ nul\u{0} é 🦘",
            "n": u64::MAX,
            "f": 1e-7,
            "g": 123.456,
            "nan": null,
            "t": true,
            "f2": false,
            "v": {"b": [1, 2], "a": null},
            "o": {"x": 0},
            "empty": {},
            "raw": {"z": [1, "A"]},
        }))
        .expect("serialises");
        // serde_json's `json!` map is sorted; compare as values, and the
        // raw text for the escapes and numbers.
        let got: serde_json::Value = serde_json::from_slice(&out).expect("the writer wrote JSON");
        assert_eq!(
            got,
            serde_json::from_slice::<serde_json::Value>(&expected).expect("serde wrote JSON")
        );
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            text.starts_with(
                r#"{"s":"tab\t quote\" slash\\ nul\u0000 é 🦘","n":18446744073709551615,"f":1e-7,"g":123.456,"nan":null,"t":true,"f2":false,"#
            ),
            "{text}"
        );
    }

    #[test]
    fn from_slice_reads_and_fails_as_serde_json_does() {
        let ok = b"{\"a\":\"\\u00e9t\\u00e9 \xc3\xa9\",\"b\":[1,-2,3.5]}";
        assert_eq!(
            from_slice::<serde_json::Value>(ok).expect("valid"),
            serde_json::from_slice::<serde_json::Value>(ok).expect("valid")
        );
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":1,}",
            b"",
            b"[1, 2",
            b"\"\xed\xa0\x80\"",
        ] {
            let ours = from_slice::<serde_json::Value>(bad).expect_err("invalid");
            let theirs = serde_json::from_slice::<serde_json::Value>(bad).expect_err("invalid");
            assert_eq!(ours.to_string(), theirs.to_string());
        }
    }

    #[test]
    fn an_empty_object() {
        let mut out = b"x".to_vec();
        ObjectWriter::new(&mut out).end();
        assert_eq!(out, b"x{}");
    }

    #[test]
    fn a_value_that_fails_to_serialise_is_null() {
        use std::collections::BTreeMap;
        let bad: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        let mut out = Vec::new();
        let mut obj = ObjectWriter::new(&mut out);
        obj.value("bad", &bad).u64("after", 1);
        obj.end();
        assert_eq!(out, br#"{"bad":null,"after":1}"#);
    }
}
