//! Clamped sampling and exact Gaussian Gibbs against ground truth: with part
//! of a variable held, the chains must draw the rest from the exact
//! conditional (enumerated for small discrete models, in closed form for
//! Gaussians); a Gaussian–Bernoulli RBM's visible layer, drawn by exact
//! Gaussian Gibbs, must have the conditional mean and variance given `h`.
//! Seeds are fixed; every tolerance is derived in a comment.

use ebmc::backend::{Clamp, Sampler};
use ebmc::tensor::Tensors;
use ebmc::{Model, Params};
use std::process::Command;

fn setup(
    src: &str,
    params: &[(&str, Vec<f32>)],
) -> (ebmc::analysis::program::Model, ebmc::analysis::plan::Plan, Tensors) {
    let c =
        ebmc::compile(src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let (plans, _) = ebmc::plan(&c.program)
        .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let model = c.program.models.values().next().unwrap().clone();
    let mut values = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(&model).params, 0);
    for (name, data) in params {
        values.get_mut(*name).unwrap_or_else(|| panic!("no parameter {name}")).data = data.clone();
    }
    (model, plans[0].clone(), values)
}

/// Total variation between `p` and the histogram of `n` independent draws
/// from it, bounded at 5 standard deviations above its mean: each
/// |p̂_i - p_i| has mean sqrt(2 p_i (1 - p_i) / (π n)) and variance
/// p_i (1 - p_i) (1 - 2/π) / n (a binomial proportion, normal approximation),
/// and the states' deviations are close to independent, so
/// TV ≈ ½ Σ|p̂_i - p_i| has mean ½ Σ sqrt(2 p_i (1 - p_i) / (π n)) and sd
/// ½ sqrt(Σ p_i (1 - p_i) (1 - 2/π) / n).
fn tv_bound(p: &[f64], n: usize) -> f64 {
    let n = n as f64;
    let pi = std::f64::consts::PI;
    let mean: f64 = 0.5 * p.iter().map(|q| (2.0 * q * (1.0 - q) / (pi * n)).sqrt()).sum::<f64>();
    let sd = 0.5 * (p.iter().map(|q| q * (1.0 - q) * (1.0 - 2.0 / pi)).sum::<f64>() / n).sqrt();
    mean + 5.0 * sd
}

