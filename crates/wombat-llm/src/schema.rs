//! JSON-Schema helpers for structured output: schema names safe for tool
//! names, the Gemini `responseSchema` dialect, and a minimal instance of a
//! schema for the echo provider.
//!
//! This is not a validator; validating model output is the caller's job.

use serde_json::{Map, Value};

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

/// The smallest value that satisfies the common shape of `schema`: objects
/// get their `required` properties (all properties when none are listed),
/// strings get `text`, numbers 0, booleans false, arrays are empty, and
/// `enum`/`const` give their first value. Without a recognisable type it is
/// `{"echo": text}`. `$ref` and combinators other than `anyOf`/`oneOf` (first
/// option) are not followed.
pub(crate) fn sample_instance(schema: &Value, text: &str) -> Value {
    sample(schema, text, 0).unwrap_or_else(|| serde_json::json!({ "echo": text }))
}

fn sample(schema: &Value, text: &str, depth: usize) -> Option<Value> {
    if depth > 32 {
        return None;
    }
    let obj = schema.as_object()?;
    if let Some(c) = obj.get("const") {
        return Some(c.clone());
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return Some(first.clone());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|o| o.first())
        {
            return sample(first, text, depth + 1);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null")?,
        _ if obj.contains_key("properties") => "object",
        _ => return None,
    };
    Some(match ty {
        "object" => {
            let props = obj.get("properties").and_then(Value::as_object);
            let required: Vec<&str> = match obj.get("required").and_then(Value::as_array) {
                Some(r) => r.iter().filter_map(Value::as_str).collect(),
                None => props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default(),
            };
            let mut out = Map::new();
            for name in required {
                let sub = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                let value =
                    sample(sub, text, depth + 1).unwrap_or_else(|| Value::String(text.to_owned()));
                out.insert(name.to_owned(), value);
            }
            if out.is_empty() && props.is_none() {
                out.insert("echo".to_owned(), Value::String(text.to_owned()));
            }
            Value::Object(out)
        }
        "string" => Value::String(text.to_owned()),
        "integer" | "number" => {
            // An integer satisfies both types; the cast saturates.
            let min = obj.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            Value::from(min.ceil().clamp(0.0, 1e15) as i64)
        }
        "boolean" => Value::Bool(false),
        "array" => {
            let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = obj
                .get("items")
                .and_then(|i| sample(i, text, depth + 1))
                .unwrap_or_else(|| Value::String(text.to_owned()));
            Value::Array((0..min.min(16)).map(|_| item.clone()).collect())
        }
        "null" => Value::Null,
        _ => return None,
    })
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

    #[test]
    fn tool_names_are_sanitised() {
        assert_eq!(tool_name("my schema/v1"), "my_schema_v1");
        assert_eq!(tool_name(""), "response");
        assert_eq!(tool_name(&"x".repeat(80)).len(), 64);
    }
}
