//! Comparing two sets of rows, as users of deep energy-based models do: how
//! well a score separates them (AUROC, AUPR, the false-positive rate at a
//! true-positive rate) and whether they come from one distribution (the
//! unbiased MMD² with a Gaussian kernel, and its permutation test). Pure
//! functions over numbers: `report` feeds them energies and rows.
//!
//! Scores follow one convention: a higher score means "positive". For the
//! energy score of out-of-distribution detection, positives are the
//! in-distribution rows and the score is the negated energy.

use rand::SeedableRng;
use rand::seq::SliceRandom;

/// The scores of both sets, highest first, each flagged `true` when positive.
fn ranked(positives: &[f64], negatives: &[f64]) -> Vec<(f64, bool)> {
    let mut all: Vec<(f64, bool)> =
        positives.iter().map(|s| (*s, true)).chain(negatives.iter().map(|s| (*s, false))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    all
}

/// Cumulative (true positives, false positives) after each group of tied
/// scores, highest threshold first: the points of the ROC and PR curves.
fn operating_points(positives: &[f64], negatives: &[f64]) -> Vec<(usize, usize)> {
    let all = ranked(positives, negatives);
    let mut points = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    for (i, (score, positive)) in all.iter().enumerate() {
        if *positive {
            tp += 1;
        } else {
            fp += 1;
        }
        // A threshold admits a whole group of ties or none of it.
        if all.get(i + 1).is_none_or(|next| next.0 != *score) {
            points.push((tp, fp));
        }
    }
    points
}

/// The area under the ROC curve: the probability that a random positive
/// scores above a random negative, a tie counting 1/2. NaN when either set
/// is empty.
pub fn auroc(positives: &[f64], negatives: &[f64]) -> f64 {
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    // Trapezoids between operating points: a tied group's diagonal step is the 1/2.
    let mut area = 0.0;
    let (mut tp0, mut fp0) = (0usize, 0usize);
    for (tp, fp) in operating_points(positives, negatives) {
        area += (fp - fp0) as f64 * (tp + tp0) as f64 / 2.0;
        (tp0, fp0) = (tp, fp);
    }
    area / (p * n)
}

/// The area under the precision–recall curve with `positives` as the class
/// sought, as average precision: Σ (Rₖ − Rₖ₋₁) Pₖ over the thresholds at each
/// group of tied scores (no interpolation). NaN without positives.
pub fn aupr(positives: &[f64], negatives: &[f64]) -> f64 {
    let p = positives.len() as f64;
    let mut ap = 0.0;
    let mut recall0 = 0.0;
    for (tp, fp) in operating_points(positives, negatives) {
        let recall = tp as f64 / p;
        ap += (recall - recall0) * tp as f64 / (tp + fp) as f64;
        recall0 = recall;
    }
    ap
}

/// The share of negatives scoring at or above the highest threshold that
/// admits at least `tpr` of the positives (the FPR at 95% TPR of OOD
/// detection, with `tpr` 0.95). NaN when either set is empty.
pub fn fpr_at_tpr(positives: &[f64], negatives: &[f64], tpr: f64) -> f64 {
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    // A hair below `tpr`, so that 19 of 20 counts as 95% in floating point.
    let wanted = tpr - 1e-12;
    operating_points(positives, negatives)
        .into_iter()
        .find(|(tp, _)| *tp as f64 / p >= wanted)
        .map_or(f64::NAN, |(_, fp)| fp as f64 / n)
}

/// The squared Euclidean distance of every pair i < j of the rows of `x`
/// then `y` (each `dim` wide), row-major in the upper triangle.
fn pair_distances(x: &[f64], y: &[f64], dim: usize) -> Vec<f64> {
    let rows: Vec<&[f64]> = x.chunks(dim).chain(y.chunks(dim)).collect();
    let mut d = Vec::with_capacity(rows.len() * rows.len().saturating_sub(1) / 2);
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            d.push(a.iter().zip(*b).map(|(u, v)| (u - v) * (u - v)).sum::<f64>());
        }
    }
    d
}

/// The median; NaN for no values.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mid = values.len() / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        return upper;
    }
    let lower = values[..mid].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

/// The median distance between distinct rows of `x` and `y` pooled (each
/// `dim` wide): the usual bandwidth of a Gaussian kernel for MMD.
pub fn median_distance(x: &[f64], y: &[f64], dim: usize) -> f64 {
    median(pair_distances(x, y, dim).into_iter().map(f64::sqrt).collect())
}

