//! Executes the examples of `docs/CONTROL_PLANE_QUICKSTART.md` and
//! `docs/CONTROL_PLANE_CONTRACT.md` against an in-process reference backend.
//!
//! The quickstart's ```sh blocks that contain `curl` are interpreted by a
//! small shell subset (assignments, arrays, `$(python3 mint.py USER)`,
//! quoting, `${AUTH[@]}`, the `notify` subcommand and `curl` itself), and
//! every documented answer in the `# {...}` comment after a curl is compared
//! with the real one: status, key sets, and every value that is not a `...`
//! placeholder. Placeholder ids (`task_a31e...`) are learned from the first
//! answer that shows them and must stay consistent afterwards.
//!
//! Every ```json block of both documents carries a `<!-- check: NAME -->`
//! marker that says which real answer or request it documents; the contract
//! blocks are compared by key sets (values there are illustrative). The
//! Python snippets run with `python3` (`python_snippets_run_as_documented`);
//! the `cargo` command lines run in the `wombat` binary's doc test.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};
use wombat_controlplane::{JwtAlgorithm, JwtConfig, jwt, task_idempotency_key};
use wombat_mc_lite::{DbLocation, McLiteConfig, RunningMcLite, enqueue_notification};

use crate::support::{call, now, start};

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs");
const QUICKSTART: &str = "CONTROL_PLANE_QUICKSTART.md";
const CONTRACT: &str = "CONTROL_PLANE_CONTRACT.md";
/// The secrets the quickstart starts the reference backend with.
const DEV_SECRET: &str = "dev-secret";
const DEV_INTERNAL: &str = "dev-internal";
/// The address the quickstart's backend listens on.
const DOC_HOST: &str = "http://127.0.0.1:9001";

fn read_doc(name: &str) -> String {
    let path = format!("{DOCS}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

async fn dev_backend() -> RunningMcLite {
    let jwt = JwtConfig::new(DEV_SECRET, JwtAlgorithm::HS256).unwrap();
    let mut cfg = McLiteConfig::new(jwt, DbLocation::Memory);
    cfg.internal_token = Some(DEV_INTERNAL.into());
    start(cfg).await
}

/// One fenced code block.
#[derive(Debug)]
struct Block {
    lang: String,
    /// `NAME` of a `<!-- check: NAME -->` line right before the fence.
    marker: Option<String>,
    body: String,
    /// 1-based line of the opening fence.
    line: usize,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut last_text: Option<&str> = None;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            match open.take() {
                Some(block) => out.push(block),
                None => {
                    let marker = last_text
                        .and_then(|l| l.strip_prefix("<!-- check:"))
                        .and_then(|l| l.strip_suffix("-->"))
                        .map(|m| m.trim().to_owned());
                    open = Some(Block {
                        lang: lang.trim().to_owned(),
                        marker,
                        body: String::new(),
                        line: i + 1,
                    });
                }
            }
            continue;
        }
        match open.as_mut() {
            Some(block) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            None if !trimmed.is_empty() => last_text = Some(trimmed),
            None => {}
        }
    }
    assert!(open.is_none(), "unclosed code fence");
    out
}

// ---------------------------------------------------------------------------
// Comparing documented answers with real ones.

/// Turns the documented `...` elisions into JSON: `{...}`, `{...,` and
/// `,...}` become a `"..."` key, which marks an object as open (the real
/// one may have more keys).
fn documented_json(text: &str, context: &str) -> Value {
    let text = text
        .replace("{...}", r#"{"...":null}"#)
        .replace("{...,", r#"{"...":null,"#)
        .replace(",...}", r#","...":null}"#);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{context}: documented answer is not JSON ({e}): {text}"))
}

/// How strictly a documented value is compared with a real one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Same keys, same values except `...` placeholders.
    Values,
    /// Same keys and JSON types; values are illustrative.
    Keys,
}

struct Compare<'a> {
    mode: Mode,
    /// Keys a real object may have beyond the documented ones.
    extra_ok: &'a [&'a str],
    /// Placeholder (`task_a31e...`) → the real value it stands for.
    placeholders: &'a mut HashMap<String, String>,
    errors: Vec<String>,
}