fn tv(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// exp(-E) over the given energies, normalised.
fn normalise(energies: &[f64]) -> Vec<f64> {
    let low = energies.iter().cloned().fold(f64::INFINITY, f64::min);
    let w: Vec<f64> = energies.iter().map(|e| (low - e).exp()).collect();
    let z: f64 = w.iter().sum();
    w.into_iter().map(|x| x / z).collect()
}

fn bits(s: usize, n: usize) -> Vec<f64> {
    (0..n).map(|j| ((s >> (n - 1 - j)) & 1) as f64).collect()
}

/// A tiny RBM with `v[0..2]` held at two rows, alternating across chains:
/// after 40 sweeps each chain's free units `(v2, v3, h)` are one draw from
/// p(v2, v3, h | v0, v1), which is enumerated over its 32 states. Each row's
/// 6,000 final states are independent draws (one per chain).
#[test]
fn a_clamped_slice_of_a_tiny_rbm_is_drawn_from_its_exact_conditional() {
    let w: Vec<f32> = vec![1.2, -0.8, 0.5, -1.0, 0.9, 0.3, 0.7, 0.4, -1.3, -0.2, -0.6, 1.1];
    let (b, c) = (vec![0.3f32, -0.5, 0.2, 0.1], vec![-0.4f32, 0.6, 0.0]);
    let model = Model::from_source(
        "model rbm { visible v : binary[4]; hidden h : binary[3];
           param W : real[4, 3]; param b : real[4]; param c : real[3];
           energy e = -(v @ W @ h) - b @ v - c @ h; }",
    )
    .unwrap();
    let mut params = Params::new();
    params.insert("W", w.clone(), &[4, 3]).unwrap();
    params.insert("b", b.clone(), &[4]).unwrap();
    params.insert("c", c.clone(), &[3]).unwrap();
    let chains = 12_000;
    let mut sampler = model.sampler(&params, chains, 5).unwrap();
    let rows = [[1.0f32, 0.0], [0.0, 1.0]];
    sampler.clamp_part("v[0..2]", &rows.concat()).unwrap();
    assert_eq!(sampler.clamped(), ["v[0..2]".to_string()]);
    let state = sampler.run(40);
    for (r, given) in rows.iter().enumerate() {
        let energy = |s: usize| {
            let free = bits(s, 5);
            let v = [f64::from(given[0]), f64::from(given[1]), free[0], free[1]];
            let h = &free[2..];
            let mut e = 0.0;
            for i in 0..4 {
                e -= f64::from(b[i]) * v[i];
                for j in 0..3 {
                    e -= v[i] * f64::from(w[i * 3 + j]) * h[j];
                }
            }
            e - (0..3).map(|j| f64::from(c[j]) * h[j]).sum::<f64>()
        };
        let exact = normalise(&(0..32).map(energy).collect::<Vec<_>>());
        let mut counts = vec![0.0; 32];
        let mut n = 0;
        for chain in (r..chains).step_by(2) {
            let v = state.row("v", chain).unwrap();
            assert_eq!(&v[..2], given, "chain {chain} let its clamped units move");
            let h = state.row("h", chain).unwrap();
            let s = [v[2], v[3], h[0], h[1], h[2]].iter().fold(0, |acc, &x| acc * 2 + x as usize);
            counts[s] += 1.0;
            n += 1;
        }
        let sampled: Vec<f64> = counts.iter().map(|k| k / n as f64).collect();
        let (d, bound) = (tv(&exact, &sampled), tv_bound(&exact, n));
        eprintln!("row {r}: TV {d:.4} (bound {bound:.4})");
        assert!(d < bound, "row {r}: TV {d:.4} exceeds {bound:.4}");
    }
    sampler.release();
    assert!(sampler.clamped().is_empty());
}

/// A 3x3 Ising model sampled by chromatic Gibbs with its first row of spins
/// held: the other 6 spins must follow p(s_rest | s_row), enumerated over
/// 64 states; 8,000 independent chains after 40 sweeps.
#[test]
fn a_clamped_row_of_an_ising_lattice_is_drawn_from_its_exact_conditional() {
    let field = vec![0.3f32, -0.2, 0.1, 0.0, 0.25, -0.3, 0.15, -0.1, 0.05];
    let (model, plan, values) = setup(
        "model ising { const A = grid(3, 3); visible s : spin[9]; param J : real; param field : real[9];
           energy e = -0.5 * J * (s @ A @ s) - field @ s; }",
        &[("J", vec![0.6]), ("field", field.clone())],
    );
    assert!(plan.to_text().contains("chromatic Gibbs, 2 colours"), "{}", plan.to_text());
    let chains = 8000;
    let mut sampler = Sampler::new(&model, &plan, &values, chains, 3, Default::default()).unwrap();
    let given = [1.0f32, -1.0, -1.0];
    let clamp = Clamp { var: "s".into(), elements: vec![0, 1, 2], values: given.repeat(chains) };
    sampler.set_clamps(&[clamp]).unwrap();
    for _ in 0..40 {
        sampler.sweep();
    }
    let spins = |s: usize| -> Vec<f64> {
        let mut all: Vec<f64> = given.iter().map(|&x| f64::from(x)).collect();
        all.extend(bits(s, 6).iter().map(|b| 2.0 * b - 1.0));
        all
    };
    let energy = |s: usize| {
        let x = spins(s);
        let mut e = -(0..9).map(|i| f64::from(field[i]) * x[i]).sum::<f64>();
        // Each edge of the open 3x3 grid once: 0.5 * J * s A s counts it twice.
        for i in 0..9 {
            let (r, c) = (i / 3, i % 3);
            if c < 2 {
                e -= 0.6 * x[i] * x[i + 1];
            }
            if r < 2 {
                e -= 0.6 * x[i] * x[i + 3];
            }
        }
        e
    };
    let exact = normalise(&(0..64).map(energy).collect::<Vec<_>>());
    let state = sampler.state();
    let mut counts = vec![0.0; 64];
    for chain in 0..chains {
        let s = &state["s"].data[chain * 9..(chain + 1) * 9];
        assert_eq!(&s[..3], given, "chain {chain} let its clamped spins move");
        counts[s[3..].iter().fold(0, |acc, &x| acc * 2 + usize::from(x > 0.0))] += 1.0;
    }
    let sampled: Vec<f64> = counts.iter().map(|k| k / chains as f64).collect();
    let (d, bound) = (tv(&exact, &sampled), tv_bound(&exact, chains));
    eprintln!("TV {d:.4} (bound {bound:.4})");
    assert!(d < bound, "TV {d:.4} exceeds {bound:.4}");
}

