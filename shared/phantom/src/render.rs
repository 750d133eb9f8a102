//! Renders one case from a patient model: samples the 3D model on the slab's voxel grid
//! (with sub-samples through the slice thickness for partial volume), then applies the
//! scanner (blur, noise) and computes the 4D series on demand.

use super::anatomy::{Hemisphere, Tissue};
use super::lesion::Zone;
use super::model::PatientModel;
use super::perfusion::{ExactCurveModel, Haemo, TissueCurveModel, apparent_tmax_s};
use super::scanner::{
    Appearance, CaseAcquisition, MATRIX, NoiseModel, blur_noise_gain, blur_slice,
};
use super::{DatasetOptions, PhantomCase, PhantomTruth};
use crate::tag;
// MTT is undefined (0) below this CBF and times are capped as in the computed maps.
use strokeseg_shared::perfusion::{MAX_TIME_S, MIN_CBF_FOR_MTT_ML_100G_MIN as MIN_CBF_FOR_MTT};
use strokeseg_shared::rng::{Rng, derive_seed};

/// Blur of the CT (gaussian σ), mm.
const CT_BLUR_SIGMA_MM: f64 = 0.5;

const CBF_NOISE: NoiseModel = NoiseModel {
    floor: 1.5,
    relative: 0.10,
};
const CBV_NOISE: NoiseModel = NoiseModel {
    floor: 0.12,
    relative: 0.08,
};
const TIME_NOISE: NoiseModel = NoiseModel {
    floor: 0.25,
    relative: 0.06,
};

/// Vessel sub-samples this close to the midline are the superior sagittal sinus (venous),
/// mm; the others are arteries ([`crate::DynamicSeries::exact`]).
const VENOUS_MIDLINE_MM: f64 = 6.0;
/// Extra dispersion per second of arrival delay, s/s, and the most dispersion, s.
const DISPERSION_PER_DELAY: f64 = 0.15;
const MAX_DISPERSION_S: f64 = 3.0;

/// Noise stream labels within a case.
mod stream {
    pub const CT: u64 = 0;
    pub const CBF: u64 = 1;
    pub const CBV: u64 = 2;
    pub const TMAX: u64 = 4;
    pub const PWI: u64 = 5;
}

/// Sub-samples through a slice of `thickness_mm`: odd (so the majority is defined and
/// one sample sits at the slice centre), about one per 1.5 mm.
fn sub_samples(thickness_mm: f64) -> usize {
    2 * (libm::floor(thickness_mm / 3.0).max(1.0) as usize) + 1
}

/// Per-voxel accumulator over sub-samples.
#[derive(Default)]
struct VoxelAcc {
    hu: f64,
    cbf: f64,
    cbv: f64,
    tmax_cbf: f64,
    intracranial: usize,
    core: usize,
    hypoperfused: usize,
    dwi: usize,
    tissue: [usize; Tissue::COUNT],
    /// Vessel sub-samples (exact dynamic series only).
    vessel: usize,
    /// Of those, venous ones.
    venous: usize,
}

