//! A small ONNX graph builder over tract's protobuf types (`tract_onnx::pb`): nodes,
//! initializers in `raw_data`, static-shape inputs/outputs, and the model wrapper
//! (IR version 8, opset [`OPSET`]), serialised with prost.

use std::collections::HashSet;

use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// ONNX IR version written: the newest tract's bundled proto knows.
pub const IR_VERSION: i64 = 8;
/// Default-domain opset: per-axis Quantize/DequantizeLinear need 13; IR 8 allows up to 17.
pub const OPSET: i64 = 13;

/// Element types the exporter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// f32.
    F32,
    /// u8 (quantized activations).
    U8,
    /// i8 (quantized weights).
    I8,
    /// i32 (quantized biases).
    I32,
}

impl Elem {
    fn data_type(self) -> i32 {
        match self {
            Elem::F32 => DataType::Float as i32,
            Elem::U8 => DataType::Uint8 as i32,
            Elem::I8 => DataType::Int8 as i32,
            Elem::I32 => DataType::Int32 as i32,
        }
    }
}

/// An attribute of a node.
pub enum Attr {
    /// One integer.
    Int(&'static str, i64),
    /// A list of integers.
    Ints(&'static str, Vec<i64>),
}

impl Attr {
    fn into_proto(self) -> AttributeProto {
        match self {
            Attr::Int(name, i) => AttributeProto {
                name: name.into(),
                r#type: AttributeType::Int as i32,
                i,
                ..Default::default()
            },
            Attr::Ints(name, ints) => AttributeProto {
                name: name.into(),
                r#type: AttributeType::Ints as i32,
                ints,
                ..Default::default()
            },
        }
    }
}

/// Collects nodes and initializers in topological order (the order they are added).
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: HashSet<String>,
}

impl GraphBuilder {
    /// Adds a node `op(inputs) → output`, named after its output; returns the output name.
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<Attr>) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: output.to_owned(),
            op_type: op.to_owned(),
            attribute: attrs.into_iter().map(Attr::into_proto).collect(),
            ..Default::default()
        });
        output.to_owned()
    }

    fn initializer(&mut self, name: &str, elem: Elem, dims: &[i64], raw_data: Vec<u8>) -> String {
        if self.names.insert(name.to_owned()) {
            self.initializers.push(TensorProto {
                name: name.to_owned(),
                dims: dims.to_vec(),
                data_type: elem.data_type(),
                raw_data,
                ..Default::default()
            });
        }
        name.to_owned()
    }

    /// An f32 initializer of shape `dims` (empty for a scalar).
    pub fn f32s(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, Elem::F32, dims, raw)
    }

    /// A u8 initializer.
    pub fn u8s(&mut self, name: &str, dims: &[i64], values: &[u8]) -> String {
        self.initializer(name, Elem::U8, dims, values.to_vec())
    }

    /// An i8 initializer.
    pub fn i8s(&mut self, name: &str, dims: &[i64], values: &[i8]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, Elem::I8, dims, raw)
    }

    /// An i32 initializer.
    pub fn i32s(&mut self, name: &str, dims: &[i64], values: &[i32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, Elem::I32, dims, raw)
    }

    /// The graph with one input and one output of static shapes.
    pub fn finish(
        self,
        name: &str,
        input: (&str, Elem, &[i64]),
        output: (&str, Elem, &[i64]),
    ) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.to_owned(),
            initializer: self.initializers,
            input: vec![value_info(input.0, input.1, input.2)],
            output: vec![value_info(output.0, output.1, output.2)],
            ..Default::default()
        }
    }
}

/// A tensor value description with a static shape.
pub fn value_info(name: &str, elem: Elem, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem.data_type(),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Wraps `graph` into a model with `metadata_props`.
pub fn model(graph: GraphProto, doc: &str, metadata: Vec<(String, String)>) -> ModelProto {
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "strokeseg-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: 1,
        doc_string: doc.to_owned(),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    }
}

/// The protobuf bytes of `model`.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
