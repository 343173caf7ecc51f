//! Evaluation of a trained model on the host side of the backend: exact
//! log Z and log-likelihood by enumeration, annealed importance sampling,
//! pseudo-likelihood and reconstruction error.

use crate::analysis::graph::{Degree, FactorGraph};
use crate::analysis::plan::Plan;
use crate::analysis::program::{Domain, Model, Variable};
use crate::backend::{self, DeviceKind};
use crate::front::ast::Role;
use crate::tensor::{HostTensor, Tensors};

/// The most joint states exact enumeration will visit.
pub const ENUMERATION_LIMIT: u128 = 1 << 22;

/// Which variables are enumerated and which summed out in closed form.
#[derive(Debug, Clone, PartialEq)]
pub struct Enumeration {
    /// Variables whose joint states are visited one by one.
    pub enumerate: Vec<String>,
    /// Variables summed out in closed form, given the enumerated ones.
    pub sum_out: Vec<String>,
    /// Joint states of `enumerate`: the terms of the sum.
    pub states: u128,
}

fn values_per_unit(v: &Variable) -> Option<(u128, usize)> {
    match v.domain {
        Domain::Binary | Domain::Spin => Some((2, v.shape.iter().product())),
        Domain::Categorical { categories } => {
            Some((categories as u128, v.shape.iter().product::<usize>() / categories))
        }
        Domain::Real { .. } => None,
    }
}

/// The number of joint states of `vars` (saturating at u128::MAX), `None`
/// when one of them is continuous.
fn states_of(model: &Model, vars: &[String]) -> Option<u128> {
    vars.iter().try_fold(1u128, |acc, n| {
        let (k, units) = values_per_unit(model.variable(n)?)?;
        Some(acc.saturating_mul(k.saturating_pow(units.min(u32::MAX as usize) as u32)))
    })
}

/// Chooses the cheaper way to enumerate: the visible side with the plan's
/// latents summed out, or the hidden side with the visibles summed out when
/// the energy allows it (an RBM with fewer hidden than visible units).
pub fn enumeration(graph: &FactorGraph, plan: &Plan) -> Result<Enumeration, String> {
    let model = &graph.model;
    let names = |role: Option<Role>| -> Vec<String> {
        model.variables.iter().filter(|v| role.is_none_or(|r| v.role == r)).map(|v| v.name.clone()).collect()
    };
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let mut options = Vec::new();
    let rest: Vec<String> = names(None).into_iter().filter(|n| !summed.contains(n)).collect();
    if let Some(states) = states_of(model, &rest) {
        options.push(Enumeration { enumerate: rest, sum_out: summed.clone(), states });
    }
    let visible = names(Some(Role::Visible));
    let summable = |n: &String| {
        // Cannot fire: the names come from the plan made from this model.
        let v = model.variable(n).expect("declared");
        v.domain.is_discrete()
            && graph.total_degree(n) <= Degree::Linear
            && graph.self_couplings(n).is_empty()
            && !visible.iter().any(|w| graph.neighbours(n).contains(w))
    };
    let hidden = names(Some(Role::Hidden));
    if !hidden.is_empty()
        && visible.iter().all(summable)
        && let Some(states) = states_of(model, &hidden)
    {
        options.push(Enumeration { enumerate: hidden, sum_out: visible, states });
    }
    let best = options.into_iter().min_by_key(|o| o.states).ok_or(
        "exact log Z needs discrete variables on one side of the model; use AIS (`--ais`) for RBM-like models",
    )?;
    if best.states > ENUMERATION_LIMIT {
        return Err(format!(
            "exact log Z would enumerate {} states (limit {ENUMERATION_LIMIT}); use AIS (`--ais`) for a model this size",
            crate::analysis::limits::joint_states(model, &best.enumerate)
        ));
    }
    Ok(best)
}

