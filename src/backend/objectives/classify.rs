//! `classify`: the cross-entropy of p(label | rest) alone, with the label
//! summed out of the energy only for the OOD score `F(x) = −logsumexp f(x)`;
//! with outlier rows, Liu et al.'s (2020) energy-bounded term
//! `weight (E[max(0, F(x_in) − m_in)²] + E[max(0, m_out − F(x_out))²])`.
//!
//! The phases: over the data, `logsumexp(L) − L·y` (plus
//! `weight · relu(F − m_in)²` with outliers), weight 1/rows; over a batch of
//! outlier rows, `weight · relu(m_out − F)²`, weight 1/rows.

use super::super::Kernels;
#[cfg(test)]
use super::super::eval::{Evaluator, Taped, canon, expand};
#[cfg(test)]
use super::super::{T3, upload};
use super::{Grads, Objective, OnDevice, Phase, TrainError};
use crate::analysis::program::Classify as Options;
use crate::ir::{Id, Ir, Unary};
use crate::tensor::{HostTensor, Tensors};
#[cfg(test)]
use dfdx::prelude::*;
#[cfg(test)]
use std::collections::BTreeMap;

#[cfg(test)]
type Own<D> = OwnedTape<f32, D>;

pub(super) struct Classify {
    label: String,
    /// −∂E/∂label: the classifier's logits.
    logits: Id,
    /// The energy with the label (and any planned latents) summed out: the OOD score.
    marginal: Id,
    /// The energy-bounded term's margins and weight, when the train block names outliers.
    bounds: Option<(f32, f32, f32)>,
    /// The outlier rows (inputs only), given once before training.
    outliers: Tensors,
    rng: rand::rngs::StdRng,
    /// The data's phase, then the outliers' when bounded.
    phases: Vec<Phase>,
}

/// `weight · relu(a − b)²`: the squared hinge of the energy-bounded term.
fn hinge(ir: &mut Ir, a: Id, b: Id, weight: f32) -> Id {
    let gap = ir.sub(a, b);
    let r = ir.map(Unary::Relu, gap);
    let sq = ir.map(Unary::Square, r);
    let w = ir.num(f64::from(weight));
    ir.mul(w, sq)
}

impl Classify {
    pub(super) fn new<D: Kernels>(model: &mut OnDevice<D>, o: &Options, seed: u64) -> Result<Self, TrainError> {
        let label = model
            .plan
            .label_marginal
            .as_ref()
            .map(|m| m.var.clone())
            .ok_or_else(|| TrainError::Setup("`classify` needs a categorical label the plan can sum out".into()))?;
        let g = model
            .ir
            .grad(model.total, &label)
            .ok_or_else(|| TrainError::Setup(format!("the energy does not depend on `{label}`")))?;
        let logits = model.ir.neg(g);
        let variable = model.variable(&label)?.clone();
        let marginal = crate::analysis::plan::sum_out(&mut model.ir, model.free_energy, &variable).0;
        let marginal = model.ir.inline_nets(marginal);
        let bounds = o.outliers.then_some((o.m_in as f32, o.m_out as f32, o.weight as f32));
        let params = model.declared.clone();
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
        let mut data = ir.sub(lse, own);
        let mut phases = Vec::new();
        if let Some((m_in, m_out, weight)) = bounds {
            let m_in = ir.num(f64::from(m_in));
            let m_out = ir.num(f64::from(m_out));
            let inside = hinge(ir, marginal, m_in, weight);
            data = ir.add(data, inside);
            let outside = hinge(ir, m_out, marginal, weight);
            phases.push(Phase::new(ir, data, &params));
            phases.push(Phase::new(ir, outside, &params));
        } else {
            phases.push(Phase::new(ir, data, &params));
        }
        Ok(Classify {
            label,
            logits,
            marginal,
            bounds,
            outliers: Tensors::new(),
            rng: rand::SeedableRng::seed_from_u64(seed ^ 0x636c_6173),
            phases,
        })
    }

    /// The inputs of `rows` less the label.
    fn inputs(&self, rows: &Tensors) -> Tensors {
        rows.iter().filter(|(k, _)| **k != self.label).map(|(k, t)| (k.clone(), t.clone())).collect()
    }
}

/// Rows `pick` of every tensor of `all`.
fn take_rows(all: &Tensors, pick: &[usize]) -> Tensors {
    all.iter()
        .map(|(k, t)| {
            let per: usize = t.shape[1..].iter().product();
            let data = pick.iter().flat_map(|&i| t.data[i * per..(i + 1) * per].iter().copied()).collect();
            let mut shape = t.shape.clone();
            shape[0] = pick.len();
            (k.clone(), HostTensor::new(shape, data))
        })
        .collect()
}

