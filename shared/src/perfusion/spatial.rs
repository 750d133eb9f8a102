//! In-plane smoothing of one slice restricted to a mask, so large vessels, CSF and bone
//! outside the mask do not bleed into tissue. No allocation: the caller passes scratch.
//!
//! - [`MaskedSmoother`]: gaussian, normalised convolution `G ⊗ (v · m) / G ⊗ m` of planes;
//! - [`GuidedSmoother`]: separable edge-preserving (bilateral) smoothing of interleaved
//!   channels, each neighbour weighted by its distance and by how far its guide value
//!   (the voxel's time-averaged attenuation) is from the centre's: the time-intensity
//!   profile similarity filter of Mendrik et al. 2011 (Phys Med Biol 56:3857), with the
//!   profile's mean as its similarity (at CT perfusion noise the mean dominates the
//!   profile distance: grey and white matter differ by ≈ 10 HU in every frame), applied
//!   along x then along y (Pham & van Vliet 2005).

use crate::error::CoreError;

/// Largest σ accepted, pixels.
pub const MAX_SIGMA_PX: f32 = 16.0;
/// Kernel radius in σ.
const RADIUS_SIGMAS: f32 = 3.0;
/// Most taps of a kernel: `2 · ceil(3 · MAX_SIGMA_PX) + 1`.
const MAX_TAPS: usize = 97;

/// Kernel radius of the guided smoothing in σ: 2.5 σ holds 98.8 % of the gaussian's mass,
/// at 20 % fewer taps than 3 σ (the per-voxel cost is taps × channels).
const GUIDED_RADIUS_SIGMAS: f32 = 2.5;

/// A normalised 1D gaussian of σ `sigma_px` in `taps`; returns the radius (0 for σ = 0).
fn kernel(sigma_px: f32, taps: &mut [f32; MAX_TAPS]) -> usize {
    kernel_with_radius(sigma_px, RADIUS_SIGMAS, taps)
}