/// MALA on a correlated 2-D Gaussian (precision P = [[2, 0.6], [0.6, 1]],
/// mean (1, -2)) with x0 held at 1.5: x1 | x0 ~ N(-2 - 0.6 (1.5 - 1), 1),
/// i.e. mean -2.3 and variance 1 / P11 = 1. 4,000 independent chains after 60
/// sweeps of 10 steps: the sample mean has standard error 1/sqrt(4000) and
/// the sample variance sqrt(2/3999); both are checked at 5 of them.
#[test]
fn mala_with_a_clamped_unit_draws_the_other_from_its_conditional() {
    let (model, plan, values) = setup(
        "model g { visible x : real[2]; param mu : real[2]; param P : real[2, 2];
           energy e = 0.5 * ((x - mu) @ P @ (x - mu)); sample { x: mala(step: 0.3, steps: 10); } }",
        &[("mu", vec![1.0, -2.0]), ("P", vec![2.0, 0.6, 0.6, 1.0])],
    );
    let chains = 4000;
    let mut sampler = Sampler::new(&model, &plan, &values, chains, 8, Default::default()).unwrap();
    sampler.set_clamps(&[Clamp { var: "x".into(), elements: vec![0], values: vec![1.5; chains] }]).unwrap();
    for _ in 0..60 {
        sampler.sweep();
    }
    let x = &sampler.state()["x"];
    assert!(x.data.chunks(2).all(|p| p[0] == 1.5), "the clamped unit moved");
    let (mean, var) = mean_var(x.data.chunks(2).map(|p| f64::from(p[1])));
    let n = chains as f64;
    assert!((mean + 2.3).abs() < 5.0 / n.sqrt(), "mean {mean} vs -2.3");
    assert!((var - 1.0).abs() < 5.0 * (2.0 / (n - 1.0)).sqrt(), "variance {var} vs 1");
    let rate = sampler.acceptance().unwrap();
    assert!(rate > 0.5, "acceptance {rate}");
}

fn mean_var(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count() as f64;
    let mean = xs.clone().sum::<f64>() / n;
    (mean, xs.map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0))
}

const SCALED_GRBM: &str = "model grbm { visible v : real[3]; hidden h : binary[2];
    param W : real[3, 2]; param b : real[3]; param s : real[3];
    energy quadratic = sum(square(v - b) / (2 * square(s)));
    energy coupling = -((v / s) @ W @ h); }";

