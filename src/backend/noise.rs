//! Noise for the objectives that perturb or contrast the data: standard
//! normal draws (DSM, SSM, CNCE) and NCE's fitted noise distribution.

/// NCE's noise: mean, Cholesky factor of the covariance (row-major), box.
#[derive(Clone)]
pub(super) struct Noise {
    pub(super) mean: Vec<f64>,
    pub(super) chol: Vec<f64>,
    pub(super) low: Vec<f64>,
    pub(super) high: Vec<f64>,
}

impl Noise {
    /// Log-density of NCE's noise at `x`.
    pub(super) fn log_density(&self, x: &[f64], gaussian: bool) -> f64 {
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

    /// One point drawn from the noise.
    pub(super) fn draw(&self, rng: &mut rand::rngs::SmallRng, gaussian: bool) -> Vec<f64> {
        let d = self.mean.len();
        if gaussian {
            let z: Vec<f64> = normals(rng, d).into_iter().map(f64::from).collect();
            (0..d).map(|i| self.mean[i] + (0..=i).map(|j| self.chol[i * d + j] * z[j]).sum::<f64>()).collect()
        } else {
            (0..d)
                .map(|i| self.low[i] + (self.high[i] - self.low[i]) * f64::from(rand::Rng::r#gen::<f32>(rng)))
                .collect()
        }
    }

    /// A Gaussian with the data's mean and covariance, and the data's box widened by a tenth.
    pub(super) fn fit(rows: &[Vec<f64>]) -> Noise {
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

pub(super) fn normals(rng: &mut rand::rngs::SmallRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rand_distr::Distribution::<f32>::sample(&rand_distr::StandardNormal, rng)).collect()
}
