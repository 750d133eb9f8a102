//! What an ONNX model file holds, read with tract's protobuf types only: the strokeseg
//! metadata, the graph inputs and outputs, op counts, initializer sizes and the file size.
//!
//! Depends on `tract_onnx::pb`, prost and `strokeseg_shared` only (no tch), so the edge
//! runtime can carry the same code.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use prost::Message;
use strokeseg_shared::model_meta::{METADATA_KEY, ModelMetadata};
use tract_onnx::pb::{self, tensor_proto::DataType, tensor_shape_proto::dimension, type_proto};

use super::ExportError;

/// One graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDesc {
    /// Its name.
    pub name: String,
    /// Element type (`float`, `uint8`, …).
    pub elem_type: String,
    /// Dimensions; symbolic ones by name.
    pub shape: Vec<String>,
}

/// A summary of one ONNX model file.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The file.
    pub path: PathBuf,
    /// File size in bytes.
    pub file_bytes: u64,
    /// ONNX IR version.
    pub ir_version: i64,
    /// `(domain, version)` of each imported opset (`""` is the default domain).
    pub opsets: Vec<(String, i64)>,
    /// Producer name and version.
    pub producer: String,
    /// The strokeseg metadata, when present and parseable.
    pub metadata: Option<ModelMetadata>,
    /// Why the metadata is unusable (missing, bad JSON, failed validation).
    pub metadata_problem: Option<String>,
    /// Other `metadata_props` keys.
    pub other_metadata_keys: Vec<String>,
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorDesc>,
    /// Graph outputs.
    pub outputs: Vec<TensorDesc>,
    /// Nodes per op type.
    pub op_counts: BTreeMap<String, usize>,
    /// Number of initializers.
    pub n_initializers: usize,
    /// Elements in all initializers.
    pub initializer_elements: u64,
    /// Initializer elements by element type.
    pub initializer_elements_by_type: BTreeMap<String, u64>,
}

fn elem_name(data_type: i32) -> String {
    DataType::try_from(data_type)
        .map(|t| format!("{t:?}").to_lowercase())
        .unwrap_or_else(|_| format!("type{data_type}"))
}

fn describe(vi: &pb::ValueInfoProto) -> TensorDesc {
    let (elem_type, shape) = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let shape = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(v)) => v.to_string(),
                            Some(dimension::Value::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (elem_name(t.elem_type), shape)
        }
        _ => ("?".into(), Vec::new()),
    };
    TensorDesc {
        name: vi.name.clone(),
        elem_type,
        shape,
    }
}

