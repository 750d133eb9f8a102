//! Full ISLES 2018 evaluation of predicted lesion masks against ground truth: per case Dice,
//! precision, recall, volumes, absolute volume difference, Hausdorff distance, HD95 and
//! ASSD; over a dataset a summary (mean ± sd, median) and the per-case CSV, summary JSON and
//! Markdown reports.
//!
//! # Conventions
//!
//! - **Lesion voxels**: a voxel of a mask file is lesion when its (scaled) value is greater
//!   than [`LESION_THRESHOLD`] (0.5), so 0/1 and 0/255 masks read as expected.
//! - **Grids**: prediction and truth must share one grid (dims, spacing, affine within
//!   [`GridTolerance::default`]); otherwise [`IoError::GridMismatch`] names both files.
//!   Distances use the truth's `pixdim` spacing.
//! - **Empty masks**: Dice, precision and recall follow [`strokeseg_shared::metrics`] (both empty: 1;
//!   one empty: 0). Surface distances follow [`strokeseg_shared::surface`]: both empty → 0, exactly one
//!   empty → infinite, which is `None` in [`SurfaceDistances`], `null` in JSON, `inf` in the
//!   CSV and `∞` in Markdown. The [`Summary`] averages each surface distance over the cases
//!   where it is finite and reports how many were infinite ([`Summary::n_hausdorff_infinite`]).
//!   Both-empty cases are included in every mean (Dice 1, distances 0) and counted in
//!   [`Summary::n_both_empty`].
//! - **Missing predictions**: by default a truth case without a prediction is an error that
//!   names the case and the places looked at ([`MissingPrediction::Error`]): a silently
//!   empty prediction would distort the numbers. [`MissingPrediction::CountAsEmpty`] scores
//!   it as an empty mask instead, with a warning in [`DatasetEvaluation::warnings`].
//!
//! # Memory
//!
//! Surface distances need whole volumes: a case holds both masks (1 byte per voxel each,
//! read slice by slice with [`NiftiVolumeReader`]), the distance transform of their bounding
//! box (10 bytes per voxel of the box) and one distance per surface voxel (8 bytes), so at
//! most 28 bytes per voxel. Volumes above [`MAX_EVALUATION_VOXELS`] are refused before
//! anything is allocated. An ISLES case (256 × 256 × ≤ 22) needs at most about 40 MB, with
//! a lesion-sized bounding box a few MB.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use strokeseg_io::{
    Dataset, DatasetCase, GridTolerance, HeaderInfo, IoError, NiftiVolumeReader, PatientGrouping,
    atomic::write_atomically,
};
use strokeseg_shared::metrics::{ConfusionCounts, MetricsError, SegmentationMetrics};
use strokeseg_shared::modality::Modality;
use strokeseg_shared::surface::{SurfaceDistances, SurfaceError, surface_distances};

/// A voxel of a mask file is lesion when its value is greater than this.
pub const LESION_THRESHOLD: f32 = 0.5;

/// Most voxels (`nx · ny · nz`) of a case that [`evaluate_case`] accepts: 512 × 512 × 128,
/// under 1 GB of working memory at worst (see the [module documentation](self)). An ISLES
/// case has at most 1.5 million.
pub const MAX_EVALUATION_VOXELS: usize = 1 << 25;

/// File names of the edge runtime's mask in its per-case output folder, in the order looked
/// for.
pub const EDGE_MASK_FILES: [&str; 2] = ["lesion_mask.nii.gz", "lesion_mask.nii"];

/// The per-case CSV written by [`DatasetEvaluation::write_reports`].
pub const CASES_CSV_FILE: &str = "evaluation_cases.csv";
/// The summary JSON written by [`DatasetEvaluation::write_reports`].
pub const SUMMARY_JSON_FILE: &str = "evaluation_summary.json";
/// The summary Markdown table written by [`DatasetEvaluation::write_reports`].
pub const SUMMARY_MARKDOWN_FILE: &str = "evaluation_summary.md";

