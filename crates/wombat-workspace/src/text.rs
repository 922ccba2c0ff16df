//! Character counting and head+tail truncation of workspace files.
//!
//! Sizes are Unicode scalar values (`char`s), never bytes, and a cut never
//! splits a character. This module does no I/O.

/// Share of the limit kept from the start of a truncated file, in percent.
pub const HEAD_PERCENT: usize = 70;
/// Share of the limit kept from the end of a truncated file, in percent.
pub const TAIL_PERCENT: usize = 20;

/// Number of Unicode scalar values in `text`.
pub fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Byte index of the `n`th character of `text` (or `text.len()` past the end).
fn byte_index(text: &str, n: usize) -> usize {
    text.char_indices().nth(n).map_or(text.len(), |(i, _)| i)
}

/// The marker line put between the kept head and tail of a truncated file.
fn marker(name: &str, kept: usize, original: usize) -> String {
    format!("[... {name} truncated: kept {kept} of {original} characters ...]")
}

/// Cuts `text` (named `name` in the marker) down to at most `max` characters.
///
/// When `text` is longer than `max`, the result keeps the first
/// [`HEAD_PERCENT`]% of `max` characters and the last [`TAIL_PERCENT`]%,
/// joined by one marker line `[... NAME truncated: kept K of N characters ...]`
/// on its own line; the remaining ~10% of the limit pays for the marker, so the
/// result never exceeds `max` characters. For limits so small that the marker
/// does not fit in that slack, head and tail shrink in the same 7:2 ratio; if
/// the marker alone does not fit, the text is simply cut to its first `max`
/// characters. Returns `None` when no cut is needed.
pub fn truncate_head_tail(name: &str, text: &str, max: usize) -> Option<String> {
    let original = char_len(text);
    if original <= max {
        return None;
    }
    let mut head = max * HEAD_PERCENT / 100;
    let mut tail = max * TAIL_PERCENT / 100;
    let mut line = marker(name, head + tail, original);
    // Two newlines surround the marker line.
    let overhead = char_len(&line) + 2;
    if head + tail + overhead > max {
        let Some(available) = max.checked_sub(overhead).filter(|a| *a > 0) else {
            return Some(text[..byte_index(text, max)].to_owned());
        };
        head = available * HEAD_PERCENT / (HEAD_PERCENT + TAIL_PERCENT);
        tail = available - head;
        line = marker(name, head + tail, original);
    }
    let head_end = byte_index(text, head);
    let tail_start = byte_index(text, original - tail);
    let mut out = String::with_capacity(head_end + line.len() + (text.len() - tail_start) + 2);
    out.push_str(&text[..head_end]);
    out.push('\n');
    out.push_str(&line);
    out.push('\n');
    out.push_str(&text[tail_start..]);
    Some(out)
}

/// `ceil(chars / 4)`, the 0.1.0 token estimate.
pub fn estimate_tokens(chars: usize) -> usize {
    chars.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, max: usize) -> String {
        let out = truncate_head_tail("F.md", text, max).expect("needs a cut");
        assert!(char_len(&out) <= max, "{} > {max}", char_len(&out));
        out
    }

    #[test]
    fn fits_exactly_is_untouched() {
        assert_eq!(truncate_head_tail("F.md", "ab🦘c", 4), None);
        assert_eq!(truncate_head_tail("F.md", "", 0), None);
    }

    #[test]
    fn one_over_is_cut_with_head_tail_and_marker() {
        let text: String = std::iter::repeat_n('界', 1001).collect();
        let out = check(&text, 1000);
        let (head, rest) = out.split_once('\n').expect("marker line");
        let (marker, tail) = rest.split_once('\n').expect("marker line");
        assert_eq!(char_len(head), 700);
        assert_eq!(char_len(tail), 200);
        assert_eq!(
            marker,
            "[... F.md truncated: kept 900 of 1001 characters ...]"
        );
    }

    #[test]
    fn never_splits_multibyte_characters() {
        let text = "🦘é界".repeat(400);
        let out = check(&text, 1000);
        assert!(out.starts_with("🦘é界🦘"));
        assert!(out.ends_with("🦘é界"));
    }

    #[test]
    fn small_limits_shrink_head_and_tail_and_stay_within_max() {
        let text = "x".repeat(500);
        let out = check(&text, 100);
        assert!(out.contains("truncated"));
        assert!(out.starts_with('x') && out.ends_with('x'));
        assert_eq!(check(&text, 10), "x".repeat(10));
    }

    #[test]
    fn token_estimate_rounds_up() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
        assert_eq!(estimate_tokens(9), 3);
    }
}
