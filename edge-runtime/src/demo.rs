//! `strokeseg-edge demo`: makes one synthetic CTP study (the phantom generator, with a
//! lesion), segments it with the default model (or the threshold rule when this build has
//! no embedded model), and scores the mask against the phantom's truth, so a new user sees
//! the whole path work without data of their own.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use strokeseg_io::IoError;
use strokeseg_phantom::{CaseSummary, DatasetOptions};
use strokeseg_shared::PreprocessConfig;

use crate::EdgeError;
use crate::evaluate::evaluate;
use crate::inspect::{StudySummary, inspect_study};
use crate::model::{SegModel, embedded_model};
use crate::report::{Method, Report};
use crate::segment::{SegmentOptions, segment_to_dir};
use crate::segmenter::Segmenter;
use strokeseg_eval::CaseEvaluation;

/// What the demo produced.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The generated study folder (ISLES layout).
    pub study_dir: PathBuf,
    /// The phantom's own description of the case, including its true lesion volume.
    pub phantom: CaseSummary,
    /// The edge runtime's pass-1 view of the study.
    pub summary: StudySummary,
    /// The segmentation report (outputs in the demo folder).
    pub report: Report,
    /// The mask scored against the phantom's truth.
    pub evaluation: CaseEvaluation,
    /// Why the method was chosen, when it was not the default model.
    pub note: Option<String>,
}

/// Generates phantom case `case_index` of the dataset with `seed` into `out_dir/study`
/// (replacing an earlier demo study there), segments it into `out_dir` with `model` (else
/// the embedded default model, else the threshold rule) and scores it.
pub fn run_demo(
    out_dir: &Path,
    seed: u64,
    case_index: usize,
    model: Option<&Path>,
) -> Result<DemoOutcome, EdgeError> {
    let opts = DatasetOptions {
        n_cases: case_index + 1,
        seed,
        ..DatasetOptions::default()
    };
    let case = strokeseg_phantom::generate_case(seed, case_index, &opts)?;
    let study_dir = out_dir.join("study");
    if study_dir.exists() {
        std::fs::remove_dir_all(&study_dir).map_err(|e| IoError::io(&study_dir, e))?;
    }
    let phantom =
        strokeseg_phantom::write_case(&study_dir, &case, opts.first_file_id, false, false)?;
    drop(case);
    let summary = inspect_study(&study_dir, &PreprocessConfig::default())?;

    let (method, mut model, note) = match (model, embedded_model()) {
        (Some(path), _) => (
            Method::Model,
            Some(Segmenter::from(SegModel::from_path(path)?)),
            None,
        ),
        (None, Some(_)) => (
            Method::Model,
            Some(Segmenter::from(SegModel::embedded()?)),
            None,
        ),
        (None, None) => (
            Method::Threshold,
            None,
            Some(
                "this build has no embedded default model (models/default/model.onnx): \
                 using the threshold rule; pass --model FILE to use a model"
                    .to_owned(),
            ),
        ),
    };
    let report = segment_to_dir(
        &study_dir,
        method,
        model.as_mut(),
        &SegmentOptions::default(),
        out_dir,
        &AtomicBool::new(false),
    )?;
    let evaluation = evaluate(out_dir, &study_dir)?;
    Ok(DemoOutcome {
        study_dir,
        phantom,
        summary,
        report,
        evaluation,
        note,
    })
}