/// The evaluation of one predicted mask against its ground truth.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaseEvaluation {
    /// The case: its dataset folder name (`case_12`), or for [`evaluate_case`] the nearest
    /// `case_N` folder above the truth file, else the truth file's name without extension.
    pub case_name: String,
    /// The predicted mask; `None` when it was missing and counted as empty.
    pub prediction: Option<PathBuf>,
    /// The ground-truth mask.
    pub truth: PathBuf,
    /// `[nx, ny, nz]` of the common grid.
    pub dims: [usize; 3],
    /// Voxel spacing of the truth, mm.
    pub spacing_mm: [f32; 3],
    /// Voxel counts of the confusion matrix.
    pub counts: ConfusionCounts,
    /// Dice, precision, recall, volumes (mL), absolute volume difference (mL).
    pub metrics: SegmentationMetrics,
    /// Hausdorff distance, HD95 and ASSD (mm; `None`: infinite, exactly one mask empty).
    pub surface: SurfaceDistances,
}

/// Evaluates the mask file `pred_path` against the mask file `truth_path` (NIfTI-1, plain
/// or gzip, 3D). Both are read slice by slice; they must share one grid.
///
/// Errors: any [`IoError`] of reading either file, [`IoError::WrongDimensionality`] for a
/// series, [`IoError::GridMismatch`] naming both files, [`IoError::TooLarge`] above
/// [`MAX_EVALUATION_VOXELS`].
pub fn evaluate_case(pred_path: &Path, truth_path: &Path) -> Result<CaseEvaluation, IoError> {
    let mut truth = open_mask(truth_path)?;
    let mut pred = open_mask(pred_path)?;
    truth
        .info()
        .check_same_grid(pred.info(), GridTolerance::default())?;
    let n_voxels = checked_volume(truth.info())?;
    let truth_mask = read_mask(&mut truth, n_voxels)?;
    let pred_mask = read_mask(&mut pred, n_voxels)?;
    score(
        case_name_of(truth_path),
        Some(pred_path.to_path_buf()),
        truth.info(),
        &pred_mask,
        &truth_mask,
    )
}

/// Evaluates an empty prediction against `truth_path` (a missing prediction counted as
/// empty).
fn evaluate_empty_prediction(
    case_name: String,
    truth_path: &Path,
) -> Result<CaseEvaluation, IoError> {
    let mut truth = open_mask(truth_path)?;
    let n_voxels = checked_volume(truth.info())?;
    let truth_mask = read_mask(&mut truth, n_voxels)?;
    let pred_mask = vec![0u8; n_voxels];
    score(case_name, None, truth.info(), &pred_mask, &truth_mask)
}

/// Opens a mask file and refuses series (more than one volume).
fn open_mask(path: &Path) -> Result<NiftiVolumeReader, IoError> {
    let reader = NiftiVolumeReader::open(path)?;
    if reader.info().n_volumes() != 1 {
        return Err(IoError::WrongDimensionality {
            path: path.to_path_buf(),
            expected: "3D mask",
            dims: reader.info().dims.clone(),
        });
    }
    Ok(reader)
}

/// `nx · ny · nz`, refused above [`MAX_EVALUATION_VOXELS`].
fn checked_volume(info: &HeaderInfo) -> Result<usize, IoError> {
    let dims = [info.nx(), info.ny(), info.nz()];
    match dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(n) if n <= MAX_EVALUATION_VOXELS => Ok(n),
        _ => Err(IoError::TooLarge {
            path: info.path.clone(),
            reason: format!(
                "evaluating dims {dims:?} needs the whole volume; at most \
                 {MAX_EVALUATION_VOXELS} voxels are accepted"
            ),
        }),
    }
}

/// Reads every slice of `reader` into a `0`/`1` volume of `n_voxels` (x fastest).
fn read_mask(reader: &mut NiftiVolumeReader, n_voxels: usize) -> Result<Vec<u8>, IoError> {
    let slice_voxels = reader.info().slice_voxels();
    let mut mask = vec![0u8; n_voxels];
    let mut values = vec![0f32; slice_voxels];
    for (slice_idx, out) in mask.chunks_exact_mut(slice_voxels.max(1)).enumerate() {
        reader.read_slice_f32(slice_idx, &mut values)?;
        for (m, &v) in out.iter_mut().zip(&values) {
            *m = u8::from(v > LESION_THRESHOLD);
        }
    }
    Ok(mask)
}

