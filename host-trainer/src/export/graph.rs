//! The ResUNet as ONNX graphs: one walk over the folded network ([`walk`]) drives two
//! emitters, fp32 ([`Fp32Emitter`]) and int8 ([`Int8Emitter`]).
//!
//! # Tensor names (fp32 graph; calibration ranges are keyed by them)
//!
//! Block `P` (`enc{l}`, `dec{l}`): `P/conv1`, `P/relu1`, `P/conv2`, `P/proj` (when the
//! widths differ), `P/add`, `P/out`; `enc{l}/pool` (l ≥ 1), `up{l}/out`, `dec{l}/cat`; the
//! graph input and the logits output carry the names in the metadata.
//!
//! # int8 form (QOperator, see ARCHITECTURE.md "Model export")
//!
//! Activations are per-tensor asymmetric u8, weights per-tensor symmetric i8 (one scale
//! per convolution, zero point 0), biases i32 at scale `x_scale · w_scale`. One weight scale
//! is what lets tract fuse the requantisation (scale, zero point, clamp, cast) into its
//! int8 matrix kernel; per-channel scales ran as four separate passes over the i32 results
//! (half of the int8 plan's time) at the same mask agreement (BENCHMARKS.md). Every 3×3 and 1×1 convolution of the blocks
//! is a `QLinearConv` (tract runs its integer kernels for it); the first ReLU is fused by
//! quantising the conv output with zero point 0 (saturation at 0 is the ReLU), the block's
//! residual add runs in f32 between `DequantizeLinear` and `QuantizeLinear` (zero point 0
//! again does the final ReLU), max pooling runs on u8 (monotone, so exact), the 2×2
//! up-convolutions and the 1×1 head stay f32 (tract has no quantized `ConvTranspose`; the
//! head's 2 output channels are a negligible cost and f32 logits keep the class margin),
//! and the decoder concat runs in f32 and is quantised once after it.

use std::collections::HashMap;

use super::ExportError;
use super::onnx::{Attr, GraphBuilder};
use super::weights::{Conv, FoldedBlock, FoldedUNet, UpConv};

/// What the walk asks of an emitter; each method returns the name of the tensor it made.
pub(crate) trait Emit {
    /// The graph input → the tensor the first block reads.
    fn input(&mut self, g: &mut GraphBuilder, input: &str) -> Result<String, ExportError>;
    /// A residual block under `prefix`.
    fn block(
        &mut self,
        g: &mut GraphBuilder,
        prefix: &str,
        block: &FoldedBlock,
        x: &str,
    ) -> Result<String, ExportError>;
    /// 2×2 max pooling before encoder level `level`.
    fn pool(&mut self, g: &mut GraphBuilder, level: usize, x: &str) -> Result<String, ExportError>;
    /// Up-convolution into decoder level `level`.
    fn up(
        &mut self,
        g: &mut GraphBuilder,
        level: usize,
        up: &UpConv,
        x: &str,
    ) -> Result<String, ExportError>;
    /// Concatenation `[up, skip]` on the channel axis at decoder level `level`.
    fn concat(
        &mut self,
        g: &mut GraphBuilder,
        level: usize,
        up: &str,
        skip: &str,
    ) -> Result<String, ExportError>;
    /// The classifier, writing the graph output `output`.
    fn head(
        &mut self,
        g: &mut GraphBuilder,
        head: &Conv,
        x: &str,
        output: &str,
    ) -> Result<(), ExportError>;
}

