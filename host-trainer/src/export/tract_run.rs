//! Running an exported model in tract (the edge runtime's engine) on the host: the parity
//! tests, calibration and the benchmark all go through [`TractModel`].

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::prelude::*;

use super::ExportError;
use super::graph::{Range, RangeRule};

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

    /// The quantisation range of each selected output over `inputs` (calibration), by
    /// `rule`: min/max in one pass; a percentile in a second pass over a histogram spanning
    /// the first pass's min/max.
    pub(crate) fn ranges(
        &self,
        inputs: &[Vec<f32>],
        rule: RangeRule,
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
        if let RangeRule::Percentile { percent } = rule {
            let mut histograms: Vec<Histogram> =
                ranges.iter().map(|r| Histogram::new(*r)).collect();
            for input in inputs {
                for (hist, values) in histograms.iter_mut().zip(self.run_all(input)?) {
                    hist.add_all(&values);
                }
            }
            for (range, hist) in ranges.iter_mut().zip(&histograms) {
                *range = hist.central(percent);
            }
        }
        Ok(self.output_names.iter().cloned().zip(ranges).collect())
    }
}

/// Counts of values in equal bins over a known range.
pub(crate) struct Histogram {
    range: Range,
    counts: Vec<u64>,
}

impl Histogram {
    const BINS: usize = 4096;

    pub(crate) fn new(range: Range) -> Histogram {
        Histogram {
            range,
            counts: vec![0; Self::BINS],
        }
    }

    pub(crate) fn add_all(&mut self, values: &[f32]) {
        let width = self.range.max - self.range.min;
        let scale = if width > 0.0 {
            Self::BINS as f32 / width
        } else {
            0.0
        };
        for &v in values {
            if v.is_finite() {
                let bin = ((v - self.range.min) * scale) as usize;
                if let Some(c) = self.counts.get_mut(bin.min(Self::BINS - 1)) {
                    *c += 1;
                }
            }
        }
    }

    /// The range holding the central `percent` % of the values, at bin edges (the
    /// quantiser keeps zero exact whatever the range).
    pub(crate) fn central(&self, percent: f32) -> Range {
        let total: u64 = self.counts.iter().sum();
        let tail = ((1.0 - f64::from(percent) / 100.0) / 2.0 * total as f64).floor() as u64;
        let bin_width = (self.range.max - self.range.min) / Self::BINS as f32;
        let mut seen = 0;
        let mut lo_bin = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            if seen + c > tail {
                lo_bin = i;
                break;
            }
            seen += c;
        }
        seen = 0;
        let mut hi_bin = Self::BINS - 1;
        for (i, &c) in self.counts.iter().enumerate().rev() {
            if seen + c > tail {
                hi_bin = i;
                break;
            }
            seen += c;
        }
        let min = self.range.min + lo_bin as f32 * bin_width;
        let max = self.range.min + (hi_bin + 1) as f32 * bin_width;
        Range {
            min: min.max(self.range.min),
            max: max.min(self.range.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_central_percentile_clips_outliers_and_keeps_zero() {
        // 10,000 values in [0, 1] and one outlier at 100: min/max would make the step 100×
        // too coarse for every other value.
        let mut values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        values.push(100.0);
        let mut hist = Histogram::new(Range {
            min: 0.0,
            max: 100.0,
        });
        hist.add_all(&values);
        let r = hist.central(99.9);
        assert_eq!(r.min, 0.0);
        assert!(r.max > 0.99 && r.max < 1.1, "{r:?}");
        // Keeping everything gives the full range back.
        let all = hist.central(100.0);
        assert_eq!((all.min, all.max), (0.0, 100.0));
        // Both tails are clipped.
        let mut sym = Histogram::new(Range {
            min: -100.0,
            max: 100.0,
        });
        sym.add_all(&[-100.0, -1.0, -0.5, 0.0, 0.5, 1.0, 100.0]);
        let r = sym.central(60.0);
        assert!(r.min > -1.2 && r.max < 1.2, "{r:?}");
    }
}
