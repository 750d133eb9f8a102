//! One-sided Jacobi singular value decomposition (Hestenes 1958; Demmel & Veselić 1992)
//! of a small dense matrix in caller buffers, f64, no allocation: the deconvolution
//! matrices are at most `2 · MAX_FRAMES` square and factorised once per study.

use crate::error::CoreError;

/// Sweeps after which the iteration stops even if not converged (it converges in 6–12
/// for the deconvolution matrices).
const MAX_SWEEPS: usize = 60;
/// Relative off-diagonal size below which two columns count as orthogonal.
const ORTHOGONALITY_TOL: f64 = 1e-13;

/// Factorises the `m × n` row-major matrix in `a` (`m ≥ n`) as `A = U · diag(s) · Vᵀ`.
///
/// On return `a` holds `U` (`m × n`, orthonormal columns; a column of a zero singular value
/// is zero), `v` holds `V` (`n × n`, row-major) and `s` the singular values in descending
/// order. Buffers: `a.len() == m·n`, `v.len() == n·n`, `s.len() == n`.
pub fn jacobi_svd(
    a: &mut [f64],
    m: usize,
    n: usize,
    v: &mut [f64],
    s: &mut [f64],
) -> Result<(), CoreError> {
    let check = |what: &'static str, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(CoreError::LengthMismatch {
                what,
                expected,
                got,
            })
        }
    };
    check("svd matrix", m * n, a.len())?;
    check("svd v", n * n, v.len())?;
    check("svd singular values", n, s.len())?;
    if m < n {
        return Err(CoreError::InvalidGeometry {
            reason: "svd needs at least as many rows as columns",
        });
    }
    v.iter_mut().for_each(|x| *x = 0.0);
    for j in 0..n {
        v[j * n + j] = 1.0;
    }
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..m {
                    let (x, y) = (a[i * n + p], a[i * n + q]);
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma == 0.0 || gamma.abs() <= ORTHOGONALITY_TOL * libm::sqrt(alpha * beta) {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + libm::sqrt(1.0 + zeta * zeta));
                let c = 1.0 / libm::sqrt(1.0 + t * t);
                let sn = c * t;
                for i in 0..m {
                    let (x, y) = (a[i * n + p], a[i * n + q]);
                    a[i * n + p] = c * x - sn * y;
                    a[i * n + q] = sn * x + c * y;
                }
                for i in 0..n {
                    let (x, y) = (v[i * n + p], v[i * n + q]);
                    v[i * n + p] = c * x - sn * y;
                    v[i * n + q] = sn * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    for (j, sj) in s.iter_mut().enumerate() {
        let norm = libm::sqrt((0..m).map(|i| a[i * n + j] * a[i * n + j]).sum::<f64>());
        *sj = norm;
        if norm > 0.0 {
            (0..m).for_each(|i| a[i * n + j] /= norm);
        }
    }
    // Selection sort of the columns by descending singular value (n swaps of columns).
    for j in 0..n {
        let mut best = j;
        for k in j + 1..n {
            if s[k] > s[best] {
                best = k;
            }
        }
        if best != j {
            s.swap(j, best);
            for i in 0..m {
                a.swap(i * n + j, i * n + best);
            }
            for i in 0..n {
                v.swap(i * n + j, i * n + best);
            }
        }
    }
    Ok(())
}

#[allow(clippy::unwrap_used)]
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn reconstruct(u: &[f64], s: &[f64], v: &[f64], m: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..n).map(|k| u[i * n + k] * s[k] * v[j * n + k]).sum();
            }
        }
        out
    }

    #[test]
    fn reconstructs_a_random_matrix_with_orthonormal_factors() {
        let (m, n) = (7, 5);
        let mut rng = crate::rng::Rng::new(3);
        let a0: Vec<f64> = (0..m * n).map(|_| rng.normal()).collect();
        let mut a = a0.clone();
        let (mut v, mut s) = (vec![0.0; n * n], vec![0.0; n]);
        jacobi_svd(&mut a, m, n, &mut v, &mut s).unwrap();
        let back = reconstruct(&a, &s, &v, m, n);
        assert!(a0.iter().zip(&back).all(|(x, y)| (x - y).abs() < 1e-10));
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        for p in 0..n {
            for q in 0..n {
                let dot_u: f64 = (0..m).map(|i| a[i * n + p] * a[i * n + q]).sum();
                let dot_v: f64 = (0..n).map(|i| v[i * n + p] * v[i * n + q]).sum();
                let want = if p == q { 1.0 } else { 0.0 };
                assert!((dot_u - want).abs() < 1e-10 && (dot_v - want).abs() < 1e-10);
            }
        }
    }

    /// The singular values of a circulant matrix are the moduli of the DFT of its first
    /// column: a known answer independent of the algorithm.
    #[test]
    fn circulant_singular_values_are_dft_moduli() {
        let n = 16;
        let col: Vec<f64> = (0..n)
            .map(|k| if k < 6 { (k as f64 + 1.0) * 0.5 } else { 0.0 })
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = col[(i + n - j) % n];
            }
        }
        let (mut v, mut s) = (vec![0.0; n * n], vec![0.0; n]);
        jacobi_svd(&mut a, n, n, &mut v, &mut s).unwrap();
        let mut dft: Vec<f64> = (0..n)
            .map(|f| {
                let (mut re, mut im) = (0.0, 0.0);
                for (k, &c) in col.iter().enumerate() {
                    let w = -2.0 * core::f64::consts::PI * (f * k) as f64 / n as f64;
                    re += c * w.cos();
                    im += c * w.sin();
                }
                (re * re + im * im).sqrt()
            })
            .collect();
        dft.sort_by(|x, y| y.total_cmp(x));
        assert!(
            s.iter().zip(&dft).all(|(x, y)| (x - y).abs() < 1e-9),
            "{s:?} vs {dft:?}"
        );
    }

    #[test]
    fn wrong_buffers_are_refused() {
        let mut a = vec![0.0; 6];
        let (mut v, mut s) = (vec![0.0; 9], vec![0.0; 3]);
        assert!(jacobi_svd(&mut a, 2, 3, &mut v, &mut s).is_err());
        assert!(jacobi_svd(&mut a, 3, 3, &mut v, &mut s).is_err());
    }
}
