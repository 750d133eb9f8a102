//! The perfusion workload: CBF, CBV, MTT and Tmax of one small dynamic CT perfusion slice
//! with `strokeseg-shared`'s no-alloc perfusion core — bolus arrival and baseline
//! ([`curve`]), the block-circulant SVD basis of the AIF in caller buffers
//! ([`Basis::build_in`]), each tissue curve projected on the kept components, the
//! edge-preserving smoothing of those coefficients ([`GuidedSmoother`]), the residue with
//! the oscillation-index threshold ladder ([`Basis::fit`]), and the maps from the residue
//! with the core's constants ([`CBF_PER_RESIDUE`], [`CBV_PER_AREA_RATIO`]).
//!
//! It follows the steps and the configuration of the edge's computation
//! (`strokeseg_shared::perfusion::maps::SliceProcessor`, which needs `alloc`) on a slice of
//! [`DYN_NX`]×[`DYN_NY`] voxels and [`DYN_FRAMES`] frames. Two stand-ins replace the
//! `alloc` parts: the AIF is the single best-scoring arterial voxel of the slice (the
//! study-wide bounded candidate sets of `perfusion::aif` rank by the same score), and the
//! partial-volume scale is 1 (no VOF).
//!
//! Memory: the basis (`L + L·n + L²` f32, `L = 2n`: 24 KiB for 32 frames) stays in the
//! frame of [`run_perfusion`]; the f64 factorisation work (`2L² + L`, 64.5 KiB) lives only
//! in [`build_basis`]'s frame and the per-voxel buffers (the slice of frames, two
//! coefficient planes) only in [`perfusion_maps`]'s, so the peak is the basis plus the
//! larger of the two.
//!
//! [`curve`]: strokeseg_shared::perfusion::curve

use strokeseg_shared::CoreError;
use strokeseg_shared::perfusion::curve::{
    BaselineWindow, TimeGrid, area_hu_s, arrival_frame, baseline_window, curve_shape, max_value,
    smooth_temporal, to_enhancement,
};
use strokeseg_shared::perfusion::deconv::{Basis, basis_sizes};
use strokeseg_shared::perfusion::spatial::{GuidedSmoother, MaskedSmoother};
use strokeseg_shared::perfusion::{
    CBF_PER_RESIDUE, CBV_PER_AREA_RATIO, MAX_TIME_S, MIN_CBF_FOR_MTT_ML_100G_MIN, PerfusionConfig,
};

use crate::{Sink, fnv1a, hash_f32, hash_u8, sum_f32};

/// Columns of the dynamic slice.
pub const DYN_NX: usize = 8;
/// Rows of the dynamic slice.
pub const DYN_NY: usize = 8;
/// Frames of the dynamic series (32 at 1.5 s: 48 s, the first pass and the start of the
/// recirculation; 40 frames would need 101 KiB of factorisation work, over the RAM budget).
pub const DYN_FRAMES: usize = 32;
/// Frame interval, s.
pub const DYN_FRAME_INTERVAL_S: f32 = 1.5;
/// Voxels of one dynamic frame.
pub const DYN_SLICE_LEN: usize = DYN_NX * DYN_NY;
/// Values of the dynamic series, `[frame][y][x]`, HU.
pub const DYN_LEN: usize = DYN_FRAMES * DYN_SLICE_LEN;

/// Residue length of the block-circulant method, `2 · n_frames`.
const RESIDUE_LEN: usize = 2 * DYN_FRAMES;
/// Basis buffers (`s`, `ut`, `vt`) and the factorisation's f64 work, values.
const BASIS_S: usize = RESIDUE_LEN;
const BASIS_UT: usize = RESIDUE_LEN * DYN_FRAMES;
const BASIS_VT: usize = RESIDUE_LEN * RESIDUE_LEN;
const BASIS_WORK: usize = 2 * RESIDUE_LEN * RESIDUE_LEN + RESIDUE_LEN;
/// Most coefficient channels per voxel: every component plus the CBV area.
const MAX_CHANNELS: usize = RESIDUE_LEN + 1;
/// The core's tissue-mask constants (alloc-free part of `perfusion`), as the edge uses them.
pub use strokeseg_shared::perfusion::{BASELINE_SIGMA_PX, HEAD_MIN_HU, MIN_VESSEL_PEAK_HU};
/// Margin before the slice's mean-curve arrival for the provisional baseline of the AIF
/// search, s (the value of `ArterialSearch::provisional_window`).
const PROVISIONAL_MARGIN_S: f32 = 3.0;