/// Emits the whole network from graph input `input` to graph output `output`.
pub(crate) fn walk(
    net: &FoldedUNet,
    emitter: &mut impl Emit,
    g: &mut GraphBuilder,
    input: &str,
    output: &str,
) -> Result<(), ExportError> {
    let mut skips = Vec::with_capacity(net.enc.len());
    let mut h = emitter.input(g, input)?;
    for (l, block) in net.enc.iter().enumerate() {
        if l > 0 {
            h = emitter.pool(g, l, &h)?;
        }
        h = emitter.block(g, &format!("enc{l}"), block, &h)?;
        skips.push(h.clone());
    }
    for l in (0..net.config.depth).rev() {
        let (Some(up), Some(dec), Some(skip)) = (net.up.get(l), net.dec.get(l), skips.get(l))
        else {
            break;
        };
        let u = emitter.up(g, l, up, &h)?;
        let cat = emitter.concat(g, l, &u, skip)?;
        h = emitter.block(g, &format!("dec{l}"), dec, &cat)?;
    }
    emitter.head(g, &net.head, &h, output)
}

fn conv_attrs(kernel: i64) -> Vec<Attr> {
    let pad = kernel / 2;
    vec![
        Attr::Ints("kernel_shape", vec![kernel, kernel]),
        Attr::Ints("pads", vec![pad, pad, pad, pad]),
        Attr::Ints("strides", vec![1, 1]),
    ]
}

fn pool_attrs() -> Vec<Attr> {
    vec![
        Attr::Ints("kernel_shape", vec![2, 2]),
        Attr::Ints("strides", vec![2, 2]),
    ]
}

fn conv_weight_dims(conv: &Conv) -> [i64; 4] {
    [
        conv.out_channels,
        conv.in_channels,
        conv.kernel,
        conv.kernel,
    ]
}

/// f32 conv node with its initializers.
fn conv_f32(g: &mut GraphBuilder, name: &str, conv: &Conv, x: &str) -> String {
    let w = g.f32s(
        &format!("{name}/weight"),
        &conv_weight_dims(conv),
        &conv.weight,
    );
    let b = g.f32s(&format!("{name}/bias"), &[conv.out_channels], &conv.bias);
    g.node("Conv", &[x, &w, &b], name, conv_attrs(conv.kernel))
}

/// f32 transposed conv node (2×2, stride 2) with its initializers.
fn up_f32(g: &mut GraphBuilder, level: usize, up: &UpConv, x: &str) -> String {
    let name = format!("up{level}/out");
    let w = g.f32s(
        &format!("up{level}/weight"),
        &[up.in_channels, up.out_channels, 2, 2],
        &up.weight,
    );
    let b = g.f32s(&format!("up{level}/bias"), &[up.out_channels], &up.bias);
    g.node("ConvTranspose", &[x, &w, &b], &name, pool_attrs())
}

/// The plain fp32 network (BatchNorm already folded).
#[derive(Debug, Default)]
pub(crate) struct Fp32Emitter;

impl Emit for Fp32Emitter {
    fn input(&mut self, _g: &mut GraphBuilder, input: &str) -> Result<String, ExportError> {
        Ok(input.to_owned())
    }

    fn block(
        &mut self,
        g: &mut GraphBuilder,
        p: &str,
        block: &FoldedBlock,
        x: &str,
    ) -> Result<String, ExportError> {
        let c1 = conv_f32(g, &format!("{p}/conv1"), &block.conv1, x);
        let r1 = g.node("Relu", &[&c1], &format!("{p}/relu1"), vec![]);
        let c2 = conv_f32(g, &format!("{p}/conv2"), &block.conv2, &r1);
        let skip = match &block.proj {
            Some(proj) => conv_f32(g, &format!("{p}/proj"), proj, x),
            None => x.to_owned(),
        };
        let add = g.node("Add", &[&c2, &skip], &format!("{p}/add"), vec![]);
        Ok(g.node("Relu", &[&add], &format!("{p}/out"), vec![]))
    }

    fn pool(&mut self, g: &mut GraphBuilder, level: usize, x: &str) -> Result<String, ExportError> {
        Ok(g.node("MaxPool", &[x], &format!("enc{level}/pool"), pool_attrs()))
    }

