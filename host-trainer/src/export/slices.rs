//! Preprocessed model inputs from studies on disk, for int8 calibration and the export
//! tests: the same two passes the edge runtime makes (`Study::gather_stats`, then
//! `prepare_model_input` per slice), so calibration sees exactly what the model will see —
//! including maps computed from the raw series for a model trained on computed maps (the
//! training data's [`crate::data::maps::case_files`] and its cache).

use std::path::Path;

use strokeseg_io::{
    CaseFiles, Dataset, GridTolerance, PatientGrouping, ReadLimits, SlicePreparer, Study,
};
use strokeseg_shared::PreprocessConfig;

use super::ExportError;

/// One slice on the model grid.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedSlice {
    /// Model input `[C, H, W]`, row-major.
    pub input: Vec<f32>,
    /// Ground truth on the model grid `[H, W]` (0/1), when the study has one.
    pub truth: Option<Vec<u8>>,
    /// Brain voxels in the slice (image grid).
    pub brain_voxels: usize,
    /// Index of the slice in its study.
    pub slice_idx: usize,
}

fn io_err(case_dir: &Path, err: impl std::fmt::Display) -> ExportError {
    ExportError::Calibration(format!("{}: {err}", case_dir.display()))
}

/// Every slice of the study `files`, preprocessed with `config` (and its ground truth
/// mapped onto the model grid when `with_truth`), from the maps `config.maps` names (the
/// case's own, or computed from its raw series as in training). Memory: the returned slices
/// plus one image slice per channel.
pub fn prepare_study(
    files: &CaseFiles,
    config: &PreprocessConfig,
    with_truth: bool,
) -> Result<Vec<PreparedSlice>, ExportError> {
    let case_dir = files.case_dir.as_path();
    let modalities: Vec<_> = config.channels.iter().map(|c| c.modality).collect();
    let files = crate::data::maps::case_files(files, config.maps, &crate::data::maps::cache_dir())
        .map_err(|e| io_err(case_dir, e))?;
    let mut study = Study::open_files(
        files,
        &modalities,
        with_truth,
        &ReadLimits::default(),
        GridTolerance::default(),
    )
    .map_err(|e| io_err(case_dir, e))?;
    let stats = study
        .gather_stats(config)
        .map_err(|e| io_err(case_dir, e))?;
    let mut preparer =
        SlicePreparer::new(&study, config, stats.norm).map_err(|e| io_err(case_dir, e))?;
    let map = *preparer.map();
    let n = map.image().len();
    let mut truth_image = vec![0f32; n];
    let mut truth_u8 = vec![0u8; n];
    let plane = config.input_plane_len();
    let mut out = Vec::with_capacity(study.n_slices());
    for slice_idx in 0..study.n_slices() {
        let mut input = vec![0f32; plane * modalities.len()];
        let brain_voxels = preparer
            .prepare(&mut study, slice_idx, &mut input)
            .map_err(|e| io_err(case_dir, e))?;
        let truth = if with_truth {
            study
                .read_truth_slice(slice_idx, &mut truth_image)
                .map_err(|e| io_err(case_dir, e))?;
            for (dst, &v) in truth_u8.iter_mut().zip(&truth_image) {
                *dst = u8::from(v > 0.5);
            }
            let mut model = vec![0u8; plane];
            map.image_to_model_nearest(&truth_u8, &mut model)
                .map_err(|e| io_err(case_dir, e))?;
            Some(model)
        } else {
            None
        };
        out.push(PreparedSlice {
            input,
            truth,
            brain_voxels,
            slice_idx,
        });
    }
    Ok(out)
}

/// Up to `n` calibration inputs `[C, H, W]` from the dataset at `data_dir` (`case_N`
/// folders, ISLES layout): slices with brain in them, spread evenly over the cases in
/// case order (deterministic). `only_cases` (folder names, e.g. a run's training cases, so
/// held-out cases stay unseen) restricts the cases; a name missing from the dataset is an
/// error. Memory: the `n` inputs plus one study's slices.
pub fn calibration_inputs(
    data_dir: &Path,
    config: &PreprocessConfig,
    n: usize,
    only_cases: Option<&[String]>,
) -> Result<Vec<Vec<f32>>, ExportError> {
    if n == 0 {
        return Err(ExportError::Calibration(
            "at least one calibration slice is needed".into(),
        ));
    }
    let dataset = Dataset::discover(data_dir, &PatientGrouping::OnePerCase)
        .map_err(|e| io_err(data_dir, e))?;
    if let Some(missing) = only_cases.and_then(|names| {
        names
            .iter()
            .find(|n| !dataset.cases.iter().any(|c| &c.name == *n))
    }) {
        return Err(ExportError::Calibration(format!(
            "{}: case {missing} (a training case of the run) is not in the dataset",
            data_dir.display()
        )));
    }
    let cases: Vec<_> = dataset
        .cases
        .iter()
        .filter(|c| only_cases.is_none_or(|names| names.contains(&c.name)))
        .collect();
    let n_cases = cases.len();
    let mut picked = Vec::with_capacity(n);
    for (k, case) in cases.iter().enumerate() {
        // Cases k..: share the slices still needed evenly among the cases left.
        let want = (n - picked.len()).div_ceil(n_cases - k);
        if want == 0 {
            break;
        }
        let slices = prepare_study(&case.files, config, false)?;
        let with_brain: Vec<PreparedSlice> =
            slices.into_iter().filter(|s| s.brain_voxels > 0).collect();
        let step = (with_brain.len() as f64 / want as f64).max(1.0);
        for i in 0..want.min(with_brain.len()) {
            let idx = ((i as f64 + 0.5) * step) as usize;
            if let Some(slice) = with_brain.get(idx.min(with_brain.len() - 1)) {
                picked.push(slice.input.clone());
            }
        }
    }
    if picked.is_empty() {
        return Err(ExportError::Calibration(format!(
            "{}: no slice with brain voxels found for calibration",
            data_dir.display()
        )));
    }
    Ok(picked)
}
