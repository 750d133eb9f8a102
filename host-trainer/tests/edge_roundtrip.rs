//! Trainer → edge round trip: a tiny ResUNet (base width 8, depth 2, 5 × 64 × 64 inputs)
//! is trained briefly on the slices of four phantom cases, exported to ONNX (fp32 and
//! int8) with its metadata, and the edge runtime segments a held-out phantom case with each
//! file through its library entry point (`segment_to_dir`). Checked: the three outputs
//! exist, the mask re-read with the shared reader lies on the CT's grid, the report's volume
//! is the mask's voxel count × the voxel volume, the fp32 Dice against the phantom's truth
//! is above a measured floor, and the int8 mask agrees with the fp32 one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use strokeseg_edge::model::SegModel;
use strokeseg_edge::report::{MASK_FILE, Method, OVERLAY_FILE, REPORT_FILE, Report};
use strokeseg_edge::segment::{SegmentOptions, segment_to_dir};
use strokeseg_edge::segmenter::Segmenter;
use strokeseg_eval::evaluate_case;
use strokeseg_io::{CaseFiles, NiftiVolumeReader, ReadLimits, read_header};
use strokeseg_shared::Modality;
use strokeseg_shared::model_meta::TrainingSummary;
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::export::{self, ModelDescription, PreparedSlice, UNetWeights};
use strokeseg_trainer::model::ResUNet;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Reduction, Tensor};

const SEED: i64 = 20181;
const TRAIN_STEPS: usize = 200;
/// Phantom cases 1–4 train the net, case 5 is held out and segmented by the edge.
const N_CASES: usize = 5;
const DATA_SEED: u64 = 41;
/// Floor on the fp32 model's Dice against the held-out case's truth. Measured 0.454 (int8:
/// 0.448) with the seeds above, dev profile, CPU; the floor is 0.15 below. The truth is the
/// phantom's follow-up DWI lesion and the net saw 16 slices, so it is far from 1.
const DICE_FLOOR: f64 = 0.30;
/// Floor on the Dice between the int8 and the fp32 edge masks of this briefly trained net.
/// Measured 0.955 (the int8 model is calibrated on only 16 slices); the floor leaves room
/// for thread-count differences. The exporter's own int8 bars (argmax ≥ 99.5 %, Dice ≥ 0.98)
/// are checked in `export_parity.rs`.
const INT8_VS_FP32_DICE_FLOOR: f64 = 0.90;

/// Brain slices of `case_dir` on the small grid, with their truth.
fn slices_of(case_dir: &Path) -> Vec<PreparedSlice> {
    let files = CaseFiles::discover(case_dir).unwrap();
    export::prepare_study(&files, &common::small_preprocess(), true)
        .unwrap()
        .into_iter()
        .filter(|s| s.brain_voxels > 0)
        .collect()
}

/// Trains the tiny net on `slices` (weighted cross-entropy, Adam, BatchNorm in train mode).
fn train(slices: &[PreparedSlice]) -> nn::VarStore {
    let unet = common::tiny_unet();
    tch::manual_seed(SEED);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ResUNet::new(&vs.root(), unet);
    let mut optimizer = nn::Adam::default().build(&vs, 3e-3).unwrap();
    let n = slices.len() as i64;
    let flat: Vec<f32> = slices
        .iter()
        .flat_map(|s| s.input.iter().copied())
        .collect();
    let x = Tensor::from_slice(&flat).view([n, 5, 64, 64]);
    let labels: Vec<i64> = slices
        .iter()
        .flat_map(|s| s.truth.iter().flatten().map(|&t| i64::from(t)))
        .collect();
    let y = Tensor::from_slice(&labels).view([n, 64, 64]);
    let weight = Tensor::from_slice(&[1.0f32, 4.0]);
    for _ in 0..TRAIN_STEPS {
        let logits = net.forward_t(&x, true);
        let loss = logits
            .f_cross_entropy_loss(&y, Some(&weight), Reduction::Mean, -100, 0.0)
            .unwrap();
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
    }
    vs
}

