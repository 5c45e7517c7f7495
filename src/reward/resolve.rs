//! Settling a reward folder's config: each field from `reward_config.json` when it gives it,
//! else from what the folder already says (`folder::FolderFacts`, the graph's outline),
//! else an error naming the field. Every inferred field is recorded with where it came from,
//! so loading can print it and `tpo models inspect` can show it.
//!
//! The rules follow what the exporters write: optimum's sequence-classification export
//! (`config.json` with `*ForSequenceClassification` and `pad_token_id`, one `logits
//! [B, labels]` output, no `position_ids`), sentence-transformers encoders
//! (`sentence_bert_config.json`, token embeddings out), and our own folders (complete
//! `reward_config.json`).

use std::path::Path;

use super::config::{
    InputFormat, OutputLayout, PaddingSide, RewardConfig, RewardConfigFile, RewardKind,
    SimilarityMetric, Truncation, CONFIG_FILE,
};
use super::folder::{FolderFacts, GraphOutline, DEFAULT_HEAD_FILE};
use super::RewardError;
use crate::model::{TokenId, Tokenizer};

/// One field `tpo` filled in, and from what.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub field: &'static str,
    /// The value as `reward_config.json` would spell it.
    pub value: String,
    pub from: String,
}

/// A pad id the folder suggests, and which file suggests it: the self-check tries them when
/// padded rows disagree with the same rows alone.
#[derive(Debug, Clone, PartialEq)]
pub struct PadCandidate {
    pub id: TokenId,
    pub from: String,
}

/// The settled config, what was inferred, and the pad ids the folder suggests.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: RewardConfig,
    pub inferred: Vec<Inferred>,
    pub pad_candidates: Vec<PadCandidate>,
}

/// Outputs a similarity encoder's token embeddings are read from, in order of preference.
const EMBEDDING_OUTPUTS: &[&str] = &["token_embeddings", "last_hidden_state"];

/// Settles the config of `dir` from `file`, the folder's files and the graph's `outline`.
pub fn resolve(
    dir: &Path,
    file: RewardConfigFile,
    outline: &GraphOutline,
) -> Result<Resolved, RewardError> {
    let facts = FolderFacts::read(dir)?;
    let tokenizer = Tokenizer::load(dir)?;
    resolve_with(dir, file, outline, &facts, &|t| tokenizer.token_id(t))
}

