//! The edge box's config file (TOML), read by `strokeseg-edge watch --config FILE` and
//! `strokeseg-edge serve --config FILE`: where the study folders are, how to segment, the
//! alert threshold, the DICOM node and the status pins.
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
//! # threads = 2                 # threads tract runs the model on; default: the box's cores
//! maps = "auto"                 # perfusion maps: "provided" (the study's), "computed" (from
//!                               # its raw series CT_4DPWI) or "auto" (provided when present)
//!
//! [dicom]                       # `strokeseg-edge serve`: the box as a DICOM node
//! ae_title = "STROKESEG"        # the called AE title the scanner sends to
//! port = 11112
//! allowed_calling_ae_titles = ["CT_SCANNER"]   # others are rejected at association
//! # allowed_peers = ["10.1.2.3"] # optional: peer addresses accepted (empty: any)
//! idle_seconds = 30             # a study is complete when nothing arrived for this long
//! # spool = "/var/lib/strokeseg/spool"          # default: <watch root>/spool (same file system)
//! # uid_root = "1.2.826.0.1.3680043.10.999"      # default: 2.25.<uuid>
//! keep_sent_days = 30           # delivered results leave dicom-outbox/sent/ after this (0: never)
//! keep_done_days = 30           # received studies leave done/ after this (0: never)
//! [dicom.destination]           # the PACS the SEG, overlay and report go to
//! ae_title = "PACS"
//! host = "10.1.2.4"
//! port = 104
//!
//! [pins]                        # omit for no pins
//! backend = "cdev"              # GPIO lines (`gpio-cdev` build feature); "log": log levels
//! chip = "/dev/gpiochip0"
//! busy = 17
//! done = 27
//! alert = 22
//! fault = 23
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::EdgeError;
use crate::perfusion::MapsSource;
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
    /// Threads tract runs the model on (1: single-threaded); absent: the box's available
    /// cores (see [`crate::threads`]).
    pub threads: Option<usize>,
    /// Which perfusion maps are read: the study's, computed from its `CT_4DPWI`, or `auto`
    /// (as `segment --maps`).
    pub maps: MapsSource,
}

impl Default for SegmentSection {
    fn default() -> Self {
        SegmentSection {
            method: Method::Model,
            model: Vec::new(),
            tta: Tta::None,
            alert_threshold_ml: DEFAULT_ALERT_THRESHOLD_ML,
            threads: None,
            maps: MapsSource::Auto,
        }
    }
}

/// `[dicom.destination]`: where results are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSection {
    /// The PACS's (called) AE title.
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// The `[dicom]` table of `serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DicomSection {
    /// Our AE title: the called AE title senders must use.
    pub ae_title: String,
    /// Listen address (all interfaces by default).
    pub listen_address: IpAddr,
    /// TCP port (0: any free port, logged; tests).
    pub port: u16,
    /// Calling AE titles accepted; others are rejected at association.
    pub allowed_calling_ae_titles: Vec<String>,
    /// Peer addresses accepted; empty accepts any.
    pub allowed_peers: Vec<IpAddr>,
    /// A study is complete when nothing arrived for this long, seconds.
    pub idle_seconds: u64,
    /// Receiving spool (default `<watch root>/spool`); on the watch root's file system.
    pub spool: Option<PathBuf>,
    /// Outbox of the DICOM results (default `<watch root>/dicom-outbox`).
    pub outbox: Option<PathBuf>,
    /// Where results are sent; absent: the SEG, overlay and report stay in the outbox.
    pub destination: Option<DestinationSection>,
    /// First wait after a failed delivery, seconds (doubling up to `retry_max_seconds`).
    pub retry_base_seconds: u64,
    /// Longest wait between delivery attempts, seconds.
    pub retry_max_seconds: u64,
    /// Root of new Series and SOP Instance UIDs (default: `2.25.<uuid>`).
    pub uid_root: Option<String>,
    /// Label results "not for diagnostic use" (always for a model trained on phantoms).
    pub not_for_diagnostic_use: bool,
    /// Which series descriptions name which perfusion map (site overrides).
    pub recognizer: strokeseg_dicom::RecognizerConfig,
    /// Delivered result jobs are removed from `dicom-outbox/sent/` this many days after
    /// their delivery (checked at start and hourly); 0 keeps them forever.
    pub keep_sent_days: u64,
    /// Studies are removed from `done/` (the received instances and the NIfTI case folder
    /// made from them; the results stay in `outbox/`) this many days after they were
    /// processed; 0 keeps them forever.
    pub keep_done_days: u64,
}

