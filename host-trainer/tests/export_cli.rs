//! `strokeseg-train export` and `model-info` as a user runs them, and what bad inputs give:
//! a corrupt checkpoint, a missing run.json, a run.json that disagrees with the checkpoint,
//! each a clear error naming the file, with nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strokeseg_phantom::DatasetOptions;
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::model_meta::TrainingSummary;
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::export::{self, Checkpoint, ExportError, RunExportOptions};
use strokeseg_trainer::model::{ResUNet, UNetConfig};
use tch::Device;
use tch::nn::{self, ModuleT};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_strokeseg-train");
const UNET: UNetConfig = UNetConfig {
    in_channels: 5,
    n_classes: 2,
    base_width: 4,
    depth: 2,
};

fn preprocess() -> PreprocessConfig {
    PreprocessConfig {
        target_spacing_mm: 6.0,
        input_height: 32,
        input_width: 32,
        ..PreprocessConfig::default()
    }
}

fn train(args: &[&str]) -> std::io::Result<Output> {
    Command::new(BIN)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_json(unet: UNetConfig) -> serde_json::Value {
    serde_json::json!({
        "unet": unet,
        "preprocess": preprocess(),
        "postprocess": PostprocessConfig::default(),
        "training": TrainingSummary {
            data: "phantom".into(),
            loss: "hybrid".into(),
            epochs: 1,
            ..TrainingSummary::default()
        },
        "note": "fields the exporter does not read are ignored",
    })
}

/// A run folder with run.json for `unet` and an untrained `best` checkpoint of `ckpt_unet`
/// (a few train-mode forward passes so BatchNorm statistics are not at init).
fn make_run(dir: &Path, unet: UNetConfig, ckpt_unet: UNetConfig) -> TestResult {
    std::fs::create_dir_all(dir.join("checkpoints"))?;
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&run_json(unet))?,
    )?;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ResUNet::new(&vs.root(), ckpt_unet);
    for _ in 0..3 {
        let x = tch::Tensor::randn([2, 5, 32, 32], (tch::Kind::Float, Device::Cpu));
        let _ = net.forward_t(&x, true);
    }
    vs.save(Checkpoint::Best.path_in(dir))?;
    Ok(())
}

fn options(run: &Path, out: &Path) -> RunExportOptions {
    RunExportOptions {
        run_dir: run.to_path_buf(),
        checkpoint: Checkpoint::Best,
        out_dir: out.to_path_buf(),
        name: None,
        version: "0.1.0".into(),
        int8: None,
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn export_and_model_info_from_the_command_line() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    make_run(&run, UNET, UNET)?;
    let data = tmp.path().join("phantom");
    strokeseg_phantom::write_dataset(
        &data,
        &DatasetOptions {
            n_cases: 2,
            seed: 5,
            min_slices: 2,
            max_slices: 3,
            ..DatasetOptions::default()
        },
    )?;
    let out = tmp.path().join("models").join("tiny");
    let run_s = run.to_string_lossy().into_owned();
    let out_s = out.to_string_lossy().into_owned();
    let data_s = data.to_string_lossy().into_owned();
    let result = train(&[
        "export",
        "--run",
        &run_s,
        "--out",
        &out_s,
        "--int8",
        "--data",
        &data_s,
        "--calibration-slices",
        "4",
    ])?;
    assert!(result.status.success(), "stderr: {}", text(&result.stderr));
    let stdout = text(&result.stdout);
    assert!(stdout.contains("model.int8.onnx"), "{stdout}");
    assert!(stdout.contains("calibrated on 4 slices"), "{stdout}");
    let sums = std::fs::read_to_string(out.join("SHA256SUMS"))?;
    assert_eq!(sums.lines().count(), 2, "{sums}");
    assert!(
        !files_in(&out)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "tmp"))
    );

    for (file, precision) in [("model.onnx", "(fp32)"), ("model.int8.onnx", "(int8)")] {
        let path = out.join(file).to_string_lossy().into_owned();
        let info = train(&["model-info", &path])?;
        assert!(info.status.success(), "stderr: {}", text(&info.stderr));
        let stdout = text(&info.stdout);
        for expected in [
            "input: input float [1, 5, 32, 32]",
            "output: logits float [1, 2, 32, 32]",
            "tiny 0.1.0",
            precision,
            "checkpoint sha256:",
            "Conv",
        ] {
            assert!(
                stdout.contains(expected),
                "missing {expected:?} in\n{stdout}"
            );
        }
        assert!(!stdout.contains("metadata problem"), "{stdout}");
    }

    let not_onnx = tmp.path().join("run").join("run.json");
    let info = train(&["model-info", &not_onnx.to_string_lossy()])?;
    assert!(!info.status.success());
    assert!(
        text(&info.stderr).contains("run.json"),
        "{}",
        text(&info.stderr)
    );
    Ok(())
}

