//! The GPU kernels against their CPU references, on the same inputs and uniforms.
//!
//! Three groups of cases, run by a custom harness (libtest-mimic) so that cases which cannot
//! run are counted as such instead of passing:
//! - `compile::*` compile every kernel to PTX for sm_90 through the engine's own NVRTC path.
//!   NVRTC needs no GPU, so these always run, and fail when NVRTC is missing (`make test`
//!   installs the `nvidia-cuda-nvrtc` wheel) or a kernel does not compile.
//! - `oracle::*` check this harness's float64 model of the sampler against the CPU sampler,
//!   so the tolerance rule below is itself tested on every machine.
//! - `top_p::*` and `pool::*` launch the kernels and compare with the CPU. Without a CUDA
//!   driver they are reported as ignored, with the reason printed first; never as passed.
//!
//! Tolerances. Token ids must be identical, except where a float64 model of the sampler
//! shows that the kernel's token is what a draw within 1e-4 + n·2^-23 of the row's uniform
//! (in mass normalized by the nucleus's; n = the nucleus's size, the error bound of a float32
//! running sum over it) would give: there the CPU's float32 sums and the kernel's
//! 40-bit fixed-point sums may round to different sides of a boundary, which happens often
//! only in rows of thousands of tied or near-equal tokens. Greedy rows have no boundary and
//! must match exactly. Log-probs within 2e-4 + 1e-5·|lp|
//! (the CPU uses a polynomial exp, the kernel `expf`); pooled values within 1e-4·(1 + |x|).
//! Rows the CPU rejects (NaN, +inf, all -inf) must be rejected with the same error.

use libtest_mimic::{Arguments, Failed, Trial};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use tpo_engine::engine::{
    KvArena, KvDtype, KvPlacement, KvShape, LogitsError, Sampled, Sampler, SamplingOptions,
    SamplingParams, SlotId,
};
use tpo_engine::gpu::{self, GpuDevice, GpuPool, GpuSampler, RowSampling};
use tpo_engine::reward::pool::{self as cpu_pool, Hidden};

/// The vocabularies the issue names: SmolLM2 and Llama 3.
const VOCABS: [usize; 2] = [49_152, 128_256];
const BATCH: usize = 64;
const BOUNDARY: f64 = 1e-4;

#[derive(Debug, Clone, Copy)]
enum Rows {
    /// Spread like a language model's logits: a few high, a long low tail.
    Spread,
    /// One token far above the rest.
    Peaked,
    /// Logits from a handful of values: many exact ties.
    Ties,
    /// All `-inf` but one.
    OneFinite,
    /// Half the row `-inf`.
    HalfNegInf,
    /// A NaN somewhere: rejected.
    WithNan,
    /// A `+inf` somewhere: rejected.
    WithPosInf,
    /// Every logit `-inf`: rejected.
    AllNegInf,
}

const ROWS: [Rows; 8] = [
    Rows::Spread,
    Rows::Peaked,
    Rows::Ties,
    Rows::OneFinite,
    Rows::HalfNegInf,
    Rows::WithNan,
    Rows::WithPosInf,
    Rows::AllNegInf,
];

fn make_row(kind: Rows, vocab: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let spread = |rng: &mut ChaCha8Rng| -> f32 {
        let s: f32 = (0..3).map(|_| rng.random::<f32>()).sum();
        (s - 1.5) * 6.0
    };
    let mut row: Vec<f32> = match kind {
        Rows::Ties => (0..vocab)
            .map(|_| rng.random_range(0..4) as f32 * 0.75)
            .collect(),
        Rows::OneFinite | Rows::AllNegInf => vec![f32::NEG_INFINITY; vocab],
        _ => (0..vocab).map(|_| spread(rng)).collect(),
    };
    let at = rng.random_range(0..vocab);
    match kind {
        Rows::Peaked => row[at] += 15.0,
        Rows::OneFinite => row[at] = rng.random::<f32>() * 4.0 - 2.0,
        Rows::HalfNegInf => row
            .iter_mut()
            .step_by(2)
            .for_each(|l| *l = f32::NEG_INFINITY),
        Rows::WithNan => row[at] = f32::NAN,
        Rows::WithPosInf => row[at] = f32::INFINITY,
        _ => {}
    }
    row
}