    fn up(
        &mut self,
        g: &mut GraphBuilder,
        level: usize,
        up: &UpConv,
        x: &str,
    ) -> Result<String, ExportError> {
        Ok(up_f32(g, level, up, x))
    }

    fn concat(
        &mut self,
        g: &mut GraphBuilder,
        level: usize,
        up: &str,
        skip: &str,
    ) -> Result<String, ExportError> {
        Ok(g.node(
            "Concat",
            &[up, skip],
            &format!("dec{level}/cat"),
            vec![Attr::Int("axis", 1)],
        ))
    }

    fn head(
        &mut self,
        g: &mut GraphBuilder,
        head: &Conv,
        x: &str,
        output: &str,
    ) -> Result<(), ExportError> {
        let w = g.f32s("head/weight", &conv_weight_dims(head), &head.weight);
        let b = g.f32s("head/bias", &[head.out_channels], &head.bias);
        g.node("Conv", &[x, &w, &b], output, conv_attrs(head.kernel));
        Ok(())
    }
}

/// Observed value range of one fp32 tensor over the calibration slices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
}

/// How an activation's quantisation range is chosen from the calibration values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RangeRule {
    /// Smallest to largest value seen: nothing is clipped, but one outlier widens the step
    /// for every other value.
    #[default]
    MinMax,
    /// The central `percent` % of the values seen (e.g. 99.99: the 0.005 % at each end are
    /// clipped), from a 4,096-bin histogram per tensor; zero stays inside the range.
    Percentile {
        /// Share of the values kept, % (in (50, 100]).
        percent: f32,
    },
}

/// Per-tensor u8 activation quantisation: `real = scale · (q − zero_point)`.
///
/// u8 with a free zero point, not symmetric i8: a ReLU output's range `[0, max]` gets zero
/// point 0, so saturation at 0 *is* the ReLU and the graph needs no ReLU node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QParams {
    pub scale: f32,
    pub zero_point: u8,
}

impl QParams {
    /// Asymmetric u8 parameters covering `range` (widened to contain 0, so zero is exact).
    pub fn for_range(range: Range) -> QParams {
        let min = range.min.min(0.0);
        let max = range.max.max(0.0);
        let span = max - min;
        if !(span.is_finite() && span > f32::MIN_POSITIVE * 255.0) {
            return QParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = span / 255.0;
        let zero_point = (-min / scale).round().clamp(0.0, 255.0) as u8;
        QParams { scale, zero_point }
    }
}

/// Per-tensor symmetric i8 weights (one scale for the whole convolution) and the i32 bias
/// at `x_scale · w_scale`.
struct QuantConv {
    weight: Vec<i8>,
    w_scale: f32,
    bias: Vec<i32>,
}

fn quantize_conv(conv: &Conv, x_scale: f32) -> QuantConv {
    let max_abs = conv.weight.iter().fold(0f32, |m, w| m.max(w.abs()));
    let w_scale = if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 };
    let weight = conv
        .weight
        .iter()
        .map(|w| (w / w_scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    let bias_scale = f64::from(x_scale) * f64::from(w_scale);
    let bias = conv
        .bias
        .iter()
        .map(|&b| {
            let q = (f64::from(b) / bias_scale).round();
            q.clamp(f64::from(i32::MIN + 1), f64::from(i32::MAX)) as i32
        })
        .collect();
    QuantConv {
        weight,
        w_scale,
        bias,
    }
}

/// The int8 network (QOperator form); `ranges` come from calibrating the fp32 graph and
/// are keyed by its tensor names.
pub(crate) struct Int8Emitter<'a> {
    ranges: &'a HashMap<String, Range>,
    /// Quantisation of each u8 tensor emitted so far.
    qparams: HashMap<String, QParams>,
}

impl<'a> Int8Emitter<'a> {
    pub fn new(ranges: &'a HashMap<String, Range>) -> Self {
        Int8Emitter {
            ranges,
            qparams: HashMap::new(),
        }
    }

