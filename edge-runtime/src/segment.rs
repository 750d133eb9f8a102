//! `strokeseg-edge segment`: one study, slice by slice, in bounded memory.
//!
//! Pass 1 streams every slice of the needed channels once for the per-volume statistics
//! (`Study::gather_stats`, or the healthy reference for the threshold rule). Pass 2 reads
//! one slice of each channel, preprocesses it into a reused `[C, H, W]` buffer, runs the
//! model, turns the logits into a mask on the original grid, and appends that slice to the
//! mask and the overlay. Memory per study: the `C` channel slices and seven slice-sized
//! scratch buffers (brain mask, normalised channel, probability, mask, two component-label
//! buffers, display), the model's input and output planes, one band of the overlay and
//! tract's plan; nothing scales with the number of slices except the per-slice area list
//! (8 bytes a slice). `CT_4DPWI` is opened only when the maps are computed from it
//! ([`crate::perfusion`], before pass 1, slice by slice into files in the staging folder).
//!
//! Outputs are written into a staging folder and published by renaming
//! ([`publish_outputs`], report last); a failed or interrupted run publishes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use strokeseg_io::atomic::{publish_atomically, write_json_atomically};
use strokeseg_io::{
    CaseFiles, Dtype, GridTolerance, IoError, NiftiWriter, ReadLimits, SlicePreparer, Study,
};
use strokeseg_shared::brain_mask::compute_brain_mask;
use strokeseg_shared::config::MapsProvenance;
use strokeseg_shared::metrics::volume_ml_from_voxels;
use strokeseg_shared::perfusion::PerfusionConfig;
use strokeseg_shared::perfusion_rule::{
    CoreRule, HealthyCbfStats, HealthyReference, core_mask_slice, rule_preprocess_config,
};
use strokeseg_shared::postprocess::{
    ComponentScratch, ComponentStats, PostprocessConfig, SliceMaskError, SliceMasker,
    remove_small_components,
};
use strokeseg_shared::preprocess::SliceGeometry;
use strokeseg_shared::stats::{LogHistogram, VolumeStats};
use strokeseg_shared::{Modality, PreprocessConfig};

use crate::EdgeError;
use crate::overlay::MontageWriter;
use crate::perfusion::{MapsSource, check_provenance, resolve_maps, warning_text};
use crate::report::{
    Alert, DisagreementMargin, MASK_FILE, Method, ModelSummary, OUTPUT_FILES, OVERLAY_FILE,
    REPORT_FILE, Report, RuleComparison, ThresholdSummary, Timings,
};
use crate::segmenter::Segmenter;

/// Default alert threshold: the DEFUSE 3 core volume limit, mL.
pub const DEFAULT_ALERT_THRESHOLD_ML: f64 = 70.0;

/// What a run needs besides the study.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Lesion volume at or above which the alert is raised, mL.
    pub alert_threshold_ml: f64,
    /// The threshold method's rule.
    pub core_rule: CoreRule,
    /// The threshold method's small-component removal (the model method uses the
    /// postprocessing in the model's metadata).
    pub threshold_postprocess: PostprocessConfig,
    /// Time spent loading the model, reported in the timings (ms).
    pub load_model_ms: f64,
    /// When a model run's volume and the threshold rule's are reported as disagreeing.
    pub disagreement: DisagreementMargin,
    /// Where the perfusion maps come from.
    pub maps: MapsSource,
    /// How maps are computed from the raw series when they are.
    pub perfusion: PerfusionConfig,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            alert_threshold_ml: DEFAULT_ALERT_THRESHOLD_ML,
            core_rule: CoreRule::default(),
            threshold_postprocess: PostprocessConfig::default(),
            load_model_ms: 0.0,
            disagreement: DisagreementMargin::default(),
            maps: MapsSource::default(),
            perfusion: PerfusionConfig::default(),
        }
    }
}

