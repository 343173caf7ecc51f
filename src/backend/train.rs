//! Training steps on a device. The loss is evaluated through the IR with
//! dfdx's tape on the parameters (each traced with `leaky_trace`; the tapes
//! merge as traced values combine), so `backward` yields every parameter's
//! gradient; samples enter as data, which stops gradients through them.
//!
//! CD-k and persistent CD minimise `mean F(data) − mean F(samples)`, with `F`
//! the free energy where the plan sums latents out and the energy with
//! sampled latents otherwise. Pseudo-likelihood minimises
//! `−Σ_i log p(x_i | x_−i)` exactly, from energy differences.

use super::eval::{Evaluator, Leaves, Taped};
use super::{ChainSet, Kernels, T3, upload};
use crate::analysis::plan::Plan;
use crate::analysis::program::{
    Directions, Domain, Model, NoiseKind, Objective as ProgramObjective, Optimizer as ProgramOptimizer, Train,
};
use crate::front::ast::Role;
use crate::ir::{Id, Ir, Op};
use crate::tensor::{HostTensor, Tensors};
use dfdx::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The surrogate loss (CD/PCD: mean free energy of data minus samples).
    pub loss: f64,
    /// Norm of the whole parameter gradient, before clipping.
    pub grad_norm: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// A loss, gradient or parameter became NaN or infinite.
    NonFinite {
        what: String,
        step: usize,
    },
    Setup(String),
}

/// A model being trained on a device: parameters, optimiser state, chains.
pub struct Trainer {
    inner: Box<dyn Fit>,
    model: Model,
    /// The variables every batch must give (the visible ones).
    visible: Vec<String>,
}

trait Fit {
    /// Sees the whole training set once before the first epoch (NCE fits its noise to it).
    fn prepare(&mut self, data: &Tensors);
    fn begin_epoch(&mut self, seed: u64);
    fn step(&mut self, batch: &Tensors, lr: f64, step: usize) -> Result<StepReport, TrainError>;
    fn params(&self) -> Tensors;
    fn state(&self) -> Tensors;
    fn chains(&self) -> Option<Tensors>;
}

impl Trainer {
    /// `state` holds optimiser moments and persistent chains from a checkpoint (empty to start afresh).
    pub fn new(
        model: &Model,
        plan: &Plan,
        train: &Train,
        params: &Tensors,
        state: &Tensors,
        seed: u64,
        device: super::DeviceKind,
    ) -> Result<Trainer, TrainError> {
        let inner: Box<dyn Fit> = match device {
            super::DeviceKind::Cpu => {
                Box::new(Fitter::new(Cpu::seed_from_u64(seed), model, plan, train, params, state, seed)?)
            }
            #[cfg(feature = "cuda")]
            super::DeviceKind::Cuda => {
                let dev = Cuda::try_seed_from_u64(seed)
                    .map_err(|e| TrainError::Setup(format!("cannot open the CUDA device: {e:?}")))?;
                Box::new(Fitter::new(dev, model, plan, train, params, state, seed)?)
            }
            #[cfg(not(feature = "cuda"))]
            super::DeviceKind::Cuda => {
                return Err(TrainError::Setup(
                    "this ebmc was built without the `cuda` feature; rebuild with `--features cuda`".into(),
                ));
            }
        };
        let visible = model.variables.iter().filter(|v| v.role == Role::Visible).map(|v| v.name.clone()).collect();
        Ok(Trainer { inner, model: model.clone(), visible })
    }

    /// Shows the trainer the whole training set before the first epoch.
    pub fn prepare(&mut self, data: &Tensors) -> Result<(), TrainError> {
        crate::tensor::check_rows(&self.model, data, &self.visible)
            .map_err(|e| TrainError::Setup(format!("training data: {e}")))?;
        self.inner.prepare(data);
        Ok(())
    }

    /// Reseeds every generator from the run's seed and the epoch, so that a
    /// resumed run repeats an uninterrupted one exactly.
    pub fn begin_epoch(&mut self, seed: u64) {
        self.inner.begin_epoch(seed);
    }

    /// One optimiser step on a batch of visible rows, at learning rate `lr`.
    pub fn step(&mut self, batch: &Tensors, lr: f64, step: usize) -> Result<StepReport, TrainError> {
        crate::tensor::check_rows(&self.model, batch, &self.visible)
            .map_err(|e| TrainError::Setup(format!("training batch: {e}")))?;
        self.inner.step(batch, lr, step)
    }

    pub fn params(&self) -> Tensors {
        self.inner.params()
    }

    /// Optimiser moments and persistent chains, for checkpoints.
    pub fn state(&self) -> Tensors {
        self.inner.state()
    }

    /// The persistent chains' current states, when the objective keeps chains.
    pub fn chains(&self) -> Option<Tensors> {
        self.inner.chains()
    }
}

enum Objective<D: Kernels> {
    Cd {
        k: usize,
    },
    /// Persistent chains; with continuous visibles, restarted each step
    /// from a replay buffer of past samples (a fraction from noise).
    Pcd {
        k: usize,
        chains: Box<ChainSet<D>>,
        replay: Option<Replay>,
    },
    /// Pseudo-likelihood. Variables in `logits` are linear in each unit (no
    /// unit couples to itself), so p(x_i | rest) comes from the conditional
    /// logits −∂E/∂x at the data, all units at once; the others use energy
    /// differences, one unit at a time.
    Pl {
        logits: BTreeMap<String, Id>,
    },
    /// Score matching and noise contrast for continuous visible variables.
    Continuous(Continuous),
    /// JEM: cross-entropy of p(label | rest) plus PCD on the energy with the
    /// label summed out, its negatives drawn from a replay buffer.
    Jem(Box<Jem<D>>),
}

struct Jem<D: Kernels> {
    label: String,
    /// −∂E/∂label: the classifier's logits.
    logits: Id,
    /// The energy with the label (and any planned latents) summed out.
    marginal: Id,
    k: usize,
    /// Batch-sized chains that run the k sweeps of each step.
    chains: Box<ChainSet<D>>,
    replay: Replay,
}

/// A replay buffer: past samples, a row each, from which chains restart.
struct Replay {
    rows: Vec<Tensors>,
    capacity: usize,
    /// The fraction of chains restarted from fresh random states instead.
    reinit: f64,
    rng: rand::rngs::SmallRng,
}

impl Replay {
    fn new(capacity: usize, reinit: f64, seed: u64, saved: &Tensors) -> Replay {
        let mut replay = Replay { rows: Vec::new(), capacity, reinit, rng: rand::SeedableRng::seed_from_u64(seed) };
        // Saved as `replay.<var>` tensors of shape (rows, ...).
        let saved: Vec<(&str, &HostTensor)> =
            saved.iter().filter_map(|(k, t)| k.strip_prefix("replay.").map(|n| (n, t))).collect();
        let n = saved.first().map_or(0, |(_, t)| t.shape[0]);
        replay.rows =
            (0..n).map(|r| saved.iter().map(|(name, t)| (name.to_string(), row_of(t, r))).collect()).collect();
        replay
    }

