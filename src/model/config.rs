//! `genai_config.json`: the decoder's shape and I/O names, as onnxruntime-genai writes it.
//!
//! Read generally, so a folder built by onnxruntime-genai's model builder for another llama-
//! or qwen-style model loads too. Only the fields the engine needs are kept.

use std::path::Path;

use serde::Deserialize;

use super::ModelError;

/// What the engine needs to drive a decoder graph.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub model_type: String,
    pub filename: String,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_size: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
    pub input_ids_name: String,
    pub attention_mask_name: String,
    /// `position_ids` input, when the graph has one (it is optional for GQA graphs).
    pub position_ids_name: Option<String>,
    pub logits_name: String,
    /// Templates with `%d` for the layer index.
    pub past_key_template: String,
    pub past_value_template: String,
    pub present_key_template: String,
    pub present_value_template: String,
    /// `true` when past and present share one `[B, kv_heads, max_len, head]` buffer.
    pub past_present_share_buffer: bool,
    /// Sliding-window attention (Gemma 3, Mistral), when the config declares it.
    pub sliding_window: Option<SlidingWindow>,
}

/// A decoder's sliding-window attention, as onnxruntime-genai's model builder declares it
/// (`model.decoder.sliding_window`, or `model.decoder.cache.kv_cache.sliding_window` in
/// newer configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SlidingWindow {
    /// Positions a windowed layer attends to.
    pub window_size: usize,
    /// Whether the KV cache itself slides (keeps only the window). The engine keeps every
    /// position (its prefix cache and forks need them), so such a folder is refused.
    #[serde(default)]
    pub slide_key_value_cache: bool,
}

impl DecoderConfig {
    pub fn past_key_name(&self, layer: usize) -> String {
        self.past_key_template.replace("%d", &layer.to_string())
    }
    pub fn past_value_name(&self, layer: usize) -> String {
        self.past_value_template.replace("%d", &layer.to_string())
    }
    pub fn present_key_name(&self, layer: usize) -> String {
        self.present_key_template.replace("%d", &layer.to_string())
    }
    pub fn present_value_name(&self, layer: usize) -> String {
        self.present_value_template
            .replace("%d", &layer.to_string())
    }

