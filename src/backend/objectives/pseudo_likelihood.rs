//! Pseudo-likelihood: minimise `−Σ_i log p(x_i | x_−i)` exactly, from the
//! conditional logits where the energy is linear in each unit and from
//! energy differences, one unit at a time, otherwise.
//!
//! The phases: the logits' `Σ_units −log p(x_i | rest)` over the data (binary
//! `softplus(L(1 − 2x))`, spin `softplus(−2Lx)`, categorical `logsumexp(L) −
//! L·x`), weight 1/rows; and for each variable without logits a phase over
//! rows `(row, unit)`: `E(x) + logsumexp_k −E(x with the unit set to k)`,
//! with `x` the row itself and each `x with the unit set to k` a variable
//! `__pl.k` (the logsumexp is a chain of softplus, stable for any energies),
//! weight 1/rows.

#[cfg(test)]
use super::super::T3;
#[cfg(test)]
use super::super::eval::{Evaluator, Taped};
use super::super::{Kernels, upload};
use super::{Grads, Objective, OnDevice, Phase, TrainError, Vars};
use crate::analysis::plan::Kernel;
use crate::analysis::program::Domain;
use crate::ir::{Id, Unary};
use crate::tensor::{HostTensor, Tensors};
#[cfg(test)]
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// Variables in `logits` are linear in each unit (no unit couples to
/// itself), so p(x_i | rest) comes from the conditional logits −∂E/∂x at the
/// data, all units at once; the others use energy differences.
pub(super) struct PseudoLikelihood {
    logits: BTreeMap<String, Id>,
    /// The logits' phase, when some variable has logits.
    conditional: Option<Phase>,
    /// Each variable without logits: its phase over (row, unit) rows.
    differences: BTreeMap<String, Phase>,
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
        let params = model.declared.clone();
        let mut nll: Option<Id> = None;
        for (name, l) in &logits {
            let v = model.variable(name)?.clone();
            let ir = &mut model.ir;
            let x = ir.var(name, &v.shape);
            let units = match v.domain {
                Domain::Binary => {
                    let one = ir.num(1.0);
                    let two = ir.num(2.0);
                    let tx = ir.mul(two, x);
                    let flip = ir.sub(one, tx);
                    let z = ir.mul(*l, flip);
                    let sp = ir.map(Unary::Softplus, z);
                    ir.sum(sp)
                }
                Domain::Spin => {
                    let m2 = ir.num(-2.0);
                    let tx = ir.mul(m2, x);
                    let z = ir.mul(*l, tx);
                    let sp = ir.map(Unary::Softplus, z);
                    ir.sum(sp)
                }
                _ => {
                    let lse = if v.shape.len() == 1 {
                        ir.logsumexp(*l)
                    } else {
                        let r = ir.logsumexp_last(*l);
                        ir.sum(r)
                    };
                    let lx = ir.mul(*l, x);
                    let own = ir.sum(lx);
                    ir.sub(lse, own)
                }
            };
            nll = Some(match nll {
                Some(acc) => ir.add(acc, units),
                None => units,
            });
        }
        let conditional = nll.map(|r| Phase::new(&mut model.ir, r, &params));
        let mut differences = BTreeMap::new();
        for name in model.visible.clone().into_iter().filter(|n| !logits.contains_key(n)) {
            let v = model.variable(&name)?.clone();
            let (_, values) = unit_values(&v.domain)?;
            let ir = &mut model.ir;
            let e = model.total;
            // logsumexp_k(−E_k) as s_1 = −E_1, s_k = s_{k−1} + softplus(−E_k − s_{k−1}).
            let mut lse: Option<Id> = None;
            for k in 0..values.len() {
                let to = ir.var(&format!("__pl.{k}"), &v.shape);
                let ek = ir.substitute(e, &name, to);
                let a = ir.neg(ek);
                lse = Some(match lse {
                    None => a,
                    Some(s) => {
                        let d = ir.sub(a, s);
                        let sp = ir.map(Unary::Softplus, d);
                        ir.add(s, sp)
                    }
                });
            }
            if let Some(lse) = lse {
                let root = ir.add(e, lse);
                differences.insert(name, Phase::new(ir, root, &params));
            }
        }
        Ok(PseudoLikelihood { logits, conditional, differences })
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
        let w = 1.0 / rows as f32;
        let data = super::upload_all(&model.dev, batch);
        let mut vars: Vec<(&Phase, Vars<D>)> = Vec::new();
        for (name, phase) in &self.differences {
            let v = model.variable(name)?;
            let (width, values) = unit_values(&v.domain)?;
            let units = v.shape.iter().product::<usize>() / width;
            // Chunks of units keep each evaluation near 2^14 energies.
            let chunk = (16384 / (rows * values.len()).max(1)).clamp(1, units.max(1));
            for start in (0..units).step_by(chunk) {
                let end = (start + chunk).min(units);
                let n = rows * (end - start);
                let mut chunk_vars = super::upload_all(&model.dev, &unit_rows(batch, name, width, None, start, end));
                for (k, value) in values.iter().enumerate() {
                    let set = unit_rows(batch, name, width, Some(value), start, end);
                    chunk_vars.insert(format!("__pl.{k}"), upload(&model.dev, &set[name], n));
                }
                vars.push((phase, chunk_vars));
            }
        }
        let mut phases: Vec<(&Phase, &Vars<D>, f32)> = self.conditional.iter().map(|p| (p, &data, w)).collect();
        phases.extend(vars.iter().map(|(p, v)| (*p, v, w)));
        Ok(super::phase_sums(model, &phases))
    }

    #[cfg(test)]
    fn tape_loss(&self, model: &OnDevice<D>, batch: &Tensors, _draw: &()) -> Result<(f64, Grads<D>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let mut grads: BTreeMap<String, T3<D>> = BTreeMap::new();
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
        Ok((total_loss, grads.into_iter().map(|(name, g)| (name, super::Grad::Device(g))).collect()))
    }

    fn phases(&self) -> Vec<&super::Phase> {
        self.conditional.iter().chain(self.differences.values()).collect()
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

/// Rows `(row, unit)` for units `start..end`: the batch's rows, each
/// repeated once per unit, with that unit of `var` set to `value` when given.
fn unit_rows(batch: &Tensors, var: &str, width: usize, value: Option<&[f32]>, start: usize, end: usize) -> Tensors {
    let rows = batch.values().next().map_or(0, |t| t.shape[0]);
    batch
        .iter()
        .map(|(name, t)| {
            let per: usize = t.shape[1..].iter().product();
            let mut data = Vec::with_capacity(rows * (end - start) * per);
            for r in 0..rows {
                let row = &t.data[r * per..(r + 1) * per];
                for unit in start..end {
                    let offset = data.len();
                    data.extend_from_slice(row);
                    if let (true, Some(value)) = (name == var, value) {
                        data[offset + unit * width..offset + (unit + 1) * width].copy_from_slice(value);
                    }
                }
            }
            let mut shape = vec![rows * (end - start)];
            shape.extend(&t.shape[1..]);
            (name.clone(), HostTensor::new(shape, data))
        })
        .collect()
}

/// Rows `(row, unit, value)`: the batch with unit `start + unit` of `var` set to each value.
#[cfg(test)]
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
#[cfg(test)]
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