/// A GRBM with per-unit scales s: E = Σ (v_i - b_i)² / (2 s_i²) - (v/s) W h,
/// so v_i | h ~ N(b_i + s_i (W h)_i, s_i²). With h held at each of two rows,
/// 20,000 chains per row after one sweep are independent exact draws: the
/// sample mean of unit i has standard error s_i / sqrt(n) and its sample
/// variance s_i² sqrt(2 / (n - 1)) (Gaussian fourth moment); both checked at
/// 5 standard errors.
#[test]
fn exact_gaussian_gibbs_has_a_grbms_conditional_moments() {
    let (w, b, s) = (vec![0.8f32, -0.5, 0.3, 0.4, 0.6, -0.7], vec![0.2f32, -0.1, 0.5], vec![0.5f32, 1.0, 2.0]);
    let (model, plan, values) = setup(SCALED_GRBM, &[("W", w.clone()), ("b", b.clone()), ("s", s.clone())]);
    let text = plan.to_text();
    assert!(text.contains("v : real[3] (visible)\n    exact Gaussian Gibbs"), "{text}");
    for h in [[1.0f32, 0.0], [1.0, 1.0]] {
        let chains = 20_000;
        let mut sampler = Sampler::new(&model, &plan, &values, chains, 21, Default::default()).unwrap();
        sampler.set_clamps(&[Clamp { var: "h".into(), elements: vec![0, 1], values: h.repeat(chains) }]).unwrap();
        assert_eq!(sampler.held_whole(), ["h".to_string()]);
        sampler.sweep();
        let v = &sampler.state()["v"];
        let n = chains as f64;
        for i in 0..3 {
            let (mean, var) = mean_var(v.data.chunks(3).map(|r| f64::from(r[i])));
            let wh: f64 = (0..2).map(|j| f64::from(w[i * 2 + j]) * f64::from(h[j])).sum();
            let (si, want) = (f64::from(s[i]), f64::from(b[i]) + f64::from(s[i]) * wh);
            assert!((mean - want).abs() < 5.0 * si / n.sqrt(), "h {h:?}, v{i}: mean {mean} vs {want}");
            let sd = si * si * (2.0 / (n - 1.0)).sqrt();
            assert!((var - si * si).abs() < 5.0 * sd, "h {h:?}, v{i}: variance {var} vs {}", si * si);
        }
    }
}

/// Held at a slice, a GRBM's Gaussian visible units keep their values while
/// the others are drawn exactly: v0 fixed, v1 | h and v2 | h as above.
#[test]
fn exact_gaussian_gibbs_keeps_a_clamped_slice() {
    let (model, plan, values) =
        setup(SCALED_GRBM, &[("W", vec![0.8, -0.5, 0.3, 0.4, 0.6, -0.7]), ("b", vec![0.0; 3]), ("s", vec![1.0; 3])]);
    let mut sampler = Sampler::new(&model, &plan, &values, 50, 2, Default::default()).unwrap();
    sampler.set_clamps(&[Clamp { var: "v".into(), elements: vec![0], values: vec![-3.0; 50] }]).unwrap();
    assert!(sampler.held_whole().is_empty());
    for _ in 0..5 {
        sampler.sweep();
    }
    let v = &sampler.state()["v"];
    assert!(v.data.chunks(3).all(|r| r[0] == -3.0 && r[1] != r[2]), "{:?}", &v.data[..6]);
}

const BOXED_GRBM: &str = "model grbm { visible v : real[3] in [0, 1]; hidden h : binary[2];
    param W : real[3, 2]; param b : real[3];
    energy quadratic = 0.5 * sum(square(v - b));
    energy coupling = -(v @ W @ h); }";

/// The mean, variance and central fourth moment of N(μ, 1) truncated to
/// [0, 1], by the midpoint rule on 100,000 cells (smooth integrand, error
/// O(h²)), the density scaled by its value at the box's mode so that
/// nothing underflows in a far tail.
fn truncated_moments(mu: f64) -> (f64, f64, f64) {
    let peak = mu.clamp(0.0, 1.0);
    let n = 100_000;
    let cells: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let x = (i as f64 + 0.5) / n as f64;
            (x, (-0.5 * ((x - mu).powi(2) - (peak - mu).powi(2))).exp())
        })
        .collect();
    let w: f64 = cells.iter().map(|c| c.1).sum();
    let m = cells.iter().map(|(x, p)| p * x).sum::<f64>() / w;
    let central = |k: i32| cells.iter().map(|(x, p)| p * (x - m).powi(k)).sum::<f64>() / w;
    (m, central(2), central(4))
}

