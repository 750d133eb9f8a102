//! strokeseg-shared: the code that the trainer and the edge runtime must agree on.
//!
//! The core is `#![no_std]` and allocation-free: preprocessing (per-volume statistics,
//! brain mask, normalisation, resampling and its inverse), metrics and postprocessing all
//! work into caller-provided buffers, so the same code runs on the training host, the ARM
//! edge box and a Cortex-M test firmware. NIfTI study I/O (`strokeseg-io`), the synthetic
//! CTP phantom (`strokeseg-phantom`) and dataset evaluation (`strokeseg-eval`) are crates of
//! their own beside this one, so each binary compiles only what it uses.
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod brain_mask;
pub mod config;
pub mod error;
pub mod metrics;
pub mod modality;
pub mod perfusion;
pub mod perfusion_rule;
pub mod postprocess;
pub mod preprocess;
pub mod rng;
pub mod stats;

#[cfg(all(feature = "alloc", feature = "serde"))]
pub mod model_meta;
#[cfg(feature = "alloc")]
pub mod surface;

pub use config::PreprocessConfig;
pub use error::CoreError;
pub use modality::Modality;
