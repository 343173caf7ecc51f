//! Contrastive divergence (CD-k) and persistent CD: minimise
//! `mean F(data) − mean F(samples)`, with `F` the free energy where the plan
//! sums latents out and the energy with sampled latents otherwise. The
//! samples are data here: no gradient flows through them.
//!
//! With the energy penalty α the loss is two phases: `F + αF²` over the data
//! (weight 1/n) and `αF² − F` over the samples (weight 1/m); without it α = 0
//! and they are `F` and `−F`. PCD's `kl` and `entropy` add improved CD's
//! terms, which do differentiate the samples' last Langevin step
//! (`improved`).

#[cfg(test)]
use super::super::T3;
#[cfg(test)]
use super::super::eval::{Evaluator, Taped};
use super::super::replay::Replay;
use super::super::{ChainSet, Chains, Kernels};
pub(super) use super::Vars;
use super::improved::{Improved, Record};
use super::{Grads, Objective, OnDevice, Phase, TrainError};
use crate::analysis::plan::Kernel;
use crate::analysis::program::Persistent;
use crate::ir::{Id, Ir, Unary};
use crate::tensor::Tensors;
#[cfg(test)]
use dfdx::prelude::*;
#[cfg(test)]
use std::collections::BTreeMap;

pub(super) struct Contrastive<D: Kernels> {
    /// Sweeps per negative phase (and per positive phase, with sampled latents).
    k: usize,
    /// PCD's persistent chains; CD restarts batch-sized chains at the data.
    persistent: Option<PersistentChains<D>>,
    /// The data's phase, `F + αF²`, and the samples', `αF² − F`.
    phases: [Phase; 2],
    /// Improved CD's terms (PCD with `kl` or `entropy` above 0).
    improved: Option<Improved>,
}

/// What one step draws: the positive and negative phases' variables, and
/// what improved CD keeps of the negatives' last Langevin step.
pub(super) struct Draw<D: Kernels> {
    pub(super) positive: Vars<D>,
    pub(super) negative: Vars<D>,
    pub(super) improved: Option<Record>,
}

struct PersistentChains<D: Kernels> {
    chains: Box<ChainSet<D>>,
    /// With continuous visibles: chains restart each step from past samples.
    replay: Option<Replay>,
}

impl<D: Kernels> Contrastive<D> {
    pub(super) fn cd(model: &mut OnDevice<D>, k: usize) -> Self {
        Contrastive { k, persistent: None, phases: phases(model), improved: None }
    }

    pub(super) fn pcd(
        model: &mut OnDevice<D>,
        p: &Persistent,
        params: &Tensors,
        state: &Tensors,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let mut set =
            ChainSet::new(model.dev.clone(), &model.model, &model.plan, params, p.chains, seed ^ 0x7063_6421)?;
        set.share_host(&model.host);
        if state.keys().any(|k| k.starts_with("chain.")) {
            let chain_state: Tensors = state
                .iter()
                .filter_map(|(k, t)| k.strip_prefix("chain.").map(|n| (n.to_string(), t.clone())))
                .collect();
            Chains::set_state(&mut set, &chain_state).map_err(TrainError::Setup)?;
        }
        // Langevin chains on the data's own variables restart from a replay buffer.
        let langevin = model
            .plan
            .variables
            .iter()
            .any(|v| model.visible.contains(&v.name) && matches!(v.kernel, Kernel::Langevin { .. }));
        let replay = langevin.then(|| super::replay(p, seed ^ 0x7270_6c79, state));
        let improved = if p.kl > 0.0 || p.entropy > 0.0 { Some(Improved::new(model, p)?) } else { None };
        set.record_last = improved.is_some();
        Ok(Contrastive {
            k: p.k,
            persistent: Some(PersistentChains { chains: Box::new(set), replay }),
            phases: phases(model),
            improved,
        })
    }

