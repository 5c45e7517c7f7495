//! The CPU sampler's tests: the fused path against the reference, parameter validation,
//! the nucleus against a full sort, non-finite rows, penalties and log-probs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn params(temperature: f32, top_p: f32, top_k: usize) -> SamplingParams {
    SamplingParams::new(SamplingOptions {
        temperature,
        top_p,
        top_k,
        seed: Some(1),
        ..SamplingOptions::default()
    })
    .unwrap()
}

/// Full-sort reference of the nucleus: tokens kept by top-k then top-p.
fn reference_nucleus(logits: &[f32], t: f32, top_p: f32, top_k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|a, b| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    });
    if top_k > 0 {
        idx.truncate(top_k);
    }
    let max = logits[idx[0] as usize];
    let total: f32 = logits.iter().map(|l| ((l - max) / t).exp()).sum();
    let mut mass = 0.0;
    let mut kept = Vec::new();
    for i in idx {
        kept.push(i);
        mass += ((logits[i as usize] - max) / t).exp() / total;
        if mass >= top_p {
            break;
        }
    }
    kept
}

fn pseudo_logits(n: usize, spread: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..n).map(|_| rng.random::<f32>() * spread).collect()
}

#[test]
fn the_fused_sampler_equals_the_reference_token_for_token_and_bit_for_bit() {
    let mut rows = vec![
        pseudo_logits(49_152, 12.0),
        pseudo_logits(49_157, 3.0),
        pseudo_logits(1_000, 30.0),
        pseudo_logits(13, 1.0),
    ];
    let mut holes = pseudo_logits(49_152, 8.0);
    for (i, l) in holes.iter_mut().enumerate() {
        if i % 3 != 0 {
            *l = f32::NEG_INFINITY;
        }
    }
    holes[777] = 9.5;
    holes[30_000] = 9.5;
    rows.push(holes);
    let settings = [
        (0.0, 1.0, 0, 0.0, 0),
        (0.7, 0.95, 0, 0.0, 0),
        (1.0, 0.95, 0, 0.0, 3),
        (1.0, 1.0, 0, 0.0, 0),
        (0.7, 1.0, 0, 0.0, 5),
        (1.3, 0.9, 20, 0.0, 0),
        (0.8, 1.0, 50, 0.0, 0),
        (1.0, 1.0, 0, 0.05, 0),
        (0.05, 0.5, 0, 0.0, 0),
    ];
    let mut fused = Sampler::default();
    let mut reference = Sampler::default();
    for (r, row) in rows.iter().enumerate() {
        for &(temperature, top_p, top_k, min_p, top_logprobs) in &settings {
            let p = SamplingParams::new(SamplingOptions {
                temperature,
                top_p,
                top_k,
                min_p,
                top_logprobs,
                seed: Some(1),
                ..SamplingOptions::default()
            })
            .unwrap();
            for k in 0..97 {
                let u = (k as f32 + 0.5) / 97.0;
                let a = fused.sample(row, &p, u, &[]).unwrap();
                let b = reference.sample_reference(row, &p, u, &[]).unwrap();
                assert_eq!(a.token, b.token, "row {r} t {temperature} p {top_p} u {u}");
                assert_eq!(a.logprob.to_bits(), b.logprob.to_bits(), "row {r}");
                assert_eq!(a.top, b.top);
            }
        }
    }
    // Penalized rows take the reference path itself.
    let p = with(SamplingOptions {
        temperature: 0.7,
        presence_penalty: 1.5,
        ..SamplingOptions::default()
    });
    let row = &rows[0];
    assert_eq!(
        fused.sample(row, &p, 0.3, &[5, 9]),
        reference.sample_reference(row, &p, 0.3, &[5, 9])
    );
}

#[test]
fn rejects_invalid_parameters_by_name() {
    let bad = |o: SamplingOptions| SamplingParams::new(o).unwrap_err();
    let d = SamplingOptions::default;
    assert_eq!(
        bad(SamplingOptions {
            temperature: -1.0,
            ..d()
        }),
        SamplingError::Temperature(-1.0)
    );
    assert_eq!(
        bad(SamplingOptions { top_p: 0.0, ..d() }),
        SamplingError::TopP(0.0)
    );
    assert_eq!(
        bad(SamplingOptions { top_p: 1.5, ..d() }),
        SamplingError::TopP(1.5)
    );
    assert_eq!(
        bad(SamplingOptions { min_p: 1.0, ..d() }),
        SamplingError::MinP(1.0)
    );
    assert_eq!(
        bad(SamplingOptions {
            max_new_tokens: 0,
            ..d()
        }),
        SamplingError::MaxNewTokens
    );
    assert_eq!(
        bad(SamplingOptions {
            stop: vec![String::new()],
            ..d()
        }),
        SamplingError::EmptyStop
    );
    assert!(matches!(
        bad(SamplingOptions {
            temperature: f32::NAN,
            ..d()
        }),
        SamplingError::Temperature(_)
    ));
}