/// All metrics of two whole-volume masks on the grid of `truth_info`.
fn score(
    case_name: String,
    prediction: Option<PathBuf>,
    truth_info: &HeaderInfo,
    pred_mask: &[u8],
    truth_mask: &[u8],
) -> Result<CaseEvaluation, IoError> {
    let path = &truth_info.path;
    let dims = [truth_info.nx(), truth_info.ny(), truth_info.nz()];
    let spacing_mm = truth_info.spacing_mm;
    let counts =
        ConfusionCounts::from_masks(pred_mask, truth_mask).map_err(|e| metrics_error(path, e))?;
    let metrics = counts
        .metrics(truth_info.voxel_volume_mm3())
        .map_err(|e| metrics_error(path, e))?;
    let surface = surface_distances(pred_mask, truth_mask, dims, spacing_mm)
        .map_err(|e| surface_error(path, e))?;
    Ok(CaseEvaluation {
        case_name,
        prediction,
        truth: path.clone(),
        dims,
        spacing_mm,
        counts,
        metrics,
        surface,
    })
}

// Both masks are read on the truth's validated grid, so these cannot happen; they are
// mapped rather than unwrapped.
fn metrics_error(path: &Path, e: MetricsError) -> IoError {
    IoError::InvalidHeader {
        path: path.to_path_buf(),
        field: "pixdim",
        reason: e.to_string(),
    }
}

fn surface_error(path: &Path, e: SurfaceError) -> IoError {
    IoError::InvalidHeader {
        path: path.to_path_buf(),
        field: match e {
            SurfaceError::InvalidSpacing { .. } => "pixdim",
            SurfaceError::LengthMismatch { .. } | SurfaceError::TooManyVoxels { .. } => "dim",
        },
        reason: e.to_string(),
    }
}

/// The file name without `.nii` / `.nii.gz` (case-insensitive), or `None` for other files.
fn nifti_stem(file_name: &str) -> Option<&str> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".nii.gz") {
        file_name.get(..file_name.len() - 7)
    } else if lower.ends_with(".nii") {
        file_name.get(..file_name.len() - 4)
    } else {
        None
    }
}

fn case_name_of(truth_path: &Path) -> String {
    let case_folder = truth_path
        .ancestors()
        .skip(1)
        .filter_map(|p| p.file_name()?.to_str())
        .find(|n| {
            n.strip_prefix("case_")
                .is_some_and(|k| k.parse::<u64>().is_ok())
        });
    match case_folder {
        Some(name) => name.to_owned(),
        None => {
            let name = truth_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            nifti_stem(&name).map(str::to_owned).unwrap_or(name)
        }
    }
}

/// `(tag, id)` of an ISLES name `SMIR.Brain.XX.O.<tag>.<id>` (a `.nii`/`.nii.gz` extension
/// is ignored).
fn isles_tag_and_id(name: &str) -> Option<(&str, &str)> {
    let stem = nifti_stem(name).unwrap_or(name);
    let (_, rest) = stem.split_once(".O.")?;
    let (tag, id) = rest.rsplit_once('.')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some((tag, id))
}

/// What to do with a truth case that has no prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MissingPrediction {
    /// Fail with an error that names the case and where the prediction was looked for.
    #[default]
    Error,
    /// Score it as an empty mask and add a warning to [`DatasetEvaluation::warnings`].
    CountAsEmpty,
}

/// Options of [`evaluate_dataset_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvaluateOptions {
    /// What to do with a truth case that has no prediction.
    pub missing_prediction: MissingPrediction,
    /// Evaluate only these cases (folder names such as `case_12`, e.g. one cross-validation
    /// fold); `None`: every case of the truth dataset. A name that is not in the dataset is
    /// an error.
    pub only_cases: Option<Vec<String>>,
}