impl SegmentOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), EdgeError> {
        if !(self.alert_threshold_ml.is_finite() && self.alert_threshold_ml >= 0.0) {
            return Err(EdgeError::Settings {
                path: PathBuf::from("alert_threshold_ml"),
                reason: format!("{} must be finite and ≥ 0", self.alert_threshold_ml),
            });
        }
        let m = self.disagreement;
        if !(m.absolute_ml.is_finite() && m.absolute_ml >= 0.0 && (0.0..=1.0).contains(&m.relative))
        {
            return Err(EdgeError::Settings {
                path: PathBuf::from("disagreement"),
                reason: format!(
                    "absolute_ml {} must be finite and ≥ 0, relative {} within 0–1",
                    m.absolute_ml, m.relative
                ),
            });
        }
        self.core_rule.validate()?;
        self.threshold_postprocess.validate()?;
        self.perfusion.validate().map_err(|e| EdgeError::Settings {
            path: PathBuf::from("perfusion"),
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

/// A folder for outputs in progress, removed with everything in it when dropped.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    /// Creates `path` afresh (an old one, left by a crash, is removed first).
    pub fn create(path: PathBuf) -> Result<StagingDir, EdgeError> {
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| EdgeError::output(&path, e))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| EdgeError::output(&path, e))?;
        Ok(StagingDir { path })
    }
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Keeps the folder (it has been renamed or published).
    pub fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.path)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Moves the outputs named in `outputs` (a report's [`Report::outputs`], the report last)
/// from `staging` into `out_dir` (created if needed), each by an atomic rename. If a rename
/// fails, the outputs already moved are removed again, so `out_dir` never holds a partial
/// set from this run.
pub fn publish_outputs(
    staging: &Path,
    out_dir: &Path,
    outputs: &[String],
) -> Result<(), EdgeError> {
    std::fs::create_dir_all(out_dir).map_err(|e| EdgeError::output(out_dir, e))?;
    let mut published = Vec::new();
    for name in outputs {
        let (from, to) = (staging.join(name), out_dir.join(name));
        if let Err(e) = publish_atomically(&from, &to) {
            for p in &published {
                let _ = std::fs::remove_file(p);
            }
            return Err(EdgeError::writing(e));
        }
        published.push(to);
    }
    Ok(())
}

fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The per-slice end of pass 2: the mask writer, the overlay, and the running totals.
struct SliceOutputs {
    writer: NiftiWriter,
    montage: MontageWriter,
    display: Vec<f32>,
    display_range: (f32, f32),
    pixel_area_mm2: f64,
    per_slice_area_mm2: Vec<f64>,
    lesion_voxels: u64,
    components: ComponentStats,
}

/// Sees each slice of pass 2 as it is written (`serve` builds the DICOM Segmentation and
/// the Secondary Capture overlay from it): `display` is the overlay's grey channel in
/// `[0, 1]`, `mask` the lesion mask and `reference` the threshold rule's mask beside a
/// model's, all `nx · ny` on the study's grid, slices in order from 0.
pub trait SliceObserver {
    /// Slice `slice_idx` was written.
    fn slice(
        &mut self,
        slice_idx: usize,
        display: &[f32],
        mask: &[u8],
        reference: Option<&[u8]>,
    ) -> Result<(), EdgeError>;
}

/// Observes nothing (`segment`, `watch`).
impl SliceObserver for () {
    fn slice(&mut self, _: usize, _: &[f32], _: &[u8], _: Option<&[u8]>) -> Result<(), EdgeError> {
        Ok(())
    }
}

impl SliceOutputs {
    /// Appends slice `mask` (and, for a model run, the rule's `reference` mask to the
    /// overlay) and shows it to `observer`.
    fn write(
        &mut self,
        display_raw: &[f32],
        mask: &[u8],
        reference: Option<&[u8]>,
        observer: &mut dyn SliceObserver,
    ) -> Result<(), EdgeError> {
        let n = mask.iter().filter(|&&m| m != 0).count();
        self.lesion_voxels += n as u64;
        self.per_slice_area_mm2.push(n as f64 * self.pixel_area_mm2);
        self.writer
            .write_slice_u8(mask)
            .map_err(EdgeError::writing)?;
        let (lo, hi) = self.display_range;
        let gain = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
        for (d, &x) in self.display.iter_mut().zip(display_raw) {
            *d = (x - lo) * gain;
        }
        self.montage
            .add_slice_with_reference(&self.display, mask, reference)?;
        observer.slice(
            self.per_slice_area_mm2.len() - 1,
            &self.display,
            mask,
            reference,
        )
    }
}

/// Percentile display range (1st–99th over the brain) of a channel histogram.
fn display_range(hist: Option<&LogHistogram>) -> (f32, f32) {
    let p = |q| hist.and_then(|h| h.percentile(q)).unwrap_or(0.0);
    (p(1.0), p(99.0))
}

/// Segments the study in `case_dir` with `method` and writes the three outputs into
/// `staging` (which must exist); returns the report (also written there). `model` is
/// required for [`Method::Model`]. `cancel` is polled between slices: when it is set the
/// run stops with [`EdgeError::Interrupted`].
pub fn segment_study(
    case_dir: &Path,
    method: Method,
    model: Option<&mut Segmenter>,
    options: &SegmentOptions,
    staging: &Path,
    cancel: &AtomicBool,
) -> Result<Report, EdgeError> {
    segment_study_observed(case_dir, method, model, options, staging, cancel, &mut ())
}

/// [`segment_study`] showing every slice of pass 2 to `observer` as it is written.
pub fn segment_study_observed(
    case_dir: &Path,
    method: Method,
    model: Option<&mut Segmenter>,
    options: &SegmentOptions,
    staging: &Path,
    cancel: &AtomicBool,
    observer: &mut dyn SliceObserver,
) -> Result<Report, EdgeError> {
    options.validate()?;
    let t_total = Instant::now();
    let mut timings = Timings {
        load_model_ms: options.load_model_ms,
        ..Timings::default()
    };
    let mut warnings = Vec::new();
    let trained_on = match method {
        Method::Model => model.as_deref().map(|m| m.metadata().preprocess.maps),
        Method::Threshold => None,
    };
    let prefer_computed = matches!(trained_on, Some(MapsProvenance::Computed { .. }));
    let t = Instant::now();
    let (files, computed_maps) = resolve_maps(
        case_dir,
        options.maps,
        prefer_computed,
        &options.perfusion,
        staging,
        cancel,
    )?;
    timings.perfusion_ms = elapsed_ms(t);
    if let (Some(trained_on), Some(model)) = (trained_on, model.as_deref()) {
        check_provenance(
            case_dir,
            &model.source(),
            trained_on,
            computed_maps.is_some(),
            &options.perfusion,
        )?;
    }
    if let Some(c) = &computed_maps {
        warnings.extend(c.warnings.iter().map(warning_text));
    }
    let run = match method {
        Method::Model => {
            let model = model.ok_or(crate::error::ModelError::NoModel)?;
            run_model(
                &files,
                model,
                options,
                staging,
                cancel,
                &mut timings,
                &mut warnings,
                observer,
            )?
        }
        Method::Threshold => run_threshold(
            &files,
            options,
            staging,
            cancel,
            &mut timings,
            &mut warnings,
            observer,
        )?,
    };
    let t_write = Instant::now();
    let out = run.outputs;
    let n_slices = out.per_slice_area_mm2.len();
    let voxel_volume_mm3 = run.voxel_volume_mm3;
    let lesion_volume_ml = volume_ml_from_voxels(out.lesion_voxels, voxel_volume_mm3);
    out.writer.finish().map_err(EdgeError::writing)?;
    out.montage.finish()?;
    for (modality, &n) in &run.non_finite {
        if n > 0 {
            warnings.push(format!(
                "{modality}: {n} non-finite voxels (NaN/inf) replaced by 0"
            ));
        }
    }
    let rule_comparison = run.rule.map(|tally| {
        let rule_volume_ml = volume_ml_from_voxels(tally.rule_voxels, voxel_volume_mm3);
        let total = out.lesion_voxels + tally.rule_voxels;
        let mask_dice = if total == 0 {
            1.0
        } else {
            2.0 * tally.both_voxels as f64 / total as f64
        };
        let margin = options.disagreement;
        let disagree = margin.disagree(lesion_volume_ml, rule_volume_ml);
        if disagree {
            warnings.push(format!(
                "the model ({lesion_volume_ml:.1} mL) and the threshold rule \
                 ({rule_volume_ml:.1} mL) disagree by more than {} mL and {:.0} % of the \
                 larger volume (mask Dice {mask_dice:.2}): review the perfusion maps",
                margin.absolute_ml,
                margin.relative * 100.0
            ));
        }
        RuleComparison {
            rule: tally.summary,
            rule_volume_ml,
            model_volume_ml: lesion_volume_ml,
            volume_difference_ml: lesion_volume_ml - rule_volume_ml,
            mask_dice,
            margin,
            disagree,
        }
    });
    timings.write_ms += elapsed_ms(t_write);
    timings.total_ms = elapsed_ms(t_total);
    timings.inference_per_slice_ms = timings.inference_ms / n_slices.max(1) as f64;
    timings.peak_rss_kib = crate::report::peak_rss_kib();
    timings.threads = crate::threads::current_threads();
    let case = case_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| case_dir.display().to_string());
    let report = Report {
        report_version: crate::report::REPORT_VERSION,
        case,
        case_dir: case_dir.to_path_buf(),
        method,
        model: run.model,
        threshold: run.threshold,
        rule_comparison,
        lesion_volume_ml,
        lesion_voxels: out.lesion_voxels,
        voxel_volume_mm3,
        dims: run.dims,
        spacing_mm: run.spacing_mm,
        n_slices,
        per_slice_lesion_area_mm2: out.per_slice_area_mm2,
        geometry_from: run.geometry_from,
        non_finite_voxels: run.non_finite,
        components: out.components,
        warnings,
        timings,
        alert: Alert {
            triggered: lesion_volume_ml >= options.alert_threshold_ml,
            threshold_ml: options.alert_threshold_ml,
        },
        outputs: computed_maps
            .iter()
            .flat_map(|c| c.files.iter().cloned())
            .chain(OUTPUT_FILES.iter().map(|s| (*s).to_owned()))
            .collect(),
        computed_maps,
        software: format!("strokeseg-edge {}", env!("CARGO_PKG_VERSION")),
    };
    write_json_atomically(&staging.join(REPORT_FILE), &report).map_err(EdgeError::writing)?;
    Ok(report)
}