    /// CD/PCD through the tape: the oracle of `symbolic_gradients`; with
    /// improved CD's `record`, its terms' surrogate joins the loss before the
    /// backward pass.
    #[cfg(test)]
    pub(super) fn tape_gradients(
        &self,
        model: &OnDevice<D>,
        positive: &Vars<D>,
        negative: &Vars<D>,
        record: Option<&Record>,
    ) -> (f64, Grads<D>) {
        let leaves = model.taped_leaves();
        let ev = Taped(Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves });
        let taped = |vars: &Vars<D>, names: &[String]| -> BTreeMap<String, T3<D, OwnedTape<f32, D>>> {
            names.iter().map(|n| (n.clone(), vars[n].retaped())).collect()
        };
        let names: Vec<String> = model.visible.iter().chain(&model.kept).cloned().collect();
        let f_pos = super::one(ev.eval(&[model.free_energy], &taped(positive, &names)));
        let f_neg = super::one(ev.eval(&[model.free_energy], &taped(negative, &names)));
        let mut loss = contrastive_loss(f_pos, f_neg, model.energy_alpha);
        let mut value = f64::from(loss.as_vec()[0]);
        if let (Some(improved), Some(record)) = (&self.improved, record) {
            let (terms, surrogate) = improved.tape_surrogate(model, &ev, negative, record);
            value += terms;
            loss = loss + surrogate;
        }
        let g = loss.backward();
        (value, super::tape_grads(model, &g, &model.used))
    }

    /// CD/PCD with symbolic parameter gradients: `∂F/∂θ` per example is IR,
    /// and its sum over a batch is evaluated directly (an outer product of
    /// per-example vectors sums to one GEMM). The same gradient as the tape's,
    /// without the tape's elementwise backward passes (tested against it).
    pub(super) fn symbolic_gradients(
        &self,
        model: &OnDevice<D>,
        positive: &Vars<D>,
        negative: &Vars<D>,
    ) -> (f64, Grads<D>) {
        let names: Vec<String> = model.visible.iter().chain(&model.kept).cloned().collect();
        let pick = |vars: &Vars<D>| names.iter().map(|n| (n.clone(), vars[n].clone())).collect::<Vars<D>>();
        let (pos, neg) = (pick(positive), pick(negative));
        let (rows_pos, rows_neg) = (super::rows_of(&pos), super::rows_of(&neg));
        let [p, n] = &self.phases;
        super::phase_sums(model, &[(p, &pos, 1.0 / rows_pos as f32), (n, &neg, 1.0 / rows_neg as f32)])
    }
}

/// The data's and the samples' per-example losses for energy `f` and penalty
/// `alpha`: `f + αf²` and `αf² − f` (`f` and `−f` when α = 0).
pub(super) fn contrastive_roots(ir: &mut Ir, f: Id, alpha: f32) -> (Id, Id) {
    let a = ir.num(f64::from(alpha));
    let f2 = ir.map(Unary::Square, f);
    let penalty = ir.mul(a, f2);
    (ir.add(f, penalty), ir.sub(penalty, f))
}

/// The two phases of the free energy.
fn phases<D: Kernels>(model: &mut OnDevice<D>) -> [Phase; 2] {
    let (pos, neg) = contrastive_roots(&mut model.ir, model.free_energy, model.energy_alpha);
    let params = model.declared.clone();
    [Phase::new(&mut model.ir, pos, &params), Phase::new(&mut model.ir, neg, &params)]
}

/// `mean F(data) − mean F(samples)`, plus `alpha (mean F(data)² + mean F(samples)²)`
/// when the energy penalty is on (it keeps energies near zero so they cannot drift).
#[cfg(test)]
pub(super) fn contrastive_loss<D: Kernels>(
    f_pos: T3<D, OwnedTape<f32, D>>,
    f_neg: T3<D, OwnedTape<f32, D>>,
    alpha: f32,
) -> Tensor<(), f32, D, OwnedTape<f32, D>> {
    if alpha > 0.0 {
        let penalty = f_pos.retaped::<OwnedTape<f32, D>>().square().mean::<(), Axes3<0, 1, 2>>()
            + f_neg.retaped::<OwnedTape<f32, D>>().square().mean::<(), Axes3<0, 1, 2>>();
        f_pos.mean::<(), Axes3<0, 1, 2>>() - f_neg.mean::<(), Axes3<0, 1, 2>>() + penalty * alpha
    } else {
        f_pos.mean::<(), Axes3<0, 1, 2>>() - f_neg.mean::<(), Axes3<0, 1, 2>>()
    }
}