/// The Gaussian kernel exp(−‖a − b‖² / (2σ²)) of every pair i < j of the
/// pooled rows, and each row's sum over its later partners.
struct PooledKernel {
    /// Rows of `x`, then of `y`.
    rows: usize,
    /// Upper triangle, row-major: row i holds k(i, j) for j > i.
    upper: Vec<f64>,
    /// Where row i of the triangle starts.
    starts: Vec<usize>,
    /// Σ_{j>i} k(i, j).
    row_sums: Vec<f64>,
}

impl PooledKernel {
    fn new(squared: Vec<f64>, rows: usize, bandwidth: f64) -> PooledKernel {
        let gamma = 1.0 / (2.0 * bandwidth * bandwidth);
        let upper: Vec<f64> = squared.into_iter().map(|d| (-gamma * d).exp()).collect();
        let starts: Vec<usize> = (0..rows).map(|i| i * rows - i * (i + 1) / 2).collect();
        let row_sums = (0..rows).map(|i| upper[starts[i]..starts[i] + rows - 1 - i].iter().sum()).collect();
        PooledKernel { rows, upper, starts, row_sums }
    }

    /// The unbiased MMD² between the rows flagged `in_x` and the others.
    fn mmd2(&self, in_x: &[bool]) -> f64 {
        let a: Vec<f64> = in_x.iter().map(|f| f64::from(u8::from(*f))).collect();
        let m = in_x.iter().filter(|f| **f).count() as f64;
        let n = self.rows as f64 - m;
        // Unordered pair sums within x, within y, and in all; across is the rest.
        let (mut xx, mut yy, mut all) = (0.0, 0.0, 0.0);
        for i in 0..self.rows {
            let k = &self.upper[self.starts[i]..self.starts[i] + self.rows - 1 - i];
            let with_x: f64 = k.iter().zip(&a[i + 1..]).map(|(k, a)| k * a).sum();
            if in_x[i] {
                xx += with_x;
            } else {
                yy += self.row_sums[i] - with_x;
            }
            all += self.row_sums[i];
        }
        let xy = all - xx - yy;
        2.0 * xx / (m * (m - 1.0)) + 2.0 * yy / (n * (n - 1.0)) - 2.0 * xy / (m * n)
    }
}

/// The unbiased estimate of MMD² (Gretton et al. 2012, eq. 3) between the
/// rows of `x` and of `y` (each `dim` wide) with a Gaussian kernel of
/// bandwidth σ: the mean kernel within `x` and within `y` (distinct pairs)
/// less twice the mean across. Near 0 when both come from one distribution;
/// it can be slightly negative. NaN with fewer than 2 rows on a side.
pub fn mmd2_unbiased(x: &[f64], y: &[f64], dim: usize, bandwidth: f64) -> f64 {
    if dim == 0 {
        return f64::NAN;
    }
    let (m, n) = (x.len() / dim, y.len() / dim);
    let kernel = PooledKernel::new(pair_distances(x, y, dim), m + n, bandwidth);
    let in_x: Vec<bool> = (0..m + n).map(|i| i < m).collect();
    kernel.mmd2(&in_x)
}

/// A two-sample test by MMD.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MmdTest {
    /// The unbiased MMD² of the two sets.
    pub mmd2: f64,
    /// The Gaussian kernel's bandwidth: the median distance of the pooled rows.
    pub bandwidth: f64,
    /// (1 + permutations whose MMD² is at least the observed) / (1 + permutations).
    pub p_value: f64,
    /// Random relabellings of the pooled rows drawn.
    pub permutations: usize,
}

