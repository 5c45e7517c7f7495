//! Similarity to a reference answer as the reward (RefAlign): an encoder embeds the
//! response and the reference; the reward is the cosine of their mean-pooled embeddings,
//! or BERTScore F1 of their token embeddings.

use std::path::Path;

use super::config::{RewardConfig, SimilarityMetric};
use super::pool::{self, Hidden};
use super::sequence::{BatchOutput, DistinctTexts, SequenceModel};
use super::{RewardError, RewardInput, RewardModel, RowError};
use crate::runtime::SessionOptions;

pub struct SimilarityRm {
    model: SequenceModel,
    metric: SimilarityMetric,
    /// Whether the tokenizer adds a first and last marker ([CLS]/[SEP]) that BERTScore leaves
    /// out of the matching.
    special_ends: bool,
    hidden_size: Option<usize>,
    name: String,
}

/// What one text embeds to.
enum Embedding {
    /// Mean-pooled sentence embedding.
    Sentence(Vec<f32>),
    /// Token embeddings of the real tokens (markers excluded).
    Tokens(Vec<Vec<f32>>),
}

impl SimilarityRm {
    pub fn load(
        dir: &Path,
        config: &RewardConfig,
        session: SessionOptions,
        batch_tokens: usize,
        metric: Option<SimilarityMetric>,
    ) -> Result<Self, RewardError> {
        let model = SequenceModel::load(dir, config, session, batch_tokens)?;
        Ok(Self::new(dir, config, model, metric))
    }

    /// The similarity reward over an opened encoder `model` of the folder `dir`; `metric`
    /// overrides the config's.
    pub fn new(
        dir: &Path,
        config: &RewardConfig,
        model: SequenceModel,
        metric: Option<SimilarityMetric>,
    ) -> Self {
        Self {
            model,
            metric: metric.or(config.metric).unwrap_or(SimilarityMetric::Cosine),
            special_ends: config.add_special_tokens,
            hidden_size: config.hidden_size,
            name: dir.display().to_string(),
        }
    }

    /// The batch's output as `[B, T, H]` token embeddings.
    fn hidden_of<'a>(&self, batch: &BatchOutput<'a>) -> Result<Hidden<'a>, RewardError> {
        let hidden = self.shaped(batch)?;
        let masks: Vec<&[i64]> = batch.masks.iter().map(Vec::as_slice).collect();
        hidden
            .check_masks(&masks)
            .map_err(|reason| RewardError::Graph {
                path: self.name.clone().into(),
                reason,
            })?;
        Ok(hidden)
    }

    fn shaped<'a>(&self, batch: &BatchOutput<'a>) -> Result<Hidden<'a>, RewardError> {
        let b = batch.rows.len();
        match batch.shape {
            &[bb, t, h] if bb == b && self.hidden_size.is_none_or(|want| want == h) => {
                Hidden::new(batch.data, b, t, h)
            }
            _ => None,
        }
        .ok_or_else(|| RewardError::Graph {
            path: self.name.clone().into(),
            reason: format!(
                "token embeddings have shape {:?}, expected [{b}, seq, {}]",
                batch.shape,
                self.hidden_size
                    .map_or_else(|| "hidden".to_string(), |h| h.to_string())
            ),
        })
    }

    fn pool(&self, batch: &BatchOutput<'_>) -> Result<Vec<Embedding>, RewardError> {
        let hidden = self.hidden_of(batch)?;
        let masks: Vec<&[i64]> = batch.masks.iter().map(Vec::as_slice).collect();
        Ok(match self.metric {
            SimilarityMetric::Cosine => pool::masked_mean(&hidden, &masks)
                .into_iter()
                .map(Embedding::Sentence)
                .collect(),
            SimilarityMetric::Bertscore => masks
                .iter()
                .enumerate()
                .map(|(row, mask)| {
                    let real: Vec<usize> = (0..mask.len()).filter(|&p| mask[p] != 0).collect();
                    let inner = if self.special_ends && real.len() > 2 {
                        &real[1..real.len() - 1]
                    } else {
                        &real[..]
                    };
                    Embedding::Tokens(inner.iter().map(|&p| hidden.at(row, p).to_vec()).collect())
                })
                .collect(),
        })
    }
}

impl SimilarityRm {
    /// Sentence embeddings (mean over real tokens, L2-normalized) of `texts`.
    pub fn sentence_embeddings(
        &self,
        texts: &[&str],
    ) -> Result<Vec<Result<Vec<f32>, RowError>>, RewardError> {
        let pooled = self.model.run_texts(texts, |batch| {
            let hidden = self.hidden_of(batch)?;
            let masks: Vec<&[i64]> = batch.masks.iter().map(Vec::as_slice).collect();
            Ok(pool::masked_mean(&hidden, &masks))
        })?;
        Ok(pooled
            .into_iter()
            .map(|v| {
                v.map(|mut v| {
                    pool::l2_normalize(&mut v);
                    v
                })
            })
            .collect())
    }
}

impl RewardModel for SimilarityRm {
    fn needs_reference(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Result<f32, RowError>>, RewardError> {
        // A reference shared by several responses is embedded once.
        let distinct = DistinctTexts::new(
            inputs
                .iter()
                .filter_map(|i| i.reference.map(|r| [i.response, r]))
                .flatten(),
        );
        let by_text = self.model.run_texts(&distinct.texts, |b| self.pool(b))?;
        let mut next = 0;
        Ok(inputs
            .iter()
            .map(|input| {
                input.reference.ok_or(RowError::MissingReference)?;
                let (a, r) = (distinct.index[next], distinct.index[next + 1]);
                next += 2;
                let embedding = |i: usize| by_text[i].as_ref().map_err(Clone::clone);
                Ok(match (embedding(a)?, embedding(r)?) {
                    (Embedding::Sentence(a), Embedding::Sentence(r)) => pool::cosine(a, r),
                    (Embedding::Tokens(a), Embedding::Tokens(r)) => pool::bertscore_f1(a, r),
                    // Every text of a call is pooled by the one metric.
                    _ => return Err(RowError::Internal("mixed embedding kinds".into())),
                })
            })
            .collect())
    }
}