/// Samples the model and applies the scanner for case `case_index` = slab `slab_index`.
pub(crate) fn render_case(
    seed: u64,
    case_index: usize,
    patient_index: usize,
    slab_index: usize,
    patient: &PatientModel,
    opts: &DatasetOptions,
) -> PhantomCase {
    let g = &patient.geometry;
    let mut case_rng = Rng::stream(seed, &[tag::CASE, case_index as u64]);
    let mut acq = CaseAcquisition::random(&mut case_rng, opts.cbf_gain_range, opts.cbv_gain_range);
    let exact = opts.dynamic.exact;
    let mut base_dispersion_s = 0.0;
    if exact {
        let d = &opts.dynamic;
        let mut rng = Rng::stream(seed, &[tag::DYNAMIC, case_index as u64]);
        let (lo, hi) = d.n_frames;
        acq.bolus.n_frames = lo + rng.below(hi - lo + 1);
        let (lo, hi) = d.frame_interval_s;
        acq.bolus.frame_interval_s = libm::round(rng.uniform(lo, hi) * 10.0) / 10.0;
        acq.bolus.noise_hu = d.noise_hu;
        let (lo, hi) = d.dispersion_s;
        base_dispersion_s = rng.uniform(lo, hi);
    }
    let look = if opts.realism.varied_appearance {
        Appearance::random(&mut Rng::stream(
            seed,
            &[tag::APPEARANCE, case_index as u64],
        ))
    } else {
        Appearance::CLASSIC
    };
    let n = MATRIX;
    let nxy = n * n;
    let nz = g.n_slices;
    let n_vox = nxy * nz;
    let n_sub = sub_samples(g.thickness_mm);

    let mut truth = PhantomTruth {
        tissue: vec![0; n_vox],
        zone: vec![0; n_vox],
        hemisphere: vec![0; n_vox],
        brain_mask: vec![0; n_vox],
        cbf_ml_100g_min: vec![0.0; n_vox],
        cbv_ml_100g: vec![0.0; n_vox],
        mtt_s: vec![0.0; n_vox],
        tmax_s: vec![0.0; n_vox],
        ct_hu: vec![0.0; n_vox],
        delay_s: if exact { vec![0.0; n_vox] } else { Vec::new() },
        dispersion_s: if exact { vec![0.0; n_vox] } else { Vec::new() },
        vessel_fraction: if exact { vec![0.0; n_vox] } else { Vec::new() },
        venous: if exact { vec![0; n_vox] } else { Vec::new() },
        lesion_site: patient.lesions.first().map(|l| (l.hemisphere, l.territory)),
        n_lesions: patient.lesions.len(),
        lesion_volume_ml: 0.0,
        core_volume_ml: 0.0,
        hypoperfused_volume_ml: 0.0,
    };
    let mut ot = vec![0.0; n_vox];

    for z in 0..nz {
        let zc = g.slice_z_mm(slab_index, z);
        for j in 0..n {
            let y = g.voxel_xy_mm(j);
            for i in 0..n {
                let x = g.voxel_xy_mm(i);
                let v = z * nxy + j * n + i;
                let mut acc = VoxelAcc::default();
                let mut centre_hemisphere = 0u8;
                for s in 0..n_sub {
                    let zs = zc + ((s as f64 + 0.5) / n_sub as f64 - 0.5) * g.thickness_mm;
                    let p = g.to_head([x, y, zs]);
                    let a = patient.anatomy.sample(p);
                    acc.tissue[a.tissue as usize] += 1;
                    if s == n_sub / 2 && a.intracranial {
                        centre_hemisphere = match a.hemisphere {
                            Hemisphere::Left => 1,
                            Hemisphere::Right => 2,
                        };
                    }
                    let mut hu = patient.physiology.hu.of(&a);
                    if !a.intracranial {
                        acc.hu += hu;
                        continue;
                    }
                    acc.intracranial += 1;
                    let mut h = patient.physiology.healthy(&a, p);
                    let mut zone = Zone::Healthy;
                    let mut dwi = false;
                    for lesion in &patient.lesions {
                        let (effect, q_pen, q_core) = lesion.effect(p, &a);
                        h = lesion.modulate(h, q_pen, q_core, &patient.physiology);
                        if effect.zone == Zone::Core && zone != Zone::Core {
                            hu += lesion.core_ct_offset_hu;
                        }
                        zone = zone.max(effect.zone);
                        dwi |= effect.dwi;
                    }
                    match zone {
                        Zone::Core => {
                            acc.core += 1;
                            acc.hypoperfused += 1;
                        }
                        Zone::Penumbra => acc.hypoperfused += 1,
                        Zone::Healthy => {}
                    }
                    acc.dwi += usize::from(dwi);
                    (h, hu) = patient.confounders.apply(p, &a, h, hu);
                    acc.hu += hu;
                    if exact && a.tissue == Tissue::Vessel {
                        // Blood: its curve is the AIF or the VOF, not a tissue residue.
                        acc.vessel += 1;
                        acc.venous += usize::from(p[0].abs() < VENOUS_MIDLINE_MM);
                        continue;
                    }
                    acc.cbf += h.cbf_ml_100g_min;
                    acc.cbv += h.cbv_ml_100g;
                    acc.tmax_cbf += h.tmax_s * h.cbf_ml_100g_min;
                }
                let nf = n_sub as f64;
                let majority = |count: usize| 2 * count > n_sub;
                truth.ct_hu[v] = acc.hu / nf;
                truth.tissue[v] = acc
                    .tissue
                    .iter()
                    .enumerate()
                    .fold(
                        (0usize, 0usize),
                        |best, (t, &c)| if c > best.1 { (t, c) } else { best },
                    )
                    .0 as u8;
                truth.hemisphere[v] = centre_hemisphere;
                if exact {
                    truth.vessel_fraction[v] = acc.vessel as f64 / nf;
                    truth.venous[v] = u8::from(2 * acc.venous > acc.vessel);
                }
                if !majority(acc.intracranial) {
                    continue;
                }
                truth.brain_mask[v] = 1;
                let cbf = acc.cbf / nf;
                let cbv = acc.cbv / nf;
                truth.cbf_ml_100g_min[v] = cbf;
                truth.cbv_ml_100g[v] = cbv;
                if acc.cbf > 0.0 {
                    truth.tmax_s[v] = acc.tmax_cbf / acc.cbf;
                }
                if cbf > 1e-6 {
                    truth.mtt_s[v] = 60.0 * cbv / cbf;
                }
                if exact {
                    let delay_s = truth.tmax_s[v];
                    let beta_s =
                        (base_dispersion_s + DISPERSION_PER_DELAY * delay_s).min(MAX_DISPERSION_S);
                    truth.delay_s[v] = delay_s;
                    truth.dispersion_s[v] = beta_s;
                    if cbf > 1e-6 {
                        truth.tmax_s[v] = delay_s + apparent_tmax_s(truth.mtt_s[v], beta_s);
                    }
                }
                truth.zone[v] = if majority(acc.core) {
                    Zone::Core as u8
                } else if majority(acc.hypoperfused) {
                    Zone::Penumbra as u8
                } else {
                    Zone::Healthy as u8
                };
                if majority(acc.dwi) {
                    ot[v] = 1.0;
                }
            }
        }
    }

    // Raters outline DWI lesions with smooth contours: close one-voxel gaps left by
    // sulcal CSF inside the lesion.
    for (slice, mask) in ot.chunks_mut(nxy).zip(truth.brain_mask.chunks(nxy)) {
        close_mask(slice, mask, n);
    }

    let voxel_ml = g.spacing_xy_mm * g.spacing_xy_mm * g.thickness_mm / 1000.0;
    truth.lesion_volume_ml = ot.iter().filter(|&&o| o > 0.0).count() as f64 * voxel_ml;
    truth.core_volume_ml = truth
        .zone
        .iter()
        .filter(|&&z| z == Zone::Core as u8)
        .count() as f64
        * voxel_ml;
    truth.hypoperfused_volume_ml = truth
        .zone
        .iter()
        .filter(|&&z| z != Zone::Healthy as u8)
        .count() as f64
        * voxel_ml;

    let noise_stream = |label: u64| Rng::stream(seed, &[tag::NOISE, case_index as u64, label]);
    let ct_sigma_px = CT_BLUR_SIGMA_MM / g.spacing_xy_mm;
    let mut ct_hu = truth.ct_hu.clone();
    let mut rng = noise_stream(stream::CT);
    for slice in ct_hu.chunks_mut(nxy) {
        blur_slice(slice, None, n, ct_sigma_px);
        for v in slice.iter_mut() {
            *v += acq.ct_noise_hu * rng.normal();
        }
    }

    let map_sigma_px = look.map_blur_sigma_mm / g.spacing_xy_mm;
    // `shift(v)` is the vendor's rescaling of a map value, identity in the classic look.
    let degrade = |clean: &[f64], model: NoiseModel, label: u64, shift: &dyn Fn(f64) -> f64| {
        let mut rng = noise_stream(label);
        let pre = acq.map_noise_scale * look.noise_factor / blur_noise_gain(map_sigma_px);
        let mut out = clean.to_vec();
        for (z, (slice, mask)) in out
            .chunks_mut(nxy)
            .zip(truth.brain_mask.chunks(nxy))
            .enumerate()
        {
            for (v, &m) in slice.iter_mut().zip(mask) {
                let e = rng.normal();
                if m != 0 {
                    *v += (model.floor + model.relative * *v) * pre * e;
                }
            }
            blur_slice(slice, Some(mask), n, map_sigma_px);
            look.add_streaks(slice, mask, n, z, label);
            for (v, &m) in slice.iter_mut().zip(mask) {
                *v = if m != 0 { shift(*v) } else { 0.0 };
            }
        }
        out
    };
    let cbf_ml_100g_min = degrade(&truth.cbf_ml_100g_min, CBF_NOISE, stream::CBF, &|v| {
        v.max(0.0) + look.cbf_offset
    });
    let cbv_ml_100g = degrade(&truth.cbv_ml_100g, CBV_NOISE, stream::CBV, &|v| {
        v.max(0.0) + look.cbv_offset
    });
    // MTT as deconvolution software computes it: the ratio of the (noisy) CBV and CBF
    // maps, so its noise follows theirs; undefined (0) where the flow is below noise.
    let mtt_s: Vec<f64> = cbv_ml_100g
        .iter()
        .zip(&cbf_ml_100g_min)
        .map(|(&cbv, &cbf)| {
            if cbf >= MIN_CBF_FOR_MTT {
                (60.0 * cbv / cbf).min(MAX_TIME_S)
            } else {
                0.0
            }
        })
        .collect();
    let tmax_s = degrade(&truth.tmax_s, TIME_NOISE, stream::TMAX, &|v| {
        if opts.realism.varied_appearance {
            (look.tmax_scale * v.clamp(0.0, MAX_TIME_S) + look.tmax_offset_s)
                .clamp(0.0, look.tmax_cap_s)
        } else {
            v.clamp(0.0, MAX_TIME_S)
        }
    });

    PhantomCase {
        case_index,
        patient_index,
        slab_index,
        n_slabs: g.n_slabs,
        dims: [n, n, nz],
        spacing_mm: [g.spacing_xy_mm, g.spacing_xy_mm, g.thickness_mm],
        origin_mm: g.origin_mm(slab_index),
        ct_hu,
        cbf_ml_100g_min,
        cbv_ml_100g,
        mtt_s,
        tmax_s,
        ot,
        cbf_gain: acq.cbf_gain,
        cbv_gain: acq.cbv_gain,
        bolus: acq.bolus,
        truth,
        dynamic: opts.dynamic,
        pwi_noise_seed: derive_seed(seed, &[tag::NOISE, case_index as u64, stream::PWI]),
    }
}

