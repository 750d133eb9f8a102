//! Loading the network of a run folder from one of its checkpoints (the folder contract is
//! [`crate::run`]; the network and its constructors are [`crate::model`]).

use std::path::Path;

use tch::Device;
use tch::nn::VarStore;

use crate::error::TrainError;
use crate::model::{ResUNet, load_checkpoint};
use crate::run::{RunConfig, RunPaths};

/// Which checkpoint of a run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `checkpoints/best.safetensors`.
    Best,
    /// `checkpoints/last.safetensors`.
    Last,
}

/// The run's configuration and its network with the `which` checkpoint's weights, on `device`.
pub fn load_model(
    run_dir: &Path,
    which: Which,
    device: Device,
) -> Result<(RunConfig, VarStore, ResUNet), TrainError> {
    let run = RunConfig::load(run_dir)?;
    let paths = RunPaths::new(run_dir);
    let path = match which {
        Which::Best => paths.best_checkpoint(),
        Which::Last => paths.last_checkpoint(),
    };
    let (vs, net) = load_checkpoint(&path, run.unet, device)?;
    Ok((run, vs, net))
}