    /// Reads and validates `genai_config.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("genai_config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| ModelError::BadConfig { path, reason })
    }

    /// Parses the JSON text of a `genai_config.json`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let model = raw.model;
        let dec = model.decoder;
        let eos_token_ids = match model.eos_token_id {
            OneOrMany::One(id) => vec![id],
            OneOrMany::Many(ids) => ids,
        };
        let config = DecoderConfig {
            model_type: model.model_type,
            filename: dec.filename,
            num_layers: dec.num_hidden_layers,
            num_heads: dec.num_attention_heads,
            num_kv_heads: dec.num_key_value_heads,
            head_size: dec.head_size,
            hidden_size: dec.hidden_size,
            vocab_size: model.vocab_size,
            context_length: model.context_length,
            pad_token_id: model
                .pad_token_id
                .unwrap_or(eos_token_ids.first().copied().unwrap_or(0)),
            eos_token_ids,
            input_ids_name: dec.inputs.input_ids,
            attention_mask_name: dec.inputs.attention_mask,
            position_ids_name: dec.inputs.position_ids,
            logits_name: dec.outputs.logits,
            past_key_template: dec.inputs.past_key_names,
            past_value_template: dec.inputs.past_value_names,
            present_key_template: dec.outputs.present_key_names,
            present_value_template: dec.outputs.present_value_names,
            past_present_share_buffer: raw.search.past_present_share_buffer,
            sliding_window: dec.sliding_window.or(dec
                .cache
                .and_then(|c| c.kv_cache)
                .and_then(|k| k.sliding_window)),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_size", self.head_size),
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if let Some(w) = self.sliding_window {
            if w.window_size == 0 {
                return Err("sliding_window.window_size must be positive".into());
            }
            if w.slide_key_value_cache {
                return Err(format!(
                    "sliding_window.slide_key_value_cache is true: the KV cache would keep only \
                     the last {} positions, and tpo keeps every position (prefix cache, forks); \
                     export with slide_key_value_cache false",
                    w.window_size
                ));
            }
        }
        if self.eos_token_ids.is_empty() {
            return Err("eos_token_id is empty".into());
        }
        for template in [
            &self.past_key_template,
            &self.past_value_template,
            &self.present_key_template,
            &self.present_value_template,
        ] {
            if !template.contains("%d") {
                return Err(format!("KV name template {template:?} has no %d"));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawConfig {
    model: RawModel,
    #[serde(default)]
    search: RawSearch,
}

#[derive(Deserialize)]
struct RawModel {
    #[serde(rename = "type")]
    model_type: String,
    context_length: usize,
    decoder: RawDecoder,
    eos_token_id: OneOrMany,
    pad_token_id: Option<u32>,
    vocab_size: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RawDecoder {
    filename: String,
    head_size: usize,
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    inputs: RawInputs,
    outputs: RawOutputs,
    #[serde(default)]
    sliding_window: Option<SlidingWindow>,
    #[serde(default)]
    cache: Option<RawCache>,
}

#[derive(Deserialize)]
struct RawCache {
    #[serde(default)]
    kv_cache: Option<RawKvCache>,
}

#[derive(Deserialize)]
struct RawKvCache {
    #[serde(default)]
    sliding_window: Option<SlidingWindow>,
}

#[derive(Deserialize)]
struct RawInputs {
    input_ids: String,
    attention_mask: String,
    position_ids: Option<String>,
    past_key_names: String,
    past_value_names: String,
}

#[derive(Deserialize)]
struct RawOutputs {
    logits: String,
    present_key_names: String,
    present_value_names: String,
}

#[derive(Deserialize, Default)]
struct RawSearch {
    #[serde(default)]
    past_present_share_buffer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN_STYLE: &str = r#"{
        "model": {"type": "qwen2", "context_length": 32768, "eos_token_id": [151645, 151643],
          "pad_token_id": 151643, "vocab_size": 151936,
          "decoder": {"filename": "model.onnx", "head_size": 64, "hidden_size": 896,
            "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
            "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "position_ids": "position_ids",
              "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
              "present_value_names": "present.%d.value"}}},
        "search": {"past_present_share_buffer": true, "max_length": 32768}}"#;

    #[test]
    fn reads_a_model_builder_config_for_another_architecture() {
        let c = DecoderConfig::parse(QWEN_STYLE).unwrap();
        assert_eq!((c.num_layers, c.num_heads, c.num_kv_heads), (24, 14, 2));
        assert_eq!(c.eos_token_ids, vec![151645, 151643]);
        assert_eq!(c.position_ids_name.as_deref(), Some("position_ids"));
        assert_eq!(c.past_value_name(7), "past_key_values.7.value");
        assert_eq!(c.present_key_name(23), "present.23.key");
        assert!(c.past_present_share_buffer);
    }

    #[test]
    fn reads_the_sliding_window_where_either_config_version_puts_it() {
        let window = r#""sliding_window": {"window_size": 512, "pad_value": 0, "alignment": "left",
            "slide_key_value_cache": false, "slide_inputs": false},"#;
        let old = QWEN_STYLE.replace(
            r#""filename": "model.onnx","#,
            &format!("{window} \"filename\": \"model.onnx\","),
        );
        let c = DecoderConfig::parse(&old).unwrap();
        assert_eq!(c.sliding_window.map(|w| w.window_size), Some(512));
        let new = QWEN_STYLE.replace(
            r#""filename": "model.onnx","#,
            &format!(
                r#""cache": {{"kv_cache": {{{}}}}}, "filename": "model.onnx","#,
                window.trim_end_matches(',')
            ),
        );
        let c = DecoderConfig::parse(&new).unwrap();
        assert_eq!(c.sliding_window.map(|w| w.window_size), Some(512));
        assert_eq!(
            DecoderConfig::parse(QWEN_STYLE).unwrap().sliding_window,
            None
        );
        let sliding = old.replace(
            r#""slide_key_value_cache": false"#,
            r#""slide_key_value_cache": true"#,
        );
        let err = DecoderConfig::parse(&sliding).unwrap_err();
        assert!(err.contains("slide_key_value_cache"), "{err}");
    }

    #[test]
    fn rejects_heads_that_do_not_group() {
        let bad = QWEN_STYLE.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
        let err = DecoderConfig::parse(&bad).unwrap_err();
        assert!(err.contains("not a multiple"), "{err}");
    }

    #[test]
    fn rejects_truncated_json_with_the_parser_message() {
        let err = DecoderConfig::parse(&QWEN_STYLE[..100]).unwrap_err();
        assert!(err.contains("EOF"), "{err}");
    }
}
