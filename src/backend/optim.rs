//! The optimisers: SGD (momentum, Nesterov) and Adam, with decoupled-in-the-
//! gradient weight decay. Their state (moments, step count) travels in
//! checkpoints beside the parameters.

use super::{Kernels, T3, upload};
use crate::analysis::program::Optimizer as Options;
use crate::tensor::{HostTensor, Tensors};
use std::collections::BTreeMap;

enum Rule {
    Sgd { momentum: f32, nesterov: bool, weight_decay: f32 },
    Adam { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
}

/// An optimiser and its per-parameter state.
pub(super) struct Optimizer<D: Kernels> {
    rule: Rule,
    /// Adam's step count, for the bias corrections.
    t: i32,
    /// Moments: `m.NAME`, `v.NAME` (Adam) or `velocity.NAME` (SGD).
    moments: BTreeMap<String, T3<D>>,
}

impl<D: Kernels> Optimizer<D> {
    /// `state` is a checkpoint's optimiser state (empty to start afresh).
    pub(super) fn new(dev: &D, options: &Options, state: &Tensors) -> Self {
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
        let t = state.get("adam.t").map_or(0, |t| t.data[0] as i32);
        let moments = state
            .iter()
            .filter(|(k, _)| k.starts_with("m.") || k.starts_with("v.") || k.starts_with("velocity."))
            .map(|(k, t)| (k.clone(), upload(dev, t, 1)))
            .collect();
        Optimizer { rule, t, moments }
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
            Rule::Adam { beta1, beta2, eps, weight_decay } => {
                let t = self.t;
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
        }
    }

    /// The state for a checkpoint; `shapes` gives each parameter's shape.
    pub(super) fn state(&self, shapes: &BTreeMap<String, Vec<usize>>) -> Tensors {
        let mut out: Tensors = self
            .moments
            .iter()
            .map(|(k, t)| {
                let name = k.split_once('.').map_or(k.as_str(), |(_, n)| n);
                (k.clone(), HostTensor::new(shapes[name].clone(), t.as_vec()))
            })
            .collect();
        if let Rule::Adam { .. } = self.rule {
            out.insert("adam.t".into(), HostTensor::new(vec![1], vec![self.t as f32]));
        }
        out
    }
}