/// What one method's pass 2 leaves for the report.
struct MethodRun {
    outputs: SliceOutputs,
    model: Option<ModelSummary>,
    threshold: Option<ThresholdSummary>,
    /// A model run: the threshold rule run beside it.
    rule: Option<RuleTally>,
    non_finite: BTreeMap<String, usize>,
    voxel_volume_mm3: f64,
    dims: [usize; 3],
    spacing_mm: [f32; 3],
    geometry_from: PathBuf,
}

/// The threshold rule's mask beside a model's, counted over the study.
struct RuleTally {
    summary: ThresholdSummary,
    /// Voxels in the rule's mask.
    rule_voxels: u64,
    /// Voxels in both the rule's and the model's mask.
    both_voxels: u64,
}

/// Opens the outputs in `staging` for a study of `study`'s grid.
fn open_outputs(
    study: &Study,
    staging: &Path,
    display_range: (f32, f32),
    warnings: &mut Vec<String>,
) -> Result<(SliceOutputs, PathBuf, [f32; 3]), EdgeError> {
    let grid = study.mask_grid()?;
    if !grid.from_ct {
        warnings.push(format!(
            "no CT in the case: the mask uses the grid of {}",
            grid.path.display()
        ));
    }
    let (nx, ny) = study.slice_shape();
    let spacing = study.spacing_mm();
    let writer = NiftiWriter::create(&staging.join(MASK_FILE), &grid.header, Dtype::U8)
        .map_err(EdgeError::writing)?;
    let montage = MontageWriter::create(&staging.join(OVERLAY_FILE), nx, ny, study.n_slices())?;
    Ok((
        SliceOutputs {
            writer,
            montage,
            display: vec![0.0; nx * ny],
            display_range,
            pixel_area_mm2: f64::from(spacing[0]) * f64::from(spacing[1]),
            per_slice_area_mm2: Vec::with_capacity(study.n_slices()),
            lesion_voxels: 0,
            components: ComponentStats::default(),
        },
        grid.path,
        spacing,
    ))
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), EdgeError> {
    if cancel.load(Ordering::SeqCst) {
        Err(EdgeError::Interrupted)
    } else {
        Ok(())
    }
}

