//! Patient-grouped k-fold cross-validation: the settings (`cv.json`, [`init_run`]), one fold
//! ([`run_fold`]: in `fold_K/`, finished folds kept, an interrupted one resumed; folds may run
//! in separate processes at once, e.g. as job array tasks), the fold loop ([`cross_validate`]:
//! every fold in turn, then [`merge`]), and the summary ([`merge`]: from the finished fold
//! folders, naming any missing, unfinished or corrupt fold): per-fold held-out results, their mean ± sample standard
//! deviation across folds, and the mean over all held-out cases pooled, written as
//! `cv_summary.json` and Markdown tables `cv_summary.md`.
//!
//! The figures are those of each fold's *last* checkpoint (selecting the best epoch on the
//! held-out fold itself would bias them upwards); the best checkpoint's are listed beside them.
//! The metric set is that of `strokeseg-train evaluate`: Dice, precision, recall, volumes,
//! absolute volume difference, and the surface distances (Hausdorff distance, HD95, ASSD, mm),
//! which are averaged over the cases where they are finite, the cases with exactly one empty
//! mask (infinite distances) being counted. The pooled cases also get the full shared
//! `strokeseg_eval::Summary` (mean ± sd, median, min, max of every metric); every figure
//! comes from the shared summaries (`Summary`, `MetricSummary`), the records here only lay
//! them out for the files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strokeseg_eval::{MetricSummary, Summary};
use strokeseg_io::atomic::{write_atomically, write_json_atomically};
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::postprocess::PostprocessConfig;
use tch::Device;

use crate::data::LoadedDataset;
use crate::error::{FoldProblem, FoldState, TrainError, read_json};
use crate::model::UNetConfig;
use crate::run::{RunConfig, RunEvaluation, RunPaths, TrainConfig, Validation};
use crate::train::{RunSpec, RunStart, TrainControl, TrainOutcome, TrainState, train_or_resume};

/// `RUN/cv.json`: the settings of a cross-validation command, for `--resume`.
pub const CV_FILE: &str = "cv.json";
/// `RUN/cv_summary.json`.
pub const CV_SUMMARY_JSON: &str = "cv_summary.json";
/// `RUN/cv_summary.md`.
pub const CV_SUMMARY_MD: &str = "cv_summary.md";

/// `RUN/cv.json`: the settings of a cross-validation command, for `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSettings {
    /// The dataset folder as given (absolute).
    pub data_dir: PathBuf,
    /// Patient grouping ([`crate::run::grouping_label`]).
    pub grouping: String,
    /// Number of folds.
    pub n_folds: u32,
    /// Seed of every fold.
    pub seed: u64,
    /// The network's shape.
    pub unet: UNetConfig,
    /// The preprocessing of the data.
    pub preprocess: PreprocessConfig,
    /// Postprocessing for validation.
    pub postprocess: PostprocessConfig,
    /// Every training hyper-parameter.
    pub train: TrainConfig,
}

impl CvSettings {
    /// Reads `out_dir/cv.json`.
    pub fn load(out_dir: &Path) -> Result<CvSettings, TrainError> {
        read_json(&out_dir.join(CV_FILE))
    }

    /// Writes `out_dir/cv.json` atomically.
    pub fn save(&self, out_dir: &Path) -> Result<(), TrainError> {
        Ok(write_json_atomically(&out_dir.join(CV_FILE), self)?)
    }

    /// The run of fold `fold`, on data described by `data_label` (for the model card).
    pub fn fold_spec(&self, fold: u32, data_label: &str) -> RunSpec {
        RunSpec {
            data_dir: self.data_dir.clone(),
            grouping: self.grouping.clone(),
            data_label: data_label.to_owned(),
            unet: self.unet,
            postprocess: self.postprocess,
            train: self.train.clone(),
            seed: self.seed,
            n_folds: self.n_folds,
            fold: Some(fold),
        }
    }
}

/// How [`cross_validate`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CvOutcome {
    /// Every fold finished; the summary (boxed: it holds every pooled case's metrics) is
    /// written.
    Finished(Box<CvSummary>),
    /// A fold stopped early with a checkpoint: continue with `cv --resume`.
    Interrupted,
}