#[derive(Debug, Clone, Copy)]
struct Setting {
    name: &'static str,
    temperature: f32,
    top_p: f32,
    top_k: usize,
    min_p: f32,
}

const SETTINGS: [Setting; 7] = [
    Setting {
        name: "greedy",
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
    },
    Setting {
        name: "t1_untruncated",
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
    },
    Setting {
        name: "t0.7_p0.95",
        temperature: 0.7,
        top_p: 0.95,
        top_k: 0,
        min_p: 0.0,
    },
    Setting {
        name: "t1_p0.9_k50",
        temperature: 1.0,
        top_p: 0.9,
        top_k: 50,
        min_p: 0.0,
    },
    Setting {
        name: "t0.8_minp0.05",
        temperature: 0.8,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.05,
    },
    Setting {
        name: "t0.001_p0.95",
        temperature: 0.001,
        top_p: 0.95,
        top_k: 0,
        min_p: 0.0,
    },
    Setting {
        name: "t1.3_k5",
        temperature: 1.3,
        top_p: 1.0,
        top_k: 5,
        min_p: 0.0,
    },
];

fn params(s: Setting) -> SamplingParams {
    SamplingParams::new(SamplingOptions {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
        seed: Some(0),
        ..SamplingOptions::default()
    })
    .expect("valid settings")
}

/// A batch of rows and their uniforms, the same on every run.
fn batch(kind: Rows, vocab: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut logits = Vec::with_capacity(BATCH * vocab);
    let mut uniforms = Vec::with_capacity(BATCH);
    for _ in 0..BATCH {
        logits.extend(make_row(kind, vocab, &mut rng));
        uniforms.push(rng.random::<f32>());
    }
    (logits, uniforms)
}

/// How far (in mass normalized by the nucleus's) the draw `u` lies from the cumulative
/// interval of `token` in the sampler's order, computed in float64: 0 when a float64 sampler
/// would draw `token` itself. Greedy rows have no boundary: 0 for the argmax, infinite for
/// any other token. `None` for rows the CPU rejects (NaN, +inf, all -inf).
fn draw_distance(row: &[f32], s: Setting, u: f32, token: u32) -> Option<(f64, usize)> {
    if row.iter().any(|l| l.is_nan() || *l == f32::INFINITY) {
        return None;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return None;
    }
    if s.temperature == 0.0 || s.top_k == 1 {
        let first_max = row.iter().position(|&l| l == max)? as u32;
        return Some((
            if token == first_max {
                0.0
            } else {
                f64::INFINITY
            },
            1,
        ));
    }
    if row
        .get(token as usize)
        .is_none_or(|&l| l == f32::NEG_INFINITY)
    {
        return Some((f64::INFINITY, 1));
    }
    let inv_t = 1.0 / f64::from(s.temperature);
    let w = |l: f32| {
        if l == f32::NEG_INFINITY {
            0.0
        } else {
            ((f64::from(l) - f64::from(max)) * inv_t).exp()
        }
    };
    let limit = if s.top_k == 0 {
        row.len()
    } else {
        s.top_k.min(row.len())
    };
    let untruncated = s.top_p >= 1.0 && limit == row.len() && s.min_p <= 0.0;
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    if !untruncated {
        order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    }
    let mut kept = order.len();
    if !untruncated {
        let total: f64 = row.iter().map(|&l| w(l)).sum();
        let p = f64::from(s.top_p);
        let mut cum = 0.0;
        for (n, &i) in order.iter().take(limit).enumerate() {
            cum += w(row[i as usize]) / total;
            if cum >= p || n + 1 == limit {
                kept = n + 1;
                break;
            }
        }
        if s.min_p > 0.0 {
            let floor = f64::from(s.min_p);
            let by_min_p = order[..kept]
                .iter()
                .take_while(|&&i| w(row[i as usize]) >= floor)
                .count();
            kept = kept.min(by_min_p);
        }
        kept = kept.max(1);
    }
    let mass: f64 = order[..kept].iter().map(|&i| w(row[i as usize])).sum();
    let target = f64::from(u);
    // The token's interval, continuing past the nucleus (a cut that rounding moved).
    let mut cum = 0.0;
    for &i in &order {
        let before = cum;
        cum += w(row[i as usize]) / mass;
        if i == token {
            let distance = if target < before {
                before - target
            } else if target >= cum {
                target - cum
            } else {
                0.0
            };
            return Some((distance, kept));
        }
    }
    Some((f64::INFINITY, kept))
}