    /// Quantisation for the calibrated range of fp32 tensor `fp32_name`.
    fn qparams_for(&self, fp32_name: &str) -> Result<QParams, ExportError> {
        let range = self.ranges.get(fp32_name).copied().ok_or_else(|| {
            ExportError::Calibration(format!("no calibration range for tensor `{fp32_name}`"))
        })?;
        Ok(QParams::for_range(range))
    }

    fn q(&self, name: &str) -> Result<QParams, ExportError> {
        self.qparams.get(name).copied().ok_or_else(|| {
            ExportError::Calibration(format!("tensor `{name}` has no quantisation parameters"))
        })
    }

    /// Scale and zero-point initializers of quantised tensor `name`.
    fn qparam_inits(g: &mut GraphBuilder, name: &str, q: QParams) -> (String, String) {
        (
            g.f32s(&format!("{name}/scale"), &[], &[q.scale]),
            g.u8s(&format!("{name}/zero_point"), &[], &[q.zero_point]),
        )
    }

    fn quantize(&mut self, g: &mut GraphBuilder, x: &str, out: &str, q: QParams) -> String {
        let (s, z) = Self::qparam_inits(g, out, q);
        self.qparams.insert(out.to_owned(), q);
        g.node("QuantizeLinear", &[x, &s, &z], out, vec![])
    }

    fn dequantize(
        &self,
        g: &mut GraphBuilder,
        x_q: &str,
        out: &str,
    ) -> Result<String, ExportError> {
        let q = self.q(x_q)?;
        let (s, z) = Self::qparam_inits(g, x_q, q);
        Ok(g.node("DequantizeLinear", &[x_q, &s, &z], out, vec![]))
    }

    /// `QLinearConv` of u8 `x_q` writing u8 `out` with parameters `y`.
    fn qconv(
        &mut self,
        g: &mut GraphBuilder,
        name: &str,
        conv: &Conv,
        x_q: &str,
        y: QParams,
    ) -> Result<String, ExportError> {
        let x = self.q(x_q)?;
        let qc = quantize_conv(conv, x.scale);
        let (xs, xz) = Self::qparam_inits(g, x_q, x);
        let w = g.i8s(
            &format!("{name}/weight_q"),
            &conv_weight_dims(conv),
            &qc.weight,
        );
        let ws = g.f32s(&format!("{name}/weight_scale"), &[], &[qc.w_scale]);
        // One scalar zero point (symmetric weights): tract then drops the weight-zero-point
        // compensation instead of computing activation sums for it; one scalar scale: tract
        // fuses the requantisation into the matrix kernel.
        let wz = g.i8s(&format!("{name}/weight_zero_point"), &[], &[0]);
        let (ys, yz) = Self::qparam_inits(g, name, y);
        let b = g.i32s(&format!("{name}/bias_q"), &[conv.out_channels], &qc.bias);
        self.qparams.insert(name.to_owned(), y);
        Ok(g.node(
            "QLinearConv",
            &[x_q, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b],
            name,
            conv_attrs(conv.kernel),
        ))
    }
}

impl Emit for Int8Emitter<'_> {
    fn input(&mut self, g: &mut GraphBuilder, input: &str) -> Result<String, ExportError> {
        let q = self.qparams_for(input)?;
        Ok(self.quantize(g, input, "input/q", q))
    }