impl Compare<'_> {
    fn check(&mut self, doc: &Value, real: &Value, at: &str) {
        match (doc, real) {
            (Value::Object(d), Value::Object(r)) => {
                let open = d.contains_key("...");
                let documented: BTreeSet<&str> = d
                    .keys()
                    .map(String::as_str)
                    .filter(|k| *k != "...")
                    .collect();
                let actual: BTreeSet<&str> = r.keys().map(String::as_str).collect();
                let missing: Vec<_> = documented.difference(&actual).collect();
                let extra: Vec<_> = actual
                    .difference(&documented)
                    .filter(|k| !open && !self.extra_ok.contains(k))
                    .collect();
                if !missing.is_empty() || !extra.is_empty() {
                    self.errors.push(format!(
                        "{at}: keys differ: documented but absent {missing:?}, \
                         present but undocumented {extra:?}"
                    ));
                }
                for key in documented.intersection(&actual) {
                    self.check(&d[*key], &r[*key], &format!("{at}.{key}"));
                }
            }
            (Value::Array(d), Value::Array(r)) => {
                if d.len() != r.len() {
                    self.errors.push(format!(
                        "{at}: documented {} items, got {}: {real}",
                        d.len(),
                        r.len()
                    ));
                }
                for (i, (d, r)) in d.iter().zip(r).enumerate() {
                    self.check(d, r, &format!("{at}[{i}]"));
                }
            }
            (Value::String(d), real) if d.contains("...") => {
                let Some(r) = real.as_str() else {
                    self.errors
                        .push(format!("{at}: expected a string for {d:?}, got {real}"));
                    return;
                };
                if d == "..." {
                    return;
                }
                // `task_a31e...` stands for an id of the same kind.
                if let Some((kind, _)) = d.split_once('_')
                    && !r.starts_with(&format!("{kind}_"))
                {
                    self.errors
                        .push(format!("{at}: {r:?} is not the kind of id {d:?} shows"));
                }
                match self.placeholders.get(d) {
                    Some(known) if known != r => self.errors.push(format!(
                        "{at}: {d:?} stood for {known:?} before, now the answer is {r:?}"
                    )),
                    Some(_) => {}
                    None => {
                        self.placeholders.insert(d.clone(), r.to_owned());
                    }
                }
            }
            (d, r) if self.mode == Mode::Values => {
                if d != r {
                    self.errors.push(format!("{at}: documented {d}, got {r}"));
                }
            }
            (Value::Null, _) => {}
            (d, r) => {
                let same_type = matches!(
                    (d, r),
                    (Value::String(_), Value::String(_))
                        | (Value::Number(_), Value::Number(_))
                        | (Value::Bool(_), Value::Bool(_))
                );
                if !same_type {
                    self.errors
                        .push(format!("{at}: documented {d}, got {r} (another type)"));
                }
            }
        }
    }
}

/// Compares; answers the list of differences (empty when they agree).
fn differences(
    mode: Mode,
    extra_ok: &[&str],
    placeholders: &mut HashMap<String, String>,
    doc: &Value,
    real: &Value,
) -> Vec<String> {
    let mut cmp = Compare {
        mode,
        extra_ok,
        placeholders,
        errors: Vec::new(),
    };
    cmp.check(doc, real, "$");
    cmp.errors
}

// ---------------------------------------------------------------------------
// A shell subset, enough for the quickstart's walkthrough.

#[derive(Debug, Clone)]
enum Var {
    Scalar(String),
    Array(Vec<String>),
}

/// One documented `curl`, after expansion.
#[derive(Debug)]
struct Curl {
    method: String,
    headers: Vec<(String, String)>,
    data: Option<String>,
    url: String,
    prints_status: bool,
}

struct Shell {
    vars: HashMap<String, Var>,
    server_url: String,
    placeholders: HashMap<String, String>,
    http: reqwest::Client,
    /// `(curls run, curls whose answer was compared)`.
    counts: (usize, usize),
    notifications: usize,
}

impl Shell {
    fn new(server_url: String) -> Self {
        Self {
            vars: HashMap::new(),
            server_url,
            placeholders: HashMap::new(),
            http: reqwest::Client::new(),
            counts: (0, 0),
            notifications: 0,
        }
    }