/// The evaluation of a folder of predictions against a truth dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetEvaluation {
    /// The predictions folder.
    pub pred_dir: PathBuf,
    /// The truth dataset folder (as found: `TRAINING/` if the root holds one).
    pub truth_root: PathBuf,
    /// Per case, in dataset order (by case number).
    pub cases: Vec<CaseEvaluation>,
    /// Mean ± sd, median, … of every metric over `cases`.
    pub summary: Summary,
    /// Human-readable warnings (one per missing prediction counted as empty).
    pub warnings: Vec<String>,
}

/// Evaluates every case of the truth dataset at `truth_root` (see [`Dataset::discover`];
/// the `OT` of each case is the truth) against its prediction in `pred_dir` (see
/// [`find_prediction`]). A missing prediction is an error naming the case.
pub fn evaluate_dataset(pred_dir: &Path, truth_root: &Path) -> Result<DatasetEvaluation, IoError> {
    evaluate_dataset_with(pred_dir, truth_root, &EvaluateOptions::default())
}

/// [`evaluate_dataset`] with options: a subset of cases, missing predictions as empty.
pub fn evaluate_dataset_with(
    pred_dir: &Path,
    truth_root: &Path,
    options: &EvaluateOptions,
) -> Result<DatasetEvaluation, IoError> {
    if !pred_dir.is_dir() {
        return Err(IoError::Dataset {
            path: pred_dir.to_path_buf(),
            reason: "the predictions folder does not exist or is not a folder".into(),
        });
    }
    let dataset = Dataset::discover(truth_root, &PatientGrouping::OnePerCase)?;
    let selected: Vec<&DatasetCase> = match &options.only_cases {
        None => dataset.cases.iter().collect(),
        Some(names) => {
            for name in names {
                if !dataset.cases.iter().any(|c| &c.name == name) {
                    return Err(IoError::Dataset {
                        path: dataset.root.clone(),
                        reason: format!("case {name} is not in the truth dataset"),
                    });
                }
            }
            dataset
                .cases
                .iter()
                .filter(|c| names.contains(&c.name))
                .collect()
        }
    };
    let mut cases = Vec::with_capacity(selected.len());
    let mut warnings = Vec::new();
    for case in selected {
        let truth_path = case.files.require(Modality::Ot)?;
        let evaluation = match find_prediction(pred_dir, case)? {
            Some(pred_path) => {
                let mut e = evaluate_case(&pred_path, truth_path)?;
                e.case_name.clone_from(&case.name);
                e
            }
            None => match options.missing_prediction {
                MissingPrediction::Error => {
                    return Err(IoError::Dataset {
                        path: pred_dir.to_path_buf(),
                        reason: format!(
                            "no prediction for case {}: {}",
                            case.name,
                            looked_for(pred_dir, case)
                        ),
                    });
                }
                MissingPrediction::CountAsEmpty => {
                    warnings.push(format!(
                        "no prediction for case {} in {}: counted as an empty mask",
                        case.name,
                        pred_dir.display()
                    ));
                    evaluate_empty_prediction(case.name.clone(), truth_path)?
                }
            },
        };
        cases.push(evaluation);
    }
    let summary = Summary::from_cases(&cases).ok_or_else(|| IoError::Dataset {
        path: dataset.root.clone(),
        reason: "no cases to evaluate".into(),
    })?;
    Ok(DatasetEvaluation {
        pred_dir: pred_dir.to_path_buf(),
        truth_root: dataset.root,
        cases,
        summary,
        warnings,
    })
}

/// The places [`find_prediction`] looks at, for error messages.
fn looked_for(pred_dir: &Path, case: &DatasetCase) -> String {
    let ids: Vec<String> = truth_file_ids(case).into_iter().collect();
    format!(
        "looked for {}, {}.nii[.gz] and SMIR.*.O.OT.<id>[.nii[.gz]] with id in [{}] in {} \
         and {}",
        Path::new(&case.name).join(EDGE_MASK_FILES[0]).display(),
        case.name,
        ids.join(", "),
        pred_dir.display(),
        pred_dir.join(&case.name).display()
    )
}

/// The ISLES file ids (`SMIR.Brain.XX.O.<MOD>.<id>`) of the case's truth-side files.
fn truth_file_ids(case: &DatasetCase) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for path in case.files.files.values() {
        let names = [path.file_name(), path.parent().and_then(Path::file_name)];
        for name in names.into_iter().flatten().filter_map(|n| n.to_str()) {
            if let Some((_, id)) = isles_tag_and_id(name) {
                ids.insert(id.to_owned());
            }
        }
    }
    ids
}

