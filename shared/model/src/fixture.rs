//! Small ONNX models made in code, for tests, the benchmark and the demo until the trained
//! default model exists: a real model run through the real pipeline.
//!
//! The rule model is a two-layer conv net whose fixed weights implement a perfusion rule:
//! the lesion logit rises with normalised Tmax and falls with normalised CBF
//! (`lesion = S · (ramp(Tmax) + ramp(−CBF) − 1.5)`, each ramp clamped to [0, 1] by a pair
//! of ReLU units, after a 3×3 smoothing):
//!
//! ```text
//! input [1, 5, H, W] (CBF, CBV, MTT, Tmax, CT; default preprocessing)
//!   → Conv 3×3 (5 → 4, pad 1) → Relu → Conv 1×1 (4 → 2) → logits [1, 2, H, W]
//! ```
//!
//! The int8 variant is the same net as `QuantizeLinear → QLinearConv → QLinearConv →
//! DequantizeLinear` (uint8 activations, int8 weights, int32 biases), the operators the
//! exporter writes for `model.int8.onnx`. Both carry valid [`ModelMetadata`]. Options make
//! the broken variants the error tests need (no metadata, a graph input that disagrees with
//! the metadata, an output of the wrong size).

use prost::Message;
use strokeseg_shared::model_meta::{
    METADATA_KEY, METADATA_SCHEMA_VERSION, ModelMetadata, TrainingSummary,
};
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_shared::{Modality, PreprocessConfig};
use tract_onnx::pb;

/// Weight precision of a fixture model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// float32 Conv.
    Fp32,
    /// uint8/int8 QLinearConv.
    Int8,
}

/// The perfusion rule the weights implement, on normalised inputs (brain 1st–99th
/// percentile → [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleWeights {
    /// Normalised Tmax where the Tmax ramp starts.
    pub tmax_start: f32,
    /// Width of the Tmax ramp.
    pub tmax_width: f32,
    /// Normalised CBF below which the CBF ramp starts.
    pub cbf_start: f32,
    /// Width of the CBF ramp.
    pub cbf_width: f32,
    /// Logit gain `S`.
    pub gain: f32,
}

impl Default for RuleWeights {
    fn default() -> Self {
        RuleWeights {
            tmax_start: 0.45,
            tmax_width: 0.1,
            cbf_start: 0.12,
            cbf_width: 0.06,
            gain: 8.0,
        }
    }
}

/// How to build a fixture model.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureOptions {
    /// fp32 or int8.
    pub precision: Precision,
    /// The rule.
    pub weights: RuleWeights,
    /// Write the `strokeseg.metadata` entry.
    pub with_metadata: bool,
    /// Channels of the graph input (the metadata always says 5).
    pub graph_input_channels: usize,
    /// Stride of the first conv (2 makes the output half the input size).
    pub stride: usize,
    /// The preprocessing stored in the metadata (its input size sizes the graph).
    pub preprocess: PreprocessConfig,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            precision: Precision::Fp32,
            weights: RuleWeights::default(),
            with_metadata: true,
            graph_input_channels: 5,
            stride: 1,
            preprocess: PreprocessConfig::default(),
        }
    }
}

/// Name of the fixture model in its metadata.
pub const FIXTURE_MODEL_NAME: &str = "strokeseg-fixture-perfusion-rule";

/// The metadata a fixture model carries.
pub fn fixture_metadata(opts: &FixtureOptions) -> ModelMetadata {
    let p = &opts.preprocess;
    ModelMetadata {
        schema_version: METADATA_SCHEMA_VERSION,
        name: FIXTURE_MODEL_NAME.into(),
        version: "0.1.0".into(),
        precision: match opts.precision {
            Precision::Fp32 => "fp32".into(),
            Precision::Int8 => "int8".into(),
        },
        preprocess: p.clone(),
        postprocess: PostprocessConfig::default(),
        class_names: vec!["background".into(), "lesion".into()],
        input_name: "input".into(),
        input_shape: [
            1,
            p.n_channels(),
            usize::from(p.input_height),
            usize::from(p.input_width),
        ],
        output_name: "logits".into(),
        architecture: "fixture: Conv3x3(5→4) + ReLU + Conv1x1(4→2), hand-set weights: \
                       high Tmax AND low CBF"
            .into(),
        training: TrainingSummary {
            data: "none: weights set by hand (shared/model/src/fixture.rs)".into(),
            loss: "none".into(),
            ..TrainingSummary::default()
        },
        exported_at: "1970-01-01T00:00:00Z".into(),
        source_checkpoint_sha256: "0".repeat(64),
    }
}

