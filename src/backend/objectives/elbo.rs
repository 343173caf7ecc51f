//! The evidence lower bound (Kingma & Welling 2014, "Auto-Encoding
//! Variational Bayes"): a variational autoencoder's objective. The model's
//! energy `E(x, z)` is read as `−log p(x, z)` up to a constant (a prior
//! term and a decoder term); the encoder net `q` maps the visible `x` to
//! `2·d` outputs, the first `d` the posterior mean `μ`, the last `d` its log
//! standard deviation `log σ`, `d` the latent's units in row-major order.
//! The loss per row is the negative ELBO
//!
//! `E_q[E(x, z)] − H(q)`, `z = μ + σ⊙ε`, `ε ~ N(0, I)`,
//! `H(q) = Σ log σ + (d/2)(1 + log 2π)`,
//!
//! estimated with `samples` draws of `ε` per row (in `__eps.z`). `z` is
//! substituted into the energy, so one IR root is the loss of a draw and
//! its symbolic parameter gradients are the reparameterised ones: the
//! energy's parameters get `∂θ E(x, z)`, the encoder's `∇_z E` through `μ`
//! and `(∇_z E)⊙σ⊙ε − 1` through `log σ`, backpropagated through its layers.
//! The halves of the encoder's output are products with two constant
//! selection matrices (`__elbo.mean`, `__elbo.log_sd`), the IR having no
//! slice.

use super::super::noise::normals;
use super::super::{Kernels, upload};
use super::{Grads, Objective, OnDevice, Phase, TrainError, Vars};
use crate::front::ast::Role;
use crate::ir::{Id, Unary};
use crate::tensor::{HostTensor, Tensors};
#[cfg(test)]
use dfdx::prelude::*;

/// The selection matrices' constant names.
const MEAN: &str = "__elbo.mean";
const LOG_SD: &str = "__elbo.log_sd";

pub(super) struct Elbo {
    /// The latent, whose draws are `__eps.<latent>`.
    latent: String,
    latent_shape: Vec<usize>,
    samples: usize,
    /// Per draw: `E(x, μ + σ⊙ε) − Σ log σ − (d/2)(1 + log 2π)`.
    phase: Phase,
    roots: Vec<Id>,
    rng: rand::rngs::SmallRng,
}

/// What a step draws: `samples` standard normal draws of the latent per row,
/// row `r`'s draw `s` at `r·samples + s`.
pub(super) struct Draw {
    pub(super) eps: HostTensor,
}

/// The seed's salt, so the draws differ from other objectives' ("elbo").
const SALT: u64 = 0x656c_626f;

impl Elbo {
    pub(super) fn new<D: Kernels>(
        model: &mut OnDevice<D>,
        encoder: &str,
        samples: usize,
        seed: u64,
    ) -> Result<Self, TrainError> {
        // The planner refuses anything else (`PlanError::ElboVariables`, `EncoderShape`).
        let visible: Vec<_> = model.model.variables.iter().filter(|v| v.role == Role::Visible).collect();
        let hidden: Vec<_> = model.model.variables.iter().filter(|v| v.role == Role::Hidden).collect();
        let ([x], [z]) = (visible.as_slice(), hidden.as_slice()) else {
            return Err(TrainError::Setup("`elbo` needs one visible and one hidden variable".into()));
        };
        let (x, x_shape, latent, latent_shape) = (x.name.clone(), x.shape.clone(), z.name.clone(), z.shape.clone());
        if !model.model.nets.iter().any(|n| n.name == encoder) {
            return Err(TrainError::Setup(format!("no net `{encoder}` in the model")));
        }
        let d: usize = latent_shape.iter().product();
        // `[2d, d]`: the identity over the first half of the rows, then over the second.
        for (name, offset) in [(MEAN, 0), (LOG_SD, d)] {
            let mut m = vec![0.0; 2 * d * d];
            for i in 0..d {
                m[(offset + i) * d + i] = 1.0;
            }
            let t = upload(&model.dev, &HostTensor::new(vec![2 * d, d], m), 1);
            model.consts.insert(name.to_string(), t);
        }
        let ir = &mut model.ir;
        let xv = ir.var(&x, &x_shape);
        let q = ir.net(encoder, xv);
        let q = ir.inline_nets(q);
        let half = |ir: &mut crate::ir::Ir, name: &str| {
            let select = ir.constant(name, &[2 * d, d]);
            let h = ir.matmul(q, select);
            ir.reshape(h, &latent_shape)
        };
        let mu = half(ir, MEAN);
        let log_sd = half(ir, LOG_SD);
        let eps = ir.var(&format!("__eps.{latent}"), &latent_shape);
        let sd = ir.map(Unary::Exp, log_sd);
        let noise = ir.mul(sd, eps);
        let zq = ir.add(mu, noise);
        let energy = ir.substitute(model.total, &latent, zq);
        let log_det = ir.sum(log_sd);
        let constant = ir.num(0.5 * d as f64 * (1.0 + (2.0 * std::f64::consts::PI).ln()));
        let entropy = ir.add(log_det, constant);
        let loss = ir.sub(energy, entropy);
        let phase = Phase::new(ir, loss, &model.declared);
        Ok(Elbo {
            latent,
            latent_shape,
            samples,
            roots: vec![phase.loss],
            phase,
            rng: rand::SeedableRng::seed_from_u64(seed ^ SALT),
        })
    }

