//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the request and response
//! types and the handlers' annotations (utoipa), so it cannot drift from the code.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::{schema, ServerState};

#[derive(OpenApi)]
#[openapi(
    info(title = "tpo-engine", description = "OpenAI-compatible API of tpo serve: chat and legacy completions, searches (TPO, Best-of-N, DARWIN) through the `tpo` extension or `:tpo`/`:bon`/`:darwin` model ids, reward scoring."),
    paths(
        super::chat_completions,
        super::completions,
        super::score,
        super::models,
        super::health,
        super::metrics_text
    ),
    components(schemas(
        schema::ChatCompletionRequest,
        schema::ChatMessageIn,
        schema::Stop,
        schema::StreamOptions,
        schema::TpoOptions,
        schema::CompletionRequest,
        schema::ScoreRequest,
        schema::ScoreItem,
        schema::ScoreResponse,
        schema::ScoreResult,
        schema::ChatCompletion,
        schema::ChatChoice,
        schema::ChatMessageOut,
        schema::ChoiceLogprobs,
        schema::TokenLogprob,
        schema::TopLogprob,
        schema::SearchSummary,
        schema::SearchProgress,
        schema::Completion,
        schema::CompletionChoice,
        schema::Usage,
        schema::ModelList,
        schema::ModelCard,
        schema::Health,
        ErrorBody,
        ErrorDetail
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document of this server: the generated one, with the model ids it answers to and the
/// reward models it loaded as the `enum`s of `model` and `reward_model`, so that a client
/// (or a fuzzer such as schemathesis) knows the values that reach the models.
pub async fn document(State(state): State<Arc<ServerState>>) -> Response {
    let mut model_ids = vec![state.options.model_id.clone()];
    for (suffix, _) in super::validate::SEARCH_SUFFIXES {
        model_ids.push(format!("{}:{suffix}", state.options.model_id));
    }
    let reward_models: Vec<String> = state.app.rewards.keys().cloned().collect();
    match specialized(&model_ids, &reward_models) {
        Ok(document) => Json(document).into_response(),
        Err(e) => super::ApiError::internal(format!("rendering the OpenAPI document: {e}"))
            .into_response(),
    }
}

/// [`ApiDoc`] with `model` limited to `model_ids` and `reward_model` to `reward_models`.
pub fn specialized(model_ids: &[String], reward_models: &[String]) -> Result<Value, String> {
    let mut document = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
    let schemas = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or("the generated document has no components.schemas")?;
    let mut set_enum = |schema: &str, property: &str, values: &[String], nullable: bool| {
        if let Some(p) = schemas
            .get_mut(schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
            .and_then(Value::as_object_mut)
        {
            let mut list: Vec<Value> = values.iter().cloned().map(Value::String).collect();
            if nullable {
                list.push(Value::Null);
            }
            p.insert("enum".into(), Value::Array(list));
        }
    };
    set_enum("ChatCompletionRequest", "model", model_ids, false);
    set_enum("CompletionRequest", "model", &model_ids[..1], false);
    set_enum("ScoreRequest", "reward_model", reward_models, true);
    set_enum("TpoOptions", "reward_model", reward_models, true);
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_document_lists_this_servers_models_and_reward_models() {
        let ids = vec!["m".to_string(), "m:tpo".to_string()];
        let rms = vec!["judge".to_string()];
        let doc = match specialized(&ids, &rms) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let schema = |name: &str, prop: &str| {
            doc.pointer(&format!(
                "/components/schemas/{name}/properties/{prop}/enum"
            ))
            .cloned()
        };
        assert_eq!(
            schema("ChatCompletionRequest", "model"),
            Some(serde_json::json!(["m", "m:tpo"]))
        );
        assert_eq!(
            schema("CompletionRequest", "model"),
            Some(serde_json::json!(["m"]))
        );
        assert_eq!(
            schema("ScoreRequest", "reward_model"),
            Some(serde_json::json!(["judge", null]))
        );
        assert_eq!(
            schema("TpoOptions", "reward_model"),
            Some(serde_json::json!(["judge", null]))
        );
    }
}
