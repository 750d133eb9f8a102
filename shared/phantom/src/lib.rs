//! Synthetic CT perfusion (CTP) phantoms laid out like ISLES 2018, for tests, the demo and
//! the default model: a 3D head, healthy and ischaemic haemodynamics, the scanner, and the
//! ISLES folder layout with its datatypes.
//!
//! # Output (ISLES 2018 layout)
//!
//! `ROOT/case_N/SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii[.gz]` for N = 1…,
//! one unique integer `<id>` per file, plus `ROOT/phantom_truth.json` (the
//! [`DatasetSummary`]) and `ROOT/patients.csv` (`case,patient`, for patient-grouped folds).
//!
//! | MOD        | datatype | content                                                   |
//! |------------|----------|-----------------------------------------------------------|
//! | `CT`       | int32    | whole head with skull, Hounsfield units                   |
//! | `CT_CBF`   | uint16   | CBF (mL/100 g/min) × per-case gain, 0 outside the brain   |
//! | `CT_CBV`   | uint16   | CBV (mL/100 g) × per-case gain, 0 outside the brain       |
//! | `CT_MTT`   | float64  | mean transit time, s, 0 outside the brain                 |
//! | `CT_Tmax`  | float64  | time to maximum of the residue function, s                |
//! | `CT_4DPWI` | int16    | (X, Y, Z, 1, T) perfusion series, HU (optional)           |
//! | `OT`       | uint8    | ground truth 0/1 (follow-up DWI lesion)                   |
//!
//! Images are 256 × 256 × Z with in-plane spacing FOV/256 = 0.78–1.09 mm (FOV 200–280 mm),
//! slices 4–12 mm thick, Z = 2–22 (mean ≈ 5.4). About half of the patients have two slabs:
//! two consecutive cases with the same in-plane grid and head pose at adjacent z ranges.
//! The NIfTI affine is diagonal (RAS: voxel index i increases towards the patient's right,
//! j anteriorly, k superiorly); voxel (0, 0, 0) sits at the NIfTI origin.
//!
//! # Physical model
//!
//! **Anatomy** ([`anatomy`]): a 3D head per patient, sampled at the slab's slices with
//! several sub-samples through each slice (partial volume). Scalp (25–50 HU), skull with
//! cortical tables (1100–1600 HU) and diploe (500–900 HU), subarachnoid CSF (2–8 HU), a
//! cortical ribbon 2.5–3.5 mm thick (36–42 HU) folded by 38–51 sulci and the Sylvian
//! fissures with insular cortex, white matter (25–31 HU), caudate, lentiform nuclei and
//! thalami (34–40 HU), lateral, third and fourth ventricles, the interhemispheric fissure
//! with the superior sagittal sinus, brainstem, tentorium and cerebellum, pineal and
//! choroid-plexus calcifications, and periventricular leukoaraiosis (−4 to −8 HU, CBF
//! ×0.7). Brain size, outline, atrophy (ventricles, sulci), head pose (yaw ±12°, pitch
//! ±15°, roll ±4°) and position vary per patient. Arterial territories (ACA, MCA, PCA per
//! hemisphere; vertebrobasilar below the tentorium) follow the usual atlas layout with
//! randomly wandering borders.
//!
//! **Healthy perfusion** ([`perfusion`]): grey matter CBF 50–60 mL/100 g/min and CBV
//! 3.6–4.4 mL/100 g; white matter 20–25 and 1.8–2.3; deep grey 95 % of cortex;
//! cerebellum 85–90 %; large vessels CBF 120–250, CBV 10–25; ±6 % smooth spatial
//! heterogeneity. MTT = 60 · CBV / CBF s (central volume theorem: ≈ 4.4 s in grey, ≈ 5.5 s
//! in white matter). Tmax = arrival delay 0.2–2 s (white matter later).
//!
//! **4D series**: indicator dilution (Østergaard et al. 1996, MRM 36:715): a gamma-variate
//! arterial input function (arrival 4–10 s, α 2.5–4, β 1–1.8 s, peak 250–500 HU, with
//! recirculation) convolved with the exponential residue `exp(−t/MTT)`, scaled by CBF,
//! delayed by Tmax and corrected for hematocrit (k_H = 0.55/0.75), on top of the
//! non-contrast CT, with 5–12 HU noise per frame. The series is consistent with the maps:
//! `∫ΔHU_tissue / ∫AIF = ρ · CBV / (100 · k_H)`.
//!
//! **Lesion** ([`lesion`]): in 90 % of patients (configurable), one territory of one
//! hemisphere (MCA 75 %, PCA 15 %, ACA 10 %) holds an irregular hypoperfused region of
//! 20–500 mL (before clipping to territory and slab) with Tmax > 6 s (DEFUSE 3, Albers et
//! al. 2018), CBF 45–100 % and CBV 100–130 % of healthy (autoregulatory vasodilation),
//! surrounded by a benign-oligaemia rim (Tmax rising towards 6 s). Inside it, an ischaemic
//! core of 5–100 % of its volume with CBF 3–15 % of the healthy hemispheric mean (rCBF <
//! 30 %, Campbell et al. 2011, Stroke 42:3435), CBV 30–60 % of the healthy mean, Tmax a
//! further 1–6 s later and 1–5 HU early hypoattenuation on CT.
//!
//! **Ground truth** (`OT`): the follow-up DWI lesion, i.e. the CTP core with realistic
//! disagreement: its own smooth boundary perturbation, growth into the penumbra (×0.9–1.5
//! in radius) or, in 10 % of lesions, shrinkage after early reperfusion (×0.6–0.9), small
//! satellite infarcts in the penumbra and occasional spared islands. Restricted to
//! parenchyma of the lesion's territory, then closed in-plane (3 × 3) like a rater's
//! smooth outline over thin sulci. Slabs that miss the lesion have an all-zero OT.
//!
//! **Scanner** ([`scanner`]): CBF, CBV and Tmax get heteroscedastic gaussian noise
//! (after blurring σ = CBF 1.5 + 10 %, CBV 0.12 + 8 %, Tmax 0.25 s + 6 %, ×0.5–1.2 per
//! case) blurred with a 1.4 mm gaussian inside the brain (spatially correlated, as maps
//! computed from filtered source images are), clamped to ≥ 0 and zeroed outside the
//! intracranial mask (skull-stripped). MTT is then computed as deconvolution software
//! does, `60 · CBV / CBF` from the noisy maps (0 where CBF < 2, capped at 40 s). CBF and
//! CBV are stored as uint16 `round(value × gain)` with per-case gains drawn
//! log-uniformly (defaults 0.5–20 for CBF and 2–40 for CBV: the scale is unknown to a
//! model, as in ISLES). The CT gets a 0.5 mm blur and 2.5–5 HU noise.
//!
//! # Families: anatomy and realism ([`Family`], [`AnatomySource`], [`Realism`])
//!
//! Everything above describes the *classic* generator, the default (bit for bit what it
//! always was). Two knobs widen it:
//! - **Anatomy** ([`AnatomySource`]): a fraction of patients gets a head built on a real brain
//!   template ([`template`]: the ICBM 2009a grey/white-matter probability maps that the
//!   `nilearn` wheel ships, deformed per patient by scale, elastic displacement and
//!   atrophy-driven ventricle and sulcus widening), the rest the procedural head.
//! - **Realism** ([`Realism`]): ISLES-like lesion sizes (per-case OT median ≈ 15 mL, IQR ≈
//!   6–45 mL, some > 100 mL) with wider lesion physiology, multifocal and bilateral strokes,
//!   per-case vendor appearance (map blur, noise, offsets, Tmax scale/shift/cap, streaks),
//!   and confounders that are not the acute infarct (old infarcts, delayed arrival without
//!   core, hyperperfusion, low-flow white matter; see `confound`).
//!
//! [`Family`] names the presets: `Classic`; `Hospitals` (template heads + all realism: the
//! training recipe's data); `Holdout` (procedural heads + all realism: the out-of-family set
//! a model trained on `Hospitals` is judged and selected on, `cargo xtask evaluate-model`).
//! Holdout differs from Hospitals in how the anatomy is built, not in the lesion and
//! appearance ranges: it measures generalisation across anatomy, not across every modelling
//! choice, and its figures are phantom figures.
//!
//! # Determinism
//!
//! Case k is a pure function of `(seed, k, options)`: the case → patient assignment walks
//! per-patient coin flips, each patient's model comes from its own random stream, and
//! every draw uses integer arithmetic and `libm` (the same bits on every platform).
//! Options that change the patient models (slice range, fractions, gain ranges) change the
//! cases; `n_cases`, `gzip` and `with_pwi` do not.

