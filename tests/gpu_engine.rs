//! The engine on a GPU with decode logits kept on the device and sampled by `top_p.cu`,
//! against the same engine on the same GPU with logits brought to the host for the CPU
//! sampler (`sample_on_device: false`): the same model outputs, two samplers.
//!
//! One batch mixes every kind of row the scheduler routes: greedy and seeded top-p rows (the
//! kernel), presence-penalty and `top_logprobs` rows (copied back to the host for the CPU
//! sampler even on the device engine). Greedy, penalty and top-logprob rows must give
//! identical tokens; log-probs agree within the kernel parity tolerance (2e-4 + 1e-5·|lp|).
//! Seeded top-p rows may split where a uniform falls within float rounding of a nucleus
//! boundary (see `tests/gpu_parity.rs`), so at least 3 of 4 must be identical.
//!
//! The judge on the same GPU pooled by `reward_pool.cu` over hidden states left in device
//! memory, against the judge with its hidden states brought to the host for the CPU pooling:
//! rewards within 1e-4 + 1e-5·|r| (the same hidden states; only the summation order of the
//! head's dot product differs).
//!
//! Runs where a CUDA driver is present and ONNX Runtime's CUDA EP loads (`make gpu-setup`);
//! elsewhere each case is reported as ignored with the reason, never as passed.

mod common;

use libtest_mimic::{Arguments, Failed, Trial};

use tpo_engine::engine::{
    Engine, EngineOptions, GenerateRequest, SampleOutput, SamplingOptions, SamplingParams,
};
use tpo_engine::model::ModelDir;
use tpo_engine::reward::classifier::ClassifierRm;
use tpo_engine::reward::{RewardConfig, RewardInput, RewardModel, DEFAULT_BATCH_TOKENS};
use tpo_engine::runtime::{self, Device, SessionOptions};

const QUESTIONS: [&str; 4] = [
    "What is 2+2?",
    "Name three uses of a paperclip.",
    "Why is the sea salty?",
    "Write a haiku about autumn.",
];

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 2e-4 + 1e-5 * a.abs().max(b.abs())
}

fn params(o: SamplingOptions) -> SamplingParams {
    SamplingParams::new(SamplingOptions {
        max_new_tokens: 32,
        ..o
    })
    .expect("valid test parameters")
}

/// (label, parameters, must the tokens be identical)
fn requests() -> Vec<(String, SamplingParams, bool)> {
    let mut out = Vec::new();
    for (i, _) in QUESTIONS.iter().enumerate() {
        out.push((
            format!("greedy {i}"),
            params(SamplingOptions::default()),
            true,
        ));
        out.push((
            format!("top-p {i}"),
            params(SamplingOptions {
                temperature: 0.7,
                top_p: 0.9,
                seed: Some(11 + i as u64),
                ..SamplingOptions::default()
            }),
            false,
        ));
    }
    out.push((
        "presence penalty".into(),
        params(SamplingOptions {
            temperature: 0.7,
            presence_penalty: 0.5,
            seed: Some(5),
            ..SamplingOptions::default()
        }),
        true,
    ));
    out.push((
        "top_logprobs".into(),
        params(SamplingOptions {
            top_logprobs: 3,
            ..SamplingOptions::default()
        }),
        true,
    ));
    out
}

