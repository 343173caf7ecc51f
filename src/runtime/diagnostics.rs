//! Whether a sampling run's chains mixed: the rank-normalised split R̂ and
//! the bulk effective sample size of Vehtari, Gelman, Simpson, Carpenter and
//! Bürkner (2021), computed as ArviZ 0.23 does (`az.rhat(method="rank")`,
//! its default, and `az.ess(method="bulk")`, its default), over
//! `chains × draws` of a scalar statistic of each sampled variable.
//!
//! The statistics are each variable's mean over its units and, for a
//! variable of at most `UNITS_EACH` units, each unit too. `Recorder` keeps
//! them while a run goes: the first `MAX_CHAINS` chains, at most `MAX_DRAWS`
//! draws each (every `stride`-th sweep after burn-in), so memory stays
//! bounded whatever the run's length. Pure: no IO.

use crate::tensor::Tensors;
use serde::Serialize;

/// R̂ above this says the chains disagree (Vehtari et al. 2021; ArviZ's threshold).
pub const RHAT_MAX: f64 = 1.01;
/// Bulk ESS below this is too few for R̂ and the means to be trusted
/// (Vehtari et al. 2021 ask for 100 per chain over 4 chains).
pub const ESS_MIN: f64 = 400.0;
/// Chains the diagnostics follow, from the first.
pub const MAX_CHAINS: usize = 64;
/// Draws kept per chain at most.
pub const MAX_DRAWS: usize = 1000;
/// A variable of at most this many units has each unit summarised too.
pub const UNITS_EACH: usize = 8;

/// A summary statistic's draws: `chains[c][d]` after the `d`-th recorded sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The variable summarised.
    pub var: String,
    /// `None`: the mean of its units; `Some(i)`: unit `i` (row-major).
    pub unit: Option<usize>,
    pub chains: Vec<Vec<f64>>,
}

/// The statistics of a run, recorded every `stride` sweeps after burn-in.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorder {
    /// Sweeps between draws.
    pub stride: usize,
    /// One per statistic, in variable order; empty before the first draw.
    pub series: Vec<Series>,
}

impl Recorder {
    /// A recorder for `steps` sweeps after burn-in: at most `MAX_DRAWS` draws.
    pub fn new(steps: usize) -> Recorder {
        Recorder { stride: steps.div_ceil(MAX_DRAWS).max(1), series: Vec::new() }
    }

    /// Whether the sweep `after` sweeps past burn-in (from 1) is a draw.
    pub fn wants(&self, after: usize) -> bool {
        after > 0 && after.is_multiple_of(self.stride)
    }

    /// Adds one draw of every statistic of `state` (`[chains, ...shape]` per variable).
    pub fn record(&mut self, state: &Tensors) {
        let mut k = 0;
        for (var, t) in state {
            let chains = t.shape.first().copied().unwrap_or(0).min(MAX_CHAINS);
            let units: usize = t.shape[1..].iter().product();
            if units == 0 || chains == 0 {
                continue;
            }
            let each = if units <= UNITS_EACH { units } else { 0 };
            for stat in std::iter::once(None).chain((0..each).map(Some)) {
                if self.series.len() == k {
                    self.series.push(Series { var: var.clone(), unit: stat, chains: vec![Vec::new(); chains] });
                }
                for (c, draws) in self.series[k].chains.iter_mut().enumerate() {
                    let row = &t.data[c * units..(c + 1) * units];
                    draws.push(match stat {
                        None => row.iter().map(|&x| f64::from(x)).sum::<f64>() / units as f64,
                        Some(i) => f64::from(row[i]),
                    });
                }
                k += 1;
            }
        }
    }

    /// R̂ and bulk ESS of every statistic, and whether they all say mixed.
    pub fn summarise(&self) -> Mixing {
        let rows: Vec<MixingRow> = self
            .series
            .iter()
            .map(|s| {
                let (rhat, ess_bulk) = (rhat(&s.chains), ess_bulk(&s.chains));
                // A NaN says too few chains or draws to judge (or a statistic constant
                // over every chain, which agrees with itself); an infinite R̂ is chains
                // each stuck at its own value.
                let mixed = !(rhat > RHAT_MAX || ess_bulk < ESS_MIN);
                MixingRow {
                    variable: s.var.clone(),
                    unit: s.unit,
                    rhat: finite(rhat),
                    ess_bulk: finite(ess_bulk),
                    mixed,
                }
            })
            .collect();
        let first = self.series.first();
        Mixing {
            chains: first.map_or(0, |s| s.chains.len()),
            draws: first.and_then(|s| s.chains.first()).map_or(0, Vec::len),
            every: self.stride,
            mixed: rows.iter().all(|r| r.mixed),
            statistics: rows,
        }
    }
}

