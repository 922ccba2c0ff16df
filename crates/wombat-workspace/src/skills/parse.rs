//! Parsing one `SKILL.md` from text: front matter, lenient fallback, metadata.
//!
//! Pure string processing: no I/O, never panics. What OpenClaw loads, this
//! loads with the same name; problems become messages for diagnostics.

use gray_matter::Pod;
use gray_matter::engine::{Engine as _, YAML};
use serde_json::{Map, Value};

use super::{Gating, NAMESPACES, OPENCLAW_IGNORED_NAMESPACES, Skill};

/// The outcome of parsing one `SKILL.md`: the skill if it loads, and every
/// problem met on the way (a skill can load *and* carry warnings, for example
/// when its YAML was broken and the lenient parser was used).
#[derive(Debug, Clone)]
pub struct ParsedSkill {
    /// The skill, or `None` when it cannot be loaded (no front matter, no description).
    pub skill: Option<Skill>,
    /// Human-readable problems, without the file path (the caller adds it).
    pub problems: Vec<String>,
    /// Whether OpenClaw's own loader would drop this file because its front
    /// matter is still not YAML after OpenClaw's repair, while Wombat loads
    /// it through the lenient parser (a deliberate difference, reported in
    /// `problems` too).
    pub openclaw_would_drop: bool,
}

/// Parses the text of `skills/<folder>/SKILL.md`.
///
/// Tolerates a UTF-8 BOM and CRLF line endings. The front matter is read as
/// YAML (with `gray_matter`'s YAML engine); if that fails, a lenient
/// `key: value` line parser takes over (as OpenClaw does), so unquoted values
/// containing `: ` do not lose the skill. `metadata` may be nested YAML,
/// single-line JSON, or a JSON5 block; its gating object is the first of
/// `openclaw`, `clawdbot`, `clawdis`, `moltbot` that is an object. The skill's
/// `location` is left empty for the caller to fill in.
pub fn parse_skill(folder: &str, text: &str) -> ParsedSkill {
    let mut problems = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let normalized;
    let text = if text.contains('\r') {
        normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        normalized.as_str()
    } else {
        text
    };
    let Some((block, body)) = split_front_matter(text) else {
        let message = if text.starts_with("---") {
            "front matter is not terminated by a --- line; skill not loaded"
        } else {
            "no front matter (the file must start with a --- line); skill not loaded"
        };
        problems.push(message.to_owned());
        return ParsedSkill {
            skill: None,
            problems,
            openclaw_would_drop: false,
        };
    };
    let mut openclaw_would_drop = false;
    let fields = match parse_yaml_mapping(block) {
        Ok(fields) => fields,
        Err(reason) => {
            // OpenClaw quotes unquoted `description:` values and accepts a
            // flow value continued down to a closing bracket in column 0; what
            // still fails YAML after that, it drops. Wombat reads every such
            // file with the lenient parser (as it always did) and says
            // whether OpenClaw would have kept it.
            if parse_yaml_mapping(&repair_front_matter(block)).is_ok() {
                problems.push(format!(
                    "front matter is not strict YAML ({reason}); read it with the lenient key: value parser (OpenClaw loads it after quoting the value)"
                ));
            } else {
                openclaw_would_drop = true;
                problems.push(format!(
                    "front matter is not valid YAML ({reason}), even after OpenClaw's repair of unquoted values: OpenClaw would drop this skill; Wombat reads it with the lenient key: value parser"
                ));
            }
            parse_lines(block)
        }
    };

    let name = fields
        .get("name")
        .and_then(scalar_string)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| folder.to_owned());
    let Some(description) = fields
        .get("description")
        .and_then(scalar_string)
        .filter(|d| !d.is_empty())
    else {
        problems.push("front matter has no description; skill not loaded".to_owned());
        return ParsedSkill {
            skill: None,
            problems,
            openclaw_would_drop: false,
        };
    };
    let homepage = fields
        .get("homepage")
        .and_then(scalar_string)
        .filter(|h| !h.is_empty());
    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(raw)) if raw.trim().is_empty() => Value::Null,
        Some(Value::String(raw)) => match parse_metadata_text(raw) {
            Ok(value) => value,
            Err(reason) => {
                problems.push(format!(
                    "metadata is not valid JSON, JSON5 or YAML ({reason}); ignored"
                ));
                Value::Null
            }
        },
        // OpenClaw reads a one-line `metadata: {...}` as JSON5 from the raw
        // text; when that fails it has no gating, even where YAML's more
        // forgiving flow syntax made sense of it. Do the same.
        Some(other) => match inline_flow_metadata(block) {
            Some(raw) if json5::from_str::<Value>(raw).is_err() => {
                problems.push(
                    "metadata is not valid JSON or JSON5; ignored (as OpenClaw ignores it)"
                        .to_owned(),
                );
                Value::Null
            }
            _ => other.clone(),
        },
    };
    let (namespace, gating) = match gating_object(&metadata) {
        Some((ns, object)) => {
            let (gating, gating_problems) = Gating::from_object(object);
            problems.extend(
                gating_problems
                    .into_iter()
                    .map(|p| format!("metadata.{ns}: {p}")),
            );
            if OPENCLAW_IGNORED_NAMESPACES.contains(&ns) {
                problems.push(format!(
                    "gating read from metadata.{ns}, a namespace OpenClaw ignores (it reads only openclaw and clawdbot): Wombat honours it as the author's intent, OpenClaw would not gate this skill"
                ));
            }
            (Some(ns.to_owned()), gating)
        }
        None => (None, Gating::default()),
    };
    ParsedSkill {
        skill: Some(Skill {
            name,
            description,
            homepage,
            folder: folder.to_owned(),
            location: String::new(),
            instructions: body.trim().to_owned(),
            metadata,
            namespace,
            gating,
        }),
        problems,
        openclaw_would_drop,
    }
}

