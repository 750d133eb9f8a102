//! The HIL workload: `strokeseg-shared`'s two segmentation paths (model and threshold rule)
//! over a small fixed study, and its perfusion core (maps from a small dynamic series,
//! [`perfusion`]), emitting every intermediate result as a named check.
//!
//! This one crate runs twice: in the Cortex-M4F firmware (`tests/hil/firmware`) and in
//! `cargo xtask hil` on the host. The host run records the checks as golden values
//! (`golden.rs`); the firmware run compares against them. Only `core` and
//! `strokeseg_shared` are used, nothing allocates, and every buffer is a fixed-size local of
//! one pass function (`#[inline(never)]`), so the passes overlay on the stack and the peak
//! memory is that of the largest pass, whatever the number of slices.
//!
//! The study: [`N_SLICES`] slices of [`NX`]×[`NY`] pixels with the five channels of the
//! default `PreprocessConfig` (CBF, CBV, MTT, Tmax, CT), stored `[slice][channel][y][x]`, and
//! a ground-truth mask `[slice][y][x]`. The model is a fixed stand-in ([`stand_in_logits`]),
//! not a network: the firmware checks the shared code around the model, not tract. The
//! dynamic series: [`DYN_FRAMES`] frames of one [`DYN_NX`]×[`DYN_NY`] slice, `[frame][y][x]`
//! in HU.

#![no_std]

pub mod perfusion;

pub use perfusion::{
    BASELINE_SIGMA_PX, DYN_FRAME_INTERVAL_S, DYN_FRAMES, DYN_LEN, DYN_NX, DYN_NY, DYN_SLICE_LEN,
    HEAD_MIN_HU, MIN_VESSEL_PEAK_HU,
};

use strokeseg_shared::brain_mask::compute_brain_mask;
use strokeseg_shared::config::BrainMaskConfig;
use strokeseg_shared::metrics::{ConfusionCounts, MetricsError, SegmentationMetrics};
use strokeseg_shared::perfusion_rule::{
    CoreRule, HealthyCbfStats, HealthyReference, core_mask_slice, rule_preprocess_config,
};
use strokeseg_shared::postprocess::{
    ComponentScratch, ComponentStats, PostprocessConfig, PostprocessError,
    lesion_probability_from_logits, remove_small_components, threshold_mask,
};
use strokeseg_shared::preprocess::{
    GridMap, SliceGeometry, SliceScratch, prepare_model_input, sanitize_non_finite,
};
use strokeseg_shared::stats::{NormParams, VolumeStats};
use strokeseg_shared::{CoreError, PreprocessConfig};

/// Columns of a fixture slice.
pub const NX: usize = 32;
/// Rows of a fixture slice.
pub const NY: usize = 28;
/// Slices in the fixture study.
pub const N_SLICES: usize = 4;
/// Channels of the fixture (the default config's CBF, CBV, MTT, Tmax, CT, in that order).
pub const N_CHANNELS: usize = 5;
/// Pixels in one slice.
pub const SLICE_LEN: usize = NX * NY;
/// Column spacing, mm (anisotropic on purpose: x and y are resampled differently).
pub const SPACING_X_MM: f32 = 0.9;
/// Row spacing, mm.
pub const SPACING_Y_MM: f32 = 1.1;
/// Slice thickness, mm (for volumes only).
pub const SLICE_THICKNESS_MM: f32 = 5.0;
/// Model grid width at the default 1.5 mm: pads the 28.8 mm field of view in x.
pub const MODEL_W: usize = 20;
/// Model grid height at 1.5 mm: crops the 30.8 mm field of view in y.
pub const MODEL_H: usize = 18;
/// Fixture voxels, `[slice][channel][y][x]`.
pub const VOXELS_LEN: usize = N_SLICES * N_CHANNELS * SLICE_LEN;
/// Ground-truth voxels, `[slice][y][x]`.
pub const TRUTH_LEN: usize = N_SLICES * SLICE_LEN;

