//! strokeseg-model: what an ONNX model file of ours holds, read once for everyone.
//!
//! [`ModelInfo::from_bytes`] decodes a model with tract's protobuf types only (no tch, no
//! inference) and summarises it: the `strokeseg.metadata` entry, the graph's inputs and
//! outputs, op counts, initializer sizes, the SHA-256 of the bytes. Reading is lenient, so
//! `model-info` can show what is wrong with a model; [`ModelInfo::checked_metadata`] is the
//! strict contract the edge runtime loads by (metadata present and valid, one float input
//! of the metadata's shape, the named output present). The trainer's `model-info` and the
//! edge's `model-info` print the same [`ModelInfo`].

#[cfg(feature = "fixtures")]
pub mod fixture;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use prost::Message;
use serde::Serialize;
use strokeseg_shared::model_meta::{METADATA_KEY, MetadataError, ModelMetadata};
use tract_onnx::pb::{self, tensor_proto::DataType, tensor_shape_proto::dimension, type_proto};

/// Why a model file cannot be read or does not keep the strokeseg contract. Every variant
/// names the model (a file path or `embedded`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// The model file cannot be read.
    #[error("{source_name}: {source}")]
    Read {
        /// The model file.
        source_name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (truncated, corrupt, not protobuf).
    #[error("{source_name}: not a valid ONNX model: {reason}")]
    Corrupt {
        /// The model file.
        source_name: String,
        /// What the decoder said.
        reason: String,
    },
    /// The model carries no `strokeseg.metadata` entry in `metadata_props`.
    #[error(
        "{source_name}: no strokeseg metadata (metadata_props key {key:?}); export the model with strokeseg-train export"
    )]
    NoMetadata {
        /// The model file.
        source_name: String,
        /// The expected key.
        key: &'static str,
    },
    /// The metadata entry is not valid JSON for `ModelMetadata`.
    #[error("{source_name}: unreadable strokeseg metadata: {reason}")]
    MetadataJson {
        /// The model file.
        source_name: String,
        /// The JSON error.
        reason: String,
    },
    /// The metadata is readable but inconsistent or of another version.
    #[error("{source_name}: {source}")]
    Metadata {
        /// The model file.
        source_name: String,
        /// What `ModelMetadata::validate` refused.
        #[source]
        source: MetadataError,
    },
    /// The graph's input or output disagrees with the metadata.
    #[error("{source_name}: {what}: metadata says {expected}, the graph has {got}")]
    ShapeMismatch {
        /// The model file.
        source_name: String,
        /// Which tensor (`graph inputs`, `input shape`, `output`, …).
        what: &'static str,
        /// What the metadata declares.
        expected: String,
        /// What the graph has.
        got: String,
    },
}

/// What is wrong with a model's strokeseg metadata, when [`ModelInfo::metadata`] is unusable.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataProblem {
    /// No `strokeseg.metadata` entry.
    Missing,
    /// The entry is not valid JSON for [`ModelMetadata`].
    Json(String),
    /// The metadata parses but [`ModelMetadata::validate`] refuses it.
    Invalid(MetadataError),
}

impl fmt::Display for MetadataProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataProblem::Missing => write!(f, "no `{METADATA_KEY}` entry in metadata_props"),
            MetadataProblem::Json(e) => write!(f, "`{METADATA_KEY}` is not valid metadata: {e}"),
            MetadataProblem::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// One graph input or output as the ONNX file declares it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type (`float`, `uint8`, …).
    pub elem_type: String,
    /// Dimensions; `None` for a symbolic or unknown dimension.
    pub shape: Vec<Option<i64>>,
}

/// A summary of one ONNX model (`model-info` prints it; the edge loads by it).
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Where the model came from (a path or `embedded`).
    pub source: String,
    /// Size of the ONNX file, bytes.
    pub size_bytes: usize,
    /// SHA-256 of the ONNX bytes (lower-case hex).
    pub sha256: String,
    /// ONNX IR version.
    pub ir_version: i64,
    /// Operator sets (`domain:version`, the default domain as `ai.onnx`).
    pub opsets: Vec<String>,
    /// Producer name and version.
    pub producer: String,
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Nodes per op type (`domain::op` outside the default domain).
    pub operators: BTreeMap<String, usize>,
    /// Number of initializers.
    pub n_initializers: usize,
    /// Elements in all initializers.
    pub initializer_elements: u64,
    /// Initializer elements by element type.
    pub initializer_elements_by_type: BTreeMap<String, u64>,
    /// `metadata_props` keys other than `strokeseg.metadata`.
    pub other_metadata_keys: Vec<String>,
    /// The strokeseg metadata, when present and parseable (validated or not: see
    /// [`ModelInfo::metadata_problem`]).
    pub metadata: Option<ModelMetadata>,
    /// Why the metadata is unusable (missing, bad JSON, failed validation).
    #[serde(skip)]
    pub metadata_problem: Option<MetadataProblem>,
}