/// [`resolve`] with the folder's facts read and its tokenizer's token lookup (`token_id`).
pub fn resolve_with(
    dir: &Path,
    file: RewardConfigFile,
    outline: &GraphOutline,
    facts: &FolderFacts,
    token_id: &dyn Fn(&str) -> Option<TokenId>,
) -> Result<Resolved, RewardError> {
    let mut r = Resolver {
        inferred: Vec::new(),
        missing: Vec::new(),
    };
    let kind = r.kind(&file, facts, outline);
    let onnx = file.onnx();
    let output = r.output(&file, kind, outline);
    let layout = match kind {
        Some(RewardKind::Classifier) => r.layout(&file, facts, outline, output.as_deref()),
        _ => file.layout,
    };
    let head = match (file.head.clone(), layout) {
        (Some(head), _) => Some(head),
        (None, Some(OutputLayout::HiddenStates)) => {
            if facts.head_file {
                r.note("head", DEFAULT_HEAD_FILE, "the head file in the folder");
                Some(DEFAULT_HEAD_FILE.to_string())
            } else {
                r.missing(
                    "head",
                    "the hidden_states layout needs a head file and the folder has no \
                     reward_head.json",
                );
                None
            }
        }
        _ => None,
    };
    let label = r.label(&file, kind, facts);
    let max_length = r.max_length(&file, kind, facts);
    let truncation = file.truncation.unwrap_or_else(|| {
        let t = match kind {
            Some(RewardKind::Similarity) => Truncation::Truncate,
            _ => Truncation::Reject,
        };
        r.note(
            "truncation",
            &json_name(&t),
            match t {
                Truncation::Truncate => "sentence-transformers truncates long inputs",
                Truncation::Reject => "a reward of a cut answer would mislead",
            },
        );
        t
    });
    let padding_side = r.padding_side(&file, facts, outline);
    let pad_candidates = pad_candidates(facts, token_id);
    let pad_token_id = r.pad_token_id(&file, &pad_candidates);
    let add_special_tokens = file.add_special_tokens.unwrap_or_else(|| {
        // Chat-templated text carries its own markers; an encoder wants [CLS] … [SEP].
        let add = !(kind == Some(RewardKind::Classifier) && facts.chat_template);
        r.note(
            "add_special_tokens",
            &add.to_string(),
            if add {
                "an encoder's inputs take the tokenizer's markers"
            } else {
                "chat-templated text carries its own markers"
            },
        );
        add
    });
    let input_format = match (kind, file.input_format) {
        (_, Some(f)) => Some(f),
        (Some(RewardKind::Classifier), None) if facts.chat_template => {
            r.note(
                "input_format",
                "chat",
                "a chat template is present: [user: prompt, assistant: response]",
            );
            Some(InputFormat::Chat)
        }
        (Some(RewardKind::Classifier), None) => {
            r.missing(
                "input_format",
                "a classifier reads (prompt, response) through a chat template and the folder \
                 has none (chat_template.jinja or tokenizer_config.json \"chat_template\")",
            );
            None
        }
        _ => None,
    };
    let metric = match (kind, file.metric) {
        (_, Some(m)) => Some(m),
        (Some(RewardKind::Similarity), None) => {
            r.note(
                "metric",
                "cosine",
                "the default similarity: cosine of mean-pooled embeddings",
            );
            Some(SimilarityMetric::Cosine)
        }
        _ => None,
    };
    let hidden_size = file.hidden_size.or_else(|| {
        let h = facts
            .hidden_size
            .filter(|_| kind == Some(RewardKind::Similarity))?;
        r.note("hidden_size", &h.to_string(), "config.json \"hidden_size\"");
        Some(h)
    });
    let path = dir.join(CONFIG_FILE);
    if !r.missing.is_empty() {
        return Err(RewardError::BadConfig {
            path,
            reason: format!(
                "cannot infer {}; write {} in reward_config.json ({})",
                r.missing
                    .iter()
                    .map(|(f, _)| format!("\"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                if r.missing.len() == 1 { "it" } else { "them" },
                r.missing
                    .iter()
                    .map(|(f, why)| format!("{f}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    let (Some(kind), Some(output), Some(max_length), Some(pad_token_id)) =
        (kind, output, max_length, pad_token_id)
    else {
        return Err(RewardError::Internal(
            "a required reward field is neither given nor reported missing".into(),
        ));
    };
    let description = file.description.or_else(|| {
        facts
            .sequence_classification()
            .map(|a| format!("{a} (settings inferred by tpo from the folder)"))
    });
    let config = RewardConfig {
        kind,
        onnx,
        output,
        layout,
        head,
        label,
        max_length,
        truncation,
        padding_side,
        pad_token_id,
        add_special_tokens,
        input_format,
        judge: file.judge,
        metric,
        hidden_size,
        description,
    };
    config.validate(&path)?;
    Ok(Resolved {
        config,
        inferred: r.inferred,
        pad_candidates,
    })
}

/// How a serde enum value is spelled in `reward_config.json`.
pub fn json_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

struct Resolver {
    inferred: Vec<Inferred>,
    missing: Vec<(&'static str, String)>,
}

impl Resolver {
    fn note(&mut self, field: &'static str, value: &str, from: &str) {
        self.inferred.push(Inferred {
            field,
            value: value.to_string(),
            from: from.to_string(),
        });
    }

    fn missing(&mut self, field: &'static str, why: &str) {
        self.missing.push((field, why.to_string()));
    }

    fn kind(
        &mut self,
        file: &RewardConfigFile,
        facts: &FolderFacts,
        outline: &GraphOutline,
    ) -> Option<RewardKind> {
        if let Some(kind) = file.kind {
            return Some(kind);
        }
        if outline.output("sentence_embedding").is_some()
            && outline.output("token_embeddings").is_some()
        {
            self.note(
                "kind",
                "similarity",
                "the graph outputs token_embeddings and sentence_embedding (optimum's export \
                 of a sentence-transformers model)",
            );
            return Some(RewardKind::Similarity);
        }
        if facts.sentence_transformers {
            self.note(
                "kind",
                "similarity",
                "a sentence-transformers folder (sentence_bert_config.json or modules.json)",
            );
            return Some(RewardKind::Similarity);
        }
        if let Some(arch) = facts.sequence_classification() {
            self.note(
                "kind",
                "classifier",
                &format!("config.json \"architectures\": {arch}"),
            );
            return Some(RewardKind::Classifier);
        }
        if facts.head_file {
            self.note("kind", "classifier", "the folder has reward_head.json");
            return Some(RewardKind::Classifier);
        }
        self.missing(
            "kind",
            "config.json names no *ForSequenceClassification architecture and the folder is \
             not a sentence-transformers model: \"classifier\" or \"similarity\"",
        );
        None
    }

    fn output(
        &mut self,
        file: &RewardConfigFile,
        kind: Option<RewardKind>,
        outline: &GraphOutline,
    ) -> Option<String> {
        if let Some(output) = &file.output {
            return Some(output.clone());
        }
        let names = outline.output_names();
        let found = match kind {
            Some(RewardKind::Similarity) => EMBEDDING_OUTPUTS
                .iter()
                .find(|n| names.contains(n))
                .map(|n| (n.to_string(), "the graph's token-embeddings output")),
            _ if names.len() == 1 => Some((names[0].to_string(), "the graph's only output")),
            _ => names
                .iter()
                .find(|n| **n == "logits")
                .map(|n| (n.to_string(), "the graph's `logits` output")),
        };
        match found {
            Some((name, from)) => {
                self.note("output", &name, from);
                Some(name)
            }
            None => {
                self.missing(
                    "output",
                    &format!("the graph has outputs {names:?}; name the one to read"),
                );
                None
            }
        }
    }

    fn layout(
        &mut self,
        file: &RewardConfigFile,
        facts: &FolderFacts,
        outline: &GraphOutline,
        output: Option<&str>,
    ) -> Option<OutputLayout> {
        if let Some(layout) = file.layout {
            return Some(layout);
        }
        let dims = output
            .and_then(|o| outline.output(o))
            .map(|o| o.dims.clone());
        let labels = facts.num_labels;
        let (layout, from) = match dims.as_deref() {
            Some([_, _]) => (
                Some(OutputLayout::Logits),
                "the output is [batch, labels] (pooled inside the graph)".to_string(),
            ),
            Some([_, _, last]) if *last > 0 && labels == Some(*last as usize) => (
                Some(OutputLayout::Logits),
                format!("the output is [batch, seq, {last}] and config.json has {last} labels"),
            ),
            Some([_, _, _]) if facts.head_file || file.head.is_some() => (
                Some(OutputLayout::HiddenStates),
                "the output is [batch, seq, hidden] and there is a head file".to_string(),
            ),
            other => (
                None,
                format!(
                    "the output's shape {other:?} is neither [batch, labels] nor [batch, seq, \
                     labels]: \"logits\" or \"hidden_states\" (with a \"head\" file)"
                ),
            ),
        };
        match layout {
            Some(l) => self.note("layout", &json_name(&l), &from),
            None => self.missing("layout", &from),
        }
        layout
    }

    fn label(
        &mut self,
        file: &RewardConfigFile,
        kind: Option<RewardKind>,
        facts: &FolderFacts,
    ) -> usize {
        if let Some(label) = file.label {
            return label;
        }
        match (kind, facts.num_labels) {
            (Some(RewardKind::Classifier), Some(n)) if n > 1 => {
                self.missing(
                    "label",
                    &format!(
                        "config.json has {n} labels; name the one that is the reward (0..{n})"
                    ),
                );
            }
            (Some(RewardKind::Classifier), Some(1)) => {
                self.note("label", "0", "config.json has one label");
            }
            _ => {}
        }
        0
    }

    fn max_length(
        &mut self,
        file: &RewardConfigFile,
        kind: Option<RewardKind>,
        facts: &FolderFacts,
    ) -> Option<usize> {
        if let Some(n) = file.max_length {
            return Some(n);
        }
        // sentence-transformers' own limit first: the encoder was trained to it (MiniLM: 256
        // of 512 positions).
        let sources = [
            (
                facts
                    .sentence_max_seq_length
                    .filter(|_| kind == Some(RewardKind::Similarity)),
                "sentence_bert_config.json \"max_seq_length\"",
            ),
            (
                facts.tokenizer_max_length,
                "tokenizer_config.json \"model_max_length\"",
            ),
            (
                facts.max_position_embeddings,
                "config.json \"max_position_embeddings\"",
            ),
        ];
        let found = sources
            .iter()
            .filter_map(|(n, from)| n.map(|n| (n, *from)))
            .min_by_key(|(n, _)| *n);
        match found {
            Some((n, from)) => {
                self.note("max_length", &n.to_string(), from);
                Some(n)
            }
            None => {
                self.missing(
                    "max_length",
                    "no config.json \"max_position_embeddings\", tokenizer_config.json \
                     \"model_max_length\" or sentence_bert_config.json \"max_seq_length\"",
                );
                None
            }
        }
    }

    fn padding_side(
        &mut self,
        file: &RewardConfigFile,
        facts: &FolderFacts,
        outline: &GraphOutline,
    ) -> PaddingSide {
        if let Some(side) = file.padding_side {
            return side;
        }
        let wants_left = facts.tokenizer_padding_side.as_deref() == Some("left");
        let (side, from) = if wants_left && outline.has_input("position_ids") {
            (PaddingSide::Left, "tokenizer_config.json \"padding_side\"")
        } else if wants_left {
            (
                PaddingSide::Right,
                "the graph has no position_ids input, so left padding would shift positions \
                 (tokenizer_config.json says left)",
            )
        } else {
            (PaddingSide::Right, "right padding works with any graph")
        };
        self.note("padding_side", &json_name(&side), from);
        side
    }

    fn pad_token_id(
        &mut self,
        file: &RewardConfigFile,
        candidates: &[PadCandidate],
    ) -> Option<TokenId> {
        if let Some(id) = file.pad_token_id {
            return Some(id);
        }
        // config.json's pad id first (the id an exported graph compares against), then the
        // tokenizer's pad token.
        match candidates.iter().find(|c| {
            c.from.starts_with("config.json \"pad_token_id\"")
                || c.from.starts_with("tokenizer_config.json \"pad_token\"")
        }) {
            Some(c) => {
                self.note("pad_token_id", &c.id.to_string(), &c.from);
                Some(c.id)
            }
            None => {
                self.missing(
                    "pad_token_id",
                    "neither config.json \"pad_token_id\" nor tokenizer_config.json \
                     \"pad_token\" names one, and a graph may find each row's end by it",
                );
                None
            }
        }
    }
}

/// Pad ids the folder suggests, most authoritative first, without repeats.
fn pad_candidates(
    facts: &FolderFacts,
    token_id: &dyn Fn(&str) -> Option<TokenId>,
) -> Vec<PadCandidate> {
    let tokenizer_pad = facts.tokenizer_pad_token.as_deref().and_then(|t| {
        token_id(t).map(|id| (id, format!("tokenizer_config.json \"pad_token\" {t:?}")))
    });
    let all = [
        facts
            .config_pad_token_id
            .map(|id| (id, "config.json \"pad_token_id\"".to_string())),
        tokenizer_pad,
        facts
            .config_eos_token_id
            .map(|id| (id, "config.json \"eos_token_id\"".to_string())),
        facts
            .config_bos_token_id
            .map(|id| (id, "config.json \"bos_token_id\"".to_string())),
        Some((0, "token id 0".to_string())),
    ];
    let mut out: Vec<PadCandidate> = Vec::new();
    for (id, from) in all.into_iter().flatten() {
        if !out.iter().any(|c| c.id == id) {
            out.push(PadCandidate { id, from });
        }
    }
    out
}

impl RewardConfig {
    /// The settled config of the folder `dir`: its `reward_config.json` (if any) completed
    /// from the folder's files and the graph's outline (a CPU session opened for it). Loading
    /// a model does the same with the session it runs.
    pub fn load(dir: &Path) -> Result<Self, RewardError> {
        let file = RewardConfigFile::read(dir)?;
        let session = crate::runtime::open_session(
            &dir.join(file.onnx()),
            crate::runtime::SessionOptions::default(),
        )?;
        let outline = super::folder::GraphOutline::of(&session);
        Ok(resolve(dir, file, &outline)?.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::folder::OutputOutline;

    fn outline(inputs: &[&str], outputs: &[(&str, &[i64])]) -> GraphOutline {
        GraphOutline {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs
                .iter()
                .map(|(name, dims)| OutputOutline {
                    name: name.to_string(),
                    dims: dims.to_vec(),
                    f32: true,
                })
                .collect(),
        }
    }

    fn vocab(token: &str) -> Option<TokenId> {
        match token {
            "<|im_end|>" => Some(2),
            "[PAD]" => Some(0),
            _ => None,
        }
    }

    fn settle(
        file: RewardConfigFile,
        outline: &GraphOutline,
        facts: &FolderFacts,
    ) -> Result<Resolved, RewardError> {
        resolve_with(Path::new("/rm"), file, outline, facts, &vocab)
    }

    fn field<'a>(r: &'a Resolved, name: &str) -> Option<&'a Inferred> {
        r.inferred.iter().find(|i| i.field == name)
    }

    fn optimum_facts() -> FolderFacts {
        FolderFacts {
            architectures: vec!["LlamaForSequenceClassification".into()],
            config_pad_token_id: Some(2),
            config_eos_token_id: Some(2),
            max_position_embeddings: Some(8192),
            num_labels: Some(1),
            tokenizer_max_length: Some(8192),
            tokenizer_pad_token: Some("<|im_end|>".into()),
            chat_template: true,
            ..FolderFacts::default()
        }
    }

    #[test]
    fn an_optimum_sequence_classification_folder_needs_no_config() {
        let graph = outline(&["input_ids", "attention_mask"], &[("logits", &[-1, 1])]);
        let r = settle(RewardConfigFile::default(), &graph, &optimum_facts()).unwrap();
        let c = &r.config;
        assert_eq!(c.kind, RewardKind::Classifier);
        assert_eq!(
            (c.output.as_str(), c.layout),
            ("logits", Some(OutputLayout::Logits))
        );
        assert_eq!((c.pad_token_id, c.max_length, c.label), (2, 8192, 0));
        assert_eq!(c.padding_side, PaddingSide::Right);
        assert_eq!(c.input_format, Some(InputFormat::Chat));
        assert!(!c.add_special_tokens);
        assert_eq!(c.truncation, Truncation::Reject);
        assert_eq!(
            field(&r, "pad_token_id").map(|i| i.from.as_str()),
            Some("config.json \"pad_token_id\"")
        );
        for f in [
            "kind",
            "output",
            "layout",
            "max_length",
            "input_format",
            "label",
        ] {
            assert!(field(&r, f).is_some(), "{f} is recorded as inferred");
        }
        assert_eq!(r.pad_candidates.first().map(|c| c.id), Some(2));
    }

    #[test]
    fn a_given_field_wins_and_is_not_reported_as_inferred() {
        let graph = outline(&["input_ids", "attention_mask"], &[("logits", &[-1, 1])]);
        let file = RewardConfigFile {
            pad_token_id: Some(0),
            max_length: Some(512),
            ..RewardConfigFile::default()
        };
        let r = settle(file, &graph, &optimum_facts()).unwrap();
        assert_eq!((r.config.pad_token_id, r.config.max_length), (0, 512));
        assert!(field(&r, "pad_token_id").is_none() && field(&r, "max_length").is_none());
    }

    #[test]
    fn a_sentence_transformers_encoder_is_a_truncating_cosine_similarity_model() {
        let facts = FolderFacts {
            architectures: vec!["BertModel".into()],
            config_pad_token_id: Some(0),
            max_position_embeddings: Some(512),
            hidden_size: Some(384),
            tokenizer_max_length: Some(512),
            sentence_max_seq_length: Some(256),
            sentence_transformers: true,
            ..FolderFacts::default()
        };
        let graph = outline(
            &["input_ids", "attention_mask", "token_type_ids"],
            &[("last_hidden_state", &[-1, -1, 384])],
        );
        let c = settle(RewardConfigFile::default(), &graph, &facts)
            .unwrap()
            .config;
        assert_eq!(c.kind, RewardKind::Similarity);
        assert_eq!(c.output, "last_hidden_state");
        assert_eq!((c.max_length, c.hidden_size), (256, Some(384)));
        assert_eq!(c.truncation, Truncation::Truncate);
        assert_eq!(c.metric, Some(SimilarityMetric::Cosine));
        assert!(c.add_special_tokens);
    }

    #[test]
    fn optimum_s_export_of_a_sentence_transformers_model_is_seen_by_its_outputs() {
        // optimum drops modules.json and sentence_bert_config.json from the folder
        let facts = FolderFacts {
            architectures: vec!["BertModel".into()],
            config_pad_token_id: Some(0),
            max_position_embeddings: Some(512),
            tokenizer_max_length: Some(512),
            ..FolderFacts::default()
        };
        let graph = outline(
            &["input_ids", "attention_mask", "token_type_ids"],
            &[
                ("token_embeddings", &[-1, -1, 384]),
                ("sentence_embedding", &[-1, 384]),
            ],
        );
        let c = settle(RewardConfigFile::default(), &graph, &facts)
            .unwrap()
            .config;
        assert_eq!(c.kind, RewardKind::Similarity);
        assert_eq!(c.output, "token_embeddings");
    }

    #[test]
    fn a_hidden_states_graph_with_a_head_file_is_a_head_classifier() {
        let facts = FolderFacts {
            head_file: true,
            tokenizer_max_length: Some(2048),
            tokenizer_pad_token: Some("<|im_end|>".into()),
            chat_template: true,
            ..FolderFacts::default()
        };
        let graph = outline(
            &["input_ids", "attention_mask", "position_ids"],
            &[("last_hidden_state", &[-1, -1, 576])],
        );
        let r = settle(RewardConfigFile::default(), &graph, &facts).unwrap();
        assert_eq!(r.config.layout, Some(OutputLayout::HiddenStates));
        assert_eq!(r.config.head.as_deref(), Some(DEFAULT_HEAD_FILE));
        assert_eq!(r.config.pad_token_id, 2);
        assert!(field(&r, "pad_token_id")
            .unwrap()
            .from
            .contains("pad_token"));
    }

    #[test]
    fn every_field_that_cannot_be_inferred_is_named_at_once() {
        let graph = outline(
            &["input_ids", "attention_mask"],
            &[("a", &[-1, 3]), ("b", &[-1, 3])],
        );
        let err = settle(RewardConfigFile::default(), &graph, &FolderFacts::default())
            .unwrap_err()
            .to_string();
        for f in [
            "\"kind\"",
            "\"output\"",
            "\"max_length\"",
            "\"pad_token_id\"",
        ] {
            assert!(err.contains(f), "{f} missing from: {err}");
        }
    }

    #[test]
    fn several_labels_need_the_reward_label_named() {
        let facts = FolderFacts {
            num_labels: Some(2),
            ..optimum_facts()
        };
        let graph = outline(&["input_ids", "attention_mask"], &[("logits", &[-1, 2])]);
        let err = settle(RewardConfigFile::default(), &graph, &facts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"label\"") && err.contains("2 labels"),
            "{err}"
        );
        let file = RewardConfigFile {
            label: Some(1),
            ..RewardConfigFile::default()
        };
        assert_eq!(settle(file, &graph, &facts).unwrap().config.label, 1);
    }

    #[test]
    fn left_padding_asked_by_the_tokenizer_needs_position_ids() {
        let facts = FolderFacts {
            tokenizer_padding_side: Some("left".into()),
            ..optimum_facts()
        };
        let plain = outline(&["input_ids", "attention_mask"], &[("logits", &[-1, 1])]);
        let r = settle(RewardConfigFile::default(), &plain, &facts).unwrap();
        assert_eq!(r.config.padding_side, PaddingSide::Right);
        assert!(field(&r, "padding_side")
            .unwrap()
            .from
            .contains("no position_ids"));
        let positioned = outline(
            &["input_ids", "attention_mask", "position_ids"],
            &[("logits", &[-1, 1])],
        );
        let r = settle(RewardConfigFile::default(), &positioned, &facts).unwrap();
        assert_eq!(r.config.padding_side, PaddingSide::Left);
    }
}