/// `RUN/fold_K`: the run folder of fold `fold`.
pub fn fold_dir(out_dir: &Path, fold: u32) -> PathBuf {
    out_dir.join(format!("fold_{fold}"))
}

/// `RUN/.cv.lock`: held (an advisory `flock`, released when the process ends, however it
/// ends) while a process creates or checks the settings files of `RUN`.
const LOCK_FILE: &str = ".cv.lock";

/// Runs `f` holding the lock of the run folder `out_dir` (created if missing), so that
/// concurrent tasks of one cross-validation or sweep create its shared settings files once.
pub fn with_run_lock<T>(
    out_dir: &Path,
    f: impl FnOnce() -> Result<T, TrainError>,
) -> Result<T, TrainError> {
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::file(out_dir, e))?;
    let lock_path = out_dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| TrainError::file(&lock_path, e))?;
    lock.lock().map_err(|e| TrainError::file(&lock_path, e))?;
    let result = f();
    let _ = lock.unlock();
    result
}

/// Makes `out_dir` the cross-validation of `settings`: writes `cv.json` when it is missing;
/// when present it must hold the same settings ([`TrainError::SettingsMismatch`] otherwise).
/// Safe to call from concurrent tasks (under [`with_run_lock`]).
pub fn init_run(out_dir: &Path, settings: &CvSettings) -> Result<(), TrainError> {
    with_run_lock(out_dir, || {
        let path = out_dir.join(CV_FILE);
        if !path.is_file() {
            return settings.save(out_dir);
        }
        let recorded = CvSettings::load(out_dir)?;
        match settings_difference(&recorded, settings) {
            None => Ok(()),
            Some(reason) => Err(TrainError::SettingsMismatch { path, reason }),
        }
    })
}

/// The first top-level field in which two settings differ, as `field: recorded → asked`.
pub fn settings_difference(recorded: &CvSettings, asked: &CvSettings) -> Option<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(recorded), serde_json::to_value(asked))
    else {
        return (recorded != asked).then(|| "not comparable".to_owned());
    };
    a.iter()
        .find(|(key, value)| b.get(*key) != Some(value))
        .map(|(key, value)| {
            let asked = b
                .get(key)
                .map_or_else(|| "nothing".to_owned(), ToString::to_string);
            format!("{key}: recorded {value}, asked {asked}")
        })
}

/// Trains the folds of `settings` in turn ([`run_fold`]), fold K in `out_dir/fold_K` on
/// `data` (loaded with the settings' grouping and preprocessing): a finished fold is kept, an
/// interrupted one resumed, a missing one started. `data_label` describes the data for the
/// model card; `on_fold` sees each fold's folder and outcome when it ends. Stops at the first
/// interrupted fold; after the last, [`merge`] writes `cv_summary.json` and `cv_summary.md`
/// from the fold folders, exactly as a merge of folds trained by separate processes does.
pub fn cross_validate(
    out_dir: &Path,
    settings: &CvSettings,
    data: &LoadedDataset,
    data_label: &str,
    device: Device,
    control: &TrainControl,
    on_fold: &mut dyn FnMut(&Path, &TrainOutcome),
) -> Result<CvOutcome, TrainError> {
    for fold in 0..settings.n_folds {
        let outcome = run_fold(out_dir, fold, settings, data, data_label, device, control)?;
        on_fold(&fold_dir(out_dir, fold), &outcome);
        if let TrainOutcome::Interrupted { .. } = outcome {
            return Ok(CvOutcome::Interrupted);
        }
    }
    Ok(CvOutcome::Finished(Box::new(merge_folds(
        out_dir, settings,
    )?)))
}

/// Fold `fold` of the cross-validation in `out_dir` (whose `cv.json` holds `settings`), in
/// `out_dir/fold_K`: its stored evaluation when complete, resumed from its checkpoint when
/// interrupted, else started. Writes only inside its own fold folder, so the folds of one
/// cross-validation can run at the same time in separate processes (job array tasks).
pub fn run_fold(
    out_dir: &Path,
    fold: u32,
    settings: &CvSettings,
    data: &LoadedDataset,
    data_label: &str,
    device: Device,
    control: &TrainControl,
) -> Result<TrainOutcome, TrainError> {
    if fold >= settings.n_folds {
        return Err(TrainError::NoSuchFold {
            fold: fold as usize,
            n_folds: settings.n_folds as usize,
        });
    }
    train_fold(
        &fold_dir(out_dir, fold),
        fold,
        settings,
        data,
        data_label,
        device,
        control,
    )
    .map_err(|e| TrainError::Fold {
        fold,
        source: Box::new(e),
    })
}

