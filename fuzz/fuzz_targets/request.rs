//! One request body through `/v1/chat/completions`, `/v1/completions` and `/v1/score`
//! parsing and validation, against the real tokenizer and chat template of the policy
//! folder (`TPO_MODEL_DIR`, else `models/smollm2-135m-instruct`). A panic is a bug: a
//! crash in parsing, or validation accepting what the engine would refuse.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tpo_engine::server::fuzzing::{self, Context};

fn context() -> &'static Context {
    static CONTEXT: OnceLock<Context> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let dir = tpo_engine::paths::default_policy_dir();
        match Context::open(&dir) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("loading {}: {e} (run `make setup`)", dir.display());
                std::process::exit(2);
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    fuzzing::request(data, context());
});
