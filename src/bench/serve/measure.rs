//! What one streamed response says, chunk by chunk, and what one request measured.
//!
//! A chunk is the JSON of one `data:` event of `/v1/chat/completions` with `stream: true`.
//! Content chunks carry `choices[].delta.content`; the usage chunk (asked for with
//! `stream_options.include_usage`) carries `usage.completion_tokens`; a search's progress
//! chunks carry `choices: []` and a `tpo` object; an error event carries `error`.
//!
//! Times are seconds since the request was sent. TTFT is the first non-empty content (for
//! a search: the first of its answer, after all progress chunks). ITL are the gaps between
//! consecutive non-empty content chunks. TPOT is (E2E − TTFT) / (tokens − 1), only when the
//! content came in more than one chunk (a search sends its answer in one: no per-token
//! timing exists there). Tokens are the usage chunk's `completion_tokens` (for a search,
//! every token it generated), else the number of content chunks.

use serde_json::Value;

/// What one event's data says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chunk {
    /// `[DONE]`.
    pub done: bool,
    /// Non-empty `delta.content` pieces (one per choice that has one).
    pub content_pieces: usize,
    /// `usage.completion_tokens`, where the chunk has it.
    pub completion_tokens: Option<u64>,
    /// A search's progress chunk (`choices: []` with a `tpo` object).
    pub progress: bool,
    /// The message of an `error` object.
    pub error: Option<String>,
}

/// Reads one event's data; `Err` when it is neither `[DONE]` nor a JSON object.
pub fn parse_chunk(data: &str) -> Result<Chunk, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Chunk {
            done: true,
            ..Chunk::default()
        });
    }
    let value: Value = serde_json::from_str(data).map_err(|e| format!("bad chunk JSON: {e}"))?;
    let Value::Object(obj) = &value else {
        return Err(format!("chunk is not a JSON object: {}", short(data)));
    };
    let mut chunk = Chunk::default();
    if let Some(error) = obj.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| error.to_string());
        chunk.error = Some(message);
        return Ok(chunk);
    }
    let choices = obj.get("choices").and_then(Value::as_array);
    chunk.content_pieces = choices
        .map(|cs| {
            cs.iter()
                .filter(|c| {
                    let piece = c
                        .get("delta")
                        .and_then(|d| d.get("content"))
                        .or_else(|| c.get("text"));
                    piece.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
                })
                .count()
        })
        .unwrap_or(0);
    chunk.completion_tokens = obj
        .get("usage")
        .and_then(|u| u.get("completion_tokens"))
        .and_then(Value::as_u64);
    chunk.progress = choices.is_some_and(Vec::is_empty) && obj.contains_key("tpo");
    Ok(chunk)
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

/// A request that finished with `[DONE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ttft: f64,
    pub e2e: f64,
    /// Gaps between consecutive content chunks.
    pub itl: Vec<f64>,
    pub tpot: Option<f64>,
    pub tokens: u64,
    /// Whether `tokens` came from the usage chunk (else: content chunks counted).
    pub tokens_from_usage: bool,
    pub progress_chunks: usize,
}