/// Fold `fold` in `fold_dir`: its stored evaluation when complete, else trained on.
fn train_fold(
    fold_dir: &Path,
    fold: u32,
    settings: &CvSettings,
    data: &LoadedDataset,
    data_label: &str,
    device: Device,
    control: &TrainControl,
) -> Result<TrainOutcome, TrainError> {
    let paths = RunPaths::new(fold_dir);
    let start = if paths.holds_run() {
        let state: Option<TrainState> = read_json(&paths.last_state()).ok();
        if state.is_some_and(|s| s.finished) {
            tracing::info!("fold {fold}: already complete");
            let evaluation = RunEvaluation::load(fold_dir)?;
            return Ok(TrainOutcome::Finished(Box::new(evaluation)));
        }
        tracing::info!("fold {fold}: resuming");
        RunStart::Resume(Box::new(RunConfig::load(fold_dir)?))
    } else {
        RunStart::New(Box::new(settings.fold_spec(fold, data_label)))
    };
    train_or_resume(fold_dir, start, data, device, control)
}

/// Why a file could not be read, without its path (the fold problem names the file).
fn reason_of(error: TrainError) -> String {
    match error {
        TrainError::Json { source, .. } => source.to_string(),
        TrainError::File { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// The finished evaluation of fold `fold` in `out_dir`, or why it is not ready.
fn finished_fold(
    out_dir: &Path,
    fold: u32,
    settings: &CvSettings,
) -> Result<RunEvaluation, FoldState> {
    let dir = fold_dir(out_dir, fold);
    let paths = RunPaths::new(&dir);
    if !paths.holds_run() {
        return Err(FoldState::Missing);
    }
    let corrupt = |file: PathBuf, reason: String| FoldState::Corrupt { file, reason };
    let run = RunConfig::load(&dir).map_err(|e| corrupt(paths.run_json(), reason_of(e)))?;
    if run.split.fold != Some(fold) || run.split.n_folds != settings.n_folds {
        return Err(corrupt(
            paths.run_json(),
            format!(
                "it is fold {:?} of {}, not fold {fold} of {}",
                run.split.fold, run.split.n_folds, settings.n_folds
            ),
        ));
    }
    let state_path = paths.last_state();
    if !state_path.is_file() {
        return Err(FoldState::Unfinished {
            epochs_done: 0,
            epochs: run.train.epochs,
        });
    }
    let state: TrainState =
        read_json(&state_path).map_err(|e| corrupt(state_path.clone(), reason_of(e)))?;
    if !state.finished {
        return Err(FoldState::Unfinished {
            epochs_done: state.next_epoch,
            epochs: run.train.epochs,
        });
    }
    let evaluation =
        RunEvaluation::load(&dir).map_err(|e| corrupt(paths.evaluation(), reason_of(e)))?;
    if evaluation.last.is_none() {
        return Err(corrupt(
            paths.evaluation(),
            "no held-out results".to_owned(),
        ));
    }
    Ok(evaluation)
}

/// Builds the summary of the cross-validation in `out_dir` (its `cv.json`) from its finished
/// fold folders and writes `cv_summary.json` and `cv_summary.md`. Every fold must be finished:
/// otherwise [`TrainError::FoldsNotReady`] names each missing, unfinished or corrupt fold and
/// nothing is written. The one summary path: [`cross_validate`] ends here too.
pub fn merge(out_dir: &Path) -> Result<CvSummary, TrainError> {
    merge_folds(out_dir, &CvSettings::load(out_dir)?)
}

/// [`merge`] with the settings of `out_dir` at hand.
fn merge_folds(out_dir: &Path, settings: &CvSettings) -> Result<CvSummary, TrainError> {
    let mut evaluations = Vec::with_capacity(settings.n_folds as usize);
    let mut problems = Vec::new();
    for fold in 0..settings.n_folds {
        match finished_fold(out_dir, fold, settings) {
            Ok(evaluation) => evaluations.push((fold, evaluation)),
            Err(state) => problems.push(FoldProblem { fold, state }),
        }
    }
    if !problems.is_empty() {
        return Err(TrainError::FoldsNotReady {
            run_dir: out_dir.to_path_buf(),
            problems,
        });
    }
    let summary = summarize(&evaluations, settings.train.loss.kind.name(), settings.seed);
    write_summary(out_dir, &summary)?;
    Ok(summary)
}

/// Mean and sample standard deviation (n − 1; 0 for a single value) of a figure across
/// folds: the `{mean, sd}` record of a shared [`MetricSummary`] in `cv_summary.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub sd: f64,
}

impl From<MetricSummary> for MeanSd {
    fn from(summary: MetricSummary) -> MeanSd {
        MeanSd {
            mean: summary.mean,
            sd: summary.sd,
        }
    }
}

impl MeanSd {
    /// `mean ± sd`, each with `decimals` decimals.
    pub fn format(&self, decimals: usize) -> String {
        format!("{:.p$} ± {:.p$}", self.mean, self.sd, p = decimals)
    }
}

/// Surface distances of a set of cases: each the mean over the cases where it is finite
/// (`None` when there is no such case, or when they were not computed), and the number of
/// cases where they are infinite (exactly one mask empty; `None` when not computed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SurfaceMeans {
    /// Mean Hausdorff distance, mm.
    #[serde(default)]
    pub hausdorff_mm: Option<f64>,
    /// Mean 95th-percentile Hausdorff distance, mm.
    #[serde(default)]
    pub hausdorff95_mm: Option<f64>,
    /// Mean average symmetric surface distance, mm.
    #[serde(default)]
    pub assd_mm: Option<f64>,
    /// Cases with exactly one empty mask, left out of the means.
    #[serde(default)]
    pub n_hausdorff_infinite: Option<usize>,
}

impl SurfaceMeans {
    /// The surface-distance part of a shared summary (all `None` without one).
    fn of(summary: Option<&Summary>) -> SurfaceMeans {
        let mean = |m: Option<MetricSummary>| m.map(|m| m.mean);
        summary.map_or_else(SurfaceMeans::default, |s| SurfaceMeans {
            hausdorff_mm: mean(s.hausdorff_mm),
            hausdorff95_mm: mean(s.hausdorff95_mm),
            assd_mm: mean(s.assd_mm),
            n_hausdorff_infinite: Some(s.n_hausdorff_infinite),
        })
    }
}

/// One fold's held-out results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    /// 0-based fold.
    pub fold: u32,
    /// Held-out cases.
    pub n_cases: usize,
    /// Epochs trained.
    pub epochs: u32,
    /// Last checkpoint: mean per-case Dice.
    pub dice: f64,
    /// Last checkpoint: mean per-case precision.
    pub precision: f64,
    /// Last checkpoint: mean per-case recall.
    pub recall: f64,
    /// Last checkpoint: mean per-case absolute volume difference, mL.
    pub abs_volume_difference_ml: f64,
    /// Last checkpoint: mean Dice over cases with a lesion.
    pub dice_lesion_cases: Option<f64>,
    /// Last checkpoint: surface distances over the held-out cases.
    #[serde(flatten)]
    pub surface: SurfaceMeans,
    /// Best checkpoint's epoch (1-based).
    pub best_epoch: Option<u32>,
    /// Best checkpoint: mean per-case Dice.
    pub best_dice: Option<f64>,
}