/// The raw text of a `metadata:` value given as a flow mapping on its own
/// line (`metadata: {...}`, not continued on the next lines), if any.
fn inline_flow_metadata(block: &str) -> Option<&str> {
    let lines: Vec<&str> = block.split('\n').collect();
    let (i, value) = lines.iter().enumerate().find_map(|(i, line)| {
        let (key, value) = split_key(line)?;
        (key == "metadata").then(|| (i, value.trim()))
    })?;
    (value.starts_with('{') && flow_value_end(&lines, i, value) == i + 1).then_some(value)
}

/// Splits `---\n<block>\n---<rest of line>\n<body>` like OpenClaw: the file
/// starts with `---`, the block ends at the first later line starting with `---`.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let first_end = text.find('\n')?;
    if text[..first_end].trim_end() != "---" {
        return None;
    }
    let rest = &text[first_end + 1..];
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.starts_with("---") {
            let block = &rest[..offset];
            let body = &rest[offset + line.len()..];
            return Some((block, body));
        }
        offset += line.len();
    }
    None
}

/// The front matter as a YAML mapping, or why it is not one.
fn parse_yaml_mapping(block: &str) -> Result<Map<String, Value>, String> {
    if block.trim().is_empty() {
        return Ok(Map::new());
    }
    if has_yaml_alias(block) {
        // yaml-rust2 expands aliases by copying, so a few lines of nested
        // aliases ("billion laughs") could exhaust memory. Skill front matter
        // has no use for them.
        return Err("YAML aliases (*name) are not supported".to_owned());
    }
    match YAML::parse(block) {
        Ok(Pod::Hash(hash)) => Ok(sorted(hash)),
        Ok(_) => Err("not a key: value mapping".to_owned()),
        Err(e) => Err(first_line(&e.to_string())),
    }
}

