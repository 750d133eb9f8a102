//! The perfusion maps `segment` reads: provided with the study (computed by the scanner's
//! software), or computed by strokeseg from the study's raw dynamic series (`CT_4DPWI`)
//! with `strokeseg_shared::perfusion`, the same code the trainer uses.
//!
//! Computed maps are written slice by slice as NIfTI on the CT's grid into the run's
//! staging folder ([`map_file_name`]) by `strokeseg_io::computed_maps`, the function the
//! trainer computes its training maps with, with a plot of the arterial input and venous output
//! curves ([`AIF_VOF_FILE`]), and the study is then read with those files in place of any
//! provided maps. Memory: one slice of all frames and the computation's per-slice buffers
//! (`strokeseg_shared::perfusion`, "Memory"), whatever the number of slices.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use strokeseg_io::CaseFiles;
use strokeseg_io::computed_maps::compute_map_files;
pub use strokeseg_io::computed_maps::{MAP_MODALITIES, map_file_name};
use strokeseg_shared::Modality;
use strokeseg_shared::config::MapsProvenance;
use strokeseg_shared::perfusion::aif::{PerfusionWarning, Voxel};
use strokeseg_shared::perfusion::{PerfusionConfig, PerfusionPreset};

use crate::EdgeError;
use crate::overlay::{PlotCurve, write_curve_plot};

/// Where the maps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MapsSource {
    /// The maps in the study folder (an error when one is missing).
    Provided,
    /// Computed from the study's `CT_4DPWI` (an error when it is missing), whatever maps the
    /// study also holds.
    Computed,
    /// Provided when the study holds all four maps, else computed when it has `CT_4DPWI`;
    /// for a model trained on computed maps, computed whenever it has `CT_4DPWI`.
    #[default]
    Auto,
}

/// The plot of the AIF and VOF curves.
pub const AIF_VOF_FILE: &str = "aif_vof.png";
/// Colours of [`AIF_VOF_FILE`]: the AIF the deconvolution used (partial-volume scaled), the
/// AIF as measured, the VOF.
pub const AIF_COLOUR: [u8; 3] = [215, 30, 30];
/// See [`AIF_COLOUR`].
pub const AIF_MEASURED_COLOUR: [u8; 3] = [245, 160, 60];
/// See [`AIF_COLOUR`].
pub const VOF_COLOUR: [u8; 3] = [30, 70, 215];

/// What `report.json` records about maps computed from the raw series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputedMaps {
    /// The dynamic series.
    pub series: PathBuf,
    /// Frames and frame interval, s.
    pub n_frames: usize,
    /// Frame interval, s.
    pub frame_interval_s: f32,
    /// The computation's configuration.
    pub config: PerfusionConfig,
    /// `strokeseg-shared <version>`: the code that computed the maps.
    pub software: String,
    /// Voxels `[x, y, z]` averaged into the AIF, best first.
    pub aif_voxels: Vec<Voxel>,
    /// Voxels averaged into the VOF (empty when none was found).
    pub vof_voxels: Vec<Voxel>,
    /// The AIF as measured, HU above baseline per frame.
    pub aif_measured_hu: Vec<f32>,
    /// The AIF the deconvolution used (`pv_scale ×` the measured one), HU per frame.
    pub aif_hu: Vec<f32>,
    /// The VOF, HU above baseline per frame (empty when none).
    pub vof_hu: Vec<f32>,
    /// Partial-volume scale `∫VOF / ∫AIF` applied to the AIF.
    pub pv_scale: f32,
    /// Baseline frames `[start, end)` of the arterial curves.
    pub baseline_frames: [usize; 2],
    /// Frame at which the AIF reaches 10 % of its peak.
    pub arrival_frame: usize,
    /// Voxels given perfusion values over the study.
    pub n_tissue_voxels: u64,
    /// Conditions the maps were still computed under (also in the report's warnings).
    pub warnings: Vec<PerfusionWarning>,
    /// The files written: the four maps and [`AIF_VOF_FILE`].
    pub files: Vec<String>,
}

/// A warning as the report's text.
pub fn warning_text(w: &PerfusionWarning) -> String {
    match *w {
        PerfusionWarning::BolusTruncated {
            last_fraction,
            venous,
        } => format!(
            "computed maps: the {} ends at {:.0} % of its peak (bolus cut off by the end of the acquisition): CBV is underestimated",
            if venous { "VOF" } else { "AIF" },
            100.0 * last_fraction
        ),
        PerfusionWarning::NoVenousOutput => "computed maps: no venous output found, the AIF is not partial-volume corrected (absolute CBF and CBV may be high; relative values are not affected)".into(),
        PerfusionWarning::VofSmallerThanAif { ratio } => format!(
            "computed maps: the VOF's area is {ratio:.2} of the AIF's, no partial-volume correction"
        ),
        PerfusionWarning::PartialVolumeScaleCapped { ratio } => format!(
            "computed maps: the partial-volume scale {ratio:.2} was capped"
        ),
    }
}

