//! `strokeseg-edge inspect`: validates a study and reports its grid and the per-volume
//! channel statistics that preprocessing will use (pass 1 of segmentation).

use std::path::{Path, PathBuf};

use serde::Serialize;
use strokeseg_io::Study;
use strokeseg_shared::{Modality, PreprocessConfig};

use crate::EdgeError;

/// Statistics of one channel over the brain voxels.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelSummary {
    /// The modality.
    pub modality: Modality,
    /// The file it was read from.
    pub file: PathBuf,
    /// On-disk datatype.
    pub dtype: String,
    /// 1st, 50th and 99th percentile inside the brain.
    pub p1_p50_p99: [f32; 3],
    /// NaN/±inf voxels that were replaced by 0.
    pub non_finite_voxels: usize,
}

/// What `inspect` reports about a study.
#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    /// The case folder.
    pub case_dir: PathBuf,
    /// All modalities found (ISLES tags).
    pub modalities_found: Vec<String>,
    /// `[nx, ny, nz]`.
    pub dims: [usize; 3],
    /// Voxel spacing, millimetres.
    pub spacing_mm: [f32; 3],
    /// Brain volume from the brain mask, millilitres.
    pub brain_volume_ml: f64,
    /// The input channels.
    pub channels: Vec<ChannelSummary>,
    /// Whether a ground-truth `OT` mask is present.
    pub has_truth: bool,
}

/// Opens the study in `case_dir` with `config`'s channels, validates it, and gathers the
/// per-volume statistics in one streaming pass.
pub fn inspect_study(
    case_dir: &Path,
    config: &PreprocessConfig,
) -> Result<StudySummary, EdgeError> {
    config.validate()?;
    let channels: Vec<Modality> = config.channels.iter().map(|c| c.modality).collect();
    let mut study = Study::open(case_dir, &channels, false)?;
    let stats = study.gather_stats(config)?;
    let reference = study.reference().clone();
    let files = study.files().clone();
    let mut out = Vec::with_capacity(channels.len());
    for (idx, &modality) in channels.iter().enumerate() {
        let file = files.require(modality)?.to_path_buf();
        let (_, info) = strokeseg_io::read_header(&file, &Default::default())?;
        let hist = stats.volume.channel(idx).map(|c| &c.histogram);
        let pct = |p: f32| hist.and_then(|h| h.percentile(p)).unwrap_or(f32::NAN);
        out.push(ChannelSummary {
            modality,
            file,
            dtype: info.dtype.to_string(),
            p1_p50_p99: [pct(1.0), pct(50.0), pct(99.0)],
            non_finite_voxels: stats.non_finite_per_channel.get(idx).copied().unwrap_or(0),
        });
    }
    Ok(StudySummary {
        case_dir: case_dir.to_path_buf(),
        modalities_found: files
            .files
            .keys()
            .map(|m| m.isles_tag().to_owned())
            .collect(),
        dims: [reference.nx(), reference.ny(), reference.nz()],
        spacing_mm: reference.spacing_mm,
        brain_volume_ml: stats.volume.brain_voxels() as f64 * reference.voxel_volume_mm3() / 1000.0,
        channels: out,
        has_truth: files.files.contains_key(&Modality::Ot),
    })
}
