//! Pseudo-likelihood: minimise `−Σ_i log p(x_i | x_−i)` exactly, from the
//! conditional logits where the energy is linear in each unit and from
//! energy differences, one unit at a time, otherwise.

use super::super::eval::{Evaluator, Taped};
use super::super::{Kernels, T3, upload};
use super::{Grads, Objective, OnDevice, TrainError};
use crate::analysis::plan::Kernel;
use crate::analysis::program::Domain;
use crate::ir::Id;
use crate::tensor::{HostTensor, Tensors};
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// Variables in `logits` are linear in each unit (no unit couples to
/// itself), so p(x_i | rest) comes from the conditional logits −∂E/∂x at the
/// data, all units at once; the others use energy differences.
pub(super) struct PseudoLikelihood {
    logits: BTreeMap<String, Id>,
}

impl PseudoLikelihood {
    pub(super) fn new<D: Kernels>(model: &mut OnDevice<D>) -> Result<Self, TrainError> {
        let mut logits = BTreeMap::new();
        let gibbs: Vec<String> = model
            .plan
            .variables
            .iter()
            .filter(|v| matches!(v.kernel, Kernel::BlockGibbs { .. } | Kernel::ChromaticGibbs { .. }))
            .map(|v| v.name.clone())
            .collect();
        for name in gibbs {
            let shape = model.variable(&name)?.shape.clone();
            let g = model.ir.grad(model.total, &name).unwrap_or_else(|| model.ir.zeros(&shape));
            logits.insert(name, model.ir.neg(g));
        }
        Ok(PseudoLikelihood { logits })
    }
}

impl<D: Kernels> Objective<D> for PseudoLikelihood {
    /// Pseudo-likelihood needs the data alone.
    type Draw = ();

    fn draw(&mut self, _model: &mut OnDevice<D>, _batch: &Tensors) -> Result<(), TrainError> {
        Ok(())
    }

    /// Exact pseudo-likelihood of a batch: every unit of every visible
    /// variable is set to each of its values in turn.
    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, _draw: &()) -> Result<(f64, Grads<D>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let mut grads: Grads<D> = BTreeMap::new();
        let mut total_loss = 0.0;
        let accumulate = |grads: &mut BTreeMap<String, T3<D>>,
                          g: Gradients<f32, D>,
                          params: &BTreeMap<String, T3<D>>,
                          used: &[String]| {
            for p in used {
                let gp = g.get(&params[p]);
                let acc = match grads.remove(p) {
                    Some(a) => a + gp,
                    None => gp,
                };
                grads.insert(p.clone(), acc);
            }
        };
        let logits = &self.logits;
        for (name, root) in logits {
            let v = model.variable(name)?.clone();
            let leaves = model.taped_leaves();
            let ev = Taped(Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves });
            let vars: BTreeMap<String, T3<D, OwnedTape<f32, D>>> =
                batch.iter().map(|(k, t)| (k.clone(), upload(&model.dev, t, rows).retaped())).collect();
            let l = super::one(ev.eval(&[*root], &vars));
            let (m, n) = super::super::eval::canon(&v.shape);
            let l = super::super::eval::expand(l, rows, m, n);
            let x = upload(&model.dev, &batch[name], rows);
            // -log p(x_i | rest) per unit, from the logits L = -dE/dx.
            let nll = match v.domain {
                Domain::Binary => super::super::eval::unary(crate::ir::Unary::Softplus, l * (x * -2.0 + 1.0), true),
                Domain::Spin => super::super::eval::unary(crate::ir::Unary::Softplus, l * (x * -2.0), true),
                _ => {
                    let lse = l.retaped::<OwnedTape<f32, D>>().logsumexp::<(usize, usize), Axis<2>>();
                    let own = (l * x).sum::<(usize, usize), Axis<2>>();
                    (lse - own).reshape_like(&(rows, 1usize, m))
                }
            };
            let loss = nll.sum::<(), Axes3<0, 1, 2>>() / rows as f32;
            total_loss += f64::from(loss.as_vec()[0]);
            let used = model.params_in(&[*root], &model.used);
            accumulate(&mut grads, loss.backward(), &model.params, &used);
        }
        for name in model.visible.clone().into_iter().filter(|n| !logits.contains_key(n)) {
            let v = model.variable(&name)?.clone();
            let (width, values) = unit_values(&v.domain)?;
            let units = v.shape.iter().product::<usize>() / width;
            let k = values.len();
            // Chunks of units keep the expanded batch near 2^14 rows.
            let chunk = (16384 / (rows * k).max(1)).clamp(1, units);
            for start in (0..units).step_by(chunk) {
                let end = (start + chunk).min(units);
                let c = end - start;
                let expanded = expand_rows(batch, &name, width, &values, start, end);
                let leaves = model.taped_leaves();
                let ev = Taped(Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves });
                let n = rows * c * k;
                let vars: BTreeMap<String, T3<D, OwnedTape<f32, D>>> =
                    expanded.iter().map(|(k, t)| (k.clone(), upload(&model.dev, t, n).retaped())).collect();
                let e = super::one(ev.eval(&[model.total], &vars));
                let e = super::super::eval::expand(e, n, 1, 1).reshape_like(&(rows, c, k));
                // -log p(x_i | rest) = E(x) + logsumexp_k(-E(x with x_i = k)); E(x) is the
                // row's own value among the k, found by the data.
                let lse = e.retaped::<OwnedTape<f32, D>>().negate().logsumexp::<(usize, usize), Axis<2>>();
                let own = own_mask(batch, &name, width, &values, start, end);
                let own = model.dev.tensor_from_vec(own, (rows, c, k));
                let e_own = (e * own).sum::<(usize, usize), Axis<2>>();
                let loss = (e_own + lse).sum::<(), Axes2<0, 1>>() / rows as f32;
                total_loss += f64::from(loss.as_vec()[0]);
                accumulate(&mut grads, loss.backward(), &model.params, &model.used);
            }
        }
        Ok((total_loss, grads))
    }

    fn roots(&self, model: &OnDevice<D>) -> Vec<Id> {
        std::iter::once(model.total).chain(self.logits.values().copied()).collect()
    }
}

