//! The exported models against tch and against each other, on phantom cases.
//!
//! A small ResUNet (base width 8, depth 2, 5 × 64 × 64 inputs) is overfitted for a few
//! hundred Adam steps on the slices of three phantom cases, so its BatchNorm statistics
//! and weights are far from their initial values and it predicts lesions. Then:
//! - tch eval forward vs tract fp32: max |Δlogit| ≤ 1e-4 on every slice;
//! - tract int8 vs tract fp32 on those cases and one held-out case: argmax agreement
//!   ≥ 99.5 % of voxels, Dice between the lesion masks ≥ 0.98.
//!
//! The test also leaves the two models, its inputs and tract's outputs in
//! `$CARGO_TARGET_TMPDIR/export-check/` for `tests/scripts/check_onnx.py` (onnx checker and
//! onnxruntime against tract), which `cargo xtask ci onnx-check` runs.

use std::path::{Path, PathBuf};

use strokeseg_model::ModelInfo;
use strokeseg_phantom::DatasetOptions;
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::model_meta::{METADATA_KEY, ModelMetadata, TrainingSummary};
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::export::{self, ModelDescription, PreparedSlice, TractModel, UNetWeights};
use strokeseg_trainer::model::{ResUNet, UNetConfig};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SEED: i64 = 20180;
const TRAIN_STEPS: usize = 300;
const UNET: UNetConfig = UNetConfig {
    in_channels: 5,
    n_classes: 2,
    base_width: 8,
    depth: 2,
};

fn preprocess() -> PreprocessConfig {
    PreprocessConfig {
        target_spacing_mm: 4.0,
        input_height: 64,
        input_width: 64,
        ..PreprocessConfig::default()
    }
}

/// Three training cases and one held-out case, every one with a lesion.
fn phantom_cases(
    dir: &Path,
) -> Result<(Vec<PreparedSlice>, Vec<PreparedSlice>), Box<dyn std::error::Error>> {
    let options = DatasetOptions {
        n_cases: 4,
        seed: 41,
        lesion_free_fraction: 0.0,
        two_slab_fraction: 0.0,
        min_slices: 6,
        max_slices: 8,
        ..DatasetOptions::default()
    };
    strokeseg_phantom::write_dataset(dir, &options)?;
    let config = preprocess();
    let mut train = Vec::new();
    let mut held_out = Vec::new();
    for k in 1..=options.n_cases {
        let files = strokeseg_io::CaseFiles::discover(&dir.join(format!("case_{k}")))?;
        let slices = export::prepare_study(&files, &config, true)?;
        let with_brain = slices.into_iter().filter(|s| s.brain_voxels > 0);
        if k < options.n_cases {
            train.extend(with_brain);
        } else {
            held_out.extend(with_brain);
        }
    }
    Ok((train, held_out))
}

fn stack_inputs(slices: &[PreparedSlice]) -> Tensor {
    let flat: Vec<f32> = slices
        .iter()
        .flat_map(|s| s.input.iter().copied())
        .collect();
    Tensor::from_slice(&flat).view([slices.len() as i64, 5, 64, 64])
}

/// Overfits the net on `slices` (weighted cross-entropy, Adam); BatchNorm runs in train
/// mode throughout, so its running statistics move far from (0, 1).
fn train(slices: &[PreparedSlice]) -> Result<(nn::VarStore, ResUNet), Box<dyn std::error::Error>> {
    tch::manual_seed(SEED);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ResUNet::new(&vs.root(), UNET);
    let mut optimizer = nn::Adam::default().build(&vs, 3e-3)?;
    let x = stack_inputs(slices);
    let labels: Vec<i64> = slices
        .iter()
        .flat_map(|s| s.truth.iter().flatten().map(|&t| i64::from(t)))
        .collect();
    let y = Tensor::from_slice(&labels).view([slices.len() as i64, 64, 64]);
    let weight = Tensor::from_slice(&[1.0f32, 4.0]);
    for _ in 0..TRAIN_STEPS {
        let logits = net.forward_t(&x, true);
        let loss = logits.f_cross_entropy_loss(&y, Some(&weight), Reduction::Mean, -100, 0.0)?;
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
    }
    Ok((vs, net))
}

fn argmax_masks(logits: &[f32], hw: usize) -> Vec<u8> {
    let (background, lesion) = logits.split_at(hw);
    background
        .iter()
        .zip(lesion)
        .map(|(b, l)| u8::from(l > b))
        .collect()
}

