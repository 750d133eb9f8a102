//! Benchmark, not a test (ignored by default; asserts nothing about time): per-slice
//! latency of the default-size ResUNet (base 16, depth 4, 5 × 160 × 160) in tract, fp32 vs
//! int8, single thread, same input, plus FLOPs per slice, achieved GFLOP/s and model sizes.
//!
//! ```text
//! cargo test --release -p strokeseg-trainer --test export_bench -- --ignored --nocapture
//! .cache/venv-onnx/bin/python tests/scripts/check_onnx.py target/tmp/export-bench --bench
//! ```
//!
//! The second line times the same two models in onnxruntime (one thread) and checks them
//! against tract's outputs, which this benchmark leaves beside them. The weights are
//! untrained (BatchNorm statistics from a few train-mode passes over phantom slices):
//! latency does not depend on what the network learned.

use std::path::{Path, PathBuf};
use std::time::Instant;

use strokeseg_phantom::DatasetOptions;
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::model_meta::TrainingSummary;
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::export::{self, ModelDescription, TractModel, UNetWeights};
use strokeseg_trainer::model::{ResUNet, UNetConfig};
use tch::Device;
use tch::nn::{self, ModuleT};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const RUNS: usize = 20;
const WARMUP: usize = 3;

fn median_ms(model: &TractModel, input: &[f32]) -> Result<f64, Box<dyn std::error::Error>> {
    for _ in 0..WARMUP {
        model.run(input)?;
    }
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        model.run(input)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(RUNS / 2).copied().unwrap_or(f64::NAN))
}

fn write_f32(path: &Path, values: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture, preferably --release"]
fn tract_latency_fp32_vs_int8() -> TestResult {
    let config = UNetConfig::default();
    let preprocess = PreprocessConfig::default();
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("phantom");
    strokeseg_phantom::write_dataset(
        &data,
        &DatasetOptions {
            n_cases: 2,
            seed: 3,
            lesion_free_fraction: 0.0,
            ..DatasetOptions::default()
        },
    )?;
    let calibration = export::calibration_inputs(&data, &preprocess, 16, None)?;
    let [c, h, w] = [
        preprocess.n_channels(),
        usize::from(preprocess.input_height),
        usize::from(preprocess.input_width),
    ];

    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ResUNet::new(&vs.root(), config);
    let flat: Vec<f32> = calibration.iter().flatten().copied().collect();
    let batch = tch::Tensor::from_slice(&flat).view([
        calibration.len() as i64,
        c as i64,
        h as i64,
        w as i64,
    ]);
    for _ in 0..3 {
        let _ = net.forward_t(&batch, true);
    }
    let weights = UNetWeights::from_var_store(&vs, config)?;
    let description = ModelDescription::new(
        "strokeseg-bench",
        preprocess.clone(),
        PostprocessConfig::default(),
        TrainingSummary::default(),
    );
    let metadata = export::model_metadata(&config, &description, "untrained");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("export-bench");
    std::fs::create_dir_all(&out)?;
    let fp32_path = out.join("model.onnx");
    let int8_path = out.join("model.int8.onnx");
    let fp32_file = export::export_fp32(&weights, &metadata, &fp32_path)?;
    let int8_file = export::export_int8(
        &weights,
        &metadata,
        &calibration,
        export::RangeRule::MinMax,
        &int8_path,
    )?;

    let fp32 = TractModel::load(&fp32_path)?;
    let int8 = TractModel::load(&int8_path)?;
    let input = calibration.first().ok_or("no calibration slice")?;
    let macs = weights.fold().macs_per_slice(h, w);
    let gflop = 2.0 * macs as f64 / 1e9;
    let fp32_ms = median_ms(&fp32, input)?;
    let int8_ms = median_ms(&int8, input)?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "bench model: ResUNet base {} depth {}, input [1, {c}, {h}, {w}], {gflop:.3} GFLOP per slice ({profile} build)",
        config.base_width, config.depth
    );
    for (label, ms, file) in [("fp32", fp32_ms, &fp32_file), ("int8", int8_ms, &int8_file)] {
        println!(
            "bench tract {label}: {ms:.2} ms/slice (median of {RUNS}, 1 thread), {:.2} GFLOP/s, model {:.3} MB",
            gflop / (ms / 1e3),
            file.bytes as f64 / 1e6
        );
    }
    println!(
        "bench tract int8/fp32 latency ratio: {:.2}",
        int8_ms / fp32_ms
    );

    // Leave the models, the input and tract's outputs for check_onnx.py --bench.
    write_f32(&out.join("inputs.f32"), input)?;
    write_f32(&out.join("fp32_logits.f32"), &fp32.run(input)?)?;
    write_f32(&out.join("int8_logits.f32"), &int8.run(input)?)?;
    let fixture = serde_json::json!({
        "about": "written by host-trainer/tests/export_bench.rs (untrained default-size model)",
        "n_slices": 1,
        "input_shape": [1, c, h, w],
        "output_shape": [1, config.n_classes, h, w],
        "input_name": metadata.input_name,
        "output_name": metadata.output_name,
        "inputs": "inputs.f32",
        "check_int8_agreement": false,
        "models": [
            {"file": "model.onnx", "precision": "fp32", "tract_outputs": "fp32_logits.f32"},
            {"file": "model.int8.onnx", "precision": "int8", "tract_outputs": "int8_logits.f32"},
        ],
    });
    std::fs::write(
        out.join("fixture.json"),
        serde_json::to_string_pretty(&fixture)?,
    )?;
    Ok(())
}