/// Binary closing (3 × 3 dilation, then 3 × 3 erosion) of one `n × n` slice of a 0/1
/// mask, kept inside `within`.
fn close_mask(values: &mut [f64], within: &[u8], n: usize) {
    let pass = |src: &[f64], dilate: bool| -> Vec<f64> {
        let mut out = vec![0.0; src.len()];
        for y in 0..n {
            for x in 0..n {
                let mut any = false;
                // Outside the image counts as background.
                let mut all = x > 0 && y > 0 && x + 1 < n && y + 1 < n;
                for yy in y.saturating_sub(1)..(y + 2).min(n) {
                    for xx in x.saturating_sub(1)..(x + 2).min(n) {
                        let on = src[yy * n + xx] > 0.0;
                        any |= on;
                        all &= on;
                    }
                }
                out[y * n + x] = f64::from(u8::from(if dilate { any } else { all }));
            }
        }
        out
    };
    let dilated = pass(values, true);
    let closed = pass(&dilated, false);
    for ((v, c), &m) in values.iter_mut().zip(closed).zip(within) {
        *v = if m != 0 && (c > 0.0 || *v > 0.0) {
            1.0
        } else {
            0.0
        };
    }
}

/// The 4D series of `case` as int16 HU, `[t][z][y][x]` (see [`PhantomCase::pwi_hu`]).
pub(crate) fn pwi_series(case: &PhantomCase, noise_seed: u64) -> Vec<i16> {
    if case.dynamic.exact {
        return exact_pwi_series(case, noise_seed);
    }
    let model = TissueCurveModel::new(&case.bolus);
    let nt = case.bolus.n_frames;
    let nxy = case.slice_voxels();
    let nz = case.n_slices();
    let mut out = vec![0i16; nt * nz * nxy];
    let mut rng = Rng::new(noise_seed);
    let mut curve = vec![0.0; nt];
    let mut scratch = Vec::new();
    let t = &case.truth;
    for z in 0..nz {
        for idx in 0..nxy {
            let v = z * nxy + idx;
            let h = Haemo {
                cbf_ml_100g_min: t.cbf_ml_100g_min.get(v).copied().unwrap_or(0.0),
                cbv_ml_100g: t.cbv_ml_100g.get(v).copied().unwrap_or(0.0),
                tmax_s: t.tmax_s.get(v).copied().unwrap_or(0.0),
            };
            model.enhancement_hu(&h, &mut scratch, &mut curve);
            let base = t.ct_hu.get(v).copied().unwrap_or(-1000.0);
            for (frame, &c) in curve.iter().enumerate() {
                let hu = base + c + case.bolus.noise_hu * rng.normal();
                if let Some(o) = out.get_mut((frame * nz + z) * nxy + idx) {
                    *o = libm::round(hu).clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
                }
            }
        }
    }
    out
}