/// The distance a token may lie from the draw: 1e-4, plus the error bound of a float32
/// running sum over the nucleus (`kept` terms, each adding up to one rounding, 2^-23 of the
/// running mass), which the CPU reference's own cumulative sums have.
fn allowed_distance(kept: usize) -> f64 {
    BOUNDARY + kept as f64 * f64::from(f32::EPSILON)
}

fn cpu_sample(
    logits: &[f32],
    vocab: usize,
    s: Setting,
    uniforms: &[f32],
) -> Vec<Result<Sampled, LogitsError>> {
    let p = params(s);
    let mut sampler = Sampler::default();
    logits
        .chunks(vocab)
        .zip(uniforms)
        .map(|(row, &u)| sampler.sample(row, &p, u, &[]))
        .collect()
}

/// Compares one case's rows; `other` is the kernel's (or, for the oracle cases, the
/// oracle's) result per row.
fn compare_tokens(
    logits: &[f32],
    vocab: usize,
    s: Setting,
    uniforms: &[f32],
    cpu: &[Result<Sampled, LogitsError>],
    other: &[Result<Sampled, LogitsError>],
    check_logprobs: bool,
) -> Result<usize, Failed> {
    let mut boundary_rows = 0;
    for (r, ((row, &u), (c, g))) in logits
        .chunks(vocab)
        .zip(uniforms)
        .zip(cpu.iter().zip(other))
        .enumerate()
    {
        match (c, g) {
            (Err(ce), Err(ge)) if ce == ge => {}
            (Ok(c), Ok(g)) => {
                if c.token != g.token {
                    let (distance, kept) =
                        draw_distance(row, s, u, g.token).unwrap_or((f64::INFINITY, 1));
                    if distance >= allowed_distance(kept) {
                        return Err(format!(
                            "row {r}: token {} vs the reference's {} (u = {u}; a float64 draw \
                             reaches {} only {distance:.2e} away from u)",
                            g.token, c.token, g.token
                        )
                        .into());
                    }
                    boundary_rows += 1;
                } else if check_logprobs {
                    let tol = 2e-4 + 1e-5 * c.logprob.abs();
                    if (c.logprob - g.logprob).abs() > tol {
                        return Err(format!(
                            "row {r}: log-prob {} vs the CPU's {} (tolerance {tol:.1e})",
                            g.logprob, c.logprob
                        )
                        .into());
                    }
                }
            }
            (c, g) => {
                return Err(format!("row {r}: {g:?} vs the CPU's {c:?}").into());
            }
        }
    }
    Ok(boundary_rows)
}

fn seed_of(kind: Rows, vocab: usize, s: Setting) -> u64 {
    let k = ROWS
        .iter()
        .position(|r| std::mem::discriminant(r) == std::mem::discriminant(&kind));
    (k.unwrap_or(0) as u64) * 1_000_003
        + vocab as u64 * 31
        + u64::from(s.temperature.to_bits() % 9973)
}

