//! Data loading through the shared preprocessing: shapes, labels against the ground truth,
//! the calibration loader the exporter uses, case-level scoring of a perfect prediction
//! (which exercises the map back to the original grid), and model inputs unchanged by a
//! per-study gain on CBF and CBV.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use strokeseg_io::{NiftiVolumeReader, NiftiWriter, PatientGrouping};
use strokeseg_shared::modality::Modality;
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::data::{self, load_training_slices};
use strokeseg_trainer::eval::score_case;
use tch::{Device, Kind, Tensor};

#[test]
fn dataset_loads_into_tensors_with_case_geometry() {
    let dir = common::dataset(4, 21);
    let loaded = common::load(dir);
    let n = loaded.n_slices() as i64;
    assert_eq!(loaded.inputs.size(), [n, 5, 64, 64]);
    assert_eq!(loaded.labels.size(), [n, 64, 64]);
    assert_eq!(loaded.inputs.kind(), Kind::Float);
    assert_eq!(loaded.cases.len(), 4);
    let total: usize = loaded.cases.iter().map(|c| c.n_slices).sum();
    assert_eq!(total as i64, n);
    for case in &loaded.cases {
        assert_eq!(case.truth.len(), case.n_slices * case.geometry.len());
        assert!(case.voxel_volume_mm3 > 0.0);
    }
    // Labels on the model grid agree with the truth on the original grid (lesion present).
    let lesion_model: u64 = loaded.lesion_pixels.iter().sum();
    let lesion_image: u64 = loaded.cases.iter().map(|c| c.true_lesion_voxels()).sum();
    assert!(lesion_model > 0 && lesion_image > 0);
    let counts = loaded.class_counts(&(0..loaded.n_slices()).collect::<Vec<_>>());
    assert_eq!(counts[0] + counts[1], n as u64 * 64 * 64);
    // Inputs are normalised: finite and within the clamps.
    let max = f64::try_from(loaded.inputs.abs().max()).unwrap();
    assert!(max.is_finite() && max <= 2.0 + 1e-6, "{max}");
}

#[test]
fn a_phantom_dataset_is_described_with_its_seed_and_family() {
    // The shared test dataset is the classic family.
    let classic = common::dataset(4, 21);
    assert_eq!(
        data::describe(classic, 4),
        "phantom seed 21, family classic, 4 cases"
    );
    // A holdout-family dataset (one small case) is named as such.
    let dir = tempfile::tempdir().unwrap();
    let opts = strokeseg_phantom::DatasetOptions {
        n_cases: 1,
        seed: 5,
        min_slices: 2,
        max_slices: 2,
        ..strokeseg_phantom::DatasetOptions::default()
    }
    .with_family(strokeseg_phantom::Family::Holdout, None);
    strokeseg_phantom::write_dataset(dir.path(), &opts).unwrap();
    assert_eq!(
        data::describe(dir.path(), 1),
        "phantom seed 5, family holdout, 1 cases"
    );
    // A folder that is not a phantom dataset is named by its folder.
    let plain = tempfile::tempdir().unwrap();
    let name = plain
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(data::describe(plain.path(), 3), format!("{name}, 3 cases"));
}

#[test]
fn calibration_slices_are_the_training_inputs() {
    let dir = common::dataset(4, 21);
    let loaded = common::load(dir);
    let config = common::small_preprocess();
    let calib = load_training_slices(dir, &config, 5).unwrap();
    assert_eq!(calib.size(), [5, 5, 64, 64]);
    assert_eq!(calib.device(), Device::Cpu);
    assert!(calib.equal(&loaded.inputs.narrow(0, 0, 5)));
    let all = load_training_slices(dir, &config, 10_000).unwrap();
    assert_eq!(all.size()[0], loaded.n_slices() as i64);
    assert!(load_training_slices(dir, &config, 0).is_err());
    assert!(load_training_slices(&dir.join("missing"), &config, 5).is_err());
}