    /// Start states: `fresh` rows kept with probability `reinit` (always while
    /// the buffer holds fewer rows than a batch), the rest drawn from the buffer.
    fn start(&mut self, mut fresh: Tensors) -> Tensors {
        let rows = fresh.values().next().map_or(0, |t| t.shape[0]);
        for r in 0..rows {
            if self.rows.len() >= rows && rand::Rng::r#gen::<f64>(&mut self.rng) >= self.reinit {
                let pick = &self.rows[rand::Rng::gen_range(&mut self.rng, 0..self.rows.len())];
                for (name, t) in fresh.iter_mut() {
                    let per: usize = t.shape[1..].iter().product();
                    t.data[r * per..(r + 1) * per].copy_from_slice(&pick[name].data);
                }
            }
        }
        fresh
    }

    /// Adds the chains' end states, replacing random rows once full.
    fn keep(&mut self, end: &Tensors) {
        let rows = end.values().next().map_or(0, |t| t.shape[0]);
        for r in 0..rows {
            let row: Tensors = end.iter().map(|(name, t)| (name.clone(), row_of(t, r))).collect();
            if self.rows.len() < self.capacity {
                self.rows.push(row);
            } else {
                let at = rand::Rng::gen_range(&mut self.rng, 0..self.capacity);
                self.rows[at] = row;
            }
        }
    }

    /// The buffer as `replay.<var>` tensors, for checkpoints.
    fn saved(&self) -> Tensors {
        let Some(first) = self.rows.first() else { return Tensors::new() };
        first
            .iter()
            .map(|(name, t)| {
                let mut shape = vec![self.rows.len()];
                shape.extend(&t.shape);
                (
                    format!("replay.{name}"),
                    HostTensor::new(shape, self.rows.iter().flat_map(|r| r[name].data.iter().copied()).collect()),
                )
            })
            .collect()
    }
}

/// Row `r` of a batched host tensor.
fn row_of(t: &HostTensor, r: usize) -> HostTensor {
    let per: usize = t.shape[1..].iter().product();
    HostTensor::new(t.shape[1..].to_vec(), t.data[r * per..(r + 1) * per].to_vec())
}

/// Roots and options of the continuous objectives. `grads[x]` is ∂F/∂x and
/// `hvps[x]` the Hessian-vector product along the variable `__dir.x`.
struct Continuous {
    kind: ContinuousKind,
    grads: BTreeMap<String, Id>,
    hvps: BTreeMap<String, Id>,
    rng: rand::rngs::SmallRng,
    /// NCE's noise: mean, Cholesky factor of the covariance (row-major), box.
    noise: Option<Noise>,
}

#[derive(Clone, Copy)]
enum ContinuousKind {
    Dsm { sigma: f32 },
    Ssm { projections: usize, rademacher: bool, variance_reduced: bool },
    Sm,
    Cnce { sigma: f32 },
    Nce { gaussian: bool, ratio: usize },
}

#[derive(Clone)]
struct Noise {
    mean: Vec<f64>,
    chol: Vec<f64>,
    low: Vec<f64>,
    high: Vec<f64>,
}

enum Optimizer {
    Sgd { momentum: f32, nesterov: bool, weight_decay: f32 },
    Adam { beta1: f32, beta2: f32, eps: f32, weight_decay: f32, t: i32 },
}

struct Fitter<D: Kernels> {
    dev: D,
    ir: Ir,
    /// Free energy of the visible and kept variables (latents summed out where planned).
    free_energy: Id,
    /// The full energy (pseudo-likelihood).
    total: Id,
    params: BTreeMap<String, T3<D>>,
    shapes: BTreeMap<String, Vec<usize>>,
    /// Parameters the loss depends on (the others get no gradient).
    used: Vec<String>,
    /// Per-example gradients of the free energy in each used parameter, for
    /// the tape-free contrastive step (see `contrastive_symbolic`).
    param_grads: Vec<(String, Id)>,
    consts: BTreeMap<String, T3<D>>,
    lattices: BTreeMap<String, Vec<Vec<usize>>>,
    objective: Objective<D>,
    optimizer: Optimizer,
    /// Optimiser moments: `m.NAME`, `v.NAME` (Adam) or `velocity.NAME` (SGD).
    moments: BTreeMap<String, T3<D>>,
    l1: f32,
    l2: f32,
    energy_alpha: f32,
    clip: Option<f32>,
    visible: Vec<String>,
    kept: Vec<String>,
    /// Batch-sized chains for the positive phase and for CD's negative phase.
    scratch: Option<Box<ChainSet<D>>>,
    model: Model,
    plan: Plan,
    seed: u64,
}

