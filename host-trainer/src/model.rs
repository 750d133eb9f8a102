//! The residual 2D U-Net (tch): its configuration, its parameter names, its forward pass, and
//! its constructors (seeded initial weights, weights from a checkpoint file). The ONNX
//! exporter walks the same configuration and names, so the two can only change together.
//!
//! # Architecture (input `[N, C, H, W]`, output logits `[N, n_classes, H, W]`)
//!
//! With `w = base_width` and `d = depth` (H and W must be multiples of `2^d`):
//!
//! ```text
//! enc0 = ResBlock(C → w)                                        at H×W
//! enc l = ResBlock(w·2^(l−1) → w·2^l) after MaxPool 2×2, l = 1…d
//! dec l = ResBlock(2·w·2^l → w·2^l) on concat[ up l (ConvT 2×2/2: w·2^(l+1) → w·2^l), enc l ]
//!         for l = d−1 … 0
//! head  = Conv 1×1 (w → n_classes, bias)
//! ResBlock(i → o) = ReLU( BN(Conv3×3(ReLU(BN(Conv3×3(x))))) + shortcut(x) ),
//!         shortcut = x if i = o, else BN(Conv1×1(x))
//! ```
//!
//! Convolutions before a BatchNorm have no bias (the exporter folds BN into them).
//! BatchNorm uses eps = [`BN_EPS`] and momentum 0.1.
//!
//! # Parameter names (tch `VarStore` paths, `.`-separated)
//!
//! `enc{l}.conv1.weight`, `enc{l}.bn1.{weight,bias,running_mean,running_var}`,
//! `enc{l}.conv2.weight`, `enc{l}.bn2.*`, and when the widths differ
//! `enc{l}.proj.weight`, `enc{l}.proj_bn.*`; the same under `dec{l}`;
//! `up{l}.weight` (`[w·2^(l+1), w·2^l, 2, 2]`), `up{l}.bias`; `head.weight`, `head.bias`.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, VarStore};
use tch::{Device, Tensor};

use crate::error::TrainError;
use crate::rng::{Rng, stream};

/// BatchNorm epsilon (PyTorch's default); the exporter folds with the same value.
pub const BN_EPS: f64 = 1e-5;

/// Shape of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Input channels (the preprocessing config's channel count).
    pub in_channels: i64,
    /// Output classes (2: background, lesion).
    pub n_classes: i64,
    /// Channels of the first level; level l has `base_width · 2^l`.
    pub base_width: i64,
    /// Number of 2× downsamplings.
    pub depth: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            in_channels: 5,
            n_classes: 2,
            base_width: 16,
            depth: 4,
        }
    }
}

impl UNetConfig {
    /// Channels at level `l`.
    pub fn width(&self, level: usize) -> i64 {
        self.base_width << level
    }
    /// The multiple that H and W must be of.
    pub fn size_multiple(&self) -> i64 {
        1 << self.depth
    }
}

/// `conv → BN → ReLU → conv → BN (+ shortcut) → ReLU`.
#[derive(Debug)]
pub struct ResBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    proj: Option<(nn::Conv2D, nn::BatchNorm)>,
}

fn bn(vs: nn::Path<'_>, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        vs,
        c,
        nn::BatchNormConfig {
            eps: BN_EPS,
            momentum: 0.1,
            ..Default::default()
        },
    )
}

fn conv(vs: nn::Path<'_>, i: i64, o: i64, k: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        i,
        o,
        k,
        nn::ConvConfig {
            padding: k / 2,
            bias: false,
            ..Default::default()
        },
    )
}

impl ResBlock {
    /// A block from `i` to `o` channels under `vs`.
    pub fn new(vs: nn::Path<'_>, i: i64, o: i64) -> ResBlock {
        ResBlock {
            conv1: conv(&vs / "conv1", i, o, 3),
            bn1: bn(&vs / "bn1", o),
            conv2: conv(&vs / "conv2", o, o, 3),
            bn2: bn(&vs / "bn2", o),
            proj: (i != o).then(|| (conv(&vs / "proj", i, o, 1), bn(&vs / "proj_bn", o))),
        }
    }
}

