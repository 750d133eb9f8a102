//! strokeseg-edge: the runtime on the ARM box beside the CT scanner.
//!
//! It reads a CTP study slice by slice through `strokeseg-shared` (the same reader and
//! preprocessing the trainer uses), runs the ONNX model with tract, and writes the lesion
//! mask, a report and an overlay, in memory bounded by a few slices. It never links
//! libtorch.
//!
//! - [`model`]: loading and validating a model (metadata contract, shapes), the embedded
//!   default model;
//! - [`segmenter`]: one model or an ensemble with flip test-time augmentation, averaging
//!   lesion probabilities slice by slice;
//! - [`segment`]: the two-pass, slice-by-slice pipeline and atomic publication of outputs;
//! - [`perfusion`]: the maps provided with a study or computed from its raw series;
//! - [`report`], [`overlay`]: `report.json`, `overlay.png` and the AIF/VOF plot;
//! - [`status`]: busy/done/alert/fault pins over `embedded_hal::digital::OutputPin`;
//! - [`watch`], [`config`]: the inbox daemon and its config file;
//! - [`threads`]: how many threads tract runs the model on;
//! - [`bench`]: `bench`, a model's latency, FLOPs and kernels;
//! - [`serve`]: the DICOM node (receive, segment through `watch`'s queue, send results);
//! - [`evaluate`], [`demo`], [`inspect`]: the other commands;
//! - [`fixture`]: small ONNX models made in code for tests and benchmarks.
#![forbid(unsafe_code)]

pub mod bench;
pub mod config;
pub mod demo;
pub mod error;
pub mod evaluate;
pub mod inspect;
pub mod model;
pub mod overlay;
pub mod perfusion;
pub mod report;
pub mod segment;
pub mod segmenter;
pub mod serve;
pub mod status;
pub mod threads;
pub mod watch;

pub use error::{EdgeError, ModelError};