impl<D: Kernels> Objective<D> for Contrastive<D> {
    type Draw = Draw<D>;

    fn begin_epoch(&mut self, seed: u64) {
        if let Some(p) = &mut self.persistent {
            p.chains.reseed(seed ^ 0x7063_6421);
            if let Some(replay) = &mut p.replay {
                replay.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x7270_6c79);
            }
        }
    }

    fn draw(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<Self::Draw, TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let data: Vars<D> = batch.iter().map(|(k, t)| (k.clone(), super::super::upload(&model.dev, t, rows))).collect();
        let visible = model.visible.clone();
        let kept = model.kept.clone();
        let k = self.k;
        // Positive phase: latents that are not summed out are sampled with the data held fixed.
        let mut positive = data.clone();
        if !kept.is_empty() || self.persistent.is_none() {
            let set = model.scratch(rows)?;
            set.set_vars(&data);
            if !kept.is_empty() {
                for _ in 0..k {
                    set.sweep_clamped(&visible);
                }
                for name in &kept {
                    positive.insert(name.clone(), set.state[name].clone());
                }
            }
        }
        // Negative phase: k sweeps from the data (CD) or from the persistent chains (PCD).
        let mut record = None;
        let negative = match (&mut self.persistent, &mut model.scratch) {
            (Some(PersistentChains { chains, replay }), _) => {
                if let Some(replay) = replay {
                    let start = replay.start(chains.random_state());
                    Chains::set_state(chains.as_mut(), &start).map_err(TrainError::Setup)?;
                }
                chains.set_params(&model.params).map_err(TrainError::Setup)?;
                for _ in 0..k {
                    Chains::sweep(chains.as_mut());
                }
                if let Some(replay) = replay {
                    let end = Chains::state(chains.as_ref());
                    if let Some(improved) = &self.improved {
                        record = Some(improved.record(chains, replay, &end)?);
                    }
                    replay.keep(&end);
                }
                chains.state.clone()
            }
            (None, Some(set)) => {
                for _ in 0..k {
                    Chains::sweep(set.as_mut());
                }
                set.state.clone()
            }
            // Cannot fire: CD made the scratch chains for its positive phase above.
            (None, None) => unreachable!("CD's chains are made for the positive phase"),
        };
        Ok(Draw { positive, negative, improved: record })
    }

    fn loss(&self, model: &OnDevice<D>, _batch: &Tensors, draw: &Self::Draw) -> Result<(f64, Grads<D>), TrainError> {
        let (loss, mut grads) = self.symbolic_gradients(model, &draw.positive, &draw.negative);
        let (Some(improved), Some(record)) = (&self.improved, &draw.improved) else { return Ok((loss, grads)) };
        let (terms, extra) = improved.loss(model, &draw.negative, record);
        for (name, g) in extra {
            let total = match grads.remove(&name) {
                Some(acc) => acc.add(g, &model.dev),
                None => g,
            };
            grads.insert(name, total);
        }
        Ok((loss + terms, grads))
    }

    #[cfg(test)]
    fn tape_loss(
        &self,
        model: &OnDevice<D>,
        _batch: &Tensors,
        draw: &Self::Draw,
    ) -> Result<(f64, Grads<D>), TrainError> {
        Ok(self.tape_gradients(model, &draw.positive, &draw.negative, draw.improved.as_ref()))
    }

    fn phases(&self) -> Vec<&super::Phase> {
        self.phases.iter().chain(self.improved.as_ref().map(Improved::phase)).collect()
    }

    fn roots(&self, model: &OnDevice<D>) -> Vec<Id> {
        vec![model.free_energy]
    }

    fn state(&self) -> Tensors {
        let mut out = Tensors::new();
        if let Some(chains) = Objective::chains(self) {
            out.extend(chains.into_iter().map(|(k, t)| (format!("chain.{k}"), t)));
        }
        if let Some(PersistentChains { replay: Some(replay), .. }) = &self.persistent {
            out.extend(replay.saved());
        }
        out
    }

    fn chains(&self) -> Option<Tensors> {
        self.persistent.as_ref().map(|p| Chains::state(p.chains.as_ref()))
    }

    fn chain_sets(&mut self) -> Vec<&mut ChainSet<D>> {
        self.persistent.as_mut().map(|p| p.chains.as_mut()).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::ChainSet;
    use super::*;

    /// The tape-free gradients equal the tape's on the same samples.
    #[test]
    fn symbolic_batch_gradients_match_the_tape() {
        let models = [
            "model m { visible v : binary[5]; hidden h : binary[3]; param W : real[5, 3] = normal(0, 1); param b : real[5] = normal(0, 1); param c : real[3] = normal(0, 1);
               energy e = -(v @ W @ h) - b @ v - c @ h; } train m { data = bars_and_stripes(size: 2) -> v; objective = cd(k: 2); }",
            "model m { visible v : binary[4]; hidden h1 : binary[3]; hidden h2 : binary[2]; param W1 : real[4, 3] = normal(0, 1); param W2 : real[3, 2] = normal(0, 1);
               energy e = -(v @ W1 @ h1) - h1 @ W2 @ h2; } train m { data = bars_and_stripes(size: 2) -> v; objective = pcd(k: 1, chains: 6); }",
            "model m { visible x : real[2]; hidden h : binary[3]; param W : real[2, 3] = normal(0, 1); net f = mlp(2 -> 4 -> 1, act: tanh);
               energy e = 0.5 * sum(square(x)) + f(x) - x @ W @ h; } train m { data = toy(\"moons\", n: 40) -> x; objective = cd(k: 1); }",
            "model m { const A = grid(2, 3); visible y : categorical(3)[6]; param J : real = 0.5; param field : real[3] = normal(0, 1);
               energy e = -J * sum(A * (y @ y.T)) - sum(y @ field); } train m { data = csv(\"x.csv\") -> y; objective = pcd(k: 1, chains: 6); }",
        ];
        for src in models {
            let c = crate::compile(src).expect("compiles");
            let (plans, _) = crate::plan(&c.program).expect("plans");
            let model = c.program.models["m"].clone();
            let train = c.program.trains["m"].clone();
            let params = crate::tensor::initialise(&crate::ir::param_specs(&model), 1);
            let (mut on, _) =
                super::super::super::train::on_device(Cpu::seed_from_u64(0), &model, &plans[0], &train, &params, 1)
                    .expect("on device");
            let mut objective = match &train.options.objective {
                crate::analysis::program::Objective::Cd { k } => Contrastive::cd(&mut on, *k),
                crate::analysis::program::Objective::Pcd(p) => {
                    Contrastive::pcd(&mut on, p, &params, &Tensors::new(), 1).expect("pcd")
                }
                other => panic!("a contrastive objective, not {other:?}"),
            };
            on.used = on.params_in(&Objective::roots(&objective, &on), &on.declared);
            let rows = 6;
            let mut set = ChainSet::new(Cpu::seed_from_u64(2), &model, &plans[0], &params, rows, 2).expect("chains");
            Chains::sweep(&mut set);
            let batch: Tensors = on.visible.iter().map(|v| (v.clone(), Chains::state(&set)[v].clone())).collect();
            let draw = objective.draw(&mut on, &batch).expect("phases");
            let (l1, g1) = objective.tape_gradients(&on, &draw.positive, &draw.negative, None);
            let (l2, g2) = objective.symbolic_gradients(&on, &draw.positive, &draw.negative);
            assert!((l1 - l2).abs() < 1e-4 * (1.0 + l1.abs()), "loss {l1} vs {l2}\n{src}");
            assert_eq!(g1.keys().collect::<Vec<_>>(), g2.keys().collect::<Vec<_>>());
            for (name, a) in &g1 {
                let (a, b) = (a.as_vec(), g2[name].as_vec());
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                        "gradient of {name}: tape {x} vs symbolic {y}\n{src}"
                    );
                }
            }
        }
    }
}
