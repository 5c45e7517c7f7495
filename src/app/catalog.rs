//! `tpo models list`: the models commands take by short name (the policy's formats and the
//! embedded reward models), where each lives, whether it is exported, and the quality gate a
//! quantized format passed (its `parity.json`, written by `models/parity.py`). Not how a
//! name resolves to a folder ([`crate::paths`]) nor what is inside a folder ([`super::inspect`]).

use std::fmt;
use std::path::PathBuf;

use crate::paths;

/// One model a command can name.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// `policy` or `reward`.
    pub role: &'static str,
    /// The short name (`--model q4`, `--reward-model judge`).
    pub name: &'static str,
    pub dir: PathBuf,
    pub about: &'static str,
    /// Whether the folder is there (exported).
    pub exported: bool,
    /// The gate's line from the folder's `parity.json`, when it has one.
    pub gate: Option<String>,
}

/// Every model a command can name, policy formats first.
pub fn catalog() -> Vec<CatalogEntry> {
    let policies = paths::POLICY_FORMATS
        .iter()
        .map(|&(name, _, about)| ("policy", name, paths::policy_dir(name), about));
    let rewards = paths::EMBEDDED_REWARDS
        .iter()
        .map(|&(name, _, _, about)| ("reward", name, paths::reward_source(name).dir, about));
    policies
        .chain(rewards)
        .map(|(role, name, dir, about)| CatalogEntry {
            role,
            name,
            exported: dir.is_dir(),
            gate: gate_line(&dir.join("parity.json")),
            dir,
            about,
        })
        .collect()
}

/// `gate passed: mean KL 0.0047 nats (1.2x llama.cpp's), perplexity -0.52 %` from a
/// `models/parity.py` report, or `gate passed: accuracy 80.10 % vs float32's 80.60 % (-0.50
/// points) on 201 pairs` from a `models/reward_gate.py` one; `None` when there is none or it
/// does not read.
fn gate_line(path: &std::path::Path) -> Option<String> {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let verdict = if report["pass"].as_bool()? {
        "passed"
    } else {
        "FAILED"
    };
    if let Some(diff) = report["accuracy_diff_points"].as_f64() {
        // models/reward_gate.py: a reward model's gate is its pairwise accuracy
        return Some(format!(
            "gate {verdict}: accuracy {:.2} % vs float32's {:.2} % ({diff:+.2} points) on {} pairs",
            report["accuracy_quant_percent"].as_f64()?,
            report["accuracy_float_percent"].as_f64()?,
            report["pairs"].as_u64()?,
        ));
    }
    let kl = report["mean_kl_nats"].as_f64()?;
    let kl = if kl < 1e-3 {
        format!("{kl:.1e}")
    } else {
        format!("{kl:.4}")
    };
    let mut line = format!("gate {verdict}: mean KL {kl} nats");
    if let Some(ratio) = report["kl_vs_peer"].as_f64() {
        line += &format!(" ({ratio:.2}x llama.cpp's)");
    }
    if let Some(rel) = report["perplexity_rel_diff"].as_f64() {
        line += &format!(", perplexity {:+.2} %", 100.0 * rel);
    }
    Some(line)
}

/// The name column holds the longest short name (`similarity-int8`, `bertscore-int8`).
const NAME_WIDTH: usize = 16;
/// Folder and gate lines start under the description: role (6), a space, the name column.
const INDENT: usize = 6 + 1 + NAME_WIDTH;

impl fmt::Display for CatalogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.exported {
            ""
        } else {
            " (not exported: make setup)"
        };
        writeln!(
            f,
            "{:6} {:NAME_WIDTH$} {}{state}",
            self.role, self.name, self.about
        )?;
        writeln!(f, "{:INDENT$} {}", "", self.dir.display())?;
        if let Some(gate) = &self.gate {
            writeln!(f, "{:INDENT$} {gate}", "")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::gate_line;

    fn line_of(report: serde_json::Value) -> Option<String> {
        let path = std::env::temp_dir().join(format!("tpo-gate-line-{}.json", std::process::id()));
        std::fs::write(&path, report.to_string()).ok()?;
        let line = gate_line(&path);
        let _ = std::fs::remove_file(&path);
        line
    }

    #[test]
    fn a_policy_gate_reads_as_kl_and_a_judge_gate_as_accuracy() {
        let policy = line_of(serde_json::json!({
            "pass": true, "mean_kl_nats": 0.0047, "kl_vs_peer": 1.22, "perplexity_rel_diff": -0.0052
        }));
        assert_eq!(
            policy.as_deref(),
            Some("gate passed: mean KL 0.0047 nats (1.22x llama.cpp's), perplexity -0.52 %")
        );
        let judge = line_of(serde_json::json!({
            "pass": false, "pairs": 201, "accuracy_float_percent": 80.6,
            "accuracy_quant_percent": 79.6, "accuracy_diff_points": -1.0
        }));
        assert_eq!(
            judge.as_deref(),
            Some("gate FAILED: accuracy 79.60 % vs float32's 80.60 % (-1.00 points) on 201 pairs")
        );
        assert_eq!(line_of(serde_json::json!({"pairs": 3})), None);
    }
}