/// Keeps tract away from kernels that fault on our machines; call before the first model is
/// prepared (every loader of ours does; calling again does nothing).
///
/// tract-linalg 0.23.9's AVX-512 AMX int8 matrix kernel (`avx512amx_mmm_i32_8x8`) faults
/// intermittently in `tileloadd` (SIGSEGV in about 1 of 200 runs of an int8 model on the
/// AMX-capable development VM), so the `amx-int8` feature is taken out of tract's detected
/// instruction set on x86-64; the int8 models then run on the AVX-512 VNNI kernels. A
/// `TRACT_CPU_ISA` set in the environment wins (a deployer's explicit choice).
pub fn avoid_faulty_tract_kernels() {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("TRACT_CPU_ISA").is_none() {
                tract_onnx::prelude::tract_linalg::knobs::TRACT_CPU_ISA
                    .set(Some("-amx-int8".to_owned()));
            }
        });
    }
}

/// Lower-case hex SHA-256 of `bytes` (model files, checkpoints, `SHA256SUMS`).
pub use strokeseg_io::sha256_hex;

fn elem_type_name(code: i32) -> String {
    DataType::try_from(code)
        .map(|t| t.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("type {code}"))
}

fn tensor_info(v: &pb::ValueInfoProto) -> TensorInfo {
    let mut elem_type = String::from("unknown");
    let mut shape = Vec::new();
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
        elem_type = elem_type_name(t.elem_type);
        if let Some(s) = &t.shape {
            shape = s
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect();
        }
    }
    TensorInfo {
        name: v.name.clone(),
        elem_type,
        shape,
    }
}

