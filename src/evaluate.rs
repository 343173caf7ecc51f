//! Evaluation of a trained model on the host side of the backend: exact
//! log Z and log-likelihood by enumeration, annealed importance sampling,
//! pseudo-likelihood and reconstruction error.

use crate::ast::Role;
use crate::backend::{self, DeviceKind};
use crate::graph::{Degree, FactorGraph};
use crate::plan::Plan;
use crate::program::{Domain, Model, Variable};
use crate::tensor::{HostTensor, Tensors};

/// The most joint states exact enumeration will visit.
pub const ENUMERATION_LIMIT: u128 = 1 << 22;

/// Which variables are enumerated and which summed out in closed form.
#[derive(Debug, Clone, PartialEq)]
pub struct Enumeration {
    pub enumerate: Vec<String>,
    pub sum_out: Vec<String>,
    pub states: u128,
}

fn values_per_unit(v: &Variable) -> Option<(u128, usize)> {
    match v.domain {
        Domain::Binary | Domain::Spin => Some((2, v.shape.iter().product())),
        Domain::Categorical { categories } => Some((categories as u128, v.shape.iter().product::<usize>() / categories)),
        Domain::Real { .. } => None,
    }
}

fn states_of(model: &Model, vars: &[String]) -> Option<u128> {
    vars.iter().try_fold(1u128, |acc, n| {
        let (k, units) = values_per_unit(model.variable(n)?)?;
        acc.checked_mul(k.checked_pow(units as u32)?)
    })
}

/// Chooses the cheaper way to enumerate: the visible side with the plan's
/// latents summed out, or the hidden side with the visibles summed out when
/// the energy allows it (an RBM with fewer hidden than visible units).
pub fn enumeration(graph: &FactorGraph, plan: &Plan) -> Result<Enumeration, String> {
    let model = &graph.model;
    let names = |role: Option<Role>| -> Vec<String> { model.variables.iter().filter(|v| role.is_none_or(|r| v.role == r)).map(|v| v.name.clone()).collect() };
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let mut options = Vec::new();
    let rest: Vec<String> = names(None).into_iter().filter(|n| !summed.contains(n)).collect();
    if let Some(states) = states_of(model, &rest) {
        options.push(Enumeration { enumerate: rest, sum_out: summed.clone(), states });
    }
    let visible = names(Some(Role::Visible));
    let summable = |n: &String| {
        let v = model.variable(n).expect("declared");
        v.domain.is_discrete() && graph.total_degree(n) <= Degree::Linear && graph.self_couplings(n).is_empty() && !visible.iter().any(|w| graph.neighbours(n).contains(w))
    };
    let hidden = names(Some(Role::Hidden));
    if !hidden.is_empty() && visible.iter().all(summable) {
        if let Some(states) = states_of(model, &hidden) {
            options.push(Enumeration { enumerate: hidden, sum_out: visible, states });
        }
    }
    let best = options.into_iter().min_by_key(|o| o.states).ok_or("exact log Z needs discrete variables on one side of the model; use AIS (`--ais`) for RBM-like models")?;
    if best.states > ENUMERATION_LIMIT {
        return Err(format!("exact log Z would enumerate {} states (limit {ENUMERATION_LIMIT}); use AIS (`--ais`) for a model this size", best.states));
    }
    Ok(best)
}

