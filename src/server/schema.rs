//! The wire types of the API (OpenAI's chat and legacy completions, our `tpo` extension,
//! `/v1/score`, `/v1/models`), with their OpenAPI schemas. Requests are decoded here and
//! validated in `validate`; responses are built by the handlers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::body::Fields;

/// `POST /v1/chat/completions`. Unknown fields are refused (`body::parse` names them
/// first); `deny_unknown_fields` says so in the OpenAPI document.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    /// A model id from `GET /v1/models`; a `:tpo`, `:bon` or `:darwin` suffix runs that
    /// search with the server's defaults.
    #[schema(example = "smollm2-135m-instruct")]
    pub model: String,
    #[schema(min_items = 1, example = json!([{"role": "user", "content": "Hi"}]))]
    pub messages: Vec<ChatMessageIn>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    /// Greater than 0.
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// Deprecated by OpenAI in favour of `max_completion_tokens`; both are accepted (not
    /// together).
    #[schema(minimum = 1, example = 8)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    /// At most the server's KV slots.
    #[schema(minimum = 1)]
    pub n: Option<u32>,
    #[schema(minimum = 0)]
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub stream: Option<bool>,
    /// Only with `stream: true`.
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    /// Only with `logprobs: true`.
    #[schema(maximum = 20)]
    pub top_logprobs: Option<u32>,
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub presence_penalty: Option<f32>,
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub frequency_penalty: Option<f32>,
    /// Logged with the request, otherwise unused.
    pub user: Option<String>,
    /// Our extension: run a search instead of one generation.
    pub tpo: Option<TpoOptions>,
}

pub const CHAT_FIELDS: Fields = Fields {
    implemented: &[
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "user",
        "tpo",
    ],
    unsupported: UNSUPPORTED,
};

/// OpenAI fields this server refuses by name rather than ignore.
const UNSUPPORTED: &[&str] = &[
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "service_tier",
    "store",
    "metadata",
    "reasoning_effort",
    "web_search_options",
    "best_of",
    "echo",
    "suffix",
];

/// One message in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessageIn {
    /// system, developer (treated as system), user or assistant.
    #[schema(pattern = "^(system|developer|user|assistant)$")]
    pub role: String,
    /// A string, or an array of `{"type": "text", "text": "..."}` parts.
    #[schema(value_type = Object)]
    pub content: Option<Value>,
    /// Accepted and unused (the chat template has no names).
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// `stop`: one string or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// The `tpo` extension object: which search, and its settings (unset ones take the
/// server's `--search-*` defaults).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TpoOptions {
    /// none, tpo, bon or darwin (greedy is accepted as well).
    pub strategy: Option<String>,
    /// Samples per policy call; at most the server's KV slots.
    #[schema(minimum = 1)]
    pub width: Option<u32>,
    #[schema(maximum = 64)]
    pub depth: Option<u32>,
    /// DARWIN's M; at most the server's KV slots.
    #[schema(minimum = 1)]
    pub mutations: Option<u32>,
    #[schema(minimum = 1)]
    pub replace_every: Option<u32>,
    /// At most `mutations`.
    #[schema(minimum = 1)]
    pub keep: Option<u32>,
    #[schema(minimum = 1, maximum = 64)]
    pub iterations: Option<u32>,
    /// A reward model this server loaded (`GET /v1/models` lists them under `reward_models`).
    pub reward_model: Option<String>,
    /// Reference answer, for similarity reward models.
    pub reference: Option<String>,
    /// Include the search's whole trace in the response.
    pub return_trace: Option<bool>,
}

/// `POST /v1/completions` (the legacy API).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    #[schema(example = "smollm2-135m-instruct")]
    pub model: String,
    /// One prompt string.
    #[schema(value_type = String, min_length = 1, example = "Hello")]
    pub prompt: Value,
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 1)]
    pub n: Option<u32>,
    #[schema(minimum = 0)]
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub presence_penalty: Option<f32>,
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub frequency_penalty: Option<f32>,
    pub user: Option<String>,
}

pub const COMPLETION_FIELDS: Fields = Fields {
    implemented: &[
        "model",
        "prompt",
        "temperature",
        "top_p",
        "max_tokens",
        "n",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "presence_penalty",
        "frequency_penalty",
        "user",
    ],
    unsupported: &[
        "logprobs",
        "logit_bias",
        "best_of",
        "echo",
        "suffix",
        "tools",
        "response_format",
    ],
};

/// `POST /v1/score`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// A loaded reward model's name (default: the server's first).
    pub reward_model: Option<String>,
    /// 1 to `MAX_SCORE_ITEMS` (256) items.
    #[schema(min_items = 1, max_items = 256)]
    pub items: Vec<ScoreItem>,
}