pub mod anatomy;
mod confound;
mod field;
pub mod lesion;
mod model;
pub mod perfusion;
mod render;
pub mod scanner;
pub mod template;
mod write;

/// Stream labels for [`strokeseg_shared::rng::derive_seed`]: one per kind of randomness, so adding draws to one
/// stream never changes another.
pub(crate) mod tag {
    /// Whether patient p has one or two slabs.
    pub const SLAB_COUNT: u64 = 1;
    /// The 3D model of patient p (anatomy, physiology, lesion, slab geometry).
    pub const PATIENT: u64 = 2;
    /// Per-case acquisition: gains, bolus, noise levels.
    pub const CASE: u64 = 3;
    /// Per-case, per-modality noise fields.
    pub const NOISE: u64 = 4;
    /// Whether patient p is built on the brain template.
    pub const ANATOMY: u64 = 5;
    /// Patient p's second lesion and confounders ([`crate::Realism`]).
    pub const REALISM: u64 = 6;
    /// Per-case map appearance ([`crate::Realism::varied_appearance`]).
    pub const APPEARANCE: u64 = 7;
    /// Per-case protocol of the exact dynamic series ([`crate::DynamicSeries`]).
    pub const DYNAMIC: u64 = 8;
}

use strokeseg_io::Dtype;
use strokeseg_shared::modality::Modality;