/// The arterial input the stand-in search chose.
struct ArterialStandIn {
    /// The AIF, enhancement, HU per frame.
    aif_hu: [f32; DYN_FRAMES],
    /// Frames whose mean is the AIF's baseline.
    baseline: BaselineWindow,
    /// Frame at which the AIF reaches 10 % of its peak.
    arrival_frame: usize,
}

/// `ceil(seconds / dt_s)` frames, as the core's `libm::ceilf(seconds / dt_s) as usize`
/// (exact for the non-negative quotients of a validated config).
fn frames_ceil(seconds: f32, dt_s: f32) -> usize {
    let q = seconds / dt_s;
    let whole = q as usize;
    if (whole as f32) < q { whole + 1 } else { whole }
}

fn curve_of(frames: &[f32], v: usize, out: &mut [f32; DYN_FRAMES]) {
    for (k, c) in out.iter_mut().enumerate() {
        *c = frames.get(k * DYN_SLICE_LEN + v).copied().unwrap_or(0.0);
    }
}

/// Runs the perfusion workload on `frames` (`[frame][y][x]`, HU, [`DYN_LEN`] values). Not
/// inlined: its basis buffers must not add to the frames of the other passes.
#[inline(never)]
pub(crate) fn run_perfusion(frames: &[f32], sink: &mut impl Sink) -> Result<(), CoreError> {
    let config = PerfusionConfig::default();
    config.validate()?;
    let grid = TimeGrid::new(DYN_FRAMES, DYN_FRAME_INTERVAL_S)?;
    let (len, ls, lut, lvt, lwork) = basis_sizes(&config.method, DYN_FRAMES);
    if (len, ls, lut, lvt, lwork) != (RESIDUE_LEN, BASIS_S, BASIS_UT, BASIS_VT, BASIS_WORK) {
        return Err(CoreError::LengthMismatch {
            what: "hil perfusion basis",
            expected: BASIS_VT,
            got: lvt,
        });
    }
    let non_finite = frames.iter().filter(|v| !v.is_finite()).count();
    sink.int("perfusion.non_finite", 0, non_finite as u64);
    if non_finite > 0 {
        return Err(CoreError::NonFiniteValues {
            slice_idx: 0,
            count: non_finite,
        });
    }
    let arterial = select_aif(frames, &config, &grid, sink)?;
    let mut s = [0f32; BASIS_S];
    let mut ut = [0f32; BASIS_UT];
    let mut vt = [0f32; BASIS_VT];
    let basis = build_basis(&arterial.aif_hu, grid, &config, &mut s, &mut ut, &mut vt)?;
    sink.int("perfusion.max_components", 0, basis.max_components() as u64);
    sink.float(
        "perfusion.singular_value_sum",
        0,
        sum_f32(basis.singular_values()),
    );
    sink.bits(
        "perfusion.singular_value_bits",
        0,
        hash_f32(basis.singular_values()),
    );
    perfusion_maps(frames, &config, &grid, &arterial, &basis, sink)
}

