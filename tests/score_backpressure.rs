//! Implicit rewards under the engine's back-pressure: a batch of log-prob requests larger
//! than an engine's pending limit is submitted in windows the engine accepts, and a refusal
//! (`Overloaded`) is waited out, never a failed row or run.

mod common;

use tpo_engine::engine::EngineOptions;
use tpo_engine::reward::implicit::{response_logprobs, ImplicitModels, NamedEngine};

/// The real policy, started with a pending limit of `max_pending` requests.
fn policy_engine(max_pending: usize) -> NamedEngine {
    let dir = common::policy_dir();
    let options = EngineOptions {
        kv_slots: 4,
        max_seq_len: 256,
        max_pending,
        ..EngineOptions::default()
    };
    let engine = tpo_engine::app::start_engine(&dir, options).unwrap();
    NamedEngine {
        name: dir.display().to_string(),
        engine,
    }
}

#[test]
fn more_pairs_than_the_engines_pending_limit_all_get_their_logprobs() {
    let texts: Vec<(String, String)> = (0..24)
        .map(|i| {
            (
                format!("What is {i} plus {i}?"),
                format!("It is {}.", 2 * i),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = texts.iter().map(|(q, a)| (&q[..], &a[..])).collect();
    let models = ImplicitModels {
        policy: policy_engine(4),
        references: vec![policy_engine(3)],
        beta: 0.1,
        mrpo: false,
        eta: 0.1,
    };
    let got = models.logprobs(&pairs);
    assert_eq!(got.len(), pairs.len());
    for (i, (got, pair)) in got.iter().zip(&pairs).enumerate() {
        let got = got
            .as_ref()
            .unwrap_or_else(|e| panic!("pair {i} of {}: {e}", pairs.len()));
        // One request at a time never meets the limit: the value to match.
        let alone = response_logprobs(&models.policy.engine, &[*pair]);
        let alone = alone[0].as_ref().unwrap().sum;
        assert!(
            (got.policy - alone).abs() < 1e-3,
            "pair {i}: {got:?} vs {alone}"
        );
        assert_eq!(got.references.len(), 1);
        assert!(
            (got.references[0] - alone).abs() < 1e-3,
            "pair {i}: {got:?} vs {alone}"
        );
    }
}