const MODEL_LEN: usize = MODEL_W * MODEL_H;
/// Fixture channel of CBF and of Tmax (config order of the default config).
const CBF: usize = 0;
const TMAX: usize = 3;

/// The fixed study the workload runs on.
#[derive(Clone, Copy)]
pub struct Fixture<'a> {
    /// Raw channel values (may hold NaN/±inf), `[slice][channel][y][x]`, [`VOXELS_LEN`] long.
    pub voxels: &'a [f32],
    /// Ground-truth lesion mask, `[slice][y][x]`, [`TRUTH_LEN`] long.
    pub truth: &'a [u8],
    /// The dynamic perfusion series, `[frame][y][x]`, HU, [`DYN_LEN`] long.
    pub dynamic: &'a [f32],
}

/// One expected result, as recorded on the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expected {
    /// An integer (counts, hashes of integer data): must be identical.
    Int(u64),
    /// A floating-point result: must agree within [`FLOAT_REL_TOLERANCE`].
    Float(f64),
    /// FNV-1a hash of the bit patterns of a float buffer: a difference means the buffers are
    /// not bit-identical, which is reported but is not a failure on its own (the float
    /// summaries next to it carry the tolerance).
    Bits(u64),
}

/// One named check: `name[index]` and its expected value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Golden {
    /// What was measured (stable identifier).
    pub name: &'static str,
    /// Which one (slice, channel, …).
    pub index: u32,
    /// The host's value.
    pub expected: Expected,
}

/// Relative tolerance for [`Expected::Float`] checks: `|fw − host| ≤ tol · max(1, |host|)`.
///
/// Both sides run the same Rust code with IEEE-754 `f32`/`f64` arithmetic, no fused
/// multiply-add (Rust never contracts), the same software `libm`, and the Cortex-M4F's FPU
/// in its reset mode (no flush-to-zero, round to nearest), so the results are expected to be
/// bit-identical; the tolerance (about 8 f32 ULPs) only guards against a toolchain that
/// lowers an operation differently.
pub const FLOAT_REL_TOLERANCE: f64 = 1e-6;

/// Receives the workload's results in a fixed order.
pub trait Sink {
    /// An integer result.
    fn int(&mut self, name: &'static str, index: u32, value: u64);
    /// A floating-point result.
    fn float(&mut self, name: &'static str, index: u32, value: f64);
    /// The FNV-1a hash of a float buffer's bit patterns.
    fn bits(&mut self, name: &'static str, index: u32, hash: u64);
}

/// Why the workload stopped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PipelineError {
    /// Preprocessing, statistics or the threshold rule refused its input.
    Core(CoreError),
    /// Postprocessing refused its input.
    Postprocess(PostprocessError),
    /// A metric could not be computed.
    Metrics(MetricsError),
    /// The fixture does not have the lengths of [`VOXELS_LEN`] / [`TRUTH_LEN`] /
    /// [`DYN_LEN`].
    FixtureSize {
        /// Voxels given.
        voxels: usize,
        /// Truth voxels given.
        truth: usize,
        /// Dynamic series values given.
        dynamic: usize,
    },
}

impl From<CoreError> for PipelineError {
    fn from(e: CoreError) -> Self {
        PipelineError::Core(e)
    }
}
impl From<PostprocessError> for PipelineError {
    fn from(e: PostprocessError) -> Self {
        PipelineError::Postprocess(e)
    }
}
impl From<MetricsError> for PipelineError {
    fn from(e: MetricsError) -> Self {
        PipelineError::Metrics(e)
    }
}

/// The slice geometry of the fixture.
pub fn geometry() -> SliceGeometry {
    SliceGeometry {
        nx: NX,
        ny: NY,
        spacing_x_mm: SPACING_X_MM,
        spacing_y_mm: SPACING_Y_MM,
    }
}

/// The model path's config: the default (five channels, robust percentiles, CT window,
/// 1.5 mm) on a [`MODEL_W`]×[`MODEL_H`] grid, with the CT Hounsfield rule on.
pub fn model_config() -> PreprocessConfig {
    let defaults = PreprocessConfig::default();
    PreprocessConfig {
        input_width: MODEL_W as u16,
        input_height: MODEL_H as u16,
        brain_mask: BrainMaskConfig {
            ct_hu_range: Some((-20.0, 120.0)),
            ..defaults.brain_mask
        },
        ..defaults
    }
}

/// FNV-1a, 64 bit: a platform-independent digest of a buffer.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn hash_f32(values: &[f32]) -> u64 {
    fnv1a(values.iter().flat_map(|v| v.to_bits().to_le_bytes()))
}

fn hash_u8(values: &[u8]) -> u64 {
    fnv1a(values.iter().copied())
}

/// Sum of a buffer in f64 (the order is fixed, so it is deterministic).
fn sum_f32(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v)).sum()
}