impl ModuleT for ResBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        let skip = match &self.proj {
            Some((c, b)) => xs.apply(c).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        (h + skip).relu()
    }
}

/// The residual U-Net.
#[derive(Debug)]
pub struct ResUNet {
    config: UNetConfig,
    enc: Vec<ResBlock>,
    up: Vec<nn::ConvTranspose2D>,
    dec: Vec<ResBlock>,
    head: nn::Conv2D,
}

impl ResUNet {
    /// Creates the network's variables under `vs` (randomly initialised).
    pub fn new(vs: &nn::Path<'_>, config: UNetConfig) -> ResUNet {
        let d = config.depth;
        let enc = (0..=d)
            .map(|l| {
                let i = if l == 0 {
                    config.in_channels
                } else {
                    config.width(l - 1)
                };
                ResBlock::new(vs / format!("enc{l}"), i, config.width(l))
            })
            .collect();
        let up = (0..d)
            .map(|l| {
                nn::conv_transpose2d(
                    vs / format!("up{l}"),
                    config.width(l + 1),
                    config.width(l),
                    2,
                    nn::ConvTransposeConfig {
                        stride: 2,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let dec = (0..d)
            .map(|l| ResBlock::new(vs / format!("dec{l}"), 2 * config.width(l), config.width(l)))
            .collect();
        let head = nn::conv2d(
            vs / "head",
            config.width(0),
            config.n_classes,
            1,
            Default::default(),
        );
        ResUNet {
            config,
            enc,
            up,
            dec,
            head,
        }
    }

    /// The configuration.
    pub fn config(&self) -> UNetConfig {
        self.config
    }
}

impl ModuleT for ResUNet {
    /// `[N, C, H, W]` → logits `[N, n_classes, H, W]`; H, W multiples of `2^depth`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut skips = Vec::with_capacity(self.enc.len());
        let mut h = xs.shallow_clone();
        for (l, block) in self.enc.iter().enumerate() {
            if l > 0 {
                h = h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            }
            h = block.forward_t(&h, train);
            skips.push(h.shallow_clone());
        }
        for l in (0..self.config.depth).rev() {
            let (Some(up), Some(dec), Some(skip)) = (self.up.get(l), self.dec.get(l), skips.get(l))
            else {
                break;
            };
            let u = h.apply(up);
            h = dec.forward_t(&Tensor::cat(&[u, skip.shallow_clone()], 1), train);
        }
        h.apply(&self.head)
    }
}

/// libtorch's default generator is process-global: seeding it and drawing the initial weights
/// happen under this lock, so parallel runs (tests) cannot interleave their draws.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// A fresh network on `device` with weights initialised from `seed` (the same seed gives the
/// same weights). Returns the variable store that owns them and the network.
pub fn new_model(config: UNetConfig, device: Device, seed: u64) -> (VarStore, ResUNet) {
    let _lock = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let init_seed = Rng::stream(seed, &[stream::INIT]).next_u64() >> 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_names() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = UNetConfig {
            in_channels: 5,
            n_classes: 2,
            base_width: 4,
            depth: 2,
        };
        let net = ResUNet::new(&vs.root(), cfg);
        let x = Tensor::randn([2, 5, 16, 16], (tch::Kind::Float, tch::Device::Cpu));
        let y = net.forward_t(&x, false);
        assert_eq!(y.size(), [2, 2, 16, 16]);
        let names = vs.variables();
        for n in [
            "enc0.conv1.weight",
            "enc0.proj.weight",
            "enc0.proj_bn.running_var",
            "enc2.bn2.bias",
            "up1.weight",
            "up0.bias",
            "dec0.conv2.weight",
            "dec1.proj.weight",
            "head.bias",
        ] {
            assert!(names.contains_key(n), "missing {n}: {:?}", names.keys());
        }
        assert!(
            !names.contains_key("enc0.conv1.bias"),
            "convs before BN have no bias"
        );
        assert_eq!(names["up1.weight"].size(), [16, 8, 2, 2]);
    }
}