    fn block(
        &mut self,
        g: &mut GraphBuilder,
        p: &str,
        block: &FoldedBlock,
        x_q: &str,
    ) -> Result<String, ExportError> {
        let relu1 = self.qparams_for(&format!("{p}/relu1"))?;
        let r1 = self.qconv(g, &format!("{p}/relu1/q"), &block.conv1, x_q, relu1)?;
        let conv2 = self.qparams_for(&format!("{p}/conv2"))?;
        let c2 = self.qconv(g, &format!("{p}/conv2/q"), &block.conv2, &r1, conv2)?;
        let skip_q = match &block.proj {
            Some(proj) => {
                let y = self.qparams_for(&format!("{p}/proj"))?;
                self.qconv(g, &format!("{p}/proj/q"), proj, x_q, y)?
            }
            None => x_q.to_owned(),
        };
        let c2_f = self.dequantize(g, &c2, &format!("{p}/conv2/dq"))?;
        let skip_f = self.dequantize(g, &skip_q, &format!("{p}/shortcut/dq"))?;
        let add = g.node("Add", &[&c2_f, &skip_f], &format!("{p}/add"), vec![]);
        // The ReLU after the add: quantising with zero point 0 saturates negatives to 0.
        let out = self.qparams_for(&format!("{p}/out"))?;
        Ok(self.quantize(g, &add, &format!("{p}/out/q"), out))
    }

    fn pool(
        &mut self,
        g: &mut GraphBuilder,
        level: usize,
        x_q: &str,
    ) -> Result<String, ExportError> {
        let q = self.q(x_q)?;
        let name = format!("enc{level}/pool/q");
        self.qparams.insert(name.clone(), q);
        Ok(g.node("MaxPool", &[x_q], &name, pool_attrs()))
    }

    fn up(
        &mut self,
        g: &mut GraphBuilder,
        level: usize,
        up: &UpConv,
        x_q: &str,
    ) -> Result<String, ExportError> {
        let x = self.dequantize(g, x_q, &format!("up{level}/in/dq"))?;
        Ok(up_f32(g, level, up, &x))
    }

    fn concat(
        &mut self,
        g: &mut GraphBuilder,
        level: usize,
        up: &str,
        skip_q: &str,
    ) -> Result<String, ExportError> {
        let skip = self.dequantize(g, skip_q, &format!("dec{level}/skip/dq"))?;
        let cat_name = format!("dec{level}/cat");
        let cat = g.node(
            "Concat",
            &[up, &skip],
            &cat_name,
            vec![Attr::Int("axis", 1)],
        );
        let q = self.qparams_for(&cat_name)?;
        Ok(self.quantize(g, &cat, &format!("{cat_name}/q"), q))
    }

    fn head(
        &mut self,
        g: &mut GraphBuilder,
        head: &Conv,
        x_q: &str,
        output: &str,
    ) -> Result<(), ExportError> {
        let x = self.dequantize(g, x_q, "head/in/dq")?;
        let w = g.f32s("head/weight", &conv_weight_dims(head), &head.weight);
        let b = g.f32s("head/bias", &[head.out_channels], &head.bias);
        g.node("Conv", &[&x, &w, &b], output, conv_attrs(head.kernel));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qparams_cover_the_range_and_keep_zero_exact() {
        let q = QParams::for_range(Range {
            min: -1.0,
            max: 3.0,
        });
        assert!((q.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(q.zero_point, 64);
        let relu = QParams::for_range(Range {
            min: 0.0,
            max: 2.55,
        });
        assert_eq!(relu.zero_point, 0);
        let flat = QParams::for_range(Range { min: 0.0, max: 0.0 });
        assert_eq!(flat.scale, 1.0);
    }

    #[test]
    fn weights_quantise_per_tensor_symmetric() {
        let conv = Conv {
            in_channels: 1,
            out_channels: 2,
            kernel: 1,
            weight: vec![0.5, -2.0],
            bias: vec![0.25, 1.0],
        };
        let q = quantize_conv(&conv, 0.01);
        assert!((q.w_scale - 2.0 / 127.0).abs() < 1e-9);
        assert_eq!(q.weight, vec![32, -127]);
        for (qb, b) in q.bias.iter().zip(&conv.bias) {
            let back = *qb as f32 * 0.01 * q.w_scale;
            assert!((back - b).abs() < 1e-4, "{back} vs {b}");
        }
    }
}