fn voxel_volume_mm3() -> f64 {
    f64::from(SPACING_X_MM) * f64::from(SPACING_Y_MM) * f64::from(SLICE_THICKNESS_MM)
}

/// Stand-in for the network: lesion logit `6·(Tmax − CBF) − 2` on the normalised inputs,
/// background logit 0; `[2, MODEL_H, MODEL_W]`.
pub fn stand_in_logits(input: &[f32], logits: &mut [f32]) {
    let Some((background, lesion)) = logits.split_at_mut_checked(MODEL_LEN) else {
        return;
    };
    background.fill(0.0);
    let cbf = input
        .get(CBF * MODEL_LEN..(CBF + 1) * MODEL_LEN)
        .unwrap_or(&[]);
    let tmax = input
        .get(TMAX * MODEL_LEN..(TMAX + 1) * MODEL_LEN)
        .unwrap_or(&[]);
    for ((l, &c), &t) in lesion.iter_mut().zip(cbf).zip(tmax) {
        *l = 6.0 * (t - c) - 2.0;
    }
}

/// Copies channel `channel` of slice `z` into `out` and replaces NaN/±inf by 0 (what the
/// edge's slice reader does); returns how many were replaced.
fn read_channel(fx: &Fixture<'_>, z: usize, channel: usize, out: &mut [f32]) -> u64 {
    let start = (z * N_CHANNELS + channel) * SLICE_LEN;
    match fx.voxels.get(start..start + SLICE_LEN) {
        Some(src) => out.copy_from_slice(src),
        None => out.fill(0.0),
    }
    sanitize_non_finite(out, 0.0) as u64
}

fn truth_slice<'a>(fx: &Fixture<'a>, z: usize) -> &'a [u8] {
    fx.truth
        .get(z * SLICE_LEN..(z + 1) * SLICE_LEN)
        .unwrap_or(&[])
}

fn emit_counts(sink: &mut impl Sink, prefix: Prefix, counts: &ConfusionCounts) {
    sink.int(prefix.pick("model.tp", "threshold.tp"), 0, counts.tp);
    sink.int(prefix.pick("model.fp", "threshold.fp"), 0, counts.fp);
    sink.int(prefix.pick("model.fn", "threshold.fn"), 0, counts.fn_);
    sink.int(prefix.pick("model.tn", "threshold.tn"), 0, counts.tn);
}

fn emit_metrics(sink: &mut impl Sink, prefix: Prefix, m: &SegmentationMetrics) {
    sink.float(prefix.pick("model.dice", "threshold.dice"), 0, m.dice);
    sink.float(
        prefix.pick("model.precision", "threshold.precision"),
        0,
        m.precision,
    );
    sink.float(prefix.pick("model.recall", "threshold.recall"), 0, m.recall);
    sink.float(
        prefix.pick("model.predicted_ml", "threshold.predicted_ml"),
        0,
        m.predicted_volume_ml,
    );
    sink.float(
        prefix.pick("model.true_ml", "threshold.true_ml"),
        0,
        m.true_volume_ml,
    );
    sink.float(
        prefix.pick("model.abs_volume_diff_ml", "threshold.abs_volume_diff_ml"),
        0,
        m.abs_volume_difference_ml,
    );
}