impl<D: Kernels> Fitter<D> {
    fn new(
        dev: D,
        model: &Model,
        plan: &Plan,
        train: &Train,
        params: &Tensors,
        state: &Tensors,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let mut lowered = plan.lowered.clone();
        let total = lowered.ir.inline_nets(lowered.total);
        let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
        let mut free_energy = total;
        for name in &summed {
            free_energy =
                crate::analysis::plan::sum_out(&mut lowered.ir, free_energy, model.variable(name).expect("declared")).0;
        }
        let free_energy = lowered.ir.inline_nets(free_energy);
        let leaves = super::device_leaves(&dev, model, &lowered, params)?;
        let shapes: BTreeMap<String, Vec<usize>> =
            lowered.params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let (mut up, consts): (BTreeMap<String, T3<D>>, BTreeMap<String, T3<D>>) =
            leaves.tensors.into_iter().partition(|(k, _)| shapes.contains_key(k));
        let mut shapes = shapes;
        if matches!(train.options.objective, ProgramObjective::Nce { .. }) {
            // NCE learns the log-normaliser as one more parameter.
            let c = match params.get("nce.log_z") {
                None => 0.0,
                Some(t) if t.data.len() == 1 && t.data[0].is_finite() => t.data[0],
                Some(t) => {
                    return Err(TrainError::Setup(format!(
                        "`nce.log_z` must be one finite number, the checkpoint holds {:?}",
                        t.data
                    )));
                }
            };
            up.insert("nce.log_z".into(), dev.tensor_from_vec(vec![c], (1, 1, 1)));
            shapes.insert("nce.log_z".into(), vec![]);
        }
        let lattices = leaves.lattices;
        let visible: Vec<String> =
            model.variables.iter().filter(|v| v.role == Role::Visible).map(|v| v.name.clone()).collect();
        let kept: Vec<String> = model
            .variables
            .iter()
            .filter(|v| v.role == Role::Hidden && !summed.contains(&v.name))
            .map(|v| v.name.clone())
            .collect();
        let objective = match &train.options.objective {
            ProgramObjective::Cd { k } => Objective::Cd { k: *k },
            ProgramObjective::Pcd(p) => {
                let mut set = ChainSet::new(dev.clone(), model, plan, params, p.chains, seed ^ 0x7063_6421)?;
                if state.keys().any(|k| k.starts_with("chain.")) {
                    let chain_state: Tensors = state
                        .iter()
                        .filter_map(|(k, t)| k.strip_prefix("chain.").map(|n| (n.to_string(), t.clone())))
                        .collect();
                    super::Chains::set_state(&mut set, &chain_state).map_err(TrainError::Setup)?;
                }
                // Langevin chains on the data's own variables restart from a replay buffer.
                let langevin = plan.variables.iter().any(|v| {
                    visible.contains(&v.name) && matches!(v.kernel, crate::analysis::plan::Kernel::Langevin { .. })
                });
                let replay = langevin.then(|| Replay::new(p.buffer, p.reinit, seed ^ 0x7270_6c79, state));
                Objective::Pcd { k: p.k, chains: Box::new(set), replay }
            }
            ProgramObjective::Pl => {
                let mut logits = BTreeMap::new();
                for v in &plan.variables {
                    if matches!(
                        v.kernel,
                        crate::analysis::plan::Kernel::BlockGibbs { .. }
                            | crate::analysis::plan::Kernel::ChromaticGibbs { .. }
                    ) {
                        let g = lowered
                            .ir
                            .grad(total, &v.name)
                            .unwrap_or_else(|| lowered.ir.zeros(&model.variable(&v.name).expect("declared").shape));
                        logits.insert(v.name.clone(), lowered.ir.neg(g));
                    }
                }
                Objective::Pl { logits }
            }
            ProgramObjective::Jem(p) => {
                let label =
                    plan.label_marginal.as_ref().map(|m| m.var.clone()).ok_or_else(|| {
                        TrainError::Setup("`jem` needs a categorical label the plan can sum out".into())
                    })?;
                let g = lowered
                    .ir
                    .grad(total, &label)
                    .ok_or_else(|| TrainError::Setup(format!("the energy does not depend on `{label}`")))?;
                let logits = lowered.ir.neg(g);
                let marginal = crate::analysis::plan::sum_out(
                    &mut lowered.ir,
                    free_energy,
                    model.variable(&label).expect("declared"),
                )
                .0;
                let marginal = lowered.ir.inline_nets(marginal);
                let batch = train.batch.max(1);
                let chains = ChainSet::new(dev.clone(), model, plan, params, batch, seed ^ 0x6a65_6d)?;
                Objective::Jem(Box::new(Jem {
                    label,
                    logits,
                    marginal,
                    k: p.k,
                    chains: Box::new(chains),
                    replay: Replay::new(p.buffer, p.reinit, seed ^ 0x6a65_6d, state),
                }))
            }
            continuous => {
                let kind = match *continuous {
                    ProgramObjective::Dsm { sigma } => ContinuousKind::Dsm { sigma: sigma as f32 },
                    ProgramObjective::Ssm { projections, directions, variance_reduced } => ContinuousKind::Ssm {
                        projections,
                        rademacher: directions == Directions::Rademacher,
                        variance_reduced,
                    },
                    ProgramObjective::Sm => ContinuousKind::Sm,
                    ProgramObjective::Cnce { sigma } => ContinuousKind::Cnce { sigma: sigma as f32 },
                    ProgramObjective::Nce { noise, ratio } => {
                        ContinuousKind::Nce { gaussian: noise == NoiseKind::Gaussian, ratio }
                    }
                    // Cannot fire: the arms above took the other objectives.
                    _ => unreachable!("discrete objectives are matched above"),
                };
                let mut grads = BTreeMap::new();
                let mut hvps = BTreeMap::new();
                for v in model.variables.iter().filter(|v| v.role == Role::Visible) {
                    if let Some(g) = lowered.ir.grad(free_energy, &v.name) {
                        grads.insert(v.name.clone(), g);
                    }
                    if matches!(kind, ContinuousKind::Ssm { .. } | ContinuousKind::Sm) {
                        if let Some(h) = lowered.ir.hessian_vector(free_energy, &v.name, &format!("__dir.{}", v.name)) {
                            hvps.insert(v.name.clone(), h);
                        }
                    }
                }
                Objective::Continuous(Continuous {
                    kind,
                    grads,
                    hvps,
                    rng: rand::SeedableRng::seed_from_u64(seed ^ 0x736d),
                    noise: None,
                })
            }
        };
        let optimizer = match train.options.optimizer {
            ProgramOptimizer::Adam { beta1, beta2, eps, weight_decay, .. } => Optimizer::Adam {
                beta1: beta1 as f32,
                beta2: beta2 as f32,
                eps: eps as f32,
                weight_decay: weight_decay as f32,
                t: state.get("adam.t").map_or(0, |t| t.data[0] as i32),
            },
            ProgramOptimizer::Sgd { momentum, weight_decay, nesterov, .. } => {
                Optimizer::Sgd { momentum: momentum as f32, nesterov, weight_decay: weight_decay as f32 }
            }
        };
        let moments = state
            .iter()
            .filter(|(k, _)| k.starts_with("m.") || k.starts_with("v.") || k.starts_with("velocity."))
            .map(|(k, t)| (k.clone(), upload(&dev, t, 1)))
            .collect();
        let regs = &train.options.regularizers;
        let reg = |r: Option<f64>| r.unwrap_or(0.0) as f32;
        let roots: Vec<Id> = match &objective {
            Objective::Pl { logits } => std::iter::once(total).chain(logits.values().copied()).collect(),
            Objective::Continuous(c) => {
                std::iter::once(free_energy).chain(c.grads.values().copied()).chain(c.hvps.values().copied()).collect()
            }
            Objective::Jem(j) => vec![j.logits, j.marginal],
            _ => vec![free_energy],
        };
        let cone: Vec<Id> = roots.iter().flat_map(|r| lowered.ir.cone(*r)).collect();
        let used: Vec<String> = lowered
            .params
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| cone.iter().any(|id| matches!(&lowered.ir.node(*id).op, Op::Param(p) if p == n)))
            .collect();
        let param_grads = match objective {
            Objective::Pl { .. } | Objective::Continuous(_) | Objective::Jem(_) => Vec::new(),
            _ => used.iter().filter_map(|p| lowered.ir.grad_param(free_energy, p).map(|g| (p.clone(), g))).collect(),
        };
        Ok(Fitter {
            dev,
            ir: lowered.ir,
            free_energy,
            total,
            params: up,
            shapes,
            used,
            param_grads,
            consts,
            lattices,
            objective,
            optimizer,
            moments,
            l1: reg(regs.l1),
            l2: reg(regs.l2),
            energy_alpha: reg(regs.energy_penalty),
            clip: regs.clip_grad.map(|c| c as f32),
            visible,
            kept,
            scratch: None,
            model: model.clone(),
            plan: plan.clone(),
            seed,
        })
    }

    fn host_params(&self) -> Tensors {
        self.params.iter().map(|(k, t)| (k.clone(), HostTensor::new(self.shapes[k].clone(), t.as_vec()))).collect()
    }

    /// A batch-sized chain set (made once per batch size), with current parameters.
    fn scratch(&mut self, rows: usize) -> Result<&mut ChainSet<D>, TrainError> {
        if self.scratch.as_ref().is_none_or(|s| s.chains != rows) {
            let set = ChainSet::new(
                self.dev.clone(),
                &self.model,
                &self.plan,
                &self.host_params(),
                rows,
                self.seed ^ 0x5343_5241,
            )?;
            self.scratch = Some(Box::new(set));
        }
        let set = self.scratch.as_mut().expect("made above");
        set.set_params(&self.params);
        Ok(set)
    }

    /// Every chain set the objective keeps.
    fn chain_sets(&mut self) -> Vec<&mut ChainSet<D>> {
        let kept = match &mut self.objective {
            Objective::Pcd { chains, .. } => Some(chains.as_mut()),
            Objective::Jem(j) => Some(j.chains.as_mut()),
            Objective::Cd { .. } | Objective::Pl { .. } | Objective::Continuous(_) => None,
        };
        kept.into_iter().chain(self.scratch.as_deref_mut()).collect()
    }

    /// Traced parameters and untaped constants for one loss evaluation.
    fn taped_leaves(&self) -> Leaves<D, OwnedTape<f32, D>> {
        let mut tensors: BTreeMap<String, T3<D, OwnedTape<f32, D>>> =
            self.params.iter().map(|(k, t)| (k.clone(), t.leaky_trace())).collect();
        tensors.extend(self.consts.iter().map(|(k, t)| (k.clone(), t.retaped::<OwnedTape<f32, D>>())));
        Leaves { tensors, lattices: self.lattices.clone() }
    }

    /// The positive and negative phases' variables for one batch.
    fn phases(&mut self, batch: &Tensors) -> Result<(BTreeMap<String, T3<D>>, BTreeMap<String, T3<D>>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let data: BTreeMap<String, T3<D>> =
            batch.iter().map(|(k, t)| (k.clone(), upload(&self.dev, t, rows))).collect();
        let visible = self.visible.clone();
        let kept = self.kept.clone();
        // Positive phase: latents that are not summed out are sampled with the data held fixed.
        let mut positive = data.clone();
        let (k, persistent) = match &self.objective {
            Objective::Cd { k } => (*k, false),
            Objective::Pcd { k, .. } => (*k, true),
            Objective::Pl { .. } | Objective::Continuous(_) | Objective::Jem(_) => {
                unreachable!("handled by their own steps")
            }
        };
        if !kept.is_empty() || !persistent {
            let set = self.scratch(rows)?;
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
        let negative = match &mut self.objective {
            Objective::Pcd { chains, replay, .. } => {
                if let Some(replay) = replay {
                    let start = replay.start(chains.random_state());
                    super::Chains::set_state(chains.as_mut(), &start).map_err(TrainError::Setup)?;
                }
                chains.set_params(&self.params);
                for _ in 0..k {
                    super::Chains::sweep(chains.as_mut());
                }
                if let Some(replay) = replay {
                    replay.keep(&super::Chains::state(chains.as_ref()));
                }
                chains.state.clone()
            }
            _ => {
                let set = self.scratch.as_mut().expect("made for the positive phase");
                for _ in 0..k {
                    super::Chains::sweep(set.as_mut());
                }
                set.state.clone()
            }
        };
        Ok((positive, negative))
    }

    /// CD/PCD through the tape: general, and needed for the energy penalty.
    fn contrastive(&mut self, batch: &Tensors) -> Result<(f64, BTreeMap<String, T3<D>>), TrainError> {
        let (positive, negative) = self.phases(batch)?;
        Ok(self.tape_gradients(&positive, &negative))
    }

    fn tape_gradients(
        &self,
        positive: &BTreeMap<String, T3<D>>,
        negative: &BTreeMap<String, T3<D>>,
    ) -> (f64, BTreeMap<String, T3<D>>) {
        let (visible, kept) = (self.visible.clone(), self.kept.clone());
        let leaves = self.taped_leaves();
        let ev = Taped(Evaluator { ir: &self.ir, dev: &self.dev, leaves: &leaves });
        let taped = |vars: &BTreeMap<String, T3<D>>, names: &[String]| -> BTreeMap<String, T3<D, OwnedTape<f32, D>>> {
            names.iter().map(|n| (n.clone(), vars[n].retaped())).collect()
        };
        let names: Vec<String> = visible.iter().chain(&kept).cloned().collect();
        let f_pos = ev.eval(&[self.free_energy], &taped(positive, &names)).pop().expect("one root");
        let f_neg = ev.eval(&[self.free_energy], &taped(negative, &names)).pop().expect("one root");
        let loss = if self.energy_alpha > 0.0 {
            let penalty = f_pos.retaped::<OwnedTape<f32, D>>().square().mean::<(), Axes3<0, 1, 2>>()
                + f_neg.retaped::<OwnedTape<f32, D>>().square().mean::<(), Axes3<0, 1, 2>>();
            f_pos.mean::<(), Axes3<0, 1, 2>>() - f_neg.mean::<(), Axes3<0, 1, 2>>() + penalty * self.energy_alpha
        } else {
            f_pos.mean::<(), Axes3<0, 1, 2>>() - f_neg.mean::<(), Axes3<0, 1, 2>>()
        };
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        (value, self.used.iter().map(|p| (p.clone(), g.get(&self.params[p]))).collect())
    }

    /// CD/PCD with symbolic parameter gradients: `∂F/∂θ` per example is IR,
    /// and its sum over a batch is evaluated directly (an outer product of
    /// per-example vectors sums to one GEMM). The same gradient as the tape's,
    /// without the tape's elementwise backward passes (tested against it).
    fn contrastive_symbolic(&mut self, batch: &Tensors) -> Result<(f64, BTreeMap<String, T3<D>>), TrainError> {
        let (positive, negative) = self.phases(batch)?;
        Ok(self.symbolic_gradients(&positive, &negative))
    }

    fn symbolic_gradients(
        &self,
        positive: &BTreeMap<String, T3<D>>,
        negative: &BTreeMap<String, T3<D>>,
    ) -> (f64, BTreeMap<String, T3<D>>) {
        let names: Vec<String> = self.visible.iter().chain(&self.kept).cloned().collect();
        let leaves = Leaves {
            tensors: self.params.iter().chain(&self.consts).map(|(k, t)| (k.clone(), t.clone())).collect(),
            lattices: self.lattices.clone(),
        };
        let ev = Evaluator { ir: &self.ir, dev: &self.dev, leaves: &leaves };
        let roots: Vec<Id> =
            self.param_grads.iter().map(|(_, g)| *g).chain(std::iter::once(self.free_energy)).collect();
        let (rows_pos, rows_neg) = (positive[&names[0]].shape().0, negative[&names[0]].shape().0);
        let pick = |vars: &BTreeMap<String, T3<D>>| {
            names.iter().map(|n| (n.clone(), vars[n].clone())).collect::<BTreeMap<_, _>>()
        };
        // Mean over the data minus mean over the samples.
        let (pos, neg) = (pick(positive), pick(negative));
        let mut sums = ev.eval_phase_sums(&roots, &[(&pos, 1.0 / rows_pos as f32), (&neg, -1.0 / rows_neg as f32)]);
        let loss = f64::from(sums.pop().expect("free energy").as_vec()[0]);
        (loss, self.param_grads.iter().map(|(name, _)| name.clone()).zip(sums).collect())
    }

    /// Score matching (exact, denoising, sliced) and noise contrast on the
    /// continuous visible variables, through the tape. Gradients and
    /// Hessian-vector products of the energy in the data are IR, so the
    /// tape only differentiates in the parameters.
    fn continuous(&mut self, batch: &Tensors) -> Result<(f64, BTreeMap<String, T3<D>>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let Objective::Continuous(c) = &mut self.objective else { unreachable!("continuous objective") };
        let (kind, grads, hvps, noise) = (c.kind, c.grads.clone(), c.hvps.clone(), c.noise.clone());
        let mut rng = std::mem::replace(&mut c.rng, rand::SeedableRng::seed_from_u64(0));
        let rng = &mut rng;
        type Own<D> = OwnedTape<f32, D>;
        let dev = self.dev.clone();
        let leaves = self.taped_leaves();
        let ev = Taped(Evaluator { ir: &self.ir, dev: &self.dev, leaves: &leaves });
        let up = |t: &HostTensor, n: usize| upload(&dev, t, n).retaped::<Own<D>>();
        let with = |batch: &Tensors, name: &str, data: Vec<f32>| -> Tensors {
            let mut b = batch.clone();
            let shape = b[name].shape.clone();
            b.insert(name.to_string(), HostTensor::new(shape, data));
            b
        };
        let taped = |b: &Tensors| -> BTreeMap<String, T3<D, Own<D>>> {
            b.iter().map(|(k, t)| (k.clone(), up(t, t.shape[0]))).collect()
        };
        let per_row = |t: T3<D, Own<D>>| t.sum::<(usize,), Axes2<1, 2>>();
        let loss: Tensor<(), f32, D, Own<D>> = match kind {
            ContinuousKind::Dsm { sigma } => {
                // ½ |σ ∇E(x + σz) − z|²: the denoising target is the noise itself.
                let mut noisy = batch.clone();
                let mut zs = BTreeMap::new();
                for name in grads.keys() {
                    let t = &batch[name];
                    let z = normals(rng, t.data.len());
                    noisy = with(&noisy, name, t.data.iter().zip(&z).map(|(x, e)| x + sigma * e).collect());
                    zs.insert(name.clone(), up(&HostTensor::new(t.shape.clone(), z), rows));
                }
                let roots: Vec<Id> = grads.values().copied().collect();
                let gs = ev.eval(&roots, &taped(&noisy));
                let mut total: Option<Tensor<(), f32, D, Own<D>>> = None;
                for ((name, _), g) in grads.iter().zip(gs) {
                    let (m, n) = super::eval::canon(&self.model.variable(name).expect("declared").shape);
                    let term = ((super::eval::expand(g, rows, m, n) * sigma) - zs.remove(name).expect("noise drawn"))
                        .square()
                        .sum::<(), Axes3<0, 1, 2>>();
                    total = Some(match total {
                        Some(t) => t + term,
                        None => term,
                    });
                }
                total.expect("a continuous variable") * (0.5 / rows as f32)
            }
            ContinuousKind::Ssm { projections, rademacher, variance_reduced } => {
                // ½ (vᵀ∇E)² − vᵀ(∇²E)v, or ½ |∇E|² − vᵀ(∇²E)v with the variance reduction.
                let mut total: Option<Tensor<(), f32, D, Own<D>>> = None;
                for _ in 0..projections {
                    let mut b = batch.clone();
                    let mut dirs = BTreeMap::new();
                    for name in grads.keys() {
                        let t = &batch[name];
                        let v: Vec<f32> = if rademacher {
                            normals(rng, t.data.len()).into_iter().map(|x| if x < 0.0 { -1.0 } else { 1.0 }).collect()
                        } else {
                            normals(rng, t.data.len())
                        };
                        b.insert(format!("__dir.{name}"), HostTensor::new(t.shape.clone(), v.clone()));
                        dirs.insert(name.clone(), HostTensor::new(t.shape.clone(), v));
                    }
                    let roots: Vec<Id> = grads.values().chain(hvps.values()).copied().collect();
                    let mut vals = ev.eval(&roots, &taped(&b)).into_iter();
                    let gs: Vec<_> = (0..grads.len()).map(|_| vals.next().expect("gradient")).collect();
                    let hs: Vec<_> = vals.collect();
                    let mut vg: Option<Tensor<(usize,), f32, D, Own<D>>> = None;
                    let mut g2: Option<Tensor<(), f32, D, Own<D>>> = None;
                    let mut vhv: Option<Tensor<(), f32, D, Own<D>>> = None;
                    for ((name, g), h) in grads.keys().zip(gs).zip(hs) {
                        let (m, n) = super::eval::canon(&self.model.variable(name).expect("declared").shape);
                        let (g, h) = (super::eval::expand(g, rows, m, n), super::eval::expand(h, rows, m, n));
                        let v = up(&dirs[name], rows);
                        // Each gradient is consumed by the one term that uses it, so its tape reaches the loss.
                        if variance_reduced {
                            let sq = g.square().sum::<(), Axes3<0, 1, 2>>();
                            g2 = Some(match g2 {
                                Some(t) => t + sq,
                                None => sq,
                            });
                        } else {
                            let dot = per_row(g * v.retaped::<Own<D>>());
                            vg = Some(match vg {
                                Some(t) => t + dot,
                                None => dot,
                            });
                        }
                        let curv = (h * v).sum::<(), Axes3<0, 1, 2>>();
                        vhv = Some(match vhv {
                            Some(t) => t + curv,
                            None => curv,
                        });
                    }
                    let first = if variance_reduced {
                        g2.expect("gradients") * 0.5
                    } else {
                        vg.expect("gradients").square().sum::<(), Axis<0>>() * 0.5
                    };
                    let term = first - vhv.expect("Hessian-vector products");
                    total = Some(match total {
                        Some(t) => t + term,
                        None => term,
                    });
                }
                total.expect("at least one projection") / (rows * projections) as f32
            }
            ContinuousKind::Sm => {
                // Σ_i ½ (∂_i E)² − ∂²_i E: one Hessian-vector product per coordinate (the minus sign: s = −∇E, tr ∇s = −ΔE).
                let roots: Vec<Id> = grads.values().copied().collect();
                let gs = ev.eval(&roots, &taped(batch));
                let mut total: Option<Tensor<(), f32, D, Own<D>>> = None;
                for ((name, _), g) in grads.iter().zip(gs) {
                    let v = self.model.variable(name).expect("declared");
                    let (m, n) = super::eval::canon(&v.shape);
                    let half = super::eval::expand(g, rows, m, n).square().sum::<(), Axes3<0, 1, 2>>() * 0.5;
                    total = Some(match total {
                        Some(t) => t + half,
                        None => half,
                    });
                    let dims: usize = v.shape.iter().product();
                    for i in 0..dims {
                        let unit: Vec<f32> = (0..rows * dims).map(|j| f32::from(u8::from(j % dims == i))).collect();
                        let mut b = batch.clone();
                        let mut shape = vec![rows];
                        shape.extend(&v.shape);
                        b.insert(format!("__dir.{name}"), HostTensor::new(shape.clone(), unit.clone()));
                        let h = ev.eval(&[hvps[name]], &taped(&b)).pop().expect("one root");
                        let diag = (super::eval::expand(h, rows, m, n) * up(&HostTensor::new(shape, unit), rows))
                            .sum::<(), Axes3<0, 1, 2>>();
                        total = Some(total.expect("started above") - diag);
                    }
                }
                total.expect("a continuous variable") / rows as f32
            }
            ContinuousKind::Cnce { sigma } => {
                // softplus(E(x) − E(x')), x' = x + σz: a symmetric noise needs no density.
                let mut shifted = batch.clone();
                for name in grads.keys() {
                    let t = &batch[name];
                    let z = normals(rng, t.data.len());
                    shifted = with(&shifted, name, t.data.iter().zip(&z).map(|(x, e)| x + sigma * e).collect());
                }
                let e = ev.eval(&[self.free_energy], &taped(batch)).pop().expect("one root");
                let e2 = ev.eval(&[self.free_energy], &taped(&shifted)).pop().expect("one root");
                let d = super::eval::expand(e, rows, 1, 1) - super::eval::expand(e2, rows, 1, 1);
                super::eval::unary(crate::ir::Unary::Softplus, d, true).sum::<(), Axes3<0, 1, 2>>() / rows as f32
            }
            ContinuousKind::Nce { gaussian: is_gaussian, ratio } => {
                // Logistic regression of data against ν = `ratio` noise rows per data row
                // on -E(x) - c - log(ν p_n(x)): at the optimum σ(logit) = p_d / (p_d + ν p_n),
                // so c is log Z itself (without the log ν, c would learn log Z + log ν).
                let noise = noise.ok_or_else(|| TrainError::Setup("NCE's noise was not fitted to the data".into()))?;
                let names: Vec<String> = grads.keys().cloned().collect();
                let count = rows * ratio;
                let d = noise.mean.len();
                let mut noise_rows: Vec<Vec<f64>> = Vec::with_capacity(count);
                for _ in 0..count {
                    let point: Vec<f64> = if is_gaussian {
                        let z: Vec<f64> = normals(rng, d).into_iter().map(f64::from).collect();
                        (0..d)
                            .map(|i| noise.mean[i] + (0..=i).map(|j| noise.chol[i * d + j] * z[j]).sum::<f64>())
                            .collect()
                    } else {
                        (0..d)
                            .map(|i| {
                                noise.low[i] + (noise.high[i] - noise.low[i]) * f64::from(rand::Rng::r#gen::<f32>(rng))
                            })
                            .collect()
                    };
                    noise_rows.push(point);
                }
                let data_rows: Vec<Vec<f64>> = (0..rows)
                    .map(|r| {
                        names
                            .iter()
                            .flat_map(|n| {
                                let t = &batch[n];
                                let per: usize = t.shape[1..].iter().product();
                                t.data[r * per..(r + 1) * per].iter().map(|x| f64::from(*x)).collect::<Vec<_>>()
                            })
                            .collect()
                    })
                    .collect();
                let log_ratio = (ratio as f64).ln();
                let log_pn = |x: &[f64]| (noise.log_density(x, is_gaussian) + log_ratio) as f32;
                let mut noise_batch = Tensors::new();
                let mut at = 0;
                for n in &names {
                    let shape = &batch[n].shape;
                    let per: usize = shape[1..].iter().product();
                    let mut s = shape.clone();
                    s[0] = count;
                    noise_batch.insert(
                        n.clone(),
                        HostTensor::new(
                            s,
                            noise_rows.iter().flat_map(|p| p[at..at + per].iter().map(|x| *x as f32)).collect(),
                        ),
                    );
                    at += per;
                }
                let c_param = leaves.tensors["nce.log_z"].retaped::<Own<D>>();
                let logit = |e: T3<D, Own<D>>, lp: Vec<f32>, n: usize| {
                    let lp = up(&HostTensor::new(vec![n, 1, 1], lp), n);
                    super::eval::expand(e, n, 1, 1).negate()
                        - super::eval::expand(c_param.retaped::<Own<D>>(), n, 1, 1)
                        - lp
                };
                let e_data = ev.eval(&[self.free_energy], &taped(batch)).pop().expect("one root");
                let e_noise = ev.eval(&[self.free_energy], &taped(&noise_batch)).pop().expect("one root");
                let l_data = logit(e_data, data_rows.iter().map(|p| log_pn(p)).collect(), rows);
                let l_noise = logit(e_noise, noise_rows.iter().map(|p| log_pn(p)).collect(), count);
                let pos = super::eval::unary(crate::ir::Unary::Softplus, l_data.negate(), true)
                    .sum::<(), Axes3<0, 1, 2>>()
                    / rows as f32;
                let neg = super::eval::unary(crate::ir::Unary::Softplus, l_noise, true).sum::<(), Axes3<0, 1, 2>>()
                    / rows as f32;
                drop(c_param);
                pos + neg
            }
        };
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        if let Objective::Continuous(c) = &mut self.objective {
            c.rng = std::mem::replace(rng, rand::SeedableRng::seed_from_u64(0));
        }
        // Score matching sees the energy only through its derivatives in the
        // data: a parameter that shifts the energy by a constant gets no gradient.
        let loss_roots: Vec<Id> = match kind {
            ContinuousKind::Dsm { .. } | ContinuousKind::Ssm { .. } | ContinuousKind::Sm => {
                grads.values().chain(hvps.values()).copied().collect()
            }
            _ => vec![self.free_energy],
        };
        let cone: BTreeSet<Id> = loss_roots.iter().flat_map(|r| self.ir.cone(*r)).collect();
        let mut used: Vec<String> = self
            .used
            .iter()
            .filter(|p| cone.iter().any(|id| matches!(&self.ir.node(*id).op, Op::Param(n) if n == *p)))
            .cloned()
            .collect();
        if self.params.contains_key("nce.log_z") {
            used.push("nce.log_z".into());
        }
        Ok((value, used.iter().map(|p| (p.clone(), g.get(&self.params[p]))).collect()))
    }

    /// One JEM step. Negatives start from the replay buffer (a fraction
    /// `reinit` of them from fresh random states) and take `k` sweeps of the
    /// plan's sampler (Langevin on the inputs, Gibbs on the label); the label
    /// is then summed out of their energy.
    fn jem(&mut self, batch: &Tensors) -> Result<(f64, BTreeMap<String, T3<D>>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let Objective::Jem(j) = &mut self.objective else { unreachable!("jem objective") };
        if j.chains.chains != rows {
            return Err(TrainError::Setup(format!("JEM runs batches of {} rows; got {rows}", j.chains.chains)));
        }
        let start = j.replay.start(j.chains.random_state());
        super::Chains::set_state(j.chains.as_mut(), &start).map_err(TrainError::Setup)?;
        j.chains.set_params(&self.params);
        for _ in 0..j.k {
            super::Chains::sweep(j.chains.as_mut());
        }
        let end = super::Chains::state(j.chains.as_ref());
        j.replay.keep(&end);
        let (label, logits_root, marginal) = (j.label.clone(), j.logits, j.marginal);
        type Own<D> = OwnedTape<f32, D>;
        let leaves = self.taped_leaves();
        let ev = Taped(Evaluator { ir: &self.ir, dev: &self.dev, leaves: &leaves });
        let taped = |b: &Tensors| -> BTreeMap<String, T3<D, Own<D>>> {
            b.iter().map(|(k, t)| (k.clone(), upload(&self.dev, t, t.shape[0]).retaped::<Own<D>>())).collect()
        };
        // Cross-entropy of the label given the rest: logsumexp(L) − L·y.
        let l = ev.eval(&[logits_root], &taped(batch)).pop().expect("one root");
        let (m, n) = super::eval::canon(&self.model.variable(&label).expect("declared").shape);
        let l = super::eval::expand(l, rows, m, n);
        let y = upload(&self.dev, &batch[&label], rows);
        let ce = (l.retaped::<Own<D>>().logsumexp::<(usize, usize), Axis<2>>().sum::<(), Axes2<0, 1>>()
            - (l * y).sum::<(), Axes3<0, 1, 2>>())
            / rows as f32;
        // PCD on the marginal energy of the other variables.
        let others = |b: &Tensors| -> Tensors {
            b.iter().filter(|(k, _)| **k != label).map(|(k, t)| (k.clone(), t.clone())).collect()
        };
        let f_pos = ev.eval(&[marginal], &taped(&others(batch))).pop().expect("one root");
        let f_neg = ev.eval(&[marginal], &taped(&others(&end))).pop().expect("one root");
        let generative = if self.energy_alpha > 0.0 {
            let penalty = f_pos.retaped::<Own<D>>().square().mean::<(), Axes3<0, 1, 2>>()
                + f_neg.retaped::<Own<D>>().square().mean::<(), Axes3<0, 1, 2>>();
            f_pos.mean::<(), Axes3<0, 1, 2>>() - f_neg.mean::<(), Axes3<0, 1, 2>>() + penalty * self.energy_alpha
        } else {
            f_pos.mean::<(), Axes3<0, 1, 2>>() - f_neg.mean::<(), Axes3<0, 1, 2>>()
        };
        let loss = ce + generative;
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        let cone: BTreeSet<Id> = [logits_root, marginal].iter().flat_map(|r| self.ir.cone(*r)).collect();
        let used: Vec<String> = self
            .used
            .iter()
            .filter(|p| cone.iter().any(|id| matches!(&self.ir.node(*id).op, Op::Param(n) if n == *p)))
            .cloned()
            .collect();
        Ok((value, used.iter().map(|p| (p.clone(), g.get(&self.params[p]))).collect()))
    }

    /// Exact pseudo-likelihood of a batch: every unit of every visible
    /// variable is set to each of its values in turn.
    fn pseudo_likelihood(&mut self, batch: &Tensors) -> Result<(f64, BTreeMap<String, T3<D>>), TrainError> {
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
        let logits = match &self.objective {
            Objective::Pl { logits } => logits.clone(),
            _ => unreachable!("pseudo-likelihood objective"),
        };
        for (name, root) in &logits {
            let v = self.model.variable(name).expect("declared").clone();
            let leaves = self.taped_leaves();
            let ev = Taped(Evaluator { ir: &self.ir, dev: &self.dev, leaves: &leaves });
            let vars: BTreeMap<String, T3<D, OwnedTape<f32, D>>> =
                batch.iter().map(|(k, t)| (k.clone(), upload(&self.dev, t, rows).retaped())).collect();
            let l = ev.eval(&[*root], &vars).pop().expect("one root");
            let (m, n) = super::eval::canon(&v.shape);
            let l = super::eval::expand(l, rows, m, n);
            let x = upload(&self.dev, &batch[name], rows);
            // -log p(x_i | rest) per unit, from the logits L = -dE/dx.
            let nll = match v.domain {
                Domain::Binary => super::eval::unary(crate::ir::Unary::Softplus, l * (x * -2.0 + 1.0), true),
                Domain::Spin => super::eval::unary(crate::ir::Unary::Softplus, l * (x * -2.0), true),
                _ => {
                    let lse = l.retaped::<OwnedTape<f32, D>>().logsumexp::<(usize, usize), Axis<2>>();
                    let own = (l * x).sum::<(usize, usize), Axis<2>>();
                    (lse - own).reshape_like(&(rows, 1usize, m))
                }
            };
            let loss = nll.sum::<(), Axes3<0, 1, 2>>() / rows as f32;
            total_loss += f64::from(loss.as_vec()[0]);
            let cone = self.ir.cone(*root);
            let used: Vec<String> = self
                .used
                .iter()
                .filter(|p| cone.iter().any(|id| matches!(&self.ir.node(*id).op, Op::Param(n) if n == *p)))
                .cloned()
                .collect();
            accumulate(&mut grads, loss.backward(), &self.params, &used);
        }
        for name in self.visible.clone().into_iter().filter(|n| !logits.contains_key(n)) {
            let v = self.model.variable(&name).expect("declared").clone();
            let (width, values) = unit_values(&v.domain);
            let units = v.shape.iter().product::<usize>() / width;
            let k = values.len();
            // Chunks of units keep the expanded batch near 2^14 rows.
            let chunk = (16384 / (rows * k).max(1)).clamp(1, units);
            for start in (0..units).step_by(chunk) {
                let end = (start + chunk).min(units);
                let c = end - start;
                let expanded = expand_rows(batch, &name, width, &values, start, end);
                let leaves = self.taped_leaves();
                let ev = Taped(Evaluator { ir: &self.ir, dev: &self.dev, leaves: &leaves });
                let n = rows * c * k;
                let vars: BTreeMap<String, T3<D, OwnedTape<f32, D>>> =
                    expanded.iter().map(|(k, t)| (k.clone(), upload(&self.dev, t, n).retaped())).collect();
                let e = ev.eval(&[self.total], &vars).pop().expect("one root");
                let e = super::eval::expand(e, n, 1, 1).reshape_like(&(rows, c, k));
                // -log p(x_i | rest) = E(x) + logsumexp_k(-E(x with x_i = k)); E(x) is the
                // row's own value among the k, found by the data.
                let lse = e.retaped::<OwnedTape<f32, D>>().negate().logsumexp::<(usize, usize), Axis<2>>();
                let own = own_mask(batch, &name, width, &values, start, end);
                let own = self.dev.tensor_from_vec(own, (rows, c, k));
                let e_own = (e * own).sum::<(usize, usize), Axis<2>>();
                let loss = (e_own + lse).sum::<(), Axes2<0, 1>>() / rows as f32;
                total_loss += f64::from(loss.as_vec()[0]);
                accumulate(&mut grads, loss.backward(), &self.params, &self.used);
            }
        }
        Ok((total_loss, grads))
    }
}

fn normals(rng: &mut rand::rngs::SmallRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rand_distr::Distribution::<f32>::sample(&rand_distr::StandardNormal, rng)).collect()
}