impl<D: Kernels> Objective<D> for Classify {
    /// A batch of outlier rows, as many as the data's, when bounded.
    type Draw = Option<Tensors>;

    /// Every visible input but the label must be among the rows.
    fn outliers(&mut self, model: &OnDevice<D>, rows: &Tensors) -> Result<(), TrainError> {
        if let Some(v) = model.visible.iter().find(|v| **v != self.label && !rows.contains_key(*v)) {
            return Err(TrainError::Setup(format!("the outlier rows must bind every input; `{v}` is missing")));
        }
        self.outliers = self.inputs(rows);
        Ok(())
    }

    fn begin_epoch(&mut self, seed: u64) {
        self.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x636c_6173);
    }

    /// As many outlier rows as the batch has, drawn without replacement
    /// (with replacement when the outlier set is smaller).
    fn draw(&mut self, _model: &mut OnDevice<D>, batch: &Tensors) -> Result<Option<Tensors>, TrainError> {
        if self.bounds.is_none() {
            return Ok(None);
        }
        let have = super::rows_of_host(&self.outliers);
        if have == 0 {
            return Err(TrainError::Setup(
                "`classify` with `outliers` was given no outlier rows; the runner loads them before training".into(),
            ));
        }
        let rows = super::rows_of_host(batch);
        let pick: Vec<usize> = if rows <= have {
            rand::seq::index::sample(&mut self.rng, have, rows).into_vec()
        } else {
            (0..rows).map(|_| rand::Rng::gen_range(&mut self.rng, 0..have)).collect()
        };
        Ok(Some(take_rows(&self.outliers, &pick)))
    }

    fn loss(
        &self,
        model: &OnDevice<D>,
        batch: &Tensors,
        draw: &Option<Tensors>,
    ) -> Result<(f64, Grads<D>), TrainError> {
        let pos = super::upload_all(&model.dev, batch);
        let rows = super::rows_of(&pos);
        match (&self.phases[..], draw) {
            ([data, outside], Some(out)) => {
                let neg = super::upload_all(&model.dev, out);
                let n = super::rows_of(&neg);
                Ok(super::phase_sums(model, &[(data, &pos, 1.0 / rows as f32), (outside, &neg, 1.0 / n as f32)]))
            }
            ([data], None) => Ok(super::phase_sums(model, &[(data, &pos, 1.0 / rows as f32)])),
            // Cannot happen: `draw` gives outlier rows exactly when the objective is bounded.
            _ => Err(TrainError::Setup("`classify`'s outlier rows do not match its phases".into())),
        }
    }

    #[cfg(test)]
    fn tape_loss(
        &self,
        model: &OnDevice<D>,
        batch: &Tensors,
        draw: &Option<Tensors>,
    ) -> Result<(f64, Grads<D>), TrainError> {
        let rows = super::rows_of_host(batch);
        let leaves = model.taped_leaves();
        let ev = Taped(Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves });
        let taped = |b: &Tensors| -> BTreeMap<String, T3<D, Own<D>>> {
            b.iter().map(|(k, t)| (k.clone(), upload(&model.dev, t, t.shape[0]).retaped::<Own<D>>())).collect()
        };
        let l = super::one(ev.eval(&[self.logits], &taped(batch)));
        let (m, n) = canon(&model.variable(&self.label)?.shape);
        let l = expand(l, rows, m, n);
        let y = upload(&model.dev, &batch[&self.label], rows);
        let mut loss = (l.retaped::<Own<D>>().logsumexp::<(usize, usize), Axis<2>>().sum::<(), Axes2<0, 1>>()
            - (l * y).sum::<(), Axes3<0, 1, 2>>())
            / rows as f32;
        if let (Some((m_in, m_out, weight)), Some(out)) = (self.bounds, draw) {
            let f_in = super::one(ev.eval(&[self.marginal], &taped(&self.inputs(batch))));
            let f_out = super::one(ev.eval(&[self.marginal], &taped(out)));
            let inside = (f_in - m_in).relu().square().mean::<(), Axes3<0, 1, 2>>();
            let outside = (-f_out + m_out).relu().square().mean::<(), Axes3<0, 1, 2>>();
            loss = loss + (inside + outside) * weight;
        }
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        Ok((value, super::tape_grads(model, &g, &model.used)))
    }

    fn phases(&self) -> Vec<&Phase> {
        self.phases.iter().collect()
    }

    fn roots(&self, _model: &OnDevice<D>) -> Vec<Id> {
        match self.bounds {
            Some(_) => vec![self.logits, self.marginal],
            None => vec![self.logits],
        }
    }
}
