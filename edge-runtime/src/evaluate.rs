//! `strokeseg-edge evaluate`: the ISLES metrics of one predicted mask against a case's
//! ground truth (`OT`), computed by `strokeseg_eval::evaluate_case` (Dice,
//! precision, recall, volumes, Hausdorff distance, HD95, ASSD). This module only finds the
//! two files.
//!
//! Memory: surface distances need both masks whole, so evaluation holds at most 28 bytes
//! per voxel of the case (`strokeseg_eval`); the segmentation path stays
//! bounded by a few slices.

use std::path::{Path, PathBuf};

use strokeseg_eval::{CaseEvaluation, EDGE_MASK_FILES, evaluate_case};
use strokeseg_io::CaseFiles;
use strokeseg_shared::Modality;

use crate::EdgeError;

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

/// Scores the mask `pred` (file or output folder) against the `OT` of `truth_case`: the
/// files, the confusion counts, Dice, precision, recall, volumes (mL) and the surface
/// distances (mm; `None` when exactly one mask is empty). The two must share one grid;
/// voxels above 0.5 are lesion. Errors name the file at fault.
pub fn evaluate(pred: &Path, truth_case: &Path) -> Result<CaseEvaluation, EdgeError> {
    let pred_file = prediction_file(pred);
    let files = CaseFiles::discover(truth_case)?;
    let truth_file = files.require(Modality::Ot)?;
    Ok(evaluate_case(&pred_file, truth_file)?)
}
