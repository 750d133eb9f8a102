//! strokeseg-trainer: training the lesion segmenter on the host with tch (libtorch).
//!
//! The binary `strokeseg-train` is the entry point; this library holds what its subcommands and
//! the integration tests share. Datasets come from `strokeseg_io` (NIfTI study I/O) and
//! `strokeseg_phantom` (the CTP phantom generator), so the trainer and the edge runtime read
//! studies the same way.
//!
//! Code map: [`run`] (the run folder contract: configuration, paths, split, evaluation
//! records; the bottom of the dependency graph), [`model`] (the residual U-Net and its
//! constructors), [`data`] (loading, patient-grouped folds, lesion oversampling), [`loss`],
//! [`augment`], [`schedule`] (learning rate, optimisers, clipping), [`eval`] (case-level
//! validation through the shared postprocessing and metrics), [`train`] (the loop, starting
//! or resuming a run, its logs and curves), [`checkpoint`] (a run folder's network), [`cv`]
//! (cross-validation: one fold, the fold loop, the merge into its summary), [`sweep`] (grids
//! of settings, the job array index ↔ (setting, fold) mapping, the sweep table), [`cluster`]
//! (SLURM job array scripts and Kubernetes Indexed Job manifests), [`export`] (ONNX).
//!
//! Dependencies point one way, from the top down: `cv` → `train` → `eval` → `run` and
//! `data` → the configuration modules (`model`, `loss`, `schedule`, `augment`) → `rng`,
//! `error`; `checkpoint` and `export` read the run folder through `run` and `model`.

#![forbid(unsafe_code)]

pub mod augment;
pub mod checkpoint;
pub mod cluster;
pub mod cv;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod loss;
pub mod model;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod sweep;
pub mod train;

pub use device::{DeviceChoice, DeviceError};
pub use error::TrainError;
pub use run::RunConfig;
