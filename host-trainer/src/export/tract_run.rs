//! Running an exported model in tract (the edge runtime's engine) on the host: the parity
//! tests, calibration and the benchmark all go through [`TractModel`].

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::prelude::*;

use super::ExportError;
use super::graph::Range;

/// An ONNX model loaded, optimised and ready to run on `[1, C, H, W]` f32 inputs.
#[derive(Debug)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    input_shape: [usize; 4],
    output_names: Vec<String>,
    label: String,
}

fn input_shape_of(model: &TypedModel, label: &str) -> Result<[usize; 4], ExportError> {
    let fact = model
        .input_fact(0)
        .map_err(|e| ExportError::tract(format!("{label}: input"), &e))?;
    match fact.shape.as_concrete() {
        Some(&[n, c, h, w]) => Ok([n, c, h, w]),
        _ => Err(ExportError::Tract {
            context: label.to_owned(),
            reason: format!("input must have a static shape [N, C, H, W], got {fact:?}"),
        }),
    }
}

impl TractModel {
    /// Loads an ONNX file.
    pub fn load(path: &Path) -> Result<TractModel, ExportError> {
        let bytes = std::fs::read(path).map_err(|e| ExportError::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string(), None)
    }

    /// Loads ONNX bytes; `outputs` replaces the graph outputs by the named tensors (node
    /// names), e.g. to observe intermediate activations for calibration.
    pub fn from_bytes(
        bytes: &[u8],
        label: &str,
        outputs: Option<&[String]>,
    ) -> Result<TractModel, ExportError> {
        strokeseg_model::avoid_faulty_tract_kernels();
        let mut model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut &bytes[..])
            .map_err(|e| ExportError::tract(format!("{label}: loading"), &e))?;
        let output_names = match outputs {
            Some(names) => {
                model
                    .select_outputs_by_name(names)
                    .map_err(|e| ExportError::tract(format!("{label}: selecting outputs"), &e))?;
                names.to_vec()
            }
            None => vec![String::from("output")],
        };
        let optimized = model
            .into_optimized()
            .map_err(|e| ExportError::tract(format!("{label}: optimising"), &e))?;
        let input_shape = input_shape_of(&optimized, label)?;
        let plan = optimized
            .into_runnable()
            .map_err(|e| ExportError::tract(format!("{label}: planning"), &e))?;
        Ok(TractModel {
            plan,
            input_shape,
            output_names,
            label: label.to_owned(),
        })
    }

    /// The static input shape `[1, C, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// Runs one input (`[1, C, H, W]` row-major) and returns every output, flattened.
    pub fn run_all(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, ExportError> {
        let tensor = Tensor::from_shape(&self.input_shape, input)
            .map_err(|e| ExportError::tract(format!("{}: input", self.label), &e))?;
        let outputs = self
            .plan
            .run(tvec!(tensor.into_tvalue()))
            .map_err(|e| ExportError::tract(format!("{}: running", self.label), &e))?;
        outputs
            .iter()
            .map(|t| {
                let t = t
                    .cast_to::<f32>()
                    .map_err(|e| ExportError::tract(format!("{}: output", self.label), &e))?;
                t.to_plain_array_view::<f32>()
                    .map(|v| v.iter().copied().collect())
                    .map_err(|e| ExportError::tract(format!("{}: output", self.label), &e))
            })
            .collect()
    }

    /// Runs one input and returns the first output (the logits `[1, K, H, W]`), flattened.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, ExportError> {
        self.run_all(input)?
            .into_iter()
            .next()
            .ok_or_else(|| ExportError::Tract {
                context: self.label.clone(),
                reason: "model has no output".into(),
            })
    }

    /// Min/max of each selected output over `inputs` (calibration).
    pub(crate) fn ranges(
        &self,
        inputs: &[Vec<f32>],
    ) -> Result<HashMap<String, Range>, ExportError> {
        let mut ranges: Vec<Range> = vec![
            Range {
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
            };
            self.output_names.len()
        ];
        for input in inputs {
            for (range, values) in ranges.iter_mut().zip(self.run_all(input)?) {
                for v in values {
                    range.min = range.min.min(v);
                    range.max = range.max.max(v);
                }
            }
        }
        if let Some((name, _)) = self
            .output_names
            .iter()
            .zip(&ranges)
            .find(|(_, r)| !(r.min.is_finite() && r.max.is_finite()))
        {
            return Err(ExportError::Calibration(format!(
                "tensor `{name}` saw no finite values over {} slices",
                inputs.len()
            )));
        }
        Ok(self.output_names.iter().cloned().zip(ranges).collect())
    }
}