pub use anatomy::{Hemisphere, Territory, Tissue};
pub use lesion::{CORE_RELATIVE_CBF, PENUMBRA_TMAX_S, Zone};
pub use perfusion::{Bolus, apparent_tmax_s};
pub use template::BrainTemplate;
pub use template::{TEMPLATE_DIR, TEMPLATE_DIR_ENV};
pub use write::{
    FILE_IDS_PER_CASE, PATIENTS_FILE, TRUTH_FILE, summary_json, write_case, write_dataset,
};

/// How to generate a dataset. `Default` gives an ISLES-2018-like mix.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetOptions {
    /// Number of cases (slabs) to write.
    pub n_cases: usize,
    /// Dataset seed: case k depends only on (seed, k) and the options below.
    pub seed: u64,
    /// Write `.nii.gz` instead of `.nii`.
    pub gzip: bool,
    /// Also write the 4D perfusion series `CT_4DPWI` (int16, 40–50 frames; large).
    pub with_pwi: bool,
    /// Fewest slices per slab (≥ 1; ISLES: 2).
    pub min_slices: usize,
    /// Most slices per slab (ISLES: 22).
    pub max_slices: usize,
    /// Fraction of patients without a lesion (their OT is all zero), 0–1.
    pub lesion_free_fraction: f64,
    /// Fraction of patients scanned as two slabs (two consecutive cases), 0–1. ISLES 2018
    /// training: 94 cases from 63 patients, i.e. about half.
    pub two_slab_fraction: f64,
    /// Range of the per-case CBF gain (stored uint16 per mL/100 g/min), drawn log-uniformly.
    pub cbf_gain_range: (f64, f64),
    /// Range of the per-case CBV gain (stored uint16 per mL/100 g), drawn log-uniformly.
    pub cbv_gain_range: (f64, f64),
    /// File id of the first file of case 1; case k (0-based) uses ids
    /// `first_file_id + 7k ..= first_file_id + 7k + 6`, one per modality.
    pub first_file_id: u64,
    /// Where the patients' anatomy comes from (all procedural by default).
    #[serde(default)]
    pub anatomy: AnatomySource,
    /// How far lesions, appearance and confounders vary (the classic generator by default).
    #[serde(default)]
    pub realism: Realism,
    /// How the 4D series is simulated (the classic series by default, bit for bit).
    #[serde(default)]
    pub dynamic: DynamicSeries,
}