fn emit_components(sink: &mut impl Sink, prefix: Prefix, z: u32, c: &ComponentStats) {
    sink.int(
        prefix.pick("model.components_kept", "threshold.components_kept"),
        z,
        c.components_kept,
    );
    sink.int(
        prefix.pick("model.components_removed", "threshold.components_removed"),
        z,
        c.components_removed,
    );
    sink.int(
        prefix.pick("model.pixels_kept", "threshold.pixels_kept"),
        z,
        c.pixels_kept,
    );
    sink.int(
        prefix.pick("model.pixels_removed", "threshold.pixels_removed"),
        z,
        c.pixels_removed,
    );
}

/// Which path a check belongs to (names must be `'static`, so both are spelled out).
#[derive(Clone, Copy)]
enum Prefix {
    Model,
    Threshold,
}

impl Prefix {
    fn pick(self, model: &'static str, threshold: &'static str) -> &'static str {
        match self {
            Prefix::Model => model,
            Prefix::Threshold => threshold,
        }
    }
}

/// Runs both paths and the perfusion workload over the fixture, emitting every result into `sink` in a fixed order.
pub fn run(fx: &Fixture<'_>, sink: &mut impl Sink) -> Result<(), PipelineError> {
    if fx.voxels.len() != VOXELS_LEN || fx.truth.len() != TRUTH_LEN || fx.dynamic.len() != DYN_LEN {
        return Err(PipelineError::FixtureSize {
            voxels: fx.voxels.len(),
            truth: fx.truth.len(),
            dynamic: fx.dynamic.len(),
        });
    }
    let config = model_config();
    config.validate()?;
    let norm = model_pass1(fx, &config, sink)?;
    model_pass2(fx, &config, &norm, sink)?;
    let rule = CoreRule::default();
    let reference = threshold_pass1(fx, &rule, sink)?;
    threshold_pass2(fx, &rule, &reference, sink)?;
    perfusion::run_perfusion(fx.dynamic, sink)?;
    Ok(())
}

/// Model path, pass 1: brain masks and per-volume statistics → normalisation.
/// Memory: one raw slice of every channel, one brain mask, `VolumeStats` (8 KiB/channel).
#[inline(never)]
fn model_pass1(
    fx: &Fixture<'_>,
    config: &PreprocessConfig,
    sink: &mut impl Sink,
) -> Result<NormParams, PipelineError> {
    let mut raw = [[0f32; SLICE_LEN]; N_CHANNELS];
    let mut brain = [0u8; SLICE_LEN];
    let mut stats = VolumeStats::new(N_CHANNELS)?;
    for z in 0..N_SLICES {
        let zi = z as u32;
        let mut non_finite = 0;
        for (c, buf) in raw.iter_mut().enumerate() {
            non_finite += read_channel(fx, z, c, buf);
        }
        sink.int("model.non_finite", zi, non_finite);
        let views: [&[f32]; N_CHANNELS] = [&raw[0], &raw[1], &raw[2], &raw[3], &raw[4]];
        let n_brain = compute_brain_mask(config, &views, &mut brain)?;
        sink.int("model.brain_voxels", zi, n_brain as u64);
        sink.int("model.brain_mask_hash", zi, hash_u8(&brain));
        stats.add_slice(&views, &brain)?;
    }
    sink.int("model.stats_brain_voxels", 0, stats.brain_voxels());
    sink.int("model.stats_slices", 0, u64::from(stats.slices()));
    for c in 0..N_CHANNELS {
        let ci = c as u32;
        if let Some(s) = stats.channel(c) {
            sink.int("model.channel_count", ci, s.count());
            sink.float("model.channel_mean", ci, s.mean().unwrap_or(f64::NAN));
            sink.float("model.channel_sd", ci, s.sd().unwrap_or(f64::NAN));
        }
    }
    let norm = stats.norm_params(config)?;
    for (c, p) in norm.iter().enumerate() {
        let ci = c as u32;
        sink.float("model.norm_offset", ci, f64::from(p.offset));
        sink.float("model.norm_gain", ci, f64::from(p.gain));
        sink.float("model.norm_min", ci, f64::from(p.min));
        sink.float("model.norm_max", ci, f64::from(p.max));
    }
    Ok(norm)
}

