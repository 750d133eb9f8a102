//! Case-level evaluation, ISLES style: predict every slice of a case, turn the logits into a
//! lesion mask on the original grid with `postprocess::SliceMasker` (the very code the edge
//! runtime runs: probability, back onto the image grid, threshold, brain mask, small-component
//! removal), and score the case's whole volume against its ground
//! truth: `metrics::ConfusionCounts` (volume Dice, precision, recall, volumes, not per-slice
//! figures) and `surface::surface_distances` (Hausdorff distance, HD95, ASSD in mm on the
//! original voxel spacing). The summary over cases is the shared `evaluation::Summary`, the
//! same figures `strokeseg-train evaluate` reports for a folder of mask files. Validation
//! therefore scores exactly the masks deployment will produce.
//!
//! Empty masks (ISLES conventions, see `shared::evaluation`): Dice, precision and recall are
//! 1 when both masks are empty and 0 when exactly one is; surface distances are 0 when both
//! are empty and infinite (`None`) when exactly one is, and summaries average them over the
//! finite cases and count the others.

use serde::{Deserialize, Serialize};
use strokeseg_shared::evaluation::Summary;
use strokeseg_shared::metrics::{ConfusionCounts, SegmentationMetrics};
use strokeseg_shared::postprocess::{PostprocessConfig, SliceMasker};
use strokeseg_shared::surface::{SurfaceDistances, surface_distances};
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::data::{CaseData, LoadedDataset};
use crate::error::TrainError;
use crate::loss::Loss;

/// The result for one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseEvaluation {
    /// Case folder name.
    pub case: String,
    /// Patient label.
    pub patient: String,
    /// Slices in the case.
    pub n_slices: usize,
    /// Confusion counts over all slices, on the original grid.
    pub counts: ConfusionCounts,
    /// Dice, precision, recall, volumes (ISLES conventions, see `shared::metrics`).
    pub metrics: SegmentationMetrics,
    /// Hausdorff distance, HD95 and ASSD on the original grid, mm (a distance is `None` when
    /// it is infinite: exactly one mask empty). `None` as a whole: not computed, in an
    /// `evaluation.json` written before the trainer computed them.
    #[serde(default)]
    pub surface: Option<SurfaceDistances>,
}

/// Means over the evaluated cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Cases evaluated.
    pub n_cases: usize,
    /// Of which with a lesion in the ground truth.
    pub n_lesion_cases: usize,
    /// Mean per-case Dice over all cases (a lesion-free case scores 1 if nothing is predicted,
    /// 0 otherwise).
    pub mean_dice: f64,
    /// Mean per-case Dice over the cases with a lesion (`None` when there are none).
    pub mean_dice_lesion_cases: Option<f64>,
    /// Mean per-case precision.
    pub mean_precision: f64,
    /// Mean per-case recall.
    pub mean_recall: f64,
    /// Mean per-case absolute volume difference, mL.
    pub mean_abs_volume_difference_ml: f64,
    /// Slice-weighted mean of the training loss over the evaluated slices.
    pub loss: f64,
    /// Every metric over the cases (mean ± sd, median, min, max; surface distances over the
    /// cases where they are finite, the others counted), as `strokeseg-train evaluate`
    /// reports it; see [`shared_summary`]. `None` without cases, or when a case lacks its
    /// surface distances (an older `evaluation.json`).
    #[serde(default)]
    pub summary: Option<Summary>,
    /// The per-case results.
    pub cases: Vec<CaseEvaluation>,
}

/// The shared [`Summary`] of `cases`: `None` if there are none or one of them lacks its
/// surface distances (so that every row of the summary is over the same cases).
pub fn shared_summary(cases: &[CaseEvaluation]) -> Option<Summary> {
    let with_surface: Vec<(&SegmentationMetrics, &SurfaceDistances)> = cases
        .iter()
        .filter_map(|c| c.surface.as_ref().map(|s| (&c.metrics, s)))
        .collect();
    if with_surface.len() != cases.len() {
        return None;
    }
    Summary::from_metrics(with_surface)
}

impl EvalSummary {
    /// Means over `cases` (all zero when empty).
    pub fn from_cases(cases: Vec<CaseEvaluation>, loss: f64) -> EvalSummary {
        let n = cases.len();
        let mean = |f: &dyn Fn(&CaseEvaluation) -> f64| {
            if n == 0 {
                0.0
            } else {
                cases.iter().map(f).sum::<f64>() / n as f64
            }
        };
        let lesion: Vec<f64> = cases
            .iter()
            .filter(|c| c.counts.true_voxels() > 0)
            .map(|c| c.metrics.dice)
            .collect();
        EvalSummary {
            n_cases: n,
            n_lesion_cases: lesion.len(),
            mean_dice: mean(&|c| c.metrics.dice),
            mean_dice_lesion_cases: (!lesion.is_empty())
                .then(|| lesion.iter().sum::<f64>() / lesion.len() as f64),
            mean_precision: mean(&|c| c.metrics.precision),
            mean_recall: mean(&|c| c.metrics.recall),
            mean_abs_volume_difference_ml: mean(&|c| c.metrics.abs_volume_difference_ml),
            loss,
            summary: shared_summary(&cases),
            cases,
        }
    }
}