/// The stand-in AIF search: every voxel's curve against the slice's provisional baseline
/// window, the candidates of `ArterialRule` (baseline range, peak, width, peak after the
/// window) ranked by `peak / (fwhm · time after arrival)` as `perfusion::aif` ranks them;
/// the best one's arrival, baseline window (`baseline_margin_s` before it) and enhancement.
#[inline(never)]
fn select_aif(
    frames: &[f32],
    config: &PerfusionConfig,
    grid: &TimeGrid,
    sink: &mut impl Sink,
) -> Result<ArterialStandIn, CoreError> {
    let rule = config.arterial;
    let mut mean = [0f32; DYN_FRAMES];
    for (k, m) in mean.iter_mut().enumerate() {
        let frame = frames
            .get(k * DYN_SLICE_LEN..(k + 1) * DYN_SLICE_LEN)
            .unwrap_or(&[]);
        *m = frame.iter().sum::<f32>() / DYN_SLICE_LEN as f32;
    }
    let margin = frames_ceil(PROVISIONAL_MARGIN_S, grid.dt_s);
    let slice_arrival = arrival_frame(&mean, config.skip_frames).unwrap_or(config.skip_frames);
    let window = baseline_window(slice_arrival, config.skip_frames, margin);
    sink.int("perfusion.provisional_baseline_end", 0, window.end as u64);

    let mut best: Option<(f32, usize)> = None;
    let mut candidates = 0u64;
    let mut curve = [0f32; DYN_FRAMES];
    for v in 0..DYN_SLICE_LEN {
        curve_of(frames, v, &mut curve);
        let base = to_enhancement(&mut curve, window);
        if !(rule.baseline_hu.0..=rule.baseline_hu.1).contains(&base) {
            continue;
        }
        smooth_temporal(&mut curve);
        let shape = curve_shape(&curve, grid);
        if shape.peak_hu < rule.min_peak_hu
            || shape.fwhm_s < rule.min_fwhm_s
            || shape.peak_frame < window.end
        {
            continue;
        }
        candidates += 1;
        let after_arrival_s = (shape.peak_frame + 1 - window.end) as f32 * grid.dt_s;
        let score = shape.peak_hu / (shape.fwhm_s * after_arrival_s);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, v));
        }
    }
    sink.int("perfusion.aif_candidates", 0, candidates);
    let Some((score, voxel)) = best else {
        return Err(CoreError::NoBolus {
            aif_peak_hu: 0.0,
            min_peak_hu: rule.min_peak_hu,
        });
    };
    sink.int("perfusion.aif_voxel", 0, voxel as u64);
    sink.float("perfusion.aif_score", 0, f64::from(score));

    let mut aif_hu = [0f32; DYN_FRAMES];
    curve_of(frames, voxel, &mut aif_hu);
    let no_bolus = |peak| CoreError::NoBolus {
        aif_peak_hu: peak,
        min_peak_hu: rule.min_peak_hu,
    };
    let arrival = arrival_frame(&aif_hu, config.skip_frames).ok_or(no_bolus(0.0))?;
    let margin_frames = frames_ceil(config.baseline_margin_s, grid.dt_s);
    let baseline = baseline_window(arrival, config.skip_frames, margin_frames);
    let base = to_enhancement(&mut aif_hu, baseline);
    let shape = curve_shape(&aif_hu, grid);
    if shape.peak_hu < rule.min_peak_hu || shape.area_hu_s <= 0.0 {
        return Err(no_bolus(shape.peak_hu));
    }
    sink.int("perfusion.aif_arrival_frame", 0, arrival as u64);
    sink.int("perfusion.aif_baseline_end", 0, baseline.end as u64);
    sink.float("perfusion.aif_baseline_hu", 0, f64::from(base));
    sink.float("perfusion.aif_peak_hu", 0, f64::from(shape.peak_hu));
    sink.int("perfusion.aif_peak_frame", 0, shape.peak_frame as u64);
    sink.float("perfusion.aif_fwhm_s", 0, f64::from(shape.fwhm_s));
    sink.float("perfusion.aif_area_hu_s", 0, f64::from(shape.area_hu_s));
    sink.bits("perfusion.aif_bits", 0, hash_f32(&aif_hu));
    Ok(ArterialStandIn {
        aif_hu,
        baseline,
        arrival_frame: arrival,
    })
}

/// Factorises the AIF's block-circulant convolution matrix into the caller's buffers; the
/// f64 work lives in this frame only.
#[inline(never)]
fn build_basis<'b>(
    aif_hu: &[f32],
    grid: TimeGrid,
    config: &PerfusionConfig,
    s: &'b mut [f32],
    ut: &'b mut [f32],
    vt: &'b mut [f32],
) -> Result<Basis<&'b mut [f32]>, CoreError> {
    let mut work = [0f64; BASIS_WORK];
    Basis::build_in(aif_hu, grid, config.method, s, ut, vt, &mut work)
}

