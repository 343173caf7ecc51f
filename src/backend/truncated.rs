//! Exact draws from a normal truncated to an interval, for the Gibbs update
//! of a bounded real variable whose conditional is Gaussian unit by unit.
//!
//! Inverse-CDF sampling loses every digit in a far tail (Φ(a) rounds to 1
//! past a ≈ 8), so the draw is by rejection, as in Robert (1995): for a box
//! that holds the mode, normal or uniform proposals; for a box on one side
//! of it, uniform proposals when it is narrow and else a translated
//! exponential of the optimal rate α = (a + √(a² + 4)) / 2. Every scheme is
//! exact and accepts with probability bounded away from 0 however far the
//! box lies in the tail. A one-sided draw is returned as its distance from
//! the near edge, so `lo + σ·t` keeps its digits where `μ + σ·z` would
//! cancel.

use rand::Rng;
use rand_distr::{Distribution, Exp1, Open01, StandardNormal};

/// A uniform draw in (0, 1), never either end (its logarithm is finite).
fn open<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    Open01.sample(rng)
}

/// A draw of N(mean, 1/precision) truncated to `[lo, hi]` (`lo < hi`).
/// A zero precision is the uniform limit; an infinite one the mean, clamped
/// into the box; a NaN in is a NaN out, which the caller reports as divergence.
pub(super) fn draw<R: Rng + ?Sized>(rng: &mut R, mean: f64, precision: f64, lo: f64, hi: f64) -> f64 {
    if mean.is_nan() || precision.is_nan() || precision < 0.0 {
        return f64::NAN;
    }
    if precision == 0.0 {
        return lo + (hi - lo) * open(rng);
    }
    let sd = precision.sqrt().recip();
    if sd == 0.0 || mean.is_infinite() {
        return mean.clamp(lo, hi);
    }
    let (a, b) = ((lo - mean) / sd, (hi - mean) / sd);
    let x = if a >= 0.0 {
        lo + sd * one_sided(rng, a, b)
    } else if b <= 0.0 {
        hi - sd * one_sided(rng, -b, -a)
    } else {
        mean + sd * two_sided(rng, a, b)
    };
    // Rounding alone can step past an edge.
    x.clamp(lo, hi)
}

/// A standard normal truncated to `[a, b]`, `a < 0 < b`.
fn two_sided<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    // Past √(2π) the box holds at least half of the normal's mass (Robert 1995, §2.2).
    if b - a >= (2.0 * std::f64::consts::PI).sqrt() {
        loop {
            let z: f64 = StandardNormal.sample(rng);
            if (a..=b).contains(&z) {
                return z;
            }
        }
    }
    loop {
        let z = a + (b - a) * open(rng);
        let u = open(rng);
        if u.ln() <= -0.5 * z * z {
            return z;
        }
    }
}