fn slice_geometry(study: &Study) -> SliceGeometry {
    let (nx, ny) = study.slice_shape();
    let s = study.spacing_mm();
    SliceGeometry {
        nx,
        ny,
        spacing_x_mm: s[0],
        spacing_y_mm: s[1],
    }
}

fn core_error(case_dir: &Path, source: strokeseg_shared::CoreError) -> EdgeError {
    IoError::Preprocess {
        path: case_dir.to_path_buf(),
        source,
    }
    .into()
}

/// Opens `channels` of the study's `files` (maps provided or computed).
fn open_study(files: &CaseFiles, channels: &[Modality]) -> Result<Study, EdgeError> {
    Ok(Study::open_files(
        files.clone(),
        channels,
        false,
        &ReadLimits::default(),
        GridTolerance::default(),
    )?)
}

#[allow(clippy::too_many_arguments)]
fn run_model(
    files: &CaseFiles,
    model: &mut Segmenter,
    options: &SegmentOptions,
    staging: &Path,
    cancel: &AtomicBool,
    timings: &mut Timings,
    warnings: &mut Vec<String>,
    observer: &mut dyn SliceObserver,
) -> Result<MethodRun, EdgeError> {
    let case_dir = files.case_dir.as_path();
    let meta = model.metadata().clone();
    let config = &meta.preprocess;
    let post = meta.postprocess;
    post.validate()?;
    let channels: Vec<Modality> = config.channels.iter().map(|c| c.modality).collect();

    let t = Instant::now();
    let mut study = open_study(files, &channels)?;
    let stats = study.gather_stats(config)?;
    timings.pass1_stats_ms += elapsed_ms(t);

    // The classic rule beside the model, so the report can say when they part ways. A study
    // the rule cannot read (no CBF or Tmax, no healthy tissue) is still segmented.
    let t = Instant::now();
    let mut rule = match RulePass::gather(files, options, cancel) {
        Ok(pass) => Some(pass),
        Err(EdgeError::Interrupted) => return Err(EdgeError::Interrupted),
        Err(e) => {
            warnings.push(format!(
                "the threshold rule could not run beside the model: {e}"
            ));
            None
        }
    };
    timings.rule_ms += elapsed_ms(t);

    let geom = slice_geometry(&study);
    let mut preparer = SlicePreparer::new(&study, config, stats.norm.clone())?;
    let map = *preparer.map();
    let display_idx = config
        .channel_index(Modality::Cbf)
        .or_else(|| {
            config
                .channels
                .iter()
                .position(|c| c.modality.is_perfusion_map())
        })
        .unwrap_or(0);
    let range = display_range(stats.volume.channel(display_idx).map(|c| &c.histogram));
    let (mut outputs, geometry_from, spacing_mm) = open_outputs(&study, staging, range, warnings)?;

    let n = geom.len();
    let (w, h) = map.model_size();
    let mut input = vec![0f32; model.input_len()];
    let mut prob = vec![0f32; w * h];
    let mut mask = vec![0u8; n];
    let mut rule_mask = vec![0u8; n];
    let (mut rule_voxels, mut both_voxels) = (0u64, 0u64);
    let mut masker = SliceMasker::new(map, post);

    for z in 0..study.n_slices() {
        check_cancel(cancel)?;
        let t = Instant::now();
        preparer.prepare(&mut study, z, &mut input)?;
        timings.preprocess_ms += elapsed_ms(t);

        let t = Instant::now();
        model.lesion_probability(z, &input, &mut prob)?;
        timings.inference_ms += elapsed_ms(t);

        let t = Instant::now();
        let c = masker
            .mask_probability(&prob, preparer.brain_mask(), &mut mask)
            .map_err(|e| match e {
                SliceMaskError::Postprocess(e) => EdgeError::from(e),
                SliceMaskError::Grid(e) => core_error(case_dir, e),
            })?;
        outputs.components.merge(c);
        timings.postprocess_ms += elapsed_ms(t);

        let t = Instant::now();
        if let Some(pass) = rule.as_mut() {
            pass.read_slice(case_dir, z)?;
            pass.core_mask(case_dir, &mut rule_mask)?;
            pass.clean(&mut rule_mask)?;
            for (&m, &r) in mask.iter().zip(&rule_mask) {
                rule_voxels += u64::from(r != 0);
                both_voxels += u64::from(r != 0 && m != 0);
            }
        }
        timings.rule_ms += elapsed_ms(t);

        let t = Instant::now();
        outputs.write(
            preparer.raw_channel(display_idx).unwrap_or(&[]),
            &mask,
            rule.as_ref().map(|_| rule_mask.as_slice()),
            observer,
        )?;
        timings.write_ms += elapsed_ms(t);
    }
    let non_finite = channels
        .iter()
        .zip(&stats.non_finite_per_channel)
        .map(|(m, &n)| (m.isles_tag().to_owned(), n))
        .collect();
    let reference = study.reference();
    Ok(MethodRun {
        outputs,
        model: Some(ModelSummary {
            name: meta.name.clone(),
            version: meta.version.clone(),
            precision: model.precision(),
            sha256: model.sha256(),
            source: model.source(),
            postprocess: post,
            members: model.member_summaries(),
            tta: model.tta(),
        }),
        threshold: None,
        rule: rule.map(|pass| RuleTally {
            summary: pass.summary(),
            rule_voxels,
            both_voxels,
        }),
        non_finite,
        voxel_volume_mm3: reference.voxel_volume_mm3(),
        dims: [reference.nx(), reference.ny(), reference.nz()],
        spacing_mm,
        geometry_from,
    })
}

