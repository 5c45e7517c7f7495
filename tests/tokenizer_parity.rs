//! The Rust tokenizer and chat template agree with the Python `tokenizers` and `jinja2`
//! packages on the exported SmolLM2 folder, and with the GGUF's own token ids.

mod common;

use serde_json::json;
use tpo_engine::model::{ChatMessage, ModelDir};

const TEXTS: &[&str] = &[
    "What is the capital of France?",
    "naïve café — déjà vu; 東京は日本の首都です。 😀👍🏽",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n}\n",
    "    four leading spaces\t\ttabs\n\n\nand   runs   of     spaces   ",
    "Numbers: 1234567890, 3.14159, -42, 1e-10, 2026-11-23",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "",
    " leading space and trailing space ",
    "def f(x):\r\n    return x**2  # comment\r\n",
];

fn conversations() -> Vec<Vec<ChatMessage>> {
    let msg = |role: &str, content: &str| ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    vec![
        vec![msg("user", "What is the capital of France?")],
        vec![
            msg("system", "You are terse."),
            msg("user", "Name a prime."),
            msg("assistant", "7"),
            msg("user", "Another, with unicode: ∑ ✓"),
        ],
    ]
}

#[test]
fn rust_token_ids_equal_python_tokenizers() {
    let dir = common::policy_dir();
    let tokenizer = ModelDir::open(&dir).unwrap().tokenizer().unwrap();
    let request = json!({"model_dir": dir, "texts": TEXTS, "conversations": conversations()});
    let reference: serde_json::Value = serde_json::from_slice(&common::run_python(
        "tests/reference/tokenizer_reference.py",
        &[],
        &request.to_string(),
    ))
    .unwrap();
    for (i, text) in TEXTS.iter().enumerate() {
        let expected: Vec<u32> = serde_json::from_value(reference["ids"][i].clone()).unwrap();
        assert_eq!(tokenizer.encode(text).unwrap(), expected, "text {text:?}");
    }
}

#[test]
fn rendered_chat_prompt_equals_jinja2() {
    let dir = common::policy_dir();
    let template = ModelDir::open(&dir).unwrap().chat_template().unwrap();
    let request = json!({"model_dir": dir, "texts": [], "conversations": conversations()});
    let reference: serde_json::Value = serde_json::from_slice(&common::run_python(
        "tests/reference/tokenizer_reference.py",
        &[],
        &request.to_string(),
    ))
    .unwrap();
    for (i, conversation) in conversations().iter().enumerate() {
        let rendered = template.render(conversation, true).unwrap();
        assert_eq!(rendered, reference["chat"][i].as_str().unwrap());
    }
    // The template adds SmolLM's default system prompt when none is given.
    let first = template.render(&conversations()[0], true).unwrap();
    assert!(first.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
    assert!(first.ends_with("<|im_start|>assistant\n"));
}

#[test]
fn control_tokens_have_the_ids_of_the_gguf_vocabulary() {
    // Token ids llama.cpp's tokenizer gives for this text with the same GGUF.
    let tokenizer = ModelDir::open(&common::policy_dir())
        .unwrap()
        .tokenizer()
        .unwrap();
    let ids = tokenizer
        .encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    assert_eq!(ids, vec![1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]);
    // Digits are split one by one before byte-level BPE.
    let digits = tokenizer.encode("2026").unwrap();
    assert_eq!(digits.len(), 4);
    assert_eq!(tokenizer.decode(&digits).unwrap(), "2026");
}

/// What a stream shows is always a prefix of the final answer: text from the token that
/// completes a stop string is never shown, whether the stop ends a token or sits inside one.
#[test]
fn streamed_text_never_runs_into_a_stop_string() {
    use tpo_engine::model::TextStream;
    let tokenizer = ModelDir::open(&common::policy_dir())
        .unwrap()
        .tokenizer()
        .unwrap();
    let answer = "The capital of France is Paris. It is known for the Eiffel Tower.";
    let tokens = tokenizer.encode(answer).unwrap();
    for stop in ["Paris", "Par", "is P", ". It", "Tower."] {
        let stops = vec![stop.to_string()];
        let final_text = &answer[..answer.find(stop).unwrap()];
        let mut stream = TextStream::new(&stops);
        let mut shown = String::new();
        for &token in &tokens {
            shown += &stream.push(&tokenizer, token);
            assert!(
                final_text.starts_with(&shown),
                "stop {stop:?}: the stream showed {shown:?}, past the final answer {final_text:?}"
            );
        }
        shown += &stream.finish(final_text);
        assert_eq!(shown, final_text, "stop {stop:?}");
    }
}