fn top_p_case(kind: Rows, vocab: usize, s: Setting) -> Result<(), Failed> {
    let (logits, uniforms) = batch(kind, vocab, seed_of(kind, vocab, s));
    let cpu = cpu_sample(&logits, vocab, s, &uniforms);
    let device = GpuDevice::open(0).map_err(|e| e.to_string())?;
    let sampler = GpuSampler::new(&device).map_err(|e| e.to_string())?;
    let p = params(s);
    let rows: Vec<RowSampling> = uniforms
        .iter()
        .map(|&u| RowSampling::for_row(&p, u, &[]).ok_or("the kernel refused a plain row"))
        .collect::<Result<_, _>>()?;
    let gpu: Vec<Result<Sampled, LogitsError>> = sampler
        .sample_host(&logits, vocab, &rows)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| r.map(Sampled::from).map_err(LogitsError::from))
        .collect();
    compare_tokens(&logits, vocab, s, &uniforms, &cpu, &gpu, true).map(|_| ())
}

/// The CPU sampler's tokens are ones a float64 sampler draws within the tolerance: the
/// rule the kernel is held to, checked on the reference itself (runs without a GPU). Tie and
/// wide-nucleus rows exercise the tolerance; greedy and one-candidate rows must be exact.
fn oracle_case(kind: Rows, vocab: usize, s: Setting) -> Result<(), Failed> {
    let (logits, uniforms) = batch(kind, vocab, seed_of(kind, vocab, s));
    let cpu = cpu_sample(&logits, vocab, s, &uniforms);
    // Compare against an impossible reference token so every row takes the distance rule.
    let impossible: Vec<Result<Sampled, LogitsError>> = cpu
        .iter()
        .map(|c| {
            c.clone().map(|c| Sampled {
                token: u32::MAX,
                ..c
            })
        })
        .collect();
    compare_tokens(&logits, vocab, s, &uniforms, &impossible, &cpu, false).map(|_| ())
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + b.abs())
}

struct PoolInputs {
    hidden: Vec<f32>,
    masks: Vec<Vec<i64>>,
    batch: usize,
    seq: usize,
    dim: usize,
}

/// Right-padded rows, left-padded rows and one empty row.
fn pool_inputs(dim: usize) -> PoolInputs {
    let (batch, seq) = (9, 37);
    let mut rng = ChaCha8Rng::seed_from_u64(dim as u64);
    let hidden = (0..batch * seq * dim)
        .map(|_| rng.random::<f32>() * 4.0 - 2.0)
        .collect();
    let masks = (0..batch)
        .map(|b| {
            let len = rng.random_range(1..=seq);
            (0..seq)
                .map(|t| match b {
                    0 => 0,
                    b if b % 2 == 1 => i64::from(t < len),
                    _ => i64::from(t >= seq - len),
                })
                .collect()
        })
        .collect();
    PoolInputs {
        hidden,
        masks,
        batch,
        seq,
        dim,
    }
}

