//! Integration tests of the full ISLES evaluation: surface distances (Hausdorff, HD95,
//! ASSD) on hand-computed cubes and spheres and against a brute-force oracle on random
//! masks, `evaluate_case` on NIfTI files written here, and `evaluate_dataset` on a tiny
//! phantom dataset (its own truth as the prediction, and shifted or missing predictions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use strokeseg_eval::{
    CASES_CSV_FILE, CASES_CSV_HEADER, EvaluateOptions, MissingPrediction, SUMMARY_JSON_FILE,
    SUMMARY_MARKDOWN_FILE, Summary, cases_csv, evaluate_case, evaluate_dataset,
    evaluate_dataset_with,
};
use strokeseg_io::{
    Dataset, Dtype, IoError, NiftiVolumeReader, NiftiWriter, PatientGrouping, new_header,
};
use strokeseg_phantom::{DatasetOptions, write_dataset};
use strokeseg_shared::Modality;
use strokeseg_shared::rng::Rng;
use strokeseg_shared::surface::{
    SurfaceDistances, SurfaceError, surface_distances, surface_voxel_count,
};

// ---------------------------------------------------------------------------------------
// Helpers

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

fn assert_close(got: Option<f64>, want: f64, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: infinite, expected {want}"));
    assert!(close(got, want), "{what}: got {got}, expected {want}");
}

fn index(dims: [usize; 3], x: usize, y: usize, z: usize) -> usize {
    (z * dims[1] + y) * dims[0] + x
}

/// A `dims` volume with the box `lo .. lo + size` set.
fn cuboid(dims: [usize; 3], lo: [usize; 3], size: [usize; 3]) -> Vec<u8> {
    let mut m = vec![0u8; dims.iter().product()];
    for z in lo[2]..lo[2] + size[2] {
        for y in lo[1]..lo[1] + size[1] {
            for x in lo[0]..lo[0] + size[0] {
                m[index(dims, x, y, z)] = 1;
            }
        }
    }
    m
}

/// Voxels whose centre lies within `radius_mm` of `centre_mm`.
fn ball(dims: [usize; 3], spacing: [f32; 3], centre_mm: [f64; 3], radius_mm: f64) -> Vec<u8> {
    let mut m = vec![0u8; dims.iter().product()];
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let p = [x, y, z];
                let d2: f64 = (0..3)
                    .map(|a| (p[a] as f64 * f64::from(spacing[a]) - centre_mm[a]).powi(2))
                    .sum();
                if d2 <= radius_mm * radius_mm {
                    m[index(dims, x, y, z)] = 1;
                }
            }
        }
    }
    m
}

/// Random mask: each voxel foreground with probability `density`.
fn random_mask(rng: &mut Rng, dims: [usize; 3], density: f64) -> Vec<u8> {
    (0..dims.iter().product::<usize>())
        .map(|_| u8::from(rng.next_f64() < density))
        .collect()
}

/// Equal JSON documents, numbers within 1e-12 relative (parsing may differ in the last bit).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{x} vs {y}");
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            for (k, v) in x {
                assert_json_close(v, &y[k]);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).for_each(|(v, w)| assert_json_close(v, w));
        }
        _ => assert_eq!(a, b),
    }
}

// ---------------------------------------------------------------------------------------
// Brute-force oracle: independent surface extraction and all-pairs distances.

fn oracle_surface(mask: &[u8], dims: [usize; 3]) -> Vec<[usize; 3]> {
    let mut out = Vec::new();
    let fg = |x: i64, y: i64, z: i64| {
        x >= 0
            && y >= 0
            && z >= 0
            && (x as usize) < dims[0]
            && (y as usize) < dims[1]
            && (z as usize) < dims[2]
            && mask[index(dims, x as usize, y as usize, z as usize)] != 0
    };
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let (xi, yi, zi) = (x as i64, y as i64, z as i64);
                if !fg(xi, yi, zi) {
                    continue;
                }
                let n6 = [
                    (-1, 0, 0),
                    (1, 0, 0),
                    (0, -1, 0),
                    (0, 1, 0),
                    (0, 0, -1),
                    (0, 0, 1),
                ];
                if n6
                    .iter()
                    .any(|&(dx, dy, dz)| !fg(xi + dx, yi + dy, zi + dz))
                {
                    out.push([x, y, z]);
                }
            }
        }
    }
    out
}