/// The prediction of `case` in `pred_dir`, if there is one. Accepted layouts:
///
/// 1. `pred_dir/<case>/lesion_mask.nii.gz` (or `.nii`): the edge runtime's output folders;
/// 2. `pred_dir/<case>.nii.gz` or `pred_dir/<case>.nii`;
/// 3. an ISLES name `SMIR.<…>.O.OT.<id>.nii[.gz]`, or an ISLES folder of that name holding
///    it, in `pred_dir` or `pred_dir/<case>/`, where `<id>` is the id of one of the case's
///    truth-side files (usually its `OT`). So a truth dataset is its own perfect prediction.
///
/// More than one match is an error ([`IoError::Dataset`]) rather than a guess.
pub fn find_prediction(pred_dir: &Path, case: &DatasetCase) -> Result<Option<PathBuf>, IoError> {
    let case_dir = pred_dir.join(&case.name);
    let mut found: Vec<PathBuf> = Vec::new();
    found.extend(
        EDGE_MASK_FILES
            .iter()
            .map(|f| case_dir.join(f))
            .filter(|p| p.is_file()),
    );
    found.extend(
        ["nii.gz", "nii"]
            .iter()
            .map(|ext| pred_dir.join(format!("{}.{ext}", case.name)))
            .filter(|p| p.is_file()),
    );
    let ids = truth_file_ids(case);
    if !ids.is_empty() {
        for dir in [pred_dir, case_dir.as_path()] {
            if dir.is_dir() {
                isles_ot_files(dir, &ids, &mut found)?;
            }
        }
    }
    found.sort();
    found.dedup();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(IoError::Dataset {
            path: pred_dir.to_path_buf(),
            reason: format!(
                "{} candidate predictions for case {}: {}",
                found.len(),
                case.name,
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Adds the ISLES `OT` files (or files inside ISLES `OT` folders) in `dir` whose id is in
/// `ids`.
fn isles_ot_files(
    dir: &Path,
    ids: &BTreeSet<String>,
    found: &mut Vec<PathBuf>,
) -> Result<(), IoError> {
    let entries = std::fs::read_dir(dir).map_err(|e| IoError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| IoError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let matches = isles_tag_and_id(name)
            .is_some_and(|(tag, id)| tag.eq_ignore_ascii_case("OT") && ids.contains(id));
        if !matches {
            continue;
        }
        if path.is_file() && nifti_stem(name).is_some() {
            found.push(path);
        } else if path.is_dir() {
            found.extend(nifti_in_isles_folder(&path, name)?);
        }
    }
    Ok(())
}

/// The NIfTI file in an ISLES folder: the one named like the folder, else the only one.
fn nifti_in_isles_folder(dir: &Path, dir_name: &str) -> Result<Option<PathBuf>, IoError> {
    for ext in ["nii", "nii.gz"] {
        let p = dir.join(format!("{dir_name}.{ext}"));
        if p.is_file() {
            return Ok(Some(p));
        }
    }
    let mut niftis = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| IoError::io(dir, e))? {
        let path = entry.map_err(|e| IoError::io(dir, e))?.path();
        let is_nifti = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(nifti_stem)
            .is_some();
        if is_nifti && path.is_file() {
            niftis.push(path);
        }
    }
    Ok(if niftis.len() == 1 {
        niftis.pop()
    } else {
        None
    })
}

/// Mean, sample standard deviation, median and range of one metric over cases.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricSummary {
    /// Number of values (cases).
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divisor `n − 1`; `0` for one value).
    pub sd: f64,
    /// Median (mean of the two middle values for even `n`).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl MetricSummary {
    /// The summary of `values`; `None` if there are none or one is not finite.
    pub fn of(values: &[f64]) -> Option<MetricSummary> {
        let n = values.len();
        if n == 0 || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        Some(MetricSummary {
            n,
            mean,
            sd,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }

    fn to_json(self) -> Value {
        json!({
            "n": self.n,
            "mean": self.mean,
            "sd": self.sd,
            "median": self.median,
            "min": self.min,
            "max": self.max,
        })
    }
}

/// Every metric summarised over the cases of an evaluation.
///
/// Dice, precision, recall and the volumes are over all cases. Hausdorff distance, HD95 and
/// ASSD are over the cases where they are finite (`None` if there is none); the others
/// (exactly one mask empty) are counted in `n_hausdorff_infinite`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Cases evaluated.
    pub n_cases: usize,
    /// Cases where neither mask has a lesion voxel (included in every mean).
    pub n_both_empty: usize,
    /// Cases whose prediction was missing and counted as empty.
    pub n_missing_predictions: usize,
    /// Cases where exactly one mask is empty: Hausdorff distance, HD95 and ASSD infinite,
    /// left out of their summaries.
    pub n_hausdorff_infinite: usize,
    /// Dice coefficient.
    pub dice: MetricSummary,
    /// Precision.
    pub precision: MetricSummary,
    /// Recall.
    pub recall: MetricSummary,
    /// Predicted lesion volume, mL.
    pub predicted_volume_ml: MetricSummary,
    /// Ground-truth lesion volume, mL.
    pub true_volume_ml: MetricSummary,
    /// Absolute volume difference, mL.
    pub abs_volume_difference_ml: MetricSummary,
    /// Hausdorff distance over the finite cases, mm.
    pub hausdorff_mm: Option<MetricSummary>,
    /// HD95 over the finite cases, mm.
    pub hausdorff95_mm: Option<MetricSummary>,
    /// ASSD over the finite cases, mm.
    pub assd_mm: Option<MetricSummary>,
}

impl Summary {
    /// The summary of `cases`; `None` if there are none.
    pub fn from_cases(cases: &[CaseEvaluation]) -> Option<Summary> {
        let mut summary = Summary::from_metrics(cases.iter().map(|c| (&c.metrics, &c.surface)))?;
        summary.n_missing_predictions = cases.iter().filter(|c| c.prediction.is_none()).count();
        Some(summary)
    }

    /// The summary of per-case metrics (e.g. computed in memory by a trainer with
    /// [`surface_distances`] and [`ConfusionCounts`]); `None` if there are none.
    /// `n_missing_predictions` is 0.
    pub fn from_metrics<'a>(
        cases: impl IntoIterator<Item = (&'a SegmentationMetrics, &'a SurfaceDistances)>,
    ) -> Option<Summary> {
        let cases: Vec<_> = cases.into_iter().collect();
        let column = |f: &dyn Fn(&SegmentationMetrics) -> f64| {
            cases.iter().map(|(m, _)| f(m)).collect::<Vec<f64>>()
        };
        let finite = |f: &dyn Fn(&SurfaceDistances) -> Option<f64>| {
            MetricSummary::of(&cases.iter().filter_map(|(_, s)| f(s)).collect::<Vec<f64>>())
        };
        Some(Summary {
            n_cases: cases.len(),
            n_both_empty: cases.iter().filter(|(m, _)| m.both_empty).count(),
            n_missing_predictions: 0,
            n_hausdorff_infinite: cases.iter().filter(|(_, s)| s.is_infinite()).count(),
            dice: MetricSummary::of(&column(&|m| m.dice))?,
            precision: MetricSummary::of(&column(&|m| m.precision))?,
            recall: MetricSummary::of(&column(&|m| m.recall))?,
            predicted_volume_ml: MetricSummary::of(&column(&|m| m.predicted_volume_ml))?,
            true_volume_ml: MetricSummary::of(&column(&|m| m.true_volume_ml))?,
            abs_volume_difference_ml: MetricSummary::of(&column(&|m| m.abs_volume_difference_ml))?,
            hausdorff_mm: finite(&|s| s.hausdorff_mm),
            hausdorff95_mm: finite(&|s| s.hausdorff95_mm),
            assd_mm: finite(&|s| s.assd_mm),
        })
    }

    /// The summary as JSON: the fields of [`Summary`] by name, each metric an object
    /// `{n, mean, sd, median, min, max}`, a surface distance without finite cases `null`
    /// (the same document `serde_json` makes of it with the `serde` feature).
    pub fn to_json(&self) -> Value {
        let optional = |m: Option<MetricSummary>| m.map_or(Value::Null, MetricSummary::to_json);
        json!({
            "n_cases": self.n_cases,
            "n_both_empty": self.n_both_empty,
            "n_missing_predictions": self.n_missing_predictions,
            "n_hausdorff_infinite": self.n_hausdorff_infinite,
            "dice": self.dice.to_json(),
            "precision": self.precision.to_json(),
            "recall": self.recall.to_json(),
            "predicted_volume_ml": self.predicted_volume_ml.to_json(),
            "true_volume_ml": self.true_volume_ml.to_json(),
            "abs_volume_difference_ml": self.abs_volume_difference_ml.to_json(),
            "hausdorff_mm": optional(self.hausdorff_mm),
            "hausdorff95_mm": optional(self.hausdorff95_mm),
            "assd_mm": optional(self.assd_mm),
        })
    }

    /// The summary as a Markdown table (metric | mean ± sd | median | min | max | n) and a
    /// note on empty masks. Ratios have 4 decimals, mL and mm 2.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from(
            "| metric | mean ± sd | median | min | max | n |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        let rows: [(&str, Option<MetricSummary>, usize); 9] = [
            ("Dice", Some(self.dice), 4),
            ("Precision", Some(self.precision), 4),
            ("Recall", Some(self.recall), 4),
            ("Predicted volume (mL)", Some(self.predicted_volume_ml), 2),
            ("True volume (mL)", Some(self.true_volume_ml), 2),
            (
                "Absolute volume difference (mL)",
                Some(self.abs_volume_difference_ml),
                2,
            ),
            ("Hausdorff distance (mm)", self.hausdorff_mm, 2),
            ("Hausdorff distance 95 % (mm)", self.hausdorff95_mm, 2),
            ("ASSD (mm)", self.assd_mm, 2),
        ];
        for (name, summary, decimals) in rows {
            let _ = match summary {
                Some(s) => writeln!(
                    md,
                    "| {name} | {:.p$} ± {:.p$} | {:.p$} | {:.p$} | {:.p$} | {} |",
                    s.mean,
                    s.sd,
                    s.median,
                    s.min,
                    s.max,
                    s.n,
                    p = decimals
                ),
                None => writeln!(md, "| {name} | ∞ | ∞ | ∞ | ∞ | 0 |"),
            };
        }
        let _ = write!(
            md,
            "\n{} cases. {} with exactly one empty mask: Hausdorff distance, HD95 and ASSD \
             infinite (∞), left out of those rows. {} with both masks empty: Dice, precision \
             and recall 1, distances 0, included.",
            self.n_cases, self.n_hausdorff_infinite, self.n_both_empty
        );
        if self.n_missing_predictions > 0 {
            let _ = write!(
                md,
                " {} missing predictions counted as empty masks.",
                self.n_missing_predictions
            );
        }
        md.push('\n');
        md
    }
}

