//! `report.json`: what a segmentation run found and how (case, method, model identity,
//! lesion volume and per-slice areas, timings, warnings, the alert decision).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strokeseg_shared::perfusion_rule::{CoreRule, HealthyReference};
use strokeseg_shared::postprocess::{ComponentStats, PostprocessConfig};

use crate::EdgeError;

/// Version of the report layout.
pub const REPORT_VERSION: u32 = 1;
/// File names of the outputs in the output folder.
pub const MASK_FILE: &str = "lesion_mask.nii.gz";
/// The report.
pub const REPORT_FILE: &str = "report.json";
/// The montage.
pub const OVERLAY_FILE: &str = "overlay.png";
/// Every output, in publication order: the report comes last, so its presence means the
/// set is complete.
pub const OUTPUT_FILES: [&str; 3] = [MASK_FILE, OVERLAY_FILE, REPORT_FILE];

/// How the lesion was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The ONNX model (embedded default or `--model`).
    Model,
    /// The clinical CTP rule (CBF < 30 % of healthy within Tmax > 6 s); needs no model.
    Threshold,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Model => "model",
            Method::Threshold => "threshold",
        })
    }
}

/// Identity of the model that made the mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Model name from its metadata.
    pub name: String,
    /// Model version from its metadata.
    pub version: String,
    /// `fp32` or `int8`.
    pub precision: String,
    /// SHA-256 of the ONNX bytes (hex).
    pub sha256: String,
    /// A path, or `embedded default model`.
    pub source: String,
    /// Postprocessing applied (from the metadata).
    pub postprocess: PostprocessConfig,
}

/// The threshold rule and the healthy reference it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSummary {
    /// The rule's thresholds.
    pub rule: CoreRule,
    /// The healthy reference CBF of this study.
    pub reference: HealthyReference,
    /// Components smaller than this were removed, mm².
    pub min_component_area_mm2: f32,
}

/// Wall time per stage, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Loading and optimising the model (0 when reused or not needed).
    pub load_model_ms: f64,
    /// Pass 1: opening the study and gathering per-volume statistics.
    pub pass1_stats_ms: f64,
    /// Pass 2: reading slices and preprocessing them.
    pub preprocess_ms: f64,
    /// Pass 2: the model (or the rule) on every slice.
    pub inference_ms: f64,
    /// Pass 2: softmax, threshold, component removal, mapping back.
    pub postprocess_ms: f64,
    /// Pass 2: writing the mask and the overlay, and the report.
    pub write_ms: f64,
    /// Everything, from opening the study to the last output written.
    pub total_ms: f64,
    /// `inference_ms / n_slices`.
    pub inference_per_slice_ms: f64,
}

/// The alert decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Whether `lesion_volume_ml ≥ threshold_ml`.
    pub triggered: bool,
    /// The threshold, mL (default 70, the DEFUSE 3 core limit).
    pub threshold_ml: f64,
}

/// Everything `report.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// The case folder's name.
    pub case: String,
    /// The case folder as given.
    pub case_dir: PathBuf,
    /// How the lesion was found.
    pub method: Method,
    /// The model, for `method = model`.
    pub model: Option<ModelSummary>,
    /// The rule, for `method = threshold`.
    pub threshold: Option<ThresholdSummary>,
    /// Lesion volume, mL (`lesion_voxels × voxel_volume_mm3 / 1000`).
    pub lesion_volume_ml: f64,
    /// Lesion voxels in the mask.
    pub lesion_voxels: u64,
    /// Volume of one voxel, mm³.
    pub voxel_volume_mm3: f64,
    /// `[nx, ny, nz]` of the mask (the CT grid).
    pub dims: [usize; 3],
    /// Voxel spacing of the mask, mm.
    pub spacing_mm: [f32; 3],
    /// Number of slices.
    pub n_slices: usize,
    /// Lesion area per slice, mm², slice 0 first.
    pub per_slice_lesion_area_mm2: Vec<f64>,
    /// The image whose header (grid, pixdim, qform/sform) the mask copies.
    pub geometry_from: PathBuf,
    /// Non-finite voxels (NaN, ±inf) replaced by 0, per modality.
    pub non_finite_voxels: BTreeMap<String, usize>,
    /// Small components removed by postprocessing.
    pub components: ComponentStats,
    /// Things a reader should know (non-finite voxels, fallbacks).
    pub warnings: Vec<String>,
    /// Wall time per stage.
    pub timings: Timings,
    /// The alert decision.
    pub alert: Alert,
    /// Output file names in the output folder.
    pub outputs: Vec<String>,
    /// `strokeseg-edge <version>`.
    pub software: String,
}

/// Writes `value` as pretty JSON to `path` through `<path>.tmp` (synced, then renamed).
pub fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), EdgeError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| EdgeError::output(path, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    write_bytes_atomically(path, &bytes)
}

/// Writes `text` to `path` through `<path>.tmp` (synced, then renamed).
pub fn write_text_atomically(path: &Path, text: &str) -> Result<(), EdgeError> {
    write_bytes_atomically(path, text.as_bytes())
}

fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<(), EdgeError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(EdgeError::output(&tmp, e));
    }
    strokeseg_shared::io::publish_atomically(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        EdgeError::output(path, std::io::Error::other(e.to_string()))
    })
}

/// Reads a `report.json`.
pub fn read_report(path: &Path) -> Result<Report, EdgeError> {
    let bytes = std::fs::read(path).map_err(|e| strokeseg_shared::io::IoError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EdgeError::Study {
        path: path.to_path_buf(),
        reason: format!("not a strokeseg report: {e}"),
    })
}