/// The values one unit can take, each as its per-unit slice.
fn unit_values(domain: &Domain) -> (usize, Vec<Vec<f32>>) {
    match domain {
        Domain::Binary => (1, vec![vec![0.0], vec![1.0]]),
        Domain::Spin => (1, vec![vec![-1.0], vec![1.0]]),
        Domain::Categorical { categories } => (
            *categories,
            (0..*categories).map(|k| (0..*categories).map(|j| f32::from(u8::from(j == k))).collect()).collect(),
        ),
        Domain::Real { .. } => unreachable!("pseudo-likelihood is planned for discrete models only"),
    }
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

impl Noise {
    /// Log-density of NCE's noise at `x`.
    fn log_density(&self, x: &[f64], gaussian: bool) -> f64 {
        let d = self.mean.len();
        if !gaussian {
            let inside = x.iter().enumerate().all(|(i, v)| *v >= self.low[i] && *v <= self.high[i]);
            return if inside {
                -(0..d).map(|i| (self.high[i] - self.low[i]).ln()).sum::<f64>()
            } else {
                f64::NEG_INFINITY
            };
        }
        // Solve L y = x - mean; log N = -|y|^2/2 - sum log L_ii - d/2 log 2π.
        let mut y = vec![0.0; d];
        for i in 0..d {
            let s: f64 = (0..i).map(|j| self.chol[i * d + j] * y[j]).sum();
            y[i] = (x[i] - self.mean[i] - s) / self.chol[i * d + i];
        }
        -0.5 * y.iter().map(|v| v * v).sum::<f64>()
            - (0..d).map(|i| self.chol[i * d + i].ln()).sum::<f64>()
            - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// A Gaussian with the data's mean and covariance, and the data's box widened by a tenth.
    fn fit(rows: &[Vec<f64>]) -> Noise {
        let (n, d) = (rows.len() as f64, rows[0].len());
        let mean: Vec<f64> = (0..d).map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / n).collect();
        let mut cov = vec![0.0; d * d];
        for r in rows {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / n;
                }
            }
        }
        let mut chol = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| chol[i * d + k] * chol[j * d + k]).sum();
                chol[i * d + j] =
                    if i == j { (cov[i * d + i] - s).max(1e-9).sqrt() } else { (cov[i * d + j] - s) / chol[j * d + j] };
            }
        }
        let low: Vec<f64> = (0..d).map(|i| rows.iter().map(|r| r[i]).fold(f64::INFINITY, f64::min)).collect();
        let high: Vec<f64> = (0..d).map(|i| rows.iter().map(|r| r[i]).fold(f64::NEG_INFINITY, f64::max)).collect();
        let pad: Vec<f64> = (0..d).map(|i| 0.1 * (high[i] - low[i]).max(1e-6)).collect();
        Noise {
            mean,
            chol,
            low: (0..d).map(|i| low[i] - pad[i]).collect(),
            high: (0..d).map(|i| high[i] + pad[i]).collect(),
        }
    }
}