/// `x` when finite (JSON has no NaN or infinity).
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// What `ebmc sample` reports of its chains' mixing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mixing {
    /// Chains followed (the first ones).
    pub chains: usize,
    /// Draws per chain.
    pub draws: usize,
    /// Sweeps between draws.
    pub every: usize,
    /// No statistic has R̂ > `RHAT_MAX` or bulk ESS < `ESS_MIN`.
    pub mixed: bool,
    pub statistics: Vec<MixingRow>,
}

/// One statistic's diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixingRow {
    pub variable: String,
    /// `None`: the mean of the variable's units; `Some(i)`: unit `i`.
    pub unit: Option<usize>,
    /// Rank-normalised split R̂; `None` when it is not a number (fewer than
    /// 2 chains or 4 draws, a constant statistic) or infinite (chains stuck apart).
    pub rhat: Option<f64>,
    /// Bulk ESS; `None` with fewer than 4 draws.
    pub ess_bulk: Option<f64>,
    pub mixed: bool,
}

/// Rank-normalised split R̂ (ArviZ `_rhat_rank`): the larger of the split
/// R̂ of the rank-normalised draws and of the rank-normalised distances from
/// the median. NaN with fewer than 2 chains or 4 draws.
pub fn rhat(chains: &[Vec<f64>]) -> f64 {
    let draws = chains.first().map_or(0, Vec::len);
    if chains.len() < 2 || draws < 4 || chains.iter().any(|c| c.len() != draws) {
        return f64::NAN;
    }
    let split = split_chains(chains);
    let bulk = rhat_plain(&z_scale(&split));
    let median = median(split.iter().flatten().copied().collect());
    let folded: Vec<Vec<f64>> = split.iter().map(|c| c.iter().map(|x| (x - median).abs()).collect()).collect();
    let tail = rhat_plain(&z_scale(&folded));
    // Python's `max(bulk, tail)`: `tail` only when it compares greater (a NaN tail keeps `bulk`).
    if tail > bulk { tail } else { bulk }
}

/// Bulk ESS (ArviZ `_ess_bulk`): the ESS of the rank-normalised split
/// chains. NaN with fewer than 4 draws.
pub fn ess_bulk(chains: &[Vec<f64>]) -> f64 {
    let draws = chains.first().map_or(0, Vec::len);
    if chains.is_empty() || draws < 4 || chains.iter().any(|c| c.len() != draws) {
        return f64::NAN;
    }
    ess(&z_scale(&split_chains(chains)))
}

