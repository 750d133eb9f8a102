//! The CT perfusion acquisition: slab geometry (field of view, slice thickness and count,
//! head pose), per-case scanner settings (unknown CBF/CBV gains, noise levels, bolus)
//! and the image degradations applied to the noise-free maps (gaussian blur, noise).

use super::perfusion::Bolus;
use strokeseg_shared::rng::Rng;

/// In-plane matrix of every ISLES 2018 image.
pub const MATRIX: usize = 256;

/// Reconstructed fields of view, mm: spacing = FOV / 256 = 0.78–1.09 mm.
const FOV_CHOICES_MM: [f64; 9] = [
    200.0, 210.0, 220.0, 230.0, 240.0, 250.0, 260.0, 270.0, 280.0,
];
/// Slice thicknesses, mm.
const THICKNESS_CHOICES_MM: [f64; 6] = [4.0, 5.0, 6.0, 8.0, 10.0, 12.0];
/// Slices per slab and their frequencies (mean ≈ 5.4, range 2–22, as in ISLES 2018).
const SLICE_COUNTS: [(usize, f64); 11] = [
    (2, 0.22),
    (3, 0.06),
    (4, 0.18),
    (5, 0.14),
    (6, 0.16),
    (7, 0.06),
    (8, 0.08),
    (10, 0.04),
    (12, 0.03),
    (16, 0.02),
    (22, 0.01),
];
/// Slab coverage limits in head z, mm (skull base to vertex region).
const COVERAGE_MM: (f64, f64) = (-35.0, 85.0);

/// Where and how a patient's slabs were acquired. Both slabs of a two-slab patient share
/// it: same in-plane grid, head pose and thickness, adjacent z ranges.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SlabGeometry {
    /// In-plane spacing, mm (FOV / 256).
    pub spacing_xy_mm: f64,
    /// Slice thickness = slice spacing, mm (4–12).
    pub thickness_mm: f64,
    /// Slices per slab.
    pub n_slices: usize,
    /// Slabs acquired (1 or 2).
    pub n_slabs: usize,
    /// Scanner z of the centre of the first slice of slab 0, mm.
    pub first_slice_z_mm: f64,
    /// Rotation from scanner to head axes (rows), applied after removing the translation.
    pub rotation: [[f64; 3]; 3],
    /// Position of the head centre in scanner coordinates, mm.
    pub head_centre_mm: [f64; 3],
    /// Table position added to scanner z in the NIfTI affine, mm.
    pub table_z_mm: f64,
}

fn rot_x(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = (libm::sin(a), libm::cos(a));
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}
fn rot_y(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = (libm::sin(a), libm::cos(a));
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}
fn rot_z(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = (libm::sin(a), libm::cos(a));
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}
fn mat_mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

impl SlabGeometry {
    /// Draws the geometry. `slices` bounds the slice count (inclusive);
    /// `head_semi_ap_mm` is the largest head half-length that fits (returned alongside).
    pub(crate) fn random(
        rng: &mut Rng,
        n_slabs: usize,
        slices: (usize, usize),
    ) -> (SlabGeometry, f64) {
        let fov_mm = FOV_CHOICES_MM[rng.below(FOV_CHOICES_MM.len())];
        let spacing_xy_mm = fov_mm / MATRIX as f64;
        let (lo, hi) = slices;
        let allowed: Vec<(usize, f64)> = SLICE_COUNTS
            .iter()
            .copied()
            .filter(|(n, _)| (lo..=hi).contains(n))
            .collect();
        let n_slices = if allowed.is_empty() {
            lo + rng.below(hi - lo + 1)
        } else {
            let weights: Vec<f64> = allowed.iter().map(|(_, w)| *w).collect();
            allowed.get(rng.weighted(&weights)).map_or(lo, |(n, _)| *n)
        };
        let max_slab_mm = if n_slabs > 1 { 60.0 } else { 100.0 };
        let fitting: Vec<f64> = THICKNESS_CHOICES_MM
            .iter()
            .copied()
            .filter(|t| t * n_slices as f64 <= max_slab_mm)
            .collect();
        let thickness_mm = if fitting.is_empty() {
            THICKNESS_CHOICES_MM[0]
        } else {
            fitting[rng.below(fitting.len())]
        };
        let coverage_mm = thickness_mm * (n_slices * n_slabs) as f64;
        let centre_z = rng.uniform(-5.0, 35.0);
        let z_lo = (centre_z - 0.5 * coverage_mm)
            .min(COVERAGE_MM.1 - coverage_mm)
            .max(COVERAGE_MM.0);
        let yaw = rng.uniform(-12.0, 12.0).to_radians();
        let pitch = rng.uniform(-15.0, 15.0).to_radians();
        let roll = rng.uniform(-4.0, 4.0).to_radians();
        let rotation = mat_mul(mat_mul(rot_z(yaw), rot_x(pitch)), rot_y(roll));
        // Operators centre the head and choose the FOV to fit it: small FOVs leave little
        // room for an off-centre head (and the head model shrinks to fit).
        let max_shift_mm = (0.5 * fov_mm - 100.0).clamp(1.0, 8.0);
        let shift = [
            rng.uniform(-max_shift_mm, max_shift_mm),
            rng.uniform(-max_shift_mm, max_shift_mm),
        ];
        let head_semi_ap_mm = 0.5 * fov_mm - 4.0 - shift[0].abs().max(shift[1].abs());
        let geometry = SlabGeometry {
            spacing_xy_mm,
            thickness_mm,
            n_slices,
            n_slabs,
            first_slice_z_mm: z_lo + 0.5 * thickness_mm,
            rotation,
            head_centre_mm: [shift[0], shift[1], 0.0],
            table_z_mm: rng.uniform(-60.0, 60.0).round(),
        };
        (geometry, head_semi_ap_mm)
    }

