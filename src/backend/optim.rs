//! The optimisers: SGD (momentum, Nesterov) and Adam, with weight decay
//! added to the gradient. Their state travels in checkpoints: the moments as
//! tensors named `optimizer.adam.m.<param>`, `optimizer.adam.v.<param>` and
//! `optimizer.sgd.velocity.<param>` (so none reads like a model variable),
//! Adam's step count as an integer in the state's metadata (`STEPS`).

use super::train::TrainError;
use super::{Kernels, T3, upload};
use crate::analysis::program::Optimizer as Options;
use crate::tensor::{HostTensor, Tensors};
use std::collections::BTreeMap;

/// The metadata key of Adam's step count.
pub(super) const STEPS: &str = "optimizer.adam.steps";

const ADAM_M: &str = "optimizer.adam.m.";
const ADAM_V: &str = "optimizer.adam.v.";
const VELOCITY: &str = "optimizer.sgd.velocity.";

enum Rule {
    Sgd { momentum: f32, nesterov: bool, weight_decay: f32 },
    Adam { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
}

/// An optimiser and its per-parameter state.
pub(super) struct Optimizer<D: Kernels> {
    rule: Rule,
    /// Adam's step count, for the bias corrections.
    t: i32,
    /// Moments by checkpoint name (`ADAM_M`, `ADAM_V` or `VELOCITY` and the parameter).
    moments: BTreeMap<String, T3<D>>,
}

impl<D: Kernels> Optimizer<D> {
    /// `state` and `metadata` are a checkpoint's optimiser state (empty to start afresh).
    pub(super) fn new(
        dev: &D,
        options: &Options,
        state: &Tensors,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, TrainError> {
        let rule = match *options {
            Options::Adam { beta1, beta2, eps, weight_decay, .. } => Rule::Adam {
                beta1: beta1 as f32,
                beta2: beta2 as f32,
                eps: eps as f32,
                weight_decay: weight_decay as f32,
            },
            Options::Sgd { momentum, weight_decay, nesterov, .. } => {
                Rule::Sgd { momentum: momentum as f32, nesterov, weight_decay: weight_decay as f32 }
            }
        };
        // Checkpoints written before the names above held `m.W`, `v.W`,
        // `velocity.W` and the count as an f32 tensor `adam.t`.
        let legacy = |k: &str| -> Option<String> {
            [("m.", ADAM_M), ("v.", ADAM_V), ("velocity.", VELOCITY)]
                .iter()
                .find_map(|(old, new)| k.strip_prefix(old).map(|name| format!("{new}{name}")))
        };
        let t = match metadata.get(STEPS) {
            None => state.get("adam.t").and_then(|t| t.data.first()).map_or(0, |t| *t as i32),
            Some(n) => n.parse::<i32>().map_err(|_| {
                TrainError::Setup(format!("the checkpoint's `{STEPS}` is `{n}`, not a whole number of steps"))
            })?,
        };
        let moments = state
            .iter()
            .filter_map(|(k, t)| {
                let key =
                    if [ADAM_M, ADAM_V, VELOCITY].iter().any(|p| k.starts_with(p)) { k.clone() } else { legacy(k)? };
                Some((key, upload(dev, t, 1)))
            })
            .collect();
        Ok(Optimizer { rule, t, moments })
    }

    /// Counts one step, before the parameters' updates.
    pub(super) fn begin_step(&mut self) {
        if let Rule::Adam { .. } = self.rule {
            self.t += 1;
        }
    }

    /// The parameter `p` called `name` after one update along gradient `g`.
    pub(super) fn update(&mut self, name: &str, p: T3<D>, g: T3<D>, lr: f32) -> T3<D> {
        match self.rule {
            Rule::Sgd { momentum, nesterov, weight_decay } => {
                let g = if weight_decay > 0.0 { g + p.clone() * weight_decay } else { g };
                if momentum > 0.0 {
                    let key = format!("{VELOCITY}{name}");
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
            Rule::Adam { beta1, beta2, eps, weight_decay } => {
                let t = self.t;
                let g = if weight_decay > 0.0 { g + p.clone() * weight_decay } else { g };
                let (mk, vk) = (format!("{ADAM_M}{name}"), format!("{ADAM_V}{name}"));
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
        }
    }

    /// The moments for a checkpoint; `shapes` gives each parameter's shape.
    pub(super) fn state(&self, shapes: &BTreeMap<String, Vec<usize>>) -> Tensors {
        self.moments
            .iter()
            .filter_map(|(k, t)| {
                let name = [ADAM_M, ADAM_V, VELOCITY].iter().find_map(|p| k.strip_prefix(p))?;
                Some((k.clone(), HostTensor::new(shapes.get(name)?.clone(), t.as_vec())))
            })
            .collect()
    }

    /// The step count for a checkpoint's metadata (Adam's; SGD keeps none).
    pub(super) fn metadata(&self) -> BTreeMap<String, String> {
        match self.rule {
            Rule::Adam { .. } => [(STEPS.to_string(), self.t.to_string())].into(),
            Rule::Sgd { .. } => BTreeMap::new(),
        }
    }
}
