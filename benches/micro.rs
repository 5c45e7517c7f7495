//! Micro-benchmarks of our own code around ONNX Runtime, so regressions show: the sampler on
//! one row of the policy's vocabulary (49,152) and on a batch of 32 rows, greedy and
//! nucleus, and reward-head pooling (last token, masked mean, head dot product).
//!
//! `cargo bench --bench micro` (add `-- sampler` to run one group). The rows are synthetic
//! but shaped like the model's: most logits spread around zero, a few tens of tokens
//! standing out, which is what makes the nucleus small.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tpo_engine::engine::{Sampler, SamplingOptions, SamplingParams};
use tpo_engine::reward::pool::{head_dot, last_token, masked_mean, Hidden};

const VOCAB: usize = 49_152;

/// Deterministic model-like logits: noise in [-4, 4) plus 32 tokens between +6 and +12.
fn logits(rows: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32) / (1u64 << 24) as f32
    };
    let mut out = vec![0.0f32; rows * VOCAB];
    for row in out.chunks_mut(VOCAB) {
        for l in row.iter_mut() {
            *l = next() * 8.0 - 4.0;
        }
        for _ in 0..32 {
            let at = (next() * VOCAB as f32) as usize % VOCAB;
            row[at] = 6.0 + next() * 6.0;
        }
    }
    out
}

fn params(temperature: f32, top_p: f32) -> SamplingParams {
    match SamplingParams::new(SamplingOptions {
        temperature,
        top_p,
        ..SamplingOptions::default()
    }) {
        Ok(p) => p,
        Err(e) => panic!("bench parameters: {e}"),
    }
}

fn sampler(c: &mut Criterion) {
    let mut group = c.benchmark_group("sampler");
    let settings = [
        ("greedy", params(0.0, 1.0)),
        ("t0.7_p0.95", params(0.7, 0.95)),
        ("t1.0_p0.95", params(1.0, 0.95)),
        ("t1.0_p1.0", params(1.0, 1.0)),
    ];
    for batch in [1usize, 32] {
        let rows = logits(batch, 7);
        group.throughput(Throughput::Elements(batch as u64));
        for (name, p) in &settings {
            group.bench_with_input(BenchmarkId::new(*name, batch), &rows, |b, rows| {
                let mut s = Sampler::default();
                let mut u = 0.0f32;
                b.iter(|| {
                    for row in rows.chunks(VOCAB) {
                        u = (u + 0.618_034) % 1.0;
                        let _ = black_box(s.sample(black_box(row), p, u, &[]));
                    }
                });
            });
        }
    }
    group.finish();
}

fn pooling(c: &mut Criterion) {
    // The judge's shape: batch 16, 256 tokens, hidden 576; right padding of varied lengths.
    let (batch, seq, hidden) = (16usize, 256usize, 576usize);
    let data: Vec<f32> = (0..batch * seq * hidden)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let masks: Vec<Vec<i64>> = (0..batch)
        .map(|b| {
            let len = seq / 2 + (b * 37) % (seq / 2);
            (0..seq).map(|t| i64::from(t < len)).collect()
        })
        .collect();
    let mask_refs: Vec<&[i64]> = masks.iter().map(Vec::as_slice).collect();
    let Some(h) = Hidden::new(&data, batch, seq, hidden) else {
        panic!("bench hidden-state shape");
    };
    let weight: Vec<f32> = (0..hidden).map(|i| (i as f32).sin()).collect();
    let mut group = c.benchmark_group("pooling");
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("last_token_head_16x256x576", |b| {
        b.iter(|| {
            let rows = last_token(black_box(&h), &mask_refs);
            let scores: Vec<f32> = rows
                .iter()
                .map(|r| r.map_or(f32::NAN, |x| head_dot(&weight, 0.1, x)))
                .collect();
            black_box(scores)
        });
    });
    group.bench_function("masked_mean_16x256x576", |b| {
        b.iter(|| black_box(masked_mean(black_box(&h), &mask_refs)));
    });
    group.finish();
}

criterion_group!(benches, sampler, pooling);
criterion_main!(benches);