#[test]
fn greedy_takes_the_argmax_and_reports_its_log_softmax() {
    let logits = [0.0, 3.0, 1.0];
    let s = Sampler::default()
        .sample(&logits, &SamplingParams::greedy(1).unwrap(), 0.99, &[])
        .unwrap();
    assert_eq!(s.token, 1);
    let z: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
    assert!((s.logprob - (3.0 - z.ln())).abs() < 1e-6);
}

#[test]
fn partial_selection_draws_only_from_the_full_sort_nucleus() {
    // Flat logits force the candidate set to widen several times.
    for (spread, top_p, top_k) in [
        (1.0, 0.95, 0),
        (20.0, 0.9, 0),
        (5.0, 0.5, 100),
        (2.0, 1.0, 0),
    ] {
        let logits = pseudo_logits(4096, spread);
        let p = params(0.7, top_p, top_k);
        let nucleus = reference_nucleus(&logits, 0.7, top_p, top_k);
        let mut sampler = Sampler::default();
        let mut seen = std::collections::HashSet::new();
        for k in 0..400 {
            let u = (k as f32 + 0.5) / 400.0;
            let s = sampler.sample(&logits, &p, u, &[]).unwrap();
            assert!(
                nucleus.contains(&s.token),
                "token {} outside nucleus (spread {spread})",
                s.token
            );
            seen.insert(s.token);
        }
        assert!(seen.len() > 1, "sampling collapsed to one token");
    }
}

#[test]
fn an_untruncated_draw_is_the_inverse_cdf_in_token_order() {
    // 49,152 tokens (768 blocks) with a few large ones and -inf holes.
    let mut logits = pseudo_logits(49_152, 6.0);
    for (i, l) in logits.iter_mut().enumerate() {
        if i % 97 == 0 {
            *l = f32::NEG_INFINITY;
        }
    }
    logits[40_000] = 14.0;
    logits[64] = 12.5;
    logits[49_151] = 13.0;
    for t in [1.0f32, 0.7] {
        let p = params(t, 1.0, 0);
        let max = 14.0f32;
        let w: Vec<f64> = logits
            .iter()
            .map(|&l| (((l - max) / t) as f64).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut sampler = Sampler::default();
        let draws = 20_000;
        let mut counts = std::collections::HashMap::new();
        for k in 0..draws {
            let u = (k as f32 + 0.5) / draws as f32;
            let s = sampler.sample(&logits, &p, u, &[]).unwrap();
            assert!(logits[s.token as usize].is_finite(), "drew a -inf token");
            *counts.entry(s.token).or_insert(0usize) += 1;
        }
        // A stratified grid of u: each token gets its probability's share of the grid,
        // within a couple of grid points.
        for token in [40_000u32, 64, 49_151] {
            let expected = w[token as usize] / total * draws as f64;
            let got = *counts.get(&token).unwrap_or(&0) as f64;
            assert!(
                (got - expected).abs() <= 2.0 + expected * 1e-3,
                "t {t} token {token}: {got} draws, expected {expected:.1}"
            );
        }
        let rest: usize = counts
            .iter()
            .filter(|(k, _)| ![40_000u32, 64, 49_151].contains(k))
            .map(|(_, c)| c)
            .sum();
        let expected_rest = (total - w[40_000] - w[64] - w[49_151]) / total * draws as f64;
        assert!((rest as f64 - expected_rest).abs() <= 4.0 + expected_rest * 1e-3);
        // The edges of u.
        for u in [0.0f32, 1.0 - f32::EPSILON / 2.0] {
            let s = sampler.sample(&logits, &p, u, &[]).unwrap();
            assert!(logits[s.token as usize].is_finite());
        }
    }
}

#[test]
fn argmax_takes_the_first_of_ties_and_skips_nan() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    assert_eq!(argmax(&[f32::NAN, 0.5, 0.7, f32::NAN]), 2);
    let mut long = vec![0.0f32; 1001];
    long[1000] = 1.0;
    assert_eq!(argmax(&long), 1000);
}