/// A GRBM whose visible layer is `in [0, 1]`: v_i | h is N(b_i + (W h)_i, 1)
/// truncated to [0, 1], drawn exactly. With h held, 20,000 chains after one
/// sweep are independent draws; unit 0's mean sits inside the box, unit 1's
/// 8 standard deviations below it and unit 2's 8 above (where an inverse
/// CDF in f32 would return the edge or NaN). The sample mean's standard
/// error is σ/√n and the sample variance's √((μ₄ − σ⁴)/n), from the exact
/// moments; both checked at 5 standard errors.
#[test]
fn truncated_gaussian_gibbs_has_a_boxed_grbms_conditional_moments() {
    let (w, b) = (vec![0.8f32, -0.5, 0.3, 0.4, 0.6, -0.7], vec![-0.5f32, -8.3, 8.4]);
    let (model, plan, values) = setup(BOXED_GRBM, &[("W", w.clone()), ("b", b.clone())]);
    let text = plan.to_text();
    assert!(text.contains("v : real[3] in [0, 1] (visible)\n    exact truncated-Gaussian Gibbs: "), "{text}");
    assert!(text.contains("normal(mean: W @ h + b, precision: 1) truncated to [0, 1], unit by unit"), "{text}");
    let h = [1.0f32, 0.0];
    let chains = 20_000;
    let mut sampler = Sampler::new(&model, &plan, &values, chains, 5, Default::default()).unwrap();
    sampler.set_clamps(&[Clamp { var: "h".into(), elements: vec![0, 1], values: h.repeat(chains) }]).unwrap();
    sampler.sweep();
    let v = &sampler.state()["v"];
    let n = chains as f64;
    for i in 0..3 {
        let xs = v.data.chunks(3).map(|r| f64::from(r[i]));
        assert!(xs.clone().all(|x| x > 0.0 && x < 1.0), "v{i} left the open box");
        let (mean, var) = mean_var(xs);
        let mu = f64::from(b[i]) + f64::from(w[i * 2]);
        let (want_m, want_v, mu4) = truncated_moments(mu);
        assert!((mean - want_m).abs() < 5.0 * (want_v / n).sqrt(), "v{i}: mean {mean} vs {want_m}");
        let se = ((mu4 - want_v * want_v) / n).sqrt();
        assert!((var - want_v).abs() < 5.0 * se, "v{i}: variance {var} vs {want_v}");
    }
}

const MRF: &str = "model mrf { visible x : real[4]; param m : real[4]; param P : real[4, 4];
    energy e = 0.5 * ((x - m) @ P @ (x - m)); }";

const MRF_P: [f64; 16] = [2.0, -0.5, 0.0, 0.3, -0.5, 1.5, 0.4, 0.0, 0.0, 0.4, 1.2, -0.3, 0.3, 0.0, -0.3, 1.0];
const MRF_M: [f64; 4] = [1.0, -2.0, 0.5, 0.0];

/// The inverse of a small positive-definite matrix, by Gauss-Jordan elimination.
fn inverse(a: &[f64], n: usize) -> Vec<f64> {
    let mut m: Vec<f64> = a.to_vec();
    let mut inv: Vec<f64> = (0..n * n).map(|k| f64::from(u8::from(k / n == k % n))).collect();
    for c in 0..n {
        let p = m[c * n + c];
        for k in 0..n {
            m[c * n + k] /= p;
            inv[c * n + k] /= p;
        }
        for r in (0..n).filter(|&r| r != c) {
            let f = m[r * n + c];
            for k in 0..n {
                m[r * n + k] -= f * m[c * n + k];
                inv[r * n + k] -= f * inv[c * n + k];
            }
        }
    }
    inv
}