/// Whether `block` contains a YAML alias token: `*` followed by an anchor
/// name where a value can start (after `: `, `- `, `[`, `{`, `,` or at the
/// start of a line).
fn has_yaml_alias(block: &str) -> bool {
    let bytes = block.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| {
        if *b != b'*' {
            return false;
        }
        let next_is_name = bytes
            .get(i + 1)
            .is_some_and(|n| n.is_ascii_alphanumeric() || *n == b'_' || *n == b'-');
        let before = bytes[..i]
            .iter()
            .rev()
            .find(|c| **c != b' ' && **c != b'\t');
        next_is_name
            && matches!(
                before,
                None | Some(b':' | b'-' | b'[' | b'{' | b',' | b'\n')
            )
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// A YAML mapping as a JSON object with keys in sorted order (gray_matter
/// hands out a `HashMap`; sorting keeps output stable even if serde_json's
/// `preserve_order` feature gets enabled somewhere in the build).
fn sorted(hash: std::collections::HashMap<String, Pod>) -> Map<String, Value> {
    let mut entries: Vec<(String, Pod)> = hash.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .map(|(k, v)| (k, pod_to_json(v)))
        .collect()
}

fn pod_to_json(pod: Pod) -> Value {
    match pod {
        Pod::Null => Value::Null,
        Pod::String(s) => Value::String(s),
        Pod::Integer(i) => Value::from(i),
        Pod::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Pod::Boolean(b) => Value::Bool(b),
        Pod::Array(items) => Value::Array(items.into_iter().map(pod_to_json).collect()),
        Pod::Hash(hash) => Value::Object(sorted(hash)),
    }
}

/// OpenClaw's lenient front-matter reader: `key: value` lines (last one wins),
/// surrounding quotes stripped; a key with an empty value followed by indented
/// lines takes those lines (trimmed as a block) as its value.
fn parse_lines(block: &str) -> Map<String, Value> {
    let lines: Vec<&str> = block.split('\n').collect();
    let mut map = Map::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((key, inline)) = split_key(lines[i]) else {
            i += 1;
            continue;
        };
        let inline = inline.trim();
        if inline.is_empty() {
            let mut j = i + 1;
            while j < lines.len() {
                let line = lines[j];
                if !line.is_empty() && !line.starts_with(' ') && !line.starts_with('\t') {
                    break;
                }
                j += 1;
            }
            let value = dedent(&lines[i + 1..j]);
            let value = value.trim();
            if !value.is_empty() {
                map.insert(key.to_owned(), Value::String(value.to_owned()));
            }
            i = j.max(i + 1);
            continue;
        }
        // A flow value (`metadata: {`) may go on over the next lines, down to
        // its closing bracket (often in column 0): take them all.
        let end = flow_value_end(&lines, i, inline);
        if end > i + 1 {
            let value = lines[i + 1..end]
                .iter()
                .fold(inline.to_owned(), |acc, l| acc + "\n" + l);
            map.insert(key.to_owned(), Value::String(value));
            i = end;
            continue;
        }
        let value = strip_quotes(inline);
        if !value.is_empty() {
            map.insert(key.to_owned(), Value::String(value.to_owned()));
        }
        i += 1;
    }
    map
}

/// When `inline` (the value on line `i`) opens a flow collection (`{` or
/// `[`) that the line does not close, the index just past the line that
/// closes it (or past the last line when none does); else `i + 1`.
fn flow_value_end(lines: &[&str], i: usize, inline: &str) -> usize {
    if !inline.starts_with('{') && !inline.starts_with('[') {
        return i + 1;
    }
    let mut scan = FlowScan::default();
    scan.feed(inline);
    let mut j = i + 1;
    // An unclosed bracket must not swallow the keys after it.
    while scan.depth > 0 && j < lines.len() && split_key(lines[j]).is_none() {
        scan.feed(lines[j]);
        j += 1;
    }
    j
}

/// Bracket depth of flow text, skipping brackets inside quoted strings.
#[derive(Default)]
struct FlowScan {
    depth: usize,
    quote: Option<char>,
    escaped: bool,
}

impl FlowScan {
    fn feed(&mut self, line: &str) {
        for c in line.chars() {
            if let Some(q) = self.quote {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' && q == '"' {
                    self.escaped = true;
                } else if c == q {
                    self.quote = None;
                }
                continue;
            }
            match c {
                '"' | '\'' => self.quote = Some(c),
                '{' | '[' => self.depth += 1,
                '}' | ']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        // A single-quoted YAML string does not span lines in this position;
        // an unbalanced quote must not swallow the rest of the block.
        if self.quote == Some('\'') {
            self.quote = None;
        }
    }
}

/// The front matter as OpenClaw repairs it before parsing it as YAML: an
/// unquoted top-level `description:` value that YAML would misread (it holds
/// `: ` or ` #`, or ends with `:`) is single-quoted, and a flow value
/// continued over several lines has its continuation lines indented, as
/// OpenClaw's parser accepts a closing bracket in column 0.
fn repair_front_matter(block: &str) -> String {
    let lines: Vec<&str> = block.split('\n').collect();
    let mut out = String::with_capacity(block.len() + 16);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if i > 0 {
            out.push('\n');
        }
        let Some((key, inline)) = split_key(line) else {
            out.push_str(line);
            i += 1;
            continue;
        };
        let value = inline.trim();
        let end = flow_value_end(&lines, i, value);
        if end > i + 1 {
            out.push_str(line);
            for continued in &lines[i + 1..end] {
                out.push_str("\n  ");
                out.push_str(continued);
            }
            i = end;
            continue;
        }
        let plain =
            !value.is_empty() && !value.starts_with(['"', '\'', '{', '[', '|', '>', '&', '*', '!']);
        let misread = value.contains(": ") || value.contains(" #") || value.ends_with(':');
        if key == "description" && plain && misread {
            out.push_str(key);
            out.push_str(": '");
            out.push_str(&value.replace('\'', "''"));
            out.push('\'');
        } else {
            out.push_str(line);
        }
        i += 1;
    }
    out
}

/// `^([\w-]+):\s*(.*)$`: the key and the raw rest of the line.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let key = &line[..colon];
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then(|| (key, &line[colon + 1..]))
}

