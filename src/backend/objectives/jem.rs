//! JEM: the cross-entropy of p(label | rest) plus PCD on the energy with the
//! label summed out, its negatives drawn from a replay buffer.
//!
//! The phases: over the data, the cross-entropy `logsumexp(L) − L·y` plus
//! the marginal energy's `M + αM²`; over the negatives `αM² − M`; both weight
//! 1/rows.

#[cfg(test)]
use super::super::eval::{Evaluator, Taped, canon, expand};
use super::super::replay::Replay;
use super::super::{ChainSet, Chains, Kernels};
#[cfg(test)]
use super::super::{T3, upload};
#[cfg(test)]
use super::contrastive::contrastive_loss;
use super::{Grads, Objective, OnDevice, Phase, TrainError};
use crate::analysis::program::Persistent;
use crate::ir::Id;
use crate::tensor::Tensors;
#[cfg(test)]
use dfdx::prelude::*;
#[cfg(test)]
use std::collections::BTreeMap;

#[cfg(test)]
type Own<D> = OwnedTape<f32, D>;

pub(super) struct Jem<D: Kernels> {
    label: String,
    /// −∂E/∂label: the classifier's logits.
    logits: Id,
    /// The energy with the label (and any planned latents) summed out.
    marginal: Id,
    k: usize,
    /// Batch-sized chains that run the k sweeps of each step.
    chains: Box<ChainSet<D>>,
    replay: Replay,
    /// The data's phase and the negatives'.
    phases: [Phase; 2],
}

impl<D: Kernels> Jem<D> {
    pub(super) fn new(
        model: &mut OnDevice<D>,
        p: &Persistent,
        batch: usize,
        params: &Tensors,
        state: &Tensors,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let label = model
            .plan
            .label_marginal
            .as_ref()
            .map(|m| m.var.clone())
            .ok_or_else(|| TrainError::Setup("`jem` needs a categorical label the plan can sum out".into()))?;
        let g = model
            .ir
            .grad(model.total, &label)
            .ok_or_else(|| TrainError::Setup(format!("the energy does not depend on `{label}`")))?;
        let logits = model.ir.neg(g);
        let variable = model.variable(&label)?.clone();
        let marginal = crate::analysis::plan::sum_out(&mut model.ir, model.free_energy, &variable).0;
        let marginal = model.ir.inline_nets(marginal);
        let phases = {
            let ir = &mut model.ir;
            // Cross-entropy of the label given the rest: logsumexp(L) − L·y, summed over the label's units.
            let y = ir.var(&label, &variable.shape);
            let lse = if variable.shape.len() == 1 {
                ir.logsumexp(logits)
            } else {
                let l = ir.logsumexp_last(logits);
                ir.sum(l)
            };
            let ly = ir.mul(logits, y);
            let own = ir.sum(ly);
            let ce = ir.sub(lse, own);
            let (pos, neg) = super::contrastive::contrastive_roots(ir, marginal, model.energy_alpha);
            let pos = ir.add(ce, pos);
            let params = model.declared.clone();
            [Phase::new(ir, pos, &params), Phase::new(ir, neg, &params)]
        };
        let mut chains =
            ChainSet::new(model.dev.clone(), &model.model, &model.plan, params, batch.max(1), seed ^ 0x6a_65_6d)?;
        chains.share_host(&model.host);
        Ok(Jem {
            label,
            logits,
            marginal,
            k: p.k,
            chains: Box::new(chains),
            replay: super::replay(p, seed ^ 0x6a_65_6d, state),
            phases,
        })
    }
}

impl<D: Kernels> Objective<D> for Jem<D> {
    /// The chains' end states: the negatives.
    type Draw = Tensors;

    fn begin_epoch(&mut self, seed: u64) {
        self.replay.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x6a_65_6d);
        self.chains.reseed(seed ^ 0x6a_65_6d);
    }

    /// Negatives start from the replay buffer (a fraction `reinit` of them
    /// from fresh random states) and take `k` sweeps of the plan's sampler
    /// (Langevin on the inputs, Gibbs on the label).
    fn draw(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<Tensors, TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        if self.chains.chains != rows {
            return Err(TrainError::Setup(format!("JEM runs batches of {} rows; got {rows}", self.chains.chains)));
        }
        let start = self.replay.start(self.chains.random_state());
        Chains::set_state(self.chains.as_mut(), &start).map_err(TrainError::Setup)?;
        self.chains.set_params(&model.params).map_err(TrainError::Setup)?;
        for _ in 0..self.k {
            Chains::sweep(self.chains.as_mut());
        }
        let end = Chains::state(self.chains.as_ref());
        self.replay.keep(&end);
        Ok(end)
    }

    /// The label is summed out of the negatives' energy.
    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, end: &Tensors) -> Result<(f64, Grads<D>), TrainError> {
        let pos = super::upload_all(&model.dev, batch);
        let others: Tensors =
            end.iter().filter(|(k, _)| **k != self.label).map(|(k, t)| (k.clone(), t.clone())).collect();
        let neg = super::upload_all(&model.dev, &others);
        let [p, n] = &self.phases;
        let (rows_pos, rows_neg) = (super::rows_of(&pos), super::rows_of(&neg));
        Ok(super::phase_sums(model, &[(p, &pos, 1.0 / rows_pos as f32), (n, &neg, 1.0 / rows_neg as f32)]))
    }

    #[cfg(test)]
    fn tape_loss(&self, model: &OnDevice<D>, batch: &Tensors, end: &Tensors) -> Result<(f64, Grads<D>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let label = &self.label;
        let leaves = model.taped_leaves();
        let ev = Taped(Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves });
        let taped = |b: &Tensors| -> BTreeMap<String, T3<D, Own<D>>> {
            b.iter().map(|(k, t)| (k.clone(), upload(&model.dev, t, t.shape[0]).retaped::<Own<D>>())).collect()
        };
        // Cross-entropy of the label given the rest: logsumexp(L) − L·y.
        let l = super::one(ev.eval(&[self.logits], &taped(batch)));
        let (m, n) = canon(&model.variable(label)?.shape);
        let l = expand(l, rows, m, n);
        let y = upload(&model.dev, &batch[label], rows);
        let ce = (l.retaped::<Own<D>>().logsumexp::<(usize, usize), Axis<2>>().sum::<(), Axes2<0, 1>>()
            - (l * y).sum::<(), Axes3<0, 1, 2>>())
            / rows as f32;
        // PCD on the marginal energy of the other variables.
        let others = |b: &Tensors| -> Tensors {
            b.iter().filter(|(k, _)| *k != label).map(|(k, t)| (k.clone(), t.clone())).collect()
        };
        let f_pos = super::one(ev.eval(&[self.marginal], &taped(&others(batch))));
        let f_neg = super::one(ev.eval(&[self.marginal], &taped(&others(end))));
        let loss = ce + contrastive_loss(f_pos, f_neg, model.energy_alpha);
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        let used = model.params_in(&[self.logits, self.marginal], &model.used);
        Ok((value, super::tape_grads(model, &g, &used)))
    }

    fn phases(&self) -> Vec<&super::Phase> {
        self.phases.iter().collect()
    }

    fn roots(&self, _model: &OnDevice<D>) -> Vec<Id> {
        vec![self.logits, self.marginal]
    }

    fn state(&self) -> Tensors {
        self.replay.saved()
    }

    fn chain_sets(&mut self) -> Vec<&mut ChainSet<D>> {
        vec![self.chains.as_mut()]
    }
}