/// The values one unit can take, each as its per-unit slice.
fn unit_values(domain: &Domain) -> Result<(usize, Vec<Vec<f32>>), TrainError> {
    Ok(match domain {
        Domain::Binary => (1, vec![vec![0.0], vec![1.0]]),
        Domain::Spin => (1, vec![vec![-1.0], vec![1.0]]),
        Domain::Categorical { categories } => (
            *categories,
            (0..*categories).map(|k| (0..*categories).map(|j| f32::from(u8::from(j == k))).collect()).collect(),
        ),
        Domain::Real { .. } => {
            return Err(TrainError::Setup("pseudo-likelihood needs discrete visible variables".into()));
        }
    })
}

/// Rows `(row, unit, value)`: the batch with unit `start + unit` of `var` set to each value.
fn expand_rows(batch: &Tensors, var: &str, width: usize, values: &[Vec<f32>], start: usize, end: usize) -> Tensors {
    let rows = batch.values().next().map_or(0, |t| t.shape[0]);
    batch
        .iter()
        .map(|(name, t)| {
            let per: usize = t.shape[1..].iter().product();
            let mut data = Vec::with_capacity(rows * (end - start) * values.len() * per);
            for r in 0..rows {
                let row = &t.data[r * per..(r + 1) * per];
                for unit in start..end {
                    for value in values {
                        let offset = data.len();
                        data.extend_from_slice(row);
                        if name == var {
                            data[offset + unit * width..offset + (unit + 1) * width].copy_from_slice(value);
                        }
                    }
                }
            }
            let mut shape = vec![rows * (end - start) * values.len()];
            shape.extend(&t.shape[1..]);
            (name.clone(), HostTensor::new(shape, data))
        })
        .collect()
}

/// 1 where the value equals the data's own value of the unit.
fn own_mask(batch: &Tensors, var: &str, width: usize, values: &[Vec<f32>], start: usize, end: usize) -> Vec<f32> {
    let t = &batch[var];
    let per: usize = t.shape[1..].iter().product();
    let rows = t.shape[0];
    let mut out = Vec::with_capacity(rows * (end - start) * values.len());
    for r in 0..rows {
        for unit in start..end {
            let own = &t.data[r * per + unit * width..r * per + (unit + 1) * width];
            out.extend(values.iter().map(|v| f32::from(u8::from(v.as_slice() == own))));
        }
    }
    out
}