/// The dynamic series for perfusion computation from the raw data (issue 12). `Default`
/// (`exact: false`) is the classic series, bit for bit: one AIF for every voxel, no
/// dispersion, vessels as high-flow tissue, 1 s frames.
///
/// With `exact`, the series follows the indicator-dilution model voxel by voxel so that the
/// maps deconvolution should find are known everywhere:
/// - tissue: `ΔHU = (f / k_H) · AIF ⊗ D_β ⊗ exp(−t / MTT)` delayed by the voxel's arrival
///   delay, with a per-voxel dispersion kernel `D_β(t) = e^{−t/β} / β` (β = the case's base
///   dispersion + 0.15 s per second of delay, at most 3 s: collateral flow disperses
///   more). The truth's Tmax is then the time of the maximum of the dispersed residue
///   `f · (D_β ⊗ R)(t − delay)`, `delay + ln(M/β) · Mβ/(M − β)`, what deconvolution
///   measures against the AIF; CBF, CBV and MTT keep their physiological values;
/// - arteries (vessel sub-samples away from the midline) carry the AIF itself and the
///   superior sagittal sinus (vessel sub-samples within 6 mm of the midline) the VOF,
///   `AIF ⊗ D_venous` delayed by the venous transit (same area as the AIF), each scaled
///   by the voxel's vessel fraction (partial volume) on top of the tissue's share;
/// - protocol: 40–60 frames, 1–2 s apart, `noise_hu` of gaussian noise per frame;
/// - optional head motion: from frame 2/3 of the way on, the slab is shifted by
///   `motion_shift_px` pixels along x (0: none).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DynamicSeries {
    /// Simulate the exact series described above (else the classic one).
    pub exact: bool,
    /// Noise per frame and voxel, HU (CTP: ≈ 10).
    pub noise_hu: f64,
    /// Range of the frame interval, s, drawn uniformly per case (rounded to 0.1 s).
    pub frame_interval_s: (f64, f64),
    /// Range of the number of frames, drawn uniformly per case.
    pub n_frames: (usize, usize),
    /// Range of the case's base dispersion time constant β, s.
    pub dispersion_s: (f64, f64),
    /// Head motion: shift of the later frames along x, pixels (0: none).
    pub motion_shift_px: usize,
}

impl Default for DynamicSeries {
    fn default() -> Self {
        // The classic series ignores the other fields; they are the CTP preset's, so
        // switching `exact` on gives the clinical protocol.
        let ctp = DynamicSeries::ctp();
        DynamicSeries {
            exact: false,
            noise_hu: ctp.noise_hu,
            frame_interval_s: ctp.frame_interval_s,
            n_frames: ctp.n_frames,
            dispersion_s: ctp.dispersion_s,
            motion_shift_px: ctp.motion_shift_px,
        }
    }
}

impl DynamicSeries {
    /// The exact series with a clinical CTP protocol and noise.
    pub const fn ctp() -> DynamicSeries {
        DynamicSeries {
            exact: true,
            noise_hu: 10.0,
            frame_interval_s: (1.0, 2.0),
            n_frames: (40, 60),
            dispersion_s: (0.2, 0.8),
            motion_shift_px: 0,
        }
    }
}

/// How far the generator departs from its classic, narrow ranges. `Default` is the classic
/// generator, bit for bit; [`Realism::hospitals`] turns everything on.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Realism {
    /// Lesion sizes like ISLES 2018's (per-case OT median ≈ 15 mL, IQR ≈ 6–45 mL, some
    /// over 100 mL) and wider lesion physiology (core rCBF 3–30 %, penumbra CBF 35–85 %,
    /// Tmax peak 7–16 s).
    pub isles_lesions: bool,
    /// Fraction of lesion patients with a second, smaller lesion: bilateral (half) or in
    /// another territory of the same hemisphere, 0–1.
    pub multifocal_fraction: f64,
    /// Per-case map appearance like vendors and protocols differ: map blur σ 0.8–3 mm,
    /// noise × 0.5–2.5, CBF/CBV offsets, Tmax scaled × 0.8–1.25, shifted −0.5 to +1 s and
    /// capped at 15–40 s, streak artefacts in 30 % of cases.
    pub varied_appearance: bool,
    /// Probability of each confounder kind per patient (old infarcts, delayed arrival
    /// without core, hyperperfusion, low-flow white matter), 0–1.
    pub confounder_rate: f64,
}

