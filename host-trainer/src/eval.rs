//! Case-level evaluation, ISLES style: predict every slice of a case, turn the logits into a
//! lesion mask on the original grid with `postprocess::SliceMasker` (the very code the edge
//! runtime runs: probability, back onto the image grid, threshold, brain mask, small-component
//! removal), and score the case's whole volume against its ground
//! truth: `metrics::ConfusionCounts` (volume Dice, precision, recall, volumes, not per-slice
//! figures) and `surface::surface_distances` (Hausdorff distance, HD95, ASSD in mm on the
//! original voxel spacing). The results are the run folder's records
//! ([`crate::run::CaseValidation`] per case, [`crate::run::Validation`] over the cases, whose
//! summary is the shared `strokeseg_eval::Summary`: the same figures `strokeseg-train
//! evaluate` reports for a folder of mask files). Validation therefore scores exactly the
//! masks deployment will produce.
//!
//! Empty masks (ISLES conventions, see `strokeseg_eval`): Dice, precision and recall are
//! 1 when both masks are empty and 0 when exactly one is; surface distances are 0 when both
//! are empty and infinite (`None`) when exactly one is, and summaries average them over the
//! finite cases and count the others.

use strokeseg_shared::metrics::ConfusionCounts;
use strokeseg_shared::postprocess::{PostprocessConfig, SliceMasker};
use strokeseg_shared::surface::surface_distances;
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::data::{CaseData, LoadedDataset};
use crate::error::TrainError;
use crate::loss::Loss;
use crate::run::{CaseValidation, Validation};

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
) -> Result<CaseValidation, TrainError> {
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
    Ok(CaseValidation {
        case: case.name.clone(),
        patient: case.patient.clone(),
        n_slices: case.n_slices,
        counts,
        metrics,
        surface: Some(surface),
    })
}

/// Evaluates `net` on the cases `case_indices` of `data`: per-case results and their shared
/// summary.
pub fn evaluate_cases(
    net: &impl ModuleT,
    data: &LoadedDataset,
    case_indices: &[usize],
    post: &PostprocessConfig,
    loss: Option<&Loss>,
    batch_size: usize,
) -> Result<Validation, TrainError> {
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
    Ok(Validation::new(results, loss))
}
