//! JSON-Schema helpers for structured output: schema names safe for tool
//! names, the Gemini `responseSchema` dialect, and a minimal instance of a
//! schema for the echo provider.
//!
//! This is not a validator; validating model output is the caller's job.

use serde_json::{Map, Value};

// The size limits moved to wombat-core (wombat-mcp checks MCP tool schemas
// with them too); re-exported here so `wombat_llm::check_schema_size` stays.
pub use wombat_core::schema::{
    MAX_SCHEMA_DEPTH, MAX_SCHEMA_VALUES, SchemaTooLarge, check_schema_size,
};

/// `name` reduced to `[A-Za-z0-9_-]{1,64}`, the charset OpenAI schema names
/// and Anthropic tool names accept; empty becomes `response`.
pub(crate) fn tool_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "response".to_owned()
    } else {
        cleaned
    }
}

/// Keywords of Gemini's OpenAPI-subset `responseSchema`. Everything else
/// (`$schema`, `$ref`, `$defs`, `additionalProperties`, `oneOf`, `allOf`,
/// `const`, `examples`, `exclusiveMinimum`, ...) is rejected by the API
/// with a 400 and is removed.
const GEMINI_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// Converts a JSON Schema to Gemini's `responseSchema` dialect: unsupported
/// keywords are dropped, `type: ["x", "null"]` becomes `type: "x"` plus
/// `nullable: true`, and a string `const` becomes a one-value `enum`.
/// Property *names* are kept whatever they are; only keywords are filtered.
pub(crate) fn gemini_schema(schema: &Value) -> Value {
    let Value::Object(obj) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = value {
                    let converted = props
                        .iter()
                        .map(|(name, s)| (name.clone(), gemini_schema(s)))
                        .collect();
                    out.insert(key.clone(), Value::Object(converted));
                }
            }
            "items" => {
                out.insert(key.clone(), gemini_schema(value));
            }
            "anyOf" => {
                if let Value::Array(options) = value {
                    out.insert(
                        key.clone(),
                        Value::Array(options.iter().map(gemini_schema).collect()),
                    );
                }
            }
            "type" => match value {
                Value::Array(types) => {
                    let non_null: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    if non_null.len() < types.len() {
                        out.insert("nullable".to_owned(), Value::Bool(true));
                    }
                    if let Some(first) = non_null.first() {
                        out.insert(key.clone(), (*first).clone());
                    }
                }
                other => {
                    out.insert(key.clone(), other.clone());
                }
            },
            "const" if value.is_string() && !obj.contains_key("enum") => {
                out.insert("enum".to_owned(), Value::Array(vec![value.clone()]));
            }
            k if GEMINI_KEYWORDS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// Deepest schema nesting [`sample_instance`] follows; deeper parts are
/// given the plain text instead.
const MAX_SAMPLE_DEPTH: usize = 32;

/// Most JSON values one sample may contain. Array items are copies of one
/// sampled item, so a schema of nested arrays with `minItems` multiplies:
/// nine levels of 16 items would be 16⁹ values. The budget is charged
/// before anything is copied, so the work stays proportional to it.
pub(crate) const MAX_SAMPLE_VALUES: usize = 10_000;

/// Most bytes of string content (mostly copies of the user's text) one
/// sample may contain: 1 MiB, far above any real structured answer.
pub(crate) const MAX_SAMPLE_BYTES: usize = 1024 * 1024;

/// What a sample may still spend.
struct Budget {
    values: usize,
    bytes: usize,
}

/// The budget ran out: the schema asks for a larger instance than allowed.
struct OverBudget;