/// Named presets of [`AnatomySource`] and [`Realism`]: which population of studies a
/// dataset stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Family {
    /// The classic generator: procedural head, narrow ranges (the demo, most tests, the
    /// first default model).
    Classic,
    /// The training family: every patient on the brain template ([`template`]), with
    /// [`Realism::hospitals`].
    Hospitals,
    /// The out-of-family validation family: the procedural head (another construction of
    /// the anatomy) with the hospitals' variation, for model selection and reporting; never
    /// trained on.
    Holdout,
}

impl Family {
    /// Every family, for lookups.
    pub const ALL: [Family; 3] = [Family::Classic, Family::Hospitals, Family::Holdout];

    /// `classic`, `hospitals` or `holdout`.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Classic => "classic",
            Family::Hospitals => "hospitals",
            Family::Holdout => "holdout",
        }
    }

    /// The family's presets: the share of template heads and the realism.
    pub const fn presets(self) -> (f64, Realism) {
        match self {
            Family::Classic => (0.0, Realism::classic()),
            Family::Hospitals => (1.0, Realism::hospitals()),
            Family::Holdout => (0.0, Realism::hospitals()),
        }
    }

    /// The family whose presets are exactly `template_fraction` and `realism` (as a
    /// dataset's `phantom_truth.json` records them), if any.
    pub fn matching(template_fraction: f64, realism: &Realism) -> Option<Family> {
        Family::ALL.into_iter().find(|f| {
            let (fraction, r) = f.presets();
            fraction == template_fraction && r == *realism
        })
    }
}

impl DatasetOptions {
    /// These options with the anatomy and realism of `family`; `template_dir` is where the
    /// brain template is (needed by [`Family::Hospitals`]).
    pub fn with_family(self, family: Family, template_dir: Option<std::path::PathBuf>) -> Self {
        let (template_fraction, realism) = family.presets();
        DatasetOptions {
            anatomy: AnatomySource {
                template_fraction,
                template_dir,
            },
            realism,
            ..self
        }
    }
}

impl Realism {
    /// Everything off: the classic generator (the `Default`).
    pub const fn classic() -> Realism {
        Realism {
            isles_lesions: false,
            multifocal_fraction: 0.0,
            varied_appearance: false,
            confounder_rate: 0.0,
        }
    }

    /// Everything on: the training recipe's data.
    pub const fn hospitals() -> Realism {
        Realism {
            isles_lesions: true,
            multifocal_fraction: 0.12,
            varied_appearance: true,
            confounder_rate: 0.3,
        }
    }
}

/// Which head model the patients get.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnatomySource {
    /// Fraction of patients built on the brain template (see [`template`]), 0–1; the rest
    /// get the procedural head ([`anatomy`]).
    pub template_fraction: f64,
    /// Folder holding the template files ([`template::GM_FILE`], [`template::WM_FILE`]);
    /// needed when `template_fraction > 0`.
    pub template_dir: Option<std::path::PathBuf>,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            n_cases: 10,
            seed: 2018,
            gzip: false,
            with_pwi: false,
            min_slices: 2,
            max_slices: 22,
            lesion_free_fraction: 0.1,
            two_slab_fraction: 0.5,
            cbf_gain_range: (0.5, 20.0),
            cbv_gain_range: (2.0, 40.0),
            first_file_id: 345_560,
            anatomy: AnatomySource::default(),
            realism: Realism::default(),
            dynamic: DynamicSeries::default(),
        }
    }
}

