//! The preprocessing contract between trainer and edge runtime: which channels, how each
//! is normalised, and the model's input grid. It travels inside every exported model.

use heapless::Vec;

use crate::error::CoreError;
use crate::modality::Modality;

/// Version of the preprocessing code and config semantics. Bump it whenever a change to
/// this crate would make a model trained before the change see different inputs; the
/// edge runtime refuses models whose version differs.
pub const PREPROCESS_VERSION: u32 = 1;

/// Most input channels a model may have.
pub const MAX_CHANNELS: usize = 8;

/// How one channel's values are mapped to the model's input range.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Normalization {
    /// `(x − p_lower) / (p_upper − p_lower)` with the percentiles taken over the volume's
    /// brain voxels, clamped to `[−clip, 1 + clip]`. Robust to the unknown per-case gains
    /// of ISLES CBF/CBV maps.
    Percentile {
        /// Lower percentile, 0–100.
        lower_pct: f32,
        /// Upper percentile, 0–100, above `lower_pct`.
        upper_pct: f32,
        /// Headroom beyond [0, 1] before clamping (≥ 0).
        clip: f32,
    },
    /// `(x − mean) / sd` over the volume's brain voxels, clamped to `[−clip, clip]`.
    ZScore {
        /// Clamp bound (> 0).
        clip: f32,
    },
    /// `(x − offset) / scale` with fixed values (e.g. a Hounsfield window), clamped to
    /// `[−clip, 1 + clip]`.
    Fixed {
        /// Value mapped to 0.
        offset: f32,
        /// Value range mapped to 1 (≠ 0).
        scale: f32,
        /// Headroom beyond [0, 1] before clamping (≥ 0).
        clip: f32,
    },
}

impl Normalization {
    /// The default for perfusion maps: brain 1st–99th percentile to [0, 1], clamped to
    /// [−1, 2]. Robust to the unknown per-case gain of ISLES CBF/CBV maps.
    pub const ROBUST: Normalization = Normalization::Percentile {
        lower_pct: 1.0,
        upper_pct: 99.0,
        clip: 1.0,
    };

    /// The default for CT: the clinical brain window (level 40 HU, width 80 HU) to [0, 1],
    /// clamped to [−1, 2] (−80…160 HU). CT is calibrated in Hounsfield units, so a fixed
    /// window keeps grey/white contrast that percentiles would spend on partial-volume
    /// skull at the brain edge.
    pub const CT_BRAIN_WINDOW: Normalization = Normalization::Fixed {
        offset: 0.0,
        scale: 80.0,
        clip: 1.0,
    };
}

/// One model input channel.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelSpec {
    /// The source image.
    pub modality: Modality,
    /// Its normalisation.
    pub norm: Normalization,
}

/// Which voxels count as brain, for statistics and for masking the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BrainMaskConfig {
    /// A voxel is brain when at least this many of the perfusion-map channels are > 0
    /// (ISLES maps are skull-stripped: zero outside the brain). 0 disables the rule.
    pub min_positive_perfusion_maps: u8,
    /// If set and a CT channel is present, brain voxels must also lie in this Hounsfield
    /// range `(low_hu, high_hu)`, which drops skull, calcification and air.
    pub ct_hu_range: Option<(f32, f32)>,
}

impl Default for BrainMaskConfig {
    fn default() -> Self {
        BrainMaskConfig {
            min_positive_perfusion_maps: 1,
            ct_hu_range: None,
        }
    }
}

/// Everything the preprocessing does, as data. Serialised to JSON into model metadata.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PreprocessConfig {
    /// [`PREPROCESS_VERSION`] at the time the config was made.
    pub version: u32,
    /// The model's input channels, in order.
    pub channels: Vec<ChannelSpec, MAX_CHANNELS>,
    /// In-plane spacing of the model grid, millimetres.
    pub target_spacing_mm: f32,
    /// Model input height (rows, y), pixels.
    pub input_height: u16,
    /// Model input width (columns, x), pixels.
    pub input_width: u16,
    /// The brain mask rule.
    pub brain_mask: BrainMaskConfig,
    /// Where the perfusion-map channels come from (absent in older metadata: provided).
    #[cfg_attr(feature = "serde", serde(default))]
    pub maps: MapsProvenance,
}

/// Where a model's perfusion-map channels come from: the maps a data set provides (the
/// scanner vendor's software, ISLES' own), or strokeseg's computation from the raw dynamic
/// series (`crate::perfusion`). Maps of different origin differ in scale and texture, so a
/// model must meet at the edge the maps it was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "source"))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MapsProvenance {
    /// Provided with the data.
    #[default]
    Provided,
    /// Computed by strokeseg from the raw dynamic series.
    Computed {
        /// The named configuration of the computation.
        preset: crate::perfusion::PerfusionPreset,
        /// [`crate::perfusion::PERFUSION_VERSION`] of the code that computed them.
        version: u32,
    },
}