impl ModelInfo {
    /// Reads and summarises the model at `path`.
    pub fn read(path: &Path) -> Result<ModelInfo, ExportError> {
        let bytes = std::fs::read(path).map_err(|e| ExportError::io(path, e))?;
        let model =
            pb::ModelProto::decode(bytes.as_slice()).map_err(|e| ExportError::InvalidModel {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let Some(graph) = model.graph.as_ref() else {
            return Err(ExportError::InvalidModel {
                path: path.to_path_buf(),
                reason: "no graph".into(),
            });
        };
        let props: HashMap<&str, &str> = model
            .metadata_props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        let (metadata, metadata_problem) = match props.get(METADATA_KEY) {
            None => (
                None,
                Some(format!("no `{METADATA_KEY}` entry in metadata_props")),
            ),
            Some(json) => match serde_json::from_str::<ModelMetadata>(json) {
                Err(e) => (
                    None,
                    Some(format!("`{METADATA_KEY}` is not valid metadata: {e}")),
                ),
                Ok(meta) => {
                    let problem = meta.validate().err().map(|e| e.to_string());
                    (Some(meta), problem)
                }
            },
        };
        let initializer_names: Vec<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut op_counts = BTreeMap::new();
        for node in &graph.node {
            let op = if node.domain.is_empty() {
                node.op_type.clone()
            } else {
                format!("{}::{}", node.domain, node.op_type)
            };
            *op_counts.entry(op).or_insert(0) += 1;
        }
        let mut initializer_elements_by_type = BTreeMap::new();
        let mut initializer_elements = 0u64;
        for t in &graph.initializer {
            let n = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
                .unwrap_or(0);
            initializer_elements = initializer_elements.saturating_add(n);
            *initializer_elements_by_type
                .entry(elem_name(t.data_type))
                .or_insert(0) += n;
        }
        Ok(ModelInfo {
            path: path.to_path_buf(),
            file_bytes: bytes.len() as u64,
            ir_version: model.ir_version,
            opsets: model
                .opset_import
                .iter()
                .map(|o| (o.domain.clone(), o.version))
                .collect(),
            producer: format!("{} {}", model.producer_name, model.producer_version)
                .trim()
                .to_owned(),
            metadata,
            metadata_problem,
            other_metadata_keys: model
                .metadata_props
                .iter()
                .filter(|p| p.key != METADATA_KEY)
                .map(|p| p.key.clone())
                .collect(),
            inputs: graph
                .input
                .iter()
                .filter(|i| !initializer_names.contains(&i.name.as_str()))
                .map(describe)
                .collect(),
            outputs: graph.output.iter().map(describe).collect(),
            op_counts,
            n_initializers: graph.initializer.len(),
            initializer_elements,
            initializer_elements_by_type,
        })
    }
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model: {}", self.path.display())?;
        writeln!(
            f,
            "size: {} bytes ({:.2} MB)",
            self.file_bytes,
            self.file_bytes as f64 / 1e6
        )?;
        let opsets: Vec<String> = self
            .opsets
            .iter()
            .map(|(d, v)| {
                if d.is_empty() {
                    format!("ai.onnx {v}")
                } else {
                    format!("{d} {v}")
                }
            })
            .collect();
        writeln!(
            f,
            "onnx: IR version {}, opsets {}, producer {}",
            self.ir_version,
            opsets.join(", "),
            self.producer
        )?;
        for (what, list) in [("input", &self.inputs), ("output", &self.outputs)] {
            for t in list {
                writeln!(
                    f,
                    "{what}: {} {} [{}]",
                    t.name,
                    t.elem_type,
                    t.shape.join(", ")
                )?;
            }
        }
        let n_nodes: usize = self.op_counts.values().sum();
        writeln!(f, "nodes: {n_nodes}")?;
        for (op, n) in &self.op_counts {
            writeln!(f, "  {op:<18} {n}")?;
        }
        let by_type: Vec<String> = self
            .initializer_elements_by_type
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        writeln!(
            f,
            "initializers: {} tensors, {} elements ({})",
            self.n_initializers,
            self.initializer_elements,
            by_type.join(", ")
        )?;
        if !self.other_metadata_keys.is_empty() {
            writeln!(
                f,
                "other metadata keys: {}",
                self.other_metadata_keys.join(", ")
            )?;
        }
        match &self.metadata {
            Some(meta) => {
                writeln!(f, "metadata ({METADATA_KEY}):")?;
                writeln!(
                    f,
                    "  name: {} {} ({})",
                    meta.name, meta.version, meta.precision
                )?;
                writeln!(f, "  architecture: {}", meta.architecture)?;
                writeln!(
                    f,
                    "  input: {} {:?}, output: {}, classes: {}",
                    meta.input_name,
                    meta.input_shape,
                    meta.output_name,
                    meta.class_names.join(", ")
                )?;
                let channels: Vec<String> = meta
                    .preprocess
                    .channels
                    .iter()
                    .map(|c| format!("{:?}", c.modality))
                    .collect();
                writeln!(
                    f,
                    "  preprocess: v{}, channels [{}], {}×{} at {} mm",
                    meta.preprocess.version,
                    channels.join(", "),
                    meta.preprocess.input_height,
                    meta.preprocess.input_width,
                    meta.preprocess.target_spacing_mm
                )?;
                writeln!(
                    f,
                    "  postprocess: threshold {}, min component {} mm², {:?} connectivity",
                    meta.postprocess.threshold,
                    meta.postprocess.min_component_area_mm2,
                    meta.postprocess.connectivity
                )?;
                let t = &meta.training;
                let dice = t
                    .val_dice
                    .map_or_else(|| "not measured".to_owned(), |d| format!("{d:.4}"));
                let held_out = t.fold.map_or_else(
                    || "trained on every case".to_owned(),
                    |k| format!("fold {k} of {} held out", t.folds),
                );
                writeln!(
                    f,
                    "  training: {}, loss {}, {} epochs, {held_out}, held-out Dice {dice}, seed {}",
                    t.data, t.loss, t.epochs, t.seed
                )?;
                writeln!(f, "  exported: {}", meta.exported_at)?;
                writeln!(f, "  checkpoint sha256: {}", meta.source_checkpoint_sha256)?;
            }
            None => writeln!(f, "metadata: none")?,
        }
        if let Some(problem) = &self.metadata_problem {
            writeln!(f, "metadata problem: {problem}")?;
        }
        Ok(())
    }
}
