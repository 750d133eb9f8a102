//! Building the network with seeded weights and loading it from a checkpoint of a run folder.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use tch::Device;
use tch::nn::VarStore;

use crate::error::TrainError;
use crate::model::{ResUNet, UNetConfig};
use crate::rng::{Rng, stream};
use crate::run::{RunConfig, RunPaths};

/// libtorch's default generator is process-global: seeding it and drawing the initial weights
/// happen under this lock, so parallel runs (tests) cannot interleave their draws.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// A fresh network on `device` with weights initialised from `seed` (the same seed gives the
/// same weights). Returns the variable store that owns them and the network.
pub fn new_model(config: UNetConfig, device: Device, seed: u64) -> (VarStore, ResUNet) {
    let _lock = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let init_seed = Rng::derive(seed, &[stream::INIT]).next_u64() >> 1;
    tch::manual_seed(init_seed as i64);
    let vs = VarStore::new(device);
    let net = ResUNet::new(&vs.root(), config);
    (vs, net)
}

/// The network of `config` on `device` with the weights of `checkpoint` (a `.safetensors` file
/// written by the trainer). Every variable must be present with its shape.
pub fn load_checkpoint(
    checkpoint: &Path,
    config: UNetConfig,
    device: Device,
) -> Result<(VarStore, ResUNet), TrainError> {
    if !checkpoint.is_file() {
        return Err(TrainError::RunFolder {
            path: checkpoint.to_path_buf(),
            reason: "checkpoint not found".into(),
        });
    }
    let (mut vs, net) = new_model(config, device, 0);
    vs.load(checkpoint).map_err(|e| TrainError::RunFolder {
        path: checkpoint.to_path_buf(),
        reason: format!("cannot load into a {config:?} network: {e}"),
    })?;
    Ok((vs, net))
}

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