/// The threshold rule over one study, reading only CBF and Tmax: [`RulePass::gather`] is
/// pass 1 (brain statistics and the healthy reference), then per slice
/// [`RulePass::read_slice`], [`RulePass::core_mask`] and [`RulePass::clean`]. The threshold
/// method runs it alone; a model run runs it beside the model for the comparison in the
/// report. Memory: four slice buffers and the two component-label buffers, sized once.
struct RulePass {
    study: Study,
    rule: CoreRule,
    post: PostprocessConfig,
    config: PreprocessConfig,
    reference: HealthyReference,
    volume: VolumeStats,
    non_finite: [usize; 2],
    nx: usize,
    ny: usize,
    min_area_px: u32,
    cbf: Vec<f32>,
    tmax: Vec<f32>,
    brain: Vec<u8>,
    labels: Vec<u32>,
    parent: Vec<u32>,
}

impl RulePass {
    /// Opens CBF and Tmax of `case_dir` and runs pass 1.
    fn gather(
        files: &CaseFiles,
        options: &SegmentOptions,
        cancel: &AtomicBool,
    ) -> Result<RulePass, EdgeError> {
        let case_dir = files.case_dir.as_path();
        let rule = options.core_rule;
        let post = options.threshold_postprocess;
        let config = rule_preprocess_config();
        let mut study = open_study(files, &[Modality::Cbf, Modality::Tmax])?;
        let geom = slice_geometry(&study);
        let n = geom.len();
        let (mut cbf, mut tmax) = (vec![0f32; n], vec![0f32; n]);
        let mut brain = vec![0u8; n];
        let mut non_finite = [0usize; 2];
        let mut volume = VolumeStats::new(2).map_err(|e| core_error(case_dir, e))?;
        let mut healthy = HealthyCbfStats::default();
        for z in 0..study.n_slices() {
            check_cancel(cancel)?;
            non_finite[0] += study.read_channel_slice(0, z, &mut cbf)?.non_finite;
            non_finite[1] += study.read_channel_slice(1, z, &mut tmax)?.non_finite;
            compute_brain_mask(&config, &[&cbf, &tmax], &mut brain)
                .map_err(|e| core_error(case_dir, e))?;
            volume
                .add_slice(&[&cbf, &tmax], &brain)
                .map_err(|e| core_error(case_dir, e))?;
            healthy
                .add_slice(&rule, &cbf, &tmax, &brain, geom.nx)
                .map_err(|e| core_error(case_dir, e))?;
        }
        if volume.brain_voxels() == 0 {
            return Err(core_error(
                case_dir,
                strokeseg_shared::CoreError::NoBrainVoxels {
                    modality: Modality::Cbf,
                },
            ));
        }
        let reference = healthy
            .reference(&rule)
            .map_err(|e| core_error(case_dir, e))?;
        Ok(RulePass {
            study,
            rule,
            post,
            config,
            reference,
            volume,
            non_finite,
            nx: geom.nx,
            ny: geom.ny,
            min_area_px: post.min_area_px(geom.spacing_x_mm, geom.spacing_y_mm),
            cbf,
            tmax,
            brain,
            labels: vec![0u32; n],
            parent: vec![0u32; n],
        })
    }