impl MapsProvenance {
    /// Maps computed by this build with `preset`.
    pub fn computed(preset: crate::perfusion::PerfusionPreset) -> MapsProvenance {
        MapsProvenance::Computed {
            preset,
            version: crate::perfusion::PERFUSION_VERSION,
        }
    }
}

impl core::fmt::Display for MapsProvenance {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapsProvenance::Provided => f.write_str("the maps provided with the study"),
            MapsProvenance::Computed { preset, version } => write!(
                f,
                "maps computed by strokeseg from the raw series (preset {}, perfusion version {version})",
                preset.name()
            ),
        }
    }
}

impl Default for PreprocessConfig {
    /// CBF, CBV, MTT, Tmax, CT (the paper's five inputs); robust percentile normalisation
    /// for the maps and the brain window for CT; 1.5 mm in-plane on a 160×160 grid (a
    /// 240 mm field of view, wider than any head).
    fn default() -> Self {
        let mut channels = Vec::new();
        for modality in [
            Modality::Cbf,
            Modality::Cbv,
            Modality::Mtt,
            Modality::Tmax,
            Modality::Ct,
        ] {
            // Five fit in MAX_CHANNELS; a failed push is impossible but harmless.
            let norm = if modality == Modality::Ct {
                Normalization::CT_BRAIN_WINDOW
            } else {
                Normalization::ROBUST
            };
            let _ = channels.push(ChannelSpec { modality, norm });
        }
        PreprocessConfig {
            version: PREPROCESS_VERSION,
            channels,
            target_spacing_mm: 1.5,
            input_height: 160,
            input_width: 160,
            brain_mask: BrainMaskConfig::default(),
            maps: MapsProvenance::Provided,
        }
    }
}

impl PreprocessConfig {
    /// Number of input channels.
    pub fn n_channels(&self) -> usize {
        self.channels.len()
    }

    /// Pixels in one model input plane (`input_height * input_width`).
    pub fn input_plane_len(&self) -> usize {
        usize::from(self.input_height) * usize::from(self.input_width)
    }

    /// Index of `modality` among the channels.
    pub fn channel_index(&self, modality: Modality) -> Option<usize> {
        self.channels.iter().position(|c| c.modality == modality)
    }

    /// Checks every value; returns the first problem.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |reason| Err(CoreError::InvalidConfig { reason });
        if self.channels.is_empty() {
            return bad("no channels");
        }
        for (i, c) in self.channels.iter().enumerate() {
            if self.channels[..i].iter().any(|o| o.modality == c.modality) {
                return bad("a modality is listed twice");
            }
            if matches!(c.modality, Modality::Ot | Modality::Pwi) {
                return bad("OT and CT_4DPWI cannot be input channels");
            }
            match c.norm {
                Normalization::Percentile {
                    lower_pct,
                    upper_pct,
                    clip,
                } => {
                    let ok = (0.0..=100.0).contains(&lower_pct)
                        && (0.0..=100.0).contains(&upper_pct)
                        && lower_pct < upper_pct;
                    if !ok {
                        return bad("percentiles must satisfy 0 ≤ lower < upper ≤ 100");
                    }
                    if !(clip >= 0.0 && clip.is_finite()) {
                        return bad("clip must be finite and ≥ 0");
                    }
                }
                Normalization::ZScore { clip } => {
                    if !(clip > 0.0 && clip.is_finite()) {
                        return bad("z-score clip must be finite and > 0");
                    }
                }
                Normalization::Fixed {
                    offset,
                    scale,
                    clip,
                } => {
                    if !offset.is_finite() || !scale.is_finite() || scale == 0.0 {
                        return bad("fixed normalisation needs finite offset and non-zero scale");
                    }
                    if !(clip >= 0.0 && clip.is_finite()) {
                        return bad("clip must be finite and ≥ 0");
                    }
                }
            }
        }
        if !(self.target_spacing_mm > 0.0 && self.target_spacing_mm.is_finite()) {
            return bad("target_spacing_mm must be finite and > 0");
        }
        if self.input_height == 0 || self.input_width == 0 {
            return bad("input size must be non-zero");
        }
        if let Some((lo, hi)) = self.brain_mask.ct_hu_range
            && (lo >= hi || lo.is_nan() || hi.is_nan())
        {
            return bad("ct_hu_range must have low < high");
        }
        Ok(())
    }
}