/// The CSV header of [`cases_csv`].
pub const CASES_CSV_HEADER: &str = "case,prediction,truth,dice,precision,recall,\
predicted_volume_ml,true_volume_ml,abs_volume_difference_ml,hausdorff_mm,hausdorff95_mm,\
assd_mm,both_empty,tp,fp,fn,tn";

/// One line per case under [`CASES_CSV_HEADER`] (RFC 4180 quoting). An infinite surface
/// distance is `inf` (as NumPy and pandas read it); a missing prediction is an empty field.
pub fn cases_csv(cases: &[CaseEvaluation]) -> String {
    let mut csv = String::from(CASES_CSV_HEADER);
    csv.push('\n');
    let distance = |d: Option<f64>| d.map_or_else(|| "inf".to_owned(), |v| v.to_string());
    for c in cases {
        let m = &c.metrics;
        let fields = [
            csv_field(&c.case_name),
            c.prediction
                .as_ref()
                .map_or_else(String::new, |p| csv_field(&p.display().to_string())),
            csv_field(&c.truth.display().to_string()),
            m.dice.to_string(),
            m.precision.to_string(),
            m.recall.to_string(),
            m.predicted_volume_ml.to_string(),
            m.true_volume_ml.to_string(),
            m.abs_volume_difference_ml.to_string(),
            distance(c.surface.hausdorff_mm),
            distance(c.surface.hausdorff95_mm),
            distance(c.surface.assd_mm),
            m.both_empty.to_string(),
            c.counts.tp.to_string(),
            c.counts.fp.to_string(),
            c.counts.fn_.to_string(),
            c.counts.tn.to_string(),
        ];
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    csv
}

/// `value`, quoted (with inner quotes doubled) if it holds a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The report files written by [`DatasetEvaluation::write_reports`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// Per-case CSV ([`cases_csv`]).
    pub cases_csv: PathBuf,
    /// Summary JSON ([`Summary::to_json`]).
    pub summary_json: PathBuf,
    /// Summary Markdown ([`Summary::to_markdown`]).
    pub summary_markdown: PathBuf,
}

