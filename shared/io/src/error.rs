//! The typed error of study I/O: every variant names the file and what is wrong with it.

use std::path::PathBuf;

use strokeseg_shared::modality::Modality;

/// Why a study, a NIfTI file or a dataset could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The operating system refused (missing file, permissions, disk full, …).
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be serialised as JSON for the file.
    #[error("{path}: cannot write JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The file is empty.
    #[error("{path}: file is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file ends before the header or the voxel data it declares.
    #[error("{path}: truncated: {what} needs {needed_bytes} bytes, file has {available_bytes}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What could not be read completely (`header`, `voxel data`, `slice 3`).
        what: String,
        /// Bytes needed from the start of the (decompressed) stream.
        needed_bytes: u64,
        /// Bytes available.
        available_bytes: u64,
    },
    /// Not a NIfTI-1 file, or a gzip stream that is corrupt.
    #[error("{path}: not a valid NIfTI-1 file: {reason}")]
    NotNifti {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// A header field has a value that no valid image can have.
    #[error("{path}: invalid header field {field}: {reason}")]
    InvalidHeader {
        /// The file.
        path: PathBuf,
        /// The NIfTI header field (`dim`, `pixdim`, `vox_offset`, …).
        field: &'static str,
        /// What is wrong with it, with the values.
        reason: String,
    },
    /// The header is valid but declares more data than the reader accepts.
    #[error("{path}: image too large: {reason}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Which limit was exceeded, with the values.
        reason: String,
    },
    /// The voxel datatype is valid NIfTI but cannot hold a scalar image (complex, RGB, …).
    #[error("{path}: unsupported NIfTI datatype code {code} ({name})")]
    UnsupportedDatatype {
        /// The file.
        path: PathBuf,
        /// The NIfTI `datatype` code.
        code: i16,
        /// Its name.
        name: String,
    },
    /// The image does not have the dimensionality the caller needs.
    #[error("{path}: expected a {expected} image, found dims {dims:?}")]
    WrongDimensionality {
        /// The file.
        path: PathBuf,
        /// What was expected (`3D volume`, `4D series`).
        expected: &'static str,
        /// The image dims (`dim[1..=dim[0]]`).
        dims: Vec<usize>,
    },
    /// A slice index past the end of the volume.
    #[error("{path}: slice {slice_idx} out of range (volume has {n_slices} slices)")]
    SliceOutOfRange {
        /// The file.
        path: PathBuf,
        /// The requested slice.
        slice_idx: usize,
        /// The number of slices.
        n_slices: usize,
    },
    /// A caller buffer or value array of the wrong length.
    #[error("{path}: buffer holds {got} values, one slice has {expected}")]
    BufferSize {
        /// The file.
        path: PathBuf,
        /// Values in one slice.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A writer was finished before every slice was written, or given too many.
    #[error("{path}: wrote {written} slices, the image has {expected}")]
    SliceCount {
        /// The file being written.
        path: PathBuf,
        /// Slices the header declares.
        expected: usize,
        /// Slices written.
        written: usize,
    },
    /// A modality the study needs is not in the case folder.
    #[error("{case_dir}: missing modality {modality} (found: {found})")]
    MissingModality {
        /// The case folder.
        case_dir: PathBuf,
        /// The modality that is missing.
        modality: Modality,
        /// The modalities that were found, comma-separated.
        found: String,
    },
    /// Two files claim the same modality.
    #[error("{case_dir}: two files for {modality}: {first} and {second}")]
    DuplicateModality {
        /// The case folder.
        case_dir: PathBuf,
        /// The modality.
        modality: Modality,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// Two images of one study do not share a grid.
    #[error("grid mismatch between {reference} and {other}: {what}")]
    GridMismatch {
        /// The reference image (the study's first modality).
        reference: PathBuf,
        /// The image that disagrees.
        other: PathBuf,
        /// What differs, with both values.
        what: String,
    },
    /// The study's values could not be preprocessed (e.g. an all-zero perfusion map).
    #[error("{path}: {source}")]
    Preprocess {
        /// The case folder.
        path: PathBuf,
        /// What the preprocessing refused.
        #[source]
        source: strokeseg_shared::error::CoreError,
    },
    /// NaN or ±inf values in a dynamic series (perfusion maps from it would be wrong).
    #[error("{path}: slice {slice_idx}, frame {frame_idx} holds {count} NaN or infinite values")]
    NonFiniteVoxels {
        /// The series.
        path: PathBuf,
        /// The slice.
        slice_idx: usize,
        /// The frame.
        frame_idx: usize,
        /// How many voxels.
        count: usize,
    },
    /// The dynamic series cannot give meaningful perfusion maps (too few frames, bad frame
    /// timing, no bolus, a frame-to-frame jump, …).
    #[error("{path}: {source}")]
    Perfusion {
        /// The series.
        path: PathBuf,
        /// What the perfusion computation refused.
        #[source]
        source: strokeseg_shared::error::CoreError,
    },
    /// A dataset folder or patients CSV that cannot be used.
    #[error("{path}: {reason}")]
    Dataset {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl IoError {
    /// Wraps an OS error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IoError::Io {
            path: path.into(),
            source,
        }
    }

    /// The file or folder the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            IoError::Io { path, .. }
            | IoError::Json { path, .. }
            | IoError::Empty { path }
            | IoError::Truncated { path, .. }
            | IoError::NotNifti { path, .. }
            | IoError::InvalidHeader { path, .. }
            | IoError::TooLarge { path, .. }
            | IoError::UnsupportedDatatype { path, .. }
            | IoError::WrongDimensionality { path, .. }
            | IoError::SliceOutOfRange { path, .. }
            | IoError::BufferSize { path, .. }
            | IoError::SliceCount { path, .. }
            | IoError::Preprocess { path, .. }
            | IoError::NonFiniteVoxels { path, .. }
            | IoError::Perfusion { path, .. }
            | IoError::Dataset { path, .. } => path,
            IoError::MissingModality { case_dir, .. }
            | IoError::DuplicateModality { case_dir, .. } => case_dir,
            IoError::GridMismatch { other, .. } => other,
        }
    }
}
