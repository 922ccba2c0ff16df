//! Size limits of JSON Schemas that come from outside (a structured-output
//! request, an MCP server's tool list): checked before a validator, an
//! adapter or a sample generator walks them.
//!
//! Pure logic over `serde_json::Value`; no validator lives here.

use serde_json::Value;

/// Deepest JSON nesting (objects and arrays) a structured-output schema may
/// have: 32 levels. Real schemas have a handful (OpenAI accepts at most 10
/// levels of objects); deeper ones only make every consumer (validator,
/// adapters, the echo sample) do more work.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// Most JSON values a structured-output schema may contain: 10,000.
pub const MAX_SCHEMA_VALUES: usize = 10_000;

/// A structured-output schema over [`MAX_SCHEMA_DEPTH`] or
/// [`MAX_SCHEMA_VALUES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SchemaTooLarge {
    /// Nested deeper than the limit.
    #[error("schema nests deeper than {limit} levels")]
    TooDeep {
        /// The depth limit.
        limit: usize,
    },
    /// More values than the limit.
    #[error("schema has more than {limit} values")]
    TooManyValues {
        /// The value limit.
        limit: usize,
    },
}

/// Checks that `schema` is within [`MAX_SCHEMA_DEPTH`] and
/// [`MAX_SCHEMA_VALUES`], without recursion (so any input is safe to
/// check) and stopping at the first excess.
pub fn check_schema_size(schema: &Value) -> Result<(), SchemaTooLarge> {
    let mut stack: Vec<(&Value, usize)> = vec![(schema, 1)];
    let mut values = 0usize;
    while let Some((v, depth)) = stack.pop() {
        values += 1;
        if values > MAX_SCHEMA_VALUES {
            return Err(SchemaTooLarge::TooManyValues {
                limit: MAX_SCHEMA_VALUES,
            });
        }
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > MAX_SCHEMA_DEPTH {
            return Err(SchemaTooLarge::TooDeep {
                limit: MAX_SCHEMA_DEPTH,
            });
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    Ok(())
}
