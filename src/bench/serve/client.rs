//! The HTTP side: one reqwest client (plain http, no TLS in this build), `GET /v1/models`,
//! and one streamed chat request measured from send to `[DONE]`.

use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use super::measure::{parse_chunk, Timeline};
use super::sse::SseDecoder;
use super::stats::Outcome;
use super::BenchServeError;

/// Most bytes of an error body kept for the report.
const ERROR_BODY_CHARS: usize = 300;

/// Requests to one server.
pub struct Client {
    http: reqwest::Client,
    /// The server's root, without a trailing `/` (nor `/v1`).
    base: String,
    api_key: Option<String>,
    timeout: Duration,
}

/// The settings of every chat request of a run.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub model: String,
    pub max_tokens: Option<u32>,
    /// Sent when given (0 = greedy); else the server's default.
    pub temperature: Option<f32>,
}

/// The server root of `url`: http only; a trailing `/` or `/v1` is dropped.
pub fn base_url(url: &str) -> Result<String, BenchServeError> {
    let parsed = Url::parse(url).map_err(|e| BenchServeError::Url {
        url: url.into(),
        reason: e.to_string(),
    })?;
    if parsed.scheme() != "http" {
        return Err(BenchServeError::Url {
            url: url.into(),
            reason: "only http:// is supported (this build has no TLS)".into(),
        });
    }
    let trimmed = url.trim_end_matches('/');
    Ok(trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string())
}

/// `e` and its sources, joined with ": " (reqwest's own message names no cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn failed(kind: impl Into<String>, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        kind: kind.into(),
        message: message.into(),
    }
}

fn transport_failure(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "read"
    };
    failed(kind, error_chain(e))
}

impl Client {
    pub fn new(
        url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, BenchServeError> {
        let base = base_url(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Keep a connection per in-flight request; no proxies for a local benchmark.
            .pool_max_idle_per_host(1024)
            .no_proxy()
            .build()
            .map_err(|e| BenchServeError::Client(error_chain(&e)))?;
        Ok(Self {
            http,
            base,
            api_key: api_key.filter(|k| !k.is_empty()),
            timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// The model ids of `GET /v1/models`, in the server's order. A server that cannot be
    /// reached is [`BenchServeError::Unreachable`].
    pub async fn models(&self) -> Result<Vec<String>, BenchServeError> {
        let url = format!("{}/v1/models", self.base);
        let response = self
            .authorized(self.http.get(&url))
            .timeout(self.timeout.min(Duration::from_secs(30)))
            .send()
            .await
            .map_err(|e| BenchServeError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status != StatusCode::OK {
            let hint = if status == StatusCode::UNAUTHORIZED {
                " (give the key with --api-key or TPO_API_KEY)"
            } else {
                ""
            };
            return Err(BenchServeError::Models {
                url,
                reason: format!("HTTP {status}{hint}: {}", clip(&text)),
            });
        }
        let body: Value = serde_json::from_str(&text).map_err(|e| BenchServeError::Models {
            url: url.clone(),
            reason: format!("not JSON: {e}"),
        })?;
        let ids: Vec<String> = body
            .get("data")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(ids)
    }

    /// Sends one streamed chat request with `prompt` and measures it. Never fails: what went
    /// wrong is the outcome.
    pub async fn chat(&self, settings: &ChatSettings, prompt: &str) -> Outcome {
        let mut body = json!({
            "model": settings.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let (Some(n), Some(obj)) = (settings.max_tokens, body.as_object_mut()) {
            obj.insert("max_tokens".into(), json!(n));
        }
        if let (Some(t), Some(obj)) = (settings.temperature, body.as_object_mut()) {
            obj.insert("temperature".into(), json!(t));
        }
        let request = self
            .authorized(self.http.post(format!("{}/v1/chat/completions", self.base)))
            .timeout(self.timeout)
            .json(&body);
        let started = Instant::now();
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return transport_failure(&e),
        };
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return failed(status.as_u16().to_string(), clip(&error_message(&text)));
        }
        let mut decoder = SseDecoder::new();
        let mut timeline = Timeline::new();
        loop {
            let bytes = match response.chunk().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => return transport_failure(&e),
            };
            let at = started.elapsed().as_secs_f64();
            for data in decoder.push(&bytes) {
                let chunk = match parse_chunk(&data) {
                    Ok(c) => c,
                    Err(e) => return failed("bad_stream", e),
                };
                if let Err(e) = timeline.record(&chunk, at) {
                    return failed("stream_error", clip(&e));
                }
            }
            if timeline.done() {
                break;
            }
        }
        match timeline.finish(started.elapsed().as_secs_f64()) {
            Ok(sample) => Outcome::Ok(sample),
            Err(e) => failed("bad_stream", e),
        }
    }
}

/// The `error.message` of an OpenAI error body, else the body.
fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.to_string())
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(ERROR_BODY_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = |u: &str| base_url(u).map_err(|e| e.to_string());
        assert_eq!(b("http://127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(
            b("http://127.0.0.1:8000/").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(
            b("http://localhost:8000/v1/").unwrap(),
            "http://localhost:8000"
        );
        assert!(b("https://example.com")
            .unwrap_err()
            .contains("only http://"));
        assert!(b("127.0.0.1:8000").is_err());
    }

    #[test]
    fn error_bodies() {
        let body = r#"{"error":{"message":"server busy","type":"rate_limit"}}"#;
        assert_eq!(error_message(body), "server busy");
        assert_eq!(error_message("plain text"), "plain text");
        assert_eq!(clip(&"x".repeat(400)).chars().count(), ERROR_BODY_CHARS + 1);
    }
}
