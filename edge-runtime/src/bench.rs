//! `strokeseg-edge bench`: how fast a model runs here. Loads any model the edge accepts
//! (the embedded default when none is given), feeds it one realistic input of its own shape
//! (a middle slice of a generated phantom study, prepared by the shared preprocessing
//! exactly as `segment` prepares it, or a raw `[C, H, W]` f32 file), and reports per-slice
//! latency percentiles, the model's multiply-accumulates per slice (tract's cost model over
//! the optimised plan's convolutions and matrix products), GFLOP/s, the tract kernels the
//! plan selected, the CPU features tract found, and peak RSS.
//!
//! FLOPs are 2 × MACs of the convolution and matrix-product ops of the plan (`OptMatMul`,
//! `DirectSpatialConv`, depth-wise convolution): what onnxruntime's figures for the same file
//! count, not tract's padding or element-wise work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use strokeseg_io::{GridTolerance, IoError, ReadLimits, SlicePreparer, Study};
use strokeseg_phantom::DatasetOptions;
use strokeseg_shared::Modality;
use tract_linalg::MmmDispatch;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;

use crate::EdgeError;
use crate::model::SegModel;

/// What to measure and how.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// The ONNX file (`None`: the embedded default model).
    pub model: Option<PathBuf>,
    /// Timed runs (at least 1).
    pub reps: usize,
    /// Untimed runs before them (tract's first run allocates its buffers).
    pub warmup: usize,
    /// A raw little-endian f32 `[C, H, W]` input instead of the phantom slice.
    pub input: Option<PathBuf>,
    /// Write the input used, raw little-endian f32 `[C, H, W]`.
    pub dump_input: Option<PathBuf>,
    /// Write the logits of the input, raw little-endian f32 `[K, H, W]`.
    pub dump_output: Option<PathBuf>,
}

/// Per-slice latency, milliseconds (nearest-rank percentiles of the timed runs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// Fastest run.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest run.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencyMs {
    /// The percentiles of `samples_ms` (not empty; NaN figures otherwise).
    pub fn of(samples_ms: &[f64]) -> LatencyMs {
        let mut v = samples_ms.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            if v.is_empty() {
                return f64::NAN;
            }
            // Nearest rank: the smallest sample with at least p of them at or below it.
            let k = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[k - 1]
        };
        LatencyMs {
            min: rank(0.0),
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: rank(1.0),
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        }
    }
}

/// What tract made of the model: op counts, matrix kernels, conv/matmul work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Nodes of the optimised plan by op name.
    pub ops: BTreeMap<String, usize>,
    /// Matrix-multiplication kernels the plan's `OptMatMul` nodes use, by kernel name
    /// (e.g. `avx512_mmm_f32_32x12`, `arm64simd_mmm_i32_8x8`), with their node count.
    pub kernels: BTreeMap<String, usize>,
    /// Multiply-accumulates of one run in convolutions and matrix products.
    pub macs: u64,
}

/// The plan's op names whose FMA cost counts as the model's multiply-accumulates.
const MAC_OPS: &[&str] = &["OptMatMul", "DirectSpatialConv", "DepthWise"];

/// Summarises `model`'s optimised plan.
pub fn plan_summary(model: &SegModel) -> Result<PlanSummary, EdgeError> {
    let graph = model.plan().model();
    let fail = |e: TractError| {
        EdgeError::from(crate::ModelError::Load {
            source_name: model.source().to_owned(),
            reason: format!("cost of the plan: {e:#}"),
        })
    };
    let mut summary = PlanSummary::default();
    for node in graph.nodes() {
        let name = node.op().name().to_string();
        if let Some(mm) = node.op_as::<OptMatMul>() {
            for kernel in &mm.mmm {
                *summary.kernels.entry(kernel.name().to_owned()).or_default() += 1;
            }
        }
        if MAC_OPS.contains(&name.as_str()) {
            let inputs = graph.node_input_facts(node.id).map_err(fail)?;
            for (cost, count) in node.op.cost(&inputs).map_err(fail)? {
                if let Cost::FMA(_) = cost {
                    summary.macs += count.to_i64().map_err(|e| fail(e.into()))?.max(0) as u64;
                }
            }
        }
        *summary.ops.entry(name).or_default() += 1;
    }
    Ok(summary)
}