/// The maps of the slice, in the order of `SliceProcessor::process`: baseline (every frame
/// before the AIF's arrival) and enhancement, head mask and smoothed baseline, the tissue
/// mask (parenchymal baseline, no vessel peak), each tissue curve temporally smoothed and
/// projected with its CBV area, the CBV areas and the guide's areas smoothed on the
/// attenuation, the guided smoothing of the coefficients, the residue fit, CBF, CBV, MTT
/// and Tmax.
#[inline(never)]
fn perfusion_maps(
    source: &[f32],
    config: &PerfusionConfig,
    grid: &TimeGrid,
    arterial: &ArterialStandIn,
    basis: &Basis<&mut [f32]>,
    sink: &mut impl Sink,
) -> Result<(), CoreError> {
    const NXY: usize = DYN_SLICE_LEN;
    let n = DYN_FRAMES;
    let mut frames = [0f32; DYN_LEN];
    match source.get(..DYN_LEN) {
        Some(src) => frames.copy_from_slice(src),
        None => {
            return Err(CoreError::LengthMismatch {
                what: "hil dynamic series",
                expected: DYN_LEN,
                got: source.len(),
            });
        }
    }
    let rule = config.mask;
    let dt = grid.dt_s;
    let aif_peak = max_value(&arterial.aif_hu);
    let vessel_peak_hu = (rule.vessel_peak_fraction * aif_peak).max(MIN_VESSEL_PEAK_HU);
    let cbv_frames = if config.cbv_window_s > 0.0 {
        let window = frames_ceil(config.cbv_window_s, dt);
        (arterial.arrival_frame + window + 1).min(n)
    } else {
        n
    };
    let aif_area_hu_s = area_hu_s(&arterial.aif_hu[..cbv_frames], dt);
    sink.int("perfusion.cbv_frames", 0, cbv_frames as u64);
    sink.float("perfusion.aif_cbv_area_hu_s", 0, f64::from(aif_area_hu_s));

    // Baseline over every frame before the AIF's arrival, enhancement in place.
    let window = BaselineWindow {
        start: arterial.baseline.start,
        end: arterial.arrival_frame.max(arterial.baseline.end),
    };
    let n_base = window.len().max(1) as f32;
    let mut baseline = [0f32; NXY];
    for k in window.start..window.end.min(n) {
        let frame = &frames[k * NXY..(k + 1) * NXY];
        baseline.iter_mut().zip(frame).for_each(|(b, &f)| *b += f);
    }
    baseline.iter_mut().for_each(|b| *b /= n_base);
    for k in 0..n {
        let frame = &mut frames[k * NXY..(k + 1) * NXY];
        frame.iter_mut().zip(&baseline).for_each(|(f, &b)| *f -= b);
    }
    let mut head = [0u8; NXY];
    for (h, &b) in head.iter_mut().zip(&baseline) {
        *h = u8::from(b > HEAD_MIN_HU);
    }
    let mut smooth_baseline = baseline;
    let (mut weight, mut tmp) = ([0f32; NXY], [0f32; NXY]);
    MaskedSmoother::new(
        &head,
        DYN_NX,
        DYN_NY,
        BASELINE_SIGMA_PX,
        &mut weight,
        &mut tmp,
    )?
    .apply(&mut smooth_baseline)?;
    sink.float("perfusion.baseline_sum", 0, sum_f32(&baseline));
    sink.bits(
        "perfusion.smooth_baseline_bits",
        0,
        hash_f32(&smooth_baseline),
    );

    let ch = basis.max_components() + 1;
    let mut coef = [0f32; NXY * MAX_CHANNELS];
    let mut coef_tmp = [0f32; NXY * MAX_CHANNELS];
    let (coef, coef_tmp) = (&mut coef[..NXY * ch], &mut coef_tmp[..NXY * ch]);
    let mut guide = [0f32; NXY];
    let mut mask = [0u8; NXY];
    let mut curve = [0f32; DYN_FRAMES];
    for v in 0..NXY {
        let out = &mut coef[v * ch..(v + 1) * ch];
        let b = smooth_baseline[v];
        if !(head[v] != 0 && b >= rule.min_hu && b <= rule.max_hu) {
            continue;
        }
        let mut sum = 0.0;
        for (k, c) in curve.iter_mut().enumerate() {
            *c = frames[k * NXY + v];
            sum += *c;
        }
        guide[v] = baseline[v] + sum / n as f32;
        smooth_temporal(&mut curve);
        if max_value(&curve) > vessel_peak_hu {
            continue;
        }
        mask[v] = 1;
        let (c, area) = out.split_at_mut(ch - 1);
        basis.project(&curve, c)?;
        area[0] = area_hu_s(&curve[..cbv_frames], dt);
    }
    sink.int(
        "perfusion.tissue_voxels_before_cbv",
        0,
        mask.iter().filter(|&&m| m != 0).count() as u64,
    );
    sink.bits("perfusion.coef_bits", 0, hash_f32(coef));
    // The first-pass areas, smoothed on the attenuation for CBV and for the coefficients'
    // guide, as `SliceProcessor` does.
    let (mut mask_t, mut guide_t) = ([0u8; NXY], [0f32; NXY]);
    let mut smoothed_areas = |sigma_px: f32, range_hu: f32| -> Result<[f32; NXY], CoreError> {
        let mut plane = [0f32; NXY];
        for (a, c) in plane.iter_mut().zip(coef.chunks_exact(ch)) {
            *a = c[ch - 1];
        }
        GuidedSmoother::new(sigma_px, range_hu).apply_plane(
            &mut plane,
            &mut tmp,
            &mask,
            &guide,
            &mut mask_t,
            &mut guide_t,
            DYN_NX,
            DYN_NY,
        )?;
        Ok(plane)
    };
    let cbv_sigma = config.cbv_spatial_sigma_px;
    let cbv_area = if cbv_sigma > 0.0 {
        Some(smoothed_areas(cbv_sigma, config.cbv_range_hu)?)
    } else {
        None
    };
    let per_hu = config.guide_area_hu_s_per_hu;
    let coef_guide = if per_hu > 0.0 {
        let mut g = smoothed_areas(config.guide_area_sigma_px, config.guide_area_range_hu)?;
        for (g, &attenuation) in g.iter_mut().zip(&guide) {
            *g = attenuation + *g / per_hu;
        }
        g
    } else {
        guide
    };
    if let Some(areas) = &cbv_area {
        sink.bits("perfusion.cbv_area_bits", 0, hash_f32(areas));
    }
    sink.bits("perfusion.coef_guide_bits", 0, hash_f32(&coef_guide));
    if config.spatial_sigma_px > 0.0 {
        GuidedSmoother::new(config.spatial_sigma_px, config.spatial_range_hu).apply(
            coef,
            coef_tmp,
            ch,
            &mask,
            &coef_guide,
            DYN_NX,
            DYN_NY,
        )?;
    }
    sink.bits("perfusion.smoothed_coef_bits", 0, hash_f32(coef));

    let mut residue = [0f32; RESIDUE_LEN];
    let mut scratch = [0f32; RESIDUE_LEN];
    let mut maps = [[0f32; NXY]; 4];
    let mut thresholds = 0u64;
    for v in 0..NXY {
        if mask[v] == 0 {
            continue;
        }
        let (c, area) = coef[v * ch..(v + 1) * ch].split_at(ch - 1);
        let cbv = f64::from(area[0] / aif_area_hu_s) * CBV_PER_AREA_RATIO;
        if cbv > f64::from(rule.max_cbv_ml_100g) {
            mask[v] = 0;
            continue;
        }
        let fit = basis.fit(c, &mut residue, &mut scratch)?;
        let vi = v as u32;
        sink.float("perfusion.threshold", vi, f64::from(fit.threshold));
        sink.float(
            "perfusion.oscillation_index",
            vi,
            f64::from(fit.oscillation_index),
        );
        thresholds = thresholds.wrapping_add(u64::from(fit.threshold.to_bits()));
        let cbf = f64::from(fit.r_max_per_s) * CBF_PER_RESIDUE;
        let cbv = match &cbv_area {
            Some(areas) => f64::from(areas[v] / aif_area_hu_s) * CBV_PER_AREA_RATIO,
            None => cbv,
        }
        .max(0.0);
        maps[0][v] = cbf as f32;
        maps[1][v] = cbv as f32;
        maps[3][v] = fit.tmax_s.min(MAX_TIME_S as f32);
        if cbf >= MIN_CBF_FOR_MTT_ML_100G_MIN {
            maps[2][v] = (60.0 * cbv / cbf).min(MAX_TIME_S) as f32;
        }
    }
    sink.int(
        "perfusion.tissue_voxels",
        0,
        mask.iter().filter(|&&m| m != 0).count() as u64,
    );
    sink.int("perfusion.tissue_mask_hash", 0, hash_u8(&mask));
    sink.int(
        "perfusion.threshold_digest",
        0,
        fnv1a(thresholds.to_le_bytes()),
    );
    const NAMES: [(&str, &str, &str); 4] = [
        ("perfusion.cbf", "perfusion.cbf_sum", "perfusion.cbf_bits"),
        ("perfusion.cbv", "perfusion.cbv_sum", "perfusion.cbv_bits"),
        ("perfusion.mtt", "perfusion.mtt_sum", "perfusion.mtt_bits"),
        (
            "perfusion.tmax",
            "perfusion.tmax_sum",
            "perfusion.tmax_bits",
        ),
    ];
    for (map, (each, sum, bits)) in maps.iter().zip(NAMES) {
        for (v, &value) in map.iter().enumerate() {
            if mask[v] != 0 {
                sink.float(each, v as u32, f64::from(value));
            }
        }
        sink.float(sum, 0, sum_f32(map));
        sink.bits(bits, 0, hash_f32(map));
    }
    Ok(())
}