#[test]
fn fast_exp_matches_std_exp() {
    for i in 0..=20_000 {
        let x = -(i as f32) * 0.0043;
        let (a, b) = (fast_exp(x), x.exp());
        assert!(
            (a - b).abs() <= 2e-7 * (1.0 - x) * b + 1e-38,
            "exp({x}): {a} vs {b}"
        );
    }
}

#[test]
fn the_same_uniform_gives_the_same_token() {
    let logits = pseudo_logits(1000, 8.0);
    let p = params(0.7, 0.95, 0);
    let mut sampler = Sampler::default();
    let a = sampler.sample(&logits, &p, 0.3, &[]).unwrap();
    let b = sampler.sample(&logits, &p, 0.3, &[]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn rng_streams_depend_on_seed_and_index_only() {
    let p = params(0.7, 0.95, 0);
    let draw = |i| {
        (0..4)
            .map(|_| 0)
            .fold((Vec::new(), p.rng(i)), |(mut v, mut r), _| {
                v.push(r.next_uniform());
                (v, r)
            })
            .0
    };
    assert_eq!(draw(3), draw(3));
    assert_ne!(draw(3), draw(4));
    let shifted = SamplingParams::new(SamplingOptions {
        seed: Some(2),
        ..p.options().clone()
    })
    .unwrap();
    let mut r = shifted.rng(2);
    assert_eq!(
        draw(3)[0],
        r.next_uniform(),
        "sample i of seed s is seed s + i"
    );
}

fn with(options: SamplingOptions) -> SamplingParams {
    SamplingParams::new(SamplingOptions {
        seed: Some(1),
        ..options
    })
    .unwrap()
}

#[test]
fn non_finite_rows_are_errors_not_hangs() {
    // Each of these used to spin forever in the top-p loop (or sample garbage).
    let sampled = SamplingOptions {
        temperature: 0.7,
        top_p: 0.9,
        ..SamplingOptions::default()
    };
    let cases: Vec<(Vec<f32>, LogitsError)> = vec![
        (vec![f32::NAN; 64], LogitsError::NotANumber { token: 0 }),
        (
            {
                let mut r = pseudo_logits(64, 4.0);
                r[17] = f32::NAN;
                r
            },
            LogitsError::NotANumber { token: 17 },
        ),
        (
            {
                let mut r = pseudo_logits(64, 4.0);
                r[5] = f32::INFINITY;
                r[9] = f32::INFINITY;
                r
            },
            LogitsError::Infinite { token: 5 },
        ),
        (
            vec![f32::NEG_INFINITY; 64],
            LogitsError::AllNegativeInfinity,
        ),
    ];
    for top_k in [0, 1, 5] {
        for greedy in [false, true] {
            let options = if greedy {
                SamplingOptions::default()
            } else {
                SamplingOptions {
                    top_k,
                    ..sampled.clone()
                }
            };
            let p = with(options);
            for (row, expected) in &cases {
                let got = Sampler::default().sample(row, &p, 0.5, &[]);
                assert_eq!(got, Err(expected.clone()), "top_k {top_k}, greedy {greedy}");
            }
        }
    }
}

#[test]
fn a_row_that_is_all_minus_infinity_but_one_samples_that_one() {
    let mut row = vec![f32::NEG_INFINITY; 4096];
    row[1234] = -3.0;
    for top_p in [0.5, 1.0] {
        let p = with(SamplingOptions {
            temperature: 1.3,
            top_p,
            ..SamplingOptions::default()
        });
        for u in [0.0, 0.5, 0.999] {
            let s = Sampler::default().sample(&row, &p, u, &[]).unwrap();
            assert_eq!(s.token, 1234);
            assert!(s.logprob.abs() < 1e-5, "logprob {}", s.logprob);
        }
    }
}

#[test]
fn penalties_shift_the_sampled_distribution_but_not_the_reported_logprob() {
    // Token 0 is far ahead; a frequency penalty over three earlier 0s takes it back.
    let row = [5.0f32, 4.0, 0.0, 0.0];
    let greedy_penalized = with(SamplingOptions {
        frequency_penalty: 1.0,
        ..SamplingOptions::default()
    });
    let history = [0, 0, 0];
    let s = Sampler::default()
        .sample(&row, &greedy_penalized, 0.5, &history)
        .unwrap();
    assert_eq!(s.token, 1, "5 - 3 * 1.0 = 2 < 4");
    assert!((s.logprob - log_softmax_at(&row, 1)).abs() < 1e-6);
    // Presence counts once, however often the token came.
    let presence = with(SamplingOptions {
        presence_penalty: 0.5,
        ..SamplingOptions::default()
    });
    let s = Sampler::default()
        .sample(&row, &presence, 0.5, &history)
        .unwrap();
    assert_eq!(s.token, 0, "5 - 0.5 > 4");
    let s = Sampler::default()
        .sample(&row, &presence, 0.5, &[])
        .unwrap();
    assert_eq!(s.token, 0);
    // A negative penalty favours repeats.
    let favour = with(SamplingOptions {
        presence_penalty: -2.0,
        ..SamplingOptions::default()
    });
    let s = Sampler::default().sample(&row, &favour, 0.5, &[3]).unwrap();
    assert_eq!(s.token, 0, "0 + 2 < 5");
    let s = Sampler::default()
        .sample(&[1.0, 0.0, 0.0, 0.5], &favour, 0.5, &[3])
        .unwrap();
    assert_eq!(s.token, 3, "0.5 + 2 > 1");
}

#[test]
fn penalties_out_of_range_are_refused() {
    for (presence, frequency) in [(2.5, 0.0), (0.0, -2.1), (f32::NAN, 0.0)] {
        let err = SamplingParams::new(SamplingOptions {
            presence_penalty: presence,
            frequency_penalty: frequency,
            ..SamplingOptions::default()
        })
        .unwrap_err();
        assert!(matches!(err, SamplingError::Penalty { .. }), "{err:?}");
    }
    let err = SamplingParams::new(SamplingOptions {
        top_logprobs: 21,
        ..SamplingOptions::default()
    })
    .unwrap_err();
    assert_eq!(err, SamplingError::TopLogprobs(21));
}

#[test]
fn top_logprobs_are_the_full_sort_top_k_of_the_log_softmax() {
    let mut logits = pseudo_logits(49_152, 12.0);
    logits[100] = logits[7]; // a tie: the lower id comes first
    for k in [1, 3, 20] {
        let p = with(SamplingOptions {
            temperature: 0.8,
            top_p: 0.9,
            top_logprobs: k,
            ..SamplingOptions::default()
        });
        let s = Sampler::default().sample(&logits, &p, 0.25, &[]).unwrap();
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|a, b| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        });
        let expected: Vec<u32> = idx[..k].to_vec();
        let got: Vec<u32> = s.top.iter().map(|&(t, _)| t).collect();
        assert_eq!(got, expected);
        for &(t, lp) in &s.top {
            assert!((lp - log_softmax_at(&logits, t)).abs() < 1e-4);
        }
        assert!(s.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

#[test]
fn a_tiny_temperature_samples_greedily_instead_of_uniformly() {
    let logits = pseudo_logits(4_096, 8.0);
    let best = argmax(&logits);
    let mut sampler = Sampler::default();
    for t in [1e-39_f32, 1e-30, 1e-8, MIN_TEMPERATURE / 2.0] {
        let p = params(t, 0.95, 0);
        assert!(p.is_greedy(), "t = {t}");
        for u in [0.0, 0.37, 0.999] {
            let s = sampler.sample(&logits, &p, u, &[]).unwrap();
            assert_eq!(s.token, best, "t = {t}, u = {u}");
        }
    }
    // At the floor itself the temperature stands (and 1 / t is finite).
    assert!(!params(MIN_TEMPERATURE, 1.0, 0).is_greedy());
}

#[test]
fn stop_strings_are_bounded_in_length() {
    let options = |stop: String| SamplingOptions {
        stop: vec!["ok".into(), stop],
        ..SamplingOptions::default()
    };
    assert!(SamplingParams::new(options("x".repeat(MAX_STOP_BYTES))).is_ok());
    assert_eq!(
        SamplingParams::new(options("x".repeat(256 * 1024))).err(),
        Some(SamplingError::StopTooLong {
            len: 256 * 1024,
            max: MAX_STOP_BYTES
        })
    );
}