impl Budget {
    fn charge(&mut self, values: usize, bytes: usize) -> Result<(), OverBudget> {
        self.values = self.values.checked_sub(values).ok_or(OverBudget)?;
        self.bytes = self.bytes.checked_sub(bytes).ok_or(OverBudget)?;
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<Value, OverBudget> {
        self.charge(1, text.len())?;
        Ok(Value::String(text.to_owned()))
    }
}

/// The size of `v` in budget units: (values, string bytes).
fn size(v: &Value) -> (usize, usize) {
    match v {
        Value::String(s) => (1, s.len()),
        Value::Array(items) => items.iter().map(size).fold((1, 0), |(a, b), (c, d)| {
            (a.saturating_add(c), b.saturating_add(d))
        }),
        Value::Object(map) => {
            map.iter()
                .map(|(k, v)| (k, size(v)))
                .fold((1, 0), |(a, b), (k, (c, d))| {
                    (
                        a.saturating_add(c),
                        b.saturating_add(d).saturating_add(k.len()),
                    )
                })
        }
        _ => (1, 0),
    }
}

/// The smallest value that satisfies the common shape of `schema`: objects
/// get their `required` properties (all properties when none are listed),
/// strings get `text`, numbers 0, booleans false, arrays `minItems` (at most
/// 16) copies of one sampled item, and `enum`/`const` give their first
/// value. Without a recognisable type it is `{"echo": text}`. `$ref` and
/// combinators other than `anyOf`/`oneOf` (first option) are not followed.
///
/// The work is bounded whatever the schema: nesting below
/// [`MAX_SAMPLE_DEPTH`] gets the plain text, and an instance that would hold
/// more than [`MAX_SAMPLE_VALUES`] values or [`MAX_SAMPLE_BYTES`] bytes of
/// strings is not built at all; the answer is then `{"echo": text}` (which
/// the caller's schema check will reject, as it should: no such instance
/// fits the budget).
pub(crate) fn sample_instance(schema: &Value, text: &str) -> Value {
    let mut budget = Budget {
        values: MAX_SAMPLE_VALUES,
        bytes: MAX_SAMPLE_BYTES,
    };
    match sample(schema, text, 0, &mut budget) {
        Ok(Some(v)) => v,
        Ok(None) | Err(OverBudget) => serde_json::json!({ "echo": text }),
    }
}

fn sample(
    schema: &Value,
    text: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<Option<Value>, OverBudget> {
    if depth > MAX_SAMPLE_DEPTH {
        return Ok(None);
    }
    let Some(obj) = schema.as_object() else {
        return Ok(None);
    };
    let copied = |v: &Value, budget: &mut Budget| {
        let (values, bytes) = size(v);
        budget.charge(values, bytes)?;
        Ok(Some(v.clone()))
    };
    if let Some(c) = obj.get("const") {
        return copied(c, budget);
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return copied(first, budget);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|o| o.first())
        {
            return sample(first, text, depth + 1, budget);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => {
            match ts.iter().filter_map(Value::as_str).find(|t| *t != "null") {
                Some(t) => t,
                None => return Ok(None),
            }
        }
        _ if obj.contains_key("properties") => "object",
        _ => return Ok(None),
    };
    Ok(Some(match ty {
        "object" => {
            budget.charge(1, 0)?;
            let props = obj.get("properties").and_then(Value::as_object);
            let required: Vec<&str> = match obj.get("required").and_then(Value::as_array) {
                Some(r) => r.iter().filter_map(Value::as_str).collect(),
                None => props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default(),
            };
            let mut out = Map::new();
            for name in required {
                budget.charge(0, name.len())?;
                let sub = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                let value = match sample(sub, text, depth + 1, budget)? {
                    Some(v) => v,
                    None => budget.text(text)?,
                };
                out.insert(name.to_owned(), value);
            }
            if out.is_empty() && props.is_none() {
                out.insert("echo".to_owned(), budget.text(text)?);
            }
            Value::Object(out)
        }
        "string" => budget.text(text)?,
        "integer" | "number" => {
            budget.charge(1, 0)?;
            // An integer satisfies both types; the cast saturates.
            let min = obj.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            Value::from(min.ceil().clamp(0.0, 1e15) as i64)
        }
        "boolean" => {
            budget.charge(1, 0)?;
            Value::Bool(false)
        }
        "array" => {
            budget.charge(1, 0)?;
            let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let count = usize::try_from(min.min(16)).unwrap_or(16);
            if count == 0 {
                return Ok(Some(Value::Array(Vec::new())));
            }
            // The first item is charged while it is sampled; each copy is
            // charged before it is made.
            let item = match obj.get("items") {
                Some(items) => match sample(items, text, depth + 1, budget)? {
                    Some(v) => v,
                    None => budget.text(text)?,
                },
                None => budget.text(text)?,
            };
            let (values, bytes) = size(&item);
            let copies = count - 1;
            budget.charge(values.saturating_mul(copies), bytes.saturating_mul(copies))?;
            Value::Array(vec![item; count])
        }
        "null" => {
            budget.charge(1, 0)?;
            Value::Null
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gemini_schema_strips_rejected_keywords_but_keeps_property_names() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "$schema": {"type": "string"},
                "name": {"type": ["string", "null"], "const": "x", "minLength": 1},
                "tags": {"type": "array", "items": {"type": "string", "examples": ["a"]}},
                "n": {"oneOf": [{"type": "integer"}], "exclusiveMinimum": 0}
            },
            "required": ["name"],
            "$defs": {"x": {}}
        });
        assert_eq!(
            gemini_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "$schema": {"type": "string"},
                    "name": {"type": "string", "nullable": true, "enum": ["x"], "minLength": 1},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "n": {}
                },
                "required": ["name"]
            })
        );
    }

    #[test]
    fn sample_instances() {
        let schema = json!({
            "type": "object",
            "properties": {
                "summary": {"type": "string"},
                "score": {"type": "number", "minimum": 1},
                "ok": {"type": "boolean"},
                "kind": {"enum": ["a", "b"]},
                "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                "optional": {"type": "string"}
            },
            "required": ["summary", "score", "ok", "kind", "items"]
        });
        assert_eq!(
            sample_instance(&schema, "hi"),
            json!({"summary": "hi", "score": 1, "ok": false, "kind": "a", "items": [0]})
        );
        assert_eq!(sample_instance(&json!({}), "hi"), json!({"echo": "hi"}));
        assert_eq!(
            sample_instance(&json!({"type": "string"}), "hi"),
            json!("hi")
        );
    }

    /// Nine levels of arrays with 16 items each would be 16⁹ values.
    fn nested_arrays(levels: usize) -> serde_json::Value {
        let mut schema = json!({"type": "string"});
        for _ in 0..levels {
            schema = json!({"type": "array", "minItems": 16, "items": schema});
        }
        schema
    }

    #[test]
    fn sample_work_is_bounded_for_exploding_schemas() {
        // Small enough: built exactly.
        let two = sample_instance(&nested_arrays(2), "x");
        assert_eq!(two.as_array().map(Vec::len), Some(16));
        assert_eq!(two[0].as_array().map(Vec::len), Some(16));
        // Far over the value budget: the fallback, at once.
        assert_eq!(
            sample_instance(&nested_arrays(9), "x"),
            json!({"echo": "x"})
        );
        assert_eq!(
            sample_instance(&nested_arrays(64), "x"),
            json!({"echo": "x"})
        );
        // Few values but a long text copied many times: the byte budget.
        let text = "y".repeat(100_000);
        assert_eq!(
            sample_instance(&nested_arrays(1), &text),
            json!({"echo": text})
        );
        let wide = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        assert_eq!(sample_instance(&wide, &text), json!({"a": text, "b": text}));
        // Deep nesting beyond the depth limit gets plain text, no recursion blow-up.
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"anyOf": [deep]});
        }
        assert_eq!(sample_instance(&deep, "z"), json!({"echo": "z"}));
    }

    #[test]
    fn schema_size_limits() {
        assert_eq!(check_schema_size(&nested_arrays(9)), Ok(()));
        let mut deep = json!("leaf");
        for _ in 0..MAX_SCHEMA_DEPTH {
            deep = json!({"a": deep});
        }
        assert_eq!(check_schema_size(&deep), Ok(()));
        assert_eq!(
            check_schema_size(&json!({"b": deep})),
            Err(SchemaTooLarge::TooDeep { limit: 32 })
        );
        let wide = Value::Array(vec![json!(1); MAX_SCHEMA_VALUES]);
        assert_eq!(
            check_schema_size(&wide),
            Err(SchemaTooLarge::TooManyValues { limit: 10_000 })
        );
        assert_eq!(
            check_schema_size(&json!({"a": [1, 2, {"b": null}]})),
            Ok(())
        );
    }

    #[test]
    fn tool_names_are_sanitised() {
        assert_eq!(tool_name("my schema/v1"), "my_schema_v1");
        assert_eq!(tool_name(""), "response");
        assert_eq!(tool_name(&"x".repeat(80)).len(), 64);
    }
}