/// A standard normal truncated to `[a, b]`, `0 ≤ a < b`, as `z − a`.
fn one_sided<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    let root = (a * a + 4.0).sqrt();
    let alpha = 0.5 * (a + root);
    // Robert's (1995, §2.3) bound: below it uniform proposals accept more often than the exponential's.
    let narrow = (b - a) < 2.0 / (a + root) * (0.25 * (a * a - a * root) + 0.5).exp();
    if narrow {
        loop {
            let t = (b - a) * open(rng);
            let u = open(rng);
            // exp(−(z² − a²)/2) with z = a + t, written so it stays exact for large a.
            if u.ln() <= -t * (a + 0.5 * t) {
                return t;
            }
        }
    }
    loop {
        let t: f64 = Exp1.sample(rng);
        let t = t / alpha;
        if t > b - a {
            continue;
        }
        let u = open(rng);
        let off = a + t - alpha;
        if u.ln() <= -0.5 * off * off {
            return t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The mean, variance and central fourth moment of N(μ, σ²) truncated
    /// to [lo, hi], by the midpoint rule on 200,000 cells of the box in
    /// standard units (smooth integrand: error O(h²), far below the sampling
    /// error), the density scaled by its value at the box's mode so that
    /// nothing underflows 40 standard deviations out.
    fn moments(mean: f64, sd: f64, lo: f64, hi: f64) -> (f64, f64, f64) {
        let (a, b) = ((lo - mean) / sd, (hi - mean) / sd);
        let peak = 0.0f64.clamp(a, b);
        let n = 200_000;
        let cells: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let z = a + (b - a) * (i as f64 + 0.5) / n as f64;
                (z, (-0.5 * (z * z - peak * peak)).exp())
            })
            .collect();
        let w: f64 = cells.iter().map(|c| c.1).sum();
        let ez = cells.iter().map(|(z, p)| p * z).sum::<f64>() / w;
        let central = |k: i32| cells.iter().map(|(z, p)| p * (z - ez).powi(k)).sum::<f64>() / w;
        (mean + sd * ez, sd * sd * central(2), sd.powi(4) * central(4))
    }

    /// 200,000 draws per case against the exact moments: the sample mean's
    /// standard error is σ/√n and the sample variance's √((μ₄ − σ⁴)/n),
    /// both checked at 5 standard errors. The cases: boxes about the mode
    /// (normal and uniform proposals), boxes on one side (narrow: uniform
    /// proposals; wide: the exponential), boxes 8 and 40 standard
    /// deviations out in either tail, and a narrow box in a tiny variance.
    #[test]
    fn draws_have_the_exact_truncated_moments_far_into_the_tails() {
        let cases = [
            (0.3, 1.0, -0.5, 1.0),
            (0.0, 1.0, -3.0, 3.0),
            (0.5, 0.2, 0.0, 1.0),
            (0.0, 1.0, 1.0, 1.2),
            (0.0, 1.0, 0.5, 4.0),
            (-0.8, 0.1, 0.0, 1.0),
            (1.8, 0.1, 0.0, 1.0),
            (-40.0, 1.0, 0.0, 1.0),
            (0.0, 0.01, 0.4, 0.5),
        ];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let n = 200_000;
        for (mean, sd, lo, hi) in cases {
            let xs: Vec<f64> = (0..n).map(|_| draw(&mut rng, mean, 1.0 / (sd * sd), lo, hi)).collect();
            assert!(xs.iter().all(|x| x.is_finite() && *x >= lo && *x <= hi), "case {mean} {sd} [{lo}, {hi}]");
            // Not stuck at an edge: the draws spread into the box.
            assert!(xs.iter().filter(|x| **x == lo || **x == hi).count() < 10, "case {mean} {sd} [{lo}, {hi}]");
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
            let (want_m, want_v, mu4) = moments(mean, sd, lo, hi);
            let se_m = (want_v / n as f64).sqrt();
            let se_v = ((mu4 - want_v * want_v) / n as f64).sqrt();
            assert!((m - want_m).abs() < 5.0 * se_m, "case {mean} {sd} [{lo}, {hi}]: mean {m} vs {want_m}");
            assert!((v - want_v).abs() < 5.0 * se_v, "case {mean} {sd} [{lo}, {hi}]: variance {v} vs {want_v}");
        }
    }

    #[test]
    fn limits_and_bad_values() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        assert_eq!(draw(&mut rng, 3.0, f64::INFINITY, 0.0, 1.0), 1.0);
        assert_eq!(draw(&mut rng, 0.25, f64::INFINITY, 0.0, 1.0), 0.25);
        assert!(draw(&mut rng, f64::NAN, 1.0, 0.0, 1.0).is_nan());
        assert!(draw(&mut rng, 0.0, f64::NAN, 0.0, 1.0).is_nan());
        let u = draw(&mut rng, 0.0, 0.0, 2.0, 3.0);
        assert!(u > 2.0 && u < 3.0, "{u}");
    }
}
