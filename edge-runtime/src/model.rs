//! Loading a segmentation model: the ONNX bytes (embedded or from a file) are decoded, the
//! `strokeseg.metadata` entry is read and validated, the graph's input and output are checked
//! against it, and tract optimises the graph for the static input shape `[1, C, H, W]`.
//!
//! How tract lowers the graph is chosen here, in code ([`PlanOptions`]): on x86-64 its
//! direct spatial convolution (taken for wide f32 convolutions, output rows ≥ 128) is turned
//! off, so those convolutions run as lazy im2col + matrix product with bias and ReLU fused
//! into the kernel; per-op timings of the shipped model are in BENCHMARKS.md.
//!
//! The default model is embedded at build time when `models/default/model.onnx` exists
//! (see `build.rs`); [`embedded_model`] returns it, and `--model FILE` overrides it.

use std::path::Path;
use std::sync::Arc;

use strokeseg_model::{ModelFileError, ModelInfo};
use strokeseg_shared::model_meta::ModelMetadata;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::knobs::KnobScope;

use crate::error::ModelError;

#[cfg(strokeseg_embedded_model)]
static EMBEDDED_MODEL: Option<&[u8]> = Some(include_bytes!(env!("STROKESEG_EMBEDDED_MODEL")));
#[cfg(not(strokeseg_embedded_model))]
static EMBEDDED_MODEL: Option<&[u8]> = None;

/// The default model compiled into this binary, if the build found one.
pub fn embedded_model() -> Option<&'static [u8]> {
    EMBEDDED_MODEL
}

/// How tract builds the plan; [`PlanOptions::default`] is the fastest configuration measured
/// for our models on this target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Let tract lower wide f32 convolutions to its `DirectSpatialConv` (tract's own choice).
    /// Off by default on x86-64: there the lazy im2col + matrix product path, which fuses
    /// bias, ReLU and the residual add into the matrix kernel, ran the shipped model's
    /// 128-wide layers 1.7× faster (BENCHMARKS.md). Elsewhere tract's choice is kept until it
    /// is measured on the box (`tract_profile --direct-spatial`).
    pub direct_spatial_conv: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            direct_spatial_conv: !cfg!(target_arch = "x86_64"),
        }
    }
}

impl PlanOptions {
    /// The tract knobs these options set while the graph is optimised.
    fn knob_scope(self) -> TractResult<KnobScope> {
        let mut knobs = Vec::new();
        if !self.direct_spatial_conv {
            knobs.push(("TRACT_DISABLE_DIRECT_SPATIAL", "true"));
        }
        KnobScope::new(knobs)
    }
}

/// A validated, optimised model ready to run one slice at a time.
pub struct SegModel {
    metadata: ModelMetadata,
    source: String,
    sha256: String,
    size_bytes: usize,
    plan: Arc<TypedRunnableModel>,
    state: TypedSimpleState,
    n_classes: usize,
    /// The input tensor, reused for every slice (tract's clone is dropped after each run).
    input: Arc<Tensor>,
}

impl std::fmt::Debug for SegModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegModel")
            .field("name", &self.metadata.name)
            .field("version", &self.metadata.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Decodes `bytes` and checks the strokeseg contract, without preparing for inference.
fn inspect(bytes: &[u8], source: &str) -> Result<(pb::ModelProto, ModelInfo), ModelError> {
    let (proto, info) = ModelInfo::from_bytes(bytes, source)?;
    info.checked_metadata()?;
    Ok((proto, info))
}

/// Reads `path` whole (models are a few MB; the bytes are dropped once tract has its plan).
fn read_model_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| {
        ModelError::File(ModelFileError::Read {
            source_name: path.display().to_string(),
            source: e,
        })
    })
}

/// The metadata, inputs, outputs and size of the model file at `path` (for `model-info`),
/// checked against the contract the runtime loads by.
pub fn model_info(path: &Path) -> Result<ModelInfo, ModelError> {
    let bytes = read_model_file(path)?;
    Ok(inspect(&bytes, &path.display().to_string())?.1)
}

/// The metadata of the embedded default model, if there is one.
pub fn embedded_model_info() -> Option<Result<ModelInfo, ModelError>> {
    embedded_model().map(|b| inspect(b, "embedded").map(|(_, info)| info))
}

impl SegModel {
    /// Loads the model file at `path`.
    pub fn from_path(path: &Path) -> Result<SegModel, ModelError> {
        let bytes = read_model_file(path)?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The default model embedded in this binary; [`ModelError::NoModel`] when the build
    /// had none.
    pub fn embedded() -> Result<SegModel, ModelError> {
        let bytes = embedded_model().ok_or(ModelError::NoModel)?;
        Self::from_bytes(bytes, "embedded default model")
    }

    /// `--model FILE` when given, else the embedded default model.
    pub fn from_path_or_embedded(path: Option<&Path>) -> Result<SegModel, ModelError> {
        match path {
            Some(p) => Self::from_path(p),
            None => Self::embedded(),
        }
    }

    /// Decodes and validates `bytes` (named `source` in errors), then has tract optimise the
    /// graph for the metadata's static input shape and checks the output shape
    /// `[1, n_classes, H, W]`.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<SegModel, ModelError> {
        Self::from_bytes_with(bytes, source, PlanOptions::default())
    }