/// Model path, pass 2, per slice: model input, stand-in model, probability back on the image
/// grid, threshold, brain AND, small-component removal, confusion counts — the edge
/// runtime's order. Memory: the per-slice buffers below, sized by the slice, reused.
#[inline(never)]
fn model_pass2(
    fx: &Fixture<'_>,
    config: &PreprocessConfig,
    norm: &NormParams,
    sink: &mut impl Sink,
) -> Result<(), PipelineError> {
    let geom = geometry();
    let map = GridMap::new(geom, config)?;
    let post = PostprocessConfig::default();
    post.validate()?;
    let min_area_px = post.min_area_px(geom.spacing_x_mm, geom.spacing_y_mm);
    sink.int("model.min_area_px", 0, u64::from(min_area_px));

    let mut raw = [[0f32; SLICE_LEN]; N_CHANNELS];
    let mut brain = [0u8; SLICE_LEN];
    let mut normalized = [0f32; SLICE_LEN];
    let mut input = [0f32; N_CHANNELS * MODEL_LEN];
    let mut logits = [0f32; 2 * MODEL_LEN];
    let mut prob_model = [0f32; MODEL_LEN];
    let mut prob_image = [0f32; SLICE_LEN];
    let mut mask = [0u8; SLICE_LEN];
    let mut labels = [0u32; SLICE_LEN];
    let mut parent = [0u32; SLICE_LEN];
    let mut counts = ConfusionCounts::default();
    for z in 0..N_SLICES {
        let zi = z as u32;
        for (c, buf) in raw.iter_mut().enumerate() {
            read_channel(fx, z, c, buf);
        }
        let views: [&[f32]; N_CHANNELS] = [&raw[0], &raw[1], &raw[2], &raw[3], &raw[4]];
        let n_brain = prepare_model_input(
            config,
            norm,
            &map,
            &views,
            SliceScratch {
                brain_mask: &mut brain,
                normalized: &mut normalized,
            },
            &mut input,
        )?;
        sink.int("model.input_brain_voxels", zi, n_brain as u64);
        for (c, plane) in input.chunks_exact(MODEL_LEN).enumerate() {
            let index = zi * N_CHANNELS as u32 + c as u32;
            sink.float("model.input_sum", index, sum_f32(plane));
            sink.bits("model.input_bits", index, hash_f32(plane));
        }
        stand_in_logits(&input, &mut logits);
        lesion_probability_from_logits(&logits, 2, MODEL_LEN, &mut prob_model)?;
        sink.float("model.prob_sum", zi, sum_f32(&prob_model));
        sink.bits("model.prob_bits", zi, hash_f32(&prob_model));
        map.model_to_image_bilinear(&prob_model, 0.0, &mut prob_image)?;
        sink.float("model.prob_image_sum", zi, sum_f32(&prob_image));
        sink.bits("model.prob_image_bits", zi, hash_f32(&prob_image));
        let n_lesion = threshold_mask(&prob_image, post.threshold, &mut mask)?;
        sink.int("model.threshold_voxels", zi, n_lesion as u64);
        for (m, &b) in mask.iter_mut().zip(&brain) {
            *m &= u8::from(b != 0);
        }
        let c = remove_small_components(
            &mut mask,
            NX,
            NY,
            min_area_px,
            post.connectivity,
            &mut ComponentScratch::new(&mut labels, &mut parent),
        )?;
        emit_components(sink, Prefix::Model, zi, &c);
        sink.int("model.mask_hash", zi, hash_u8(&mask));
        counts.add_slice(&mask, truth_slice(fx, z))?;
    }
    emit_counts(sink, Prefix::Model, &counts);
    emit_metrics(sink, Prefix::Model, &counts.metrics(voxel_volume_mm3())?);
    Ok(())
}

