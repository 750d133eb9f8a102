//! `strokeseg-edge evaluate`: the ISLES metrics of one predicted mask against a case's
//! ground truth (`OT`), computed by `strokeseg_shared::evaluation::evaluate_case` (Dice,
//! precision, recall, volumes, Hausdorff distance, HD95, ASSD). This module only finds the
//! two files.
//!
//! Memory: surface distances need both masks whole, so evaluation holds at most 28 bytes
//! per voxel of the case (`strokeseg_shared::evaluation`); the segmentation path stays
//! bounded by a few slices.

use std::path::{Path, PathBuf};

use strokeseg_shared::Modality;
use strokeseg_shared::evaluation::{EDGE_MASK_FILES, evaluate_case};
use strokeseg_shared::io::CaseFiles;

use crate::EdgeError;

/// The metrics of one case: the files, the confusion counts, Dice, precision, recall,
/// volumes (mL) and the surface distances (mm; `None` when exactly one mask is empty).
pub use strokeseg_shared::evaluation::CaseEvaluation as Evaluation;

/// The mask a `--pred` argument names: a NIfTI file, or a folder holding the edge
/// runtime's `lesion_mask.nii.gz` (or `lesion_mask.nii`).
pub fn prediction_file(pred: &Path) -> PathBuf {
    if !pred.is_dir() {
        return pred.to_path_buf();
    }
    EDGE_MASK_FILES
        .iter()
        .map(|name| pred.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| pred.join(EDGE_MASK_FILES[0]))
}

/// Scores the mask `pred` (file or output folder) against the `OT` of `truth_case`. The
/// two must share one grid; voxels above 0.5 are lesion. Errors name the file at fault.
pub fn evaluate(pred: &Path, truth_case: &Path) -> Result<Evaluation, EdgeError> {
    let pred_file = prediction_file(pred);
    let files = CaseFiles::discover(truth_case)?;
    let truth_file = files.require(Modality::Ot)?;
    Ok(evaluate_case(&pred_file, truth_file)?)
}
