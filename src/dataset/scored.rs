//! The scored row: one line of `tpo score`'s output, typed. The job writes it
//! ([`ScoredRow`] serializes to the documented field names, in the documented order), and
//! the summary and `tpo bench score` read it back. Not the input rows (`row`) nor the
//! errors file's lines.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One output line: `{"id", "line", ["implicit",] "chosen_reward", "rejected_reward",
/// "margin"}` for a pair, `{"id", "line", ["implicit",] "reward"}` for a single response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoredRow {
    /// The input row's id (any JSON value; the 1-based line when it had none).
    #[serde(default)]
    pub id: Value,
    /// 1-based line (row number) in the input.
    #[serde(default)]
    pub line: usize,
    /// Log-probs and implicit rewards, with reference models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicit: Option<Implicit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// A single response's reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
}

/// `"implicit"`: the policy's log-probs, each reference model's DPO rewards, and MRPO's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Implicit {
    pub policy: Logprobs,
    pub references: Vec<ReferenceScores>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrpo: Option<MrpoScores>,
}

/// The policy's log-probs: `chosen_logprob` and `rejected_logprob` for a pair, `logprob`
/// for a single response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logprobs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_logprob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_logprob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f64>,
}

/// One reference model's log-probs and DPO rewards (pair: chosen then rejected, and the
/// margin; single: `logprob`, `reward`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceScores {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_logprob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_logprob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

/// MRPO's weight and rewards (pair: `chosen_reward`, `rejected_reward`, `margin`; single:
/// `reward`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MrpoScores {
    pub alpha: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

/// Which of a row's responses a value belongs to, for the field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Chosen,
    Rejected,
    /// The response of a single-response row.
    Single,
}

impl Logprobs {
    pub(crate) fn set(&mut self, side: Side, value: f64) {
        match side {
            Side::Chosen => self.chosen_logprob = Some(value),
            Side::Rejected => self.rejected_logprob = Some(value),
            Side::Single => self.logprob = Some(value),
        }
    }
}

impl ReferenceScores {
    pub(crate) fn set(&mut self, side: Side, logprob: f64, reward: f64) {
        match side {
            Side::Chosen => {
                (self.chosen_logprob, self.chosen_reward) = (Some(logprob), Some(reward))
            }
            Side::Rejected => {
                (self.rejected_logprob, self.rejected_reward) = (Some(logprob), Some(reward))
            }
            Side::Single => (self.logprob, self.reward) = (Some(logprob), Some(reward)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_row_keeps_the_field_order_and_leaves_out_what_it_has_not() {
        let row = ScoredRow {
            id: serde_json::json!("a"),
            line: 3,
            chosen_reward: Some(1.5),
            rejected_reward: Some(0.5),
            margin: Some(1.0),
            ..ScoredRow::default()
        };
        let text = serde_json::to_string(&row).unwrap();
        assert_eq!(
            text,
            r#"{"id":"a","line":3,"chosen_reward":1.5,"rejected_reward":0.5,"margin":1.0}"#
        );
        assert_eq!(serde_json::from_str::<ScoredRow>(&text).unwrap(), row);
        let single = ScoredRow {
            id: serde_json::json!(7),
            line: 1,
            reward: Some(-2.0),
            ..ScoredRow::default()
        };
        assert_eq!(
            serde_json::to_string(&single).unwrap(),
            r#"{"id":7,"line":1,"reward":-2.0}"#
        );
    }
}
