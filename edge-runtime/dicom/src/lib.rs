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
mod pixels;
pub mod read;
pub mod retention;
mod rle;
pub mod sanitize;
pub mod scp;
pub mod scu;
pub mod testing;
mod uid;
pub mod write;

pub use config::RecognizerConfig;
pub use error::DicomError;
pub use uid::{MAX_UID_CHARS, UidRoot, is_valid_uid};

/// Every `.dcm` file under `dir` (recursively), sorted; unreadable folders are skipped.
pub fn dcm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dcm") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