/// `[1, 5, ?, 128]`.
pub fn fmt_shape(shape: &[Option<i64>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

impl ModelInfo {
    /// Reads and summarises the model file at `path` (models are a few MB: read whole).
    pub fn read(path: &Path) -> Result<ModelInfo, ModelFileError> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ModelFileError::Read {
            source_name: source.clone(),
            source: e,
        })?;
        Ok(Self::from_bytes(&bytes, &source)?.1)
    }

    /// Decodes `bytes` (named `source` in errors) and summarises them; the decoded graph is
    /// returned too, for a runtime to load without decoding twice. Only undecodable bytes
    /// and a graph without nodes are errors; metadata problems are recorded.
    pub fn from_bytes(
        bytes: &[u8],
        source: &str,
    ) -> Result<(pb::ModelProto, ModelInfo), ModelFileError> {
        let corrupt = |reason: String| ModelFileError::Corrupt {
            source_name: source.to_owned(),
            reason,
        };
        let proto = pb::ModelProto::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| corrupt("no graph".into()))?;
        if graph.node.is_empty() {
            return Err(corrupt("the graph has no nodes".into()));
        }
        let (metadata, metadata_problem) =
            match proto.metadata_props.iter().find(|p| p.key == METADATA_KEY) {
                None => (None, Some(MetadataProblem::Missing)),
                Some(p) => match serde_json::from_str::<ModelMetadata>(&p.value) {
                    Err(e) => (None, Some(MetadataProblem::Json(e.to_string()))),
                    Ok(meta) => {
                        let problem = meta.validate().err().map(MetadataProblem::Invalid);
                        (Some(meta), problem)
                    }
                },
            };
        let initializer_names: Vec<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut operators = BTreeMap::new();
        for node in &graph.node {
            let op = if node.domain.is_empty() {
                node.op_type.clone()
            } else {
                format!("{}::{}", node.domain, node.op_type)
            };
            *operators.entry(op).or_insert(0) += 1;
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
                .entry(elem_type_name(t.data_type))
                .or_insert(0) += n;
        }
        let info = ModelInfo {
            source: source.to_owned(),
            size_bytes: bytes.len(),
            sha256: sha256_hex(bytes),
            ir_version: proto.ir_version,
            opsets: proto
                .opset_import
                .iter()
                .map(|o| {
                    let domain = if o.domain.is_empty() {
                        "ai.onnx"
                    } else {
                        &o.domain
                    };
                    format!("{domain}:{}", o.version)
                })
                .collect(),
            producer: format!("{} {}", proto.producer_name, proto.producer_version)
                .trim()
                .to_owned(),
            inputs: graph
                .input
                .iter()
                .filter(|i| !initializer_names.contains(&i.name.as_str()))
                .map(tensor_info)
                .collect(),
            outputs: graph.output.iter().map(tensor_info).collect(),
            operators,
            n_initializers: graph.initializer.len(),
            initializer_elements,
            initializer_elements_by_type,
            other_metadata_keys: proto
                .metadata_props
                .iter()
                .filter(|p| p.key != METADATA_KEY)
                .map(|p| p.key.clone())
                .collect(),
            metadata,
            metadata_problem,
        };
        Ok((proto, info))
    }

    /// The metadata, when the model keeps the contract a runtime loads by: metadata present
    /// and valid, exactly one graph input, named as the metadata says, of type float and of
    /// the metadata's 4-D input shape (symbolic dimensions accepted), and an output of the
    /// metadata's output name.
    pub fn checked_metadata(&self) -> Result<&ModelMetadata, ModelFileError> {
        let source_name = || self.source.clone();
        let metadata = match (&self.metadata, &self.metadata_problem) {
            (Some(meta), None) => meta,
            (_, Some(MetadataProblem::Invalid(e))) => {
                return Err(ModelFileError::Metadata {
                    source_name: source_name(),
                    source: e.clone(),
                });
            }
            (_, Some(MetadataProblem::Json(e))) => {
                return Err(ModelFileError::MetadataJson {
                    source_name: source_name(),
                    reason: e.clone(),
                });
            }
            (None, _) | (_, Some(MetadataProblem::Missing)) => {
                return Err(ModelFileError::NoMetadata {
                    source_name: source_name(),
                    key: METADATA_KEY,
                });
            }
        };
        let mismatch = |what, expected: String, got: String| ModelFileError::ShapeMismatch {
            source_name: source_name(),
            what,
            expected,
            got,
        };
        let names = |ts: &[TensorInfo]| {
            ts.iter()
                .map(|t| format!("{} {}", t.name, fmt_shape(&t.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let input = match self.inputs.as_slice() {
            [only] if only.name == metadata.input_name => only,
            _ => {
                return Err(mismatch(
                    "graph inputs",
                    format!("one input {:?}", metadata.input_name),
                    names(&self.inputs),
                ));
            }
        };
        let want_in: Vec<Option<i64>> = metadata
            .input_shape
            .iter()
            .map(|&d| i64::try_from(d).ok())
            .collect();
        let shape_agrees = input.shape.len() == 4
            && input
                .shape
                .iter()
                .zip(&want_in)
                .all(|(got, want)| got.is_none() || got == want);
        if !shape_agrees {
            return Err(mismatch(
                "input shape",
                fmt_shape(&want_in),
                fmt_shape(&input.shape),
            ));
        }
        if input.elem_type != "float" {
            return Err(mismatch(
                "input type",
                "float".into(),
                input.elem_type.clone(),
            ));
        }
        if !self.outputs.iter().any(|o| o.name == metadata.output_name) {
            return Err(mismatch(
                "graph outputs",
                format!("an output {:?}", metadata.output_name),
                names(&self.outputs),
            ));
        }
        Ok(metadata)
    }
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model: {}", self.source)?;
        writeln!(
            f,
            "size: {} bytes ({:.2} MB), sha256 {}",
            self.size_bytes,
            self.size_bytes as f64 / 1e6,
            self.sha256
        )?;
        writeln!(
            f,
            "onnx: IR version {}, opsets {}, producer {}",
            self.ir_version,
            self.opsets.join(", "),
            self.producer
        )?;
        for (what, list) in [("input", &self.inputs), ("output", &self.outputs)] {
            for t in list {
                let dims: Vec<String> = t
                    .shape
                    .iter()
                    .map(|d| d.map_or_else(|| "?".to_owned(), |v| v.to_string()))
                    .collect();
                writeln!(
                    f,
                    "{what}: {} {} [{}]",
                    t.name,
                    t.elem_type,
                    dims.join(", ")
                )?;
            }
        }
        let n_nodes: usize = self.operators.values().sum();
        writeln!(f, "nodes: {n_nodes}")?;
        for (op, n) in &self.operators {
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
                let channels: Vec<&str> = meta
                    .preprocess
                    .channels
                    .iter()
                    .map(|c| c.modality.isles_tag())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_faulty_amx_kernel_is_taken_out_on_x86() {
        avoid_faulty_tract_kernels();
        let isa = tract_onnx::prelude::tract_linalg::knobs::TRACT_CPU_ISA.get();
        if cfg!(target_arch = "x86_64") && std::env::var_os("TRACT_CPU_ISA").is_none() {
            assert_eq!(isa.as_deref(), Some("-amx-int8"));
        }
    }

    #[test]
    fn sha256_of_the_empty_string() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn garbage_is_named_as_corrupt() {
        let err = ModelInfo::from_bytes(b"\xff\xff not onnx", "x.onnx").unwrap_err();
        assert!(matches!(err, ModelFileError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("x.onnx: not a valid ONNX model")
        );
    }

    #[test]
    fn a_model_without_metadata_is_described_but_not_loadable() {
        let node = pb::NodeProto {
            op_type: "Relu".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            graph: Some(pb::GraphProto {
                node: vec![node],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (_, info) = ModelInfo::from_bytes(&model.encode_to_vec(), "relu.onnx").unwrap();
        assert_eq!(info.operators.get("Relu"), Some(&1));
        assert_eq!(info.metadata_problem, Some(MetadataProblem::Missing));
        assert!(
            info.to_string()
                .contains("metadata problem: no `strokeseg.metadata`")
        );
        assert!(matches!(
            info.checked_metadata(),
            Err(ModelFileError::NoMetadata { .. })
        ));
    }
}