    /// [`SegModel::from_bytes`] with the plan built as `options` say (benchmarks, tests).
    pub fn from_bytes_with(
        bytes: &[u8],
        source: &str,
        options: PlanOptions,
    ) -> Result<SegModel, ModelError> {
        let (proto, info) = inspect(bytes, source)?;
        let metadata = info.checked_metadata()?.clone();
        let load = |e: TractError| ModelError::Load {
            source_name: source.to_owned(),
            reason: format!("{e:#}"),
        };
        let shape = metadata.input_shape;
        let n_classes = metadata.class_names.len();
        let output_idx = info
            .outputs
            .iter()
            .position(|o| o.name == metadata.output_name)
            .unwrap_or(0);
        strokeseg_model::avoid_faulty_tract_kernels();
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(load)?;
        drop(proto);
        // Keep only the logits output, so tract prunes anything else.
        let outlet = *model
            .output_outlets()
            .map_err(load)?
            .get(output_idx)
            .ok_or_else(|| load(TractError::msg(format!("output {output_idx} missing"))))?;
        model.select_output_outlets(&[outlet]).map_err(load)?;
        let scope = options.knob_scope().map_err(load)?;
        let model = scope
            .enter(|| {
                model
                    .with_input_fact(0, f32::fact(shape).into())?
                    .into_optimized()
            })
            .map_err(load)?;
        let outlet = *model
            .output_outlets()
            .map_err(load)?
            .first()
            .ok_or_else(|| load(TractError::msg("no output")))?;
        let fact = model.outlet_fact(outlet).map_err(load)?.clone();
        let want = [1, n_classes, shape[2], shape[3]];
        let got: Option<Vec<usize>> = fact.shape.as_concrete().map(<[usize]>::to_vec);
        if fact.datum_type != f32::datum_type() || got.as_deref() != Some(&want[..]) {
            return Err(ModelError::File(ModelFileError::ShapeMismatch {
                source_name: source.to_owned(),
                what: "output",
                expected: format!("f32 {want:?}"),
                got: format!("{:?} {:?}", fact.datum_type, fact.shape),
            }));
        }
        let plan = model.into_runnable().map_err(load)?;
        let state = plan.spawn().map_err(load)?;
        let input = Arc::new(Tensor::zero::<f32>(&shape).map_err(load)?);
        Ok(SegModel {
            metadata,
            source: source.to_owned(),
            sha256: info.sha256,
            size_bytes: info.size_bytes,
            plan,
            state,
            n_classes,
            input,
        })
    }