fn strip_quotes(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// A front-matter scalar as text: strings trimmed, numbers and booleans
/// printed, anything else absent.
fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Metadata given as text: JSON, then JSON5, then a YAML mapping (an indented
/// YAML block read by the lenient parser).
fn parse_metadata_text(raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    let json_error = match serde_json::from_str::<Value>(raw) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    if let Ok(value) = json5::from_str::<Value>(raw) {
        return Ok(value);
    }
    if !raw.starts_with('{') && !raw.starts_with('[') {
        if let Ok(map) = parse_yaml_mapping(raw) {
            if !map.is_empty() {
                return Ok(Value::Object(map));
            }
        }
    }
    Err(json_error.to_string())
}

/// Joins `lines` after removing their common leading indentation (so an
/// indented YAML block under `metadata:` can be read as YAML on its own).
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line.get(indent..).unwrap_or_else(|| line.trim_start()));
    }
    out
}

/// The gating object: the first known namespace holding an object.
fn gating_object(metadata: &Value) -> Option<(&'static str, &Map<String, Value>)> {
    let object = metadata.as_object()?;
    NAMESPACES
        .iter()
        .find_map(|ns| object.get(*ns).and_then(Value::as_object).map(|o| (*ns, o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Skill {
        let parsed = parse_skill("folder", text);
        parsed
            .skill
            .unwrap_or_else(|| panic!("not loaded: {:?}", parsed.problems))
    }

    #[test]
    fn yaml_front_matter_with_json_metadata() {
        let skill = load(
            "---\nname: discord\ndescription: Talk to Discord\nmetadata: {\"openclaw\":{\"emoji\":\"🎮\",\"requires\":{\"env\":[\"TOKEN\"]}}}\n---\n\n# Body\n\ntext\n",
        );
        assert_eq!(skill.name, "discord");
        assert_eq!(skill.description, "Talk to Discord");
        assert_eq!(skill.namespace.as_deref(), Some("openclaw"));
        assert_eq!(skill.gating.emoji.as_deref(), Some("🎮"));
        assert_eq!(skill.gating.env, ["TOKEN"]);
        assert_eq!(skill.instructions, "# Body\n\ntext");
    }

    #[test]
    fn bom_and_crlf_are_tolerated() {
        let skill =
            load("\u{feff}---\r\nname: x\r\ndescription: d\r\n---\r\nline one\r\nline two\r\n");
        assert_eq!(skill.name, "x");
        assert_eq!(skill.instructions, "line one\nline two");
    }

    #[test]
    fn unquoted_colon_values_fall_back_to_the_line_parser() {
        let parsed = parse_skill(
            "prd",
            "---\nname: prd\ndescription: Use when: (1) planning, (2) specs\nmetadata:\n  clawdbot:\n    emoji: \"📋\"\n    os: [\"darwin\", \"linux\"]\n---\nbody",
        );
        let skill = parsed.skill.expect("loaded");
        assert_eq!(skill.description, "Use when: (1) planning, (2) specs");
        assert_eq!(skill.namespace.as_deref(), Some("clawdbot"));
        assert_eq!(skill.gating.os, ["darwin", "linux"]);
        assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);
        assert!(parsed.problems[0].contains("lenient"));
        assert!(
            !parsed.openclaw_would_drop,
            "OpenClaw loads it after quoting the description"
        );
    }

    #[test]
    fn flow_metadata_closed_in_column_zero_keeps_its_gating() {
        // Valid YAML for OpenClaw's parser (it loads the file with its
        // gating); a strict YAML reader rejects the `}` in column 0.
        let parsed = parse_skill(
            "weather",
            "---\nname: weather\ndescription: Forecasts\nmetadata: {\n  \"openclaw\": {\n    \"emoji\": \"🌦️\",\n    \"requires\": { \"env\": [\"WEATHER_API_KEY\"], \"bins\": [\"curl\"] }\n  }\n}\nhomepage: https://example.com\n---\nbody\n",
        );
        let skill = parsed.skill.expect("loaded");
        assert_eq!(skill.namespace.as_deref(), Some("openclaw"));
        assert_eq!(skill.gating.env, ["WEATHER_API_KEY"]);
        assert_eq!(skill.gating.bins, ["curl"]);
        assert_eq!(skill.gating.emoji.as_deref(), Some("🌦️"));
        assert_eq!(skill.homepage.as_deref(), Some("https://example.com"));
        assert!(!parsed.openclaw_would_drop, "{:?}", parsed.problems);
    }

    #[test]
    fn front_matter_openclaw_drops_is_loaded_with_a_diagnostic() {
        // One closing brace short: still not YAML after OpenClaw's repair.
        let parsed = parse_skill(
            "factory",
            "---\nname: factory\ndescription: Use the droid CLI\nmetadata: {\"clawdbot\":{\"requires\":{\"bins\":[\"droid\"]}}\n---\nbody\n",
        );
        assert!(parsed.skill.is_some(), "the lenient parser still loads it");
        assert!(parsed.openclaw_would_drop);
        assert!(
            parsed.problems[0].contains("OpenClaw would drop this skill"),
            "{:?}",
            parsed.problems
        );
        // An unclosed bracket does not swallow the keys after it.
        let parsed = parse_skill(
            "f",
            "---\nmetadata: {\"openclaw\": {\ndescription: d\n---\n",
        );
        assert_eq!(parsed.skill.expect("loaded").description, "d");
    }

    #[test]
    fn gating_from_a_namespace_openclaw_ignores_is_kept_and_reported() {
        for ns in ["clawdis", "moltbot"] {
            let parsed = parse_skill(
                "f",
                &format!(
                    "---\ndescription: d\nmetadata: {{\"{ns}\":{{\"requires\":{{\"env\":[\"K\"]}}}}}}\n---\n"
                ),
            );
            let skill = parsed.skill.expect("loaded");
            assert_eq!(skill.namespace.as_deref(), Some(ns));
            assert_eq!(skill.gating.env, ["K"]);
            assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);
            assert!(parsed.problems[0].contains("OpenClaw ignores"));
        }
        let parsed = parse_skill(
            "f",
            "---\ndescription: d\nmetadata: {\"clawdbot\":{\"emoji\":\"c\"}}\n---\n",
        );
        assert_eq!(parsed.problems, Vec::<String>::new());
    }

    #[test]
    fn json5_metadata_block() {
        let skill = load(
            "---\nname: n\ndescription: d\nmetadata:\n  {\n    openclaw: {\n      always: true,\n      requires: { bins: [\"jq\",], },\n    },\n  }\n---\n",
        );
        assert_eq!(skill.namespace.as_deref(), Some("openclaw"));
        assert!(skill.gating.always);
        assert_eq!(skill.gating.bins, ["jq"]);
    }

    #[test]
    fn namespaces_in_priority_order() {
        let skill = load(
            "---\ndescription: d\nmetadata: {\"moltbot\":{\"emoji\":\"m\"},\"clawdbot\":{\"emoji\":\"c\"}}\n---\n",
        );
        assert_eq!(skill.namespace.as_deref(), Some("clawdbot"));
        assert_eq!(skill.name, "folder", "name falls back to the folder");
    }

    #[test]
    fn missing_description_or_front_matter_is_reported() {
        let parsed = parse_skill("f", "---\nname: x\n---\nbody");
        assert!(parsed.skill.is_none());
        assert!(parsed.problems[0].contains("no description"));
        let parsed = parse_skill("f", "# Just markdown\n");
        assert!(parsed.skill.is_none());
        assert!(parsed.problems[0].contains("no front matter"));
        let parsed = parse_skill("f", "---\nname: x\ndescription: y\n");
        assert!(parsed.problems[0].contains("not terminated"));
        assert!(parse_skill("f", "").skill.is_none());
        assert!(parse_skill("f", "---").skill.is_none());
    }

    #[test]
    fn yaml_aliases_are_refused_before_expansion() {
        let bomb = "---\ndescription: d\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n---\n";
        let parsed = parse_skill("f", bomb);
        assert!(
            parsed.skill.is_some(),
            "still loads through the lenient parser"
        );
        assert!(
            parsed.problems[0].contains("aliases"),
            "{:?}",
            parsed.problems
        );
        assert!(has_yaml_alias("x: *a"));
        assert!(has_yaml_alias("- *a"));
        assert!(!has_yaml_alias("description: use **bold** text"));
        assert!(!has_yaml_alias("description: a*b"));
    }

    #[test]
    fn broken_metadata_keeps_the_skill_with_a_problem() {
        let parsed = parse_skill(
            "f",
            "---\ndescription: d\nmetadata: '{\"openclaw\": {'\n---\n",
        );
        let skill = parsed.skill.expect("loaded");
        assert_eq!(skill.metadata, Value::Null);
        assert!(parsed.problems[0].contains("metadata"));
    }
}