    /// Head coordinates of the scanner point `p_mm`.
    pub(crate) fn to_head(&self, p_mm: [f64; 3]) -> [f64; 3] {
        let d = [
            p_mm[0] - self.head_centre_mm[0],
            p_mm[1] - self.head_centre_mm[1],
            p_mm[2] - self.head_centre_mm[2],
        ];
        self.rotation
            .map(|row| row[0] * d[0] + row[1] * d[1] + row[2] * d[2])
    }

    /// Scanner x (or y) of the centre of voxel column `i`, mm.
    pub(crate) fn voxel_xy_mm(&self, i: usize) -> f64 {
        (i as f64 - 0.5 * (MATRIX as f64 - 1.0)) * self.spacing_xy_mm
    }

    /// Scanner z of the centre of slice `slice_idx` of slab `slab_idx`, mm.
    pub(crate) fn slice_z_mm(&self, slab_idx: usize, slice_idx: usize) -> f64 {
        self.first_slice_z_mm + (slab_idx * self.n_slices + slice_idx) as f64 * self.thickness_mm
    }

    /// z range covered by all slabs, mm (scanner frame).
    pub(crate) fn coverage_z_mm(&self) -> (f64, f64) {
        let lo = self.first_slice_z_mm - 0.5 * self.thickness_mm;
        (
            lo,
            lo + self.thickness_mm * (self.n_slices * self.n_slabs) as f64,
        )
    }

    /// NIfTI origin (world position of voxel (0, 0, 0)) of slab `slab_idx`, mm.
    pub(crate) fn origin_mm(&self, slab_idx: usize) -> [f64; 3] {
        [
            self.voxel_xy_mm(0),
            self.voxel_xy_mm(0),
            self.slice_z_mm(slab_idx, 0) + self.table_z_mm,
        ]
    }
}

/// Scanner settings of one case (one slab): drawn per case, so two slabs of a patient
/// differ in gains and noise like two separate reconstructions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CaseAcquisition {
    /// Stored CBF value per mL/100 g/min.
    pub cbf_gain: f64,
    /// Stored CBV value per mL/100 g.
    pub cbv_gain: f64,
    /// Multiplier of the perfusion-map noise (0.5–1.2).
    pub map_noise_scale: f64,
    /// Noise of the CT image, HU (2.5–5).
    pub ct_noise_hu: f64,
    /// Bolus and 4D protocol.
    pub bolus: Bolus,
}

impl CaseAcquisition {
    pub(crate) fn random(
        rng: &mut Rng,
        cbf_gain_range: (f64, f64),
        cbv_gain_range: (f64, f64),
    ) -> CaseAcquisition {
        CaseAcquisition {
            cbf_gain: rng.log_uniform(cbf_gain_range.0, cbf_gain_range.1),
            cbv_gain: rng.log_uniform(cbv_gain_range.0, cbv_gain_range.1),
            map_noise_scale: rng.uniform(0.5, 1.2),
            ct_noise_hu: rng.uniform(2.5, 5.0),
            bolus: Bolus::random(rng),
        }
    }
}