/// The permutation test of "`x` and `y` come from one distribution": the
/// unbiased MMD² at the median-distance bandwidth, against its value over
/// `permutations` random splits of the pooled rows into sets of the same
/// sizes (seeded by `seed`; the kernel is computed once). The p-value
/// counts the observed split as one of the permutations, so it is never 0
/// and is exact (valid at every level) under the null. `None` with fewer
/// than 2 rows on a side, or when every pooled distance's median is 0 (the
/// bandwidth is undefined).
pub fn mmd_permutation_test(x: &[f64], y: &[f64], dim: usize, permutations: usize, seed: u64) -> Option<MmdTest> {
    let (m, n) = (x.len() / dim.max(1), y.len() / dim.max(1));
    if dim == 0 || m < 2 || n < 2 {
        return None;
    }
    let squared = pair_distances(x, y, dim);
    let bandwidth = median(squared.iter().map(|d| d.sqrt()).collect());
    if !(bandwidth > 0.0 && bandwidth.is_finite()) {
        return None;
    }
    let kernel = PooledKernel::new(squared, m + n, bandwidth);
    let mut labels: Vec<bool> = (0..m + n).map(|i| i < m).collect();
    let observed = kernel.mmd2(&labels);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut at_least = 0usize;
    for _ in 0..permutations {
        labels.shuffle(&mut rng);
        if kernel.mmd2(&labels) >= observed {
            at_least += 1;
        }
    }
    Some(MmdTest {
        mmd2: observed,
        bandwidth,
        p_value: (1 + at_least) as f64 / (1 + permutations) as f64,
        permutations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::{Distribution, Normal};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn detection_figures_match_hand_counts_with_ties() {
        // Pairs: 3 beats both (2), each 2 ties one and beats one (1.5 each), 0 beats none: 5 of 8.
        let (pos, neg) = ([3.0, 2.0, 2.0, 0.0], [2.0, 1.0]);
        assert!(close(auroc(&pos, &neg), 5.0 / 8.0), "{}", auroc(&pos, &neg));
        // Thresholds 3, 2, 1, 0: (P, R) = (1, 1/4), (3/4, 3/4), (3/5, 3/4), (4/6, 1).
        assert!(close(aupr(&pos, &neg), 0.25 + 0.5 * 0.75 + 0.25 * (4.0 / 6.0)), "{}", aupr(&pos, &neg));
        // 95% of four positives needs all four: threshold 0 admits both negatives.
        assert!(close(fpr_at_tpr(&pos, &neg, 0.95), 1.0));
        // 50% or 75%: threshold 2 (three positives, the tied negative).
        assert!(close(fpr_at_tpr(&pos, &neg, 0.75), 0.5));
        assert!(close(fpr_at_tpr(&pos, &neg, 0.5), 0.5));
        // One tie of everything: a coin.
        assert!(close(auroc(&[1.0, 1.0], &[1.0]), 0.5));
        assert!(close(aupr(&[1.0, 1.0], &[1.0]), 2.0 / 3.0));
        // Separated both ways.
        assert!(close(auroc(&[5.0, 4.0], &[1.0, 0.0]), 1.0) && close(auroc(&[1.0, 0.0], &[5.0, 4.0]), 0.0));
        assert!(close(aupr(&[5.0, 4.0], &[1.0, 0.0]), 1.0));
        // Recall 1/2 at precision 1/3, then 1 at 1/2.
        assert!(close(aupr(&[1.0, 0.0], &[5.0, 4.0]), 0.5 / 3.0 + 0.5 * 0.5));
        assert!(close(fpr_at_tpr(&[5.0, 4.0], &[1.0, 0.0], 0.95), 0.0));
        assert!(close(fpr_at_tpr(&[1.0, 0.0], &[5.0, 4.0], 0.95), 1.0));
        // 19 of 20 positives is 95%: threshold 2 admits the negatives at 30 and 2 (tied), not the one at 1.
        let pos: Vec<f64> = (1..=20).map(f64::from).collect();
        assert!(close(fpr_at_tpr(&pos, &[1.0, 2.0, 30.0], 0.95), 2.0 / 3.0));
        assert!(auroc(&[], &[1.0]).is_nan() && fpr_at_tpr(&[1.0], &[], 0.95).is_nan());
    }

    #[test]
    fn detection_figures_match_brute_force_counts_on_random_scores() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..20 {
            let (p, n) = (rng.gen_range(1..60), rng.gen_range(1..60));
            // Scores on a coarse grid, so that ties are common; shifted so positives lean higher.
            let shift = round as f64 / 10.0;
            let pos: Vec<f64> = (0..p).map(|_| f64::from(rng.gen_range(0..12u8)) + shift).collect();
            let neg: Vec<f64> = (0..n).map(|_| f64::from(rng.gen_range(0..12u8))).collect();
            let wins: f64 = pos
                .iter()
                .flat_map(|a| {
                    neg.iter().map(move |b| {
                        if a > b {
                            1.0
                        } else if a == b {
                            0.5
                        } else {
                            0.0
                        }
                    })
                })
                .sum();
            let expected = wins / (p * n) as f64;
            assert!((auroc(&pos, &neg) - expected).abs() < 1e-12, "round {round}: {} vs {expected}", auroc(&pos, &neg));
            // Average precision and FPR at 95% TPR from every distinct threshold, counted afresh.
            let mut thresholds: Vec<f64> = pos.iter().chain(&neg).cloned().collect();
            thresholds.sort_by(|a, b| b.total_cmp(a));
            thresholds.dedup();
            let at = |t: f64| {
                (pos.iter().filter(|s| **s >= t).count() as f64, neg.iter().filter(|s| **s >= t).count() as f64)
            };
            let (mut ap, mut recall0) = (0.0, 0.0);
            for t in &thresholds {
                let (tp, fp) = at(*t);
                ap += (tp / p as f64 - recall0) * tp / (tp + fp);
                recall0 = tp / p as f64;
            }
            assert!((aupr(&pos, &neg) - ap).abs() < 1e-12, "round {round}");
            let t = thresholds.iter().find(|t| at(**t).0 >= 0.95 * p as f64).unwrap();
            assert!((fpr_at_tpr(&pos, &neg, 0.95) - at(*t).1 / n as f64).abs() < 1e-12, "round {round}");
        }
    }

    fn normal_rows(rows: usize, dim: usize, mean: f64, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let d = Normal::new(mean, 1.0).unwrap();
        (0..rows * dim).map(|_| d.sample(&mut rng)).collect()
    }

    #[test]
    fn unbiased_mmd_matches_its_definition() {
        let (x, y) = (normal_rows(7, 3, 0.0, 1), normal_rows(5, 3, 1.0, 2));
        let k = |a: &[f64], b: &[f64]| (-a.iter().zip(b).map(|(u, v)| (u - v).powi(2)).sum::<f64>() / 2.0).exp();
        let mean_within = |r: &[f64]| {
            let rows: Vec<&[f64]> = r.chunks(3).collect();
            let m = rows.len() as f64;
            let s: f64 = (0..rows.len())
                .flat_map(|i| (0..rows.len()).filter(move |j| *j != i).map(move |j| (i, j)))
                .map(|(i, j)| k(rows[i], rows[j]))
                .sum();
            s / (m * (m - 1.0))
        };
        let across: f64 = x.chunks(3).flat_map(|a| y.chunks(3).map(move |b| k(a, b))).sum::<f64>() / 35.0;
        let expected = mean_within(&x) + mean_within(&y) - 2.0 * across;
        assert!((mmd2_unbiased(&x, &y, 3, 1.0) - expected).abs() < 1e-12);
        // One row of x has no distinct pair; rows of no width are no rows.
        assert!(mmd2_unbiased(&x[..3], &y, 3, 1.0).is_nan() && mmd2_unbiased(&x, &y, 0, 1.0).is_nan());
        // Rows 0, 1 and 3 on a line: distances 1, 3, 2; with 7 too: 1, 2, 3, 4, 6, 7.
        assert!(close(median_distance(&[0.0, 1.0], &[3.0], 1), 2.0));
        assert!(close(median_distance(&[0.0, 1.0], &[3.0, 7.0], 1), 3.5));
    }

    #[test]
    fn mmd_test_finds_a_shift_of_half_a_standard_deviation() {
        let (x, y) = (normal_rows(300, 1, 0.0, 11), normal_rows(300, 1, 0.5, 12));
        let t = mmd_permutation_test(&x, &y, 1, 200, 0).unwrap();
        assert!(t.p_value < 0.01 && t.mmd2 > 0.0, "{t:?}");
        // The smallest p-value 200 permutations can give.
        assert!(close(t.p_value, 1.0 / 201.0), "{t:?}");
        assert!(mmd_permutation_test(&x[..1], &y, 1, 10, 0).is_none());
        assert!(mmd_permutation_test(&[2.0; 4], &[2.0; 3], 1, 10, 0).is_none());
    }

    #[test]
    fn mmd_p_values_are_uniform_under_the_null() {
        // 50 tests of two samples of one distribution, with fresh data and permutations each.
        let p: Vec<f64> = (0..50u64)
            .map(|s| {
                let (x, y) = (normal_rows(60, 2, 0.0, 100 + s), normal_rows(60, 2, 0.0, 200 + s));
                mmd_permutation_test(&x, &y, 2, 200, s).unwrap().p_value
            })
            .collect();
        // P(p <= 0.1) = 20/201 under the null: Binomial(50, 0.0995) lies in [0, 12] with probability 0.999.
        let below = p.iter().filter(|v| **v <= 0.1).count();
        assert!(below <= 12, "{below} of 50 p-values at most 0.1: {p:?}");
        // Mean of Uniform(0, 1): 0.5 with sd 0.289/√50 = 0.041; four sd either side.
        let mean = p.iter().sum::<f64>() / 50.0;
        assert!((mean - 0.5).abs() < 4.0 * 0.2887 / 50f64.sqrt(), "mean p-value {mean}: {p:?}");
        // P(p <= 0.5) = 100/201: Binomial(50, 0.4975) lies in [14, 36] with probability 0.999.
        let half = p.iter().filter(|v| **v <= 0.5).count();
        assert!((14..=36).contains(&half), "{half} of 50 p-values at most 0.5: {p:?}");
    }
}