    /// Splits `text` into words with quoting and `$VAR` / `${VAR}` /
    /// `"${ARR[@]}"` expansion; stops at an unquoted `#` comment.
    fn words(&self, text: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut current: Option<String> = None;
        let mut splice: Option<Vec<String>> = None;
        let mut chars = text.chars().peekable();
        let finish = |current: &mut Option<String>,
                      splice: &mut Option<Vec<String>>,
                      words: &mut Vec<String>| {
            if let Some(items) = splice.take() {
                assert!(
                    current.take().unwrap_or_default().is_empty(),
                    "an array expansion must be a whole word: {text}"
                );
                words.extend(items);
            } else if let Some(word) = current.take() {
                words.push(word);
            }
        };
        while let Some(c) = chars.next() {
            match c {
                c if c.is_whitespace() => finish(&mut current, &mut splice, &mut words),
                '#' if current.is_none() && splice.is_none() => break,
                '\'' => {
                    let word = current.get_or_insert_with(String::new);
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(c) => word.push(c),
                            None => panic!("unclosed ' in {text}"),
                        }
                    }
                }
                '"' => {
                    current.get_or_insert_with(String::new);
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(c @ ('"' | '\\' | '$' | '`')) => {
                                    current.as_mut().unwrap().push(c);
                                }
                                Some(c) => {
                                    let word = current.as_mut().unwrap();
                                    word.push('\\');
                                    word.push(c);
                                }
                                None => panic!("dangling \\ in {text}"),
                            },
                            Some('$') => self.expand(&mut chars, &mut current, &mut splice, text),
                            Some(c) => current.as_mut().unwrap().push(c),
                            None => panic!("unclosed \" in {text}"),
                        }
                    }
                }
                '\\' => {
                    let c = chars
                        .next()
                        .unwrap_or_else(|| panic!("dangling \\ in {text}"));
                    current.get_or_insert_with(String::new).push(c);
                }
                '$' => self.expand(&mut chars, &mut current, &mut splice, text),
                c => current.get_or_insert_with(String::new).push(c),
            }
        }
        finish(&mut current, &mut splice, &mut words);
        words.into_iter().map(|w| self.localise(&w)).collect()
    }

    /// Expands the variable after a `$`.
    fn expand(
        &self,
        chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
        current: &mut Option<String>,
        splice: &mut Option<Vec<String>>,
        text: &str,
    ) {
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                match chars.next() {
                    Some('}') => break,
                    Some(c) => name.push(c),
                    None => panic!("unclosed ${{ in {text}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                name.push(c);
                chars.next();
            }
        }
        if name.is_empty() {
            current.get_or_insert_with(String::new).push('$');
            return;
        }
        let (name, whole_array) = match name.strip_suffix("[@]") {
            Some(n) => (n.to_owned(), true),
            None => (name, false),
        };
        let value = self
            .vars
            .get(&name)
            .unwrap_or_else(|| panic!("${name} is used before it is set: {text}"));
        match (value, whole_array) {
            (Var::Array(items), true) => {
                assert!(
                    splice.is_none() && current.as_deref().unwrap_or_default().is_empty(),
                    "an array expansion must be a whole word: {text}"
                );
                *splice = Some(items.clone());
            }
            (Var::Scalar(s), false) => current.get_or_insert_with(String::new).push_str(s),
            _ => panic!("${name} is used as the wrong kind of variable: {text}"),
        }
    }

    /// Points the documented address at the test backend and replaces
    /// learned placeholders with the real values.
    fn localise(&self, word: &str) -> String {
        let mut word = word.replace(DOC_HOST, &self.server_url);
        for (placeholder, real) in &self.placeholders {
            word = word.replace(placeholder, real);
        }
        assert!(
            !word.contains("..."),
            "{word:?} holds a placeholder that no earlier documented answer showed"
        );
        word
    }

    /// Runs the logical lines of one ```sh block.
    async fn run_block(&mut self, block: &Block) {
        // Join `\` continuations; keep comment lines for the expected answers.
        let mut lines: Vec<String> = Vec::new();
        let mut pending = String::new();
        for raw in block.body.lines() {
            let raw = raw.trim();
            if let Some(head) = raw.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(raw);
            lines.push(std::mem::take(&mut pending));
        }
        assert!(
            pending.is_empty(),
            "block at line {}: dangling \\",
            block.line
        );

        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].clone();
            i += 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("export ") {
                self.assign(rest.trim());
                continue;
            }
            if let Some((name, value)) = line.split_once('=')
                && is_name(name)
                && (value.starts_with('(') || value.starts_with("$("))
            {
                self.assign(&line);
                continue;
            }
            let words = self.words(&line);
            let env_len = words.iter().take_while(|w| assignment(w).is_some()).count();
            if env_len == words.len() {
                for word in &words {
                    let (name, value) = assignment(word).unwrap();
                    self.vars.insert(name.into(), Var::Scalar(value.into()));
                }
                continue;
            }
            let env: HashMap<&str, &str> = words[..env_len]
                .iter()
                .filter_map(|w| assignment(w))
                .collect();
            let command = &words[env_len..];
            if command[0] == "curl" {
                // The documented answer: the comment lines right after it.
                let mut expected = String::new();
                if lines.get(i).is_some_and(|l| {
                    l.strip_prefix('#')
                        .is_some_and(|c| c.trim().starts_with('{'))
                }) {
                    while let Some(comment) = lines.get(i).and_then(|l| l.strip_prefix('#')) {
                        expected.push_str(comment.trim());
                        i += 1;
                        if balanced(&expected) {
                            break;
                        }
                    }
                }
                self.curl(&line, &command[1..], &expected).await;
            } else if command.iter().any(|w| w == "notify") {
                self.notify(&line, &env, command).await;
            } else {
                panic!(
                    "{QUICKSTART} block at line {}: unsupported command {line}",
                    block.line
                );
            }
        }
    }

    /// `NAME=value`, `NAME=(words...)` or `NAME=$(python3 mint.py USER)`.
    fn assign(&mut self, text: &str) {
        let (name, value) = text
            .split_once('=')
            .filter(|(n, _)| is_name(n))
            .unwrap_or_else(|| panic!("not an assignment: {text}"));
        let value = value.trim();
        let var = if let Some(inner) = value.strip_prefix("$(") {
            let inner = inner
                .strip_suffix(')')
                .unwrap_or_else(|| panic!("unclosed $( in {text}"));
            let words = self.words(inner);
            match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["python3", "mint.py", user] => Var::Scalar(self.mint(user)),
                _ => panic!("unsupported command substitution: {text}"),
            }
        } else if let Some(inner) = value.strip_prefix('(') {
            let inner = inner
                .strip_suffix(')')
                .unwrap_or_else(|| panic!("unclosed ( in {text}"));
            Var::Array(self.words(inner))
        } else {
            match &self.words(value)[..] {
                [word] => Var::Scalar(word.clone()),
                other => panic!("{text}: expected one word, got {other:?}"),
            }
        };
        self.vars.insert(name.to_owned(), var);
    }

    /// What the quickstart's `mint.py` prints: an HS256 agent token for
    /// `user` (role `agent`) signed with `$AGENT_JWT_SECRET`.
    fn mint(&self, user: &str) -> String {
        let Some(Var::Scalar(secret)) = self.vars.get("AGENT_JWT_SECRET") else {
            panic!("mint.py needs AGENT_JWT_SECRET to be exported first");
        };
        let cfg = JwtConfig::new(secret.as_str(), JwtAlgorithm::HS256).unwrap();
        jwt::mint(&cfg, user, "agent", None, now()).unwrap()
    }

    async fn curl(&mut self, line: &str, args: &[String], expected: &str) {
        let curl = parse_curl(args);
        let mut req = self.http.request(curl.method.parse().unwrap(), &curl.url);
        for (k, v) in &curl.headers {
            req = req.header(k, v);
        }
        if let Some(data) = &curl.data {
            req = req.body(data.clone());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{line}: request failed: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        self.counts.0 += 1;
        if expected.is_empty() {
            assert!(
                (200..300).contains(&status),
                "{line}: documented without an answer, so it should succeed, \
                 but answered {status} {text}"
            );
            return;
        }
        self.counts.1 += 1;
        let end = json_end(expected)
            .unwrap_or_else(|| panic!("{line}: the documented answer never closes: {expected}"));
        let (json_text, tail) = expected.split_at(end);
        let documented_status: Option<u16> = match tail.trim() {
            "" => None,
            s => Some(
                s.parse()
                    .unwrap_or_else(|_| panic!("{line}: cannot read the status in {expected}")),
            ),
        };
        assert_eq!(
            documented_status.is_some(),
            curl.prints_status,
            "{line}: the answer shows a status exactly when curl prints it (-w '%{{http_code}}')"
        );
        match documented_status {
            Some(documented) => assert_eq!(status, documented, "{line}: status; body {text}"),
            None => assert!(
                (200..300).contains(&status),
                "{line}: answered {status} {text}"
            ),
        }
        let real: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{line}: the answer is not JSON ({e}): {text}"));
        let doc = documented_json(json_text, line);
        let errors = differences(Mode::Values, &[], &mut self.placeholders, &doc, &real);
        assert!(
            errors.is_empty(),
            "{QUICKSTART}: `{line}` documents {json_text} but the backend answered {text}:\n{}",
            errors.join("\n")
        );
    }

    /// `INTERNAL_TOKEN=... cargo run -q -p wombat-mc-lite-bin -- notify
    /// --url U --user-id U --session-key K --content C`, done the way the
    /// binary does it.
    async fn notify(&mut self, line: &str, env: &HashMap<&str, &str>, command: &[String]) {
        let words: Vec<&str> = command.iter().map(String::as_str).collect();
        assert!(
            words.starts_with(&["cargo", "run"])
                && words.windows(2).any(|w| w == ["-p", "wombat-mc-lite-bin"]),
            "{line}: notify runs the reference backend's binary"
        );
        let at = words.iter().position(|w| *w == "notify").unwrap();
        let mut flags = BTreeMap::new();
        for pair in words[at + 1..].chunks(2) {
            match pair {
                [flag, value] if flag.starts_with("--") => {
                    flags.insert(*flag, *value);
                }
                other => panic!("{line}: cannot read notify arguments {other:?}"),
            }
        }
        let flag = |name: &str| {
            *flags
                .get(name)
                .unwrap_or_else(|| panic!("{line}: notify without {name}"))
        };
        let token = env
            .get("INTERNAL_TOKEN")
            .unwrap_or_else(|| panic!("{line}: notify needs INTERNAL_TOKEN"));
        let reply = enqueue_notification(
            flag("--url"),
            token,
            flag("--user-id"),
            flag("--session-key"),
            flag("--content"),
        )
        .await
        .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(reply["notification_id"].is_string(), "{reply}");
        self.notifications += 1;
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

/// `NAME=value` as a pair.
fn assignment(word: &str) -> Option<(&str, &str)> {
    word.split_once('=').filter(|(n, _)| is_name(n))
}

/// Whether the first top-level value of `text` is complete.
fn balanced(text: &str) -> bool {
    json_end(text).is_some()
}

/// The byte offset just after the first complete top-level `{...}` or
/// `[...]` of `text`, ignoring brackets inside strings.
fn json_end(text: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_curl(args: &[String]) -> Curl {
    let mut curl = Curl {
        method: String::new(),
        headers: Vec::new(),
        data: None,
        url: String::new(),
        prints_status: false,
    };
    let mut args = args.iter();
    let value = |flag: &str, args: &mut std::slice::Iter<'_, String>| {
        args.next()
            .unwrap_or_else(|| panic!("curl {flag} without a value"))
            .clone()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-s" | "--silent" => {}
            "-w" | "--write-out" => {
                let format = value(arg, &mut args);
                assert!(format.contains("%{http_code}"), "unsupported -w {format}");
                curl.prints_status = true;
            }
            "-H" | "--header" => {
                let header = value(arg, &mut args);
                let (k, v) = header
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header {header}"));
                curl.headers
                    .push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-d" | "--data" => curl.data = Some(value(arg, &mut args)),
            "-X" | "--request" => curl.method = value(arg, &mut args),
            other if other.starts_with('-') => panic!("unsupported curl option {other}"),
            url => {
                assert!(curl.url.is_empty(), "two URLs in one curl: {url}");
                curl.url = url.to_owned();
            }
        }
    }
    assert!(curl.url.starts_with("http://"), "curl without a URL");
    if curl.method.is_empty() {
        curl.method = if curl.data.is_some() { "POST" } else { "GET" }.to_owned();
    }
    // curl's default for -d without a Content-Type header.
    if curl.data.is_some()
        && !curl
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        curl.headers.push((
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    curl
}

#[tokio::test]
async fn quickstart_curl_walkthrough_answers_as_documented() {
    let doc = read_doc(QUICKSTART);
    let server = dev_backend().await;
    let mut shell = Shell::new(server.url());
    let sh: Vec<Block> = blocks(&doc)
        .into_iter()
        .filter(|b| b.lang == "sh" && b.body.lines().any(|l| l.trim_start().starts_with("curl ")))
        .collect();
    assert!(
        sh.len() >= 2,
        "the curl walkthrough and the optional-features block"
    );
    for block in &sh {
        shell.run_block(block).await;
    }
    let documented = sh
        .iter()
        .flat_map(|b| b.body.lines())
        .filter(|l| l.trim_start().starts_with("curl "))
        .count();
    let (ran, compared) = shell.counts;
    assert_eq!(ran, documented, "every documented curl ran");
    assert!(compared >= 8, "only {compared} documented answers compared");
    assert_eq!(shell.notifications, 1, "the notify command ran once");
    for placeholder in ["task_a31e...", "ntf_4d41..."] {
        assert!(
            shell.placeholders.contains_key(placeholder),
            "{placeholder} was never shown in an answer"
        );
    }
}

// ---------------------------------------------------------------------------
// The JSON blocks.

/// Every marker the two documents may carry on a ```json (or other) block.
const QUICKSTART_MARKERS: &[&str] = &["error_missing_title", "skip"];
const CONTRACT_MARKERS: &[&str] = &[
    "jwt",
    "error_missing_title",
    "capabilities",
    "list_tasks",
    "create_task_request",
    "create_task_response",
    "create_message_request",
    "create_message_response",
    "create_document_request",
    "create_document_response",
    "undelivered",
    "task_key_recipe",
];

/// The checked blocks of `doc` by marker; every ```json block has one.
fn marked_blocks(name: &str, doc: &str, known: &[&str]) -> BTreeMap<String, Block> {
    let mut out = BTreeMap::new();
    for block in blocks(doc) {
        let Some(marker) = block.marker.clone() else {
            assert!(
                block.lang != "json",
                "{name} line {}: a ```json block without a <!-- check: NAME --> marker; \
                 add one and a check in tests/it/docs.rs",
                block.line
            );
            continue;
        };
        let key = marker
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            known.contains(&key.as_str()),
            "{name} line {}: unknown check {marker:?}",
            block.line
        );
        if key == "skip" {
            continue;
        }
        assert!(
            out.insert(key.clone(), block).is_none(),
            "{name}: two blocks marked {key}"
        );
    }
    for key in known.iter().filter(|k| **k != "skip") {
        assert!(out.contains_key(*key), "{name}: no block is marked {key}");
    }
    out
}

/// The field names of the `| `name` | ... |` table between the heading
/// above line `line` (1-based) and that line.
fn table_fields(doc: &str, line: usize) -> Vec<&str> {
    let lines: Vec<&str> = doc.lines().take(line).collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("### "))
        .expect("a heading above the block");
    lines[start..]
        .iter()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name))
        .collect()
}