/// `RUN/cv_summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    /// Folds.
    pub n_folds: u32,
    /// Loss trained with.
    pub loss: String,
    /// Seed.
    pub seed: u64,
    /// Per fold.
    pub folds: Vec<FoldResult>,
    /// Across folds: Dice.
    pub dice: MeanSd,
    /// Across folds: precision.
    pub precision: MeanSd,
    /// Across folds: recall.
    pub recall: MeanSd,
    /// Across folds: absolute volume difference, mL.
    pub abs_volume_difference_ml: MeanSd,
    /// Across the folds that have one: mean Hausdorff distance, mm.
    #[serde(default)]
    pub hausdorff_mm: Option<MeanSd>,
    /// Across the folds that have one: mean HD95, mm.
    #[serde(default)]
    pub hausdorff95_mm: Option<MeanSd>,
    /// Across the folds that have one: mean ASSD, mm.
    #[serde(default)]
    pub assd_mm: Option<MeanSd>,
    /// Over all held-out cases pooled (every case once).
    pub pooled: PooledResult,
}

/// Means over all held-out cases of all folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledResult {
    /// Cases.
    pub n_cases: usize,
    /// Mean per-case Dice.
    pub dice: f64,
    /// Mean per-case Dice over cases with a lesion.
    pub dice_lesion_cases: Option<f64>,
    /// Mean per-case precision.
    pub precision: f64,
    /// Mean per-case recall.
    pub recall: f64,
    /// Mean per-case absolute volume difference, mL.
    pub abs_volume_difference_ml: f64,
    /// Surface distances over the pooled cases.
    #[serde(flatten)]
    pub surface: SurfaceMeans,
    /// Every metric over the pooled cases (mean ± sd, median, min, max), as
    /// `strokeseg-train evaluate` reports it; `None` when a fold's surface distances were not
    /// computed.
    #[serde(default)]
    pub summary: Option<Summary>,
}