fn pool_case(what: &'static str, dim: usize, labels: usize) -> Result<(), Failed> {
    let inputs = pool_inputs(dim);
    let hidden = Hidden::new(&inputs.hidden, inputs.batch, inputs.seq, inputs.dim)
        .ok_or("bad test buffer")?;
    let states = gpu::HiddenStates::from(hidden);
    let masks: Vec<&[i64]> = inputs.masks.iter().map(Vec::as_slice).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let weight: Vec<f32> = (0..labels * dim)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let bias: Vec<f32> = (0..labels).map(|_| rng.random::<f32>()).collect();
    let device = GpuDevice::open(0).map_err(|e| e.to_string())?;
    let pool = GpuPool::new(&device).map_err(|e| e.to_string())?;
    let head = |x: &[f32]| -> Vec<f32> {
        (0..labels)
            .map(|l| cpu_pool::head_dot(&weight[l * dim..(l + 1) * dim], bias[l], x))
            .collect()
    };
    let check = |row: usize, got: &[f32], want: &[f32]| -> Result<(), Failed> {
        if got.len() != want.len() || got.iter().zip(want).any(|(&g, &w)| !close(g, w)) {
            return Err(format!("{what} row {row}: {got:?} vs the CPU's {want:?}").into());
        }
        Ok(())
    };
    let check_last_token = |got: &[Option<Vec<f32>>]| -> Result<(), Failed> {
        for (r, (g, want)) in got
            .iter()
            .zip(cpu_pool::last_token(&hidden, &masks))
            .enumerate()
        {
            match (g, want) {
                (None, None) => {}
                (Some(g), Some(x)) => check(r, g, &head(x))?,
                _ => return Err(format!("row {r}: empty-row handling differs").into()),
            }
        }
        Ok(())
    };
    match what {
        "last_token_head" => {
            let got = pool
                .last_token_head(&states, &masks, &weight, &bias, labels)
                .map_err(|e| e.to_string())?;
            check_last_token(&got)?;
        }
        "last_token_head_device" => {
            // The hidden states already in device memory, as a reward graph's output bound
            // there leaves them (what the reward service's device pooling reads).
            let buffer = tpo_engine::gpu::DeviceBuffer::zeroed(
                device.context(),
                std::mem::size_of_val(&inputs.hidden[..]),
            )
            .map_err(|e| e.to_string())?;
            // SAFETY: the buffer holds exactly `inputs.hidden.len()` float32s (allocated above
            // in the current context) and nothing else uses it; the copy is synchronous.
            unsafe { cudarc::driver::result::memcpy_htod_sync(buffer.ptr(), &inputs.hidden[..]) }
                .map_err(|e| e.to_string())?;
            let dhead = pool
                .upload_head(&weight, &bias, labels, dim)
                .map_err(|e| e.to_string())?;
            // SAFETY: the buffer holds batch × seq × dim float32s, written synchronously above,
            // and nothing writes it during the call.
            let got =
                unsafe { pool.last_token_head_device(buffer.ptr(), inputs.seq, &masks, &dhead) }
                    .map_err(|e| e.to_string())?;
            check_last_token(&got)?;
        }
        "masked_mean_head" => {
            let means = cpu_pool::masked_mean(&hidden, &masks);
            let got = pool
                .masked_mean(&states, &masks)
                .map_err(|e| e.to_string())?;
            for (r, (g, w)) in got.iter().zip(&means).enumerate() {
                check(r, g, w)?;
            }
            let flat: Vec<f32> = means.iter().flatten().copied().collect();
            let heads = pool
                .head(&flat, dim, &weight, &bias, labels)
                .map_err(|e| e.to_string())?;
            for (r, (g, x)) in heads.iter().zip(&means).enumerate() {
                check(r, g, &head(x))?;
            }
        }
        _ => {
            let a: Vec<f32> = inputs.hidden[..inputs.batch * dim].to_vec();
            let mut b: Vec<f32> =
                inputs.hidden[inputs.batch * dim..2 * inputs.batch * dim].to_vec();
            b[..dim].fill(0.0); // a zero vector: cosine 0
            let got = pool.cosine(&a, &b, dim).map_err(|e| e.to_string())?;
            for (r, g) in got.iter().enumerate() {
                let want = cpu_pool::cosine(&a[r * dim..(r + 1) * dim], &b[r * dim..(r + 1) * dim]);
                check(r, &[*g], &[want])?;
            }
        }
    }
    Ok(())
}

