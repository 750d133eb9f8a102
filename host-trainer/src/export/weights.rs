//! The network's parameters as plain f32 arrays, checked against the [`UNetConfig`] they
//! must fit, and folded for inference: every BatchNorm is merged into the convolution before
//! it, so the exported graph is convolutions, ReLUs, adds, pools, transposed convolutions
//! and concats only.

use std::collections::BTreeMap;
use std::path::Path;

use strokeseg_model::sha256_hex;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::ExportError;
use crate::model::{BN_EPS, UNetConfig};

/// One parameter: its shape and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
struct Param {
    shape: Vec<i64>,
    values: Vec<f32>,
}

/// The raw parameters of a [`crate::model::ResUNet`], checked to be exactly the set its
/// config creates (names as in the model's `VarStore`, shapes as the config implies).
#[derive(Debug, Clone, PartialEq)]
pub struct UNetWeights {
    config: UNetConfig,
    params: BTreeMap<String, Param>,
}

/// Every parameter path a network of `config` has, with its shape (`model.rs` documents
/// the names).
pub fn parameter_shapes(config: &UNetConfig) -> Vec<(String, Vec<i64>)> {
    let mut out = Vec::new();
    let mut block = |prefix: &str, i: i64, o: i64| {
        let mut bn = |name: &str| {
            for field in ["weight", "bias", "running_mean", "running_var"] {
                out.push((format!("{prefix}.{name}.{field}"), vec![o]));
            }
        };
        bn("bn1");
        bn("bn2");
        if i != o {
            bn("proj_bn");
        }
        out.push((format!("{prefix}.conv1.weight"), vec![o, i, 3, 3]));
        out.push((format!("{prefix}.conv2.weight"), vec![o, o, 3, 3]));
        if i != o {
            out.push((format!("{prefix}.proj.weight"), vec![o, i, 1, 1]));
        }
    };
    for l in 0..=config.depth {
        let i = if l == 0 {
            config.in_channels
        } else {
            config.width(l - 1)
        };
        block(&format!("enc{l}"), i, config.width(l));
    }
    for l in 0..config.depth {
        block(&format!("dec{l}"), 2 * config.width(l), config.width(l));
    }
    for l in 0..config.depth {
        out.push((
            format!("up{l}.weight"),
            vec![config.width(l + 1), config.width(l), 2, 2],
        ));
        out.push((format!("up{l}.bias"), vec![config.width(l)]));
    }
    out.push((
        "head.weight".into(),
        vec![config.n_classes, config.width(0), 1, 1],
    ));
    out.push(("head.bias".into(), vec![config.n_classes]));
    out
}

fn check_config(config: &UNetConfig, context: &str) -> Result<(), ExportError> {
    let bad = |reason: String| ExportError::ConfigMismatch {
        context: context.to_owned(),
        reason,
    };
    if config.in_channels < 1 || config.n_classes < 2 || config.base_width < 1 {
        return Err(bad(format!(
            "network config needs in_channels ≥ 1, n_classes ≥ 2, base_width ≥ 1, got {config:?}"
        )));
    }
    if config.depth > 8
        || config
            .base_width
            .checked_shl(config.depth as u32 + 1)
            .is_none()
    {
        return Err(bad(format!("network depth {} is too large", config.depth)));
    }
    Ok(())
}

fn tensor_values(tensor: &Tensor, source_name: &str, name: &str) -> Result<Vec<f32>, ExportError> {
    let flat = tensor
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_view([-1]))
        .and_then(|t| Vec::<f32>::try_from(&t))
        .map_err(|source| ExportError::Torch {
            context: format!("{source_name}: reading parameter `{name}`"),
            source,
        })?;
    Ok(flat)
}

impl UNetWeights {
    /// The parameters of a live network (e.g. right after training). `vs` must hold
    /// exactly the variables `ResUNet::new(&vs.root(), config)` creates.
    pub fn from_var_store(vs: &VarStore, config: UNetConfig) -> Result<UNetWeights, ExportError> {
        let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        Self::from_named(named, config, "VarStore")
    }