/// Runs `net` (eval mode, no gradients) over `inputs` `[S, C, H, W]` in batches of
/// `batch_size`; returns the logits `[S, K, H, W]` as f32 on the CPU and, when `loss` and
/// `labels` are given, the slice-weighted mean loss over the batches.
pub fn predict(
    net: &impl ModuleT,
    inputs: &Tensor,
    labels: Option<&Tensor>,
    loss: Option<&Loss>,
    batch_size: usize,
) -> Result<(Tensor, Option<f64>), TrainError> {
    let _guard = tch::no_grad_guard();
    let n = inputs.size().first().copied().unwrap_or(0);
    let batch = batch_size.max(1) as i64;
    let mut outputs = Vec::new();
    let mut loss_sum = 0.0;
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let x = inputs.f_narrow(0, start, len)?;
        let logits = net.forward_t(&x, false).f_to_kind(Kind::Float)?;
        if let (Some(loss), Some(labels)) = (loss, labels) {
            let y = labels.f_narrow(0, start, len)?.f_to_kind(Kind::Int64)?;
            loss_sum += f64::try_from(loss.compute(&logits, &y))? * len as f64;
        }
        outputs.push(logits.f_to_device(tch::Device::Cpu)?);
        start += len;
    }
    let logits = if outputs.is_empty() {
        Tensor::f_zeros([0], (Kind::Float, tch::Device::Cpu))?
    } else {
        Tensor::f_cat(&outputs, 0)?
    };
    let mean_loss = (loss.is_some() && labels.is_some() && n > 0).then(|| loss_sum / n as f64);
    Ok((logits, mean_loss))
}

/// Scores the predicted `logits` `[S, K, H, W]` (f32, CPU) of `case` against its ground truth
/// on the original grid: confusion counts and metrics over the whole volume, and the surface
/// distances with the case's voxel spacing.
///
/// Memory: the case's predicted mask on the original grid (`n_slices · ny · nx` bytes, the
/// size of its ground truth), the per-slice postprocessing buffers, and the surface-distance
/// working memory (10 bytes per voxel of the masks' bounding box, 8 per surface voxel).
pub fn score_case(
    case: &CaseData,
    logits: &Tensor,
    post: &PostprocessConfig,
) -> Result<CaseEvaluation, TrainError> {
    let n_classes = logits.size().get(1).copied().unwrap_or(0).max(0) as usize;
    let flat: Vec<f32> = Vec::<f32>::try_from(&logits.f_flatten(0, -1)?)?;
    let (w, h) = case.map.model_size();
    let per_slice = n_classes * w * h;
    let image_len = case.geometry.len();
    let shape_error = |what: &str| TrainError::Config {
        reason: format!(
            "{}: {what} ({} logits and {} truth voxels for {} slices of {per_slice} logits and {image_len} voxels)",
            case.name,
            flat.len(),
            case.truth.len(),
            case.n_slices
        ),
    };
    if per_slice == 0 || flat.len() != case.n_slices * per_slice {
        return Err(shape_error("logits do not match the slices"));
    }
    if case.truth.len() != case.n_slices * image_len {
        return Err(shape_error("ground truth does not match the slices"));
    }
    if case.brain.len() != case.truth.len() {
        return Err(shape_error("brain mask does not match the slices"));
    }
    let mut masker = SliceMasker::new(case.map, *post);
    let mut pred = vec![0u8; case.truth.len()];
    for ((logits_slice, brain_slice), mask_slice) in flat
        .chunks_exact(per_slice.max(1))
        .zip(case.brain.chunks_exact(image_len.max(1)))
        .zip(pred.chunks_exact_mut(image_len.max(1)))
    {
        masker
            .mask(logits_slice, n_classes, brain_slice, mask_slice)
            .map_err(|source| TrainError::Postprocess {
                case: case.name.clone(),
                source,
            })?;
    }
    let metrics_error = |source| TrainError::Metrics {
        case: case.name.clone(),
        source,
    };
    let counts = ConfusionCounts::from_masks(&pred, &case.truth).map_err(metrics_error)?;
    let metrics = counts
        .metrics(case.voxel_volume_mm3)
        .map_err(metrics_error)?;
    let dims = [case.geometry.nx, case.geometry.ny, case.n_slices];
    let surface =
        surface_distances(&pred, &case.truth, dims, case.spacing_mm).map_err(|source| {
            TrainError::Surface {
                case: case.name.clone(),
                source,
            }
        })?;
    Ok(CaseEvaluation {
        case: case.name.clone(),
        patient: case.patient.clone(),
        n_slices: case.n_slices,
        counts,
        metrics,
        surface: Some(surface),
    })
}

/// Evaluates `net` on the cases `case_indices` of `data`: per-case metrics and their means.
pub fn evaluate_cases(
    net: &impl ModuleT,
    data: &LoadedDataset,
    case_indices: &[usize],
    post: &PostprocessConfig,
    loss: Option<&Loss>,
    batch_size: usize,
) -> Result<EvalSummary, TrainError> {
    let mut results = Vec::with_capacity(case_indices.len());
    let mut loss_sum = 0.0;
    let mut n_slices = 0usize;
    for &case_idx in case_indices {
        let Some(case) = data.cases.get(case_idx) else {
            continue;
        };
        let range = case.slice_range();
        let inputs = data
            .inputs
            .f_narrow(0, range.start as i64, case.n_slices as i64)?;
        let labels = data
            .labels
            .f_narrow(0, range.start as i64, case.n_slices as i64)?;
        let (logits, case_loss) = predict(net, &inputs, Some(&labels), loss, batch_size)?;
        if let Some(l) = case_loss {
            loss_sum += l * case.n_slices as f64;
        }
        n_slices += case.n_slices;
        results.push(score_case(case, &logits, post)?);
    }
    let loss = if n_slices > 0 {
        loss_sum / n_slices as f64
    } else {
        0.0
    };
    Ok(EvalSummary::from_cases(results, loss))
}
