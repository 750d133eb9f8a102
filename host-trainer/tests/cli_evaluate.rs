//! `strokeseg-train evaluate` as a user runs it: a phantom truth dataset, a folder of
//! predicted masks in every accepted layout (the truth itself, an empty mask, the truth
//! shifted by one voxel), the per-case CSV and summary JSON checked against values computed
//! here from the masks, case selection, and missing predictions (an error naming the case, or
//! counted as empty).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{ok, s, strokeseg_train, text};
use strokeseg_io::{Dataset, Dtype, NiftiVolumeReader, NiftiWriter, PatientGrouping};
use strokeseg_shared::Modality;

fn evaluate(args: &[&str]) -> Output {
    let mut all = vec!["evaluate"];
    all.extend_from_slice(args);
    strokeseg_train(&all)
}

/// The phantom's cases: `(name, OT file)`, in dataset order.
fn truth_cases(data: &Path) -> Vec<(String, PathBuf)> {
    let dataset = Dataset::discover(data, &PatientGrouping::OnePerCase).unwrap();
    dataset
        .cases
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.files.require(Modality::Ot).unwrap().to_path_buf(),
            )
        })
        .collect()
}

/// A mask file read whole: `(0/1 voxels x fastest, [nx, ny, nz], spacing mm)`.
fn read_mask(path: &Path) -> (Vec<u8>, [usize; 3], [f32; 3]) {
    let mut reader = NiftiVolumeReader::open(path).unwrap();
    let dims = reader.dims();
    let plane = dims[0] * dims[1];
    let mut values = vec![0f32; plane];
    let mut mask = Vec::with_capacity(plane * dims[2]);
    for z in 0..dims[2] {
        reader.read_slice_f32(z, &mut values).unwrap();
        mask.extend(values.iter().map(|&v| u8::from(v > 0.5)));
    }
    (mask, dims, reader.spacing_mm())
}

/// Writes `mask` (x fastest) to `out` on the grid of the NIfTI file `like`.
fn write_mask(like: &Path, mask: &[u8], out: &Path) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let reader = NiftiVolumeReader::open(like).unwrap();
    let plane = reader.dims()[0] * reader.dims()[1];
    let mut writer = NiftiWriter::create(out, reader.header(), Dtype::U8).unwrap();
    for slice in mask.chunks_exact(plane) {
        writer.write_slice_u8(slice).unwrap();
    }
    writer.finish().unwrap();
}

/// Copies the truth mask `truth` to `case_dir/lesion_mask.nii[.gz]`, as the edge runtime
/// lays out its output.
fn copy_as_edge_output(truth: &Path, case_dir: &Path) {
    std::fs::create_dir_all(case_dir).unwrap();
    let name = if truth.to_string_lossy().ends_with(".gz") {
        "lesion_mask.nii.gz"
    } else {
        "lesion_mask.nii"
    };
    std::fs::copy(truth, case_dir.join(name)).unwrap();
}

/// `mask` moved one voxel towards +x (the last column drops out, the first is empty).
fn shift_x(mask: &[u8], dims: [usize; 3]) -> Vec<u8> {
    let mut out = vec![0u8; mask.len()];
    for (row_out, row_in) in out
        .chunks_exact_mut(dims[0])
        .zip(mask.chunks_exact(dims[0]))
    {
        row_out[1..].copy_from_slice(&row_in[..dims[0] - 1]);
    }
    out
}

