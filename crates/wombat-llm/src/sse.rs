//! An incremental Server-Sent Events decoder shared by every adapter.
//!
//! It follows the WHATWG event-stream grammar: lines end in `\n`, `\r\n` or a
//! lone `\r`; lines starting with `:` are comments; `data:` lines of one
//! event are joined with `\n`; a blank line dispatches the event. Bytes may
//! arrive split anywhere (mid-line, mid-`\r\n`, mid-UTF-8 character): a
//! partial line is kept until its end arrives, and only whole lines are
//! decoded as UTF-8 (invalid sequences become U+FFFD). `id:` and `retry:`
//! fields are ignored; reconnection is not this decoder's business.
//!
//! It knows nothing about HTTP or any provider's payloads.
//!
//! Memory is bounded: an event (its data so far plus the unterminated line)
//! larger than [`MAX_EVENT_BYTES`] (or the limit given to
//! [`SseDecoder::with_limit`]) makes [`SseDecoder::feed`] fail with
//! [`EventTooLarge`] instead of buffering an endless line.

use std::mem;

/// Default largest event: 1 MiB. Provider events are a few hundred bytes
/// (a delta, a usage object); the largest real ones carry a whole tool
/// call's arguments, far below this.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// An event or line exceeded the decoder's limit. The decoder must not be
/// fed further: the stream is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event exceeds the {limit}-byte limit")]
pub struct EventTooLarge {
    /// The limit that was exceeded, in bytes.
    pub limit: usize,
}

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, empty when the event had none (the SSE default
    /// type `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental decoder: feed it byte chunks as they arrive, collect events.
#[derive(Debug)]
pub struct SseDecoder {
    /// Largest event (data plus pending line), in bytes.
    limit: usize,
    /// The unterminated tail of the previous chunk.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`; a `\n` starting the next one belongs
    /// to the same line break.
    skip_lf: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    /// A decoder at the start of a stream, with the [`MAX_EVENT_BYTES`] limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose events (data plus the line being read) may not exceed
    /// `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            line: Vec::new(),
            skip_lf: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
        }
    }

    /// Decodes `chunk`, appending every event it completes to `out`. Fails
    /// once the current event or line exceeds the limit; the events
    /// completed before it are in `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let terminator = rest[i];
            if self.line.len() + i + self.data.len() > self.limit {
                return Err(EventTooLarge { limit: self.limit });
            }
            if self.line.is_empty() {
                self.process_line(&rest[..i], out);
            } else {
                // Reuse the carry buffer's allocation across lines.
                let mut line = mem::take(&mut self.line);
                line.extend_from_slice(&rest[..i]);
                self.process_line(&line, out);
                line.clear();
                self.line = line;
            }
            rest = &rest[i + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        if self.line.len() + rest.len() + self.data.len() > self.limit {
            return Err(EventTooLarge { limit: self.limit });
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// Ends the stream. An event whose lines were all complete but that was
    /// not yet followed by a blank line is dispatched (some servers close
    /// right after the last `data:` line); an unterminated last line is
    /// dropped, since it may have been cut mid-way.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        self.line.clear();
        self.skip_lf = false;
        self.dispatch(out);
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: mem::take(&mut self.event),
                data: mem::take(&mut self.data),
            });
        } else {
            self.event.clear();
        }
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out).expect("within the limit");
        }
        d.finish(&mut out);
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn basic_fields_comments_and_multiline_data() {
        let got = decode_all(&[
            b": keepalive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line1\ndata:line2\nid: 7\nretry: 10\n\n",
        ]);
        assert_eq!(
            got,
            vec![ev("message_start", "{\"a\":1}"), ev("", "line1\nline2")]
        );
    }

    #[test]
    fn crlf_lone_cr_and_split_crlf() {
        assert_eq!(
            decode_all(&[b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]),
            vec![ev("", "a"), ev("", "b"), ev("", "c")]
        );
        // `\r` at the end of one chunk and `\n` at the start of the next is
        // one line break, not two (which would dispatch early).
        assert_eq!(
            decode_all(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]),
            vec![ev("", "a\nb")]
        );
    }

    #[test]
    fn split_inside_utf8_and_field_names() {
        let text = "data: 你好 🦀\n\n".as_bytes();
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(decode_all(&chunks), vec![ev("", "你好 🦀")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_resets_type() {
        assert_eq!(
            decode_all(&[b"event: ping\n\ndata: x\n\n"]),
            vec![ev("", "x")]
        );
    }

    #[test]
    fn finish_dispatches_complete_lines_but_drops_a_cut_line() {
        assert_eq!(decode_all(&[b"data: [DONE]\n"]), vec![ev("", "[DONE]")]);
        assert_eq!(decode_all(&[b"data: {\"cho"]), vec![]);
        assert_eq!(decode_all(&[b"data: a\n\ndata: {\"cho"]), vec![ev("", "a")]);
    }

    #[test]
    fn endless_lines_and_events_hit_the_limit() {
        // One line without an end, fed in pieces.
        let mut d = SseDecoder::with_limit(64);
        let mut out = Vec::new();
        d.feed(b"data: ", &mut out).expect("small");
        let mut failed = None;
        for i in 0..100 {
            if let Err(e) = d.feed(&[b'x'; 8], &mut out) {
                failed = Some((i, e));
                break;
            }
        }
        let (i, e) = failed.expect("the limit stops the line");
        assert!(i < 10, "{i}");
        assert_eq!(e, EventTooLarge { limit: 64 });
        // Many short data lines that never dispatch: the event's data counts.
        let mut d = SseDecoder::with_limit(64);
        let err = d.feed(&b"data: abcdefgh\n".repeat(20), &mut out);
        assert_eq!(err, Err(EventTooLarge { limit: 64 }));
        // Comment lines count as lines too.
        let mut d = SseDecoder::with_limit(64);
        assert!(d.feed(&[b':'; 100], &mut out).is_err());
        // Events within the limit, however many, are fine; each starts afresh.
        let mut d = SseDecoder::with_limit(64);
        let mut out = Vec::new();
        d.feed(&b"data: abcdefgh\n\n".repeat(100), &mut out)
            .expect("every event is small");
        assert_eq!(out.len(), 100);
        assert_eq!(SseDecoder::new().limit, MAX_EVENT_BYTES);
    }

    #[test]
    fn field_without_colon_and_empty_data() {
        assert_eq!(
            decode_all(&[b"data\n\ndata:\ndata:\n\n"]),
            vec![ev("", ""), ev("", "\n")]
        );
    }

    /// Serialises events with random line endings, comments and field
    /// spellings, splits the bytes at random points and checks the decoder
    /// sees exactly the events, for many seeds.
    #[test]
    fn randomized_splits_property() {
        const ALPHABET: &[&str] = &["a", "Z", " ", "{", "\"", "é", "你", "🦀", ":", "data"];
        for seed in 0..3000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..rng.usize(1..6) {
                let eol = ["\n", "\r\n", "\r"][rng.usize(0..3)];
                if rng.bool() {
                    bytes.extend_from_slice(format!(": comment {}{eol}", rng.u32(..)).as_bytes());
                }
                let event = if rng.bool() {
                    "content_block_delta"
                } else {
                    ""
                };
                if !event.is_empty() {
                    bytes.extend_from_slice(format!("event: {event}{eol}").as_bytes());
                }
                let lines: Vec<String> = (0..rng.usize(1..4))
                    .map(|_| {
                        (0..rng.usize(0..8))
                            .map(|_| ALPHABET[rng.usize(0..ALPHABET.len())])
                            .collect()
                    })
                    .collect();
                for line in &lines {
                    // `data:value` and `data: value` mean the same unless the
                    // value itself starts with a space.
                    let sep = if line.starts_with(' ') || rng.bool() {
                        ": "
                    } else {
                        ":"
                    };
                    bytes.extend_from_slice(format!("data{sep}{line}{eol}").as_bytes());
                }
                bytes.extend_from_slice(eol.as_bytes());
                expected.push(ev(event, &lines.join("\n")));
            }
            let mut chunks = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = rng.usize(0..=rest.len().min(4));
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(decode_all(&chunks), expected, "seed {seed}");
        }
    }
}
