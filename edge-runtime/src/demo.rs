//! `strokeseg-edge demo`: makes one synthetic CTP study (the phantom generator, with a
//! lesion) and runs the edge runtime over it, so a new user sees the whole path work
//! without data of their own.

use std::path::{Path, PathBuf};

use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::io::IoError;
use strokeseg_shared::phantom::{self, CaseSummary, DatasetOptions};

use crate::EdgeError;
use crate::inspect::{StudySummary, inspect_study};

/// What the demo produced.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The generated study folder (ISLES layout).
    pub study_dir: PathBuf,
    /// The phantom's own description of the case, including its true lesion volume.
    pub phantom: CaseSummary,
    /// The edge runtime's pass over the study.
    pub summary: StudySummary,
}

/// Generates phantom case `case_index` of the dataset with `seed` into `out_dir/study`
/// (replacing an earlier demo study there) and inspects it.
pub fn run_demo(out_dir: &Path, seed: u64, case_index: usize) -> Result<DemoOutcome, EdgeError> {
    let opts = DatasetOptions {
        n_cases: case_index + 1,
        seed,
        ..DatasetOptions::default()
    };
    let case = phantom::generate_case(seed, case_index, &opts);
    let study_dir = out_dir.join("study");
    if study_dir.exists() {
        std::fs::remove_dir_all(&study_dir).map_err(|e| IoError::io(&study_dir, e))?;
    }
    let phantom = phantom::write_case(&study_dir, &case, opts.first_file_id, false, false)?;
    let summary = inspect_study(&study_dir, &PreprocessConfig::default())?;
    Ok(DemoOutcome {
        study_dir,
        phantom,
        summary,
    })
}
