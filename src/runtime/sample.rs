//! A sampling run over a built sampler: burn-in, the sweeps after it, the
//! states kept every N sweeps, a few chains recorded over the run when asked
//! (for a picture of chains over time), each variable's summary statistics
//! for the mixing diagnostics (`diagnostics::Recorder`), and a check that no
//! kept state diverged, so a non-finite sample is refused rather than written.

use crate::analysis::limits::SampleRun;
use crate::backend::Sampler;
use crate::runtime::diagnostics::Recorder;
use crate::tensor::{HostTensor, Tensors};

/// The states a run kept, and its last state.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The states every `run.every` sweeps after burn-in, or only the last.
    pub kept: Vec<Tensors>,
    /// The chains' state after the last sweep.
    pub last: Tensors,
    /// What `Trace` asked for, in sweep order (empty without one).
    pub snapshots: Vec<Snapshot>,
    /// The summary statistics after burn-in, for R̂ and ESS (`Recorder::summarise`).
    pub statistics: Recorder,
}

/// Chains to record over a run: `var`'s first `chains` chains after `count`
/// sweeps spread evenly from the first sweep to the last. A run keeps
/// `chains * count` rows of `var` for it, whatever its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The variable recorded.
    pub var: String,
    /// Chains recorded, from the first (fewer when the run has fewer).
    pub chains: usize,
    /// Sweeps recorded (fewer when the run has fewer).
    pub count: usize,
}

/// The recorded chains of a `Trace` after one sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Sweeps run, burn-in included (the first is 1).
    pub sweep: usize,
    /// The traced variable only, `[chains, ...shape]`.
    pub state: Tensors,
}

/// `count` sweeps of `1..=total` spread evenly, the first and the last
/// included; every sweep when there are no more than `count`.
pub fn snapshot_sweeps(total: usize, count: usize) -> Vec<usize> {
    if total <= count {
        return (1..=total).collect();
    }
    if count <= 1 {
        return vec![total; count];
    }
    // Steps of (total - 1) / (count - 1) ≥ 1, rounded to the nearest sweep, so no two coincide.
    (0..count).map(|k| 1 + (k * (total - 1) + (count - 1) / 2) / (count - 1)).collect()
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

/// The first `chains` rows of `var` in `state`, alone.
fn first_chains(state: &Tensors, var: &str, chains: usize) -> Tensors {
    let mut out = Tensors::new();
    if let Some(t) = state.get(var) {
        let rows = chains.min(t.shape[0]);
        let per: usize = t.shape[1..].iter().product();
        let mut shape = t.shape.clone();
        shape[0] = rows;
        out.insert(var.to_string(), HostTensor::new(shape, t.data[..rows * per].to_vec()));
    }
    out
}

/// Runs `run.burn_in + run.steps` sweeps of `sampler`, calling `on_sweep`
/// after each (a progress bar), and keeps the states `run.every` asks for
/// and the snapshots `trace` asks for.
pub fn run(
    sampler: &mut Sampler,
    run: &SampleRun,
    trace: Option<&Trace>,
    on_sweep: &mut dyn FnMut(),
) -> Result<Samples, Diverged> {
    let total = run.burn_in + run.steps;
    let mut at = trace.map(|t| snapshot_sweeps(total, t.count)).unwrap_or_default().into_iter().peekable();
    let mut kept = Vec::new();
    let mut snapshots = Vec::new();
    let mut statistics = Recorder::new(run.steps);
    for sweep in 1..=total {
        sampler.sweep();
        on_sweep();
        let keep = run.every.is_some_and(|every| sweep > run.burn_in && (sweep - run.burn_in).is_multiple_of(every));
        let snap = at.next_if_eq(&sweep).is_some();
        let draw = sweep > run.burn_in && statistics.wants(sweep - run.burn_in);
        if keep || snap || draw {
            let state = sampler.state();
            if draw {
                // Wholly clamped variables do not move: nothing to diagnose.
                let held = sampler.held_whole();
                if held.is_empty() {
                    statistics.record(&state);
                } else {
                    let moving: Tensors =
                        state.iter().filter(|(k, _)| !held.contains(k)).map(|(k, t)| (k.clone(), t.clone())).collect();
                    statistics.record(&moving);
                }
            }
            if let (true, Some(t)) = (snap, trace) {
                snapshots.push(Snapshot { sweep, state: first_chains(&state, &t.var, t.chains) });
            }
            if keep {
                kept.push(state);
            }
        }
    }
    let last = sampler.state();
    if kept.is_empty() {
        kept.push(last.clone());
    }
    let recorded = snapshots.iter().map(|s| &s.state);
    for state in kept.iter().chain(std::iter::once(&last)).chain(recorded) {
        if let Some((var, chain, value)) = crate::tensor::first_non_finite(state) {
            return Err(Diverged { var, chain, value, sweeps: total });
        }
    }
    Ok(Samples { kept, last, snapshots, statistics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_spread_evenly_from_the_first_sweep_to_the_last() {
        assert_eq!(snapshot_sweeps(1000, 10), [1, 112, 223, 334, 445, 556, 667, 778, 889, 1000]);
        assert_eq!(snapshot_sweeps(10, 10), (1..=10).collect::<Vec<_>>());
        assert_eq!(snapshot_sweeps(3, 10), [1, 2, 3]);
        assert_eq!(snapshot_sweeps(11, 10), [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]);
        assert_eq!(snapshot_sweeps(5, 1), [5]);
        assert_eq!(snapshot_sweeps(0, 10), Vec::<usize>::new());
        for total in 1..60 {
            let s = snapshot_sweeps(total, 7);
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{total}: {s:?}");
            assert_eq!((s[0], *s.last().unwrap(), s.len()), (1, total, total.min(7)), "{total}");
        }
    }
}