fn dice(a: &[u8], b: &[u8]) -> f64 {
    let both = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x == 1 && **y == 1)
        .count();
    let total = a.iter().chain(b).filter(|x| **x == 1).count();
    if total == 0 {
        1.0
    } else {
        2.0 * both as f64 / total as f64
    }
}

fn write_f32(path: &Path, values: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

fn check_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("export-check")
}

#[test]
fn exported_models_match_tch_and_each_other() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (train_slices, held_out) = phantom_cases(&tmp.path().join("phantom"))?;
    assert!(
        train_slices.len() >= 12,
        "{} training slices",
        train_slices.len()
    );
    let (vs, net) = train(&train_slices)?;

    // The BatchNorm statistics really moved.
    let vars = vs.variables();
    let running_var = vars
        .get("enc1.bn1.running_var")
        .ok_or("no enc1.bn1.running_var")?;
    let max_dev = f64::try_from((running_var - 1.0).abs().max())?;
    assert!(
        max_dev > 0.05,
        "running_var still at init (max |σ² − 1| = {max_dev})"
    );

    let checkpoint = tmp.path().join("best.safetensors");
    vs.save(&checkpoint)?;
    let (weights, sha256) = UNetWeights::from_checkpoint(&checkpoint, UNET)?;
    let description = ModelDescription::new(
        "strokeseg-test",
        preprocess(),
        PostprocessConfig::default(),
        TrainingSummary {
            data: "phantom seed 41, 3 cases".into(),
            loss: "ce".into(),
            epochs: TRAIN_STEPS as u32,
            seed: SEED as u64,
            ..TrainingSummary::default()
        },
    );
    let metadata = export::model_metadata(&UNET, &description, &sha256);

    let out = check_dir();
    std::fs::create_dir_all(&out)?;
    let fp32_path = out.join("model.onnx");
    let int8_path = out.join("model.int8.onnx");
    let fp32_written = export::export_fp32(&weights, &metadata, &fp32_path)?;
    let calibration: Vec<Vec<f32>> = train_slices.iter().map(|s| s.input.clone()).collect();
    let int8_written = export::export_int8(
        &weights,
        &metadata,
        &calibration,
        export::RangeRule::MinMax,
        &int8_path,
    )?;
    assert_eq!(fp32_written.metadata.precision, "fp32");
    assert_eq!(int8_written.metadata.precision, "int8");

    // The metadata round-trips through the file.
    for path in [&fp32_path, &int8_path] {
        let info = ModelInfo::read(path)?;
        let meta: &ModelMetadata = info.metadata.as_ref().ok_or("no metadata")?;
        assert_eq!(info.metadata_problem, None, "{}", path.display());
        assert_eq!(meta.preprocess, preprocess());
        assert_eq!(meta.input_shape, [1, 5, 64, 64]);
        assert_eq!(meta.source_checkpoint_sha256, sha256);
        assert_eq!(
            info.inputs.first().map(|i| i.shape.clone()),
            Some(vec![Some(1), Some(5), Some(64), Some(64)])
        );
        assert!(info.to_string().contains(METADATA_KEY));
    }
    let int8_info = ModelInfo::read(&int8_path)?;
    let n_qconv = int8_info.operators.get("QLinearConv").copied().unwrap_or(0);
    assert_eq!(n_qconv, 2 * 5 + 5, "ops: {:?}", int8_info.operators);

    let fp32 = TractModel::load(&fp32_path)?;
    let int8 = TractModel::load(&int8_path)?;
    let hw = 64 * 64;

    // tch eval vs tract fp32.
    let tch_logits = net.forward_t(&stack_inputs(&train_slices), false);
    let tch_flat = Vec::<f32>::try_from(tch_logits.to_kind(Kind::Float).flatten(0, -1))?;
    let mut max_delta = 0f32;
    let mut max_abs = 0f32;
    for (slice, expected) in train_slices.iter().zip(tch_flat.chunks_exact(2 * hw)) {
        let got = fp32.run(&slice.input)?;
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            max_delta = max_delta.max((g - e).abs());
            max_abs = max_abs.max(e.abs());
        }
    }
    println!("tch vs tract fp32: max |Δlogit| {max_delta:.3e} (max |logit| {max_abs:.2})");
    assert!(max_delta <= 1e-4, "max |Δlogit| {max_delta}");

    // tract int8 vs tract fp32, and the fixture for onnxruntime.
    let mut agree = 0usize;
    let mut voxels = 0usize;
    let (mut fp32_masks, mut int8_masks, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    let (mut inputs, mut fp32_out, mut int8_out) = (Vec::new(), Vec::new(), Vec::new());
    for slice in train_slices.iter().chain(&held_out) {
        let a = fp32.run(&slice.input)?;
        let b = int8.run(&slice.input)?;
        let (ma, mb) = (argmax_masks(&a, hw), argmax_masks(&b, hw));
        agree += ma.iter().zip(&mb).filter(|(x, y)| x == y).count();
        voxels += hw;
        fp32_masks.extend(ma);
        int8_masks.extend(mb);
        truth.extend(slice.truth.iter().flatten().copied());
        inputs.extend_from_slice(&slice.input);
        fp32_out.extend(a);
        int8_out.extend(b);
    }
    let agreement = agree as f64 / voxels as f64;
    let dice_int8_fp32 = dice(&fp32_masks, &int8_masks);
    let fp32_lesion = fp32_masks.iter().filter(|m| **m == 1).count();
    let dice_fp32_truth = dice(&fp32_masks, &truth);
    println!(
        "int8 vs fp32 over {} slices: argmax agreement {:.4} %, Dice {dice_int8_fp32:.4}; fp32 predicts {fp32_lesion} lesion voxels, Dice vs truth {dice_fp32_truth:.3}",
        voxels / hw,
        100.0 * agreement
    );
    assert!(
        fp32_lesion >= 500,
        "the net predicts too little lesion ({fp32_lesion} voxels) for a meaningful Dice"
    );
    assert!(
        dice_fp32_truth >= 0.5,
        "the net did not learn the lesions (Dice {dice_fp32_truth})"
    );
    assert!(agreement >= 0.995, "argmax agreement {agreement}");
    assert!(dice_int8_fp32 >= 0.98, "Dice int8 vs fp32 {dice_int8_fp32}");

    // Percentile calibration: clipped ranges give another model that still agrees.
    let p_path = tmp.path().join("model.int8.p99.onnx");
    export::export_int8(
        &weights,
        &metadata,
        &calibration,
        export::RangeRule::Percentile { percent: 99.9 },
        &p_path,
    )?;
    assert_ne!(std::fs::read(&p_path)?, std::fs::read(&int8_path)?);
    let int8_p = TractModel::load(&p_path)?;
    let (mut agree_p, mut fp32_p, mut int8_pm) = (0usize, Vec::new(), Vec::new());
    for slice in train_slices.iter().chain(&held_out) {
        let a = argmax_masks(&fp32.run(&slice.input)?, hw);
        let b = argmax_masks(&int8_p.run(&slice.input)?, hw);
        agree_p += a.iter().zip(&b).filter(|(x, y)| x == y).count();
        fp32_p.extend(a);
        int8_pm.extend(b);
    }
    let dice_p = dice(&fp32_p, &int8_pm);
    let agreement_p = agree_p as f64 / voxels as f64;
    println!(
        "percentile-99.9 int8 vs fp32: argmax agreement {:.4} %, Dice {dice_p:.4}",
        100.0 * agreement_p
    );
    // A working model, but clipping the rare lesion logits costs mask agreement here
    // (Dice 0.88 vs 0.99 with min/max when this was written), which is why min/max
    // stays the default.
    assert!(agreement_p >= 0.99, "argmax agreement {agreement_p}");
    assert!(dice_p > 0.5, "Dice percentile int8 vs fp32 {dice_p}");
    assert!(matches!(
        export::export_int8(
            &weights,
            &metadata,
            &calibration,
            export::RangeRule::Percentile { percent: 30.0 },
            &tmp.path().join("bad.onnx"),
        ),
        Err(export::ExportError::Calibration(_))
    ));

    write_f32(&out.join("inputs.f32"), &inputs)?;
    write_f32(&out.join("fp32_logits.f32"), &fp32_out)?;
    write_f32(&out.join("int8_logits.f32"), &int8_out)?;
    let fixture = serde_json::json!({
        "about": "written by host-trainer/tests/export_parity.rs: tract outputs for tests/scripts/check_onnx.py",
        "n_slices": voxels / hw,
        "input_shape": [1, 5, 64, 64],
        "output_shape": [1, 2, 64, 64],
        "input_name": metadata.input_name,
        "output_name": metadata.output_name,
        "inputs": "inputs.f32",
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