impl Default for DicomSection {
    fn default() -> Self {
        DicomSection {
            ae_title: "STROKESEG".into(),
            listen_address: IpAddr::from([0, 0, 0, 0]),
            port: 11112,
            allowed_calling_ae_titles: Vec::new(),
            allowed_peers: Vec::new(),
            idle_seconds: 30,
            spool: None,
            outbox: None,
            destination: None,
            retry_base_seconds: 5,
            retry_max_seconds: 600,
            uid_root: None,
            not_for_diagnostic_use: true,
            recognizer: strokeseg_dicom::RecognizerConfig::default(),
            keep_sent_days: 30,
            keep_done_days: 30,
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
    /// The DICOM node (`serve`).
    pub dicom: DicomSection,
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
    fn a_model_is_one_file_or_a_list_and_tta_is_named() {
        let one: EdgeConfig = toml::from_str("[segment]\nmodel = \"a.onnx\"").unwrap();
        assert_eq!(one.segment.model, [PathBuf::from("a.onnx")]);
        assert_eq!(one.segment.tta, Tta::None);
        let many: EdgeConfig =
            toml::from_str("[segment]\nmodel = [\"a.onnx\", \"b.onnx\"]\ntta = \"flip\"").unwrap();
        assert_eq!(many.segment.model.len(), 2);
        assert_eq!(many.segment.tta, Tta::Flip);
        assert!(toml::from_str::<EdgeConfig>("[segment]\ntta = \"rotate\"").is_err());
        assert!(toml::from_str::<EdgeConfig>("[segment]\nmodel = 3").is_err());
    }

    #[test]
    fn maps_is_provided_computed_or_auto() {
        assert_eq!(EdgeConfig::default().segment.maps, MapsSource::Auto);
        for (text, maps) in [
            ("provided", MapsSource::Provided),
            ("computed", MapsSource::Computed),
            ("auto", MapsSource::Auto),
        ] {
            let c: EdgeConfig = toml::from_str(&format!("[segment]\nmaps = \"{text}\"")).unwrap();
            assert_eq!(c.segment.maps, maps);
        }
        assert!(toml::from_str::<EdgeConfig>("[segment]\nmaps = \"vendor\"").is_err());
    }

    #[test]
    fn threads_is_a_count_or_absent() {
        let c: EdgeConfig = toml::from_str("[segment]\nthreads = 2").unwrap();
        assert_eq!(c.segment.threads, Some(2));
        assert_eq!(EdgeConfig::default().segment.threads, None);
        assert!(toml::from_str::<EdgeConfig>("[segment]\nthreads = -1").is_err());
        assert!(toml::from_str::<EdgeConfig>("[segment]\nthreads = \"all\"").is_err());
        let zero: EdgeConfig = toml::from_str("[segment]\nthreads = 0").unwrap();
        let err = crate::threads::resolve_threads(zero.segment.threads, Path::new("edge.toml"));
        assert!(matches!(err, Err(EdgeError::Settings { .. })));
    }

    #[test]
    fn the_dicom_table_parses_and_refuses_unknown_fields() {
        let text = r#"
            [watch]
            root = "/var/lib/strokeseg"
            [dicom]
            ae_title = "STROKESEG"
            port = 11112
            allowed_calling_ae_titles = ["CT_SCANNER"]
            allowed_peers = ["10.1.2.3"]
            idle_seconds = 30
            keep_sent_days = 7
            keep_done_days = 0
            [dicom.destination]
            ae_title = "PACS"
            host = "10.1.2.4"
            port = 104
            [dicom.recognizer]
            cbf = ["PERFUSION FLOW"]
        "#;
        let c: EdgeConfig = toml::from_str(text).unwrap();
        assert_eq!(c.dicom.allowed_calling_ae_titles, ["CT_SCANNER"]);
        assert_eq!(c.dicom.destination.as_ref().map(|d| d.port), Some(104));
        assert_eq!(c.dicom.recognizer.cbf, ["PERFUSION FLOW"]);
        assert_eq!((c.dicom.keep_sent_days, c.dicom.keep_done_days), (7, 0));
        let d = DicomSection::default();
        assert_eq!((d.keep_sent_days, d.keep_done_days), (30, 30));
        assert!(toml::from_str::<EdgeConfig>("[dicom]\naetitle = \"X\"").is_err());
        assert!(
            toml::from_str::<EdgeConfig>(
                "[dicom.destination]\nae_title = \"P\"\nhost = \"h\"\nport = 1\nretry = 2"
            )
            .is_err()
        );
    }

    #[test]
    fn the_shipped_example_parses() {
        let c: EdgeConfig = toml::from_str(include_str!("../deploy/edge.example.toml")).unwrap();
        assert_eq!(c.watch.root, Some(PathBuf::from("/var/lib/strokeseg")));
        assert_eq!(c.segment, SegmentSection::default());
        assert!(!c.pins.any());
    }
}