impl<D: Kernels> Fit for Fitter<D> {
    fn prepare(&mut self, data: &Tensors) {
        let names: Vec<String> = match &self.objective {
            Objective::Continuous(Continuous { kind: ContinuousKind::Nce { .. }, grads, .. }) => {
                grads.keys().cloned().collect()
            }
            _ => return,
        };
        let n = data.values().next().map_or(0, |t| t.shape[0]);
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|r| {
                names
                    .iter()
                    .flat_map(|name| {
                        let t = &data[name];
                        let per: usize = t.shape[1..].iter().product();
                        t.data[r * per..(r + 1) * per].iter().map(|x| f64::from(*x)).collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect();
        if let Objective::Continuous(c) = &mut self.objective {
            c.noise = Some(Noise::fit(&rows));
        }
    }

    fn begin_epoch(&mut self, seed: u64) {
        if let Objective::Continuous(c) = &mut self.objective {
            c.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x736d);
        }
        if let Objective::Jem(j) = &mut self.objective {
            j.replay.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x6a65_6d);
            j.chains.reseed(seed ^ 0x6a65_6d);
        }
        if let Objective::Pcd { chains, replay, .. } = &mut self.objective {
            chains.reseed(seed ^ 0x7063_6421);
            if let Some(replay) = replay {
                replay.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x7270_6c79);
            }
        }
        // Batch-sized chains start afresh each epoch, so a resumed run matches.
        self.scratch = None;
        self.seed = seed;
    }