/// The KV arena on the device against the host arena: the same writes, prefix copies and
/// swaps leave the same keys in every slot and head (device copies vs `copy_within`).
fn arena_case(dtype: KvDtype) -> Result<(), Failed> {
    let shape = KvShape {
        layers: 3,
        kv_heads: 3,
        max_len: 64,
        head_dim: 64,
        dtype,
    };
    let slots = 4;
    let mut host = KvArena::on(KvPlacement::Host, shape, slots).map_err(|e| e.to_string())?;
    let mut device = KvArena::on(KvPlacement::Cuda(0), shape, slots).map_err(|e| e.to_string())?;
    let rng = ChaCha8Rng::seed_from_u64(7);
    for arena in [&mut host, &mut device] {
        let mut rng = rng.clone();
        for layer in 0..shape.layers {
            for slot in 0..slots {
                for head in 0..shape.kv_heads {
                    let rows: Vec<f32> = (0..shape.max_len * shape.head_dim)
                        .map(|_| rng.random_range(-4.0f32..4.0))
                        .collect();
                    arena
                        .write_key_rows(layer, SlotId(slot), head, &rows)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    let ops: [(bool, usize, usize, usize); 5] = [
        (true, 0, 1, 17),
        (false, 1, 3, 64),
        (true, 3, 2, 1),
        (false, 2, 0, 40),
        (true, 0, 3, 0),
    ];
    for (copy, a, b, len) in ops {
        for arena in [&mut host, &mut device] {
            let r = if copy {
                arena.copy_prefix(SlotId(a), SlotId(b), len)
            } else {
                arena.swap_prefix(SlotId(a), SlotId(b), len)
            };
            r.map_err(|e| e.to_string())?;
        }
        for layer in 0..shape.layers {
            for slot in 0..slots {
                for head in 0..shape.kv_heads {
                    let want = host
                        .key_rows(layer, SlotId(slot), head)
                        .map_err(|e| e.to_string())?;
                    let got = device
                        .key_rows(layer, SlotId(slot), head)
                        .map_err(|e| e.to_string())?;
                    if want != got {
                        return Err(format!(
                            "after {} {a}->{b} len {len}: layer {layer} slot {slot} head {head} differs",
                            if copy { "copy" } else { "swap" }
                        )
                        .into());
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    // Where NVRTC may be, resolved here at the edge as the CLI does at start.
    gpu::set_nvrtc_candidates(tpo_engine::paths::nvrtc_library_candidates());
    let mut trials: Vec<Trial> = gpu::ALL_KERNELS
        .iter()
        .map(|k| {
            Trial::test(format!("compile::{}::sm_90", k.file), move || {
                let ptx = gpu::compile_ptx(k, "sm_90").map_err(|e| e.to_string())?;
                let text = ptx.to_src();
                for f in k.functions {
                    if !text.contains(&format!(".entry {f}(")) {
                        return Err(format!("the PTX has no entry point {f}").into());
                    }
                }
                Ok(())
            })
        })
        .collect();

    for vocab in VOCABS {
        for kind in [Rows::Spread, Rows::Ties, Rows::HalfNegInf] {
            for s in SETTINGS {
                trials.push(Trial::test(
                    format!("oracle::{kind:?}::{}::v{vocab}", s.name),
                    move || oracle_case(kind, vocab, s),
                ));
            }
        }
    }

    let no_driver = gpu::driver_status().err().map(|e| e.to_string());
    let mut gpu_trials = Vec::new();
    for vocab in VOCABS {
        for kind in ROWS {
            for s in SETTINGS {
                gpu_trials.push(Trial::test(
                    format!("top_p::{kind:?}::{}::v{vocab}", s.name),
                    move || top_p_case(kind, vocab, s),
                ));
            }
        }
    }
    for (what, dim, labels) in [
        ("last_token_head", 576, 1),
        ("last_token_head", 384, 3),
        ("last_token_head_device", 576, 1),
        ("last_token_head_device", 384, 3),
        ("masked_mean_head", 384, 1),
        ("masked_mean_head", 576, 2),
        ("cosine", 384, 1),
    ] {
        gpu_trials.push(Trial::test(
            format!("pool::{what}::h{dim}_l{labels}"),
            move || pool_case(what, dim, labels),
        ));
    }
    for dtype in [KvDtype::F32, KvDtype::F16] {
        gpu_trials.push(Trial::test(format!("kv_arena::{dtype:?}"), move || {
            arena_case(dtype)
        }));
    }
    if let Some(reason) = &no_driver {
        eprintln!(
            "gpu parity: {} kernel-vs-CPU cases NOT RUN ({reason}); they are listed as ignored",
            gpu_trials.len()
        );
    }
    trials.extend(
        gpu_trials
            .into_iter()
            .map(|t| t.with_ignored_flag(no_driver.is_some())),
    );
    libtest_mimic::run(&args, trials).exit();
}
