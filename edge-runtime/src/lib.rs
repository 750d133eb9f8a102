//! strokeseg-edge: the runtime on the ARM box beside the CT scanner.
//!
//! It reads a CTP study slice by slice through `strokeseg-shared` (the same reader and
//! preprocessing the trainer uses), so training and deployment cannot disagree. It never
//! links libtorch.
#![forbid(unsafe_code)]

pub mod demo;
pub mod error;
pub mod inspect;

pub use error::EdgeError;
