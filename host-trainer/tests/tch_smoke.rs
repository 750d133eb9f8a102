//! tch smoke test: libtorch links, loads and trains. A tiny conv net learns a per-pixel mask on
//! a fixed seed; each body runs on the CPU always and on CUDA device 0 when libtorch sees one.

use std::sync::{Mutex, PoisonError};

use strokeseg_trainer::DeviceChoice;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

const SEED: i64 = 1234;
const N_STEPS: usize = 30;

/// libtorch's default generator is process-global and the tests run on parallel threads: a run
/// that seeds it and then draws from it holds this lock, or another test's draws interleave.
static GLOBAL_RNG: Mutex<()> = Mutex::new(());

/// The CPU, plus the first CUDA device when there is one.
fn devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    devices
}

/// A two-layer conv net `[N, 1, H, W] -> [N, 1, H, W]` (logits).
fn tiny_net(root: &nn::Path) -> nn::Sequential {
    let same = nn::ConvConfig {
        padding: 1,
        ..Default::default()
    };
    nn::seq()
        .add(nn::conv2d(root / "conv1", 1, 8, 3, same))
        .add_fn(|x| x.relu())
        .add(nn::conv2d(root / "conv2", 8, 1, 1, Default::default()))
}

/// Trains the tiny net for [`N_STEPS`] Adam steps from `SEED`; returns the loss before each step.
fn train_losses(device: Device) -> Result<Vec<f64>, tch::TchError> {
    let _rng = GLOBAL_RNG.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(SEED);
    let vs = nn::VarStore::new(device);
    let net = tiny_net(&vs.root());
    let mut optimizer = nn::Adam::default().build(&vs, 1e-2)?;
    // A "lesion" is every pixel brighter than 0.5: learnable by a 3x3 conv and a threshold.
    let images = Tensor::randn([8, 1, 16, 16], (Kind::Float, device));
    let masks = images.gt(0.5).to_kind(Kind::Float);

    let mut losses = Vec::with_capacity(N_STEPS);
    for _ in 0..N_STEPS {
        let logits = net.forward(&images);
        assert_eq!(logits.size(), images.size(), "net must keep [N, 1, H, W]");
        let loss =
            logits.binary_cross_entropy_with_logits::<Tensor>(&masks, None, None, Reduction::Mean);
        losses.push(f64::try_from(&loss)?);
        optimizer.zero_grad();
        loss.backward();
        for (name, var) in vs.variables() {
            let grad_norm = f64::try_from(var.grad().norm())?;
            assert!(
                grad_norm.is_finite() && grad_norm > 0.0,
                "{device:?}: gradient of {name} has norm {grad_norm}"
            );
        }
        optimizer.step();
    }
    Ok(losses)
}

#[test]
fn tiny_conv_net_learns_on_every_device() -> Result<(), tch::TchError> {
    for device in devices() {
        let losses = train_losses(device)?;
        let first = losses.first().copied().unwrap_or(f64::NAN);
        let last = losses.last().copied().unwrap_or(f64::NAN);
        assert!(
            losses.iter().all(|loss| loss.is_finite()),
            "{device:?}: non-finite loss in {losses:?}"
        );
        assert!(
            last < 0.7 * first,
            "{device:?}: loss went from {first} to {last} in {N_STEPS} steps, expected a drop of 30 % or more: {losses:?}"
        );
    }
    Ok(())
}

#[test]
fn same_seed_gives_same_losses_on_cpu() -> Result<(), tch::TchError> {
    let a = train_losses(Device::Cpu)?;
    let b = train_losses(Device::Cpu)?;
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "step {step}: {x} vs {y} with the same seed"
        );
    }
    Ok(())
}

#[test]
fn cuda_queries_are_callable() {
    let available = tch::Cuda::is_available();
    let n_devices = tch::Cuda::device_count();
    assert!(n_devices >= 0, "device_count {n_devices}");
    if !available {
        // A CPU-only libtorch must refuse cuda:N, not crash later.
        assert!(DeviceChoice::Cuda { ordinal: 0 }.resolve().is_err());
    }
    assert_eq!(
        DeviceChoice::Auto.resolve().ok(),
        Some(if available {
            Device::Cuda(0)
        } else {
            Device::Cpu
        })
    );
}
