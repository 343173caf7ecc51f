//! The optimisers: SGD (momentum, Nesterov) and Adam, with weight decay
//! added to the gradient. Their state travels in checkpoints: the moments as
//! tensors named `optimizer.adam.m.<param>`, `optimizer.adam.v.<param>` and
//! `optimizer.sgd.velocity.<param>` (so none reads like a model variable),
//! Adam's step count as an integer in the state's metadata (`STEPS`).

use super::train::TrainError;
use super::{Kernels, T3, upload};
use crate::analysis::program::Optimizer as Options;
use crate::tensor::{HostTensor, Tensors};
use dfdx::shapes::HasShape;
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
    moments: BTreeMap<String, Moment<D>>,
    dev: D,
}

/// A moment where the last update left it: a device tensor, or a host
/// buffer where the update ran on the host (`update_host`).
enum Moment<D: Kernels> {
    Device(T3<D>),
    Host(Vec<f32>),
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
                Some((key, Moment::Device(upload(dev, t, 1))))
            })
            .collect();
        Ok(Optimizer { rule, t, moments, dev: dev.clone() })
    }

    /// Moment `key` as a tensor `(1, m, n)` shaped like `like`, if kept.
    fn take_tensor(&mut self, key: &str, like: &T3<D>) -> Option<T3<D>> {
        Some(match self.moments.remove(key)? {
            Moment::Device(t) => t,
            Moment::Host(data) => self.dev.tensor_from_vec(data, *like.shape()),
        })
    }

    /// Moment `key` as a host buffer, if kept.
    fn take_host(&mut self, key: &str) -> Option<Vec<f32>> {
        Some(match self.moments.remove(key)? {
            Moment::Device(t) => t.as_vec(),
            Moment::Host(data) => data,
        })
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
                    let vel = match self.take_tensor(&key, &p) {
                        Some(v) => v * momentum + g.clone(),
                        None => g.clone(),
                    };
                    let update = if nesterov { g + vel.clone() * momentum } else { vel.clone() };
                    self.moments.insert(key, Moment::Device(vel));
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
                let m = match self.take_tensor(&mk, &p) {
                    Some(m) => m * beta1 + g.clone() * (1.0 - beta1),
                    None => g.clone() * (1.0 - beta1),
                };
                let v = match self.take_tensor(&vk, &p) {
                    Some(v) => v * beta2 + g.square() * (1.0 - beta2),
                    None => g.square() * (1.0 - beta2),
                };
                let m_hat = m.clone() / (1.0 - beta1.powi(t));
                let v_hat = v.clone() / (1.0 - beta2.powi(t));
                self.moments.insert(mk, Moment::Device(m));
                self.moments.insert(vk, Moment::Device(v));
                p - m_hat / (v_hat.sqrt() + eps) * lr
            }
        }
    }

    /// `update`'s arithmetic, element by element in the same order, on a
    /// host parameter `p` in place along a host gradient `g`: what the
    /// update costs on host devices, one pass with no tensor made.
    pub(super) fn update_host(&mut self, name: &str, p: &mut [f32], g: &[f32], lr: f32) {
        match self.rule {
            Rule::Sgd { momentum, nesterov, weight_decay } => {
                let decayed = |g: f32, p: f32| if weight_decay > 0.0 { g + p * weight_decay } else { g };
                if momentum > 0.0 {
                    let key = format!("{VELOCITY}{name}");
                    let vel = self.take_host(&key);
                    let fresh = vel.is_none();
                    let mut vel = vel.unwrap_or_else(|| vec![0.0; p.len()]);
                    for ((p, &g), v) in p.iter_mut().zip(g).zip(vel.iter_mut()) {
                        let g = decayed(g, *p);
                        *v = if fresh { g } else { *v * momentum + g };
                        let update = if nesterov { g + *v * momentum } else { *v };
                        *p -= update * lr;
                    }
                    self.moments.insert(key, Moment::Host(vel));
                } else {
                    for (p, &g) in p.iter_mut().zip(g) {
                        *p += decayed(g, *p) * -lr;
                    }
                }
            }
            Rule::Adam { beta1, beta2, eps, weight_decay } => {
                let (mk, vk) = (format!("{ADAM_M}{name}"), format!("{ADAM_V}{name}"));
                let (m, v) = (self.take_host(&mk), self.take_host(&vk));
                let (m_fresh, v_fresh) = (m.is_none(), v.is_none());
                let mut m = m.unwrap_or_else(|| vec![0.0; p.len()]);
                let mut v = v.unwrap_or_else(|| vec![0.0; p.len()]);
                let (c1, c2) = (1.0 - beta1.powi(self.t), 1.0 - beta2.powi(self.t));
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = if weight_decay > 0.0 { g + *p * weight_decay } else { g };
                    *m = if m_fresh { g * (1.0 - beta1) } else { *m * beta1 + g * (1.0 - beta1) };
                    *v = if v_fresh { g * g * (1.0 - beta2) } else { *v * beta2 + g * g * (1.0 - beta2) };
                    *p -= *m / c1 / ((*v / c2).sqrt() + eps) * lr;
                }
                self.moments.insert(mk, Moment::Host(m));
                self.moments.insert(vk, Moment::Host(v));
            }
        }
    }

    /// The moments for a checkpoint; `shapes` gives each parameter's shape.
    pub(super) fn state(&self, shapes: &BTreeMap<String, Vec<usize>>) -> Tensors {
        self.moments
            .iter()
            .filter_map(|(k, t)| {
                let name = [ADAM_M, ADAM_V, VELOCITY].iter().find_map(|p| k.strip_prefix(p))?;
                let data = match t {
                    Moment::Device(t) => t.as_vec(),
                    Moment::Host(data) => data.clone(),
                };
                Some((k.clone(), HostTensor::new(shapes.get(name)?.clone(), data)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::tensor::{Cpu, TensorFromVec};

    const RULES: [Options; 5] = [
        Options::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0, nesterov: false },
        Options::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.05, nesterov: false },
        Options::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.05, nesterov: false },
        Options::Sgd { lr: 0.1, momentum: 0.8, weight_decay: 0.0, nesterov: true },
        Options::Adam { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.05 },
    ];

    /// Four steps of each rule, `host` choosing the form of each: the
    /// parameter and the moments the checkpoint would keep.
    fn run(rule: &Options, host: [bool; 4]) -> (Vec<f32>, Tensors) {
        let dev = Cpu::default();
        let shape = (1, 3, 5);
        let mut opt = Optimizer::<Cpu>::new(&dev, rule, &Tensors::new(), &BTreeMap::new()).expect("an optimiser");
        let mut p: Vec<f32> = (0..15).map(|i| (i as f32 * 0.37).sin()).collect();
        for (step, on_host) in host.into_iter().enumerate() {
            let g: Vec<f32> = (0..15).map(|i| ((i * 7 + step * 3) as f32 * 0.21).cos()).collect();
            opt.begin_step();
            if on_host {
                opt.update_host("w", &mut p, &g, 0.1);
            } else {
                let t = opt.update("w", dev.tensor_from_vec(p, shape), dev.tensor_from_vec(g, shape), 0.1);
                p = t.as_vec();
            }
        }
        (p, opt.state(&BTreeMap::from([("w".to_string(), vec![3, 5])])))
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + x.abs()))
    }

    /// The host form of every rule is the tensor form's arithmetic: the same
    /// parameters and moments within f32 round-off, and a run that switches
    /// form between steps (moments kept in one form, read in the other) too.
    #[test]
    fn the_host_update_is_the_tensor_update() {
        for rule in &RULES {
            let (p, state) = run(rule, [false; 4]);
            for host in [[true; 4], [true, false, true, false], [false, true, true, false]] {
                let (q, other) = run(rule, host);
                assert!(close(&p, &q), "{rule:?} {host:?}: {p:?} against {q:?}");
                assert_eq!(state.keys().collect::<Vec<_>>(), other.keys().collect::<Vec<_>>(), "{rule:?}");
                for (k, t) in &state {
                    assert!(close(&t.data, &other[k].data), "{rule:?} {host:?}: moment {k}");
                }
            }
        }
    }
}
