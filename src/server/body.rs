//! Request bodies in: size limit, content type, UTF-8, JSON, then the fields. Every failure
//! is an [`ApiError`] naming the problem (and the field, where there is one); nothing a
//! client sends can panic the server.
//!
//! Fields are checked before typed decoding: a field this server knows but does not
//! implement (`tools`, `logit_bias`, …) is refused by name, never silently ignored, and so
//! is an unknown one. Typed decoding goes through `serde_path_to_error`, so a wrong type
//! names its path (`messages[0].role`).

use axum::body::Body;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// The raw body, at most `limit` bytes, which must be declared as JSON.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            // `to_bytes` fails with a length-limit error or a transport error.
            let too_large = std::error::Error::source(&e)
                .map(|s| s.is::<http_body_util::LengthLimitError>())
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::body_too_large(limit))
            } else {
                Err(ApiError::bad_body(format!("reading the request body: {e}")))
            }
        }
    }
}

/// Field names of one request type: those it implements and those it refuses by name.
pub struct Fields {
    pub implemented: &'static [&'static str],
    pub unsupported: &'static [&'static str],
}

/// Parses `bytes` as a JSON object with only `fields`, then decodes it as `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], fields: &Fields) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_body(format!(
            "the request body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_body(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(ApiError::bad_body("the request body must be a JSON object"));
    };
    for key in map.keys() {
        if fields.unsupported.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                key.clone(),
                format!("the field {key:?} is not supported by this server"),
            ));
        }
        if !fields.implemented.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                key.clone(),
                format!(
                    "unknown field {key:?}; supported fields: {}",
                    fields.implemented.join(", ")
                ),
            ));
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            ApiError::bad_body(inner)
        } else {
            ApiError::invalid(path.clone(), format!("{path}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Small {
        a: u32,
        #[serde(default)]
        b: Option<Vec<String>>,
    }

    const FIELDS: Fields = Fields {
        implemented: &["a", "b"],
        unsupported: &["tools"],
    };

    fn err(body: &[u8]) -> ApiError {
        parse::<Small>(body, &FIELDS).unwrap_err()
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(
            err(br#"{"a": 1, "tools": []}"#).param.as_deref(),
            Some("tools")
        );
        assert_eq!(err(br#"{"a": 1, "zzz": 2}"#).param.as_deref(), Some("zzz"));
        assert_eq!(err(br#"{"a": -1}"#).param.as_deref(), Some("a"));
        assert_eq!(err(br#"{"a": 1, "b": [1]}"#).param.as_deref(), Some("b[0]"));
        assert!(parse::<Small>(br#"{"a": 3, "b": null}"#, &FIELDS).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for body in [&b"\xff\xfe"[..], b"{", b"[]", b"NaN", b"{\"a\": NaN}", b""] {
            let e = err(body);
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body:?}");
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            err(deep.as_bytes()).status,
            axum::http::StatusCode::BAD_REQUEST
        );
    }
}