/// Directed distances (mm) from every point of `from` to the nearest point of `to`.
fn oracle_directed(from: &[[usize; 3]], to: &[[usize; 3]], spacing: [f32; 3]) -> Vec<f64> {
    from.iter()
        .map(|a| {
            to.iter()
                .map(|b| {
                    (0..3)
                        .map(|k| ((a[k] as f64 - b[k] as f64) * f64::from(spacing[k])).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// NumPy's default (linear) percentile by sorting.
fn oracle_percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = q / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

fn oracle(pred: &[u8], truth: &[u8], dims: [usize; 3], spacing: [f32; 3]) -> SurfaceDistances {
    let (sp, st) = (oracle_surface(pred, dims), oracle_surface(truth, dims));
    match (sp.is_empty(), st.is_empty()) {
        (true, true) => return SurfaceDistances::BOTH_EMPTY,
        (true, false) | (false, true) => {
            return SurfaceDistances {
                hausdorff_mm: None,
                hausdorff95_mm: None,
                assd_mm: None,
                pred_surface_voxels: sp.len() as u64,
                truth_surface_voxels: st.len() as u64,
            };
        }
        (false, false) => {}
    }
    let (ab, ba) = (
        oracle_directed(&sp, &st, spacing),
        oracle_directed(&st, &sp, spacing),
    );
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    SurfaceDistances {
        hausdorff_mm: Some(max(&ab).max(max(&ba))),
        hausdorff95_mm: Some(
            oracle_percentile(ab.clone(), 95.0).max(oracle_percentile(ba.clone(), 95.0)),
        ),
        assd_mm: Some(0.5 * (mean(&ab) + mean(&ba))),
        pred_surface_voxels: sp.len() as u64,
        truth_surface_voxels: st.len() as u64,
    }
}

fn assert_matches_oracle(
    pred: &[u8],
    truth: &[u8],
    dims: [usize; 3],
    spacing: [f32; 3],
    what: &str,
) {
    let got = surface_distances(pred, truth, dims, spacing).unwrap();
    let want = oracle(pred, truth, dims, spacing);
    assert_eq!(
        (got.pred_surface_voxels, got.truth_surface_voxels),
        (want.pred_surface_voxels, want.truth_surface_voxels),
        "{what}: surface voxel counts"
    );
    for (name, g, w) in [
        ("hausdorff", got.hausdorff_mm, want.hausdorff_mm),
        ("hd95", got.hausdorff95_mm, want.hausdorff95_mm),
        ("assd", got.assd_mm, want.assd_mm),
    ] {
        match (g, w) {
            (None, None) => {}
            (Some(g), Some(w)) => assert!(close(g, w), "{what}: {name} {g} vs oracle {w}"),
            _ => panic!("{what}: {name} {g:?} vs oracle {w:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Surface distances: hand-computed cases

#[test]
fn cubes_offset_along_each_axis_give_k_times_spacing() {
    let dims = [20, 16, 14];
    let spacing = [0.7f32, 1.3, 5.0];
    let n = 5;
    let truth = cuboid(dims, [4, 4, 3], [n; 3]);
    for axis in 0..3 {
        for k in 1..=2 {
            let mut lo = [4, 4, 3];
            lo[axis] += k;
            let pred = cuboid(dims, lo, [n; 3]);
            let d = surface_distances(&pred, &truth, dims, spacing).unwrap();
            let want = k as f64 * f64::from(spacing[axis]);
            assert_close(d.hausdorff_mm, want, &format!("axis {axis} k {k} HD"));
            assert!(d.hausdorff95_mm.unwrap() <= want + 1e-9);
            assert_eq!(d.pred_surface_voxels, (n * n * n - (n - 2).pow(3)) as u64);
        }
    }
}

#[test]
fn cube_shifted_by_one_voxel_has_hand_computed_assd_and_hd95() {
    // A 5³ cube and the same cube one voxel further along x, sx the smallest spacing.
    // From each cube's surface (98 voxels) to the other's: the 25 voxels of the trailing
    // x face and the 9 interior voxels of the leading x face are sx away, the 64 voxels
    // on the four side faces lie on the other cube's surface (0). Hence
    // ASSD = sx · 34 / 98 and HD95 = sx (rank 0.95 · 97 = 92.15 falls in the sx values).
    let dims = [12, 10, 9];
    let spacing = [0.7f32, 1.3, 5.0];
    let truth = cuboid(dims, [3, 2, 2], [5; 3]);
    let pred = cuboid(dims, [4, 2, 2], [5; 3]);
    let d = surface_distances(&pred, &truth, dims, spacing).unwrap();
    let sx = f64::from(spacing[0]);
    assert_close(d.hausdorff_mm, sx, "HD");
    assert_close(d.hausdorff95_mm, sx, "HD95");
    assert_close(d.assd_mm, sx * 34.0 / 98.0, "ASSD");
    assert_eq!((d.pred_surface_voxels, d.truth_surface_voxels), (98, 98));
}

#[test]
fn assd_is_the_mean_of_the_two_directed_means() {
    // Truth: one voxel. Prediction: that voxel and its x neighbour. Directed means:
    // truth → prediction 0; prediction → truth (0 + sx) / 2. ASSD = sx / 4 (medpy), not the
    // pooled sx / 3. HD = sx; HD95 = max(0, 0 + 0.95 · sx).
    let dims = [6, 5, 4];
    let spacing = [0.8f32, 1.1, 4.0];
    let truth = cuboid(dims, [2, 2, 2], [1, 1, 1]);
    let pred = cuboid(dims, [2, 2, 2], [2, 1, 1]);
    let d = surface_distances(&pred, &truth, dims, spacing).unwrap();
    let sx = f64::from(spacing[0]);
    assert_close(d.hausdorff_mm, sx, "HD");
    assert_close(d.hausdorff95_mm, 0.95 * sx, "HD95");
    assert_close(d.assd_mm, sx / 4.0, "ASSD");
}

#[test]
fn assd_of_nested_cubes() {
    // Truth: 7³ cube at 2..9; prediction: the 3³ cube 4..7 at its centre, 1 mm voxels.
    // Prediction surface: 26 voxels (all but the centre), each 2 mm straight out from the
    // nearest truth face. Truth shell: 7³ − 5³ = 218 voxels; the farthest are its corners,
    // (2, 2, 2) voxels from the nearest prediction corner: HD = √12.
    let dims = [11, 11, 11];
    let spacing = [1.0f32; 3];
    let truth = cuboid(dims, [2, 2, 2], [7; 3]);
    let pred = cuboid(dims, [4, 4, 4], [3; 3]);
    let d = surface_distances(&pred, &truth, dims, spacing).unwrap();
    assert_close(d.hausdorff_mm, 12.0f64.sqrt(), "HD");
    assert_eq!((d.pred_surface_voxels, d.truth_surface_voxels), (26, 218));
    assert_matches_oracle(&pred, &truth, dims, spacing, "nested cubes");
}

#[test]
fn concentric_spheres_differ_by_the_radius_difference_within_a_voxel() {
    for spacing in [[1.0f32; 3], [0.9, 0.9, 2.0]] {
        // Large enough that the biggest sphere (18 mm) stays clear of the volume border
        // (border voxels would count as surface).
        let dims = spacing.map(|s| (2.0 * 20.0 / s).ceil() as usize + 1);
        let centre: [f64; 3] =
            std::array::from_fn(|a| (dims[a] / 2) as f64 * f64::from(spacing[a]) + 0.3);
        let voxel = spacing.iter().copied().fold(0.0f32, f32::max) as f64;
        for (r1, r2) in [(6.0, 10.0), (8.0, 18.0), (10.0, 11.0)] {
            let inner = ball(dims, spacing, centre, r1);
            let outer = ball(dims, spacing, centre, r2);
            let d = surface_distances(&inner, &outer, dims, spacing).unwrap();
            let hd = d.hausdorff_mm.unwrap();
            assert!(
                (hd - (r2 - r1)).abs() <= voxel,
                "spacing {spacing:?} r {r1} {r2}: HD {hd}"
            );
            let assd = d.assd_mm.unwrap();
            assert!(
                (assd - (r2 - r1)).abs() <= voxel && assd <= hd,
                "spacing {spacing:?} r {r1} {r2}: ASSD {assd}"
            );
            // Symmetric in its arguments.
            let back = surface_distances(&outer, &inner, dims, spacing).unwrap();
            assert_eq!(back.hausdorff_mm, d.hausdorff_mm);
            assert!(close(back.assd_mm.unwrap(), assd));
        }
    }
}

#[test]
fn identical_masks_are_zero_and_empty_masks_follow_isles() {
    let dims = [9, 8, 5];
    let spacing = [0.9f32, 0.9, 6.0];
    let mut rng = Rng::new(7);
    let m = random_mask(&mut rng, dims, 0.3);
    let d = surface_distances(&m, &m, dims, spacing).unwrap();
    assert_eq!(
        (d.hausdorff_mm, d.hausdorff95_mm, d.assd_mm),
        (Some(0.0), Some(0.0), Some(0.0))
    );
    assert_eq!(
        d.pred_surface_voxels,
        surface_voxel_count(&m, dims).unwrap()
    );

    let empty = vec![0u8; m.len()];
    assert_eq!(
        surface_distances(&empty, &empty, dims, spacing).unwrap(),
        SurfaceDistances::BOTH_EMPTY
    );
    for (p, t) in [(&empty, &m), (&m, &empty)] {
        let d = surface_distances(p, t, dims, spacing).unwrap();
        assert!(d.is_infinite());
        assert_eq!(
            (d.hausdorff_mm, d.hausdorff95_mm, d.assd_mm),
            (None, None, None)
        );
    }
}

#[test]
fn nonzero_values_other_than_one_are_foreground() {
    let dims = [8, 8, 4];
    let a = cuboid(dims, [1, 1, 1], [3, 3, 2]);
    let b: Vec<u8> = a.iter().map(|&v| v * 255).collect();
    let d = surface_distances(&a, &b, dims, [1.0; 3]).unwrap();
    assert_eq!(d.hausdorff_mm, Some(0.0));
}

#[test]
fn matches_brute_force_oracle_on_random_masks() {
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    for trial in 0..40 {
        let dims = [
            1 + (rng.next_u64() % 11) as usize,
            1 + (rng.next_u64() % 9) as usize,
            1 + (rng.next_u64() % 6) as usize,
        ];
        let spacing = [
            (0.5 + 1.5 * rng.next_f64()) as f32,
            (0.5 + 1.5 * rng.next_f64()) as f32,
            (1.0 + 9.0 * rng.next_f64()) as f32,
        ];
        let (dp, dt) = (0.02 + 0.6 * rng.next_f64(), 0.02 + 0.6 * rng.next_f64());
        let pred = random_mask(&mut rng, dims, dp);
        let truth = random_mask(&mut rng, dims, dt);
        assert_matches_oracle(
            &pred,
            &truth,
            dims,
            spacing,
            &format!("trial {trial} dims {dims:?} spacing {spacing:?}"),
        );
    }
}

#[test]
fn matches_brute_force_oracle_on_sparse_distant_blobs() {
    // Few voxels far apart in a larger box: long parabola envelopes and empty lines.
    let dims = [31, 17, 9];
    let spacing = [0.86f32, 0.86, 7.5];
    let mut rng = Rng::new(12345);
    for trial in 0..6 {
        let pred = random_mask(&mut rng, dims, 0.004);
        let truth = random_mask(&mut rng, dims, 0.01);
        assert_matches_oracle(
            &pred,
            &truth,
            dims,
            spacing,
            &format!("sparse trial {trial}"),
        );
    }
}

#[test]
fn length_and_spacing_errors_are_typed() {
    let dims = [4, 3, 2];
    let m = vec![0u8; 24];
    assert_eq!(
        surface_distances(&m, &m[..23], dims, [1.0; 3]),
        Err(SurfaceError::LengthMismatch {
            mask: "truth",
            dims,
            expected: 24,
            got: 23
        })
    );
    let err = surface_distances(&m, &m, dims, [1.0, 0.0, 1.0]).unwrap_err();
    assert!(err.to_string().contains("spacing"), "{err}");
}

// ---------------------------------------------------------------------------------------
// evaluate_case on NIfTI files

const SPACING: [f32; 3] = [0.8, 0.8, 5.0];

/// Writes `mask` (`dims`, x fastest) as a uint8 NIfTI with `SPACING` (or `spacing`).
fn write_mask(path: &Path, mask: &[u8], dims: [usize; 3], spacing: [f32; 3], value: u8) {
    let h = new_header(&dims, spacing, [-10.0, 20.0, 5.0], Dtype::U8).unwrap();
    let mut w = NiftiWriter::create(path, &h, Dtype::U8).unwrap();
    let scaled: Vec<u8> = mask
        .iter()
        .map(|&v| if v != 0 { value } else { 0 })
        .collect();
    for slice in scaled.chunks(dims[0] * dims[1]) {
        w.write_slice_u8(slice).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn evaluate_case_on_nifti_cubes() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [16, 12, 8];
    let truth = cuboid(dims, [4, 3, 2], [5, 5, 4]);
    let pred = cuboid(dims, [6, 3, 2], [5, 5, 4]);
    let truth_path = dir.path().join("case_3").join("OT.nii.gz");
    std::fs::create_dir_all(truth_path.parent().unwrap()).unwrap();
    let pred_path = dir.path().join("pred.nii");
    write_mask(&truth_path, &truth, dims, SPACING, 1);
    write_mask(&pred_path, &pred, dims, SPACING, 255);

    let e = evaluate_case(&pred_path, &truth_path).unwrap();
    assert_eq!(e.case_name, "case_3");
    assert_eq!(e.prediction.as_deref(), Some(pred_path.as_path()));
    assert_eq!(e.truth, truth_path);
    assert_eq!(e.dims, dims);
    assert_eq!(e.spacing_mm, SPACING);
    // Overlap: x 6..9 (3 of 5 columns) × 5 × 4.
    assert_eq!((e.counts.tp, e.counts.fp, e.counts.fn_), (60, 40, 40));
    assert!(close(e.metrics.dice, 120.0 / 200.0));
    assert!(close(e.metrics.precision, 0.6));
    assert!(close(e.metrics.recall, 0.6));
    let voxel_ml = 0.8 * 0.8 * 5.0 / 1000.0;
    assert!((e.metrics.true_volume_ml - 100.0 * f64::from(voxel_ml as f32)).abs() < 1e-6);
    assert!(e.metrics.abs_volume_difference_ml.abs() < 1e-12);
    assert_close(e.surface.hausdorff_mm, 2.0 * f64::from(SPACING[0]), "HD");

    // Identical files: everything perfect.
    let same = evaluate_case(&truth_path, &truth_path).unwrap();
    assert_eq!(same.metrics.dice, 1.0);
    assert_eq!(same.surface.hausdorff_mm, Some(0.0));
    assert_eq!(same.surface.assd_mm, Some(0.0));
}

#[test]
fn evaluate_case_with_an_empty_prediction_is_infinite() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [8, 8, 3];
    let truth = cuboid(dims, [2, 2, 1], [3, 3, 1]);
    let (t, p) = (dir.path().join("t.nii"), dir.path().join("p.nii"));
    write_mask(&t, &truth, dims, SPACING, 1);
    write_mask(&p, &vec![0; truth.len()], dims, SPACING, 1);
    let e = evaluate_case(&p, &t).unwrap();
    assert_eq!(e.case_name, "t");
    assert_eq!(e.metrics.dice, 0.0);
    assert!(e.surface.is_infinite());
    let csv = cases_csv(std::slice::from_ref(&e));
    assert!(
        csv.lines().nth(1).unwrap().contains(",inf,inf,inf,"),
        "{csv}"
    );
}

#[test]
fn mismatched_grids_are_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [8, 8, 3];
    let m = cuboid(dims, [2, 2, 1], [3, 3, 1]);
    let truth = dir.path().join("truth.nii");
    write_mask(&truth, &m, dims, SPACING, 1);

    let other_dims = [8, 7, 3];
    let wrong_size = dir.path().join("wrong_size.nii");
    write_mask(
        &wrong_size,
        &cuboid(other_dims, [2, 2, 1], [3, 3, 1]),
        other_dims,
        SPACING,
        1,
    );
    let wrong_spacing = dir.path().join("wrong_spacing.nii");
    write_mask(&wrong_spacing, &m, dims, [0.8, 0.8, 4.0], 1);

    for pred in [&wrong_size, &wrong_spacing] {
        let err = evaluate_case(pred, &truth).unwrap_err();
        match &err {
            IoError::GridMismatch {
                reference, other, ..
            } => {
                assert_eq!((reference, other), (&truth, pred));
            }
            other => panic!("expected a grid mismatch, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("truth.nii") && msg.contains(pred.file_name().unwrap().to_str().unwrap()),
            "{msg}"
        );
    }
}

#[test]
fn a_series_is_not_a_mask() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("series.nii");
    let h = new_header(&[4, 4, 2, 1, 2], SPACING, [0.0; 3], Dtype::U8).unwrap();
    let mut w = NiftiWriter::create(&series, &h, Dtype::U8).unwrap();
    for _ in 0..4 {
        w.write_slice_u8(&[0; 16]).unwrap();
    }
    w.finish().unwrap();
    let mask = dir.path().join("mask.nii");
    write_mask(&mask, &[0; 32], [4, 4, 2], SPACING, 1);
    assert!(matches!(
        evaluate_case(&series, &mask),
        Err(IoError::WrongDimensionality { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// evaluate_dataset on a phantom dataset

/// A tiny phantom dataset (3 cases of 2–3 slices) in `dir/truth`.
fn phantom_truth(dir: &Path) -> PathBuf {
    let root = dir.join("truth");
    let opts = DatasetOptions {
        n_cases: 3,
        seed: 11,
        min_slices: 2,
        max_slices: 3,
        lesion_free_fraction: 0.0,
        two_slab_fraction: 0.0,
        ..DatasetOptions::default()
    };
    write_dataset(&root, &opts).unwrap();
    root
}

/// Reads a mask file into a whole `0`/`1` volume with its dims.
fn read_volume(path: &Path) -> (Vec<u8>, [usize; 3], NiftiVolumeReader) {
    let mut r = NiftiVolumeReader::open(path).unwrap();
    let dims = r.dims();
    let n = dims[0] * dims[1];
    let mut v = vec![0f32; n];
    let mut out = Vec::with_capacity(n * dims[2]);
    for z in 0..dims[2] {
        r.read_slice_f32(z, &mut v).unwrap();
        out.extend(v.iter().map(|&x| u8::from(x > 0.5)));
    }
    (out, dims, r)
}

/// Writes `mask` to `path` on the grid of `like` (same header geometry).
fn write_like(path: &Path, like: &NiftiVolumeReader, mask: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = NiftiWriter::create(path, like.header(), Dtype::U8).unwrap();
    let dims = like.dims();
    for slice in mask.chunks(dims[0] * dims[1]) {
        w.write_slice_u8(slice).unwrap();
    }
    w.finish().unwrap();
}

/// `mask` moved `k` voxels towards +x (zero-filled).
fn shift_x(mask: &[u8], dims: [usize; 3], k: usize) -> Vec<u8> {
    let mut out = vec![0u8; mask.len()];
    for (row_out, row_in) in out.chunks_mut(dims[0]).zip(mask.chunks(dims[0])) {
        row_out[k..].copy_from_slice(&row_in[..dims[0] - k]);
    }
    out
}

#[test]
fn phantom_dataset_against_itself_and_shifted_copies() {
    let dir = tempfile::tempdir().unwrap();
    let truth_root = phantom_truth(dir.path());
    let dataset = Dataset::discover(&truth_root, &PatientGrouping::OnePerCase).unwrap();
    assert_eq!(dataset.cases.len(), 3);

    // 1. The truth dataset as its own prediction (ISLES OT names): perfect.
    let own = evaluate_dataset(&truth_root, &truth_root).unwrap();
    assert_eq!(own.cases.len(), 3);
    assert!(own.warnings.is_empty());
    for c in &own.cases {
        assert_eq!(c.metrics.dice, 1.0, "{}", c.case_name);
        assert_eq!(c.surface.hausdorff_mm, Some(0.0), "{}", c.case_name);
        assert_eq!(c.surface.assd_mm, Some(0.0), "{}", c.case_name);
        assert_eq!(c.prediction.as_deref(), Some(c.truth.as_path()));
    }
    assert_eq!(own.summary.dice.mean, 1.0);
    assert_eq!(own.summary.dice.sd, 0.0);
    assert_eq!(own.summary.hausdorff_mm.unwrap().max, 0.0);
    assert_eq!(own.summary.n_hausdorff_infinite, 0);

    // 2. Shifted copies, one in each accepted layout; case 3's prediction is missing.
    let pred_dir = dir.path().join("pred");
    std::fs::create_dir_all(&pred_dir).unwrap();
    let mut lesion_cases = 0;
    let mut spacings = Vec::new();
    for (i, case) in dataset.cases.iter().enumerate() {
        let ot = case.files.require(Modality::Ot).unwrap();
        let (mask, dims, reader) = read_volume(ot);
        spacings.push(reader.spacing_mm());
        lesion_cases += usize::from(mask.iter().any(|&v| v != 0));
        let shifted = shift_x(&mask, dims, 1);
        match i {
            0 => write_like(
                &pred_dir.join(&case.name).join("lesion_mask.nii.gz"),
                &reader,
                &shifted,
            ),
            1 => write_like(
                &pred_dir.join(format!("{}.nii", case.name)),
                &reader,
                &shifted,
            ),
            _ => {}
        }
    }
    assert!(lesion_cases >= 2, "the phantom seed should give lesions");

    let err = evaluate_dataset(&pred_dir, &truth_root).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no prediction for case case_3"), "{msg}");

    let opts = EvaluateOptions {
        missing_prediction: MissingPrediction::CountAsEmpty,
        only_cases: None,
    };
    let shifted = evaluate_dataset_with(&pred_dir, &truth_root, &opts).unwrap();
    assert_eq!(shifted.warnings.len(), 1);
    assert!(shifted.warnings[0].contains("case_3"));
    assert_eq!(shifted.summary.n_missing_predictions, 1);
    for (c, spacing) in shifted.cases.iter().zip(&spacings).take(2) {
        if c.metrics.true_volume_ml > 0.0 {
            assert!(
                c.metrics.dice < 1.0 && c.metrics.dice > 0.0,
                "{}",
                c.case_name
            );
            // A one-voxel shift along x: every surface voxel is sx from the other surface
            // or on it, and x is the smallest spacing.
            assert_close(c.surface.hausdorff_mm, f64::from(spacing[0]), &c.case_name);
            assert!(c.surface.assd_mm.unwrap() < f64::from(spacing[0]));
        } else {
            assert_eq!(c.surface.hausdorff_mm, Some(0.0));
        }
    }
    let case3 = &shifted.cases[2];
    assert_eq!(case3.prediction, None);
    assert_eq!(case3.metrics.predicted_volume_ml, 0.0);
    let case3_has_lesion = case3.metrics.true_volume_ml > 0.0;
    assert_eq!(case3.surface.is_infinite(), case3_has_lesion);
    assert_eq!(
        shifted.summary.n_hausdorff_infinite,
        usize::from(case3_has_lesion)
    );
    assert_eq!(
        shifted.summary.hausdorff_mm.unwrap().n,
        3 - usize::from(case3_has_lesion)
    );

    // 3. A subset (one fold): only the cases named.
    let fold = EvaluateOptions {
        missing_prediction: MissingPrediction::Error,
        only_cases: Some(vec!["case_2".into(), "case_1".into()]),
    };
    let subset = evaluate_dataset_with(&pred_dir, &truth_root, &fold).unwrap();
    let names: Vec<&str> = subset.cases.iter().map(|c| c.case_name.as_str()).collect();
    assert_eq!(names, ["case_1", "case_2"]);
    let unknown = EvaluateOptions {
        only_cases: Some(vec!["case_99".into()]),
        ..EvaluateOptions::default()
    };
    let err = evaluate_dataset_with(&pred_dir, &truth_root, &unknown).unwrap_err();
    assert!(err.to_string().contains("case_99"), "{err}");

    // 4. Reports: CSV, JSON, Markdown, written atomically.
    let out = dir.path().join("reports");
    let paths = shifted.write_reports(&out).unwrap();
    assert_eq!(paths.cases_csv, out.join(CASES_CSV_FILE));
    let csv = std::fs::read_to_string(&paths.cases_csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], CASES_CSV_HEADER);
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("case_3,,"), "{}", lines[3]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(SUMMARY_JSON_FILE)).unwrap())
            .unwrap();
    assert_json_close(&json, &shifted.summary.to_json());
    assert_eq!(json["n_cases"], 3);
    assert_eq!(json["n_missing_predictions"], 1);
    let md = std::fs::read_to_string(out.join(SUMMARY_MARKDOWN_FILE)).unwrap();
    assert!(md.starts_with("| metric | mean ± sd |"), "{md}");
    assert!(md.contains("| Hausdorff distance (mm) |"), "{md}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn two_predictions_for_one_case_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let truth_root = phantom_truth(dir.path());
    let dataset = Dataset::discover(&truth_root, &PatientGrouping::OnePerCase).unwrap();
    let pred_dir = dir.path().join("pred");
    for case in &dataset.cases {
        let ot = case.files.require(Modality::Ot).unwrap();
        let (mask, _, reader) = read_volume(ot);
        write_like(
            &pred_dir.join(format!("{}.nii.gz", case.name)),
            &reader,
            &mask,
        );
    }
    let first = &dataset.cases[0];
    let (mask, _, reader) = read_volume(first.files.require(Modality::Ot).unwrap());
    write_like(
        &pred_dir.join(&first.name).join("lesion_mask.nii.gz"),
        &reader,
        &mask,
    );
    let err = evaluate_dataset(&pred_dir, &truth_root).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("2 candidate predictions for case case_1"),
        "{msg}"
    );
}

#[test]
fn summary_of_hand_made_cases() {
    use strokeseg_shared::metrics::ConfusionCounts;
    let perfect = ConfusionCounts {
        tp: 10,
        fp: 0,
        fn_: 0,
        tn: 90,
    }
    .metrics(1000.0)
    .unwrap();
    let half = ConfusionCounts {
        tp: 5,
        fp: 5,
        fn_: 5,
        tn: 85,
    }
    .metrics(1000.0)
    .unwrap();
    let missed = ConfusionCounts {
        tp: 0,
        fp: 0,
        fn_: 10,
        tn: 90,
    }
    .metrics(1000.0)
    .unwrap();
    let d = |hd: f64| SurfaceDistances {
        hausdorff_mm: Some(hd),
        hausdorff95_mm: Some(hd),
        assd_mm: Some(hd / 2.0),
        pred_surface_voxels: 1,
        truth_surface_voxels: 1,
    };
    let infinite = SurfaceDistances {
        hausdorff_mm: None,
        hausdorff95_mm: None,
        assd_mm: None,
        pred_surface_voxels: 0,
        truth_surface_voxels: 8,
    };
    let cases = [(perfect, d(0.0)), (half, d(4.0)), (missed, infinite)];
    let s = Summary::from_metrics(cases.iter().map(|(m, s)| (m, s))).unwrap();
    assert_eq!(s.n_cases, 3);
    assert_eq!(s.n_hausdorff_infinite, 1);
    assert!(close(s.dice.mean, 0.5));
    assert_eq!(s.dice.median, 0.5);
    assert!(close(s.dice.sd, 0.5)); // values 1, 0.5, 0: sample sd 0.5
    let hd = s.hausdorff_mm.unwrap();
    assert_eq!((hd.n, hd.mean, hd.median, hd.max), (2, 2.0, 2.0, 4.0));
    assert!(close(s.assd_mm.unwrap().mean, 1.0));
    assert_eq!(Summary::from_metrics(std::iter::empty()), None);
    let md = s.to_markdown();
    assert!(
        md.contains("| Dice | 0.5000 ± 0.5000 | 0.5000 | 0.0000 | 1.0000 | 3 |"),
        "{md}"
    );
    assert!(md.contains("1 with exactly one empty mask"), "{md}");
    let json = s.to_json();
    assert_eq!(json["hausdorff_mm"]["n"], 2);
    assert_eq!(json["n_hausdorff_infinite"], 1);
}

#[test]
fn summary_without_finite_distances_is_null_in_json() {
    use strokeseg_shared::metrics::ConfusionCounts;
    let missed = ConfusionCounts {
        tp: 0,
        fp: 0,
        fn_: 10,
        tn: 90,
    }
    .metrics(1.0)
    .unwrap();
    let infinite = SurfaceDistances {
        hausdorff_mm: None,
        hausdorff95_mm: None,
        assd_mm: None,
        pred_surface_voxels: 0,
        truth_surface_voxels: 8,
    };
    let s = Summary::from_metrics([(&missed, &infinite)]).unwrap();
    assert_eq!(s.hausdorff_mm, None);
    assert!(s.to_json()["hausdorff_mm"].is_null());
    assert!(s.to_markdown().contains("| Hausdorff distance (mm) | ∞ |"));
}

#[test]
fn serde_matches_the_hand_written_json() {
    use strokeseg_shared::metrics::ConfusionCounts;
    let m = ConfusionCounts {
        tp: 5,
        fp: 5,
        fn_: 5,
        tn: 85,
    }
    .metrics(1000.0)
    .unwrap();
    let infinite = SurfaceDistances {
        hausdorff_mm: None,
        hausdorff95_mm: None,
        assd_mm: None,
        pred_surface_voxels: 0,
        truth_surface_voxels: 8,
    };
    let s = Summary::from_metrics([(&m, &infinite)]).unwrap();
    assert_eq!(serde_json::to_value(s).unwrap(), s.to_json());
    let v = serde_json::to_value(infinite).unwrap();
    assert!(v["hausdorff_mm"].is_null());
    let back: SurfaceDistances = serde_json::from_value(v).unwrap();
    assert_eq!(back, infinite);
}