impl DatasetEvaluation {
    /// Writes [`CASES_CSV_FILE`], [`SUMMARY_JSON_FILE`] and [`SUMMARY_MARKDOWN_FILE`] into
    /// `out_dir` (created if missing), each atomically (`<name>.tmp`, then renamed).
    pub fn write_reports(&self, out_dir: &Path) -> Result<ReportPaths, IoError> {
        std::fs::create_dir_all(out_dir).map_err(|e| IoError::io(out_dir, e))?;
        let paths = ReportPaths {
            cases_csv: out_dir.join(CASES_CSV_FILE),
            summary_json: out_dir.join(SUMMARY_JSON_FILE),
            summary_markdown: out_dir.join(SUMMARY_MARKDOWN_FILE),
        };
        write_atomically(&paths.cases_csv, cases_csv(&self.cases).as_bytes())?;
        let mut json = serde_json::to_string_pretty(&self.summary.to_json())
            .map_err(|e| IoError::io(&paths.summary_json, e.into()))?;
        json.push('\n');
        write_atomically(&paths.summary_json, json.as_bytes())?;
        write_atomically(
            &paths.summary_markdown,
            self.summary.to_markdown().as_bytes(),
        )?;
        Ok(paths)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metric_summary_mean_sd_median() {
        let s = MetricSummary::of(&[1.0, 2.0, 3.0, 10.0]).unwrap();
        assert_eq!(
            (s.n, s.mean, s.median, s.min, s.max),
            (4, 4.0, 2.5, 1.0, 10.0)
        );
        // Σ(v − 4)² = 9 + 4 + 1 + 36 = 50; / 3.
        assert!((s.sd - (50.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let one = MetricSummary::of(&[0.7]).unwrap();
        assert_eq!((one.mean, one.sd, one.median), (0.7, 0.0, 0.7));
        assert_eq!(MetricSummary::of(&[5.0, 1.0, 3.0]).unwrap().median, 3.0);
        assert_eq!(MetricSummary::of(&[]), None);
        assert_eq!(MetricSummary::of(&[1.0, f64::INFINITY]), None);
    }

    #[test]
    fn isles_names() {
        assert_eq!(
            isles_tag_and_id("SMIR.Brain.XX.O.OT.345560.nii.gz"),
            Some(("OT", "345560"))
        );
        assert_eq!(
            isles_tag_and_id("SMIR.Brain.XX.O.CT_Tmax.12"),
            Some(("CT_Tmax", "12"))
        );
        assert_eq!(isles_tag_and_id("SMIR.Brain.XX.O.OT.x12.nii"), None);
        assert_eq!(isles_tag_and_id("lesion_mask.nii.gz"), None);
    }

    #[test]
    fn case_names_from_paths() {
        assert_eq!(
            case_name_of(Path::new("/d/TRAINING/case_7/SMIR.Brain.XX.O.OT.9/x.nii")),
            "case_7"
        );
        assert_eq!(case_name_of(Path::new("/d/truth/ot.nii.gz")), "ot");
        assert_eq!(case_name_of(Path::new("/d/case_x/OT.nii")), "OT");
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