/// Segments `case` with the model file `model` into `out` through the edge's library entry
/// point, checks the outputs against the CT and returns the report.
fn segment_and_check(case: &Path, model: &Path, out: &Path) -> Report {
    let mut seg = Segmenter::from(SegModel::from_path(model).unwrap());
    let report = segment_to_dir(
        case,
        Method::Model,
        Some(&mut seg),
        &SegmentOptions::default(),
        out,
        &AtomicBool::new(false),
    )
    .unwrap();
    for name in [MASK_FILE, REPORT_FILE, OVERLAY_FILE] {
        assert!(out.join(name).is_file(), "no {name} in {}", out.display());
    }
    let written: Report =
        serde_json::from_slice(&std::fs::read(out.join(REPORT_FILE)).unwrap()).unwrap();
    assert_eq!(written.lesion_voxels, report.lesion_voxels);

    // The mask, re-read with the shared reader, lies on the CT's grid.
    let ct = CaseFiles::discover(case)
        .unwrap()
        .require(Modality::Ct)
        .unwrap()
        .to_path_buf();
    let mask_path = out.join(MASK_FILE);
    let (_, minfo) = read_header(&mask_path, &ReadLimits::default()).unwrap();
    let (_, cinfo) = read_header(&ct, &ReadLimits::default()).unwrap();
    assert_eq!(minfo.dtype.to_string(), "uint8");
    assert_eq!(minfo.dims, cinfo.dims);
    assert_eq!(minfo.spacing_mm, cinfo.spacing_mm);
    assert_eq!(minfo.affine, cinfo.affine);

    // The report's volume is the mask's voxel count × the voxel volume.
    let mut reader = NiftiVolumeReader::open(&mask_path).unwrap();
    let mut buf = vec![0f32; minfo.slice_voxels()];
    let mut voxels = 0u64;
    for z in 0..minfo.nz() {
        reader.read_slice_f32(z, &mut buf).unwrap();
        assert!(buf.iter().all(|&v| v == 0.0 || v == 1.0));
        voxels += buf.iter().filter(|&&v| v != 0.0).count() as u64;
    }
    assert_eq!(report.lesion_voxels, voxels);
    let voxel_mm3 = cinfo.voxel_volume_mm3();
    assert!((report.voxel_volume_mm3 - voxel_mm3).abs() < 1e-9);
    assert!((report.lesion_volume_ml - voxels as f64 * voxel_mm3 / 1000.0).abs() < 1e-9);
    report
}

#[test]
fn a_trained_and_exported_model_segments_a_phantom_on_the_edge() {
    let started = std::time::Instant::now();
    let data = common::dataset(N_CASES, DATA_SEED);
    let train_slices: Vec<PreparedSlice> = (1..N_CASES)
        .flat_map(|k| slices_of(&data.join(format!("case_{k}"))))
        .collect();
    assert!(train_slices.len() >= 6, "{} slices", train_slices.len());
    let vs = train(&train_slices);
    let trained_s = started.elapsed().as_secs_f64();

    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = tmp.path().join("last.safetensors");
    vs.save(&checkpoint).unwrap();
    let unet = common::tiny_unet();
    let (weights, sha256) = UNetWeights::from_checkpoint(&checkpoint, unet).unwrap();
    let description = ModelDescription::new(
        "strokeseg-roundtrip-test",
        common::small_preprocess(),
        PostprocessConfig::default(),
        TrainingSummary {
            data: format!("phantom seed {DATA_SEED}, cases 1–{}", N_CASES - 1),
            loss: "ce".into(),
            epochs: TRAIN_STEPS as u32,
            seed: SEED as u64,
            ..TrainingSummary::default()
        },
    );
    let metadata = export::model_metadata(&unet, &description, &sha256);
    let fp32_path = tmp.path().join("model.onnx");
    let int8_path = tmp.path().join("model.int8.onnx");
    export::export_fp32(&weights, &metadata, &fp32_path).unwrap();
    let calibration: Vec<Vec<f32>> = train_slices.iter().map(|s| s.input.clone()).collect();
    export::export_int8(
        &weights,
        &metadata,
        &calibration,
        export::RangeRule::MinMax,
        &int8_path,
    )
    .unwrap();

    let case = data.join(format!("case_{N_CASES}"));
    let truth = CaseFiles::discover(&case)
        .unwrap()
        .require(Modality::Ot)
        .unwrap()
        .to_path_buf();

    let fp32_out = tmp.path().join("out_fp32");
    let fp32_report = segment_and_check(&case, &fp32_path, &fp32_out);
    let fp32_dice = evaluate_case(&fp32_out.join(MASK_FILE), &truth)
        .unwrap()
        .metrics
        .dice;

    let int8_out = tmp.path().join("out_int8");
    let int8_report = segment_and_check(&case, &int8_path, &int8_out);
    let int8_dice = evaluate_case(&int8_out.join(MASK_FILE), &truth)
        .unwrap()
        .metrics
        .dice;
    let int8_vs_fp32 = evaluate_case(&int8_out.join(MASK_FILE), &fp32_out.join(MASK_FILE))
        .unwrap()
        .metrics
        .dice;
    eprintln!(
        "edge round trip: {} training slices, trained in {trained_s:.1} s; held-out case: \
         fp32 Dice {fp32_dice:.3} ({} voxels), int8 Dice {int8_dice:.3} ({} voxels), \
         int8 vs fp32 Dice {int8_vs_fp32:.4}; total {:.1} s",
        train_slices.len(),
        fp32_report.lesion_voxels,
        int8_report.lesion_voxels,
        started.elapsed().as_secs_f64()
    );
    assert!(
        fp32_report.lesion_voxels > 0,
        "the fp32 model predicts no lesion"
    );
    assert!(
        fp32_dice >= DICE_FLOOR,
        "fp32 Dice {fp32_dice} < {DICE_FLOOR}"
    );
    assert!(
        int8_vs_fp32 >= INT8_VS_FP32_DICE_FLOOR,
        "int8 vs fp32 Dice {int8_vs_fp32} < {INT8_VS_FP32_DICE_FLOOR}"
    );
}