#[test]
fn a_perfect_prediction_scores_near_one_on_the_original_grid() {
    let dir = common::dataset(4, 21);
    let dataset = data::discover(dir, &PatientGrouping::Heuristic).unwrap();
    let config = strokeseg_shared::PreprocessConfig {
        input_height: 192,
        input_width: 192,
        target_spacing_mm: 1.5,
        ..strokeseg_shared::PreprocessConfig::default()
    };
    let loaded = data::load_dataset(&dataset, &config, Device::Cpu, |_, _, _| {}).unwrap();
    let post = PostprocessConfig {
        min_component_area_mm2: 0.0,
        ..PostprocessConfig::default()
    };
    let mut scored = 0;
    for case in &loaded.cases {
        let labels = loaded
            .labels
            .narrow(0, case.first_slice as i64, case.n_slices as i64)
            .to_kind(Kind::Int64);
        // Logits ±10 from the labels on the model grid.
        let lesion = labels.to_kind(Kind::Float) * 20.0 - 10.0;
        let logits = Tensor::stack(&[lesion.zeros_like(), lesion], 1);
        let result = score_case(case, &logits, &post).unwrap();
        assert_eq!(result.n_slices, case.n_slices);
        assert_eq!(result.counts.total_voxels() as usize, case.truth.len());
        if case.true_lesion_voxels() > 500 {
            assert!(
                result.metrics.dice > 0.85,
                "{}: Dice {} for the labels themselves",
                case.name,
                result.metrics.dice
            );
            // Surface distances on the original grid: finite (both masks hold a lesion) and
            // ordered.
            let surface = result.surface.unwrap();
            let (hd, hd95) = (
                surface.hausdorff_mm.unwrap(),
                surface.hausdorff95_mm.unwrap(),
            );
            assert!(hd95 <= hd && surface.assd_mm.unwrap() <= hd, "{surface:?}");
            scored += 1;
        }
    }
    assert!(scored > 0, "no case with a sizeable lesion");
}

/// Copies the phantom dataset `from` into `to` with every stored CBF and CBV value multiplied
/// by `gain` (an integer, so uint16 values stay exact: zeros stay zero and the brain mask is
/// unchanged), the other files as they are.
fn write_with_gain(from: &Path, to: &Path, gain: f32) {
    let dataset = data::discover(from, &PatientGrouping::OnePerCase).unwrap();
    for case in &dataset.cases {
        let case_dir = to.join(&case.name);
        for (&modality, path) in &case.files.files {
            let relative = path.strip_prefix(from).unwrap();
            let target = to.join(relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            if !matches!(modality, Modality::Cbf | Modality::Cbv) {
                std::fs::copy(path, &target).unwrap();
                continue;
            }
            let mut reader = NiftiVolumeReader::open(path).unwrap();
            let mut writer = NiftiWriter::create(&target, reader.header(), reader.dtype()).unwrap();
            let mut slice = vec![0f32; reader.info().slice_voxels()];
            for slice_idx in 0..reader.n_slices() {
                reader.read_slice_f32(slice_idx, &mut slice).unwrap();
                slice.iter_mut().for_each(|v| *v *= gain);
                writer.write_slice_f32(&slice).unwrap();
            }
            writer.finish().unwrap();
        }
        assert!(case_dir.is_dir());
    }
}

/// A phantom study with its stored CBF and CBV tripled (another vendor's units) gives the
/// same model inputs: the per-volume percentile normalisation removes a per-study gain on the
/// maps. What remains is the log histogram's resolution (bins of about 2.7 %, percentiles
/// interpolated linearly inside a bin); MTT, Tmax, CT and the brain mask are bit-identical.
#[test]
fn model_inputs_are_invariant_to_a_per_study_gain_on_cbf_and_cbv() {
    let base = common::dataset(4, 21);
    let tripled = tempfile::tempdir().unwrap();
    write_with_gain(base, tripled.path(), 3.0);
    let config = strokeseg_shared::PreprocessConfig::default();
    let a = load_training_slices(base, &config, 1000).unwrap();
    let b = load_training_slices(tripled.path(), &config, 1000).unwrap();
    assert_eq!(a.size(), b.size());
    for (c, channel) in config.channels.iter().enumerate() {
        let (x, y) = (a.select(1, c as i64), b.select(1, c as i64));
        let diff = (&x - &y).abs();
        let max_diff = f64::try_from(diff.max()).unwrap();
        let mean_diff = f64::try_from(diff.mean(Kind::Float)).unwrap();
        eprintln!(
            "{:?}: max |Δ| {max_diff:.2e}, mean |Δ| {mean_diff:.2e} (normalised units)",
            channel.modality
        );
        assert!(
            x.eq(0.0).equal(&y.eq(0.0)),
            "{:?}: brain mask",
            channel.modality
        );
        match channel.modality {
            // Within a bin at the top of the clamp range ([−1, 2]): 2 · 2.7 %.
            Modality::Cbf | Modality::Cbv => {
                assert!(max_diff < 0.055, "{:?}: {max_diff}", channel.modality);
                assert!(mean_diff < 5e-3, "{:?}: {mean_diff}", channel.modality);
            }
            _ => assert!(x.equal(&y), "{:?} changed", channel.modality),
        }
    }
}