impl DatasetOptions {
    /// The options with out-of-range knobs brought into range (slice bounds ≥ 1 and
    /// ordered, fractions in 0–1, gain ranges positive and ordered).
    pub fn sanitized(&self) -> DatasetOptions {
        let min_slices = self.min_slices.clamp(1, 512);
        let max_slices = self.max_slices.clamp(min_slices, 512);
        let frac = |f: f64| {
            if f.is_finite() {
                f.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let range = |r: (f64, f64), default: (f64, f64)| {
            let ok = |v: f64| v.is_finite() && v > 0.0;
            if ok(r.0) && ok(r.1) {
                (r.0.min(r.1), r.0.max(r.1))
            } else {
                default
            }
        };
        DatasetOptions {
            min_slices,
            max_slices,
            lesion_free_fraction: frac(self.lesion_free_fraction),
            two_slab_fraction: frac(self.two_slab_fraction),
            cbf_gain_range: range(self.cbf_gain_range, (0.5, 20.0)),
            cbv_gain_range: range(self.cbv_gain_range, (2.0, 40.0)),
            anatomy: AnatomySource {
                template_fraction: frac(self.anatomy.template_fraction),
                template_dir: self.anatomy.template_dir.clone(),
            },
            dynamic: {
                let d = self.dynamic;
                let (f0, f1) = (d.n_frames.0.clamp(20, 250), d.n_frames.1.clamp(20, 250));
                let positive = |r: (f64, f64), default: (f64, f64)| {
                    let ok = |v: f64| v.is_finite() && v >= 0.0;
                    if ok(r.0) && ok(r.1) {
                        (r.0.min(r.1), r.0.max(r.1))
                    } else {
                        default
                    }
                };
                let interval = positive(d.frame_interval_s, (1.0, 2.0));
                DynamicSeries {
                    n_frames: (f0.min(f1), f0.max(f1)),
                    frame_interval_s: (interval.0.max(0.1), interval.1.max(0.1)),
                    dispersion_s: positive(d.dispersion_s, (0.2, 0.8)),
                    noise_hu: if d.noise_hu.is_finite() {
                        d.noise_hu.abs()
                    } else {
                        10.0
                    },
                    ..d
                }
            },
            realism: Realism {
                multifocal_fraction: frac(self.realism.multifocal_fraction),
                confounder_rate: frac(self.realism.confounder_rate),
                ..self.realism
            },
            ..self.clone()
        }
    }
}

/// What was written for one case.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaseSummary {
    /// Folder name, `case_N` (N = index + 1).
    pub case_name: String,
    /// 0-based case index.
    pub case_index: usize,
    /// Patient label (`patient_M`), shared by the two slabs of a two-slab patient.
    pub patient: String,
    /// 0-based patient index.
    pub patient_index: usize,
    /// Which slab of the patient this is (0 or 1).
    pub slab_index: usize,
    /// Slabs the patient has (1 or 2).
    pub n_slabs: usize,
    /// Slices in this case (2–22 by default).
    pub n_slices: usize,
    /// Voxel spacing x, y, z in mm.
    pub spacing_mm: [f64; 3],
    /// NIfTI origin (world position of voxel (0, 0, 0)) in mm.
    pub origin_mm: [f64; 3],
    /// Ground-truth lesion volume (OT voxels × voxel volume), mL.
    pub lesion_volume_ml: f64,
    /// Ischaemic core volume on CTP (truth, before noise), mL.
    pub core_volume_ml: f64,
    /// Tmax > 6 s volume including the core (truth, before noise), mL.
    pub hypoperfused_volume_ml: f64,
    /// Lesion hemisphere and territory (`left MCA`), `None` for lesion-free patients.
    pub lesion_site: Option<String>,
    /// Stored CBF value per mL/100 g/min.
    pub cbf_gain: f64,
    /// Stored CBV value per mL/100 g.
    pub cbv_gain: f64,
    /// Files written, relative to the case folder.
    pub files: Vec<String>,
    /// Bytes written for this case.
    pub bytes_written: u64,
}

/// What [`write_dataset`] wrote; also saved as `ROOT/phantom_truth.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatasetSummary {
    /// Dataset seed.
    pub seed: u64,
    /// Cases written.
    pub n_cases: usize,
    /// Distinct patients among them.
    pub n_patients: usize,
    /// Cases whose OT is all zero.
    pub n_lesion_free: usize,
    /// Slices over all cases.
    pub total_slices: usize,
    /// Bytes of image data written (NIfTI files only).
    pub bytes_written: u64,
    /// Per case, in order.
    pub cases: Vec<CaseSummary>,
}