/// Every joint state of `vars` as rows `[states, ...shape]`.
pub fn all_states(model: &Model, vars: &[String]) -> Tensors {
    // Cannot fire: callers pass variables `enumeration` accepted (all discrete, countable).
    let states = states_of(model, vars).expect("checked by `enumeration`") as usize;
    // Mixed radix: the last unit of the last variable varies fastest.
    let mut out = Tensors::new();
    let mut stride = 1usize;
    for name in vars.iter().rev() {
        // Cannot fire: the names come from the plan made from this model.
        let v = model.variable(name).expect("declared");
        let (k, units) = values_per_unit(v).expect("discrete");
        let k = k as usize;
        let per: usize = v.shape.iter().product();
        let width = per / units;
        let mut data = vec![0.0f32; states * per];
        for s in 0..states {
            let mut rest = s / stride;
            for u in (0..units).rev() {
                set_unit(&v.domain, rest % k, &mut data[s * per + u * width..s * per + (u + 1) * width]);
                rest /= k;
            }
        }
        let mut shape = vec![states];
        shape.extend(&v.shape);
        out.insert(name.clone(), HostTensor::new(shape, data));
        stride *= k.pow(units as u32);
    }
    out
}

fn set_unit(domain: &Domain, digit: usize, slot: &mut [f32]) {
    match domain {
        Domain::Binary => slot[0] = digit as f32,
        Domain::Spin => slot[0] = if digit == 1 { 1.0 } else { -1.0 },
        _ => {
            for (j, x) in slot.iter_mut().enumerate() {
                *x = f32::from(u8::from(j == digit));
            }
        }
    }
}

/// Base-rate logits (Salakhutdinov & Murray 2008) for each variable the rows
/// bind that AIS samples: the factorised model matching the rows' mean of
/// every unit, with the means clipped to [1/(2n), 1 − 1/(2n)] (n rows, at
/// least 1e-3 from 0 and 1) so units the data never switches on keep a
/// finite logit. Binary: log(p / (1 − p)); spin: half that, for
/// p(s = +1); categorical: log p of each category.
pub fn base_rates(model: &Model, plan: &Plan, rows: &Tensors) -> Tensors {
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let mut out = Tensors::new();
    for v in model.variables.iter().filter(|v| !summed.contains(&v.name) && v.domain.is_discrete()) {
        let Some(t) = rows.get(&v.name) else { continue };
        let n = t.shape[0];
        let per: usize = v.shape.iter().product();
        if n == 0 || t.data.len() != n * per {
            continue;
        }
        let eps = (0.5 / n as f64).min(1e-3);
        let mut mean = vec![0.0f64; per];
        for row in t.data.chunks(per) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += f64::from(*x) / n as f64;
            }
        }
        let logits: Vec<f32> = match v.domain {
            Domain::Binary => {
                mean.iter().map(|m| m.clamp(eps, 1.0 - eps)).map(|p| (p / (1.0 - p)).ln() as f32).collect()
            }
            Domain::Spin => mean
                .iter()
                .map(|m| ((m + 1.0) / 2.0).clamp(eps, 1.0 - eps))
                .map(|p| (0.5 * (p / (1.0 - p)).ln()) as f32)
                .collect(),
            _ => mean.iter().map(|m| m.clamp(eps, 1.0).ln() as f32).collect(),
        };
        out.insert(v.name.clone(), HostTensor::new(v.shape.clone(), logits));
    }
    out
}

/// `log Σ exp(xᵢ)`, computed stably; -∞ for no terms or all -∞.
pub fn log_sum_exp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Exact log Z: by enumeration for discrete models; for a model with one
/// unbounded real variable whose energy is quadratic in it (a Gaussian–
/// Bernoulli RBM), by enumerating the discrete variables and integrating the
/// Gaussian in closed form.
pub fn exact_log_z(graph: &FactorGraph, plan: &Plan, params: &Tensors, device: DeviceKind) -> Result<f64, String> {
    if graph.model.variables.iter().any(|v| !v.domain.is_discrete()) {
        return gaussian_log_z(&graph.model, plan, params, device);
    }
    let e = enumeration(graph, plan)?;
    let rows = all_states(&graph.model, &e.enumerate);
    let f = backend::free_energy(&graph.model, &plan.lowered, params, &e.sum_out, &rows, device)?;
    Ok(log_sum_exp(&f.iter().map(|x| -x).collect::<Vec<_>>()))
}

