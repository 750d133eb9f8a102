//! Site settings of series recognition: which Series Description / Image Type /
//! Derivation Description phrases name each perfusion map (serde, for the edge's config
//! file; the defaults cover common consoles).

/// Token phrases per map, matched case-insensitively on whole alphanumeric tokens of
/// `SeriesDescription ImageType DerivationDescription` (`"blood flow"` matches
/// `Cerebral Blood Flow`, `"TMAX"` matches `Tmax (s)` but not `MAX`). A series matching
/// an `exclude` phrase is never a map (colour renderings, summary maps, thresholded masks).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecognizerConfig {
    /// Phrases naming a CBF map.
    pub cbf: Vec<String>,
    /// Phrases naming a CBV map.
    pub cbv: Vec<String>,
    /// Phrases naming an MTT map.
    pub mtt: Vec<String>,
    /// Phrases naming a Tmax map.
    pub tmax: Vec<String>,
    /// Phrases that make a series not a map.
    pub exclude: Vec<String>,
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for RecognizerConfig {
    fn default() -> Self {
        RecognizerConfig {
            cbf: strings(&["CBF", "RCBF", "BLOOD FLOW"]),
            cbv: strings(&["CBV", "RCBV", "BLOOD VOLUME"]),
            mtt: strings(&["MTT", "MEAN TRANSIT"]),
            tmax: strings(&["TMAX", "T MAX", "TIME TO MAX", "TIME TO MAXIMUM"]),
            exclude: strings(&[
                "COLOR",
                "COLOUR",
                "SUMMARY",
                "MISMATCH",
                "THRESHOLD",
                "OVERLAY",
            ]),
        }
    }
}