    /// Reads slice `z` of CBF and Tmax and its brain mask.
    fn read_slice(&mut self, case_dir: &Path, z: usize) -> Result<(), EdgeError> {
        self.study.read_channel_slice(0, z, &mut self.cbf)?;
        self.study.read_channel_slice(1, z, &mut self.tmax)?;
        compute_brain_mask(&self.config, &[&self.cbf, &self.tmax], &mut self.brain)
            .map(|_| ())
            .map_err(|e| core_error(case_dir, e))
    }

    /// The rule's core mask of the slice last read, into `mask` (`nx · ny`).
    fn core_mask(&self, case_dir: &Path, mask: &mut [u8]) -> Result<(), EdgeError> {
        core_mask_slice(
            &self.rule,
            &self.reference,
            &self.cbf,
            &self.tmax,
            &self.brain,
            mask,
        )
        .map(|_| ())
        .map_err(|e| core_error(case_dir, e))
    }

    /// Removes components of `mask` smaller than the threshold method's minimum area.
    fn clean(&mut self, mask: &mut [u8]) -> Result<ComponentStats, EdgeError> {
        Ok(remove_small_components(
            mask,
            self.nx,
            self.ny,
            self.min_area_px,
            self.post.connectivity,
            &mut ComponentScratch::new(&mut self.labels, &mut self.parent),
        )?)
    }