/// The rows of an `evaluation_cases.csv` by case, as `column → value` maps (no field of the
/// phantom's rows is quoted).
fn read_csv(path: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let csv = std::fs::read_to_string(path).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            let row: BTreeMap<String, String> = header
                .iter()
                .zip(line.split(','))
                .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                .collect();
            (row["case"].clone(), row)
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, column: &str) -> f64 {
    row[column].parse().unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn evaluate_scores_every_layout_against_the_truth() {
    let data = common::dataset(4, 57);
    let cases = truth_cases(data);
    assert_eq!(cases.len(), 4);
    let tmp = tempfile::tempdir().unwrap();
    let pred = tmp.path().join("pred");

    // case A: the truth file itself, as the edge runtime's output folder.
    let (a, a_truth) = &cases[0];
    copy_as_edge_output(a_truth, &pred.join(a));
    // case B: an empty mask as PRED/case_N.nii.gz.
    let (b, b_truth) = &cases[1];
    let (b_mask, _, b_spacing) = read_mask(b_truth);
    write_mask(
        b_truth,
        &vec![0u8; b_mask.len()],
        &pred.join(format!("{b}.nii.gz")),
    );
    // case C: the truth moved one voxel along x, as PRED/case_N/lesion_mask.nii.gz.
    let (c, c_truth) = &cases[2];
    let (c_mask, c_dims, c_spacing) = read_mask(c_truth);
    let c_pred = shift_x(&c_mask, c_dims);
    write_mask(c_truth, &c_pred, &pred.join(c).join("lesion_mask.nii.gz"));
    // case D: an ISLES-named copy of its OT file directly in PRED.
    let (d, d_truth) = &cases[3];
    std::fs::copy(d_truth, pred.join(d_truth.file_name().unwrap())).unwrap();

    let reports = tmp.path().join("reports");
    let out = evaluate(&[
        "--pred",
        &s(&pred),
        "--truth",
        &s(data),
        "--out",
        &s(&reports),
    ]);
    ok(&out);
    let stdout = text(&out.stdout);
    let md = std::fs::read_to_string(reports.join("evaluation_summary.md")).unwrap();
    assert!(
        stdout.contains(&md),
        "stdout lacks the summary table:\n{stdout}"
    );
    assert!(
        stdout.contains(&s(&reports.join("evaluation_cases.csv"))),
        "{stdout}"
    );
    assert!(md.contains("| Hausdorff distance 95 % (mm) |"), "{md}");
    let leftovers: Vec<_> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let rows = read_csv(&reports.join("evaluation_cases.csv"));
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        cases.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // A and D: perfect.
    for name in [a, d] {
        let row = &rows[name];
        assert_eq!(num(row, "dice"), 1.0, "{name}: {row:?}");
        for column in ["hausdorff_mm", "hausdorff95_mm", "assd_mm"] {
            assert_eq!(num(row, column), 0.0, "{name} {column}: {row:?}");
        }
        assert_eq!(num(row, "fp") + num(row, "fn"), 0.0);
    }
    // B: nothing predicted against a lesion: Dice 0, distances infinite.
    let row = &rows[b];
    let b_voxels = b_mask.iter().filter(|&&v| v != 0).count() as f64;
    assert!(b_voxels > 0.0, "{b} has no lesion");
    let b_voxel_ml: f64 = b_spacing.iter().map(|&v| f64::from(v)).product::<f64>() / 1000.0;
    assert_eq!(num(row, "dice"), 0.0);
    assert_eq!(num(row, "predicted_volume_ml"), 0.0);
    assert!(
        close(num(row, "true_volume_ml"), b_voxels * b_voxel_ml),
        "{row:?}"
    );
    for column in ["hausdorff_mm", "hausdorff95_mm", "assd_mm"] {
        assert_eq!(row[column], "inf", "{column}: {row:?}");
    }
    // C: Dice from the overlap counted here; the one-voxel shift puts every surface voxel at
    // most one x-step from the other surface, and some exactly one step (the smallest
    // spacing here), so the Hausdorff distance is the x spacing.
    let row = &rows[c];
    let c_voxels = c_mask.iter().filter(|&&v| v != 0).count() as f64;
    let overlap = c_mask
        .iter()
        .zip(&c_pred)
        .filter(|&(&t, &p)| t != 0 && p != 0)
        .count() as f64;
    let pred_voxels = c_pred.iter().filter(|&&v| v != 0).count() as f64;
    assert_eq!(pred_voxels, c_voxels, "the lesion touches the x border");
    assert!(
        close(num(row, "dice"), 2.0 * overlap / (2.0 * c_voxels)),
        "{row:?}"
    );
    assert!(num(row, "dice") > 0.0 && num(row, "dice") < 1.0);
    let [sx, sy, sz] = c_spacing.map(f64::from);
    assert!(sx <= sy && sx <= sz, "spacing {c_spacing:?}");
    let hd = num(row, "hausdorff_mm");
    let hd95 = num(row, "hausdorff95_mm");
    let assd = num(row, "assd_mm");
    assert!(close(hd, sx), "Hausdorff {hd} mm, x spacing {sx} mm");
    assert!(hd95 <= hd && hd95 >= 0.0, "{row:?}");
    assert!(assd > 0.0 && assd < hd, "{row:?}");

    // The summary: every case in Dice, the infinite one counted and left out of distances.
    let summary = read_json(&reports.join("evaluation_summary.json"));
    assert_eq!(summary["n_cases"], 4);
    assert_eq!(summary["n_hausdorff_infinite"], 1);
    assert_eq!(summary["n_missing_predictions"], 0);
    assert_eq!(summary["n_both_empty"], 0);
    let dice_mean = (1.0 + 0.0 + num(&rows[c], "dice") + 1.0) / 4.0;
    assert!(close(summary["dice"]["mean"].as_f64().unwrap(), dice_mean));
    assert_eq!(summary["dice"]["n"], 4);
    assert_eq!(summary["hausdorff_mm"]["n"], 3);
    assert!(close(summary["hausdorff_mm"]["max"].as_f64().unwrap(), hd));
    assert!(close(
        summary["hausdorff_mm"]["mean"].as_f64().unwrap(),
        hd / 3.0
    ));
    assert_eq!(summary["hausdorff_mm"]["median"], 0.0);
    assert!(close(
        summary["assd_mm"]["mean"].as_f64().unwrap(),
        assd / 3.0
    ));

    // --cases: only those (the others have no prediction here); the reports default to
    // --pred.
    let pred_copy = tmp.path().join("subset");
    copy_as_edge_output(a_truth, &pred_copy.join(a));
    std::fs::copy(
        pred.join(c).join("lesion_mask.nii.gz"),
        pred_copy.join(format!("{c}.nii.gz")),
    )
    .unwrap();
    let only = format!("{c},{a}");
    let out = evaluate(&[
        "--pred",
        &s(&pred_copy),
        "--truth",
        &s(data),
        "--cases",
        &only,
    ]);
    ok(&out);
    let rows_subset = read_csv(&pred_copy.join("evaluation_cases.csv"));
    assert_eq!(rows_subset.keys().collect::<Vec<_>>(), vec![a, c]);
    assert_eq!(rows_subset[c]["dice"], rows[c]["dice"]);
    assert_eq!(rows_subset[c]["hausdorff_mm"], rows[c]["hausdorff_mm"]);
    assert_eq!(
        read_json(&pred_copy.join("evaluation_summary.json"))["n_cases"],
        2
    );

    // A case that is not in the truth dataset is named.
    let out = evaluate(&[
        "--pred",
        &s(&pred),
        "--truth",
        &s(data),
        "--cases",
        "case_99",
        "--out",
        &s(&tmp.path().join("none")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("case case_99 is not in the truth dataset"),
        "{}",
        text(&out.stderr)
    );
    assert!(!tmp.path().join("none").exists());
}

#[test]
fn a_missing_prediction_is_an_error_or_counts_as_empty() {
    let data = common::dataset(4, 57);
    let cases = truth_cases(data);
    let tmp = tempfile::tempdir().unwrap();
    let pred = tmp.path().join("pred");
    // Only the first case has a prediction (its truth).
    let (a, a_truth) = &cases[0];
    copy_as_edge_output(a_truth, &pred.join(a));

    let reports = tmp.path().join("reports");
    let out = evaluate(&[
        "--pred",
        &s(&pred),
        "--truth",
        &s(data),
        "--out",
        &s(&reports),
    ]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let missing = &cases[1].0;
    assert!(
        stderr.contains(&format!("no prediction for case {missing}:")),
        "{stderr}"
    );
    assert!(stderr.contains("lesion_mask.nii.gz"), "{stderr}");
    assert!(!reports.exists(), "reports written despite the error");

    let out = evaluate(&[
        "--pred",
        &s(&pred),
        "--truth",
        &s(data),
        "--out",
        &s(&reports),
        "--missing",
        "empty",
    ]);
    ok(&out);
    let stderr = text(&out.stderr);
    for (name, _) in &cases[1..] {
        assert!(
            stderr.contains(&format!("no prediction for case {name} in")),
            "{stderr}"
        );
    }
    let summary = read_json(&reports.join("evaluation_summary.json"));
    assert_eq!(summary["n_cases"], 4);
    assert_eq!(summary["n_missing_predictions"], 3);
    assert_eq!(summary["n_hausdorff_infinite"], 3);
    assert_eq!(summary["hausdorff_mm"]["n"], 1);
    assert_eq!(summary["hausdorff_mm"]["max"], 0.0);
    assert!(close(summary["dice"]["mean"].as_f64().unwrap(), 0.25));
    let rows = read_csv(&reports.join("evaluation_cases.csv"));
    for (name, _) in &cases[1..] {
        assert_eq!(rows[name]["prediction"], "", "{name}");
        assert_eq!(rows[name]["hausdorff_mm"], "inf", "{name}");
    }
    assert!(
        text(&out.stdout).contains("3 missing predictions counted as empty masks"),
        "{}",
        text(&out.stdout)
    );

    // A predictions folder that does not exist is named.
    let out = evaluate(&[
        "--pred",
        &s(&tmp.path().join("nowhere")),
        "--truth",
        &s(data),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nowhere"),
        "{}",
        text(&out.stderr)
    );
}
