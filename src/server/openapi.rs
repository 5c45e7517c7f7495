//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the request and response
//! types and the handlers' annotations (utoipa), so it cannot drift from the code.

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::schema;

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

pub async fn document() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        Err(e) => super::ApiError::internal(format!("rendering the OpenAPI document: {e}"))
            .into_response(),
    }
}