    fn summary(&self) -> ThresholdSummary {
        ThresholdSummary {
            rule: self.rule,
            reference: self.reference,
            min_component_area_mm2: self.post.min_component_area_mm2,
        }
    }
}

fn run_threshold(
    files: &CaseFiles,
    options: &SegmentOptions,
    staging: &Path,
    cancel: &AtomicBool,
    timings: &mut Timings,
    warnings: &mut Vec<String>,
    observer: &mut dyn SliceObserver,
) -> Result<MethodRun, EdgeError> {
    let case_dir = files.case_dir.as_path();
    let t = Instant::now();
    let mut pass = RulePass::gather(files, options, cancel)?;
    timings.pass1_stats_ms += elapsed_ms(t);

    let range = display_range(pass.volume.channel(0).map(|c| &c.histogram));
    let (mut outputs, geometry_from, spacing_mm) =
        open_outputs(&pass.study, staging, range, warnings)?;
    let mut mask = vec![0u8; pass.nx * pass.ny];
    for z in 0..pass.study.n_slices() {
        check_cancel(cancel)?;
        let t = Instant::now();
        pass.read_slice(case_dir, z)?;
        timings.preprocess_ms += elapsed_ms(t);

        let t = Instant::now();
        pass.core_mask(case_dir, &mut mask)?;
        timings.inference_ms += elapsed_ms(t);

        let t = Instant::now();
        let c = pass.clean(&mut mask)?;
        outputs.components.merge(c);
        timings.postprocess_ms += elapsed_ms(t);

        let t = Instant::now();
        outputs.write(&pass.cbf, &mask, None, observer)?;
        timings.write_ms += elapsed_ms(t);
    }
    let r = pass.study.reference();
    Ok(MethodRun {
        outputs,
        model: None,
        threshold: Some(pass.summary()),
        rule: None,
        non_finite: [Modality::Cbf, Modality::Tmax]
            .iter()
            .zip(pass.non_finite)
            .map(|(m, n)| (m.isles_tag().to_owned(), n))
            .collect(),
        voxel_volume_mm3: r.voxel_volume_mm3(),
        dims: [r.nx(), r.ny(), r.nz()],
        spacing_mm,
        geometry_from,
    })
}

