//! Server-sent events, read incrementally: bytes as they arrive (a line, a multi-byte
//! character or a `\r\n` may be split across reads) → the `data` of each complete event.
//!
//! What OpenAI-compatible servers send is a subset of the format: `data:` lines, events
//! ended by a blank line, `:` comments as keep-alives. Lines end with `\n` or `\r\n` (a
//! lone `\r` line ending is not supported). Several `data:` lines of one event are joined
//! with `\n`; other fields (`event:`, `id:`, `retry:`) are ignored. An event the stream
//! ends in the middle of is dropped, as the format says.

/// Splits a byte stream into the data of its events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    /// `data` lines of the event being read.
    data: Vec<String>,
    /// Whether the event being read has any `data` field (an empty one counts).
    has_data: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the data of every event they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let mut line = &self.pending[start..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start = end + 1;
        }
        self.pending.drain(..start);
        events
    }

    /// One complete line; `Some` when it ends an event that had data.
    fn line(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            let event = self.has_data.then(|| self.data.join("\n"));
            self.data.clear();
            self.has_data = false;
            return event;
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            self.data.push(value.to_string());
            self.has_data = true;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_events_in_one_read() {
        let mut d = SseDecoder::new();
        let got = d.push(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(got, vec!["{\"a\":1}".to_string(), "[DONE]".to_string()]);
    }

    #[test]
    fn events_split_across_reads_at_every_byte() {
        let text = "data: {\"x\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        for b in text.as_bytes() {
            got.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(
            got,
            vec![
                "{\"x\":\"h\u{e9}llo \u{1f600}\"}".to_string(),
                "[DONE]".to_string()
            ]
        );
    }

    #[test]
    fn split_inside_crlf_and_inside_the_data_prefix() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"da").is_empty());
        assert!(d.push(b"ta: one\r").is_empty());
        assert!(d.push(b"\n\r").is_empty());
        assert_eq!(d.push(b"\n"), vec!["one".to_string()]);
    }

    #[test]
    fn multi_line_data_comments_and_other_fields() {
        let mut d = SseDecoder::new();
        let got = d.push(b": ping\nevent: x\nid: 3\ndata: a\ndata:b\n\n\n\ndata\n\n");
        assert_eq!(got, vec!["a\nb".to_string(), String::new()]);
    }

    #[test]
    fn an_unfinished_event_is_not_returned() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"data: [DONE]\n").is_empty());
        assert!(d.push(b"data: more").is_empty());
    }
}