/// The float weights: `(w1 [4, C, 3, 3], b1 [4], w2 [2, 4, 1, 1], b2 [2])`.
fn float_weights(opts: &FixtureOptions) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = opts.graph_input_channels;
    let r = opts.weights;
    let idx = |m| opts.preprocess.channel_index(m).filter(|&i| i < c);
    let smooth = [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0].map(|v: f32| v / 16.0);
    let mut w1 = vec![0f32; 4 * c * 9];
    let mut put = |unit: usize, channel: Option<usize>, scale: f32| {
        if let Some(ch) = channel {
            for (k, s) in smooth.iter().enumerate() {
                w1[(unit * c + ch) * 9 + k] = scale * s;
            }
        }
    };
    // z_T = (Tmax − start) / width; z_C = (start − CBF) / width.
    let (tmax, cbf) = (idx(Modality::Tmax), idx(Modality::Cbf));
    put(0, tmax, 1.0 / r.tmax_width);
    put(1, tmax, 1.0 / r.tmax_width);
    put(2, cbf, -1.0 / r.cbf_width);
    put(3, cbf, -1.0 / r.cbf_width);
    let zt0 = -r.tmax_start / r.tmax_width;
    let zc0 = r.cbf_start / r.cbf_width;
    let b1 = vec![zt0, zt0 - 1.0, zc0, zc0 - 1.0];
    let s = r.gain;
    let w2 = vec![0.0, 0.0, 0.0, 0.0, s, -s, s, -s];
    let b2 = vec![0.0, -1.5 * s];
    (w1, b1, w2, b2)
}

fn dim(v: i64) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)),
        ..Default::default()
    }
}