/// A 4-D Gaussian MRF, `E = ½ (x − m)ᵀ P (x − m)` with a coupled `P`: the
/// planner draws `x` exactly through a Cholesky factor of `P`, so 20,000
/// chains after one sweep are independent draws of N(m, P⁻¹). Each sample
/// mean has standard error √(Σᵢᵢ/n) and each sample covariance √((ΣᵢᵢΣⱼⱼ +
/// Σᵢⱼ²)/n) (Gaussian fourth moments); all checked at 5 standard errors.
#[test]
fn full_precision_gaussian_gibbs_has_a_gaussian_mrfs_covariance() {
    let params = [("m", MRF_M.map(|v| v as f32).to_vec()), ("P", MRF_P.map(|v| v as f32).to_vec())];
    let (model, plan, values) = setup(MRF, &params);
    let text = plan.to_text();
    assert!(text.contains("x : real[4] (visible)\n    exact Gaussian Gibbs, full precision: "), "{text}");
    assert!(text.contains("p(x | rest) = normal(mean: x - P⁻¹ ∂E/∂x, precision: P)"), "{text}");
    let chains = 20_000;
    let mut sampler = Sampler::new(&model, &plan, &values, chains, 13, Default::default()).unwrap();
    sampler.sweep();
    let x = &sampler.state()["x"];
    let n = chains as f64;
    let sigma = inverse(&MRF_P, 4);
    let mean: Vec<f64> = (0..4).map(|i| x.data.chunks(4).map(|r| f64::from(r[i])).sum::<f64>() / n).collect();
    for i in 0..4 {
        assert!((mean[i] - MRF_M[i]).abs() < 5.0 * (sigma[i * 5] / n).sqrt(), "mean {i}: {} vs {}", mean[i], MRF_M[i]);
        for j in 0..4 {
            let cov = x.data.chunks(4).map(|r| (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j])).sum::<f64>()
                / (n - 1.0);
            let want = sigma[i * 4 + j];
            let se = ((sigma[i * 5] * sigma[j * 5] + want * want) / n).sqrt();
            assert!((cov - want).abs() < 5.0 * se, "covariance ({i}, {j}): {cov} vs {want}");
        }
    }
}

/// With x₀ held, the other units of the MRF are drawn from their exact
/// conditional: precision P_FF, mean m_F − P_FF⁻¹ P_F0 (x₀ − m₀); each
/// sample mean checked at 5 standard errors √((P_FF⁻¹)ᵢᵢ / n).
#[test]
fn full_precision_gaussian_gibbs_draws_the_rest_given_a_clamped_unit() {
    let params = [("m", MRF_M.map(|v| v as f32).to_vec()), ("P", MRF_P.map(|v| v as f32).to_vec())];
    let (model, plan, values) = setup(MRF, &params);
    let chains = 20_000;
    let mut sampler = Sampler::new(&model, &plan, &values, chains, 17, Default::default()).unwrap();
    sampler.set_clamps(&[Clamp { var: "x".into(), elements: vec![0], values: vec![1.5; chains] }]).unwrap();
    sampler.sweep();
    let x = &sampler.state()["x"];
    assert!(x.data.chunks(4).all(|r| r[0] == 1.5), "the clamped unit moved");
    let p_ff: Vec<f64> = (1..4).flat_map(|i| (1..4).map(move |j| MRF_P[i * 4 + j])).collect();
    let cov = inverse(&p_ff, 3);
    let n = chains as f64;
    for i in 0..3 {
        let shift: f64 = (0..3).map(|j| cov[i * 3 + j] * MRF_P[(j + 1) * 4] * (1.5 - MRF_M[0])).sum();
        let want = MRF_M[i + 1] - shift;
        let mean = x.data.chunks(4).map(|r| f64::from(r[i + 1])).sum::<f64>() / n;
        assert!((mean - want).abs() < 5.0 * (cov[i * 4] / n).sqrt(), "x{}: mean {mean} vs {want}", i + 1);
    }
}