    /// The batch, each row repeated `samples` times, with the draws, on the device.
    fn vars<D: Kernels>(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Vars<D> {
        let rows = draw.eps.shape[0];
        let mut vars: Vars<D> =
            batch.iter().map(|(k, t)| (k.clone(), upload(&model.dev, &repeat_rows(t, self.samples), rows))).collect();
        vars.insert(format!("__eps.{}", self.latent), upload(&model.dev, &draw.eps, rows));
        vars
    }
}

/// Each row of `t` repeated `times` times in place: rows `r·times .. (r+1)·times` are row `r`.
fn repeat_rows(t: &HostTensor, times: usize) -> HostTensor {
    if times == 1 {
        return t.clone();
    }
    let per: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] *= times;
    let data = t.data.chunks(per.max(1)).flat_map(|row| std::iter::repeat_n(row, times).flatten().copied()).collect();
    HostTensor::new(shape, data)
}

impl<D: Kernels> Objective<D> for Elbo {
    type Draw = Draw;

    fn begin_epoch(&mut self, seed: u64) {
        self.rng = rand::SeedableRng::seed_from_u64(seed ^ SALT);
    }

    fn draw(&mut self, _model: &mut OnDevice<D>, batch: &Tensors) -> Result<Draw, TrainError> {
        let rows = super::rows_of_host(batch) * self.samples;
        let d: usize = self.latent_shape.iter().product();
        let shape = std::iter::once(rows).chain(self.latent_shape.iter().copied()).collect();
        Ok(Draw { eps: HostTensor::new(shape, normals(&mut self.rng, rows * d)) })
    }

    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Result<(f64, Grads<D>), TrainError> {
        let vars = self.vars(model, batch, draw);
        // The mean over rows and draws: each row's ELBO estimate averages its draws.
        let w = 1.0 / draw.eps.shape[0] as f32;
        Ok(super::phase_sums(model, &[(&self.phase, &vars, w)]))
    }

    /// Backpropagates through the loss root.
    #[cfg(test)]
    fn tape_loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Result<(f64, Grads<D>), TrainError> {
        let rows = draw.eps.shape[0];
        let loss = super::one(super::taped_means(model, self.vars(model, batch, draw), &[self.phase.loss], rows));
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        let trained = model.params_in(&[self.phase.loss], &model.used);
        Ok((value, super::tape_grads(model, &g, &trained)))
    }

    fn roots(&self, _model: &OnDevice<D>) -> Vec<Id> {
        self.roots.clone()
    }

    fn phases(&self) -> Vec<&Phase> {
        vec![&self.phase]
    }
}

#[cfg(test)]
mod tests {
    //! The loss and its gradient in every parameter, the encoder's and the
    //! decoder's, against an f64 reference written independently of the IR
    //! loss: the encoder and the energy evaluated by the reference
    //! interpreter, the halves split, `z` formed and the entropy added here,
    //! with the draws `ε` held fixed; central differences of it in every
    //! parameter.

    use super::super::super::train::on_device;
    use super::super::{Grads, Objective, OnDevice};
    use super::{Draw, Elbo};
    use crate::ir::{Id, Ir, RefValue};
    use crate::tensor::{HostTensor, Tensors};
    use dfdx::prelude::*;
    use std::collections::BTreeMap;