/// Each chain's first and last halves as two chains (the middle draw of an odd count left out).
fn split_chains(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = chains[0].len();
    let half = n / 2;
    let firsts = chains.iter().map(|c| c[..half].to_vec());
    let lasts = chains.iter().map(|c| c[n - half..].to_vec());
    firsts.chain(lasts).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Ranks over all draws (ties averaged), Blom's offset 3/8, through the
/// normal quantile: `Φ⁻¹((r - 3/8) / (S + 1/4))`.
fn z_scale(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let flat: Vec<f64> = chains.iter().flatten().copied().collect();
    let size = flat.len();
    let mut order: Vec<usize> = (0..size).collect();
    order.sort_by(|&a, &b| flat[a].total_cmp(&flat[b]));
    let mut rank = vec![0.0; size];
    let mut i = 0;
    while i < size {
        let mut j = i;
        while j + 1 < size && flat[order[j + 1]] == flat[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 share their mean.
        let shared = (i + j + 2) as f64 / 2.0;
        for &k in &order[i..=j] {
            rank[k] = shared;
        }
        i = j + 1;
    }
    let c = 3.0 / 8.0;
    let z: Vec<f64> = rank.iter().map(|r| normal_quantile((r - c) / (size as f64 - 2.0 * c + 1.0))).collect();
    z.chunks(chains[0].len().max(1)).map(<[f64]>::to_vec).collect()
}

/// Sample variance with `n - 1`.
fn var1(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Gelman–Rubin's R̂ of equal chains (ArviZ `_rhat`): √((B/W + n − 1)/n).
fn rhat_plain(chains: &[Vec<f64>]) -> f64 {
    let n = chains[0].len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let between = n * var1(&means);
    let within = mean(&chains.iter().map(|c| var1(c)).collect::<Vec<_>>());
    ((between / within + n - 1.0) / n).sqrt()
}

/// ESS with Geyer's initial positive then monotone sequence (ArviZ `_ess`).
fn ess(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains[0].len();
    let (lo, hi) = chains.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    // numpy's float resolution, 1e-15: a constant statistic counts every draw.
    if hi - lo < 1e-15 {
        return (m * n) as f64;
    }
    let centred: Vec<Vec<f64>> = chains
        .iter()
        .map(|c| {
            let mu = mean(c);
            c.iter().map(|x| x - mu).collect()
        })
        .collect();
    // Mean over chains of the biased autocovariance at a lag, computed as the
    // sequence asks for it (it usually stops after a few lags).
    let mut acov: Vec<f64> = Vec::new();
    let mut at = |lag: usize| -> f64 {
        while acov.len() <= lag {
            let t = acov.len();
            let s: f64 =
                centred.iter().map(|c| (0..n - t).map(|i| c[i] * c[i + t]).sum::<f64>() / n as f64).sum::<f64>();
            acov.push(s / m as f64);
        }
        acov[lag]
    };
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let nf = n as f64;
    let mean_var = at(0) * nf / (nf - 1.0);
    let mut var_plus = mean_var * (nf - 1.0) / nf;
    if m > 1 {
        var_plus += var1(&means);
    }
    let mut rho = vec![0.0; n];
    let mut even = 1.0;
    rho[0] = even;
    let mut odd = 1.0 - (mean_var - at(1)) / var_plus;
    rho[1] = odd;
    let mut t = 1;
    while t + 3 < n && even + odd > 0.0 {
        even = 1.0 - (mean_var - at(t + 1)) / var_plus;
        odd = 1.0 - (mean_var - at(t + 2)) / var_plus;
        if even + odd >= 0.0 {
            rho[t + 1] = even;
            rho[t + 2] = odd;
        }
        t += 2;
    }
    // `t - 2` may be -1: no lag past the first was summed.
    let max_t = t as isize - 2;
    if even > 0.0 {
        rho[(max_t + 1) as usize] = even;
    }
    let mut t = 1;
    while t as isize <= max_t - 2 {
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t] {
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0;
            rho[t + 2] = rho[t + 1];
        }
        t += 2;
    }
    let total = (m * n) as f64;
    let upto = (max_t + 1) as usize;
    let tau = -1.0 + 2.0 * rho[..upto].iter().sum::<f64>() + rho[upto..(upto + 1).min(n)].iter().sum::<f64>();
    let tau = tau.max(1.0 / total.log10());
    if rho.iter().any(|r| r.is_nan()) { f64::NAN } else { total / tau }
}

/// Φ⁻¹(p), the standard normal quantile: Wichura's AS241 (PPND16), about 1e-16 relative.
// The coefficients as Wichura published them, so they can be checked against the paper.
#[allow(clippy::excessive_precision)]
fn normal_quantile(p: f64) -> f64 {
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q
            * (((((((2509.0809287301226727 * r + 33430.575583588128105) * r + 67265.770927008700853) * r
                + 45921.953931549871457)
                * r
                + 13731.693765509461125)
                * r
                + 1971.5909503065514427)
                * r
                + 133.14166789178437745)
                * r
                + 3.387132872796366608)
            / (((((((5226.495278852545925 * r + 28729.085735721942674) * r + 39307.89580009271061) * r
                + 21213.794301586595867)
                * r
                + 5394.1960214247511077)
                * r
                + 687.1870074920579083)
                * r
                + 42.313330701600911252)
                * r
                + 1.0);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    if tail <= 0.0 {
        return if q < 0.0 { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    let mut r = (-tail.ln()).sqrt();
    let value = if r <= 5.0 {
        r -= 1.6;
        (((((((7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r + 0.24178072517745061177) * r
            + 1.27045825245236838258)
            * r
            + 3.64784832476320460504)
            * r
            + 5.7694972214606914055)
            * r
            + 4.6303378461565452959)
            * r
            + 1.42343711074968357734)
            / (((((((1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r + 0.0151986665636164571966) * r
                + 0.14810397642748007459)
                * r
                + 0.68976733498510000455)
                * r
                + 1.6763848301838038494)
                * r
                + 2.05319162663775882187)
                * r
                + 1.0)
    } else {
        r -= 5.0;
        (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r + 0.0012426609473880784386) * r
            + 0.026532189526576123093)
            * r
            + 0.29656057182850489123)
            * r
            + 1.7848265399172913358)
            * r
            + 5.4637849111641143699)
            * r
            + 6.6579046435011037772)
            / (((((((2.04426310338993978564e-15 * r + 1.4215117583164458887e-7) * r + 1.8463183175100546818e-5) * r
                + 7.868691311456132591e-4)
                * r
                + 0.0148753612908506148525)
                * r
                + 0.13692988092273580531)
                * r
                + 0.59983220655588793769)
                * r
                + 1.0)
    };
    if q < 0.0 { -value } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::HostTensor;

    /// `m` chains of `n` draws of an AR(1), `x ← φx + e` with `e` uniform on
    /// [-1/2, 1/2) from a 64-bit LCG, chain `c` shifted by `offset · c` and
    /// floored to multiples of `step` when `step > 0` (ties). The Python below
    /// builds the same chains bit for bit.
    fn chains(seed: u64, m: usize, n: usize, phi: f64, offset: f64, step: f64) -> Vec<Vec<f64>> {
        let mut s = seed;
        (0..m)
            .map(|c| {
                let mut x = 0.0;
                (0..n)
                    .map(|_| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let e = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                        x = phi * x + e;
                        let v = x + offset * c as f64;
                        if step > 0.0 { (v / step).floor() * step } else { v }
                    })
                    .collect()
            })
            .collect()
    }

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{got} vs {want}");
    }

    /// Reference values from ArviZ 0.23.4 (numpy 1.x, scipy 1.x), by
    /// ```python
    /// import numpy as np, arviz as az
    /// def chains(seed, m, n, phi, offset, step):
    ///     s = seed; out = []
    ///     for c in range(m):
    ///         x = 0.0; row = []
    ///         for t in range(n):
    ///             s = (s * 6364136223846793005 + 1442695040888963407) % 2**64
    ///             e = (s >> 11) / 2.0**53 - 0.5
    ///             x = phi * x + e
    ///             v = x + offset * c
    ///             row.append(np.floor(v / step) * step if step > 0 else v)
    ///         out.append(row)
    ///     return np.array(out)
    /// for args in [(1, 4, 200, 0.9, 0.0, 0.0), (2, 4, 200, 0.9, 0.3, 0.0),
    ///              (3, 3, 101, 0.5, 0.0, 0.25), (4, 2, 7, 0.0, 0.0, 0.0)]:
    ///     a = chains(*args)
    ///     print(args, repr(float(az.rhat(a, method="rank"))), repr(float(az.ess(a, method="bulk"))))
    /// ```
    #[test]
    fn rhat_and_bulk_ess_agree_with_arviz_on_fixed_chains() {
        let cases = [
            ((1, 4, 200, 0.9, 0.0, 0.0), 1.036445304802662, 75.82790821370874),
            ((2, 4, 200, 0.9, 0.3, 0.0), 1.2060863322357591, 14.509793142523476),
            // Floored to quarters: ties in the ranks; an odd draw count.
            ((3, 3, 101, 0.5, 0.0, 0.25), 1.0075473397296706, 118.8586975178914),
            // Seven draws: the autocorrelation sequence stops at once.
            ((4, 2, 7, 0.0, 0.0, 0.0), 1.3417968705484704, 12.9501749525715),
        ];
        for ((seed, m, n, phi, offset, step), want_rhat, want_ess) in cases {
            let c = chains(seed, m, n, phi, offset, step);
            close(rhat(&c), want_rhat);
            close(ess_bulk(&c), want_ess);
        }
    }

    /// scipy.stats.norm.ppf at these points.
    #[test]
    fn the_normal_quantile_matches_scipy() {
        let want = [
            (1e-10, -6.361340902404056),
            (0.01, -2.3263478740408408),
            (0.2, -0.8416212335729142),
            (0.5, 0.0),
            (0.7, 0.5244005127080407),
            (0.975, 1.959963984540054),
            (1.0 - 1e-6, 4.753424308817087),
        ];
        for (p, z) in want {
            close(normal_quantile(p), z);
        }
    }

    #[test]
    fn too_few_draws_or_chains_give_no_figure() {
        let c = chains(5, 1, 50, 0.0, 0.0, 0.0);
        assert!(rhat(&c).is_nan(), "one chain");
        assert!(ess_bulk(&c).is_finite(), "ESS splits one chain");
        assert!(rhat(&chains(5, 3, 3, 0.0, 0.0, 0.0)).is_nan());
        assert!(ess_bulk(&chains(5, 3, 3, 0.0, 0.0, 0.0)).is_nan());
    }

    /// Independent uniform draws (φ = 0): 8 split chains of n = 500. Then
    /// B/W ~ χ²₇/7, whose 1 - 1e-4 quantile is under 4.3, so R̂ ≤ √(1 + 3.3/500)
    /// < 1.005; and τ̂ = 1 + 2Σρ̂ over the few lags Geyer's sequence keeps, each
    /// ρ̂ with sd 1/√4000, so |τ̂ - 1| < 0.3 is over 4 sd even for 4 lags.
    #[test]
    fn independent_chains_mix_and_stuck_chains_do_not() {
        let c = chains(7, 4, 1000, 0.0, 0.0, 0.0);
        let r = rhat(&c);
        assert!((1.0 - 1e-3..1.005).contains(&r), "{r}");
        let e = ess_bulk(&c);
        assert!((e / 4000.0 - 1.0).abs() < 0.3, "{e}");

        let mut rec = Recorder::new(1000);
        let mut stuck = Recorder::new(1000);
        for d in 0..1000 {
            let row = |k: usize| c.iter().map(|ch| ch[d] as f32 + k as f32).collect::<Vec<f32>>();
            let mut state = Tensors::new();
            state.insert("x".into(), HostTensor::new(vec![4, 1], row(0)));
            rec.record(&state);
            // Each chain at its own value, never moving.
            let mut at = Tensors::new();
            at.insert("x".into(), HostTensor::new(vec![4, 1], vec![0.0, 1.0, 2.0, 3.0]));
            stuck.record(&at);
        }
        let mixing = rec.summarise();
        assert_eq!((mixing.chains, mixing.draws, mixing.every), (4, 1000, 1));
        // The mean and the one unit.
        assert_eq!(mixing.statistics.iter().map(|s| s.unit).collect::<Vec<_>>(), [None, Some(0)]);
        assert!(mixing.mixed, "{mixing:?}");
        let stuck = stuck.summarise();
        assert!(!stuck.mixed);
        // Within-chain variance 0 (up to rounding of the tied z-scores): R̂ infinite or huge.
        assert!(stuck.statistics.iter().all(|s| s.rhat.is_none_or(|r| r > 1e3) && !s.mixed), "{stuck:?}");
        // Two values: the distances from the median are constant (their R̂ is
        // NaN), the ranks' is infinite. ArviZ: `az.rhat(a, method="rank")` inf,
        // `az.ess(a, method="bulk")` 5.0 for `a = np.array([[0.0]*10, [1.0]*10])`.
        let two = [vec![0.0; 10], vec![1.0; 10]];
        assert!(rhat(&two).is_infinite());
        close(ess_bulk(&two), 5.0);
    }

    #[test]
    fn recorders_keep_at_most_the_draw_limit_and_the_first_chains() {
        let rec = Recorder::new(2500);
        assert_eq!(rec.stride, 3);
        assert_eq!((1..=2500).filter(|&a| rec.wants(a)).count(), 833);
        assert_eq!(Recorder::new(0).stride, 1);
        let mut rec = Recorder::new(10);
        let mut state = Tensors::new();
        state.insert("big".into(), HostTensor::new(vec![100, 9], (0..900).map(|i| i as f32).collect()));
        rec.record(&state);
        // Nine units: the mean alone; a hundred chains: the first 64.
        assert_eq!(rec.series.len(), 1);
        assert_eq!(rec.series[0].chains.len(), MAX_CHAINS);
        assert_eq!(rec.series[0].chains[1], [13.0]);
    }
}
