//! NIfTI-1 study I/O (std): validated headers, slice-by-slice reading and writing,
//! ISLES 2018 case folders and dataset discovery, and the raw dynamic series (`CT_4DPWI`)
//! that perfusion maps are computed from.
//!
//! Everything here reads at most one slice of one file at a time unless the caller asks
//! for more. Headers are validated before anything sized by them is allocated, and every
//! error names the file and what is wrong with it.

pub mod atomic;
pub mod computed_maps;
mod dataset;
mod dtype;
mod dynamic;
mod error;
mod header;
mod reader;
mod study;
mod writer;

pub use dataset::{Dataset, DatasetCase, PatientGrouping};
pub use dtype::Dtype;
pub use dynamic::{DynamicLayout, DynamicOptions, DynamicSeries, FrameInterval};
pub use error::IoError;
pub use header::{
    Affine, GridTolerance, HeaderInfo, ReadLimits, new_header, read_header, read_up_to,
};
pub use reader::{NiftiVolumeReader, SliceStats};
pub use study::{CaseFiles, MaskGrid, SlicePreparer, Study, StudyStats};
pub use writer::NiftiWriter;

/// Lower-case hex SHA-256 of `bytes` (model files, checkpoints, templates, `SHA256SUMS`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