/// How the perfusion maps of one case look: what vendors' deconvolution software and
/// protocols change (see [`crate::Realism::varied_appearance`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Appearance {
    /// Gaussian blur of the maps, σ in mm (classic 1.4).
    pub map_blur_sigma_mm: f64,
    /// Multiplier of the map noise on top of the case's own level (classic 1).
    pub noise_factor: f64,
    /// Added to CBF (mL/100 g/min) and CBV (mL/100 g) inside the brain (classic 0).
    pub cbf_offset: f64,
    pub cbv_offset: f64,
    /// Tmax as written = `clamp(scale · Tmax + offset, 0, cap)` (classic 1, 0, 40 s).
    pub tmax_scale: f64,
    pub tmax_offset_s: f64,
    pub tmax_cap_s: f64,
    /// Streak artefacts: relative amplitude (0: none), streaks per slice, width in pixels,
    /// and the seed of their placement.
    pub streak_amplitude: f64,
    pub streaks_per_slice: usize,
    pub streak_width_px: f64,
    pub streak_seed: u64,
}

impl Appearance {
    /// The classic generator's fixed look.
    pub(crate) const CLASSIC: Appearance = Appearance {
        map_blur_sigma_mm: 1.4,
        noise_factor: 1.0,
        cbf_offset: 0.0,
        cbv_offset: 0.0,
        tmax_scale: 1.0,
        tmax_offset_s: 0.0,
        tmax_cap_s: 40.0,
        streak_amplitude: 0.0,
        streaks_per_slice: 0,
        streak_width_px: 1.0,
        streak_seed: 0,
    };

    /// A random vendor and protocol.
    pub(crate) fn random(rng: &mut Rng) -> Appearance {
        let caps = [40.0, 25.0, 20.0, 15.0];
        let streaky = rng.chance(0.3);
        Appearance {
            map_blur_sigma_mm: rng.uniform(0.8, 3.0),
            noise_factor: rng.log_uniform(0.5, 2.5),
            cbf_offset: rng.uniform(0.0, 3.0),
            cbv_offset: rng.uniform(0.0, 0.2),
            tmax_scale: rng.uniform(0.8, 1.25),
            tmax_offset_s: rng.uniform(-0.5, 1.0),
            tmax_cap_s: caps[rng.below(caps.len())],
            streak_amplitude: if streaky { rng.uniform(0.1, 0.3) } else { 0.0 },
            streaks_per_slice: 1 + rng.below(4),
            streak_width_px: rng.uniform(1.0, 3.0),
            streak_seed: rng.next_u64(),
        }
    }

    /// Multiplies one `n × n` slice (index `z`) by `1 + a · s(x, y)`, with `s` a few random
    /// straight streaks of alternating sign through the image, inside `mask` only.
    pub(crate) fn add_streaks(
        &self,
        slice: &mut [f64],
        mask: &[u8],
        n: usize,
        z: usize,
        label: u64,
    ) {
        if self.streak_amplitude <= 0.0 {
            return;
        }
        let mut rng = Rng::stream(self.streak_seed, &[z as u64, label]);
        let half = 0.5 * n as f64;
        let lines: Vec<(f64, f64, f64, f64)> = (0..self.streaks_per_slice)
            .map(|k| {
                let angle = rng.uniform(0.0, core::f64::consts::PI);
                let offset = rng.uniform(-0.4, 0.4) * n as f64;
                let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
                (libm::cos(angle), libm::sin(angle), offset, sign)
            })
            .collect();
        let w2 = 2.0 * self.streak_width_px * self.streak_width_px;
        for j in 0..n {
            for i in 0..n {
                let v = j * n + i;
                if mask[v] == 0 {
                    continue;
                }
                let (x, y) = (i as f64 - half, j as f64 - half);
                let s: f64 = lines
                    .iter()
                    .map(|&(c, si, off, sign)| {
                        let d = x * c + y * si - off;
                        sign * libm::exp(-d * d / w2)
                    })
                    .sum();
                slice[v] = (slice[v] * (1.0 + self.streak_amplitude * s)).max(0.0);
            }
        }
    }
}

/// Noise level after blurring as a function of the noise-free value: `σ = a + b · v`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoiseModel {
    pub floor: f64,
    pub relative: f64,
}

