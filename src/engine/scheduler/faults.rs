//! The test hooks of the `fault-injection` feature: a sample's [`InjectedFault`] and when it
//! fires. Compiled only with that feature; a production build has no per-row fault check.
//! The checks themselves sit where the fault strikes (a model step in `decode`, a sampled
//! row in `sample`), each behind the same feature.

use super::super::sampler::InjectedFault;
use super::sequence::Sequence;

impl Sequence {
    fn fault(&self) -> Option<InjectedFault> {
        self.group.params.options().inject_fault
    }

    /// Test hook: this sequence's row makes model steps fail.
    pub(super) fn fails_steps(&self) -> bool {
        matches!(self.fault(), Some(InjectedFault::StepErrorAfter(k)) if self.tokens.len() >= k)
    }

    /// Test hook: the scheduler thread panics at this sequence's next token.
    pub(super) fn panics_scheduler(&self) -> bool {
        matches!(self.fault(), Some(InjectedFault::PanicAfter(k)) if self.tokens.len() >= k)
    }

    /// Test hook: this sequence's logits are replaced by NaN.
    pub(super) fn poisons_logits(&self) -> bool {
        matches!(self.fault(), Some(InjectedFault::NanLogitsAfter(k)) if self.tokens.len() >= k)
    }
}
