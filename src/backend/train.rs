//! Training steps on a device: the `Trainer` a run drives. A step asks the
//! objective (`super::objectives`) for its loss and parameter gradients,
//! applies the regularisers and gradient clipping, and hands the gradients to
//! the optimiser (`super::optim`). Each objective writes its loss as IR
//! phases with symbolic per-example parameter gradients, summed over the
//! batch without a tape (dfdx's tape is kept as their test oracle); samples
//! enter as data, which stops gradients through them.

use super::objectives::{self, Grad, Grads, OnDevice, Step};
use super::optim::Optimizer;
use super::{Kernels, T3};
use crate::analysis::plan::Plan;
use crate::analysis::program::{Model, Train};
use crate::front::ast::Role;
use crate::tensor::Tensors;
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// What one training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The surrogate loss (CD/PCD: mean free energy of data minus samples).
    pub loss: f64,
    /// Norm of the whole parameter gradient, before clipping.
    pub grad_norm: f64,
}

/// Why a training step failed.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// A loss, gradient or parameter became NaN or infinite.
    NonFinite {
        /// What became non-finite, e.g. "the gradient of `W`".
        what: String,
        /// The step it happened at.
        step: usize,
    },
    /// The trainer could not be set up or fed: a device, checkpoint or batch problem, in words.
    Setup(String),
}

/// A model being trained on a device: parameters, optimiser state, chains.
pub struct Trainer {
    inner: Box<dyn Fit + Send>,
    model: Model,
    /// The variables every batch must give (the visible ones).
    visible: Vec<String>,
}

trait Fit {
    /// Sees the whole training set once before the first epoch (NCE fits its noise to it).
    fn prepare(&mut self, data: &Tensors);
    fn outliers(&mut self, rows: &Tensors) -> Result<(), TrainError>;
    fn begin_epoch(&mut self, seed: u64);
    fn step(&mut self, batch: &Tensors, lr: f64, step: usize) -> Result<StepReport, TrainError>;
    fn loss(&mut self, batch: &Tensors) -> Result<f64, TrainError>;
    fn params(&self) -> Tensors;
    fn state(&self) -> Tensors;
    fn state_metadata(&self) -> BTreeMap<String, String>;
    fn chains(&self) -> Option<Tensors>;
    fn schedules(&self) -> Vec<String>;
}

#[cfg(feature = "cuda")]
impl<T: Fit> Fit for super::MovableCuda<T> {
    fn prepare(&mut self, data: &Tensors) {
        self.0.prepare(data);
    }
    fn outliers(&mut self, rows: &Tensors) -> Result<(), TrainError> {
        self.0.outliers(rows)
    }
    fn begin_epoch(&mut self, seed: u64) {
        self.0.begin_epoch(seed);
    }
    fn step(&mut self, batch: &Tensors, lr: f64, step: usize) -> Result<StepReport, TrainError> {
        self.0.step(batch, lr, step)
    }
    fn loss(&mut self, batch: &Tensors) -> Result<f64, TrainError> {
        self.0.loss(batch)
    }
    fn params(&self) -> Tensors {
        self.0.params()
    }
    fn state(&self) -> Tensors {
        self.0.state()
    }
    fn state_metadata(&self) -> BTreeMap<String, String> {
        self.0.state_metadata()
    }
    fn chains(&self) -> Option<Tensors> {
        self.0.chains()
    }
    fn schedules(&self) -> Vec<String> {
        self.0.schedules()
    }
}

/// What a checkpoint keeps of a trainer besides the parameters: tensors
/// (optimiser moments, persistent chains, replay buffers) and counters
/// (Adam's step count) as metadata, which whole numbers stay exact in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainState {
    /// Named tensors: optimiser moments, persistent chains, replay buffers.
    pub tensors: Tensors,
    /// Counters by name, as decimal text.
    pub metadata: BTreeMap<String, String>,
}

impl Trainer {
    /// `state` holds optimiser moments and persistent chains from a checkpoint
    /// (empty to start afresh); `Trainer::resume` also restores the counters.
    pub fn new(
        model: &Model,
        plan: &Plan,
        train: &Train,
        params: &Tensors,
        state: &Tensors,
        seed: u64,
        device: super::DeviceKind,
    ) -> Result<Trainer, TrainError> {
        Self::with_state(model, plan, train, params, state, &BTreeMap::new(), seed, device)
    }