/// A precision that is not positive definite is an error naming the
/// variable when the sampler is made, not NaN chains.
#[test]
fn a_precision_that_is_not_positive_definite_is_an_error() {
    let mut p = MRF_P;
    p[1] = 3.0;
    p[4] = 3.0;
    let params = [("m", vec![0.0; 4]), ("P", p.map(|v| v as f32).to_vec())];
    let (model, plan, values) = setup(MRF, &params);
    let err = Sampler::new(&model, &plan, &values, 10, 1, Default::default()).err().expect("an error");
    assert!(err.contains("the precision of `x`") && err.contains("not positive definite"), "{err}");
}

fn plan_text(src: &str) -> String {
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap_or_else(|d| panic!("{d:?}"));
    plans[0].to_text()
}

#[test]
fn the_planner_chooses_exact_gaussian_gibbs_only_where_the_conditional_is_gaussian() {
    let grbm = plan_text(&std::fs::read_to_string("models/grbm.ebm").unwrap());
    assert!(grbm.contains("v : real[64] (visible)\n    exact Gaussian Gibbs: "), "{grbm}");
    assert!(grbm.contains("p(v | rest) = normal(mean: W @ h + b, precision: 1), unit by unit"), "{grbm}");
    // A learned full precision couples the units: drawn through its Cholesky factor.
    let full = "model g { visible x : real[2]; param mu : real[2]; param P : real[2, 2];
        energy e = 0.5 * ((x - mu) @ P @ (x - mu)); }";
    assert!(plan_text(full).contains("exact Gaussian Gibbs, full precision"), "{}", plan_text(full));
    // A precision matrix that depends on another variable differs per chain: Langevin, and the plan says why.
    let per_chain = "model g { visible x : real[2]; hidden h : binary; param P : real[2, 2];
        energy e = 0.5 * (x @ P @ x) * (1 + h); }";
    let text = plan_text(per_chain);
    assert!(text.contains("Langevin") && text.contains("its precision matrix depends on h"), "{text}");
    // A bounded variable's conditional is the normal truncated to its box.
    let bounded = "model g { visible x : real[2] in [0, 1]; energy e = 0.5 * sum(square(x)); }";
    assert!(plan_text(bounded).contains("exact truncated-Gaussian Gibbs"), "{}", plan_text(bounded));
    // A bounded variable whose energy is not quadratic keeps Langevin's reflected moves.
    let boxed = "model g { visible x : real[2] in [0, 1]; energy e = sum(x ^ 4); }";
    assert!(plan_text(boxed).contains("Langevin") && plan_text(boxed).contains("reflected"), "{}", plan_text(boxed));
    // A quartic term is not a Gaussian.
    let quartic = "model g { visible x : real[2]; energy e = 0.5 * sum(square(x)) + 0.1 * sum(x ^ 4); }";
    assert!(plan_text(quartic).contains("Langevin"), "{}", plan_text(quartic));
    // A precision that may be negative is not proved positive by its form: its factor checks it at run time.
    let signed = "model g { visible x : real[2]; param a : real = 1; energy e = a * sum(square(x)); }";
    assert!(plan_text(signed).contains("exact Gaussian Gibbs, full precision"), "{}", plan_text(signed));
    // An isotropic learned precision by `exp`, with its mean.
    let iso = "model g { visible x : real[2]; param z : real; param m : real[2];
        energy e = 0.5 * exp(z) * sum(square(x - m)); }";
    let text = plan_text(iso);
    assert!(text.contains("exact Gaussian Gibbs") && text.contains("precision: exp(z)"), "{text}");
    // The sample block's kernel wins; `gibbs` is accepted where the conditional is Gaussian.
    let asked = "model g { visible x : real[2]; energy e = 0.5 * sum(square(x)); sample { x: langevin(step: 0.1); } }";
    assert!(plan_text(asked).contains("Langevin, step 0.1"), "{}", plan_text(asked));
    let gibbs = "model g { visible x : real[2]; energy e = 0.5 * sum(square(x)); sample { x: gibbs; } }";
    assert!(plan_text(gibbs).contains("exact Gaussian Gibbs, as the sample block asks"), "{}", plan_text(gibbs));
    let refused =
        "model g { visible x : real[2]; energy e = 0.5 * sum(square(x)) + 0.1 * sum(x ^ 4); sample { x: gibbs; } }";
    let err = ebmc::plan(&ebmc::compile(refused).unwrap().program).unwrap_err();
    assert!(err.iter().any(|d| d.code == "E0404"), "{err:?}");
}