/// Normalised 1D gaussian taps for `sigma_px` (radius ⌈3σ⌉).
fn gaussian_taps(sigma_px: f64) -> Vec<f64> {
    let radius = libm::ceil(3.0 * sigma_px).max(1.0) as i64;
    let mut taps: Vec<f64> = (-radius..=radius)
        .map(|i| {
            let u = i as f64 / sigma_px;
            libm::exp(-0.5 * u * u)
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps
}

/// Separable gaussian blur of one `n × n` slice, restricted to `mask` when given
/// (normalised convolution: values outside the mask neither leak in nor get written).
pub(crate) fn blur_slice(values: &mut [f64], mask: Option<&[u8]>, n: usize, sigma_px: f64) {
    let taps = gaussian_taps(sigma_px);
    let r = (taps.len() / 2) as i64;
    let inside = |idx: usize| mask.is_none_or(|m| m.get(idx).is_some_and(|&v| v != 0));
    let mut tmp = vec![0.0; values.len()];
    let mut weight = vec![0.0; values.len()];
    // Pass 1 along x: tmp = Σ w v m, weight = Σ w m.
    for y in 0..n {
        for x in 0..n {
            let (mut acc, mut wsum) = (0.0, 0.0);
            for (k, &w) in taps.iter().enumerate() {
                let xx = x as i64 + k as i64 - r;
                if xx < 0 || xx >= n as i64 {
                    continue;
                }
                let idx = y * n + xx as usize;
                if inside(idx) {
                    acc += w * values[idx];
                    wsum += w;
                }
            }
            tmp[y * n + x] = acc;
            weight[y * n + x] = wsum;
        }
    }
    // Pass 2 along y on both, then divide.
    for x in 0..n {
        for y in 0..n {
            let idx = y * n + x;
            if !inside(idx) {
                continue;
            }
            let (mut acc, mut wsum) = (0.0, 0.0);
            for (k, &w) in taps.iter().enumerate() {
                let yy = y as i64 + k as i64 - r;
                if yy < 0 || yy >= n as i64 {
                    continue;
                }
                let j = yy as usize * n + x;
                acc += w * tmp[j];
                wsum += w * weight[j];
            }
            if wsum > 0.0 {
                values[idx] = acc / wsum;
            }
        }
    }
}

/// How much a unit-variance white noise field's standard deviation shrinks when blurred
/// with [`blur_slice`] (away from mask edges): `√Σw²` over the 2D kernel.
pub(crate) fn blur_noise_gain(sigma_px: f64) -> f64 {
    let s2: f64 = gaussian_taps(sigma_px).iter().map(|w| w * w).sum();
    s2 // (Σ w²)_2D = ((Σ w²)_1D)², and its square root is (Σ w²)_1D
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_isles_like() {
        let mut rng = Rng::new(9);
        let mut total = 0usize;
        let n = 2000;
        for _ in 0..n {
            let (g, semi) = SlabGeometry::random(&mut rng, 1, (2, 22));
            assert!((0.78..=1.1).contains(&g.spacing_xy_mm));
            assert!((4.0..=12.0).contains(&g.thickness_mm));
            assert!((2..=22).contains(&g.n_slices));
            assert!(semi > 94.0, "{semi}");
            let (lo, hi) = g.coverage_z_mm();
            assert!(
                lo >= COVERAGE_MM.0 - 1e-9 && hi <= COVERAGE_MM.1 + 1e-9,
                "{lo} {hi}"
            );
            total += g.n_slices;
        }
        let mean = total as f64 / n as f64;
        assert!((mean - 5.3).abs() < 0.4, "mean slices {mean}");
    }

    #[test]
    fn blur_keeps_constants_and_masks() {
        let n = 16;
        let mut v = vec![5.0; n * n];
        let mut mask = vec![1u8; n * n];
        mask[0] = 0;
        v[0] = 1000.0;
        blur_slice(&mut v, Some(&mask), n, 1.2);
        assert_eq!(v[0], 1000.0, "outside the mask is untouched");
        assert!(
            v[1..].iter().all(|x| (x - 5.0).abs() < 1e-9),
            "no leakage from outside"
        );
    }

    #[test]
    fn noise_gain_matches_measurement() {
        let n = 128;
        let sigma_px = 1.0;
        let mut rng = Rng::new(4);
        let mut v: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
        blur_slice(&mut v, None, n, sigma_px);
        let inner: Vec<f64> = (8..n - 8)
            .flat_map(|y| (8..n - 8).map(move |x| (x, y)))
            .map(|(x, y)| v[y * n + x])
            .collect();
        let var = inner.iter().map(|x| x * x).sum::<f64>() / inner.len() as f64;
        let expect = blur_noise_gain(sigma_px);
        assert!(
            (var.sqrt() / expect - 1.0).abs() < 0.08,
            "{} vs {expect}",
            var.sqrt()
        );
    }
}