/// The CPU as tract sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuSummary {
    /// Target architecture of this build.
    pub arch: String,
    /// Instruction-set features tract detected (after `TRACT_CPU_ISA` and our own
    /// exclusions), e.g. `fma`, `avx512vnni`, `dotprod`, `fp16`.
    pub isa: Vec<String>,
    /// Whether the CPU has half-precision arithmetic (Armv8.2 FEAT_FP16).
    pub fp16_arithmetic: bool,
    /// Non-emulated f16 matrix kernels tract could run here.
    pub f16_kernels: Vec<String>,
    /// Non-emulated i32-accumulating (int8) matrix kernels tract could run here.
    pub int8_kernels: Vec<String>,
}

/// What tract found about this CPU.
pub fn cpu_summary() -> CpuSummary {
    let runnable = MmmDispatch::native().runnable();
    let kernels = |dt: DatumType| {
        runnable
            .iter()
            .filter(|k| k.internal_type() == dt && !k.emulated())
            .map(|k| k.name().to_owned())
            .collect()
    };
    CpuSummary {
        arch: std::env::consts::ARCH.to_owned(),
        isa: tract_linalg::isa::native()
            .iter()
            .map(|i| i.name().to_owned())
            .collect(),
        fp16_arithmetic: tract_linalg::has_fp16(),
        f16_kernels: kernels(f16::datum_type()),
        int8_kernels: kernels(i32::datum_type()),
    }
}

/// Everything `bench` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Where the model came from.
    pub model: String,
    /// The model's name and version from its metadata.
    pub name: String,
    /// The model's version.
    pub version: String,
    /// `fp32` or `int8`.
    pub precision: String,
    /// SHA-256 of the ONNX bytes (hex).
    pub sha256: String,
    /// Input shape `[1, C, H, W]`.
    pub input_shape: [usize; 4],
    /// What the input was.
    pub input: String,
    /// Threads tract ran on.
    pub threads: usize,
    /// Timed runs.
    pub reps: usize,
    /// Untimed runs before them.
    pub warmup: usize,
    /// Loading and optimising the model, milliseconds.
    pub load_ms: f64,
    /// Per-slice latency.
    pub latency_ms: LatencyMs,
    /// Multiply-accumulates per slice (convolutions and matrix products).
    pub macs_per_slice: u64,
    /// `2 · macs_per_slice`.
    pub flops_per_slice: u64,
    /// `flops_per_slice / p50`, GFLOP/s.
    pub gflops_per_s: f64,
    /// The optimised plan.
    pub plan: PlanSummary,
    /// The CPU as tract sees it.
    pub cpu: CpuSummary,
    /// Peak resident memory of the process, KiB (`VmHWM`; absent off Linux).
    pub peak_rss_kib: Option<u64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.latency_ms;
        writeln!(
            f,
            "model        {} ({} {}, {})",
            self.model, self.name, self.version, self.precision
        )?;
        writeln!(f, "input        {:?}, {}", self.input_shape, self.input)?;
        writeln!(f, "threads      {}", self.threads)?;
        writeln!(
            f,
            "latency      p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms (min {:.2}, max {:.2}; {} runs after {} warm-up)",
            l.p50, l.p90, l.p99, l.min, l.max, self.reps, self.warmup
        )?;
        writeln!(
            f,
            "work         {:.3} GFLOP per slice ({} MACs), {:.1} GFLOP/s at p50",
            self.flops_per_slice as f64 / 1e9,
            self.macs_per_slice,
            self.gflops_per_s
        )?;
        let kernels: Vec<String> = self
            .plan
            .kernels
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        writeln!(f, "kernels      {}", kernels.join(", "))?;
        let ops: Vec<String> = self
            .plan
            .ops
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        writeln!(f, "plan         {}", ops.join(", "))?;
        writeln!(
            f,
            "cpu          {} [{}], fp16 arithmetic {}, f16 kernels {}, int8 kernels {}",
            self.cpu.arch,
            self.cpu.isa.join(" "),
            if self.cpu.fp16_arithmetic {
                "yes"
            } else {
                "no"
            },
            self.cpu.f16_kernels.len(),
            self.cpu.int8_kernels.len()
        )?;
        writeln!(f, "load         {:.0} ms", self.load_ms)?;
        match self.peak_rss_kib {
            Some(k) => write!(f, "peak RSS     {:.1} MiB", k as f64 / 1024.0),
            None => write!(f, "peak RSS     unknown"),
        }
    }
}