/// The summary of `evaluations` (fold index, its `evaluation.json`). The across-fold means
/// are 0 ± 0 when no fold has held-out results.
pub fn summarize(evaluations: &[(u32, RunEvaluation)], loss: &str, seed: u64) -> CvSummary {
    let mut folds = Vec::new();
    let mut pooled_cases = Vec::new();
    for (fold, e) in evaluations {
        let Some(last) = &e.last else { continue };
        folds.push(FoldResult {
            fold: *fold,
            n_cases: last.n_cases(),
            epochs: e.epochs,
            dice: last.mean_dice(),
            precision: last.mean_precision(),
            recall: last.mean_recall(),
            abs_volume_difference_ml: last.mean_abs_volume_difference_ml(),
            dice_lesion_cases: last.mean_dice_lesion_cases,
            surface: SurfaceMeans::of(last.summary.as_ref()),
            best_epoch: e.best_epoch,
            best_dice: e.best.as_ref().map(Validation::mean_dice),
        });
        pooled_cases.extend(last.cases.iter().cloned());
    }
    let across_folds = |values: Vec<f64>| MetricSummary::of(&values).map(MeanSd::from);
    let across = |f: &dyn Fn(&FoldResult) -> f64| {
        across_folds(folds.iter().map(f).collect()).unwrap_or_default()
    };
    let across_finite = |f: &dyn Fn(&SurfaceMeans) -> Option<f64>| {
        across_folds(folds.iter().filter_map(|r| f(&r.surface)).collect())
    };
    let pooled = Validation::new(pooled_cases, 0.0);
    CvSummary {
        n_folds: evaluations.len() as u32,
        loss: loss.to_owned(),
        seed,
        dice: across(&|f| f.dice),
        precision: across(&|f| f.precision),
        recall: across(&|f| f.recall),
        abs_volume_difference_ml: across(&|f| f.abs_volume_difference_ml),
        hausdorff_mm: across_finite(&|s| s.hausdorff_mm),
        hausdorff95_mm: across_finite(&|s| s.hausdorff95_mm),
        assd_mm: across_finite(&|s| s.assd_mm),
        pooled: PooledResult {
            n_cases: pooled.n_cases(),
            dice: pooled.mean_dice(),
            dice_lesion_cases: pooled.mean_dice_lesion_cases,
            precision: pooled.mean_precision(),
            recall: pooled.mean_recall(),
            abs_volume_difference_ml: pooled.mean_abs_volume_difference_ml(),
            surface: SurfaceMeans::of(pooled.summary.as_ref()),
            summary: pooled.summary,
        },
        folds,
    }
}

