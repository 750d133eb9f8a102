//! strokeseg-trainer: training the lesion segmenter on the host with tch (libtorch).
//!
//! The binary `strokeseg-train` is the entry point; this library holds what its subcommands and
//! the integration tests share. Datasets come from `strokeseg_shared` (NIfTI study I/O and the
//! CTP phantom generator), so the trainer and the edge runtime read studies the same way.
//!
//! Code map: [`data`] (loading, patient-grouped folds, lesion oversampling), [`loss`],
//! [`augment`], [`schedule`] (learning rate, optimisers, clipping), [`train`] (the loop),
//! [`eval`] (case-level validation through the shared postprocessing and metrics), [`run`]
//! (the run folder contract the exporter reads), [`checkpoint`], [`cv`], [`plot`], [`model`]
//! (the residual U-Net), [`export`] (ONNX).

#![forbid(unsafe_code)]

pub mod augment;
pub mod checkpoint;
pub mod cv;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod loss;
pub mod model;
pub mod plot;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod train;

pub use device::{DeviceChoice, DeviceError};
pub use error::TrainError;
pub use run::RunConfig;