    /// The validated metadata (preprocessing, postprocessing, shapes).
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }
    /// Where the model came from.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// SHA-256 of the ONNX bytes (hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Size of the ONNX bytes.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }
    /// Number of output classes (≥ 2; class 1 is lesion).
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }
    /// Values in one input, `C · H · W`.
    pub fn input_len(&self) -> usize {
        self.metadata.input_shape.iter().product()
    }

    /// Runs one slice: `input` is `[C, H, W]` (the output of `prepare_model_input`);
    /// the logits `[n_classes, H, W]` are written into `logits`. Memory: one input tensor
    /// kept for every slice, plus tract's per-run values.
    pub fn run_slice(
        &mut self,
        slice_idx: usize,
        input: &[f32],
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let fail = |reason: String| ModelError::Inference {
            source_name: self.source.clone(),
            slice_idx,
            reason,
        };
        if Arc::get_mut(&mut self.input).is_none() {
            // Still shared (tract kept a reference): start a fresh buffer.
            self.input = Arc::new(
                Tensor::zero::<f32>(&self.metadata.input_shape)
                    .map_err(|e| fail(format!("{e:#}")))?,
            );
        }
        let tensor = Arc::get_mut(&mut self.input).ok_or_else(|| fail("input in use".into()))?;
        let mut view = tensor
            .try_as_plain_ram_mut()
            .map_err(|e| fail(format!("{e:#}")))?;
        let dst = view
            .as_slice_mut::<f32>()
            .map_err(|e| fail(format!("{e:#}")))?;
        if dst.len() != input.len() {
            return Err(fail(format!(
                "input has {} values, the model takes {}",
                input.len(),
                dst.len()
            )));
        }
        dst.copy_from_slice(input);
        let outputs = self
            .state
            .run(tvec!(TValue::from_const(self.input.clone())))
            .map_err(|e| fail(format!("{e:#}")))?;
        let view = outputs
            .first()
            .ok_or_else(|| fail("no output".into()))?
            .try_as_plain_ram()
            .map_err(|e| fail(format!("{e:#}")))?;
        let out = view.as_slice::<f32>().map_err(|e| fail(format!("{e:#}")))?;
        if out.len() != logits.len() {
            return Err(fail(format!(
                "output has {} values, expected {}",
                out.len(),
                logits.len()
            )));
        }
        logits.copy_from_slice(out);
        Ok(())
    }

    /// The optimised plan (for benchmarks and diagnostics).
    pub fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strokeseg_model::fixture::{FixtureOptions, Precision, fixture_model};

    /// A `[5, H, W]` input with every pixel at the given normalised CBF and Tmax.
    fn uniform_input(model: &SegModel, cbf: f32, tmax: f32) -> Vec<f32> {
        let [_, c, h, w] = model.metadata().input_shape;
        let config = &model.metadata().preprocess;
        let mut input = vec![0.3f32; c * h * w];
        for (m, v) in [
            (strokeseg_shared::Modality::Cbf, cbf),
            (strokeseg_shared::Modality::Tmax, tmax),
        ] {
            let i = config.channel_index(m).unwrap();
            input[i * h * w..(i + 1) * h * w].fill(v);
        }
        input
    }

    /// Lesion minus background logit at the centre pixel.
    fn centre_margin(model: &mut SegModel, input: &[f32]) -> f32 {
        let [_, _, h, w] = model.metadata().input_shape;
        let mut logits = vec![0f32; model.n_classes() * h * w];
        model.run_slice(0, input, &mut logits).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()));
        let centre = (h / 2) * w + w / 2;
        logits[h * w + centre] - logits[centre]
    }

    #[test]
    fn fixture_models_load_and_implement_the_perfusion_rule() {
        let mut margins = Vec::new();
        for precision in [Precision::Fp32, Precision::Int8] {
            let bytes = fixture_model(&FixtureOptions {
                precision,
                ..FixtureOptions::default()
            });
            let mut model = SegModel::from_bytes(&bytes, "fixture").unwrap();
            assert_eq!(model.n_classes(), 2);
            assert_eq!(model.input_len(), 5 * 160 * 160);
            assert_eq!(model.size_bytes(), bytes.len());
            assert_eq!(model.sha256().len(), 64);
            let lesion = uniform_input(&model, 0.02, 0.9);
            let healthy = uniform_input(&model, 0.3, 0.1);
            let penumbra = uniform_input(&model, 0.3, 0.9);
            let m = [
                centre_margin(&mut model, &lesion),
                centre_margin(&mut model, &healthy),
                centre_margin(&mut model, &penumbra),
            ];
            assert!(
                m[0] > 2.0 && m[1] < -2.0 && m[2] < -2.0,
                "{precision:?}: {m:?}"
            );
            margins.push(m);
        }
        // int8 stays within half a logit of fp32.
        for (a, b) in margins[0].iter().zip(&margins[1]) {
            assert!((a - b).abs() < 0.5, "{margins:?}");
        }
    }

    #[test]
    fn the_default_plan_matches_tracts_own_lowering() {
        for precision in [Precision::Fp32, Precision::Int8] {
            let bytes = fixture_model(&FixtureOptions {
                precision,
                ..FixtureOptions::default()
            });
            let mut logits = Vec::new();
            let mut kinds = Vec::new();
            for direct_spatial_conv in [true, false] {
                let options = PlanOptions {
                    direct_spatial_conv,
                };
                let mut model = SegModel::from_bytes_with(&bytes, "fixture", options).unwrap();
                kinds.push(
                    model
                        .plan()
                        .model()
                        .nodes
                        .iter()
                        .filter(|n| n.op().name() == "DirectSpatialConv")
                        .count(),
                );
                let [_, _, h, w] = model.metadata().input_shape;
                let mut out = vec![0f32; model.n_classes() * h * w];
                // A varied input, so every tap of the 3×3 kernels matters.
                let input: Vec<f32> = uniform_input(&model, 0.02, 0.9)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v + (i % 7) as f32 * 0.01)
                    .collect();
                model.run_slice(0, &input, &mut out).unwrap();
                logits.push(out);
            }
            if matches!(precision, Precision::Fp32) && cfg!(target_arch = "x86_64") {
                assert!(kinds[0] > 0 && kinds[1] == 0, "{kinds:?}");
            }
            let max_diff = logits[0]
                .iter()
                .zip(&logits[1])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max_diff < 1e-4, "{precision:?}: max |Δlogit| {max_diff}");
        }
    }

    #[test]
    fn a_wrong_input_length_is_an_inference_error() {
        let bytes = fixture_model(&FixtureOptions::default());
        let mut model = SegModel::from_bytes(&bytes, "fixture").unwrap();
        let mut logits = vec![0f32; 2 * 160 * 160];
        assert!(matches!(
            model.run_slice(3, &[0.0; 10], &mut logits),
            Err(ModelError::Inference { slice_idx: 3, .. })
        ));
    }
}