pub const SCORE_FIELDS: Fields = Fields {
    implemented: &["reward_model", "items"],
    unsupported: &[],
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreItem {
    pub prompt: String,
    pub response: String,
    pub reference: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreResponse {
    pub object: &'static str,
    pub reward_model: String,
    pub data: Vec<ScoreResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreResult {
    pub index: usize,
    /// The reward, or null when this item could not be scored (see `error`).
    pub score: Option<f32>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// Present for searches: what the search did and cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpo: Option<SearchSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessageOut,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatMessageOut {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChoiceLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// What a search did, on the response (and the last streamed chunk).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchSummary {
    pub strategy: &'static str,
    /// Steps run (TPO steps, DARWIN iterations; 0 for Best-of-N).
    pub steps: usize,
    /// Policy requests (each one prefill, possibly many samples).
    pub policy_calls: usize,
    /// Sequences the policy generated.
    pub completions: usize,
    /// Answers sent to the reward model.
    pub reward_scorings: usize,
    pub reward_model: String,
    pub best_reward: f32,
    /// Candidates dropped before or instead of scoring.
    pub dropped: usize,
    /// The same by reason: `leaked_prompt`, `echo`, `repetition`, `meta`, `empty` (not
    /// answers), `no_opening_tag`, `unscored`, `replaced`.
    pub dropped_by_reason: std::collections::BTreeMap<String, usize>,
    /// Every candidate was dropped: the answer is the best-scored dropped one, not a
    /// candidate the search would otherwise return.
    pub all_dropped: bool,
    pub seconds: f64,
    /// The whole trace, with `return_trace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub trace: Option<Value>,
}

/// A streamed search step (`choices: []` plus this object): the step's candidates with
/// their rewards or drop reasons, and for TPO the chosen and rejected answers, critique and
/// suggestions, for DARWIN the iteration's mutations and replacements (the trace's records).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchProgress {
    /// 0 for the initial samples, then 1..=depth (DARWIN: iterations from 1).
    pub step: usize,
    pub depth: usize,
    /// Best reward so far (`null` while nothing is scored).
    pub best_reward: Option<f32>,
    pub kept: usize,
    pub dropped: usize,
    /// The candidates this step made (trace `candidates` entries).
    #[schema(value_type = Vec<Object>)]
    pub candidates: Vec<crate::search::Candidate>,
    /// TPO: the step's record (trace `steps` entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tpo_step: Option<crate::search::StepRecord>,
    /// DARWIN: the iteration's record (trace `darwin.iterations` entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub darwin_iteration: Option<crate::search::DarwinIteration>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// For search ids: the strategy the suffix selects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<&'static str>,
    /// Reward models a search or `/v1/score` can use on this server.
    pub reward_models: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// ok, loading, draining, or dead (a worker thread died: restart the server).
    pub status: &'static str,
    /// Why the server is dead: which thread, and its panic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One streamed chat event (`chat.completion.chunk`): a delta per choice, or `choices: []`
/// with the usage or a search's progress. Its fields serialize in the order OpenAI's
/// chunks have them; absent `usage` and `tpo` are left out.
#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChatChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// A search's step (progress chunks) or its summary (the last delta chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpo: Option<ChunkTpo>,
}

/// The `tpo` object of a streamed search chunk.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ChunkTpo {
    Progress(SearchProgress),
    Summary(SearchSummary),
}

#[derive(Debug, Serialize)]
pub struct ChatChunkChoice<'a> {
    pub index: usize,
    pub delta: ChunkDelta<'a>,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: Option<&'a str>,
}

/// What a chat chunk adds to its choice: the role (first chunk) and a piece of content
/// (`{}` on the finishing chunk).
#[derive(Debug, Default, Serialize)]
pub struct ChunkDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

/// One streamed legacy completion event (`text_completion`).
#[derive(Debug, Serialize)]
pub struct CompletionChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<CompletionChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct CompletionChunkChoice<'a> {
    pub index: usize,
    pub text: &'a str,
    /// Always `null`: legacy completions have no logprobs here.
    pub logprobs: Option<Value>,
    pub finish_reason: Option<&'a str>,
}

#[cfg(test)]
mod chunk_tests {
    use serde_json::json;

    use super::*;

    fn text(chunk: &impl Serialize) -> String {
        serde_json::to_value(chunk).unwrap().to_string()
    }

    /// The typed chunks print byte for byte as the `json!` chunks they replace did: the
    /// same fields in the same order, the same nulls, the same floats.
    #[test]
    fn typed_chunks_print_as_the_json_chunks_did() {
        let (id, model, created) = ("chatcmpl-1", "m", 7u64);
        let choice = |delta, logprobs, finish| ChatChunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices: vec![ChatChunkChoice {
                index: 1,
                delta,
                logprobs,
                finish_reason: finish,
            }],
            usage: None,
            tpo: None,
        };
        let first = choice(
            ChunkDelta {
                role: Some("assistant"),
                content: Some(""),
            },
            None,
            None,
        );
        assert_eq!(
            text(&first),
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 1,
                "delta": {"role": "assistant", "content": ""}, "logprobs": null,
                "finish_reason": null}]})
            .to_string()
        );
        let entry = TokenLogprob {
            token: "a".into(),
            logprob: -0.1,
            bytes: vec![97],
            top_logprobs: vec![TopLogprob {
                token: "b".into(),
                logprob: -2.3,
                bytes: vec![98],
            }],
        };
        let piece = choice(
            ChunkDelta {
                role: None,
                content: Some("a"),
            },
            Some(ChoiceLogprobs {
                content: vec![entry.clone()],
            }),
            None,
        );
        assert_eq!(
            text(&piece),
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 1, "delta": {"content": "a"},
                "logprobs": json!({"content": [entry]}), "finish_reason": null}]})
            .to_string()
        );
        let last = choice(ChunkDelta::default(), None, Some("stop"));
        assert_eq!(
            text(&last),
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 1, "delta": {}, "logprobs": null,
                "finish_reason": "stop"}]})
            .to_string()
        );
        let usage = ChatChunk {
            choices: Vec::new(),
            usage: Some(Usage::new(3, 4)),
            ..choice(ChunkDelta::default(), None, None)
        };
        assert_eq!(
            text(&usage),
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [], "usage": Usage::new(3, 4)})
            .to_string()
        );
        let completion = CompletionChunk {
            id,
            object: "text_completion",
            created,
            model,
            choices: vec![CompletionChunkChoice {
                index: 0,
                text: "hi",
                logprobs: None,
                finish_reason: None,
            }],
            usage: None,
        };
        assert_eq!(
            text(&completion),
            json!({"id": id, "object": "text_completion", "created": created,
                "model": model, "choices": [{"index": 0, "text": "hi",
                "logprobs": null, "finish_reason": null}]})
            .to_string()
        );
    }
}