#[test]
fn missing_run_json_is_named_and_nothing_is_written() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run)?;
    let out = tmp.path().join("out");
    let err = export::export_run(&options(&run, &out)).err();
    match &err {
        Some(ExportError::MissingRunConfig { path }) => assert!(path.ends_with("run.json")),
        other => panic!("expected MissingRunConfig, got {other:?}"),
    }
    assert!(err.is_some_and(|e| e.to_string().contains("run.json")));
    assert!(!out.exists());

    let result = train(&[
        "export",
        "--run",
        &run.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
    ])?;
    assert!(!result.status.success());
    assert!(
        text(&result.stderr).contains("run.json"),
        "{}",
        text(&result.stderr)
    );
    Ok(())
}

#[test]
fn corrupt_checkpoint_is_named_and_nothing_is_written() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    make_run(&run, UNET, UNET)?;
    let checkpoint = Checkpoint::Best.path_in(&run);
    let bytes = std::fs::read(&checkpoint)?;
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2])?;
    let out = tmp.path().join("out");
    let err = export::export_run(&options(&run, &out)).err();
    match &err {
        Some(ExportError::CorruptCheckpoint { path, .. }) => assert_eq!(path, &checkpoint),
        other => panic!("expected CorruptCheckpoint, got {other:?}"),
    }
    assert!(!out.exists());

    std::fs::remove_file(&checkpoint)?;
    let err = export::export_run(&options(&run, &out)).err();
    assert!(
        matches!(&err, Some(ExportError::MissingCheckpoint { path }) if path == &checkpoint),
        "{err:?}"
    );
    let last = RunExportOptions {
        checkpoint: Checkpoint::Last,
        ..options(&run, &out)
    };
    let err = export::export_run(&last).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("last.safetensors")),
        "{err:?}"
    );
    assert!(!out.exists());
    Ok(())
}

#[test]
fn mismatched_config_is_named_and_nothing_is_written() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");

    // run.json says base width 8, the checkpoint has base width 4.
    let run = tmp.path().join("wider");
    make_run(
        &run,
        UNetConfig {
            base_width: 8,
            ..UNET
        },
        UNET,
    )?;
    let err = export::export_run(&options(&run, &out)).err();
    match &err {
        Some(ExportError::ParameterShape {
            source_name,
            expected,
            got,
            ..
        }) => {
            assert!(source_name.ends_with("best.safetensors"), "{source_name}");
            assert_ne!(expected, got);
        }
        other => panic!("expected ParameterShape, got {other:?}"),
    }

    // run.json says depth 3, the checkpoint has depth 2.
    let run = tmp.path().join("deeper");
    make_run(&run, UNetConfig { depth: 3, ..UNET }, UNET)?;
    let err = export::export_run(&options(&run, &out)).err();
    assert!(
        matches!(err, Some(ExportError::MissingParameter { .. })),
        "{err:?}"
    );

    // run.json's network takes 4 channels, its preprocessing gives 5.
    let run = tmp.path().join("channels");
    let four = UNetConfig {
        in_channels: 4,
        ..UNET
    };
    make_run(&run, four, UNET)?;
    // The checkpoint must match the network for the metadata check to be reached.
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = ResUNet::new(&vs.root(), four);
    vs.save(Checkpoint::Best.path_in(&run))?;
    let err = export::export_run(&options(&run, &out)).err();
    match &err {
        Some(ExportError::ConfigMismatch { context, reason }) => {
            assert!(context.contains("run.json"), "{context}");
            assert!(reason.contains("5 channels"), "{reason}");
        }
        other => panic!("expected ConfigMismatch, got {other:?}"),
    }

    // Unparseable run.json.
    let run = tmp.path().join("garbled");
    make_run(&run, UNET, UNET)?;
    std::fs::write(run.join("run.json"), "{\"unet\": 3")?;
    let err = export::export_run(&options(&run, &out)).err();
    assert!(
        matches!(&err, Some(ExportError::RunConfig { path, .. }) if path.ends_with("run.json")),
        "{err:?}"
    );
    assert!(!out.exists());
    Ok(())
}