/// The one JSON value of a block.
fn block_json(name: &str, block: &Block) -> Value {
    serde_json::from_str(&block.body)
        .unwrap_or_else(|e| panic!("{name} line {}: not JSON: {e}", block.line))
}

fn b64url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Asserts that `real` has the documented keys (and JSON types), allowing
/// `extra_ok` on top.
fn assert_keys(name: &str, block: &Block, doc: &Value, real: &Value, extra_ok: &[&str]) {
    let errors = differences(Mode::Keys, extra_ok, &mut HashMap::new(), doc, real);
    assert!(
        errors.is_empty(),
        "{name} line {} documents {doc} but the backend answered {real}:\n{}",
        block.line,
        errors.join("\n")
    );
}

#[tokio::test]
async fn contract_and_quickstart_json_examples_match_the_backend() {
    const USER: &str = "user-1";
    let server = dev_backend().await;
    let agent = jwt::mint(
        &JwtConfig::new(DEV_SECRET, JwtAlgorithm::HS256).unwrap(),
        USER,
        "agent",
        None,
        now(),
    )
    .unwrap();
    let api = |path: &str| format!("{}/api/mission-control/{path}", server.url());
    let as_agent = [("x-agent-token", agent.as_str())];

    let quickstart = read_doc(QUICKSTART);
    let q = marked_blocks(QUICKSTART, &quickstart, QUICKSTART_MARKERS);
    let contract = read_doc(CONTRACT);
    let c = marked_blocks(CONTRACT, &contract, CONTRACT_MARKERS);

    // A token, decoded: exactly what jwt::mint produces for its `iat`.
    let block = &c["jwt"];
    let values: Vec<Value> = serde_json::Deserializer::from_str(&block.body)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{CONTRACT} line {}: {e}", block.line));
    let [header, claims] = &values[..] else {
        panic!("{CONTRACT} line {}: a header and claims", block.line);
    };
    let iat = claims["iat"].as_u64().expect("numeric iat");
    let cfg = JwtConfig::new(DEV_SECRET, JwtAlgorithm::HS256).unwrap();
    let token = jwt::mint(
        &cfg,
        claims["user_id"].as_str().unwrap(),
        "agent",
        None,
        iat,
    )
    .unwrap();
    let parts: Vec<Value> = token
        .split('.')
        .take(2)
        .map(|p| serde_json::from_slice(&b64url_decode(p)).unwrap())
        .collect();
    assert_eq!(
        &parts[0], header,
        "{CONTRACT} line {}: JWT header",
        block.line
    );
    assert_eq!(
        &parts[1], claims,
        "{CONTRACT} line {}: JWT claims",
        block.line
    );

    // The task-key recipe's printed key.
    let block = &c["task_key_recipe"];
    assert!(block.body.contains(r#"b"user-1""#) && block.body.contains(r#""Launch plan""#));
    let printed = block
        .body
        .lines()
        .find_map(|l| l.trim().strip_prefix("# "))
        .expect("the printed key");
    assert_eq!(printed, task_idempotency_key("user-1", "Launch plan"));

    // An error body: the quickstart shows the real one verbatim, the
    // contract with the optional `details` (which mc-lite leaves out).
    let (status, error) = call("POST", &api("tasks"), &as_agent, Some("{}")).await;
    assert_eq!(status, 400, "{error}");
    let block = &q["error_missing_title"];
    let doc = block_json(QUICKSTART, block);
    let errors = differences(Mode::Values, &[], &mut HashMap::new(), &doc, &error);
    assert!(
        errors.is_empty(),
        "{QUICKSTART} line {}: {errors:?}",
        block.line
    );
    let block = &c["error_missing_title"];
    let mut doc = block_json(CONTRACT, block);
    assert!(
        doc["details"].is_object(),
        "the contract example shows `details`"
    );
    doc.as_object_mut().unwrap().remove("details");
    let errors = differences(Mode::Values, &[], &mut HashMap::new(), &doc, &error);
    assert!(
        errors.is_empty(),
        "{CONTRACT} line {}: {errors:?}",
        block.line
    );

    // Capabilities: the same flags (their values are the minimal backend's).
    let (status, caps) = call("GET", &api("capabilities"), &as_agent, None).await;
    assert_eq!(status, 200);
    let block = &c["capabilities"];
    assert_keys(CONTRACT, block, &block_json(CONTRACT, block), &caps, &[]);

    // Create the documented task; its key is the one Wombat would send.
    let block = &c["create_task_request"];
    let request = block_json(CONTRACT, block);
    assert_eq!(
        request["idempotency_key"],
        task_idempotency_key(USER, request["title"].as_str().unwrap()),
        "{CONTRACT} line {}: the key Wombat sends for {USER}",
        block.line
    );
    let (status, task) = call("POST", &api("tasks"), &as_agent, Some(&request.to_string())).await;
    assert_eq!(status, 200, "{task}");
    let block = &c["create_task_response"];
    assert_keys(
        CONTRACT,
        block,
        &block_json(CONTRACT, block),
        &task,
        &["created_at"],
    );
    let task_id = task["id"].as_str().unwrap().to_owned();

    let (status, page) = call("GET", &api("tasks?limit=50"), &as_agent, None).await;
    assert_eq!(status, 200, "{page}");
    let block = &c["list_tasks"];
    assert_keys(
        CONTRACT,
        block,
        &block_json(CONTRACT, block),
        &page,
        &["created_at"],
    );

    // Message and document: the request is accepted, the answer has at
    // least the documented keys; mc-lite echoes the request's fields and
    // adds `created_at`.
    for (what, path) in [("message", "messages"), ("document", "documents")] {
        let block = &c[&format!("create_{what}_request")];
        let mut request = block_json(CONTRACT, block);
        request["task_id"] = json!(task_id);
        let (status, answer) =
            call("POST", &api(path), &as_agent, Some(&request.to_string())).await;
        assert_eq!(status, 200, "{CONTRACT} line {}: {answer}", block.line);
        // Extras must be fields of the endpoint's documented table.
        let mut extra = table_fields(&contract, block.line);
        assert!(
            extra.contains(&"task_id"),
            "{CONTRACT} line {}: no field table",
            block.line
        );
        extra.retain(|k| *k != "idempotency_key");
        extra.push("created_at");
        let block = &c[&format!("create_{what}_response")];
        assert_keys(
            CONTRACT,
            block,
            &block_json(CONTRACT, block),
            &answer,
            &extra,
        );
    }

    // Dispatch: queue the documented delivery, then read it back.
    let block = &c["undelivered"];
    let doc = block_json(CONTRACT, block);
    let delivery = &doc["deliveries"][0];
    enqueue_notification(
        &server.url(),
        DEV_INTERNAL,
        delivery["user_id"].as_str().unwrap(),
        delivery["session_key"].as_str().unwrap(),
        delivery["content"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let (status, undelivered) = call(
        "GET",
        &api("dispatch/undelivered?limit_users=25&limit_notifications=25"),
        &[("x-internal-token", DEV_INTERNAL)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{undelivered}");
    assert_keys(CONTRACT, block, &doc, &undelivered, &[]);
}

#[test]
fn documented_answers_are_compared_strictly() {
    let mut seen = HashMap::new();
    let doc = documented_json(
        r#"{"items":[{...,"id":"task_a31e...","title":"Launch plan",...}],"next_cursor":null}"#,
        "test",
    );
    let good = json!({"items": [{"id": "task_1", "title": "Launch plan", "status": "open"}], "next_cursor": null});
    assert!(differences(Mode::Values, &[], &mut seen, &doc, &good).is_empty());
    assert_eq!(seen["task_a31e..."], "task_1");
    // The same placeholder must keep standing for the same id.
    let other_id =
        json!({"items": [{"id": "task_2", "title": "Launch plan"}], "next_cursor": null});
    assert_eq!(
        differences(Mode::Values, &[], &mut seen, &doc, &other_id).len(),
        1
    );
    let wrong_kind =
        json!({"items": [{"id": "msg_1", "title": "Launch plan"}], "next_cursor": null});
    assert!(!differences(Mode::Values, &[], &mut HashMap::new(), &doc, &wrong_kind).is_empty());
    let renamed = json!({"items": [{"id": "task_1", "title": "Other"}], "next_cursor": null});
    assert!(!differences(Mode::Values, &[], &mut HashMap::new(), &doc, &renamed).is_empty());
    let extra_top = json!({"items": [{"id": "task_1", "title": "Launch plan"}], "next_cursor": null, "total": 1});
    assert!(!differences(Mode::Values, &[], &mut HashMap::new(), &doc, &extra_top).is_empty());
    // Keys mode ignores values but not keys or types.
    let doc = json!({"id": "x", "n": 1});
    assert!(
        differences(
            Mode::Keys,
            &[],
            &mut HashMap::new(),
            &doc,
            &json!({"id": "y", "n": 2})
        )
        .is_empty()
    );
    assert!(
        !differences(
            Mode::Keys,
            &[],
            &mut HashMap::new(),
            &doc,
            &json!({"id": "y", "n": "2"})
        )
        .is_empty()
    );
    assert!(
        !differences(
            Mode::Keys,
            &[],
            &mut HashMap::new(),
            &doc,
            &json!({"id": "y"})
        )
        .is_empty()
    );
    assert!(
        differences(
            Mode::Keys,
            &["z"],
            &mut HashMap::new(),
            &doc,
            &json!({"id": "y", "n": 2, "z": 0})
        )
        .is_empty()
    );
}

#[test]
fn the_shell_subset_quotes_and_expands_like_bash() {
    let mut shell = Shell::new("http://127.0.0.1:5".into());
    shell.assign("MC=http://127.0.0.1:9001/api/mission-control");
    shell.assign(r#"AUTH=(-H "X-Agent-Token: t" -H "Content-Type: application/json")"#);
    shell.assign("TASK=task_1");
    let words = shell.words(
        r#"curl -s -w ' %{http_code}\n' "${AUTH[@]}" $MC/messages -d "{\"task_id\":\"$TASK\"}"  # note"#,
    );
    assert_eq!(
        words,
        [
            "curl",
            "-s",
            "-w",
            r" %{http_code}\n",
            "-H",
            "X-Agent-Token: t",
            "-H",
            "Content-Type: application/json",
            "http://127.0.0.1:5/api/mission-control/messages",
            "-d",
            r#"{"task_id":"task_1"}"#,
        ]
    );
    let curl = parse_curl(&words[1..]);
    assert_eq!(curl.method, "POST");
    assert!(curl.prints_status);
    assert_eq!(curl.headers.len(), 2);
    let curl = parse_curl(&shell.words(r#"-X POST "$MC/x?a=1""#));
    assert_eq!(curl.method, "POST");
    assert_eq!(curl.url, "http://127.0.0.1:5/api/mission-control/x?a=1");
    assert_eq!(json_end(r#"{"a":"}"} 409"#), Some(9));
    assert_eq!(json_end(r#"{"a":[1,"#), None);
}

// ---------------------------------------------------------------------------
// The Python snippets, run with the real interpreter.

/// Runs `python3 -c <code> <args...>` with `env`; `None` when there is no
/// `python3` on this machine.
fn python(code: &str, args: &[&str], env: &[(&str, &str)]) -> Option<std::process::Output> {
    let mut cmd = std::process::Command::new("python3");
    // Isolated mode: no user site-packages, no PYTHON* variables, no current
    // directory on sys.path, so only the standard library is available, as
    // the docs promise.
    cmd.arg("-I").arg("-c").arg(code).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run python3: {e}"),
    }
}

/// The quickstart's `mint.py` and `tenant_of`, and the contract's task-key
/// recipe, run with `python3` exactly as printed: the minted token is
/// accepted by the reference backend and by our verifier, `tenant_of`
/// accepts our tokens and refuses forged, expired and non-agent ones, and
/// the recipe prints the key Wombat computes. Skipped (and says so) on a
/// machine without `python3`: the docs promise only the standard library.
#[tokio::test]
async fn python_snippets_run_as_documented() {
    let quick = blocks(&read_doc(QUICKSTART));
    let python_blocks: Vec<&Block> = quick.iter().filter(|b| b.lang == "python").collect();
    let mint = python_blocks
        .iter()
        .find(|b| b.body.contains("mint.py"))
        .expect("the quickstart's mint.py");
    let verify = python_blocks
        .iter()
        .find(|b| b.body.contains("def tenant_of"))
        .expect("the quickstart's tenant_of");
    assert_eq!(python_blocks.len(), 2, "every Python block is run here");

    let Some(probe) = python("import sys; print(sys.version_info[0])", &[], &[]) else {
        eprintln!("python_snippets_run_as_documented: SKIPPED, python3 is not installed");
        return;
    };
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "3");

    // mint.py: a token for user-1 that the backend and our verifier accept.
    let out =
        python(&mint.body, &["user-1"], &[("AGENT_JWT_SECRET", DEV_SECRET)]).expect("python3");
    assert!(
        out.status.success(),
        "mint.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let cfg = JwtConfig::new(DEV_SECRET, JwtAlgorithm::HS256).unwrap();
    let claims = jwt::verify(&token, &cfg, now()).expect("mint.py's token verifies");
    assert_eq!(
        (claims.user_id.as_str(), claims.agent_role.as_str()),
        ("user-1", "agent")
    );
    let mc = dev_backend().await;
    let (status, body) = call(
        "GET",
        &format!("{}/api/mission-control/tasks", mc.url()),
        &[("X-Agent-Token", &token)],
        None,
    )
    .await;
    assert_eq!(status, 200, "the backend accepts mint.py's token: {body}");

    // tenant_of: accepts a token Wombat minted, refuses the rest.
    let check = format!(
        "{}\nimport sys\nprint(tenant_of(sys.argv[1], sys.argv[2]))\n",
        verify.body
    );
    let run = |token: &str, secret: &str| python(&check, &[token, secret], &[]).expect("python3");
    let good = jwt::mint(&cfg, "tenant-7", "agent", None, now()).unwrap();
    let out = run(&good, DEV_SECRET);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tenant-7");
    let expired = jwt::mint(&cfg, "tenant-7", "agent", None, now() - 3 * 3600).unwrap();
    let mut forged_claims = jwt::decode_unverified(&good).unwrap();
    forged_claims.user_id = "someone-else".into();
    let other = JwtConfig::new("not-the-secret", JwtAlgorithm::HS256).unwrap();
    let forged = jwt::mint_claims(&other, &forged_claims).unwrap();
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_payload = forged.split('.').nth(1).unwrap();
    let swapped = format!("{head}.{forged_payload}.{sig}");
    let junk_after = format!("{good}!!!!");
    let non_ascii = format!("{head}.{}.é", rest.split_once('.').unwrap().0);
    for (what, token, secret, why) in [
        ("wrong secret", good.as_str(), "other", "bad signature"),
        ("expired", expired.as_str(), DEV_SECRET, "expired"),
        ("other signer", forged.as_str(), DEV_SECRET, "bad signature"),
        (
            "swapped payload",
            swapped.as_str(),
            DEV_SECRET,
            "bad signature",
        ),
        ("not a JWT", "abc", DEV_SECRET, "malformed token"),
        ("three junk parts", "a.b.c", DEV_SECRET, "malformed token"),
        (
            "junk after the signature",
            &junk_after,
            DEV_SECRET,
            "malformed token",
        ),
        (
            "non-ASCII signature",
            &non_ascii,
            DEV_SECRET,
            "malformed token",
        ),
    ] {
        let out = run(token, secret);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains(&format!("PermissionError: {why}")),
            "{what}: {stderr}"
        );
    }

    // The task-key recipe prints the key Wombat computes.
    let contract = blocks(&read_doc(CONTRACT));
    let recipe = contract
        .iter()
        .find(|b| b.marker.as_deref() == Some("task_key_recipe"))
        .expect("the task-key recipe");
    let out = python(&format!("{}\nprint(key)\n", recipe.body), &[], &[]).expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        task_idempotency_key("user-1", "Launch plan")
    );
    assert_eq!(
        contract.iter().filter(|b| b.lang == "python").count(),
        1,
        "every Python block of the contract is run here"
    );
}

/// The contract's two credential headers, as printed, are what the
/// reference backend requires: with the header a request succeeds, without
/// it it is a 401.
#[tokio::test]
async fn contract_credential_headers_are_the_ones_required() {
    let contract = blocks(&read_doc(CONTRACT));
    let headers: Vec<(&str, &str)> = contract
        .iter()
        .filter(|b| b.lang.is_empty() && b.body.trim().lines().count() == 1)
        .filter_map(|b| b.body.trim().split_once(": <"))
        .collect();
    assert_eq!(
        headers,
        [
            ("X-Agent-Token", "JWT>"),
            ("X-Internal-Token", "INTERNAL_TOKEN>")
        ],
        "the contract's header blocks"
    );
    let mc = dev_backend().await;
    let cfg = JwtConfig::new(DEV_SECRET, JwtAlgorithm::HS256).unwrap();
    let token = jwt::mint(&cfg, "user-1", "agent", None, now()).unwrap();
    let cases = [
        ("api/mission-control/tasks", headers[0].0, token.as_str()),
        (
            "api/mission-control/dispatch/undelivered",
            headers[1].0,
            DEV_INTERNAL,
        ),
    ];
    for (path, header, value) in cases {
        let url = format!("{}/{path}", mc.url());
        let (status, body) = call("GET", &url, &[(header, value)], None).await;
        assert_eq!(status, 200, "{path} with {header}: {body}");
        let (status, body) = call("GET", &url, &[], None).await;
        assert_eq!(status, 401, "{path} without {header}: {body}");
    }
}
