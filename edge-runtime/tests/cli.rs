//! The `strokeseg-edge` binary end to end on phantom studies: the demo, `inspect`, and
//! bad inputs to `inspect` (clear message naming the file, documented exit code, no panic).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strokeseg_shared::phantom::{self, DatasetOptions};

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strokeseg-edge"))
        .args(args)
        .output()
        .expect("run strokeseg-edge")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes phantom case 0 of seed 11 into `dir/case_1`.
fn phantom_case(dir: &Path) -> PathBuf {
    let opts = DatasetOptions {
        n_cases: 1,
        seed: 11,
        max_slices: 4,
        ..DatasetOptions::default()
    };
    let case = phantom::generate_case(opts.seed, 0, &opts);
    let case_dir = dir.join("case_1");
    phantom::write_case(&case_dir, &case, 100, false, false).unwrap();
    case_dir
}

fn file_of(case_dir: &Path, tag: &str) -> PathBuf {
    let sub = std::fs::read_dir(case_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(&format!(".O.{tag}."))
        })
        .unwrap();
    let name = sub.file_name().unwrap().to_string_lossy().to_string();
    sub.join(format!("{name}.nii"))
}

#[test]
fn demo_generates_segments_and_scores_a_study() {
    let out = tempfile::tempdir().unwrap();
    let o = edge(&["demo", "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("truth lesion"), "{t}");
    assert!(t.contains("CT_Tmax"), "{t}");
    assert!(t.contains("dice"), "{t}");
    assert!(out.path().join("study").is_dir());
    for f in ["lesion_mask.nii.gz", "report.json", "overlay.png"] {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    if strokeseg_edge::model::embedded_model().is_none() {
        assert!(t.contains("threshold rule"), "{t}");
    }
}

#[test]
fn inspect_reports_grid_and_statistics_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom_case(dir.path());
    let o = edge(&["inspect", case.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dims"][0], 256);
    assert_eq!(v["channels"].as_array().unwrap().len(), 5);
    assert_eq!(v["channels"][0]["dtype"], "uint16");
    assert_eq!(v["channels"][2]["dtype"], "float64");
    assert_eq!(v["channels"][4]["dtype"], "int32");
    assert!(v["brain_volume_ml"].as_f64().unwrap() > 10.0);
    assert!(v["has_truth"].as_bool().unwrap());
}

#[test]
fn bad_inputs_exit_3_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom_case(dir.path());

    // Truncated CBF.
    let cbf = file_of(&case, "CT_CBF");
    let bytes = std::fs::read(&cbf).unwrap();
    std::fs::write(&cbf, &bytes[..bytes.len() / 2]).unwrap();
    let o = edge(&["inspect", case.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(cbf.to_str().unwrap()), "{}", text(&o));
    assert!(text(&o).contains("truncated"), "{}", text(&o));
    std::fs::write(&cbf, &bytes).unwrap();

    // Missing Tmax.
    let tmax = file_of(&case, "CT_Tmax");
    std::fs::remove_dir_all(tmax.parent().unwrap()).unwrap();
    let o = edge(&["inspect", case.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("missing modality CT_Tmax"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("panicked"));

    // Not a folder at all.
    let o = edge(&["inspect", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("nope"), "{}", text(&o));
}

#[test]
fn an_all_zero_perfusion_study_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom_case(dir.path());
    // Replace every perfusion map with zeros: no brain voxels.
    for tag in ["CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax"] {
        let f = file_of(&case, tag);
        let mut bytes = std::fs::read(&f).unwrap();
        for b in &mut bytes[352..] {
            *b = 0;
        }
        std::fs::write(&f, bytes).unwrap();
    }
    let o = edge(&["inspect", case.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("no brain voxels"), "{}", text(&o));
}
