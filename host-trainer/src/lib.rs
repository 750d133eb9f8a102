//! strokeseg-trainer: training the lesion segmenter on the host with tch (libtorch).
//!
//! The binary `strokeseg-train` is the entry point; this library holds what its subcommands and
//! the integration tests share. Datasets come from `strokeseg_shared` (NIfTI study I/O and the
//! CTP phantom generator), so the trainer and the edge runtime read studies the same way.

#![forbid(unsafe_code)]

pub mod device;
pub mod model;

pub use device::{DeviceChoice, DeviceError};