/// Every joint state of `vars` as rows `[states, ...shape]`.
pub fn all_states(model: &Model, vars: &[String]) -> Tensors {
    let states = states_of(model, vars).expect("checked by `enumeration`") as usize;
    // Mixed radix: the last unit of the last variable varies fastest.
    let mut out = Tensors::new();
    let mut stride = 1usize;
    for name in vars.iter().rev() {
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

pub fn log_sum_exp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Exact log Z by enumeration.
pub fn exact_log_z(graph: &FactorGraph, plan: &Plan, params: &Tensors, device: DeviceKind) -> Result<f64, String> {
    let e = enumeration(graph, plan)?;
    let rows = all_states(&graph.model, &e.enumerate);
    let f = backend::free_energy(&graph.model, params, &e.sum_out, &rows, device)?;
    Ok(log_sum_exp(&f.iter().map(|x| -x).collect::<Vec<_>>()))
}

/// Exact log-likelihood of each data row, given log Z: the plan's latents
/// summed out, any other latents enumerated per row.
pub fn exact_log_likelihood(graph: &FactorGraph, plan: &Plan, params: &Tensors, data: &Tensors, log_z: f64, device: DeviceKind) -> Result<Vec<f64>, String> {
    let model = &graph.model;
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let kept: Vec<String> = model.variables.iter().filter(|v| v.role == Role::Hidden && !summed.contains(&v.name)).map(|v| v.name.clone()).collect();
    let n = data.values().next().map_or(0, |t| t.shape[0]);
    if kept.is_empty() {
        let f = backend::free_energy(model, params, &summed, data, device)?;
        return Ok(f.into_iter().map(|x| -x - log_z).collect());
    }
    let states = states_of(model, &kept).filter(|s| *s <= ENUMERATION_LIMIT).ok_or("too many latent states to enumerate per row")? as usize;
    let latent = all_states(model, &kept);
    let mut out = Vec::with_capacity(n);
    for r in 0..n {
        // Rows: this data row repeated under every latent state.
        let mut rows: Tensors = data
            .iter()
            .map(|(k, t)| {
                let per: usize = t.shape[1..].iter().product();
                let mut shape = t.shape.clone();
                shape[0] = states;
                (k.clone(), HostTensor::new(shape, t.data[r * per..(r + 1) * per].repeat(states)))
            })
            .collect();
        rows.extend(latent.clone());
        let f = backend::free_energy(model, params, &summed, &rows, device)?;
        out.push(log_sum_exp(&f.iter().map(|x| -x).collect::<Vec<_>>()) - log_z);
    }
    Ok(out)
}

/// Average log pseudo-likelihood per row, Σ_i log p(x_i | x_−i), over the
/// visible discrete units (latents summed out as planned). With `units`
/// given, a random subset of that many units per row, scaled up (stochastic PL).
pub fn pseudo_likelihood(model: &Model, plan: &Plan, params: &Tensors, data: &Tensors, units: Option<usize>, seed: u64, device: DeviceKind) -> Result<f64, String> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let n = data.values().next().map_or(0, |t| t.shape[0]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut total = 0.0;
    for v in model.variables.iter().filter(|v| v.role == Role::Visible) {
        let (k, count) = values_per_unit(v).ok_or_else(|| format!("pseudo-likelihood needs discrete visible variables; `{}` is continuous", v.name))?;
        let k = k as usize;
        let per: usize = v.shape.iter().product();
        let width = per / count;
        let mut chosen: Vec<usize> = (0..count).collect();
        let scale = match units {
            Some(u) if u < count => {
                chosen.shuffle(&mut rng);
                chosen.truncate(u);
                count as f64 / u as f64
            }
            _ => 1.0,
        };
        // Rows (row, unit, value) with that unit set to each value.
        let rows_per = chosen.len() * k;
        let mut expanded = Tensors::new();
        for (name, t) in data {
            let p: usize = t.shape[1..].iter().product();
            let mut buf = Vec::with_capacity(n * rows_per * p);
            for r in 0..n {
                for &u in &chosen {
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
            shape[0] = n * rows_per;
            expanded.insert(name.clone(), HostTensor::new(shape, buf));
        }
        let f = crate::backend::free_energy(model, params, &summed, &expanded, device)?;
        let own = &data[&v.name];
        for r in 0..n {
            for (j, &u) in chosen.iter().enumerate() {
                let block = &f[(r * chosen.len() + j) * k..(r * chosen.len() + j + 1) * k];
                let slot = &own.data[r * per + u * width..r * per + (u + 1) * width];
                let mine = (0..k).find(|&value| {
                    let mut probe = vec![0.0; width];
                    set_unit(&v.domain, value, &mut probe);
                    probe == slot
                });
                let mine = mine.ok_or("data value outside the variable's domain")?;
                let lse = log_sum_exp(&block.iter().map(|x| -x).collect::<Vec<_>>());
                total += scale * (-block[mine] - lse);
            }
        }
    }
    Ok(total / n as f64)
}

/// Mean squared reconstruction error of the visible rows after one
/// up-down pass: sample the latents given the data, then compare the data
/// with the visible units' conditional means. For models whose plan samples
/// every latent in a Gibbs block.
pub fn reconstruction_error(model: &Model, plan: &Plan, params: &Tensors, data: &Tensors, seed: u64, device: DeviceKind) -> Result<f64, String> {
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
pub fn classification(model: &Model, plan: &Plan, params: &Tensors, data: &Tensors, device: DeviceKind) -> Result<(f64, f64), String> {
    let label = plan.label_marginal.as_ref().map(|m| m.var.clone()).ok_or("classification needs a categorical label the plan sums out")?;
    let sampler = crate::backend::Sampler::new(model, plan, params, 1, 0, device)?;
    let inputs: Tensors = data.iter().filter(|(k, _)| **k != label).map(|(k, t)| (k.clone(), t.clone())).collect();
    let p = sampler.evaluate(crate::backend::Quantity::Conditional(label.clone()), &inputs)?;
    let k = *p.shape.last().expect("categories");
    let truth = &data[&label].data;
    let (mut correct, mut bins) = (0usize, vec![(0.0f64, 0.0f64, 0usize); 10]);
    let rows = p.data.len() / k;
    for r in 0..rows {
        let row = &p.data[r * k..(r + 1) * k];
        let (best, conf) = row.iter().enumerate().fold((0, f32::MIN), |acc, (i, q)| if *q > acc.1 { (i, *q) } else { acc });
        let hit = truth[r * k + best] > 0.5;
        correct += usize::from(hit);
        let b = ((conf * 10.0) as usize).min(9);
        bins[b].0 += f64::from(conf);
        bins[b].1 += f64::from(u8::from(hit));
        bins[b].2 += 1;
    }
    let ece = bins.iter().filter(|b| b.2 > 0).map(|(c, h, n)| (*n as f64 / rows as f64) * ((c - h) / *n as f64).abs()).sum();
    Ok((correct as f64 / rows as f64, ece))
}

/// The variables `ebmc energy` sums out for rows that bind `given`: the
/// plan's latents, and a JEM label the rows leave out.
pub fn summed_for(plan: &Plan, given: &[String]) -> Vec<String> {
    let mut summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    if let Some(m) = &plan.label_marginal {
        if !given.contains(&m.var) {
            summed.push(m.var.clone());
        }
    }
    summed
}

/// A model's free energy at the midpoints of a grid: `resolution` points per
/// axis over `[low, high]`, in one or two continuous dimensions (latents
/// summed out as planned). In 2-D the first coordinate is the outer index.
pub struct Grid {
    pub low: f64,
    pub high: f64,
    pub resolution: usize,
    pub dims: usize,
    pub free_energy: Vec<f64>,
}

impl Grid {
    pub fn new(model: &Model, plan: &Plan, params: &Tensors, low: f64, high: f64, resolution: usize, device: DeviceKind) -> Result<Grid, String> {
        let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
        let rest: Vec<&Variable> = model.variables.iter().filter(|v| !summed.contains(&v.name)).collect();
        let [v] = rest.as_slice() else {
            return Err("the grid integral needs one continuous variable once latents are summed out".into());
        };
        let dims: usize = v.shape.iter().product();
        if v.domain.is_discrete() || !(1..=2).contains(&dims) {
            return Err(format!("the grid integral covers one or two continuous dimensions; `{}` has {dims}", v.name));
        }
        if !(high > low) || resolution < 2 {
            return Err("the grid needs low < high and at least 2 points per axis".into());
        }
        let h = (high - low) / resolution as f64;
        let axis: Vec<f32> = (0..resolution).map(|i| (low + (i as f64 + 0.5) * h) as f32).collect();
        let points: Vec<f32> = if dims == 1 { axis.clone() } else { axis.iter().flat_map(|a| axis.iter().flat_map(move |b| [*a, *b])).collect() };
        let mut shape = vec![points.len() / dims];
        shape.extend(&v.shape);
        let rows: Tensors = [(v.name.clone(), HostTensor::new(shape, points))].into_iter().collect();
        let free_energy = backend::free_energy(model, params, &summed, &rows, device)?;
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
pub fn grid_log_z(model: &Model, plan: &Plan, params: &Tensors, low: f64, high: f64, resolution: usize, device: DeviceKind) -> Result<f64, String> {
    Ok(Grid::new(model, plan, params, low, high, resolution, device)?.log_z())
}
