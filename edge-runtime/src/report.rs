//! `report.json`: what a segmentation run found and how (case, method, model identity,
//! lesion volume and per-slice areas, timings, warnings, the alert decision).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strokeseg_shared::perfusion_rule::{CoreRule, HealthyReference};
use strokeseg_shared::postprocess::{ComponentStats, PostprocessConfig};

use crate::EdgeError;
use crate::segmenter::{MemberSummary, Tta};

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
    /// The members of an ensemble whose probabilities were averaged (absent for one model;
    /// `sha256` above is then the SHA-256 of their hashes, one per line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberSummary>,
    /// Test-time augmentation (absent: none).
    #[serde(default, skip_serializing_if = "is_no_tta")]
    pub tta: Tta,
}

fn is_no_tta(tta: &Tta) -> bool {
    *tta == Tta::None
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

/// When a model's and the threshold rule's lesion volumes are said to disagree: when they
/// differ by more than `absolute_ml` *and* by more than `relative` of the larger volume.
/// The defaults (10 mL and 50 %) keep small lesions' ordinary outline differences quiet and
/// flag any disagreement large enough to move a study across a treatment limit (the
/// DEFUSE 3 core limit is 70 mL): then the two read the maps differently and a person must
/// look.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DisagreementMargin {
    /// Smallest volume difference that counts, mL.
    pub absolute_ml: f64,
    /// Smallest difference relative to the larger of the two volumes that counts, 0–1.
    pub relative: f64,
}

impl Default for DisagreementMargin {
    fn default() -> Self {
        DisagreementMargin {
            absolute_ml: 10.0,
            relative: 0.5,
        }
    }
}

impl DisagreementMargin {
    /// Whether `model_ml` and `rule_ml` disagree beyond this margin.
    pub fn disagree(&self, model_ml: f64, rule_ml: f64) -> bool {
        let difference = (model_ml - rule_ml).abs();
        difference > self.absolute_ml && difference > self.relative * model_ml.max(rule_ml)
    }
}

/// A model run's lesion beside the classic threshold rule's on the same study, so a reader
/// sees when the two part ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleComparison {
    /// The rule and the healthy reference it used (as `--method threshold` would).
    pub rule: ThresholdSummary,
    /// The rule's lesion volume, mL (what `--method threshold` reports).
    pub rule_volume_ml: f64,
    /// The model's lesion volume, mL (the report's `lesion_volume_ml`).
    pub model_volume_ml: f64,
    /// Model minus rule, mL.
    pub volume_difference_ml: f64,
    /// Dice between the model's and the rule's masks (1 when both are empty).
    pub mask_dice: f64,
    /// The margin the decision used.
    pub margin: DisagreementMargin,
    /// Whether the volumes disagree beyond `margin` (then `warnings` says so too).
    pub disagree: bool,
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
    /// A model run: the threshold rule beside it (both passes), included in `total_ms`.
    #[serde(default)]
    pub rule_ms: f64,
    /// Computing the perfusion maps from the raw series (0 when they were provided),
    /// included in `total_ms`.
    #[serde(default)]
    pub perfusion_ms: f64,
    /// Peak resident memory of the process when the report was made (Linux `VmHWM`), KiB;
    /// absent where the OS does not say. For a daemon it covers every study so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    /// Threads tract ran the model on (`threads` setting; 1: single-threaded).
    #[serde(default = "one_thread")]
    pub threads: usize,
}

fn one_thread() -> usize {
    1
}

/// Peak resident set size of this process so far, KiB (`VmHWM` of `/proc/self/status`);
/// `None` off Linux or when it cannot be read.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
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
    /// For `method = model`: the threshold rule on the same study beside the model (absent
    /// when the study lacks CBF or Tmax, with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_comparison: Option<RuleComparison>,
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
    /// Output file names in the output folder, in publication order (the report last).
    pub outputs: Vec<String>,
    /// The maps were computed from the study's raw dynamic series (absent: the study's own
    /// maps were read): the AIF and VOF, their voxels and curves, the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_maps: Option<crate::perfusion::ComputedMaps>,
    /// `strokeseg-edge <version>`.
    pub software: String,
}

/// Reads a `report.json`.
pub fn read_report(path: &Path) -> Result<Report, EdgeError> {
    let bytes = std::fs::read(path).map_err(|e| strokeseg_io::IoError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EdgeError::Study {
        path: path.to_path_buf(),
        reason: format!("not a strokeseg report: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disagreement_needs_both_margins() {
        let m = DisagreementMargin::default();
        assert!(m.disagree(60.0, 20.0)); // 40 mL apart, 67 % of 60
        assert!(m.disagree(1.0, 12.0)); // 11 mL, 92 %
        assert!(!m.disagree(100.0, 80.0)); // 20 mL but 20 %
        assert!(!m.disagree(5.0, 0.0)); // 100 % but 5 mL
        assert!(!m.disagree(0.0, 0.0));
    }
}
