//! Dense symmetric positive-definite algebra in f64 for the full-precision
//! Gaussian kernel: a Cholesky factor and the two triangular solves that
//! draw `μ + L⁻ᵀ ζ` with `μ = −P⁻¹ o`. Matrices are row-major, `n × n`.

/// The lower factor `L` of `a = L Lᵀ`, or `None` when `a` is not positive
/// definite (a pivot that is not positive and finite).
pub(super) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let pivot = a[i * n + i] - s;
                // Rejects NaN too.
                if !(pivot > 0.0 && pivot.is_finite()) {
                    return None;
                }
                l[i * n + i] = pivot.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// `y` with `L y = b`, `L` lower triangular.
pub(super) fn solve_lower(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    y
}

/// `z` with `Lᵀ z = b`, `L` lower triangular.
pub(super) fn solve_upper_transposed(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * z[k]).sum();
        z[i] = (b[i] - s) / l[i * n + i];
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_and_solves_a_small_system() {
        let a = [4.0, 2.0, 0.4, 2.0, 3.0, 0.5, 0.4, 0.5, 2.0];
        let l = cholesky(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let back: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((back - a[i * 3 + j]).abs() < 1e-12, "L Lᵀ at ({i}, {j})");
            }
        }
        // A x = b through L y = b, Lᵀ x = y.
        let b = [1.0, -2.0, 0.5];
        let x = solve_upper_transposed(&l, 3, &solve_lower(&l, 3, &b));
        for i in 0..3 {
            let ax: f64 = (0..3).map(|k| a[i * 3 + k] * x[k]).sum();
            assert!((ax - b[i]).abs() < 1e-12, "row {i}: {ax} vs {}", b[i]);
        }
    }

    #[test]
    fn refuses_what_is_not_positive_definite() {
        // Eigenvalues 3 and −1.
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(cholesky(&[0.0, 0.0, 0.0, 1.0], 2).is_none());
        assert!(cholesky(&[f64::NAN, 0.0, 0.0, 1.0], 2).is_none());
    }
}
