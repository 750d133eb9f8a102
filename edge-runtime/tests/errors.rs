//! Every bad input gives a clear error naming the file, its documented exit code, no panic,
//! and no outputs: corrupt and inconsistent models, a missing model, truncated or malformed
//! NIfTI files, a missing modality, mismatched grids, absurd headers. NaNs are not an error:
//! they are replaced, counted and reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use strokeseg_edge::report::{REPORT_FILE, Report};
use strokeseg_model::fixture::FixtureOptions;

fn case(dir: &Path) -> PathBuf {
    phantom_case(dir, "case_1", &phantom_opts(31, 3), 0, false).0
}

/// Runs `segment` and checks the exit code, the message and that `out` stays empty.
fn refused(args: &[&str], out: &Path, code: i32, needles: &[&str]) {
    let mut all = vec!["segment"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let o = edge(&all);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    for n in needles {
        assert!(t.contains(n), "{n:?} not in {t}");
    }
    assert!(!t.contains("panicked"), "{t}");
    assert!(entries(out).is_empty(), "outputs left: {:?}", entries(out));
}

#[test]
fn bad_models_exit_5_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let case = case(dir.path());
    let c = case.to_str().unwrap();
    let out = dir.path().join("out");
    let good = std::fs::read(fp32_model(dir.path())).unwrap();

    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    let t = truncated.to_str().unwrap();
    refused(&[c, "--model", t], &out, 5, &[t, "not a valid ONNX model"]);

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a model at all").unwrap();
    let g = garbage.to_str().unwrap();
    refused(&[c, "--model", g], &out, 5, &[g]);

    let no_meta = model_file(
        dir.path(),
        "no_meta.onnx",
        &FixtureOptions {
            with_metadata: false,
            ..FixtureOptions::default()
        },
    );
    let n = no_meta.to_str().unwrap();
    refused(&[c, "--model", n], &out, 5, &[n, "no strokeseg metadata"]);

    let wrong_input = model_file(
        dir.path(),
        "wrong_input.onnx",
        &FixtureOptions {
            graph_input_channels: 4,
            ..FixtureOptions::default()
        },
    );
    let w = wrong_input.to_str().unwrap();
    refused(
        &[c, "--model", w],
        &out,
        5,
        &[w, "input shape", "[1, 5, 160, 160]", "[1, 4, 160, 160]"],
    );

    let wrong_output = model_file(
        dir.path(),
        "wrong_output.onnx",
        &FixtureOptions {
            stride: 2,
            ..FixtureOptions::default()
        },
    );
    let w = wrong_output.to_str().unwrap();
    refused(
        &[c, "--model", w],
        &out,
        5,
        &[w, "output", "[1, 2, 160, 160]"],
    );

    let missing = dir.path().join("missing.onnx");
    refused(
        &[c, "--model", missing.to_str().unwrap()],
        &out,
        5,
        &["missing.onnx"],
    );

    // No --model and (in this build) no embedded model.
    if strokeseg_edge::model::embedded_model().is_none() {
        refused(&[c], &out, 5, &["no model", "--method threshold"]);
    }

    // model-info reports the same problems (and answers to its old spelling, info-model).
    let o = edge(&["model-info", n]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let o = edge(&[
        "info-model",
        good_path(dir.path()).to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metadata"]["input_shape"][1], 5);
    assert_eq!(v["inputs"][0]["name"], "input");
    assert_eq!(v["size_bytes"].as_u64().unwrap() as usize, good.len());
}

fn good_path(dir: &Path) -> PathBuf {
    dir.join("model.onnx")
}

#[test]
fn bad_studies_exit_3_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let case = case(dir.path());
    let c = case.to_str().unwrap();
    let out = dir.path().join("out");

    for method in ["threshold", "model"] {
        let model = fp32_model(dir.path());
        let mut base: Vec<&str> = vec![c, "--method", method];
        if method == "model" {
            base.extend_from_slice(&["--model", model.to_str().unwrap()]);
        }
        // Truncated Tmax (read by both methods).
        let tmax = file_of(&case, "CT_Tmax");
        let bytes = std::fs::read(&tmax).unwrap();
        std::fs::write(&tmax, &bytes[..bytes.len() - 1000]).unwrap();
        refused(&base, &out, 3, &[tmax.to_str().unwrap(), "truncated"]);

        // Malformed header: absurd dims.
        let mut bad = bytes.clone();
        bad[42..44].copy_from_slice(&30000u16.to_le_bytes()); // dim[1]
        bad[44..46].copy_from_slice(&30000u16.to_le_bytes()); // dim[2]
        std::fs::write(&tmax, &bad).unwrap();
        refused(&base, &out, 3, &[tmax.to_str().unwrap()]);

        // Not NIfTI at all.
        std::fs::write(&tmax, b"hello").unwrap();
        refused(&base, &out, 3, &[tmax.to_str().unwrap()]);

        // Mismatched grid: Tmax with a different in-plane spacing.
        let mut other = bytes.clone();
        let px = f32::from_le_bytes(other[80..84].try_into().unwrap());
        other[80..84].copy_from_slice(&(px * 1.5).to_le_bytes()); // pixdim[1]
        std::fs::write(&tmax, &other).unwrap();
        refused(&base, &out, 3, &["grid mismatch", tmax.to_str().unwrap()]);

        // Missing modality.
        std::fs::remove_file(&tmax).unwrap();
        refused(&base, &out, 3, &["missing modality CT_Tmax"]);
        std::fs::write(&tmax, &bytes).unwrap();
    }

    // The model method also needs CBV, MTT and CT; the threshold rule does not.
    let model = fp32_model(dir.path());
    let cbv = file_of(&case, "CT_CBV");
    let saved = std::fs::read(&cbv).unwrap();
    std::fs::remove_file(&cbv).unwrap();
    refused(
        &[c, "--model", model.to_str().unwrap()],
        &out,
        3,
        &["missing modality CT_CBV"],
    );
    let o = edge(&[
        "segment",
        c,
        "--method",
        "threshold",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&cbv, saved).unwrap();

    // A study folder that does not exist.
    let out2 = dir.path().join("out2");
    refused(
        &[
            dir.path().join("nope").to_str().unwrap(),
            "--method",
            "threshold",
        ],
        &out2,
        3,
        &["nope"],
    );
}

#[test]
fn non_finite_voxels_are_replaced_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let case = case(dir.path());
    // CT_MTT is float64: write NaN and +inf into some voxels of the first slice.
    let mtt = file_of(&case, "CT_MTT");
    let mut bytes = std::fs::read(&mtt).unwrap();
    let start = 352 + 8 * (128 * 256 + 100);
    for k in 0..7 {
        let v = if k % 2 == 0 { f64::NAN } else { f64::INFINITY };
        bytes[start + 8 * k..start + 8 * k + 8].copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&mtt, bytes).unwrap();
    let model = fp32_model(dir.path());
    let out = dir.path().join("out");
    let o = edge(&[
        "segment",
        case.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("7 non-finite voxels"), "{}", text(&o));
    let r: Report = serde_json::from_slice(&std::fs::read(out.join(REPORT_FILE)).unwrap()).unwrap();
    assert_eq!(r.non_finite_voxels["CT_MTT"], 7);
    assert_eq!(r.non_finite_voxels["CT_CBF"], 0);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("CT_MTT") && w.contains('7'))
    );
}