/// The study's files with the maps to read: as found when they are provided, else with
/// the maps computed into `staging` from `CT_4DPWI` (then also returned: what the report
/// records). With [`MapsSource::Auto`], `prefer_computed` (a model trained on computed
/// maps) computes them whenever the study has the series. `cancel` is polled between
/// slices.
pub fn resolve_maps(
    case_dir: &Path,
    source: MapsSource,
    prefer_computed: bool,
    config: &PerfusionConfig,
    staging: &Path,
    cancel: &AtomicBool,
) -> Result<(CaseFiles, Option<ComputedMaps>), EdgeError> {
    let mut files = CaseFiles::discover(case_dir)?;
    let provided = MAP_MODALITIES.iter().all(|m| files.files.contains_key(m));
    let compute = match source {
        MapsSource::Provided => false,
        MapsSource::Computed => true,
        MapsSource::Auto => {
            (prefer_computed || !provided) && files.files.contains_key(&Modality::Pwi)
        }
    };
    if !compute {
        return Ok((files, None));
    }
    let pwi = files.require(Modality::Pwi)?.to_path_buf();
    let ct = files.require(Modality::Ct)?.to_path_buf();
    let computed = compute_maps(&pwi, &ct, config, staging, cancel)?;
    for m in MAP_MODALITIES {
        files.files.insert(m, staging.join(map_file_name(m)));
    }
    Ok((files, Some(computed)))
}

/// Computes the maps of the series `pwi` on the grid of `ct` into `out_dir`
/// (`strokeseg_io::computed_maps::compute_map_files`, the trainer's function) and plots the
/// arterial curves there.
pub fn compute_maps(
    pwi: &Path,
    ct: &Path,
    config: &PerfusionConfig,
    out_dir: &Path,
    cancel: &AtomicBool,
) -> Result<ComputedMaps, EdgeError> {
    let summary = compute_map_files(pwi, ct, config, out_dir, || !cancel.load(Ordering::SeqCst));
    let summary = match summary {
        Ok(s) => s,
        Err(_) if cancel.load(Ordering::SeqCst) => return Err(EdgeError::Interrupted),
        // Errors about the staging folder's files (the maps, the spool) are output errors.
        Err(e) if e.path().starts_with(out_dir) => return Err(EdgeError::writing(e)),
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<String> = MAP_MODALITIES.iter().map(|&m| map_file_name(m)).collect();
    let a = &summary.arterial;
    let mut curves = vec![
        PlotCurve {
            values: &a.aif_measured_hu,
            colour: AIF_MEASURED_COLOUR,
        },
        PlotCurve {
            values: &a.aif_hu,
            colour: AIF_COLOUR,
        },
    ];
    if !a.vof_hu.is_empty() {
        curves.push(PlotCurve {
            values: &a.vof_hu,
            colour: VOF_COLOUR,
        });
    }
    write_curve_plot(&out_dir.join(AIF_VOF_FILE), summary.grid.dt_s, &curves)?;
    names.push(AIF_VOF_FILE.to_owned());
    Ok(ComputedMaps {
        series: pwi.to_path_buf(),
        n_frames: summary.grid.n_frames,
        frame_interval_s: summary.grid.dt_s,
        config: summary.config,
        software: format!("strokeseg-shared {}", env!("CARGO_PKG_VERSION")),
        aif_voxels: a.aif_voxels.clone(),
        vof_voxels: a.vof_voxels.clone(),
        aif_measured_hu: a.aif_measured_hu.clone(),
        aif_hu: a.aif_hu.clone(),
        vof_hu: a.vof_hu.clone(),
        pv_scale: a.pv_scale,
        baseline_frames: [a.baseline.start, a.baseline.end],
        arrival_frame: a.arrival_frame,
        n_tissue_voxels: summary.n_tissue_voxels,
        warnings: summary.warnings.clone(),
        files: names,
    })
}

/// Refuses a model run whose maps are not those the model was trained on: `trained_on`
/// from the model's metadata, `computed` whether this run computed them (with `config`).
pub fn check_provenance(
    case_dir: &Path,
    model: &str,
    trained_on: MapsProvenance,
    computed: bool,
    config: &PerfusionConfig,
) -> Result<(), EdgeError> {
    let given = if computed {
        PerfusionPreset::matching(config).map(MapsProvenance::computed)
    } else {
        Some(MapsProvenance::Provided)
    };
    if given == Some(trained_on) {
        return Ok(());
    }
    let given = given.map_or_else(
        || "maps computed by strokeseg with a configuration that is no preset".to_owned(),
        |g| g.to_string(),
    );
    let hint = match trained_on {
        MapsProvenance::Provided => {
            "use a study with its CBF, CBV, MTT and Tmax maps (--maps provided) or a model trained on computed maps"
        }
        MapsProvenance::Computed { .. } => {
            "use a study with its raw series CT_4DPWI (--maps auto or computed) and this build's perfusion version, or a model trained on provided maps"
        }
    };
    Err(EdgeError::Study {
        path: case_dir.to_path_buf(),
        reason: format!(
            "the model {model} was trained on {trained_on}, but this run has {given}: {hint}"
        ),
    })
}