fn value_info(name: &str, elem: pb::tensor_proto::DataType, shape: &[i64]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: shape.iter().map(|&d| dim(d)).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

fn raw_tensor(
    name: &str,
    dims: &[i64],
    dt: pb::tensor_proto::DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn i32_tensor(name: &str, values: &[i32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int32 as i32,
        int32_data: values.to_vec(),
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// Symmetric int8 quantisation of `w` with one scale; returns the values and the scale.
fn quantize_i8(w: &[f32]) -> (Vec<u8>, f32) {
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-8);
    let scale = max / 127.0;
    let q = w
        .iter()
        .map(|v| ((v / scale).round().clamp(-127.0, 127.0) as i8) as u8)
        .collect();
    (q, scale)
}

/// The ONNX bytes of a fixture model.
pub fn fixture_model(opts: &FixtureOptions) -> Vec<u8> {
    use pb::tensor_proto::DataType;
    let p = &opts.preprocess;
    let (h, w) = (i64::from(p.input_height), i64::from(p.input_width));
    let c = opts.graph_input_channels as i64;
    let stride = opts.stride.max(1) as i64;
    let (w1, b1, w2, b2) = float_weights(opts);
    let conv1_attrs = || {
        vec![
            ints_attr("kernel_shape", &[3, 3]),
            ints_attr("pads", &[1, 1, 1, 1]),
            ints_attr("strides", &[stride, stride]),
        ]
    };
    let conv2_attrs = || vec![ints_attr("kernel_shape", &[1, 1])];
    let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    let mut initializer = Vec::new();
    let nodes = match opts.precision {
        Precision::Fp32 => {
            initializer.push(f32_tensor("w1", &[4, c, 3, 3], &w1));
            initializer.push(f32_tensor("b1", &[4], &b1));
            initializer.push(f32_tensor("w2", &[2, 4, 1, 1], &w2));
            initializer.push(f32_tensor("b2", &[2], &b2));
            vec![
                node(
                    "Conv",
                    "conv1",
                    &["input", "w1", "b1"],
                    &["h1"],
                    conv1_attrs(),
                ),
                node("Relu", "relu1", &["h1"], &["a1"], vec![]),
                node(
                    "Conv",
                    "conv2",
                    &["a1", "w2", "b2"],
                    &["logits"],
                    conv2_attrs(),
                ),
            ]
        }
        Precision::Int8 => {
            // Input: normalised values in [−1, 2] → uint8.
            let (sx, zx) = (3.0f32 / 255.0, 85u8);
            let (w1q, sw1) = quantize_i8(&w1);
            // Hidden units (ReLU'd) in [0, 16]: uint8 with zero point 0 clamps at 0.
            let (sh, zh) = (16.0f32 / 255.0, 0u8);
            let (w2q, sw2) = quantize_i8(&w2);
            // Logits in about [−16, 8].
            let (sy, zy) = (24.0f32 / 255.0, 170u8);
            let qb = |b: &[f32], s: f32| -> Vec<i32> {
                b.iter().map(|v| (v / s).round() as i32).collect()
            };
            initializer.extend([
                f32_tensor("sx", &[], &[sx]),
                raw_tensor("zx", &[], DataType::Uint8, vec![zx]),
                raw_tensor("w1q", &[4, c, 3, 3], DataType::Int8, w1q),
                f32_tensor("sw1", &[], &[sw1]),
                raw_tensor("zw1", &[], DataType::Int8, vec![0]),
                f32_tensor("sh", &[], &[sh]),
                raw_tensor("zh", &[], DataType::Uint8, vec![zh]),
                i32_tensor("b1q", &qb(&b1, sx * sw1)),
                raw_tensor("w2q", &[2, 4, 1, 1], DataType::Int8, w2q),
                f32_tensor("sw2", &[], &[sw2]),
                raw_tensor("zw2", &[], DataType::Int8, vec![0]),
                f32_tensor("sy", &[], &[sy]),
                raw_tensor("zy", &[], DataType::Uint8, vec![zy]),
                i32_tensor("b2q", &qb(&b2, sh * sw2)),
            ]);
            vec![
                node(
                    "QuantizeLinear",
                    "quantize",
                    &["input", "sx", "zx"],
                    &["xq"],
                    vec![],
                ),
                node(
                    "QLinearConv",
                    "conv1",
                    &["xq", "sx", "zx", "w1q", "sw1", "zw1", "sh", "zh", "b1q"],
                    &["hq"],
                    conv1_attrs(),
                ),
                node(
                    "QLinearConv",
                    "conv2",
                    &["hq", "sh", "zh", "w2q", "sw2", "zw2", "sy", "zy", "b2q"],
                    &["yq"],
                    conv2_attrs(),
                ),
                node(
                    "DequantizeLinear",
                    "dequantize",
                    &["yq", "sy", "zy"],
                    &["logits"],
                    vec![],
                ),
            ]
        }
    };
    let graph = pb::GraphProto {
        name: FIXTURE_MODEL_NAME.into(),
        node: nodes,
        initializer,
        input: vec![value_info("input", DataType::Float, &[1, c, h, w])],
        output: vec![value_info("logits", DataType::Float, &[1, 2, oh, ow])],
        ..Default::default()
    };
    let mut metadata_props = Vec::new();
    if opts.with_metadata {
        metadata_props.push(pb::StringStringEntryProto {
            key: METADATA_KEY.into(),
            value: serde_json::to_string(&fixture_metadata(opts)).unwrap_or_default(),
        });
    }
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "strokeseg-edge fixture".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props,
        ..Default::default()
    };
    model.encode_to_vec()
}