/// Segments `case_dir` and publishes the outputs in `out_dir` (the CLI's `segment`): the
/// outputs are staged in `out_dir/.strokeseg-staging-<pid>` and renamed into place only
/// when all three are complete.
pub fn segment_to_dir(
    case_dir: &Path,
    method: Method,
    model: Option<&mut Segmenter>,
    options: &SegmentOptions,
    out_dir: &Path,
    cancel: &AtomicBool,
) -> Result<Report, EdgeError> {
    std::fs::create_dir_all(out_dir).map_err(|e| EdgeError::output(out_dir, e))?;
    let staging =
        StagingDir::create(out_dir.join(format!(".strokeseg-staging-{}", std::process::id())))?;
    let report = segment_study(case_dir, method, model, options, staging.path(), cancel)?;
    check_cancel(cancel)?;
    publish_outputs(staging.path(), out_dir, &report.outputs)?;
    Ok(report)
}

/// [`segment_to_dir`] that drives status pins: start, then succeed (with the alert
/// decision) or fail.
pub fn segment_to_dir_with_status(
    case_dir: &Path,
    method: Method,
    model: Option<&mut Segmenter>,
    options: &SegmentOptions,
    out_dir: &Path,
    cancel: &AtomicBool,
    status: &mut dyn crate::status::StatusSink,
) -> Result<Report, EdgeError> {
    with_status(status, || {
        segment_to_dir(case_dir, method, model, options, out_dir, cancel)
    })
}

/// Drives `status` around one run of `work`: start, then succeed with the report's alert
/// decision, or fail. `work` is everything the run does that can fail, loading the model
/// included, so that every failure raises the fault pin.
pub fn with_status(
    status: &mut dyn crate::status::StatusSink,
    work: impl FnOnce() -> Result<Report, EdgeError>,
) -> Result<Report, EdgeError> {
    status.start();
    match work() {
        Ok(report) => {
            status.succeed(report.alert.triggered);
            Ok(report)
        }
        Err(e) => {
            status.fail();
            Err(e)
        }
    }
}