    const SRC: &str = "model m { visible x : real[2]; hidden z : real[3];
        net q = mlp(2 -> 4 -> 6, act: tanh); net g = mlp(3 -> 4 -> 2, act: swish);
        energy prior = 0.5 * sum(square(z)); energy recon = 2.0 * sum(square(x - g(z))); }
        train m { data = toy(\"moons\", n: 40) -> x; objective = elbo(encoder: q, samples: 2); }";

    struct Setup {
        on: OnDevice<Cpu>,
        elbo: Elbo,
        batch: Tensors,
        /// The encoder's output and the energy, in an IR of their own for the reference interpreter.
        ir: Ir,
        encoder: Id,
        energy: Id,
    }

    fn setup() -> Setup {
        let c = crate::compile(SRC).unwrap_or_else(|d| panic!("{d:?}"));
        let (plans, _) = crate::plan(&c.program).unwrap_or_else(|d| panic!("{d:?}"));
        let train = c.program.trains["m"].clone();
        let model = c.program.models["m"].clone();
        let params = crate::tensor::initialise(&crate::ir::param_specs(&model), 3);
        let (mut on, declared) =
            on_device(Cpu::seed_from_u64(0), &model, &plans[0], &train, &params, 1).expect("on device");
        let elbo = Elbo::new(&mut on, "q", 2, 5).expect("elbo");
        on.used = on.params_in(&Objective::<Cpu>::roots(&elbo, &on), &declared);
        let data = crate::runtime::data::load(train.data.as_ref().expect("data"), &model, std::path::Path::new("."))
            .expect("toy data");
        let x = &data.vars["x"];
        let batch = [("x".to_string(), HostTensor::new(vec![5, 2], x.data[..10].to_vec()))].into_iter().collect();
        let mut ir = plans[0].lowered.ir.clone();
        let xv = ir.var("x", &[2]);
        let encoder = ir.net("q", xv);
        let energy = plans[0].lowered.total;
        Setup { on, elbo, batch, ir, encoder, energy }
    }

    /// The mean over rows and draws of `E(x, μ + σ⊙ε) − Σ log σ − (3/2)(1 + log 2π)` at `theta`, in f64.
    fn reference(s: &Setup, theta: &BTreeMap<String, RefValue>, draw: &Draw) -> f64 {
        let x = &s.batch["x"];
        let (rows, draws) = (x.shape[0], draw.eps.shape[0] / x.shape[0]);
        let mut total = 0.0;
        for r in 0..rows {
            let mut at = theta.clone();
            let row = x.data[r * 2..r * 2 + 2].iter().map(|&v| f64::from(v)).collect();
            at.insert("x".into(), RefValue { shape: vec![2], data: row });
            let q = s.ir.eval_reference(s.encoder, &at).data;
            let (mu, log_sd) = q.split_at(3);
            for k in 0..draws {
                let eps = &draw.eps.data[(r * draws + k) * 3..(r * draws + k + 1) * 3];
                let z = (0..3).map(|i| mu[i] + log_sd[i].exp() * f64::from(eps[i])).collect();
                at.insert("z".into(), RefValue { shape: vec![3], data: z });
                let entropy = log_sd.iter().sum::<f64>() + 1.5 * (1.0 + (2.0 * std::f64::consts::PI).ln());
                total += s.ir.eval_reference(s.energy, &at).data[0] - entropy;
            }
        }
        total / draw.eps.shape[0] as f64
    }

    fn leaves(on: &OnDevice<Cpu>) -> BTreeMap<String, RefValue> {
        on.host_params()
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    RefValue { shape: on.shapes[k].clone(), data: t.data.iter().map(|&v| f64::from(v)).collect() },
                )
            })
            .collect()
    }

    #[test]
    fn the_loss_and_its_gradients_match_central_differences() {
        let mut s = setup();
        let batch = s.batch.clone();
        let draw = s.elbo.draw(&mut s.on, &batch).expect("a draw");
        assert_eq!(draw.eps.shape, vec![10, 3]);
        let (loss, grads): (f64, Grads<Cpu>) = s.elbo.loss(&s.on, &batch, &draw).expect("loss");
        let theta = leaves(&s.on);
        let at = reference(&s, &theta, &draw);
        // f32 against f64 on a loss of some units: round-off well under 1e-4 relative.
        assert!((loss - at).abs() <= 1e-4 * at.abs().max(1.0), "loss {loss} vs reference {at}");
        let scale = grads.values().flat_map(|g| g.as_vec()).fold(0.0f32, |m, x| m.max(x.abs())) as f64;
        let h = 1e-3;
        let mut checked = BTreeMap::new();
        for (name, g) in &grads {
            for (i, sym) in g.as_vec().into_iter().enumerate() {
                let diff = |delta: f64| {
                    let (mut plus, mut minus) = (theta.clone(), theta.clone());
                    plus.get_mut(name).expect("a parameter").data[i] += delta;
                    minus.get_mut(name).expect("a parameter").data[i] -= delta;
                    (reference(&s, &plus, &draw) - reference(&s, &minus, &draw)) / (2.0 * delta)
                };
                let (d1, d2) = (diff(h), diff(2.0 * h));
                // The truncation error's estimate |D_2h − D_h| (Richardson: D_h's
                // own is a third of it), plus f32 round-off of the compiled
                // gradient, some hundreds of operations of relative error 6e-8.
                let tol = (d2 - d1).abs() + 1e-4 * scale;
                assert!(
                    (f64::from(sym) - d1).abs() <= tol,
                    "d/d{name}[{i}]: symbolic {sym} vs central difference {d1} (at 2h {d2}), tolerance {tol}"
                );
                *checked.entry(name.split('.').next().unwrap_or_default().to_string()).or_insert(0) += 1;
            }
        }
        // Every weight and bias of both nets: q has 2·4 + 4 + 4·6 + 6, g 3·4 + 4 + 4·2 + 2.
        assert_eq!(checked, [("g".to_string(), 26), ("q".to_string(), 42)].into_iter().collect());
    }

    /// Each row is repeated in place, so row `r`'s draws are at
    /// `r·samples + k`, as `Draw` lays them out.
    #[test]
    fn draws_are_grouped_by_row() {
        let t = HostTensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(super::repeat_rows(&t, 2).data, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0]);
        assert_eq!(super::repeat_rows(&t, 1).data, t.data);
    }
}
