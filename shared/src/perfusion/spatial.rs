//! In-plane gaussian smoothing of one slice restricted to a mask (normalised
//! convolution: `G ⊗ (v · m) / G ⊗ m`), so large vessels, CSF and bone outside the mask do
//! not bleed into tissue. No allocation: the caller passes two slice-sized scratch buffers.

use crate::error::CoreError;

/// Largest σ accepted, pixels.
pub const MAX_SIGMA_PX: f32 = 4.0;
/// Kernel radius in σ.
const RADIUS_SIGMAS: f32 = 3.0;
/// Most taps of a kernel: `2 · ceil(3 · MAX_SIGMA_PX) + 1`.
const MAX_TAPS: usize = 25;

/// A normalised 1D gaussian of σ `sigma_px` in `taps`; returns the radius (0 for σ = 0).
fn kernel(sigma_px: f32, taps: &mut [f32; MAX_TAPS]) -> usize {
    if sigma_px.is_nan() || sigma_px <= 0.0 {
        taps[0] = 1.0;
        return 0;
    }
    let radius =
        (libm::ceilf(RADIUS_SIGMAS * sigma_px.min(MAX_SIGMA_PX)) as usize).min(MAX_TAPS / 2);
    let mut sum = 0.0;
    for (i, t) in taps.iter_mut().enumerate().take(2 * radius + 1) {
        let d = i as f32 - radius as f32;
        *t = libm::expf(-0.5 * d * d / (sigma_px * sigma_px));
        sum += *t;
    }
    taps.iter_mut().take(2 * radius + 1).for_each(|t| *t /= sum);
    radius
}

/// Separable masked smoothing of `nx × ny` slices sharing one mask: [`MaskedSmoother::new`]
/// computes the normalisation `G ⊗ m` once, [`MaskedSmoother::apply`] smooths any number
/// of value slices with it.
#[derive(Debug)]
pub struct MaskedSmoother<'a> {
    nx: usize,
    ny: usize,
    radius: usize,
    taps: [f32; MAX_TAPS],
    mask: &'a [u8],
    weight: &'a mut [f32],
    tmp: &'a mut [f32],
}

fn horizontal(
    src: impl Fn(usize) -> f32,
    dst: &mut [f32],
    nx: usize,
    ny: usize,
    taps: &[f32],
    radius: usize,
) {
    for y in 0..ny {
        let row = y * nx;
        for x in 0..nx {
            let lo = x.saturating_sub(radius);
            let hi = (x + radius).min(nx - 1);
            let mut acc = 0.0;
            for xx in lo..=hi {
                acc += taps[xx + radius - x] * src(row + xx);
            }
            dst[row + x] = acc;
        }
    }
}

impl<'a> MaskedSmoother<'a> {
    /// Prepares smoothing with σ `sigma_px` inside `mask` (non-zero = inside); `weight`
    /// and `tmp` are scratch of `nx · ny` values.
    pub fn new(
        mask: &'a [u8],
        nx: usize,
        ny: usize,
        sigma_px: f32,
        weight: &'a mut [f32],
        tmp: &'a mut [f32],
    ) -> Result<MaskedSmoother<'a>, CoreError> {
        let n = nx * ny;
        for (what, got) in [
            ("smoothing mask", mask.len()),
            ("smoothing weight", weight.len()),
            ("smoothing scratch", tmp.len()),
        ] {
            if got != n {
                return Err(CoreError::LengthMismatch {
                    what,
                    expected: n,
                    got,
                });
            }
        }
        let mut taps = [0.0; MAX_TAPS];
        let radius = kernel(sigma_px, &mut taps);
        let s = MaskedSmoother {
            nx,
            ny,
            radius,
            taps,
            mask,
            weight,
            tmp,
        };
        let m = s.mask;
        horizontal(
            |i| f32::from(u8::from(m[i] != 0)),
            s.tmp,
            nx,
            ny,
            &taps[..2 * radius + 1],
            radius,
        );
        for x in 0..nx {
            for y in 0..ny {
                let lo = y.saturating_sub(radius);
                let hi = (y + radius).min(ny - 1);
                let mut acc = 0.0;
                for yy in lo..=hi {
                    acc += taps[yy + radius - y] * s.tmp[yy * nx + x];
                }
                s.weight[y * nx + x] = acc;
            }
        }
        Ok(s)
    }

    /// Smooths `values` (`nx · ny`) in place inside the mask; values outside it are left
    /// as they are.
    pub fn apply(&mut self, values: &mut [f32]) -> Result<(), CoreError> {
        let (nx, ny, radius) = (self.nx, self.ny, self.radius);
        if values.len() != nx * ny {
            return Err(CoreError::LengthMismatch {
                what: "smoothed slice",
                expected: nx * ny,
                got: values.len(),
            });
        }
        if radius == 0 {
            return Ok(());
        }
        let taps = &self.taps[..2 * radius + 1];
        let m = self.mask;
        horizontal(
            |i| if m[i] != 0 { values[i] } else { 0.0 },
            self.tmp,
            nx,
            ny,
            taps,
            radius,
        );
        for y in 0..ny {
            let lo = y.saturating_sub(radius);
            let hi = (y + radius).min(ny - 1);
            for x in 0..nx {
                let i = y * nx + x;
                if m[i] == 0 {
                    continue;
                }
                let mut acc = 0.0;
                for yy in lo..=hi {
                    acc += taps[yy + radius - y] * self.tmp[yy * nx + x];
                }
                let w = self.weight[i];
                values[i] = if w > 0.0 { acc / w } else { values[i] };
            }
        }
        Ok(())
    }
}

#[allow(clippy::unwrap_used)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_stay_constant_and_outside_values_do_not_leak() {
        let (nx, ny) = (12, 10);
        let mut mask = [0u8; 120];
        let mut values = [0f32; 120];
        for y in 0..ny {
            for x in 0..nx {
                let inside = x < 6;
                mask[y * nx + x] = u8::from(inside);
                values[y * nx + x] = if inside { 5.0 } else { 1000.0 };
            }
        }
        let (mut w, mut t) = ([0f32; 120], [0f32; 120]);
        let mut s = MaskedSmoother::new(&mask, nx, ny, 1.5, &mut w, &mut t).unwrap();
        s.apply(&mut values).unwrap();
        for y in 0..ny {
            for x in 0..nx {
                let v = values[y * nx + x];
                if x < 6 {
                    assert!((v - 5.0).abs() < 1e-4, "{x},{y}: {v}");
                } else {
                    assert_eq!(v, 1000.0);
                }
            }
        }
    }

    #[test]
    fn an_impulse_spreads_with_unit_mass() {
        let (nx, ny) = (15, 15);
        let mask = [1u8; 225];
        let mut values = [0f32; 225];
        values[7 * nx + 7] = 1.0;
        let (mut w, mut t) = ([0f32; 225], [0f32; 225]);
        let mut s = MaskedSmoother::new(&mask, nx, ny, 1.0, &mut w, &mut t).unwrap();
        s.apply(&mut values).unwrap();
        let total: f32 = values.iter().sum();
        assert!((total - 1.0).abs() < 1e-4);
        assert!(values[7 * nx + 7] < 0.2 && values[7 * nx + 8] > 0.05);
        assert!(MaskedSmoother::new(&mask[..10], nx, ny, 1.0, &mut w, &mut t).is_err());
    }
}