/// Free energy of each row with every variable the rows leave unbound
/// summed out: the plan's latents (and a JEM label) in closed form, any other
/// latents (a DBM's even layers) by enumerating their states for each row.
pub fn row_free_energy(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    rows: &Tensors,
    device: DeviceKind,
) -> Result<Vec<f64>, String> {
    let given: Vec<String> = rows.keys().cloned().collect();
    let summed = summed_for(plan, &given);
    let kept: Vec<String> = model
        .variables
        .iter()
        .filter(|v| !given.contains(&v.name) && !summed.contains(&v.name))
        .map(|v| v.name.clone())
        .collect();
    if kept.is_empty() {
        return backend::free_energy(model, &plan.lowered, params, &summed, rows, device);
    }
    let states = states_of(model, &kept).filter(|s| *s <= ENUMERATION_LIMIT).ok_or_else(|| format!("the rows leave {} unbound and it cannot be summed out in closed form; enumerating it per row would visit more than {ENUMERATION_LIMIT} states", kept.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")))? as usize;
    let latent = all_states(model, &kept);
    let n = rows.values().next().map_or(0, |t| t.shape[0]);
    let mut out = Vec::with_capacity(n);
    for r in 0..n {
        // This row repeated under every latent state.
        let mut repeated = crate::tensor::gather_rows(rows, states, |_| r);
        repeated.extend(latent.clone());
        let f = backend::free_energy(model, &plan.lowered, params, &summed, &repeated, device)?;
        out.push(-log_sum_exp(&f.iter().map(|x| -x).collect::<Vec<_>>()));
    }
    Ok(out)
}

/// The most continuous dimensions the closed-form Gaussian integral handles.
pub const GAUSSIAN_DIMS_LIMIT: usize = 1024;

/// log Z of E(x, s) = ½ xᵀA x − g(s)ᵀx + c(s) (x real and unbounded, s the
/// discrete variables, A the same for every s and positive definite):
/// Σ_s exp(½ g(s)ᵀA⁻¹g(s) − c(s)) · (2π)^(d/2) |A|^(−1/2). A, g and c are
/// read off the energy at x = 0 and unit vectors, then checked at random
/// points of several states, so an energy that is not of this form is refused.
pub fn gaussian_log_z(model: &Model, plan: &Plan, params: &Tensors, device: DeviceKind) -> Result<f64, String> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let continuous: Vec<&Variable> = model.variables.iter().filter(|v| !v.domain.is_discrete()).collect();
    let [x] = continuous.as_slice() else {
        return Err(format!(
            "exact log Z integrates one continuous variable in closed form; this model has {}",
            continuous.len()
        ));
    };
    if !matches!(x.domain, Domain::Real { bounds: None }) {
        return Err(format!("exact log Z integrates an unbounded Gaussian; `{}` is bounded", x.name));
    }
    let d: usize = x.shape.iter().product();
    if d > GAUSSIAN_DIMS_LIMIT {
        return Err(format!(
            "exact log Z integrates at most {GAUSSIAN_DIMS_LIMIT} Gaussian dimensions; `{}` has {d}",
            x.name
        ));
    }
    let discrete: Vec<String> =
        model.variables.iter().filter(|v| v.domain.is_discrete()).map(|v| v.name.clone()).collect();
    // Cannot fire: `discrete` holds discrete variables only.
    let states = states_of(model, &discrete).expect("discrete");
    if states > ENUMERATION_LIMIT || states.saturating_mul(d as u128) > 1 << 26 {
        return Err(format!(
            "exact log Z would enumerate {} states of {} (limit {ENUMERATION_LIMIT}); use fewer hidden units for an exact log-likelihood",
            crate::analysis::limits::joint_states(model, &discrete),
            discrete.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    let n = states as usize;
    let rows_with = |xs: Vec<f32>, pick: &dyn Fn(usize) -> usize, m: usize, all: &Tensors| -> Tensors {
        let mut rows = crate::tensor::gather_rows(all, m, pick);
        let mut shape = vec![m];
        shape.extend(&x.shape);
        rows.insert(x.name.clone(), HostTensor::new(shape, xs));
        rows
    };
    let all = if discrete.is_empty() { Tensors::new() } else { all_states(model, &discrete) };
    let sampler = backend::Sampler::new(model, plan, params, 1, 0, device)?;
    let gradient = backend::Quantity::Gradient(x.name.clone());
    let at_zero = rows_with(vec![0.0; n * d], &|r| r, n, &all);
    let c: Vec<f64> = sampler.energy(&at_zero)?.into_iter().map(f64::from).collect();
    let g0 = sampler.evaluate(gradient.clone(), &at_zero)?.data;
    // A's columns: the gradient's change along each unit vector (state 0).
    let units: Vec<f32> = (0..d * d).map(|i| f32::from(u8::from(i / d == i % d))).collect();
    let ga = sampler.evaluate(gradient, &rows_with(units, &|_| 0, d, &all))?.data;
    let mut a = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            a[j * d + i] = f64::from(ga[i * d + j]) - f64::from(g0[j]);
        }
    }
    let scale = a.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    if (0..d).any(|i| (0..i).any(|j| (a[i * d + j] - a[j * d + i]).abs() > 1e-4 * scale)) {
        return Err(format!(
            "the energy is not a quadratic form in `{}` (its second derivatives are not symmetric)",
            x.name
        ));
    }
    let chol = cholesky(&a, d).ok_or_else(|| {
        format!("the energy's quadratic part in `{}` is not positive definite, so exp(−E) is not integrable", x.name)
    })?;
    // Check the quadratic form at random points of a few states.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let m = n.min(8);
    let probes: Vec<usize> = (0..m).map(|i| i * (n - 1) / (m - 1).max(1)).collect();
    let xs: Vec<f32> = (0..probes.len() * d).map(|_| rand_distr::StandardNormal.sample(&mut rng)).collect();
    let actual = sampler.energy(&rows_with(xs.clone(), &|r| probes[r], probes.len(), &all))?;
    for (r, &s) in probes.iter().enumerate() {
        let xr: Vec<f64> = xs[r * d..(r + 1) * d].iter().map(|v| f64::from(*v)).collect();
        let quad: f64 = (0..d).map(|i| (0..d).map(|j| xr[i] * a[i * d + j] * xr[j]).sum::<f64>()).sum::<f64>();
        let predicted = 0.5 * quad + (0..d).map(|i| f64::from(g0[s * d + i]) * xr[i]).sum::<f64>() + c[s];
        if (predicted - f64::from(actual[r])).abs() > 1e-3 * (1.0 + predicted.abs()) {
            return Err(format!(
                "the energy is not quadratic in `{}` with the same curvature for every state of the other variables, so its integral has no closed form here",
                x.name
            ));
        }
    }
    let log_det: f64 = (0..d).map(|i| 2.0 * chol[i * d + i].ln()).sum();
    let terms: Vec<f64> = (0..n)
        .map(|s| {
            let g: Vec<f64> = (0..d).map(|i| -f64::from(g0[s * d + i])).collect();
            // ½ gᵀA⁻¹g = ½ ‖L⁻¹g‖².
            let y = forward_solve(&chol, &g, d);
            0.5 * y.iter().map(|v| v * v).sum::<f64>() - c[s]
        })
        .collect();
    Ok(log_sum_exp(&terms) + 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln() - 0.5 * log_det)
}

/// Lower-triangular L with L Lᵀ = A (row-major), or `None` when A is not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if v.is_nan() || v <= 0.0 {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

fn forward_solve(l: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut y = vec![0.0; d];
    for i in 0..d {
        y[i] = (b[i] - (0..i).map(|k| l[i * d + k] * y[k]).sum::<f64>()) / l[i * d + i];
    }
    y
}

/// Exact log-likelihood of each data row, given log Z: the plan's latents
/// summed out, any other latents enumerated per row.
pub fn exact_log_likelihood(
    graph: &FactorGraph,
    plan: &Plan,
    params: &Tensors,
    data: &Tensors,
    log_z: f64,
    device: DeviceKind,
) -> Result<Vec<f64>, String> {
    Ok(row_free_energy(&graph.model, plan, params, data, device)?.into_iter().map(|f| -f - log_z).collect())
}

/// Rows of flipped copies pseudo-likelihood evaluates at once: bounds its
/// memory to a few of these (MNIST: 2,000 rows × 784 units × 2 values would
/// otherwise be 3 million rows of 784 floats).
const PL_CHUNK_ROWS: usize = 8192;

/// Average log pseudo-likelihood per row, Σ_i log p(x_i | x_−i), over the
/// visible discrete units (latents summed out as planned). With `units`
/// given, a fresh random subset of that many units for each row, scaled up
/// (stochastic PL, an unbiased estimate of the exact one). Rows are
/// processed in chunks, so memory does not grow with the number of rows.
pub fn pseudo_likelihood(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    data: &Tensors,
    units: Option<usize>,
    seed: u64,
    device: DeviceKind,
) -> Result<f64, String> {
    use rand::SeedableRng;
    use rand::seq::index::sample;
    let n = data.values().next().map_or(0, |t| t.shape[0]);
    if n == 0 {
        return Err("pseudo-likelihood needs at least one row".into());
    }
    if units == Some(0) {
        return Err("`--pl-units` must be at least 1".into());
    }
    let given: Vec<String> = data.keys().cloned().collect();
    let summed = summed_for(plan, &given);
    if let Some(v) = model.variables.iter().find(|v| !given.contains(&v.name) && !summed.contains(&v.name)) {
        // Enumerating it for every flipped copy of every row is out of reach.
        return Err(format!("pseudo-likelihood needs every latent summed out in closed form; `{}` is not", v.name));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut total = 0.0;
    for v in model.variables.iter().filter(|v| v.role == Role::Visible) {
        let (k, count) = values_per_unit(v)
            .ok_or_else(|| format!("pseudo-likelihood needs discrete visible variables; `{}` is continuous", v.name))?;
        let k = k as usize;
        let per: usize = v.shape.iter().product();
        let width = per / count;
        let take = units.map_or(count, |u| u.min(count));
        let scale = count as f64 / take as f64;
        let own = &data[&v.name];
        let rows_per = take * k;
        let chunk = (PL_CHUNK_ROWS / rows_per).max(1);
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            // Units scored for each row of the chunk: all, or a fresh random subset per row.
            let chosen: Vec<Vec<usize>> = (start..end)
                .map(|_| if take == count { (0..count).collect() } else { sample(&mut rng, count, take).into_vec() })
                .collect();
            // Rows (row, unit, value) with that unit set to each value.
            let mut expanded = Tensors::new();
            for (name, t) in data {
                let p: usize = t.shape[1..].iter().product();
                let mut buf = Vec::with_capacity((end - start) * rows_per * p);
                for (r, units) in (start..end).zip(&chosen) {
                    for &u in units {
                        for value in 0..k {
                            let at = buf.len();
                            buf.extend_from_slice(&t.data[r * p..(r + 1) * p]);
                            if *name == v.name {
                                set_unit(&v.domain, value, &mut buf[at + u * width..at + (u + 1) * width]);
                            }
                        }
                    }
                }
                let mut shape = t.shape.clone();
                shape[0] = (end - start) * rows_per;
                expanded.insert(name.clone(), HostTensor::new(shape, buf));
            }
            let f = row_free_energy(model, plan, params, &expanded, device)?;
            for (i, (r, units)) in (start..end).zip(&chosen).enumerate() {
                for (j, &u) in units.iter().enumerate() {
                    let block = &f[(i * take + j) * k..(i * take + j + 1) * k];
                    let slot = &own.data[r * per + u * width..r * per + (u + 1) * width];
                    let mine = (0..k).find(|&value| {
                        let mut probe = vec![0.0; width];
                        set_unit(&v.domain, value, &mut probe);
                        probe == slot
                    });
                    let mine = mine.ok_or_else(|| {
                        format!("row {}: a value of `{}` lies outside the variable's domain", r + 1, v.name)
                    })?;
                    let lse = log_sum_exp(&block.iter().map(|x| -x).collect::<Vec<_>>());
                    total += scale * (-block[mine] - lse);
                }
            }
        }
    }
    Ok(total / n as f64)
}

/// Mean squared reconstruction error of the visible rows after one
/// up-down pass: sample the latents given the data, then compare the data
/// with the visible units' conditional means. For models whose plan samples
/// every latent in a Gibbs block.
pub fn reconstruction_error(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    data: &Tensors,
    seed: u64,
    device: DeviceKind,
) -> Result<f64, String> {
    use crate::backend::{Quantity, Sampler};
    let hidden: Vec<&Variable> = model.variables.iter().filter(|v| v.role == Role::Hidden).collect();
    let visible: Vec<&Variable> = model.variables.iter().filter(|v| v.role == Role::Visible).collect();
    if hidden.is_empty() || !model.variables.iter().all(|v| v.domain.is_discrete()) {
        return Err("reconstruction error needs a model with discrete hidden and visible variables".into());
    }
    let n = data.values().next().map_or(0, |t| t.shape[0]);
    let sampler = Sampler::new(model, plan, params, 1, seed, device)?;
    let mut rows = data.clone();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    for h in &hidden {
        // Latents given the data (with other latents at zero: the bipartite case).
        let mut given = rows.clone();
        for other in hidden.iter().filter(|o| o.name != h.name && !rows.contains_key(&o.name)) {
            let mut shape = vec![n];
            shape.extend(&other.shape);
            given.insert(other.name.clone(), HostTensor::filled(shape, 0.0));
        }
        let p = sampler.evaluate(Quantity::Conditional(h.name.clone()), &given)?;
        let drawn = draw_host(&h.domain, &p, &mut rng);
        rows.insert(h.name.clone(), drawn);
    }
    let mut err = 0.0;
    for v in &visible {
        let p = sampler.evaluate(Quantity::Conditional(v.name.clone()), &rows)?;
        let mean: Vec<f32> = match v.domain {
            Domain::Spin => p.data.iter().map(|q| 2.0 * q - 1.0).collect(),
            _ => p.data.clone(),
        };
        err += data[&v.name].data.iter().zip(&mean).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
    }
    Ok(err / n as f64)
}

/// Draws of the latent per row when `eval` estimates the ELBO: its mean is
/// the ELBO whatever the count; 16 make its noise a quarter of one draw's.
pub const ELBO_DRAWS: usize = 16;

/// The average evidence lower bound of the rows of `data` for a model
/// trained by `elbo` (`train` its block), in nats less the energy's own
/// normaliser: minus the objective's loss with `ELBO_DRAWS` draws per row.
pub fn elbo(
    model: &Model,
    plan: &Plan,
    train: &crate::analysis::program::Train,
    params: &Tensors,
    data: &Tensors,
    seed: u64,
    device: DeviceKind,
) -> Result<f64, String> {
    use crate::analysis::program::Objective;
    let Objective::Elbo { encoder, .. } = &train.options.objective else {
        return Err("the ELBO needs a model trained by `elbo`, whose encoder gives the posterior".into());
    };
    let mut train = train.clone();
    train.options.objective = Objective::Elbo { encoder: encoder.clone(), samples: ELBO_DRAWS };
    let mut trainer =
        backend::Trainer::new(model, plan, &train, params, &Tensors::new(), seed, device).map_err(|e| e.to_string())?;
    trainer.begin_epoch(seed);
    let visible: Tensors = data
        .iter()
        .filter(|(k, _)| model.variable(k).is_some_and(|v| v.role == Role::Visible))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    let n = visible.values().next().map_or(0, |t| t.shape[0]);
    // Chunks bound the step's memory (each row is repeated once per draw).
    const CHUNK: usize = 256;
    let mut total = 0.0;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let chunk: Tensors = visible
            .iter()
            .map(|(k, t)| {
                let per: usize = t.shape[1..].iter().product();
                let mut shape = t.shape.clone();
                shape[0] = end - start;
                (k.clone(), HostTensor::new(shape, t.data[start * per..end * per].to_vec()))
            })
            .collect();
        total += trainer.loss(&chunk).map_err(|e| e.to_string())? * (end - start) as f64;
    }
    Ok(-total / n as f64)
}

fn draw_host(domain: &Domain, p: &HostTensor, rng: &mut rand::rngs::StdRng) -> HostTensor {
    use rand::Rng;
    let data = match domain {
        Domain::Binary => p.data.iter().map(|q| f32::from(u8::from(rng.r#gen::<f32>() < *q))).collect(),
        Domain::Spin => p.data.iter().map(|q| if rng.r#gen::<f32>() < *q { 1.0 } else { -1.0 }).collect(),
        Domain::Categorical { categories } => p
            .data
            .chunks(*categories)
            .flat_map(|row| {
                let mut u = rng.r#gen::<f32>();
                let pick = row.iter().position(|q| {
                    u -= q;
                    u < 0.0
                });
                let pick = pick.unwrap_or(row.len() - 1);
                (0..row.len()).map(move |k| f32::from(u8::from(k == pick)))
            })
            .collect(),
        Domain::Real { .. } => p.data.clone(),
    };
    HostTensor::new(p.shape.clone(), data)
}

/// Accuracy and expected calibration error (10 equal-width confidence bins)
/// of p(label | rest) for a model whose plan sums a visible label out (JEM).
pub fn classification(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    data: &Tensors,
    device: DeviceKind,
) -> Result<(f64, f64), String> {
    let label = plan
        .label_marginal
        .as_ref()
        .map(|m| m.var.clone())
        .ok_or("classification needs a categorical label the plan sums out")?;
    let sampler = crate::backend::Sampler::new(model, plan, params, 1, 0, device)?;
    let inputs: Tensors = data.iter().filter(|(k, _)| **k != label).map(|(k, t)| (k.clone(), t.clone())).collect();
    let p = sampler.evaluate(crate::backend::Quantity::Conditional(label.clone()), &inputs)?;
    // Cannot fire: a conditional of a categorical label has the categories as its last axis.
    let k = *p.shape.last().expect("categories");
    let truth = &data[&label].data;
    let (mut correct, mut bins) = (0usize, vec![(0.0f64, 0.0f64, 0usize); 10]);
    let rows = p.data.len() / k;
    for r in 0..rows {
        let row = &p.data[r * k..(r + 1) * k];
        let (best, conf) =
            row.iter().enumerate().fold((0, f32::MIN), |acc, (i, q)| if *q > acc.1 { (i, *q) } else { acc });
        let hit = truth[r * k + best] > 0.5;
        correct += usize::from(hit);
        let b = ((conf * 10.0) as usize).min(9);
        bins[b].0 += f64::from(conf);
        bins[b].1 += f64::from(u8::from(hit));
        bins[b].2 += 1;
    }
    let ece =
        bins.iter().filter(|b| b.2 > 0).map(|(c, h, n)| (*n as f64 / rows as f64) * ((c - h) / *n as f64).abs()).sum();
    Ok((correct as f64 / rows as f64, ece))
}

/// The softmax confidence `max_y p(y | rest)` of each row of `inputs` (the
/// rows without the label) for a model whose plan sums a visible label out:
/// the baseline OOD score (Hendrycks & Gimpel 2017) beside the energy. A
/// label of several units has `p(y | rest)` factorised over them, so its
/// largest value is the product of each unit's largest.
pub fn softmax_confidence(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    inputs: &Tensors,
    device: DeviceKind,
) -> Result<Vec<f64>, String> {
    let label = plan
        .label_marginal
        .as_ref()
        .map(|m| m.var.clone())
        .ok_or("softmax confidence needs a categorical label the plan sums out")?;
    let units: usize =
        model.variable(&label).map_or(1, |v| v.shape[..v.shape.len().saturating_sub(1)].iter().product());
    let sampler = crate::backend::Sampler::new(model, plan, params, 1, 0, device)?;
    let p = sampler.evaluate(crate::backend::Quantity::Conditional(label), inputs)?;
    // Cannot fire: a conditional of a categorical label has the categories as its last axis.
    let k = *p.shape.last().expect("categories");
    Ok(p.data
        .chunks(k * units.max(1))
        .map(|row| row.chunks(k).map(|u| f64::from(u.iter().fold(0.0f32, |m, q| m.max(*q)))).product())
        .collect())
}

/// The variables `ebmc energy` sums out for rows that bind `given`: the
/// plan's latents, and a JEM label the rows leave out.
pub fn summed_for(plan: &Plan, given: &[String]) -> Vec<String> {
    let mut summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    if let Some(m) = &plan.label_marginal
        && !given.contains(&m.var)
    {
        summed.push(m.var.clone());
    }
    summed
}

/// A model's free energy at the midpoints of a grid: `resolution` points per
/// axis over `[low, high]`, in one or two continuous dimensions (latents
/// summed out as planned). In 2-D the first coordinate is the outer index.
pub struct Grid {
    /// Low end of each axis.
    pub low: f64,
    /// High end of each axis.
    pub high: f64,
    /// Points per axis.
    pub resolution: usize,
    /// Continuous dimensions: 1 or 2.
    pub dims: usize,
    /// The free energy at each grid point, `resolution ^ dims` values.
    pub free_energy: Vec<f64>,
}

/// The most points of a grid integral (per axis in 1-D, 4,096 per axis in
/// 2-D): their free energies fit in a few hundred MiB.
pub const MAX_GRID_POINTS: usize = 1 << 24;

/// Grid bounds and resolution a grid integral over `dims` dimensions can
/// honour: finite bounds, `low < high`, at least 2 points per axis and at
/// most [`MAX_GRID_POINTS`] in all.
pub fn check_grid_options(low: f64, high: f64, resolution: usize, dims: usize) -> Result<(), String> {
    if !(low.is_finite() && high.is_finite() && low < high) {
        return Err(format!("the grid bounds must be finite with --grid-low < --grid-high; got {low} and {high}"));
    }
    let points = u32::try_from(dims).ok().and_then(|d| resolution.checked_pow(d)).filter(|p| *p <= MAX_GRID_POINTS);
    if resolution < 2 || points.is_none() {
        return Err(format!(
            "--grid must be at least 2 points per axis and at most {MAX_GRID_POINTS} points in all over {dims} dimension(s); got {resolution} per axis"
        ));
    }
    Ok(())
}

/// The one continuous variable a grid integral covers once the plan's
/// latents (and a JEM label) are summed out, the variables summed out, and
/// its number of dimensions (1 or 2).
pub fn grid_variable<'m>(model: &'m Model, plan: &Plan) -> Result<(&'m Variable, Vec<String>, usize), String> {
    let inputs: Vec<String> =
        model.variables.iter().filter(|v| !v.domain.is_discrete()).map(|v| v.name.clone()).collect();
    let summed = summed_for(plan, &inputs);
    let rest: Vec<&Variable> = model.variables.iter().filter(|v| !summed.contains(&v.name)).collect();
    let [v] = rest.as_slice() else {
        return Err("the grid integral needs one continuous variable once latents are summed out".into());
    };
    let dims: usize = v.shape.iter().product();
    if v.domain.is_discrete() || !(1..=2).contains(&dims) {
        return Err(format!("the grid integral covers one or two continuous dimensions; `{}` has {dims}", v.name));
    }
    Ok((v, summed, dims))
}

impl Grid {
    /// Evaluates the free energy of `model` on the grid of `resolution` points per axis over `[low, high]`.
    pub fn new(
        model: &Model,
        plan: &Plan,
        params: &Tensors,
        low: f64,
        high: f64,
        resolution: usize,
        device: DeviceKind,
    ) -> Result<Grid, String> {
        let (v, summed, dims) = grid_variable(model, plan)?;
        check_grid_options(low, high, resolution, dims)?;
        let h = (high - low) / resolution as f64;
        let axis: Vec<f32> = (0..resolution).map(|i| (low + (i as f64 + 0.5) * h) as f32).collect();
        let points: Vec<f32> = if dims == 1 {
            axis.clone()
        } else {
            axis.iter().flat_map(|a| axis.iter().flat_map(move |b| [*a, *b])).collect()
        };
        let mut shape = vec![points.len() / dims];
        shape.extend(&v.shape);
        let rows: Tensors = [(v.name.clone(), HostTensor::new(shape, points))].into_iter().collect();
        let free_energy = backend::free_energy(model, &plan.lowered, params, &summed, &rows, device)?;
        Ok(Grid { low, high, resolution, dims, free_energy })
    }

    /// log Z by the midpoint rule: log Σ exp(−F) + log(cell volume).
    pub fn log_z(&self) -> f64 {
        let h = (self.high - self.low) / self.resolution as f64;
        log_sum_exp(&self.free_energy.iter().map(|x| -x).collect::<Vec<_>>()) + self.dims as f64 * h.ln()
    }
}

/// log Z of a model over one or two continuous dimensions, by integrating
/// exp(−F) on a grid (see `Grid`).
pub fn grid_log_z(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    low: f64,
    high: f64,
    resolution: usize,
    device: DeviceKind,
) -> Result<f64, String> {
    Ok(Grid::new(model, plan, params, low, high, resolution, device)?.log_z())
}