    /// Reads a checkpoint written by `VarStore::save` to a `.safetensors` file, and
    /// returns the parameters with the file's SHA-256 (hex).
    pub fn from_checkpoint(
        path: &Path,
        config: UNetConfig,
    ) -> Result<(UNetWeights, String), ExportError> {
        if !path.is_file() {
            return Err(ExportError::MissingCheckpoint {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| ExportError::io(path, e))?;
        let sha256 = sha256_hex(&bytes);
        drop(bytes);
        let named = Tensor::read_safetensors(path).map_err(|e| ExportError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let weights = Self::from_named(named, config, &path.display().to_string())?;
        Ok((weights, sha256))
    }

    fn from_named(
        named: Vec<(String, Tensor)>,
        config: UNetConfig,
        source_name: &str,
    ) -> Result<UNetWeights, ExportError> {
        check_config(&config, source_name)?;
        let expected: BTreeMap<String, Vec<i64>> = parameter_shapes(&config).into_iter().collect();
        let mut params = BTreeMap::new();
        for (name, tensor) in named {
            let Some(shape) = expected.get(&name) else {
                return Err(ExportError::UnexpectedParameter {
                    source_name: source_name.to_owned(),
                    name,
                });
            };
            let got = tensor.size();
            if &got != shape {
                return Err(ExportError::ParameterShape {
                    source_name: source_name.to_owned(),
                    name,
                    expected: shape.clone(),
                    got,
                });
            }
            let values = tensor_values(&tensor, source_name, &name)?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(ExportError::NonFiniteParameter {
                    source_name: source_name.to_owned(),
                    name,
                });
            }
            params.insert(name, Param { shape: got, values });
        }
        if let Some(name) = expected.keys().find(|n| !params.contains_key(*n)) {
            return Err(ExportError::MissingParameter {
                source_name: source_name.to_owned(),
                name: name.clone(),
            });
        }
        Ok(UNetWeights { config, params })
    }

    /// The network config the parameters were checked against.
    pub fn config(&self) -> UNetConfig {
        self.config
    }

    fn get(&self, name: &str) -> &[f32] {
        // Every name asked for is in `parameter_shapes`, which `from_named` checked.
        self.params.get(name).map_or(&[], |p| p.values.as_slice())
    }

    /// The network with every BatchNorm folded into its convolution (eps [`BN_EPS`]).
    pub fn fold(&self) -> FoldedUNet {
        let c = self.config;
        let block = |prefix: &str, i: i64, o: i64| FoldedBlock {
            conv1: self.fold_conv(
                &format!("{prefix}.conv1"),
                &format!("{prefix}.bn1"),
                i,
                o,
                3,
            ),
            conv2: self.fold_conv(
                &format!("{prefix}.conv2"),
                &format!("{prefix}.bn2"),
                o,
                o,
                3,
            ),
            proj: (i != o).then(|| {
                self.fold_conv(
                    &format!("{prefix}.proj"),
                    &format!("{prefix}.proj_bn"),
                    i,
                    o,
                    1,
                )
            }),
        };
        let enc = (0..=c.depth)
            .map(|l| {
                let i = if l == 0 {
                    c.in_channels
                } else {
                    c.width(l - 1)
                };
                block(&format!("enc{l}"), i, c.width(l))
            })
            .collect();
        let dec = (0..c.depth)
            .map(|l| block(&format!("dec{l}"), 2 * c.width(l), c.width(l)))
            .collect();
        let up = (0..c.depth)
            .map(|l| UpConv {
                in_channels: c.width(l + 1),
                out_channels: c.width(l),
                weight: self.get(&format!("up{l}.weight")).to_vec(),
                bias: self.get(&format!("up{l}.bias")).to_vec(),
            })
            .collect();
        let head = Conv {
            in_channels: c.width(0),
            out_channels: c.n_classes,
            kernel: 1,
            weight: self.get("head.weight").to_vec(),
            bias: self.get("head.bias").to_vec(),
        };
        FoldedUNet {
            config: c,
            enc,
            up,
            dec,
            head,
        }
    }

    /// `conv` (no bias) followed by BatchNorm `bn` in eval mode, as one conv with bias:
    /// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`, computed in f64.
    fn fold_conv(&self, conv: &str, bn: &str, i: i64, o: i64, kernel: i64) -> Conv {
        let w = self.get(&format!("{conv}.weight"));
        let gamma = self.get(&format!("{bn}.weight"));
        let beta = self.get(&format!("{bn}.bias"));
        let mean = self.get(&format!("{bn}.running_mean"));
        let var = self.get(&format!("{bn}.running_var"));
        let per_out = (i * kernel * kernel) as usize;
        let mut weight = Vec::with_capacity(w.len());
        let mut bias = Vec::with_capacity(o as usize);
        for (oc, w_oc) in w.chunks_exact(per_out).enumerate() {
            let at = |v: &[f32]| f64::from(v.get(oc).copied().unwrap_or(0.0));
            let scale = at(gamma) / (at(var) + BN_EPS).sqrt();
            weight.extend(w_oc.iter().map(|&x| (f64::from(x) * scale) as f32));
            bias.push((at(beta) - at(mean) * scale) as f32);
        }
        Conv {
            in_channels: i,
            out_channels: o,
            kernel,
            weight,
            bias,
        }
    }
}

/// A 2D convolution with bias, stride 1, "same" padding (`kernel / 2`).
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// Input channels.
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
    /// Kernel size (square, odd).
    pub kernel: i64,
    /// `[out, in, k, k]`.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// A 2×2 stride-2 transposed convolution with bias.
#[derive(Debug, Clone, PartialEq)]
pub struct UpConv {
    /// Input channels.
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
    /// `[in, out, 2, 2]`.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// A residual block with its BatchNorms folded: `relu(conv2(relu(conv1(x))) + proj(x))`.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedBlock {
    /// 3×3, followed by ReLU.
    pub conv1: Conv,
    /// 3×3, added to the shortcut.
    pub conv2: Conv,
    /// 1×1 shortcut projection when the widths differ (else identity).
    pub proj: Option<Conv>,
}

/// The whole network, inference-ready.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedUNet {
    /// Its shape.
    pub config: UNetConfig,
    /// Encoder blocks, level 0 … depth.
    pub enc: Vec<FoldedBlock>,
    /// Up-convolutions by level (0 … depth − 1), from level l+1 to level l.
    pub up: Vec<UpConv>,
    /// Decoder blocks by level (0 … depth − 1).
    pub dec: Vec<FoldedBlock>,
    /// 1×1 classifier.
    pub head: Conv,
}

impl FoldedUNet {
    /// Multiply-accumulates of one forward pass on an `height × width` input (convolutions
    /// and transposed convolutions; adds, ReLUs and pools are not counted).
    pub fn macs_per_slice(&self, height: usize, width: usize) -> u64 {
        let conv = |c: &Conv, pixels: u64| {
            pixels * (c.out_channels * c.in_channels * c.kernel * c.kernel) as u64
        };
        let pixels = |level: usize| ((height >> level) * (width >> level)) as u64;
        let block = |b: &FoldedBlock, px: u64| {
            conv(&b.conv1, px) + conv(&b.conv2, px) + b.proj.as_ref().map_or(0, |p| conv(p, px))
        };
        let enc: u64 = self
            .enc
            .iter()
            .enumerate()
            .map(|(l, b)| block(b, pixels(l)))
            .sum();
        let dec: u64 = self
            .dec
            .iter()
            .enumerate()
            .map(|(l, b)| block(b, pixels(l)))
            .sum();
        let up: u64 = self
            .up
            .iter()
            .enumerate()
            .map(|(l, u)| pixels(l + 1) * (u.in_channels * u.out_channels * 4) as u64)
            .sum();
        enc + dec + up + conv(&self.head, pixels(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResUNet;

    #[test]
    fn parameter_table_matches_the_model() {
        let config = UNetConfig {
            in_channels: 5,
            n_classes: 2,
            base_width: 4,
            depth: 2,
        };
        let vs = VarStore::new(Device::Cpu);
        let _net = ResUNet::new(&vs.root(), config);
        let vars = vs.variables();
        let table = parameter_shapes(&config);
        assert_eq!(table.len(), vars.len());
        for (name, shape) in &table {
            let got = vars.get(name).map(Tensor::size);
            assert_eq!(got.as_ref(), Some(shape), "{name}");
        }
    }

    #[test]
    fn wrong_config_names_the_parameter() {
        let config = UNetConfig {
            in_channels: 5,
            n_classes: 2,
            base_width: 4,
            depth: 1,
        };
        let vs = VarStore::new(Device::Cpu);
        let _net = ResUNet::new(&vs.root(), config);
        let wider = UNetConfig {
            base_width: 8,
            ..config
        };
        let err = UNetWeights::from_var_store(&vs, wider).err();
        assert!(
            matches!(err, Some(ExportError::ParameterShape { .. })),
            "{err:?}"
        );
        let deeper = UNetConfig { depth: 2, ..config };
        let err = UNetWeights::from_var_store(&vs, deeper).err();
        assert!(
            matches!(err, Some(ExportError::MissingParameter { .. })),
            "{err:?}"
        );
    }
}