    fn step(&mut self, batch: &Tensors, lr: f64, step: usize) -> Result<StepReport, TrainError> {
        let (loss, mut grads) = match self.objective {
            Objective::Pl { .. } => self.pseudo_likelihood(batch)?,
            Objective::Continuous(_) => self.continuous(batch)?,
            Objective::Jem(_) => self.jem(batch)?,
            _ if self.energy_alpha == 0.0 => self.contrastive_symbolic(batch)?,
            _ => self.contrastive(batch)?,
        };
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { what: "the loss".into(), step });
        }
        // Regularisers act on the gradient.
        for (name, g) in grads.iter_mut() {
            let p = self.params[name].clone();
            if self.l2 > 0.0 {
                *g = g.clone() + p.clone() * self.l2;
            }
            if self.l1 > 0.0 {
                let sign = p.clone().gt(0.0).choose(self.dev.ones_like(p.shape()), self.dev.zeros_like(p.shape()))
                    - p.lt(0.0).choose(self.dev.ones_like(p.shape()), self.dev.zeros_like(p.shape()));
                *g = g.clone() + sign * self.l1;
            }
        }
        let mut norm2 = 0.0f64;
        for (name, g) in &grads {
            let n = self.dev.sum_squares(g);
            if !n.is_finite() {
                return Err(TrainError::NonFinite { what: format!("the gradient of `{name}`"), step });
            }
            norm2 += n;
        }
        let grad_norm = norm2.sqrt();
        if let Some(c) = self.clip {
            if grad_norm > f64::from(c) {
                let scale = c / grad_norm as f32;
                for g in grads.values_mut() {
                    *g = g.clone() * scale;
                }
            }
        }
        let lr = lr as f32;
        if let Optimizer::Adam { t, .. } = &mut self.optimizer {
            *t += 1;
        }
        // The chains hold the parameters only while they sweep: released,
        // the update below owns each parameter and runs in place.
        let names: Vec<String> = self.params.keys().cloned().collect();
        for set in self.chain_sets() {
            set.release_params(names.iter());
        }
        for (name, g) in grads {
            let p = self.params.remove(&name).expect("a gradient for each parameter");
            let new = match self.optimizer {
                Optimizer::Sgd { momentum, nesterov, weight_decay } => {
                    let g = if weight_decay > 0.0 { g + p.clone() * weight_decay } else { g };
                    if momentum > 0.0 {
                        let key = format!("velocity.{name}");
                        let vel = match self.moments.remove(&key) {
                            Some(v) => v * momentum + g.clone(),
                            None => g.clone(),
                        };
                        let update = if nesterov { g + vel.clone() * momentum } else { vel.clone() };
                        self.moments.insert(key, vel);
                        p - update * lr
                    } else {
                        let mut p = p;
                        p.axpy(1.0, &g, -lr);
                        p
                    }
                }
                Optimizer::Adam { beta1, beta2, eps, weight_decay, t } => {
                    let g = if weight_decay > 0.0 { g + p.clone() * weight_decay } else { g };
                    let (mk, vk) = (format!("m.{name}"), format!("v.{name}"));
                    let m = match self.moments.remove(&mk) {
                        Some(m) => m * beta1 + g.clone() * (1.0 - beta1),
                        None => g.clone() * (1.0 - beta1),
                    };
                    let v = match self.moments.remove(&vk) {
                        Some(v) => v * beta2 + g.square() * (1.0 - beta2),
                        None => g.square() * (1.0 - beta2),
                    };
                    let m_hat = m.clone() / (1.0 - beta1.powi(t));
                    let v_hat = v.clone() / (1.0 - beta2.powi(t));
                    self.moments.insert(mk, m);
                    self.moments.insert(vk, v);
                    p - m_hat / (v_hat.sqrt() + eps) * lr
                }
            };
            self.params.insert(name, new);
        }
        Ok(StepReport { loss, grad_norm })
    }

    fn params(&self) -> Tensors {
        self.host_params()
    }

    fn state(&self) -> Tensors {
        let mut out: Tensors = self
            .moments
            .iter()
            .map(|(k, t)| {
                let name = k.split_once('.').map_or(k.as_str(), |(_, n)| n);
                (k.clone(), HostTensor::new(self.shapes[name].clone(), t.as_vec()))
            })
            .collect();
        if let Optimizer::Adam { t, .. } = self.optimizer {
            out.insert("adam.t".into(), HostTensor::new(vec![1], vec![t as f32]));
        }
        if let Some(chains) = self.chains() {
            out.extend(chains.into_iter().map(|(k, t)| (format!("chain.{k}"), t)));
        }
        match &self.objective {
            Objective::Pcd { replay: Some(replay), .. } => out.extend(replay.saved()),
            Objective::Jem(j) => out.extend(j.replay.saved()),
            _ => {}
        }
        out
    }

    fn chains(&self) -> Option<Tensors> {
        match &self.objective {
            Objective::Pcd { chains, .. } => Some(super::Chains::state(chains.as_ref())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
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
            let params = crate::tensor::initialise(&crate::ir::program_to_ir(&model).params, 1);
            let mut fit = Fitter::new(Cpu::seed_from_u64(0), &model, &plans[0], &train, &params, &Tensors::new(), 1)
                .expect("fitter");
            let rows = 6;
            let mut set = ChainSet::new(Cpu::seed_from_u64(2), &model, &plans[0], &params, rows, 2).expect("chains");
            super::super::Chains::sweep(&mut set);
            let batch: Tensors =
                fit.visible.iter().map(|v| (v.clone(), super::super::Chains::state(&set)[v].clone())).collect();
            let (positive, negative) = fit.phases(&batch).expect("phases");
            let (l1, g1) = fit.tape_gradients(&positive, &negative);
            let (l2, g2) = fit.symbolic_gradients(&positive, &negative);
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