/// The summary as a Markdown table.
pub fn markdown(summary: &CvSummary) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.4}"));
    let mut md = format!(
        "# Cross-validation: {} folds, loss {}, seed {}\n\n\
         Held-out cases, last checkpoint of each fold; mean per case. Dice of a lesion-free \
         case is 1 when nothing is predicted, else 0.\n\n\
         | fold | cases | epochs | Dice | Dice (lesion cases) | precision | recall | abs. vol. diff. (mL) | best epoch | best Dice |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        summary.n_folds, summary.loss, summary.seed
    );
    for f in &summary.folds {
        md.push_str(&format!(
            "| {} | {} | {} | {:.4} | {} | {:.4} | {:.4} | {:.2} | {} | {} |\n",
            f.fold,
            f.n_cases,
            f.epochs,
            f.dice,
            opt(f.dice_lesion_cases),
            f.precision,
            f.recall,
            f.abs_volume_difference_ml,
            f.best_epoch
                .map_or_else(|| "–".to_owned(), |e| e.to_string()),
            opt(f.best_dice),
        ));
    }
    md.push_str(&format!(
        "| **mean ± sd** | | | **{}** | | {} | {} | {} | | |\n",
        summary.dice.format(4),
        summary.precision.format(4),
        summary.recall.format(4),
        summary.abs_volume_difference_ml.format(2),
    ));
    let p = &summary.pooled;
    md.push_str(&format!(
        "| pooled | {} | | {:.4} | {} | {:.4} | {:.4} | {:.2} | | |\n",
        p.n_cases,
        p.dice,
        opt(p.dice_lesion_cases),
        p.precision,
        p.recall,
        p.abs_volume_difference_ml
    ));
    md.push_str(
        "\n## Surface distances\n\n\
         The same cases; each distance (mm) is the mean over the cases where it is finite. \
         ∞ counts the cases with exactly one empty mask (prediction or truth), whose \
         distances are infinite and left out of the means; both masks empty scores 0. \
         – : not computed.\n\n\
         | fold | cases | Hausdorff (mm) | HD95 (mm) | ASSD (mm) | ∞ |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for f in &summary.folds {
        md.push_str(&surface_row(&f.fold.to_string(), f.n_cases, &f.surface));
    }
    let mean_sd = |m: Option<MeanSd>| m.map_or_else(|| "–".to_owned(), |m| m.format(2));
    md.push_str(&format!(
        "| **mean ± sd** | | {} | {} | {} | |\n",
        mean_sd(summary.hausdorff_mm),
        mean_sd(summary.hausdorff95_mm),
        mean_sd(summary.assd_mm),
    ));
    md.push_str(&surface_row("pooled", p.n_cases, &p.surface));
    if let Some(pooled) = &p.summary {
        md.push_str("\n## All held-out cases pooled\n\n");
        md.push_str(&pooled.to_markdown());
    }
    md
}

/// One row of the surface-distance table: a distance is `∞` when every case's is infinite,
/// `–` when not computed.
fn surface_row(label: &str, n_cases: usize, s: &SurfaceMeans) -> String {
    let computed = s.n_hausdorff_infinite.is_some();
    let cell = |v: Option<f64>| match v {
        Some(v) => format!("{v:.2}"),
        None if computed => "∞".to_owned(),
        None => "–".to_owned(),
    };
    format!(
        "| {label} | {n_cases} | {} | {} | {} | {} |\n",
        cell(s.hausdorff_mm),
        cell(s.hausdorff95_mm),
        cell(s.assd_mm),
        s.n_hausdorff_infinite
            .map_or_else(|| "–".to_owned(), |n| n.to_string()),
    )
}

/// Writes `cv_summary.json` and `cv_summary.md` into `run_dir`.
pub fn write_summary(run_dir: &Path, summary: &CvSummary) -> Result<(), TrainError> {
    write_json_atomically(&run_dir.join(CV_SUMMARY_JSON), summary)?;
    Ok(write_atomically(
        &run_dir.join(CV_SUMMARY_MD),
        markdown(summary).as_bytes(),
    )?)
}

#[cfg(test)]
mod tests {
    use strokeseg_shared::metrics::ConfusionCounts;
    use strokeseg_shared::surface::surface_distances;

    use super::*;
    use crate::run::CaseValidation;