    /// A trainer that continues from a checkpoint's `Trainer::checkpoint`.
    pub fn resume(
        model: &Model,
        plan: &Plan,
        train: &Train,
        params: &Tensors,
        state: &TrainState,
        seed: u64,
        device: super::DeviceKind,
    ) -> Result<Trainer, TrainError> {
        Self::with_state(model, plan, train, params, &state.tensors, &state.metadata, seed, device)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_state(
        model: &Model,
        plan: &Plan,
        train: &Train,
        params: &Tensors,
        state: &Tensors,
        metadata: &BTreeMap<String, String>,
        seed: u64,
        device: super::DeviceKind,
    ) -> Result<Trainer, TrainError> {
        let inner: Box<dyn Fit + Send> = match device {
            super::DeviceKind::Cpu => {
                Box::new(Fitter::new(Cpu::seed_from_u64(seed), model, plan, train, params, state, metadata, seed)?)
            }
            #[cfg(feature = "cuda")]
            super::DeviceKind::Cuda => {
                let dev = Cuda::try_seed_from_u64(seed)
                    .map_err(|e| TrainError::Setup(format!("cannot open the CUDA device: {e:?}")))?;
                Box::new(super::MovableCuda(Fitter::new(dev, model, plan, train, params, state, metadata, seed)?))
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

    /// Gives `classify`'s energy-bounded term the train block's outlier rows
    /// (the inputs; a label among them is ignored), before the first epoch.
    pub fn outliers(&mut self, rows: &Tensors) -> Result<(), TrainError> {
        let inputs: Vec<String> = rows.keys().filter(|k| self.visible.contains(k)).cloned().collect();
        crate::tensor::check_rows(&self.model, rows, &inputs)
            .map_err(|e| TrainError::Setup(format!("outlier rows: {e}")))?;
        self.inner.outliers(rows)
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

    /// The objective's loss on a batch of visible rows at the current
    /// parameters, without a step: its draws are taken (chains move, noise
    /// is drawn), the parameters stay. `eval` reads `elbo`'s this way.
    pub fn loss(&mut self, batch: &Tensors) -> Result<f64, TrainError> {
        crate::tensor::check_rows(&self.model, batch, &self.visible)
            .map_err(|e| TrainError::Setup(format!("evaluated rows: {e}")))?;
        self.inner.loss(batch)
    }

    /// The current parameters, by name.
    pub fn params(&self) -> Tensors {
        self.inner.params()
    }

    /// Optimiser moments and persistent chains, for checkpoints.
    pub fn state(&self) -> Tensors {
        self.inner.state()
    }

    /// Everything `Trainer::resume` needs besides the parameters.
    pub fn checkpoint(&self) -> TrainState {
        TrainState { tensors: self.inner.state(), metadata: self.inner.state_metadata() }
    }

    /// The persistent chains' current states, when the objective keeps chains.
    pub fn chains(&self) -> Option<Tensors> {
        self.inner.chains()
    }

    /// The listings of the compiled programs the last step ran, one per
    /// phase of the loss (empty before the first step, or off the CPU).
    pub fn schedules(&self) -> Vec<String> {
        self.inner.schedules()
    }
}

struct Fitter<D: Kernels> {
    model: OnDevice<D>,
    objective: Box<dyn Step<D>>,
    optimizer: Optimizer<D>,
    l1: f32,
    l2: f32,
    clip: Option<f32>,
    /// The train block's frozen parameters.
    frozen: Vec<String>,
}

// SAFETY: the boxed objective is the only part of a CPU `Fitter` whose
// `Send` the compiler cannot see (the box erases its type); every objective
// `objectives::build` returns is `Send` on the CPU, checked at compile time
// by `ALL_SEND_ON_CPU`.
unsafe impl Send for Fitter<Cpu> {}
const _: () = super::objectives::ALL_SEND_ON_CPU;

/// The model's energies, parameters and constants on the device, before an
/// objective adds its roots.
pub(super) fn on_device<D: Kernels>(
    dev: D,
    model: &Model,
    plan: &Plan,
    train: &Train,
    params: &Tensors,
    seed: u64,
) -> Result<(OnDevice<D>, Vec<String>), TrainError> {
    let mut lowered = plan.lowered.clone();
    let total = lowered.ir.inline_nets(lowered.total);
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let mut free_energy = total;
    for name in &summed {
        let v = model.variable(name).ok_or_else(|| TrainError::Setup(format!("no variable `{name}` to sum out")))?;
        free_energy = crate::analysis::plan::sum_out(&mut lowered.ir, free_energy, v).0;
    }
    let free_energy = lowered.ir.inline_nets(free_energy);
    let leaves = super::device_leaves(&dev, model, &lowered, params)?;
    let shapes: BTreeMap<String, Vec<usize>> =
        lowered.params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    let (params, consts): (BTreeMap<String, T3<D>>, BTreeMap<String, T3<D>>) =
        leaves.tensors.into_iter().partition(|(k, _)| shapes.contains_key(k));
    let visible: Vec<String> =
        model.variables.iter().filter(|v| v.role == Role::Visible).map(|v| v.name.clone()).collect();
    let kept: Vec<String> = model
        .variables
        .iter()
        .filter(|v| v.role == Role::Hidden && !summed.contains(&v.name))
        .map(|v| v.name.clone())
        .collect();
    let declared: Vec<String> =
        lowered.params.iter().map(|p| p.name.clone()).filter(|p| !train.frozen.contains(p)).collect();
    let on = OnDevice {
        dev,
        ir: lowered.ir,
        free_energy,
        total,
        params,
        shapes,
        declared: declared.clone(),
        used: Vec::new(),
        consts,
        lattices: leaves.lattices,
        energy_alpha: energy_alpha(&train.options) as f32,
        visible,
        kept,
        scratch: None,
        host: Default::default(),
        model: model.clone(),
        plan: plan.clone(),
        seed,
    };
    Ok((on, declared))
}

/// The energy penalty's weight: `pcd`'s or `jem`'s `alpha`, or
/// `energy_penalty(alpha)` (the checker refuses both at once).
fn energy_alpha(options: &crate::analysis::program::TrainOptions) -> f64 {
    use crate::analysis::program::Objective;
    match &options.objective {
        Objective::Pcd(p) | Objective::Jem(p) if p.alpha > 0.0 => p.alpha,
        _ => options.regularizers.energy_penalty.unwrap_or(0.0),
    }
}

impl<D: Kernels> Fitter<D> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        dev: D,
        model: &Model,
        plan: &Plan,
        train: &Train,
        params: &Tensors,
        state: &Tensors,
        metadata: &BTreeMap<String, String>,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let (mut on, declared) = on_device(dev, model, plan, train, params, seed)?;
        let objective = objectives::build(&mut on, &train.options, train.batch.max(1), params, state, seed)?;
        on.used = on.params_in(&objective.roots(&on), &declared);
        let optimizer = Optimizer::new(&on.dev, &train.options.optimizer, state, metadata)?;
        let regs = &train.options.regularizers;
        Ok(Fitter {
            model: on,
            objective,
            optimizer,
            l1: regs.l1.unwrap_or(0.0) as f32,
            l2: regs.l2.unwrap_or(0.0) as f32,
            clip: regs.clip_grad.map(|c| c as f32),
            frozen: train.frozen.clone(),
        })
    }

    /// A step whose host gradients are updated on the host where `on_host`
    /// (`Fit::step`: on host devices), else in device ops as any other.
    fn step_with(&mut self, batch: &Tensors, lr: f64, step: usize, on_host: bool) -> Result<StepReport, TrainError> {
        let (loss, mut grads) = self.objective.step(&mut self.model, batch)?;
        // Frozen parameters are no phase's output; a gradient an objective
        // computes by other means (a tape) is dropped here, so none moves.
        grads.retain(|name, _| !self.frozen.contains(name));
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { what: "the loss".into(), step });
        }
        if let Some(name) = grads.keys().find(|name| !self.model.params.contains_key(*name)) {
            return Err(TrainError::Setup(format!("a gradient for `{name}`, which is no parameter")));
        }
        let lr = lr as f32;
        let grad_norm = if on_host && grads.values().all(|g| matches!(g, Grad::Host { .. })) {
            let host = grads
                .into_iter()
                .filter_map(|(name, g)| match g {
                    Grad::Host { data, .. } => Some((name, data)),
                    Grad::Device(_) => None,
                })
                .collect();
            self.update_host(host, lr, step)?
        } else {
            self.update_device(grads, lr, step)?
        };
        Ok(StepReport { loss, grad_norm })
    }

    /// Regularisers, the norm, clipping and the optimiser's rule in device
    /// ops, for gradients that are not all host buffers; returns the norm.
    fn update_device(&mut self, grads: Grads<D>, lr: f32, step: usize) -> Result<f64, TrainError> {
        let dev = &self.model.dev;
        let mut grads: BTreeMap<String, T3<D>> =
            grads.into_iter().map(|(name, g)| (name, g.into_tensor(dev))).collect();
        // Regularisers act on the gradient of the model's declared parameters
        // only: an objective's own (NCE's `nce.log_z`) is no part of the model.
        for (name, g) in grads.iter_mut().filter(|(name, _)| self.model.declared.contains(name)) {
            let p = self.model.params[name].clone();
            if self.l2 > 0.0 {
                *g = g.clone() + p.clone() * self.l2;
            }
            if self.l1 > 0.0 {
                let sign = p.clone().gt(0.0).choose(dev.ones_like(p.shape()), dev.zeros_like(p.shape()))
                    - p.lt(0.0).choose(dev.ones_like(p.shape()), dev.zeros_like(p.shape()));
                *g = g.clone() + sign * self.l1;
            }
        }
        let norm2 = finite_norm2(grads.iter().map(|(name, g)| (name, dev.sum_squares(g))), step)?;
        if let Some(scale) = self.clip_scale(norm2) {
            for g in grads.values_mut() {
                *g = g.clone() * scale;
            }
        }
        self.optimizer.begin_step();
        self.release_params();
        for (name, g) in grads {
            // Cannot fail: `step` checked that every gradient names a parameter.
            let p = self.model.params.remove(&name).expect("a parameter");
            let new = self.optimizer.update(&name, p, g, lr);
            self.model.params.insert(name, new);
        }
        super::step::Mirror::stale(&self.model.host);
        Ok(norm2.sqrt())
    }

    /// `update_device`'s arithmetic on host devices, in passes over the
    /// gradients' own buffers and the parameters' host copies (the ones the
    /// step's programs read), each parameter then written into its tensor
    /// once: the copies stay current, so the next step copies nothing out.
    /// The buffers go back to the mirror for the next step's sums.
    fn update_host(&mut self, mut grads: Vec<(String, Vec<f32>)>, lr: f32, step: usize) -> Result<f64, TrainError> {
        let host = self.model.host.clone();
        let mut mirror = super::step::Mirror::read(&host, &self.model.params);
        for (name, g) in grads.iter_mut().filter(|(name, _)| self.model.declared.contains(name)) {
            // Cannot fail: the mirror holds every parameter (`Mirror::read` above).
            let p = &mirror.shared()[name.as_str()];
            if self.l2 > 0.0 {
                g.iter_mut().zip(p).for_each(|(g, p)| *g += p * self.l2);
            }
            if self.l1 > 0.0 {
                let sign = |p: f32| f32::from(u8::from(p > 0.0)) - f32::from(u8::from(p < 0.0));
                g.iter_mut().zip(p).for_each(|(g, p)| *g += sign(*p) * self.l1);
            }
        }
        let norm2 = finite_norm2(grads.iter().map(|(name, g)| (name, super::host::sum_squares(g))), step)?;
        if let Some(scale) = self.clip_scale(norm2) {
            grads.iter_mut().for_each(|(_, g)| g.iter_mut().for_each(|g| *g *= scale));
        }
        self.optimizer.begin_step();
        self.release_params();
        for (name, g) in grads {
            // Cannot fail: `step` checked the parameter, and the mirror, just read, is current.
            let p = mirror.param_mut(&name).expect("a current host copy");
            self.optimizer.update_host(&name, p, &g, lr);
            self.model.params.get_mut(&name).expect("a parameter").copy_from(p);
            mirror.give_back(name, g);
        }
        Ok(norm2.sqrt())
    }

    /// The factor clipping scales the gradients by, if it acts.
    fn clip_scale(&self, norm2: f64) -> Option<f32> {
        let norm = norm2.sqrt();
        self.clip.filter(|&c| norm > f64::from(c)).map(|c| c / norm as f32)
    }

    /// The chains hold the parameters only while they sweep: released, the
    /// update owns each parameter and runs in place.
    fn release_params(&mut self) {
        let names: Vec<String> = self.model.params.keys().cloned().collect();
        for set in self.objective.chain_sets().into_iter().chain(self.model.scratch.as_deref_mut()) {
            set.release_params(names.iter());
        }
    }
}

/// The squared norm of gradients given as `(name, sum of squares)`, or
/// the error naming the first that is not finite.
fn finite_norm2<'a>(sums: impl Iterator<Item = (&'a String, f64)>, step: usize) -> Result<f64, TrainError> {
    let mut norm2 = 0.0;
    for (name, n) in sums {
        if !n.is_finite() {
            return Err(TrainError::NonFinite { what: format!("the gradient of `{name}`"), step });
        }
        norm2 += n;
    }
    Ok(norm2)
}

