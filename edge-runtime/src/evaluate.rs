//! `strokeseg-edge evaluate`: ISLES metrics (Dice, precision, recall, volumes) of one
//! predicted mask against a case's ground truth (`OT`), streamed slice by slice.

use std::path::{Path, PathBuf};

use serde::Serialize;
use strokeseg_shared::Modality;
use strokeseg_shared::io::{CaseFiles, GridTolerance, IoError, NiftiVolumeReader};
use strokeseg_shared::metrics::{ConfusionCounts, SegmentationMetrics};

use crate::EdgeError;
use crate::report::MASK_FILE;

/// The metrics of one case.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The predicted mask file.
    pub prediction: PathBuf,
    /// The ground-truth file.
    pub truth: PathBuf,
    /// Voxel counts of the confusion matrix.
    pub counts: ConfusionCounts,
    /// Dice, precision, recall, volumes (mL).
    pub metrics: SegmentationMetrics,
}

/// The mask a `--pred` argument names: a NIfTI file, or a folder holding
/// `lesion_mask.nii.gz`.
pub fn prediction_file(pred: &Path) -> PathBuf {
    if pred.is_dir() {
        pred.join(MASK_FILE)
    } else {
        pred.to_path_buf()
    }
}

/// Scores the mask `pred` (file or output folder) against the `OT` of `truth_case`. The
/// two must share one grid. Non-zero voxels are lesion.
pub fn evaluate(pred: &Path, truth_case: &Path) -> Result<Evaluation, EdgeError> {
    let pred_file = prediction_file(pred);
    let files = CaseFiles::discover(truth_case)?;
    let truth_file = files.require(Modality::Ot)?.to_path_buf();
    let mut p = NiftiVolumeReader::open(&pred_file)?;
    let mut t = NiftiVolumeReader::open(&truth_file)?;
    t.info()
        .check_same_grid(p.info(), GridTolerance::default())?;
    let n = p.info().slice_voxels();
    let (mut pf, mut tf) = (vec![0f32; n], vec![0f32; n]);
    let (mut pm, mut tm) = (vec![0u8; n], vec![0u8; n]);
    let mut counts = ConfusionCounts::default();
    for z in 0..p.n_slices() {
        p.read_slice_f32(z, &mut pf)?;
        t.read_slice_f32(z, &mut tf)?;
        for (m, &v) in pm.iter_mut().zip(&pf) {
            *m = u8::from(v > 0.5);
        }
        for (m, &v) in tm.iter_mut().zip(&tf) {
            *m = u8::from(v > 0.5);
        }
        counts
            .add_slice(&pm, &tm)
            .map_err(|e| IoError::BufferSize {
                path: pred_file.clone(),
                expected: n,
                got: match e {
                    strokeseg_shared::metrics::MetricsError::LengthMismatch { got, .. } => got,
                    _ => 0,
                },
            })?;
    }
    let metrics = counts
        .metrics(p.info().voxel_volume_mm3())
        .map_err(|e| EdgeError::Study {
            path: pred_file.clone(),
            reason: e.to_string(),
        })?;
    Ok(Evaluation {
        prediction: pred_file,
        truth: truth_file,
        counts,
        metrics,
    })
}