    #[test]
    fn mean_and_sample_sd() {
        let mean_sd = |values: &[f64]| MetricSummary::of(values).map(MeanSd::from);
        let m = mean_sd(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((m.mean - 2.5).abs() < 1e-12);
        assert!((m.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[0.7]).unwrap().sd, 0.0);
        assert_eq!(mean_sd(&[]), None);
    }

    /// A case from masks of 1 × 1 × `n` voxels of 2 mm: `pred` and `truth` as 0/1 per voxel.
    fn case(name: &str, pred: &[u8], truth: &[u8]) -> CaseValidation {
        let counts = ConfusionCounts::from_masks(pred, truth).unwrap();
        let dims = [1, 1, pred.len()];
        CaseValidation {
            case: name.to_owned(),
            patient: name.to_owned(),
            n_slices: pred.len(),
            counts,
            metrics: counts.metrics(8.0).unwrap(),
            surface: Some(surface_distances(pred, truth, dims, [2.0; 3]).unwrap()),
        }
    }

    fn fold(cases: Vec<CaseValidation>) -> RunEvaluation {
        RunEvaluation {
            epochs: 1,
            best_epoch: Some(1),
            last: Some(Validation::new(cases.clone(), 0.0)),
            best: Some(Validation::new(cases, 0.0)),
        }
    }

    #[test]
    fn surface_distances_per_fold_and_pooled() {
        // Fold 0: a prediction one voxel (2 mm) off the truth, and an empty prediction
        // (infinite). Fold 1: a perfect prediction (0 mm).
        let shifted = case("case_1", &[0, 1, 1, 0], &[1, 1, 0, 0]);
        let empty = case("case_2", &[0, 0, 0, 0], &[0, 1, 1, 0]);
        let perfect = case("case_3", &[0, 1, 1, 0], &[0, 1, 1, 0]);
        let hd_shifted = shifted.surface.unwrap().hausdorff_mm.unwrap();
        assert_eq!(hd_shifted, 2.0);
        let summary = summarize(
            &[(0, fold(vec![shifted, empty])), (1, fold(vec![perfect]))],
            "hybrid",
            1,
        );
        let f0 = &summary.folds[0].surface;
        assert_eq!(f0.hausdorff_mm, Some(2.0));
        assert_eq!(f0.n_hausdorff_infinite, Some(1));
        let f1 = &summary.folds[1].surface;
        assert_eq!((f1.hausdorff_mm, f1.assd_mm), (Some(0.0), Some(0.0)));
        assert_eq!(f1.n_hausdorff_infinite, Some(0));
        // Across folds: mean of 2 and 0, sd √2.
        let across = summary.hausdorff_mm.unwrap();
        assert_eq!(across.mean, 1.0);
        assert!((across.sd - 2f64.sqrt()).abs() < 1e-12);
        // Pooled: 3 cases, the finite two averaged, the empty one counted.
        let pooled = &summary.pooled;
        assert_eq!(pooled.surface.hausdorff_mm, Some(1.0));
        assert_eq!(pooled.surface.n_hausdorff_infinite, Some(1));
        let shared = pooled.summary.unwrap();
        assert_eq!((shared.n_cases, shared.n_hausdorff_infinite), (3, 1));
        assert_eq!(shared.hausdorff_mm.unwrap().n, 2);
        let md = markdown(&summary);
        assert!(md.contains("| 0 | 2 | 2.00 |"), "{md}");
        assert!(md.contains("| **mean ± sd** | | 1.00 ± 1.41 |"), "{md}");
        assert!(md.contains("## All held-out cases pooled"), "{md}");
        // The JSON flattens the fold's distances beside its Dice, and reads back.
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["folds"][0]["hausdorff_mm"], 2.0);
        assert_eq!(json["folds"][0]["n_hausdorff_infinite"], 1);
        assert_eq!(json["pooled"]["summary"]["n_hausdorff_infinite"], 1);
        let back: CvSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn an_evaluation_json_without_surface_distances_still_summarises() {
        // evaluation.json as written before the surface distances (a cv --resume of an older
        // run reads its finished folds' files).
        let old = r#"{"epochs": 2, "best_epoch": 2,
            "last": {"n_cases": 1, "n_lesion_cases": 1, "mean_dice": 0.5,
                "mean_dice_lesion_cases": 0.5, "mean_precision": 0.5, "mean_recall": 0.5,
                "mean_abs_volume_difference_ml": 0.0, "loss": 0.3,
                "cases": [{"case": "case_1", "patient": "p1", "n_slices": 2,
                    "counts": {"tp": 1, "fp": 1, "fn": 1, "tn": 1},
                    "metrics": {"dice": 0.5, "precision": 0.5, "recall": 0.5,
                        "predicted_volume_ml": 0.016, "true_volume_ml": 0.016,
                        "abs_volume_difference_ml": 0.0, "both_empty": false}}]},
            "best": null}"#;
        let evaluation: RunEvaluation = serde_json::from_str(old).unwrap();
        let last = evaluation.last.as_ref().unwrap();
        assert_eq!((last.cases[0].surface, last.summary), (None, None));
        let summary = summarize(&[(0, evaluation)], "hybrid", 1);
        assert_eq!(summary.folds[0].dice, 0.5);
        assert_eq!(summary.folds[0].surface, SurfaceMeans::default());
        assert_eq!((summary.hausdorff_mm, summary.pooled.summary), (None, None));
        let md = markdown(&summary);
        assert!(md.contains("| 0 | 1 | – | – | – | – |"), "{md}");
    }