/// [`kernel`] cut at `radius_sigmas` σ.
fn kernel_with_radius(sigma_px: f32, radius_sigmas: f32, taps: &mut [f32; MAX_TAPS]) -> usize {
    if sigma_px.is_nan() || sigma_px <= 0.0 {
        taps[0] = 1.0;
        return 0;
    }
    let radius =
        (libm::ceilf(radius_sigmas * sigma_px.min(MAX_SIGMA_PX)) as usize).min(MAX_TAPS / 2);
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

/// Guide differences beyond this many range σ weigh nothing.
const RANGE_CUTOFF_SIGMAS: f32 = 3.0;

/// The range weight `(1 − d²/64)^32` of a guide difference of `d` range σ, 0 beyond
/// [`RANGE_CUTOFF_SIGMAS`]: within 0.009 of `exp(−d²/2)` there (the 32nd power of
/// `1 − x/32·½` is the compound-interest limit of the exponential), and plain arithmetic,
/// so a pass evaluates it for eight pixels at once instead of looking it up one by one.
#[inline(always)]
fn range_weight(d: f32) -> f32 {
    let d2 = d * d;
    let mut w = 1.0 - d2 * (1.0 / 64.0);
    w *= w; // ^2
    w *= w; // ^4
    w *= w; // ^8
    w *= w; // ^16
    w *= w; // ^32
    if d2 <= RANGE_CUTOFF_SIGMAS * RANGE_CUTOFF_SIGMAS {
        w
    } else {
        0.0
    }
}

/// Pixels one step of [`GuidedSmoother`]'s single-channel pass computes together.
const LANES: usize = 8;

/// Separable bilateral smoothing of interleaved channels (`[pixel][channel]`) inside a
/// mask, guided by one value per pixel. Weights: `G_σ(distance) · w(Δg / σ_g)`, where `Δg`
/// is the guide difference and `w` ≈ `exp(−d²/2)` ([`range_weight`]; a range σ of 0 or ∞
/// is plain gaussian smoothing).
#[derive(Debug, Clone)]
pub struct GuidedSmoother {
    radius: usize,
    taps: [f32; MAX_TAPS],
    /// `1 / σ_g` (0: no range weighting).
    inv_range_sigma: f32,
}

impl GuidedSmoother {
    /// Smoothing with spatial σ `sigma_px` (0–[`MAX_SIGMA_PX`]) and range σ `range_sigma`
    /// (guide units; 0 or not finite: none).
    pub fn new(sigma_px: f32, range_sigma: f32) -> GuidedSmoother {
        let mut taps = [0.0; MAX_TAPS];
        let radius = kernel_with_radius(sigma_px, GUIDED_RADIUS_SIGMAS, &mut taps);
        let inv_range_sigma = if range_sigma.is_finite() && range_sigma > 0.0 {
            1.0 / range_sigma
        } else {
            0.0
        };
        GuidedSmoother {
            radius,
            taps,
            inv_range_sigma,
        }
    }

    fn weight(&self, tap: usize, g0: f32, g1: f32) -> f32 {
        let t = self.taps[tap];
        if self.inv_range_sigma == 0.0 {
            return t;
        }
        t * range_weight((g1 - g0) * self.inv_range_sigma)
    }

    /// Smooths `values` (`nx · ny · channels`, interleaved) in place inside `mask`; pixels
    /// outside it keep their values and do not contribute. `tmp` is scratch of the same
    /// size; `guide` holds `nx · ny` values.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        values: &mut [f32],
        tmp: &mut [f32],
        channels: usize,
        mask: &[u8],
        guide: &[f32],
        nx: usize,
        ny: usize,
    ) -> Result<(), CoreError> {
        let n = nx * ny;
        for (what, expected, got) in [
            ("guided values", n * channels, values.len()),
            ("guided scratch", n * channels, tmp.len()),
            ("guided mask", n, mask.len()),
            ("guided guide", n, guide.len()),
        ] {
            if expected != got {
                return Err(CoreError::LengthMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        if self.radius == 0 || channels == 0 {
            return Ok(());
        }
        self.pass(values, tmp, channels, mask, guide, nx, ny, true);
        self.pass(tmp, values, channels, mask, guide, nx, ny, false);
        Ok(())
    }

    /// [`Self::apply`] for one channel, the same result: the pass along y runs as a pass
    /// along x over the transposed plane (`mask_t`, `guide_t`: scratch of `nx · ny`), so
    /// that each tap reads the next value in memory instead of one a row away (for a
    /// single channel the strided pass along y costs several times the pass along x).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_plane(
        &self,
        values: &mut [f32],
        tmp: &mut [f32],
        mask: &[u8],
        guide: &[f32],
        mask_t: &mut [u8],
        guide_t: &mut [f32],
        nx: usize,
        ny: usize,
    ) -> Result<(), CoreError> {
        let n = nx * ny;
        for (what, expected, got) in [
            ("guided plane", n, values.len()),
            ("guided scratch", n, tmp.len()),
            ("guided mask", n, mask.len()),
            ("guided guide", n, guide.len()),
            ("guided transposed mask", n, mask_t.len()),
            ("guided transposed guide", n, guide_t.len()),
        ] {
            if expected != got {
                return Err(CoreError::LengthMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        if self.radius == 0 {
            return Ok(());
        }
        self.pass_plane(values, tmp, mask, guide, nx, ny);
        transpose(tmp, values, nx, ny);
        transpose(guide, guide_t, nx, ny);
        transpose(mask, mask_t, nx, ny);
        self.pass_plane(values, tmp, mask_t, guide_t, ny, nx);
        transpose(tmp, values, ny, nx);
        Ok(())
    }

    /// The pass along x of one channel without branches in the taps: a neighbour outside
    /// the mask or beyond the range cutoff weighs 0 (adding `0 · v` leaves the sums as
    /// skipping it does, for finite values), so the loop does not stall on the
    /// unpredictable grey/white edges. Away from the row's ends [`LANES`] pixels are
    /// computed together, each with its own sums in the same order as one at a time.
    fn pass_plane(
        &self,
        src: &[f32],
        dst: &mut [f32],
        mask: &[u8],
        guide: &[f32],
        nx: usize,
        ny: usize,
    ) {
        let r = self.radius;
        let taps = &self.taps[..2 * r + 1];
        let inv = self.inv_range_sigma;
        let weight = |t: f32, m: u8, g: f32, g0: f32| {
            let t = t * f32::from(m);
            if inv == 0.0 {
                t
            } else {
                t * range_weight((g - g0) * inv)
            }
        };
        for y in 0..ny {
            let row = y * nx;
            let (src, mask, guide) = (
                &src[row..row + nx],
                &mask[row..row + nx],
                &guide[row..row + nx],
            );
            let dst = &mut dst[row..row + nx];
            let one = |x: usize, dst: &mut [f32]| {
                if mask[x] == 0 {
                    dst[x] = src[x];
                    return;
                }
                let (lo, hi) = (x.saturating_sub(r), (x + r).min(nx - 1));
                let g0 = guide[x];
                let (mut sum, mut acc) = (0.0f32, 0.0f32);
                for q in lo..=hi {
                    let w = weight(taps[q + r - x], mask[q], guide[q], g0);
                    sum += w;
                    acc += w * src[q];
                }
                // `· (1 / sum)` as in `pass`, so both give the same bits.
                dst[x] = acc * (1.0 / sum);
            };
            // Pixels whose whole window lies inside the row: [r, nx − r).
            let (start, end) = (r.min(nx), nx.saturating_sub(r).max(r.min(nx)));
            for x in 0..start {
                one(x, dst);
            }
            let mut x = start;
            while x + LANES <= end {
                let mut g0 = [0.0f32; LANES];
                g0.copy_from_slice(&guide[x..x + LANES]);
                let (mut sum, mut acc) = ([0.0f32; LANES], [0.0f32; LANES]);
                for (k, &t) in taps.iter().enumerate() {
                    let base = x + k - r;
                    let (m, g, v) = (
                        &mask[base..base + LANES],
                        &guide[base..base + LANES],
                        &src[base..base + LANES],
                    );
                    for l in 0..LANES {
                        let w = weight(t, m[l], g[l], g0[l]);
                        sum[l] += w;
                        acc[l] += w * v[l];
                    }
                }
                for l in 0..LANES {
                    dst[x + l] = if mask[x + l] == 0 {
                        src[x + l]
                    } else {
                        acc[l] * (1.0 / sum[l])
                    };
                }
                x += LANES;
            }
            for x in x..nx {
                one(x, dst);
            }
        }
    }

    /// One 1D pass along x (`along_x`) or y from `src` into `dst`.
    #[allow(clippy::too_many_arguments)]
    fn pass(
        &self,
        src: &[f32],
        dst: &mut [f32],
        ch: usize,
        mask: &[u8],
        guide: &[f32],
        nx: usize,
        ny: usize,
        along_x: bool,
    ) {
        let r = self.radius;
        for y in 0..ny {
            for x in 0..nx {
                let i = y * nx + x;
                let out = &mut dst[i * ch..(i + 1) * ch];
                if mask[i] == 0 {
                    out.copy_from_slice(&src[i * ch..(i + 1) * ch]);
                    continue;
                }
                out.iter_mut().for_each(|o| *o = 0.0);
                let (pos, len) = if along_x { (x, nx) } else { (y, ny) };
                let (lo, hi) = (pos.saturating_sub(r), (pos + r).min(len - 1));
                let g0 = guide[i];
                let mut sum = 0.0;
                for q in lo..=hi {
                    let j = if along_x { y * nx + q } else { q * nx + x };
                    if mask[j] == 0 {
                        continue;
                    }
                    let w = self.weight(q + r - pos, g0, guide[j]);
                    if w == 0.0 {
                        continue;
                    }
                    sum += w;
                    out.iter_mut()
                        .zip(&src[j * ch..(j + 1) * ch])
                        .for_each(|(o, &v)| *o += w * v);
                }
                let inv = 1.0 / sum;
                out.iter_mut().for_each(|o| *o *= inv);
            }
        }
    }
}

/// `dst[x · ny + y] = src[y · nx + x]` for an `nx × ny` plane (x fastest).
fn transpose<T: Copy>(src: &[T], dst: &mut [T], nx: usize, ny: usize) {
    for y in 0..ny {
        for x in 0..nx {
            dst[x * ny + y] = src[y * nx + x];
        }
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

    #[cfg(feature = "std")]
    #[test]
    fn guided_smoothing_keeps_edges_of_the_guide_and_smooths_inside() {
        // Two regions of different guide (grey 40 HU, white 28 HU) and values 2 channels;
        // noise-free constants inside each region stay exactly, across the edge nothing
        // leaks; without the range weight the edge blurs.
        let (nx, ny, ch) = (16, 8, 2);
        let n = nx * ny;
        let mask = vec![1u8; n];
        let guide: Vec<f32> = (0..n)
            .map(|i| if i % nx < 8 { 40.0 } else { 28.0 })
            .collect();
        let region = |i: usize| if i % nx < 8 { [55.0, 4.0] } else { [22.0, 2.0] };
        let mut values: Vec<f32> = (0..n).flat_map(region).collect();
        let mut tmp = vec![0.0; n * ch];
        GuidedSmoother::new(2.0, 3.0)
            .apply(&mut values, &mut tmp, ch, &mask, &guide, nx, ny)
            .unwrap();
        for i in 0..n {
            let want = region(i);
            assert!(
                (values[i * ch] - want[0]).abs() < 1e-3,
                "{i}: {}",
                values[i * ch]
            );
            assert!((values[i * ch + 1] - want[1]).abs() < 1e-3);
        }
        let mut plain: Vec<f32> = (0..n).flat_map(region).collect();
        GuidedSmoother::new(2.0, 0.0)
            .apply(&mut plain, &mut tmp, ch, &mask, &guide, nx, ny)
            .unwrap();
        assert!(plain[7 * ch] < 50.0 && plain[8 * ch] > 27.0);
        // Noise averages down inside a region.
        let mut rng = crate::rng::Rng::new(4);
        let mut noisy: Vec<f32> = (0..n * ch).map(|_| 10.0 * rng.normal() as f32).collect();
        let before: f32 = noisy.iter().map(|v| v * v).sum::<f32>() / (n * ch) as f32;
        GuidedSmoother::new(2.0, 3.0)
            .apply(&mut noisy, &mut tmp, ch, &mask, &guide, nx, ny)
            .unwrap();
        let after: f32 = noisy.iter().map(|v| v * v).sum::<f32>() / (n * ch) as f32;
        assert!(after < 0.2 * before, "{before} → {after}");
        assert!(
            GuidedSmoother::new(1.0, 1.0)
                .apply(&mut noisy, &mut tmp[..3], ch, &mask, &guide, nx, ny)
                .is_err()
        );
    }

    #[test]
    fn range_weight_follows_the_gaussian_and_is_cut_at_three_sigma() {
        for i in 0..=300 {
            let d = i as f32 / 100.0;
            let want = libm::expf(-0.5 * d * d);
            assert!((range_weight(d) - want).abs() < 0.009, "{d}");
            assert_eq!(range_weight(-d), range_weight(d));
        }
        assert_eq!(range_weight(3.01), 0.0);
        assert_eq!(range_weight(0.0), 1.0);
    }

    #[cfg(feature = "std")]
    #[test]
    fn plane_smoothing_equals_the_one_channel_smoothing() {
        // 61 columns at radius 8: the eight-pixel steps and both row ends are exercised.
        let (nx, ny) = (61, 17);
        let n = nx * ny;
        let mut rng = crate::rng::Rng::new(9);
        let mask: Vec<u8> = (0..n).map(|i| u8::from(i % 7 != 3)).collect();
        let guide: Vec<f32> = (0..n)
            .map(|i| if i % nx < 11 { 40.0 } else { 28.0 } + rng.normal() as f32)
            .collect();
        let values: Vec<f32> = (0..n).map(|_| 10.0 * rng.normal() as f32).collect();
        let s = GuidedSmoother::new(3.0, 4.0);
        let (mut a, mut b, mut tmp) = (values.clone(), values.clone(), vec![0.0; n]);
        s.apply(&mut a, &mut tmp, 1, &mask, &guide, nx, ny).unwrap();
        let (mut mask_t, mut guide_t) = (vec![0u8; n], vec![0.0; n]);
        s.apply_plane(
            &mut b,
            &mut tmp,
            &mask,
            &guide,
            &mut mask_t,
            &mut guide_t,
            nx,
            ny,
        )
        .unwrap();
        assert_eq!(a, b);
        assert!(
            s.apply_plane(
                &mut b,
                &mut tmp,
                &mask,
                &guide,
                &mut mask_t[..3],
                &mut guide_t,
                nx,
                ny
            )
            .is_err()
        );
    }
}