fn ebmc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ebmc")).args(args).output().expect("ebmc runs")
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ebmc-clamped-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const RBM: &str = "model rbm { visible v : binary[6]; hidden h : binary[3]; param W : real[6, 3] = normal(0, 1);
    energy e = -(v @ W @ h); }";

#[test]
fn sample_given_holds_the_rows_of_a_file_and_writes_them_back() {
    let dir = tmp("ok");
    let model = dir.join("rbm.ebm");
    std::fs::write(&model, RBM).unwrap();
    let rows = dir.join("rows.csv");
    std::fs::write(&rows, "1,0,1\n0,1,1\n").unwrap();
    let out = dir.join("samples.csv");
    let given = format!("v[0..3]={}", rows.display());
    let run = ebmc(&[
        "sample",
        model.to_str().unwrap(),
        "--chains",
        "4",
        "--steps",
        "5",
        "--given",
        &given,
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("v[0..3] held at the rows of"), "{stdout}");
    let written = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = written.lines().skip(1).collect();
    assert_eq!(lines.len(), 4);
    for (i, line) in lines.iter().enumerate() {
        let want = if i % 2 == 0 { "1,0,1" } else { "0,1,1" };
        assert!(line.starts_with(want), "chain {i}: {line}");
    }
}

#[test]
fn bad_given_input_is_an_error_naming_the_file_row_and_column() {
    let dir = tmp("bad");
    let model = dir.join("rbm.ebm");
    std::fs::write(&model, RBM).unwrap();
    let m = model.to_str().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let run = |given: String| {
        let o = ebmc(&["sample", m, "--chains", "2", "--steps", "1", "--given", &given]);
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let ok = file("ok.csv", "1,0\n");
    let (code, err) = run(format!("z[0..2]={ok}"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("E0902") && err.contains("`z` is not a variable"), "{err}");
    let (code, err) = run(format!("v[4..8]={ok}"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("past the end of an axis of 6 units"), "{err}");
    let wide = file("wide.csv", "1,0\n1,0,1\n");
    let (code, err) = run(format!("v[0..2]={wide}"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("E0904") && err.contains(&format!("{wide}:2: 3 columns, expected 2")), "{err}");
    let domain = file("domain.csv", "1,0\n0,0.5\n");
    let (code, err) = run(format!("v[0..2]={domain}"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{domain}:2:2: 0.5 is not a value of `v[0..2]`")), "{err}");
    let (code, err) = run("v[0..2]".to_string());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("PART=FILE"), "{err}");
    let (code, err) = run(format!("v[0..2]={}", dir.join("missing.csv").display()));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.csv"), "{err}");
}

#[test]
fn the_library_refuses_bad_parts_and_values_with_e0602() {
    let model = Model::from_source(RBM).unwrap();
    let mut sampler = model.sampler(&model.init_params(0), 4, 0).unwrap();
    for (part, values) in
        [("z", vec![1.0]), ("v[0..7]", vec![1.0; 7]), ("v[0..2]", vec![1.0; 3]), ("v[0..2]", vec![0.5, 1.0])]
    {
        let err = sampler.clamp_part(part, &values).unwrap_err();
        assert_eq!(err.code(), "E0602", "{part}: {err}");
    }
    assert!(sampler.clamped().is_empty());
}
