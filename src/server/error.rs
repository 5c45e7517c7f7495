//! The one error type of the HTTP layer and its OpenAI shape:
//! `{"error": {"message", "type", "param", "code"}}` with the matching status, so the
//! official clients raise their typed exceptions (400 → `BadRequestError`, 401 →
//! `AuthenticationError`, 404 → `NotFoundError`, 429 → `RateLimitError`, …).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::engine::EngineError;
use crate::reward::ServiceError;
use crate::search::SearchError;

/// A failed request: what the client is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault (`temperature`, `messages[1].content`), when one is.
    pub param: Option<String>,
    /// A stable machine-readable code (`model_not_found`, `overloaded`, …).
    pub code: Option<&'static str>,
}

/// The body of an error response (OpenAI's shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 400: the request is invalid; `param` names the field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 400 about the body as a whole (not JSON, not an object, …).
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized() -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API key: send `Authorization: Bearer <key>`",
            )
        }
    }

    pub fn model_not_found(model: &str, available: &[String]) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the model {model:?} does not exist; this server has: {}",
                    available.join(", ")
                ),
            )
        }
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no route for {path}"))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self {
            code: Some("body_too_large"),
            ..Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the limit of {limit} bytes"),
            )
        }
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON (Content-Type: application/json)",
        )
    }

    pub fn overloaded(why: impl Into<String>) -> Self {
        Self {
            code: Some("overloaded"),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, why)
        }
    }

    pub fn timeout(seconds: f64) -> Self {
        Self {
            code: Some("timeout"),
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request did not finish within the server's timeout of {seconds} s"),
            )
        }
    }

    pub fn draining() -> Self {
        Self {
            code: Some("shutting_down"),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down and takes no new requests",
            )
        }
    }

    pub fn loading() -> Self {
        Self {
            code: Some("loading"),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is loading its models; retry when /health answers 200",
            )
        }
    }

    /// 503 for a connection beyond `--max-connections` (written before its request is read).
    pub fn too_many_connections() -> Self {
        Self {
            code: Some("too_many_connections"),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many open connections; retry later",
            )
        }
    }

    /// 503: a worker thread of the server died (`what`: "the engine's scheduler thread");
    /// the server cannot serve until it is restarted, and `/health` says so.
    pub fn dead(what: &str, reason: &str) -> Self {
        Self {
            code: Some("worker_dead"),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what} died ({reason}); this server must be restarted"),
            )
        }
    }

    /// 408: the request body did not arrive within the body deadline.
    pub fn body_timeout(seconds: f64) -> Self {
        Self {
            code: Some("body_timeout"),
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {seconds} s"),
            )
        }
    }

    /// The error event ending a stream whose client read too slowly: more than `limit`
    /// bytes of events were waiting for it.
    pub fn slow_client(limit: usize) -> Self {
        Self {
            code: Some("slow_client"),
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the client read the stream too slowly (more than {limit} bytes were \
                     waiting); the request was cancelled"
                ),
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The `type` field, by status class as OpenAI spells it.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => "server_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// Label of `tpo_rejections_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self.code {
            Some("worker_dead") => return "worker_dead",
            Some("too_many_connections") => return "too_many_connections",
            Some("slow_client") => return "slow_client",
            _ => {}
        }
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => "overloaded",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            StatusCode::SERVICE_UNAVAILABLE => "draining",
            StatusCode::NOT_FOUND => "not_found",
            s if s.is_server_error() => "internal",
            _ => "invalid",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind(),
                param: self.param.clone(),
                code: self.code,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        // Refusals that can come before the request body is read (auth, unknown route or
        // method, content type, size, draining) leave unread bytes on the connection, which
        // hyper then closes; saying so keeps a client from sending its next request on it.
        if matches!(
            self.status,
            StatusCode::UNAUTHORIZED
                | StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::SERVICE_UNAVAILABLE
        ) || self.code == Some("body_timeout")
        {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// An engine error in the API's words: the engine states facts (limits and values); the
/// advice here names request fields (`max_tokens`, `messages`), never a CLI flag.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::SequenceTooLong { .. } => ApiError::invalid(
                "max_tokens",
                format!("{e}; shorten the messages or lower max_tokens"),
            ),
            EngineError::EmptyPrompt => ApiError::invalid("messages", e.to_string()),
            EngineError::InvalidSampleCount { .. } => ApiError::invalid("n", e.to_string()),
            EngineError::Sampling(_) => ApiError::bad_body(e.to_string()),
            EngineError::Overloaded { .. } => ApiError::overloaded(e.to_string()),
            EngineError::Stopped => ApiError::internal(e.to_string()),
            EngineError::Died { reason } => ApiError::dead("the engine's scheduler thread", reason),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Overloaded { .. } => ApiError::overloaded(e.to_string()),
            ServiceError::Died { reason } => {
                ApiError::dead("a reward model's scorer thread", &reason)
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::InvalidParams(m) => ApiError::invalid("tpo", m),
            SearchError::DoesNotFit(e) => does_not_fit("max_tokens", &e),
            SearchError::Engine(e) => e.into(),
            SearchError::Reward(e) => e.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// The 400 of a search that does not fit, in the request's own words.
pub fn does_not_fit(field: &str, e: &crate::search::fit::DoesNotFit) -> ApiError {
    ApiError::invalid(
        field,
        format!(
            "{field} = {} does not fit this search: {} is up to {} tokens and each call may \
             generate {} more, but the context holds {}; with this question at most {field} \
             = {} fits",
            e.max_new_tokens, e.what, e.peak_prompt, e.max_new_tokens, e.context, e.fits
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same failure the CLI advises on with flags (`--max-new-tokens`, `--max-seq-len`)
    /// reaches an API client naming its request fields instead.
    #[test]
    fn a_sequence_too_long_names_request_fields_not_flags() {
        let e = ApiError::from(EngineError::SequenceTooLong {
            tokens: 40,
            limit: 16,
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(e.message.contains("context holds 16"), "{}", e.message);
        assert!(e.message.contains("lower max_tokens"), "{}", e.message);
        assert!(!e.message.contains("--"), "{}", e.message);
    }

    /// No engine error's message names a CLI flag on its way to a client.
    #[test]
    fn engine_errors_reach_clients_without_cli_flags() {
        for e in [
            EngineError::BelowSlidingWindow {
                max_seq_len: 256,
                window: 512,
            },
            EngineError::KvTooLarge {
                slots: 64,
                max_len: 2048,
                bytes: 1 << 40,
                available: None,
            },
            EngineError::SequenceTooLong {
                tokens: 9,
                limit: 8,
            },
        ] {
            let api = ApiError::from(e);
            assert!(!api.message.contains("--"), "{}", api.message);
        }
        let search = ApiError::from(SearchError::Engine(EngineError::SequenceTooLong {
            tokens: 9,
            limit: 8,
        }));
        assert!(!search.message.contains("--"), "{}", search.message);
    }
}