impl<D: Kernels> Fit for Fitter<D> {
    fn schedules(&self) -> Vec<String> {
        self.objective.phases().iter().filter_map(|p| p.listing()).collect()
    }

    fn prepare(&mut self, data: &Tensors) {
        self.objective.prepare(data);
    }

    fn outliers(&mut self, rows: &Tensors) -> Result<(), TrainError> {
        self.objective.outliers(&self.model, rows)
    }

    fn begin_epoch(&mut self, seed: u64) {
        self.objective.begin_epoch(seed);
        // Batch-sized chains start afresh each epoch, so a resumed run matches.
        self.model.scratch = None;
        self.model.seed = seed;
    }

    fn step(&mut self, batch: &Tensors, lr: f64, step: usize) -> Result<StepReport, TrainError> {
        self.step_with(batch, lr, step, D::HOST)
    }

    fn loss(&mut self, batch: &Tensors) -> Result<f64, TrainError> {
        Ok(self.objective.step(&mut self.model, batch)?.0)
    }

    fn params(&self) -> Tensors {
        self.model.host_params()
    }

    fn state(&self) -> Tensors {
        let mut out = self.optimizer.state(&self.model.shapes);
        out.extend(self.objective.state());
        out
    }

    fn state_metadata(&self) -> BTreeMap<String, String> {
        self.optimizer.metadata()
    }