/// Noise-free truth that comes with a phantom case (not written as images except OT).
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomTruth {
    /// Majority [`Tissue`] code per voxel.
    pub tissue: Vec<u8>,
    /// Majority [`Zone`] code per voxel (`Core` if most sub-samples are core, `Penumbra`
    /// if most are penumbra or core).
    pub zone: Vec<u8>,
    /// Hemisphere at the voxel centre: 0 outside the skull, 1 left, 2 right.
    pub hemisphere: Vec<u8>,
    /// Intracranial mask (where the perfusion maps are defined), 0/1.
    pub brain_mask: Vec<u8>,
    /// Noise-free CBF, mL/100 g/min.
    pub cbf_ml_100g_min: Vec<f64>,
    /// Noise-free CBV, mL/100 g.
    pub cbv_ml_100g: Vec<f64>,
    /// Noise-free MTT = 60 · CBV / CBF, s (0 where CBF is 0).
    pub mtt_s: Vec<f64>,
    /// Noise-free Tmax, s.
    pub tmax_s: Vec<f64>,
    /// Noise-free non-contrast CT, HU (the 4D series' baseline).
    pub ct_hu: Vec<f64>,
    /// Arrival delay of the tissue relative to the AIF, s ([`DynamicSeries::exact`] only;
    /// empty otherwise, where Tmax is the delay).
    pub delay_s: Vec<f64>,
    /// Dispersion time constant β of the tissue's input, s ([`DynamicSeries::exact`] only).
    pub dispersion_s: Vec<f64>,
    /// Fraction of the voxel that is a large vessel, 0–1 ([`DynamicSeries::exact`] only).
    pub vessel_fraction: Vec<f64>,
    /// Whether the voxel's vessel is venous (the sinus) ([`DynamicSeries::exact`] only).
    pub venous: Vec<u8>,
    /// Lesion hemisphere and territory, `None` for lesion-free patients.
    pub lesion_site: Option<(Hemisphere, Territory)>,
    /// Acute lesions of the patient (0, 1, or 2 for a multifocal or bilateral stroke),
    /// whether or not this slab reaches them.
    pub n_lesions: usize,
    /// OT volume, mL.
    pub lesion_volume_ml: f64,
    /// Core volume, mL.
    pub core_volume_ml: f64,
    /// Tmax > 6 s volume including the core, mL.
    pub hypoperfused_volume_ml: f64,
}

/// One synthetic case (one slab) in memory. Volumes are `Vec`s of `nx · ny · nz` values,
/// x fastest, then y, then z (the NIfTI order), in physical units before any gain.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomCase {
    /// 0-based case index in the dataset.
    pub case_index: usize,
    /// 0-based patient index.
    pub patient_index: usize,
    /// Slab of the patient (0 or 1).
    pub slab_index: usize,
    /// Slabs the patient has (1 or 2).
    pub n_slabs: usize,
    /// `[nx, ny, nz]` = `[256, 256, n_slices]`.
    pub dims: [usize; 3],
    /// Voxel spacing x, y, z in mm (x = y = 0.78–1.09, z = 4–12).
    pub spacing_mm: [f64; 3],
    /// NIfTI origin, mm.
    pub origin_mm: [f64; 3],
    /// Non-contrast CT with noise, HU (stored as int32).
    pub ct_hu: Vec<f64>,
    /// CBF with noise, mL/100 g/min, 0 outside the brain (stored × `cbf_gain` as uint16).
    pub cbf_ml_100g_min: Vec<f64>,
    /// CBV with noise, mL/100 g, 0 outside the brain (stored × `cbv_gain` as uint16).
    pub cbv_ml_100g: Vec<f64>,
    /// MTT = 60 · CBV / CBF of the noisy maps, s (0 where CBF < 2 and outside the brain,
    /// at most 40; float64).
    pub mtt_s: Vec<f64>,
    /// Tmax with noise, s, 0 outside the brain (float64).
    pub tmax_s: Vec<f64>,
    /// Ground truth, 0 or 1 (uint8).
    pub ot: Vec<f64>,
    /// Stored CBF value per mL/100 g/min.
    pub cbf_gain: f64,
    /// Stored CBV value per mL/100 g.
    pub cbv_gain: f64,
    /// Bolus and 4D protocol of the series.
    pub bolus: Bolus,
    /// Noise-free truth.
    pub truth: PhantomTruth,
    /// How the 4D series is simulated.
    pub dynamic: DynamicSeries,
    /// Seed of the 4D series noise.
    pwi_noise_seed: u64,
}