    #[test]
    fn the_fold_loop_stops_resumes_and_keeps_finished_folds() {
        let data_dir = tempfile::tempdir().unwrap();
        let options = strokeseg_phantom::DatasetOptions {
            n_cases: 4,
            seed: 41,
            min_slices: 2,
            max_slices: 3,
            lesion_free_fraction: 0.0,
            ..Default::default()
        };
        strokeseg_phantom::write_dataset(data_dir.path(), &options).unwrap();
        let preprocess = PreprocessConfig {
            input_height: 32,
            input_width: 32,
            target_spacing_mm: 8.0,
            ..PreprocessConfig::default()
        };
        let grouping = strokeseg_io::PatientGrouping::Heuristic;
        let dataset = crate::data::discover(data_dir.path(), &grouping).unwrap();
        let data =
            crate::data::load_dataset(&dataset, &preprocess, Device::Cpu, |_, _, _| {}).unwrap();
        let settings = CvSettings {
            data_dir: data_dir.path().to_path_buf(),
            grouping: crate::run::grouping_label(&grouping),
            n_folds: 2,
            seed: 3,
            unet: UNetConfig {
                in_channels: preprocess.n_channels() as i64,
                n_classes: 2,
                base_width: 4,
                depth: 2,
            },
            preprocess,
            postprocess: PostprocessConfig::default(),
            train: TrainConfig {
                epochs: 1,
                batch_size: 4,
                ..TrainConfig::default()
            },
        };
        let out = tempfile::tempdir().unwrap();
        let run = |control: &TrainControl| {
            let mut folds = Vec::new();
            let mut on_fold = |dir: &Path, outcome: &TrainOutcome| {
                let finished = matches!(outcome, TrainOutcome::Finished(_));
                folds.push((dir.to_path_buf(), finished));
            };
            let outcome = cross_validate(
                out.path(),
                &settings,
                &data,
                "phantom (test)",
                Device::Cpu,
                control,
                &mut on_fold,
            )
            .unwrap();
            (outcome, folds)
        };
        let fold_dir = |k: u32| out.path().join(format!("fold_{k}"));

        let stop_early = TrainControl {
            stop_after_steps: Some(1),
            ..TrainControl::default()
        };
        let (outcome, folds) = run(&stop_early);
        assert_eq!(outcome, CvOutcome::Interrupted);
        assert_eq!(folds, [(fold_dir(0), false)]);
        assert!(!out.path().join(CV_SUMMARY_JSON).is_file());

        let (outcome, folds) = run(&TrainControl::default());
        let CvOutcome::Finished(summary) = outcome else {
            panic!("not finished: {outcome:?}");
        };
        assert_eq!(folds, [(fold_dir(0), true), (fold_dir(1), true)]);
        assert_eq!((summary.n_folds, summary.pooled.n_cases), (2, 4));
        let written: CvSummary = read_json(&out.path().join(CV_SUMMARY_JSON)).unwrap();
        assert_eq!((written.n_folds, written.folds.len()), (2, 2));

        // Finished folds are read back, not trained again.
        let steps = std::fs::read_to_string(fold_dir(1).join(crate::run::STEPS_CSV)).unwrap();
        let (again, folds) = run(&TrainControl::default());
        assert!(matches!(again, CvOutcome::Finished(_)), "{again:?}");
        assert_eq!(folds, [(fold_dir(0), true), (fold_dir(1), true)]);
        let steps_again = std::fs::read_to_string(fold_dir(1).join(crate::run::STEPS_CSV)).unwrap();
        assert_eq!(steps_again, steps);
    }
}