fn run_batch(engine: &Engine) -> Result<Vec<SampleOutput>, String> {
    let reqs = requests();
    let prompts: Vec<Vec<u32>> = reqs
        .iter()
        .enumerate()
        .map(|(i, _)| {
            engine
                .chat()
                .question_prompt(QUESTIONS[i % QUESTIONS.len()])
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        let handles: Vec<_> = reqs
            .iter()
            .zip(&prompts)
            .map(|((_, p, _), prompt)| {
                let engine = engine.clone();
                s.spawn(move || {
                    engine
                        .generate_blocking(GenerateRequest::new(prompt.clone(), p.clone()))
                        .map(|mut v| v.remove(0))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a request thread panicked".to_string())?
            })
            .collect()
    })
}

fn engine_case(dir: &'static str) -> Result<(), Failed> {
    let model = ModelDir::open(&common::project_root().join("models").join(dir))
        .map_err(|e| e.to_string())?;
    let start = |on_device: bool| {
        Engine::start(
            &model,
            EngineOptions {
                decoder: SessionOptions {
                    device: Device::Cuda(0),
                    threads: 0,
                },
                kv_slots: 16,
                max_seq_len: 512,
                sample_on_device: on_device,
                ..EngineOptions::default()
            },
        )
        .map_err(|e| e.to_string())
    };
    let device = start(true)?;
    if !device.logits_on_device() {
        return Err(
            "the CUDA engine did not keep its logits on the device (see its warning)".into(),
        );
    }
    let host = start(false)?;
    if host.logits_on_device() {
        return Err("sample_on_device: false still sampled on the device".into());
    }
    let got = run_batch(&device)?;
    let want = run_batch(&host)?;
    let mut split = 0;
    for (((label, _, exact), g), w) in requests().iter().zip(&got).zip(&want) {
        let same = g.tokens == w.tokens;
        if !same && *exact {
            return Err(format!("{label}: device {:?} vs host {:?}", g.tokens, w.tokens).into());
        }
        if !same {
            split += 1;
            continue;
        }
        for (k, (a, b)) in g.logprobs.iter().zip(&w.logprobs).enumerate() {
            if !close(*a, *b) {
                return Err(
                    format!("{label}: log-prob of token {k}: device {a} vs host {b}").into(),
                );
            }
        }
        if g.top_logprobs != w.top_logprobs {
            return Err(format!("{label}: top_logprobs differ").into());
        }
    }
    if split > 1 {
        return Err(format!("{split} of 4 seeded top-p samples differ (at most 1 may)").into());
    }
    Ok(())
}

const ANSWERS: [&str; 4] = [
    "4",
    "Hold papers together, reset a device through its pinhole, and clean a groove.",
    "Rivers carry dissolved minerals from rocks into the sea, and evaporation leaves the salt behind.",
    "Red leaves drift down / the maple lets go slowly / cold wind keeps the count",
];

fn reward_case(dir: &'static str) -> Result<(), Failed> {
    let dir = common::project_root().join("models").join(dir);
    let config = RewardConfig::load(&dir).map_err(|e| e.to_string())?;
    let load = |on_device: bool| {
        ClassifierRm::load(
            &dir,
            &config,
            SessionOptions {
                device: Device::Cuda(0),
                threads: 0,
            },
            DEFAULT_BATCH_TOKENS,
            on_device,
        )
        .map_err(|e| e.to_string())
    };
    let device = load(true)?;
    if !device.pools_on_device() {
        return Err("the CUDA judge did not pool on the device (see its warning)".into());
    }
    let host = load(false)?;
    if host.pools_on_device() {
        return Err("pool_on_device: false still pooled on the device".into());
    }
    let inputs: Vec<RewardInput<'_>> = QUESTIONS
        .iter()
        .zip(ANSWERS)
        .map(|(prompt, response)| RewardInput {
            prompt,
            response,
            reference: None,
        })
        .collect();
    let score = |rm: &ClassifierRm| -> Result<Vec<f32>, String> {
        rm.score(&inputs)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    };
    let (got, want) = (score(&device)?, score(&host)?);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if (g - w).abs() > 1e-4 + 1e-5 * w.abs() {
            return Err(format!("row {i}: device-pooled {g} vs host-pooled {w}").into());
        }
    }
    Ok(())
}

/// Why the cases cannot run here, if they cannot.
fn not_runnable() -> Option<String> {
    if let Err(e) = tpo_engine::gpu::driver_status() {
        return Some(e.to_string());
    }
    let path = match tpo_engine::paths::onnxruntime_library_for(Device::Cuda(0)) {
        Ok(p) => p,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = runtime::init(&path) {
        return Some(e.to_string());
    }
    if !runtime::available_providers().contains(&"CUDAExecutionProvider") {
        return Some(format!(
            "{} has no CUDA execution provider (run `make gpu-setup`)",
            path.display()
        ));
    }
    None
}

fn main() {
    let args = Arguments::from_args();
    // Where NVRTC may be, resolved here at the edge as the CLI does at start.
    tpo_engine::gpu::set_nvrtc_candidates(tpo_engine::paths::nvrtc_library_candidates());
    let reason = not_runnable();
    let mut trials: Vec<Trial> = ["smollm2-135m-instruct", "smollm2-135m-instruct-f16"]
        .into_iter()
        .map(|dir| {
            Trial::test(format!("device_logits_vs_host::{dir}"), move || {
                engine_case(dir)
            })
            .with_ignored_flag(reason.is_some())
        })
        .collect();
    trials.extend(
        ["smollm2-judge", "smollm2-judge-f16"]
            .into_iter()
            .map(|dir| {
                Trial::test(format!("device_pooling_vs_host::{dir}"), move || {
                    reward_case(dir)
                })
                .with_ignored_flag(reason.is_some())
            }),
    );
    if let Some(reason) = &reason {
        eprintln!(
            "gpu engine: {} cases NOT RUN ({reason}); they are listed as ignored",
            trials.len()
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
