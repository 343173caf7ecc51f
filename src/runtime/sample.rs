//! A sampling run over a built sampler: burn-in, the sweeps after it, the
//! states kept every N sweeps, and a check that no kept state diverged, so
//! a non-finite sample is refused rather than written.

use crate::analysis::limits::SampleRun;
use crate::backend::Sampler;
use crate::tensor::Tensors;

/// The states a run kept, and its last state.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The states every `run.every` sweeps after burn-in, or only the last.
    pub kept: Vec<Tensors>,
    /// The chains' state after the last sweep.
    pub last: Tensors,
}

/// The first non-finite value of a sampled state.
#[derive(Debug, Clone, PartialEq)]
pub struct Diverged {
    /// The variable sampled.
    pub var: String,
    /// The chain, counted from 0.
    pub chain: usize,
    /// The non-finite value.
    pub value: f32,
    /// Sweeps run, burn-in included.
    pub sweeps: usize,
}

/// Runs `run.burn_in + run.steps` sweeps of `sampler`, calling `on_sweep`
/// after each (a progress bar), and keeps the states `run.every` asks for.
pub fn run(sampler: &mut Sampler, run: &SampleRun, on_sweep: &mut dyn FnMut()) -> Result<Samples, Diverged> {
    let total = run.burn_in + run.steps;
    let mut kept = Vec::new();
    for sweep in 1..=total {
        sampler.sweep();
        on_sweep();
        if run.every.is_some_and(|every| sweep > run.burn_in && (sweep - run.burn_in).is_multiple_of(every)) {
            kept.push(sampler.state());
        }
    }
    let last = sampler.state();
    if kept.is_empty() {
        kept.push(last.clone());
    }
    for state in kept.iter().chain(std::iter::once(&last)) {
        if let Some((var, chain, value)) = crate::tensor::first_non_finite(state) {
            return Err(Diverged { var, chain, value, sweeps: total });
        }
    }
    Ok(Samples { kept, last })
}