    fn chains(&self) -> Option<Tensors> {
        self.objective.chains()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::HostTensor;

    /// A fitter for `train m` of `src` on the CPU.
    fn fitter(src: &str) -> Fitter<Cpu> {
        let compiled = crate::compile(src).expect("compiles");
        let (plans, _) = crate::plan(&compiled.program).expect("plans");
        let (model, train) = (&compiled.program.models["m"], &compiled.program.trains["m"]);
        let plan = plans.iter().find(|p| p.model == "m").expect("a plan");
        let params = crate::tensor::initialise(&crate::ir::program_to_ir(model).params, 1);
        Fitter::new(Cpu::default(), model, plan, train, &params, &Tensors::new(), &BTreeMap::new(), 5)
            .expect("a fitter")
    }

    /// On host devices a step updates the parameters where the compiled step
    /// left their gradients (`update_host`), and the next step reads the
    /// host copies it updated. Both move as the device ops do, with every
    /// regulariser, clipping and rule, step after step.
    #[test]
    fn the_host_update_is_the_device_update() {
        let rows: Vec<f32> = (0..20).map(|i| f32::from(u8::from(i % 3 == 0))).collect();
        let batch: Tensors = [("v".to_string(), HostTensor::new(vec![4, 5], rows))].into();
        for optimizer in
            ["sgd(lr: 0.2)", "sgd(lr: 0.2, momentum: 0.9, nesterov: true, weight_decay: 0.01)", "adam(lr: 0.05)"]
        {
            let src = format!(
                "model m {{ visible v : binary[5]; hidden h : binary[3]; param W : real[5, 3] = normal(0, 1);
                param b : real[5] = normal(0, 1); param c : real[3] = normal(0, 1); energy e = -(v @ W @ h) - b @ v - c @ h; }}
                train m {{ data = bars_and_stripes(size: 2) -> v; objective = pcd(k: 1, chains: 4); optimizer = {optimizer};
                batch = 4; regularize = [l1(0.01), l2(0.02), clip_grad(0.5)]; }}"
            );
            let (mut host, mut device) = (fitter(&src), fitter(&src));
            for step in 1..=5 {
                let a = host.step_with(&batch, 0.2, step, true).expect("a host step");
                let b = device.step_with(&batch, 0.2, step, false).expect("a device step");
                // The host update ran: it handed the gradient's buffer back for the next step.
                let mut mirror = super::super::step::Mirror::read(&host.model.host, &host.model.params);
                let spare = mirror.take_back("W").expect("the host update's buffer");
                mirror.give_back("W".into(), spare);
                drop(mirror);
                assert!(b.grad_norm > 0.5, "{optimizer}: clipping acts (norm {})", b.grad_norm);
                assert!((a.grad_norm - b.grad_norm).abs() <= 1e-5 * b.grad_norm, "{optimizer} step {step}: the norm");
                assert!((a.loss - b.loss).abs() <= 1e-5 * (1.0 + b.loss.abs()), "{optimizer} step {step}: the loss");
                for (name, p) in host.params() {
                    let q = &device.params()[&name];
                    let close = p.data.iter().zip(&q.data).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
                    assert!(close, "{optimizer} step {step}: `{name}` {:?} against {:?}", p.data, q.data);
                }
            }
        }
    }
}
