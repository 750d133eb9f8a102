//! The typed error of the DICOM node: every variant names the file, series or peer and what
//! is wrong with it.

use std::path::PathBuf;

/// Why a DICOM object could not be written, read, recognised, received or sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DicomError {
    /// The operating system refused (missing file, permissions, disk full, …).
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Study I/O (NIfTI writing, atomic publication) failed.
    #[error(transparent)]
    Study(#[from] strokeseg_io::IoError),
    /// The file is not a DICOM file dicom-rs can parse (truncated, no preamble, bad meta).
    #[error("{path}: not a readable DICOM file: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A DICOM object could not be encoded.
    #[error("{what}: cannot encode DICOM: {reason}")]
    Encode {
        /// What was being written (`SEG`, `CT slice 3`).
        what: String,
        /// What the encoder said.
        reason: String,
    },
    /// An instance lacks an attribute it must have, or has a value no valid instance has.
    #[error("{path}: attribute {attribute}: {reason}")]
    BadAttribute {
        /// The file (or `<received>` for an instance still on the wire).
        path: PathBuf,
        /// The attribute keyword (`Rows`, `PixelData`, `BitsAllocated`).
        attribute: &'static str,
        /// What is wrong with it, with the values.
        reason: String,
    },
    /// A series cannot be turned into a volume (gantry tilt, non-uniform spacing, mixed
    /// orientations or sizes, …).
    #[error("series {series_uid} ({description}): {reason}")]
    Series {
        /// Series Instance UID.
        series_uid: String,
        /// Series Description (may be empty).
        description: String,
        /// Why it is refused, with the values.
        reason: String,
    },
    /// A study cannot be segmented (no maps, only a dynamic series, two series for one map).
    #[error("study {study_uid}: {reason}")]
    StudyRefused {
        /// Study Instance UID.
        study_uid: String,
        /// Why, with what was found.
        reason: String,
    },
    /// A configuration value is out of range or malformed.
    #[error("config {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The network peer could not be reached or broke the protocol.
    #[error("{peer}: {reason}")]
    Network {
        /// `AE@host:port` of the peer.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// The peer answered a C-STORE with a non-success status.
    #[error("{peer}: C-STORE of {sop_instance_uid} answered status {status:#06x}")]
    StoreStatus {
        /// `AE@host:port` of the peer.
        peer: String,
        /// The instance sent.
        sop_instance_uid: String,
        /// The DIMSE status.
        status: u16,
    },
}

impl DicomError {
    /// An [`DicomError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DicomError {
        DicomError::Io {
            path: path.into(),
            source,
        }
    }
}
