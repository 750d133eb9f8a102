//! The edge box's config file (TOML), read by `strokeseg-edge watch --config FILE`: where
//! the study folders are, how to segment, the alert threshold and the status pins.
//! Command-line flags override single values. Example:
//!
//! ```toml
//! [watch]
//! root = "/var/lib/strokeseg"   # inbox/, processing/, done/, failed/, outbox/ below it
//! ready_marker = "READY"        # a study folder is ready when this file exists in it
//! settle_seconds = 0            # > 0: also ready when unchanged for this many seconds
//! poll_interval_ms = 1000
//!
//! [segment]
//! method = "model"              # or "threshold"
//! # model = "/opt/strokeseg/model.onnx"   # default: the model embedded in the binary;
//! #                                        # a list of files is an ensemble
//! # tta = "flip"                # test-time augmentation: "none" (default) or "flip"
//! alert_threshold_ml = 70.0
//!
//! [pins]                        # omit for no pins
//! backend = "cdev"              # GPIO lines (`gpio-cdev` build feature); "log": log levels
//! chip = "/dev/gpiochip0"
//! busy = 17
//! done = 27
//! alert = 22
//! fault = 23
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::EdgeError;
use crate::segmenter::Tta;

/// `model = "a.onnx"` or `model = ["a.onnx", "b.onnx"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(path) => vec![path],
        OneOrMany::Many(paths) => paths,
    })
}
use crate::report::Method;
use crate::segment::DEFAULT_ALERT_THRESHOLD_ML;
use crate::status::PinConfig;

/// The `[watch]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchSection {
    /// Parent of the five folders; each may be set on its own instead.
    pub root: Option<PathBuf>,
    /// Where studies arrive (default `root/inbox`).
    pub inbox: Option<PathBuf>,
    /// Claimed studies being segmented (default `root/processing`).
    pub processing: Option<PathBuf>,
    /// Studies whose outputs are published (default `root/done`).
    pub done: Option<PathBuf>,
    /// Studies that could not be segmented, each with `error.txt` (default `root/failed`).
    pub failed: Option<PathBuf>,
    /// One folder of outputs per study (default `root/outbox`).
    pub outbox: Option<PathBuf>,
    /// Name of the marker file that says a study folder is complete.
    pub ready_marker: String,
    /// When > 0, a folder unchanged for this many seconds is ready without a marker.
    pub settle_seconds: u64,
    /// How often the inbox is scanned, milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for WatchSection {
    fn default() -> Self {
        WatchSection {
            root: None,
            inbox: None,
            processing: None,
            done: None,
            failed: None,
            outbox: None,
            ready_marker: "READY".into(),
            settle_seconds: 0,
            poll_interval_ms: 1000,
        }
    }
}

/// The `[segment]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentSection {
    /// `model` or `threshold`.
    pub method: Method,
    /// Model file, or a list of files averaged as an ensemble; the embedded default model
    /// when absent or empty.
    #[serde(deserialize_with = "one_or_many")]
    pub model: Vec<PathBuf>,
    /// Test-time augmentation.
    pub tta: Tta,
    /// Lesion volume that raises the alert, mL.
    pub alert_threshold_ml: f64,
}

impl Default for SegmentSection {
    fn default() -> Self {
        SegmentSection {
            method: Method::Model,
            model: Vec::new(),
            tta: Tta::None,
            alert_threshold_ml: DEFAULT_ALERT_THRESHOLD_ML,
        }
    }
}

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Folders and readiness.
    pub watch: WatchSection,
    /// Method, model, alert threshold.
    pub segment: SegmentSection,
    /// Status pins.
    pub pins: PinConfig,
}

impl EdgeConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<EdgeConfig, EdgeError> {
        let text = std::fs::read_to_string(path).map_err(|e| EdgeError::Settings {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let config: EdgeConfig = toml::from_str(&text).map_err(|e| EdgeError::Settings {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(config)
    }
}

/// The five folders of the daemon, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchDirs {
    /// Arriving studies.
    pub inbox: PathBuf,
    /// Claimed studies.
    pub processing: PathBuf,
    /// Finished studies.
    pub done: PathBuf,
    /// Failed studies.
    pub failed: PathBuf,
    /// Published outputs.
    pub outbox: PathBuf,
}

impl WatchSection {
    /// The folders: each one set explicitly, else below `root`; an error names the first
    /// folder that has neither. They must lie on one file system (claims are renames).
    pub fn dirs(&self, source: &Path) -> Result<WatchDirs, EdgeError> {
        let pick = |explicit: &Option<PathBuf>, name: &str| {
            explicit
                .clone()
                .or_else(|| self.root.as_ref().map(|r| r.join(name)))
                .ok_or_else(|| EdgeError::Settings {
                    path: source.to_path_buf(),
                    reason: format!("[watch] needs root or {name}"),
                })
        };
        Ok(WatchDirs {
            inbox: pick(&self.inbox, "inbox")?,
            processing: pick(&self.processing, "processing")?,
            done: pick(&self.done, "done")?,
            failed: pick(&self.failed, "failed")?,
            outbox: pick(&self.outbox, "outbox")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
            [watch]
            root = "/var/lib/strokeseg"
            ready_marker = "READY"
            settle_seconds = 0
            poll_interval_ms = 1000
            [segment]
            method = "threshold"
            alert_threshold_ml = 50.0
            [pins]
            backend = "cdev"
            chip = "/dev/gpiochip0"
            busy = 17
            fault = 23
        "#;
        let c: EdgeConfig = toml::from_str(text).unwrap();
        assert_eq!(c.segment.method, Method::Threshold);
        assert_eq!(c.pins.busy, Some(17));
        assert_eq!(c.pins.done, None);
        let d = c.watch.dirs(Path::new("x")).unwrap();
        assert_eq!(d.failed, PathBuf::from("/var/lib/strokeseg/failed"));
        assert!(toml::from_str::<EdgeConfig>("[watch]\nrooot = \"a\"").is_err());
        assert!(WatchSection::default().dirs(Path::new("x")).is_err());
    }

    #[test]
    fn the_shipped_example_parses() {
        let c: EdgeConfig = toml::from_str(include_str!("../deploy/edge.example.toml")).unwrap();
        assert_eq!(c.watch.root, Some(PathBuf::from("/var/lib/strokeseg")));
        assert_eq!(c.segment, SegmentSection::default());
        assert!(!c.pins.any());
    }
}
