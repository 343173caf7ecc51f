//! `x: reparam(z)`: Langevin in a Gaussian decoder's (z, ε) space, checked
//! against exact marginals. With no other term the samples of `x` follow the
//! linear-Gaussian model's marginal; with a tilt `rest(x)` they follow
//! p(x) e^{−rest(x)}, integrated on a grid.

use ebmc::{Model, Params, Rows};

/// The sample mean and covariance of `n` rows of `d` values.
fn moments(data: &[f32], d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = data.len() / d;
    let mean: Vec<f64> = (0..d).map(|j| (0..n).map(|i| f64::from(data[i * d + j])).sum::<f64>() / n as f64).collect();
    let cov = (0..d)
        .map(|a| {
            (0..d)
                .map(|b| {
                    (0..n)
                        .map(|i| (f64::from(data[i * d + a]) - mean[a]) * (f64::from(data[i * d + b]) - mean[b]))
                        .sum::<f64>()
                        / (n - 1) as f64
                })
                .collect()
        })
        .collect();
    (mean, cov)
}

const LINEAR: &str = r#"
model vae {
    visible x : real[2];
    hidden z : real[2];
    param W : real[2, 2];
    param b : real[2];
    param lp : real;

    energy prior = 0.5 * sum(square(z));
    energy recon = 0.5 * exp(lp) * sum(square(x - (z @ W + b)));

    sample {
        x: reparam(z, step: 0.05);
    }
}
"#;

#[test]
fn with_no_other_term_a_linear_decoder_samples_its_gaussian_marginal() {
    let model = Model::from_source(LINEAR).unwrap();
    let mut params = Params::new();
    params.insert("W", vec![1.0, 0.5, 0.0, 0.8], &[2, 2]).unwrap();
    params.insert("b", vec![1.0, -1.0], &[2]).unwrap();
    params.insert("lp", vec![4.0f32.ln()], &[]).unwrap();
    let chains = 4000;
    let mut sampler = model.sampler(&params, chains, 7).unwrap();
    // Every chain starts far from the model's mass: x = 0, z = (3, 3).
    let start = Rows::new()
        .with("x", vec![0.0; chains * 2], &[chains, 2])
        .unwrap()
        .with("z", vec![3.0; chains * 2], &[chains, 2])
        .unwrap();
    sampler.set_state(&start).unwrap();
    let rows = sampler.run(300);
    let (mean, cov) = moments(rows.get("x").unwrap().0, 2);
    // x = z W + b + ε/2 with z, ε ~ N(0, I): mean b, covariance WᵀW + I/4. Langevin
    // with step h on a standard normal keeps the variance 1/(1 − h/2), in z and ε
    // alike, so x's covariance is that factor times the exact one (the start is
    // forgotten: 0.95^300 of it is left).
    let inflate = 1.0 / (1.0 - 0.05 / 2.0);
    eprintln!(
        "linear decoder: mean {mean:?}, covariance {cov:?}, expected mean [1, -1], covariance {inflate:.4} x [[1.25, 0.5], [0.5, 1.14]]"
    );
    let exact = [[1.25, 0.5], [0.5, 1.14]];
    let n = chains as f64;
    for a in 0..2 {
        let se = (inflate * exact[a][a] / n).sqrt();
        assert!((mean[a] - [1.0, -1.0][a]).abs() < 4.0 * se, "mean {mean:?}");
        for b in 0..2 {
            let want = inflate * exact[a][b];
            let se = ((inflate * exact[a][a] * inflate * exact[b][b] + want * want) / n).sqrt();
            assert!((cov[a][b] - want).abs() < 4.0 * se, "cov[{a}][{b}] {} vs {want} (se {se})", cov[a][b]);
        }
    }
}

const TILTED: &str = r#"
model vaebm {
    visible x : real;
    hidden z : real;

    energy prior = 0.5 * square(z);
    energy recon = 2 * square(x - 1.5 * z);
    energy rest = softplus(3 * x);

    sample {
        x: reparam(z, step: 0.01);
    }
}
"#;

#[test]
fn with_a_tilt_the_samples_follow_the_tilted_marginal_on_a_grid() {
    let model = Model::from_source(TILTED).unwrap();
    let plan = model.plan().to_text();
    assert!(plan.contains("Langevin in (z, ε) with x = mean + scale ⊙ ε"), "{plan}");
    let chains = 4000;
    let mut sampler = model.sampler(&Params::new(), chains, 11).unwrap();
    let rows = sampler.run(800);
    let (mean, cov) = moments(rows.get("x").unwrap().0, 1);
    // p(x) ∝ N(x; 0, 1.5² + 1/4) e^{−softplus(3x)}, integrated on a grid.
    let var0 = 1.5f64 * 1.5 + 0.25;
    let softplus = |t: f64| if t > 30.0 { t } else { t.exp().ln_1p() };
    let (lo, hi, k) = (-12.0, 12.0, 24_001);
    let dx = (hi - lo) / (k - 1) as f64;
    let (mut z, mut m1, mut m2) = (0.0, 0.0, 0.0);
    for i in 0..k {
        let x = lo + i as f64 * dx;
        let p = (-0.5 * x * x / var0 - softplus(3.0 * x)).exp();
        z += p;
        m1 += p * x;
        m2 += p * x * x;
    }
    let (want_mean, want_var) = (m1 / z, m2 / z - (m1 / z).powi(2));
    eprintln!("tilted: mean {:.4} vs grid {want_mean:.4}, variance {:.4} vs grid {want_var:.4}", mean[0], cov[0][0]);
    let n = chains as f64;
    // Sampling error of 4000 chains after 800 sweeps of step 0.01 (0.99^800 of
    // the start left), and Langevin's O(step) bias: about step/2 of the
    // variance in the near-Gaussian (z, ε) space, allowed twice over.
    let se_mean = (want_var / n).sqrt();
    let se_var = want_var * (2.0 / n).sqrt();
    assert!((mean[0] - want_mean).abs() < 4.0 * se_mean + 0.01 * want_var.sqrt(), "mean {} vs {want_mean}", mean[0]);
    assert!((cov[0][0] - want_var).abs() < 4.0 * se_var + 0.01 * want_var, "var {} vs {want_var}", cov[0][0]);
    // The tilt moves the mean well away from the decoder's own 0.
    assert!(want_mean.abs() > 10.0 * se_mean, "tilted mean {want_mean}");
}