/// Collects one stream's chunks as they arrive.
#[derive(Debug, Default)]
pub struct Timeline {
    first_content: Option<f64>,
    last_content: Option<f64>,
    itl: Vec<f64>,
    content_chunks: u64,
    completion_tokens: Option<u64>,
    progress_chunks: usize,
    done: bool,
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// One chunk, `at` seconds after the request was sent; `Err` is the stream's error
    /// event.
    pub fn record(&mut self, chunk: &Chunk, at: f64) -> Result<(), String> {
        if let Some(e) = &chunk.error {
            return Err(e.clone());
        }
        if chunk.done {
            self.done = true;
        }
        if chunk.progress {
            self.progress_chunks += 1;
        }
        if let Some(t) = chunk.completion_tokens {
            self.completion_tokens = Some(t);
        }
        if chunk.content_pieces > 0 {
            if self.first_content.is_none() {
                self.first_content = Some(at);
            }
            if let Some(prev) = self.last_content {
                self.itl.push(at - prev);
            }
            self.last_content = Some(at);
            self.content_chunks += chunk.content_pieces as u64;
        }
        Ok(())
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// The measurement, once the stream has ended at `e2e`; `Err` says why it is not one
    /// (no `[DONE]`, or no content at all).
    pub fn finish(self, e2e: f64) -> Result<Sample, String> {
        if !self.done {
            return Err("the stream ended without [DONE]".into());
        }
        let Some(ttft) = self.first_content else {
            return Err("the stream had no content".into());
        };
        let (tokens, tokens_from_usage) = match self.completion_tokens {
            Some(t) => (t, true),
            None => (self.content_chunks, false),
        };
        let tpot = (self.content_chunks > 1 && tokens > 1)
            .then(|| (e2e - ttft).max(0.0) / (tokens - 1) as f64);
        Ok(Sample {
            ttft,
            e2e,
            itl: self.itl,
            tpot,
            tokens,
            tokens_from_usage,
            progress_chunks: self.progress_chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(s: &str) -> String {
        serde_json::json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": s}, "finish_reason": null}]})
        .to_string()
    }

    #[test]
    fn chunks_of_a_plain_stream() {
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(parse_chunk(role).map(|c| c.content_pieces), Ok(0));
        assert_eq!(parse_chunk(&content("Hi")).map(|c| c.content_pieces), Ok(1));
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":7}}"#;
        let u = parse_chunk(usage).unwrap();
        assert_eq!((u.completion_tokens, u.progress), (Some(7), false));
        assert!(parse_chunk(" [DONE] ").unwrap().done);
        let e = parse_chunk(r#"{"error":{"message":"boom","type":"x"}}"#).unwrap();
        assert_eq!(e.error.as_deref(), Some("boom"));
        assert!(parse_chunk("{not json").is_err());
        assert!(parse_chunk("[1]").is_err());
    }

    #[test]
    fn a_search_progress_chunk() {
        let p = r#"{"choices":[],"tpo":{"step":1,"depth":2,"best_reward":0.5}}"#;
        assert!(parse_chunk(p).unwrap().progress);
    }

    #[test]
    fn timings_of_a_plain_stream() {
        let mut t = Timeline::new();
        let role = parse_chunk(r#"{"choices":[{"delta":{"content":""}}]}"#).unwrap();
        t.record(&role, 0.05).unwrap();
        for (i, at) in [0.1, 0.15, 0.25, 0.3].iter().enumerate() {
            t.record(&parse_chunk(&content(&i.to_string())).unwrap(), *at)
                .unwrap();
        }
        let s = t.finish(0.4);
        assert_eq!(s, Err("the stream ended without [DONE]".into()));

        let mut t = Timeline::new();
        for at in [0.1, 0.15, 0.25, 0.3] {
            t.record(&parse_chunk(&content("x")).unwrap(), at).unwrap();
        }
        t.record(&parse_chunk("[DONE]").unwrap(), 0.4).unwrap();
        let s = t.finish(0.4).unwrap();
        assert_eq!(s.ttft, 0.1);
        assert_eq!((s.tokens, s.tokens_from_usage), (4, false));
        assert_eq!(s.itl.len(), 3);
        assert!((s.itl[1] - 0.1).abs() < 1e-12);
        assert!((s.tpot.unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn usage_counts_tokens_and_a_one_chunk_answer_has_no_tpot() {
        let mut t = Timeline::new();
        let p = parse_chunk(r#"{"choices":[],"tpo":{"step":1}}"#).unwrap();
        t.record(&p, 1.0).unwrap();
        t.record(&parse_chunk(&content("the answer")).unwrap(), 2.0)
            .unwrap();
        let u = parse_chunk(r#"{"choices":[],"usage":{"completion_tokens":300}}"#).unwrap();
        t.record(&u, 2.0).unwrap();
        t.record(&parse_chunk("[DONE]").unwrap(), 2.0).unwrap();
        let s = t.finish(2.0).unwrap();
        assert_eq!((s.ttft, s.tokens, s.tokens_from_usage), (2.0, 300, true));
        assert_eq!((s.tpot, s.progress_chunks, s.itl.len()), (None, 1, 0));
    }

    #[test]
    fn an_error_event_fails_the_request() {
        let mut t = Timeline::new();
        let e = parse_chunk(r#"{"error":{"message":"engine stopped"}}"#).unwrap();
        assert_eq!(t.record(&e, 0.1), Err("engine stopped".into()));
    }
}