impl PhantomCase {
    /// Folder name `case_N`, N = index + 1.
    pub fn case_name(&self) -> String {
        format!("case_{}", self.case_index + 1)
    }

    /// Patient label `patient_M`, M = patient index + 1.
    pub fn patient(&self) -> String {
        format!("patient_{}", self.patient_index + 1)
    }

    /// Number of slices.
    pub fn n_slices(&self) -> usize {
        self.dims[2]
    }

    /// Voxels per slice.
    pub fn slice_voxels(&self) -> usize {
        self.dims[0] * self.dims[1]
    }

    /// Volume of one voxel, mL.
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing_mm.iter().product::<f64>() / 1000.0
    }

    /// The volume of a 3D modality in physical units (`None` for the 4D series).
    pub fn volume(&self, modality: Modality) -> Option<&[f64]> {
        match modality {
            Modality::Ct => Some(&self.ct_hu),
            Modality::Cbf => Some(&self.cbf_ml_100g_min),
            Modality::Cbv => Some(&self.cbv_ml_100g),
            Modality::Mtt => Some(&self.mtt_s),
            Modality::Tmax => Some(&self.tmax_s),
            Modality::Ot => Some(&self.ot),
            Modality::Pwi => None,
        }
    }

    /// The factor between physical units and stored values (the gains for CBF and CBV,
    /// 1 otherwise).
    pub fn stored_gain(&self, modality: Modality) -> f64 {
        match modality {
            Modality::Cbf => self.cbf_gain,
            Modality::Cbv => self.cbv_gain,
            _ => 1.0,
        }
    }

    /// The 4D series in HU as stored (int16), laid out `[t][z][y][x]` (the NIfTI order of
    /// an `(X, Y, Z, 1, T)` image): `bolus.n_frames · nx · ny · nz` values. Computed on
    /// demand from the noise-free maps (about 1 s per slice).
    pub fn pwi_hu(&self) -> Vec<i16> {
        render::pwi_series(self, self.pwi_noise_seed)
    }
}

/// The ISLES 2018 datatype of a modality.
pub const fn isles_dtype(modality: Modality) -> Dtype {
    match modality {
        Modality::Ct => Dtype::I32,
        Modality::Cbf | Modality::Cbv => Dtype::U16,
        Modality::Mtt | Modality::Tmax => Dtype::F64,
        Modality::Pwi => Dtype::I16,
        Modality::Ot => Dtype::U8,
    }
}

/// Generates case `case_index` (0-based) of the dataset `(seed, opts)` in memory. The
/// result does not depend on `opts.n_cases`, `opts.gzip`, `opts.with_pwi` or
/// `opts.seed` (the `seed` argument is used). Fails only when the options ask for the
/// brain template and it cannot be loaded.
pub fn generate_case(
    seed: u64,
    case_index: usize,
    opts: &DatasetOptions,
) -> Result<PhantomCase, strokeseg_io::IoError> {
    let opts = opts.sanitized();
    let template = model::template_of(&opts)?;
    let (patient_index, slab_index, n_slabs) = model::locate_case(seed, case_index, &opts);
    let patient = model::PatientModel::new(seed, patient_index, n_slabs, &opts, template.as_ref());
    Ok(render::render_case(
        seed,
        case_index,
        patient_index,
        slab_index,
        &patient,
        &opts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_found_again_from_its_presets() {
        assert_eq!(Realism::default(), Realism::classic());
        for family in Family::ALL {
            let opts = DatasetOptions::default().with_family(family, None);
            assert_eq!(
                Family::matching(opts.anatomy.template_fraction, &opts.realism),
                Some(family)
            );
        }
        let custom = Realism {
            confounder_rate: 0.5,
            ..Realism::hospitals()
        };
        assert_eq!(Family::matching(1.0, &custom), None);
        assert_eq!(Family::matching(0.5, &Realism::hospitals()), None);
    }
}
