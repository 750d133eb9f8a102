//! The edge box as a DICOM node (dicom-rs, pure Rust): phantom studies written as DICOM
//! series, received series recognised and read into the one study type the segmenter
//! takes, a Storage SCP that spools every instance durably before acknowledging it, the
//! derived objects (Segmentation, Secondary Capture overlay, Structured Report) and a
//! Storage SCU with a persistent outbox.
//!
//! Protocol code ([`scp`], [`scu`]) moves files and knows nothing of segmentation; the
//! object code ([`write`], [`read`], [`derived`]) knows nothing of sockets.

pub mod attr;
mod config;
pub mod derived;
mod error;
pub mod geometry;
pub mod read;
pub mod sanitize;
pub mod scp;
pub mod scu;
mod uid;
pub mod write;

pub use config::RecognizerConfig;
pub use error::DicomError;
pub use uid::{MAX_UID_CHARS, UidRoot, is_valid_uid};