/// Threshold path, pass 1: brain mask, 2-channel statistics and the healthy reference CBF.
/// Memory: two raw channels, a brain mask, `VolumeStats` (2 channels) and `HealthyCbfStats`.
#[inline(never)]
fn threshold_pass1(
    fx: &Fixture<'_>,
    rule: &CoreRule,
    sink: &mut impl Sink,
) -> Result<HealthyReference, PipelineError> {
    rule.validate()?;
    let config = rule_preprocess_config();
    let mut cbf = [0f32; SLICE_LEN];
    let mut tmax = [0f32; SLICE_LEN];
    let mut brain = [0u8; SLICE_LEN];
    let mut volume = VolumeStats::new(2)?;
    let mut healthy = HealthyCbfStats::default();
    for z in 0..N_SLICES {
        let zi = z as u32;
        let non_finite = read_channel(fx, z, CBF, &mut cbf) + read_channel(fx, z, TMAX, &mut tmax);
        sink.int("threshold.non_finite", zi, non_finite);
        let n_brain = compute_brain_mask(&config, &[&cbf, &tmax], &mut brain)?;
        sink.int("threshold.brain_voxels", zi, n_brain as u64);
        volume.add_slice(&[&cbf, &tmax], &brain)?;
        healthy.add_slice(rule, &cbf, &tmax, &brain, NX)?;
    }
    sink.int("threshold.stats_brain_voxels", 0, volume.brain_voxels());
    let reference = healthy.reference(rule)?;
    sink.float("threshold.reference_cbf", 0, f64::from(reference.cbf));
    sink.int("threshold.reference_tissue", 0, reference.tissue as u64);
    sink.int("threshold.reference_voxels", 0, reference.n_voxels);
    Ok(reference)
}

/// Threshold path, pass 2, per slice: core mask, small-component removal, confusion counts.
#[inline(never)]
fn threshold_pass2(
    fx: &Fixture<'_>,
    rule: &CoreRule,
    reference: &HealthyReference,
    sink: &mut impl Sink,
) -> Result<(), PipelineError> {
    let config = rule_preprocess_config();
    let post = PostprocessConfig::default();
    let min_area_px = post.min_area_px(SPACING_X_MM, SPACING_Y_MM);
    let mut cbf = [0f32; SLICE_LEN];
    let mut tmax = [0f32; SLICE_LEN];
    let mut brain = [0u8; SLICE_LEN];
    let mut mask = [0u8; SLICE_LEN];
    let mut labels = [0u32; SLICE_LEN];
    let mut parent = [0u32; SLICE_LEN];
    let mut counts = ConfusionCounts::default();
    for z in 0..N_SLICES {
        let zi = z as u32;
        read_channel(fx, z, CBF, &mut cbf);
        read_channel(fx, z, TMAX, &mut tmax);
        compute_brain_mask(&config, &[&cbf, &tmax], &mut brain)?;
        let n_core = core_mask_slice(rule, reference, &cbf, &tmax, &brain, &mut mask)?;
        sink.int("threshold.core_voxels", zi, n_core as u64);
        let c = remove_small_components(
            &mut mask,
            NX,
            NY,
            min_area_px,
            post.connectivity,
            &mut ComponentScratch::new(&mut labels, &mut parent),
        )?;
        emit_components(sink, Prefix::Threshold, zi, &c);
        sink.int("threshold.mask_hash", zi, hash_u8(&mask));
        counts.add_slice(&mask, truth_slice(fx, z))?;
    }
    emit_counts(sink, Prefix::Threshold, &counts);
    emit_metrics(
        sink,
        Prefix::Threshold,
        &counts.metrics(voxel_volume_mm3())?,
    );
    Ok(())
}