/// The series of [`crate::DynamicSeries::exact`], `[t][z][y][x]` int16 HU.
fn exact_pwi_series(case: &PhantomCase, noise_seed: u64) -> Vec<i16> {
    let model = ExactCurveModel::new(&case.bolus);
    let nt = case.bolus.n_frames;
    let nxy = case.slice_voxels();
    let nz = case.n_slices();
    let nx = case.dims[0];
    let mut out = vec![0i16; nt * nz * nxy];
    let mut rng = Rng::new(noise_seed);
    let mut curve = vec![0.0; nt];
    let (mut s1, mut s2) = (Vec::new(), Vec::new());
    let t = &case.truth;
    let at = |values: &[f64], v: usize| values.get(v).copied().unwrap_or(0.0);
    for z in 0..nz {
        for idx in 0..nxy {
            let v = z * nxy + idx;
            let h = Haemo {
                cbf_ml_100g_min: at(&t.cbf_ml_100g_min, v),
                cbv_ml_100g: at(&t.cbv_ml_100g, v),
                tmax_s: 0.0,
            };
            model.enhancement_hu(
                &h,
                at(&t.delay_s, v),
                at(&t.dispersion_s, v),
                at(&t.vessel_fraction, v),
                t.venous.get(v).is_some_and(|&x| x != 0),
                (&mut s1, &mut s2),
                &mut curve,
            );
            let base = t.ct_hu.get(v).copied().unwrap_or(-1000.0);
            for (frame, &c) in curve.iter().enumerate() {
                let hu = base + c + case.bolus.noise_hu * rng.normal();
                if let Some(o) = out.get_mut((frame * nz + z) * nxy + idx) {
                    *o = libm::round(hu).clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
                }
            }
        }
    }
    let shift = case.dynamic.motion_shift_px.min(nx.saturating_sub(1));
    if shift > 0 {
        // Head motion: from frame 2/3 on, every row moves `shift` pixels towards +x.
        for plane in out.chunks_mut(nxy).skip(nz * (2 * nt / 3)) {
            for row in plane.chunks_mut(nx) {
                row.copy_within(0..nx - shift, shift);
                let edge = row[shift];
                row[..shift].iter_mut().for_each(|v| *v = edge);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_fills_one_voxel_gaps_only() {
        let n = 8;
        let mut m = vec![0.0; n * n];
        for y in 2..6 {
            for x in 1..7 {
                m[y * n + x] = if x == 4 { 0.0 } else { 1.0 };
            }
        }
        m[7 * n + 7] = 1.0; // an isolated voxel stays
        let within = vec![1u8; n * n];
        close_mask(&mut m, &within, n);
        assert!((2..6).all(|y| m[y * n + 4] == 1.0), "gap filled");
        assert_eq!(m[7 * n + 7], 1.0);
        assert_eq!(m[0], 0.0);
        assert_eq!(m.iter().filter(|&&v| v > 0.0).count(), 4 * 6 + 1);
    }

    #[test]
    fn sub_samples_are_odd_and_dense_enough() {
        for t in [4.0, 5.0, 6.0, 8.0, 10.0, 12.0] {
            let n = sub_samples(t);
            assert_eq!(n % 2, 1);
            assert!(t / n as f64 <= 2.0, "{t} mm → {n}");
        }
    }
}