/// Reads a raw little-endian f32 file of exactly `len` values.
fn read_f32_file(path: &Path, len: usize) -> Result<Vec<f32>, EdgeError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::io(path, e))?;
    if bytes.len() != 4 * len {
        return Err(EdgeError::Settings {
            path: path.to_path_buf(),
            reason: format!(
                "input has {} bytes; the model takes {len} f32 values ({} bytes, little-endian [C, H, W])",
                bytes.len(),
                4 * len
            ),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Writes `values` as raw little-endian f32 (atomically).
fn write_f32_file(path: &Path, values: &[f32]) -> Result<(), EdgeError> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    strokeseg_io::atomic::write_atomically(path, &bytes).map_err(EdgeError::writing)
}

/// Removes the generated phantom study when dropped.
struct TempStudy(PathBuf);

impl Drop for TempStudy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The middle slice of a 5-slice phantom study (seed 5, first case), prepared for `model`
/// by the shared preprocessing as `segment` prepares it: brain-normalised, resampled to the
/// model grid.
pub fn phantom_input(model: &SegModel) -> Result<(Vec<f32>, String), EdgeError> {
    let n_slices = 5;
    let opts = DatasetOptions {
        n_cases: 1,
        seed: 5,
        min_slices: n_slices,
        max_slices: n_slices,
        lesion_free_fraction: 0.0,
        ..DatasetOptions::default()
    };
    let case = strokeseg_phantom::generate_case(opts.seed, 0, &opts)?;
    let dir = TempStudy(std::env::temp_dir().join(format!(
        "strokeseg-bench-{}-{}",
        std::process::id(),
        model.sha256().get(..12).unwrap_or("model")
    )));
    strokeseg_phantom::write_case(&dir.0, &case, opts.first_file_id, false, false)?;
    drop(case);
    let config = &model.metadata().preprocess;
    let channels: Vec<Modality> = config.channels.iter().map(|c| c.modality).collect();
    let files = strokeseg_io::CaseFiles::discover(&dir.0)?;
    let mut study = Study::open_files(
        files,
        &channels,
        false,
        &ReadLimits::default(),
        GridTolerance::default(),
    )?;
    let stats = study.gather_stats(config)?;
    let mut preparer = SlicePreparer::new(&study, config, stats.norm.clone())?;
    let mut input = vec![0f32; model.input_len()];
    let z = study.n_slices() / 2;
    preparer.prepare(&mut study, z, &mut input)?;
    Ok((
        input,
        format!(
            "phantom slice {z} of {n_slices} (seed {}, lesion)",
            opts.seed
        ),
    ))
}

/// Loads the model, runs it `warmup + reps` times on one input and reports. The thread count
/// is whatever [`crate::threads::set_threads`] set before.
pub fn run_bench(options: &BenchOptions) -> Result<BenchReport, EdgeError> {
    let t = Instant::now();
    let mut model = SegModel::from_path_or_embedded(options.model.as_deref())?;
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (input, what) = match &options.input {
        Some(path) => (
            read_f32_file(path, model.input_len())?,
            format!("{} (raw f32)", path.display()),
        ),
        None => phantom_input(&model)?,
    };
    if let Some(path) = &options.dump_input {
        write_f32_file(path, &input)?;
    }
    let [_, _, h, w] = model.metadata().input_shape;
    let mut logits = vec![0f32; model.n_classes() * h * w];
    for _ in 0..options.warmup {
        model.run_slice(0, &input, &mut logits)?;
    }
    let reps = options.reps.max(1);
    let mut samples_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        model.run_slice(0, &input, &mut logits)?;
        samples_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    if let Some(path) = &options.dump_output {
        write_f32_file(path, &logits)?;
    }
    let plan = plan_summary(&model)?;
    let latency_ms = LatencyMs::of(&samples_ms);
    let flops = 2 * plan.macs;
    let meta = model.metadata();
    Ok(BenchReport {
        model: model.source().to_owned(),
        name: meta.name.clone(),
        version: meta.version.clone(),
        precision: meta.precision.clone(),
        sha256: model.sha256().to_owned(),
        input_shape: meta.input_shape,
        input: what,
        threads: crate::threads::current_threads(),
        reps,
        warmup: options.warmup,
        load_ms,
        latency_ms,
        macs_per_slice: plan.macs,
        flops_per_slice: flops,
        gflops_per_s: flops as f64 / (latency_ms.p50 * 1e6),
        plan,
        cpu: cpu_summary(),
        peak_rss_kib: crate::report::peak_rss_kib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = LatencyMs::of(&samples);
        assert_eq!(
            (l.min, l.p50, l.p90, l.p99, l.max),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert!((l.mean - 50.5).abs() < 1e-9);
        let one = LatencyMs::of(&[3.0]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
    }
}
