//! `segment` on phantom studies that hold the raw dynamic series (`CT_4DPWI`, the phantom's
//! exact indicator-dilution series): maps computed by strokeseg when the study has none
//! (`--maps auto`) or on request (`--maps computed`), written beside the mask on the CT's
//! grid with the AIF/VOF plot, the AIF and VOF in the report; the refusals of `--maps
//! provided` without maps and `--maps computed` without the series; a model meets the maps
//! its metadata says it was trained on (`PreprocessConfig::maps`) or is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use strokeseg_edge::perfusion::{AIF_VOF_FILE, MAP_MODALITIES, map_file_name};
use strokeseg_edge::report::{MASK_FILE, OVERLAY_FILE, REPORT_FILE, Report};
use strokeseg_io::{NiftiVolumeReader, ReadLimits, read_header};
use strokeseg_model::fixture::FixtureOptions;
use strokeseg_phantom::{DatasetOptions, DynamicSeries};
use strokeseg_shared::config::MapsProvenance;
use strokeseg_shared::perfusion::PerfusionPreset;
use strokeseg_shared::{Modality, PreprocessConfig};

/// A two-slice phantom study with its exact dynamic series in `dir/name`; without its
/// four maps unless `keep_maps`.
fn study_with_series(dir: &Path, name: &str, keep_maps: bool) -> PathBuf {
    let opts = DatasetOptions {
        dynamic: DynamicSeries::ctp(),
        ..phantom_opts(2018, 2)
    };
    let case = strokeseg_phantom::generate_case(opts.seed, 0, &opts).unwrap();
    let case_dir = dir.join(name);
    strokeseg_phantom::write_case(&case_dir, &case, 100, false, true).unwrap();
    if !keep_maps {
        for m in MAP_MODALITIES {
            let file = file_of(&case_dir, m.isles_tag());
            std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
        }
    }
    case_dir
}

fn report_of(out: &Path) -> Report {
    serde_json::from_slice(&std::fs::read(out.join(REPORT_FILE)).unwrap()).unwrap()
}

/// The computed outputs, sorted as `entries` lists them.
fn computed_entries() -> Vec<String> {
    let mut v: Vec<String> = MAP_MODALITIES.iter().map(|&m| map_file_name(m)).collect();
    v.extend([AIF_VOF_FILE, MASK_FILE, OVERLAY_FILE, REPORT_FILE].map(String::from));
    v.sort();
    v
}

/// Checks the computed maps in `out` against the CT of `case`: same grid, float32, tissue
/// CBF in the physiological range, and the report's AIF/VOF record.
fn check_computed(case: &Path, out: &Path) -> Report {
    assert_eq!(entries(out), computed_entries());
    let report = report_of(out);
    let computed = report
        .computed_maps
        .clone()
        .expect("computed_maps in the report");
    let n = computed.n_frames;
    assert!((40..=60).contains(&n), "{n} frames");
    assert_eq!(computed.aif_hu.len(), n);
    assert_eq!(computed.aif_measured_hu.len(), n);
    assert!(!computed.aif_voxels.is_empty() && computed.aif_voxels.len() <= 8);
    assert!(computed.aif_voxels.iter().all(|v| v[2] < 2));
    assert!(computed.pv_scale >= 1.0);
    assert!(computed.aif_hu.iter().copied().fold(0.0, f32::max) > 100.0);
    assert_eq!(
        report.outputs.last().map(String::as_str),
        Some(REPORT_FILE),
        "the report is published last"
    );
    assert!(report.timings.perfusion_ms > 0.0);

    let (ch, cinfo) = read_header(&file_of(case, "CT"), &ReadLimits::default()).unwrap();
    for m in MAP_MODALITIES {
        let path = out.join(map_file_name(m));
        let (h, info) = read_header(&path, &ReadLimits::default()).unwrap();
        assert_eq!(h.dim, ch.dim, "{m:?}");
        assert_eq!(h.pixdim[1..4], ch.pixdim[1..4]);
        assert_eq!(info.dtype.to_string(), "float32");
        assert_eq!(
            [info.nx(), info.ny(), info.nz()],
            [cinfo.nx(), cinfo.ny(), cinfo.nz()]
        );
    }
    // Healthy-looking CBF in tissue: the median of the non-zero voxels, mL/100 g/min
    // (absolute CBF is low by the dispersion and the partial-volume scale; see BENCHMARKS).
    let mut reader = NiftiVolumeReader::open(&out.join(map_file_name(Modality::Cbf))).unwrap();
    let mut slice = vec![0.0f32; cinfo.slice_voxels()];
    let mut tissue = Vec::new();
    for z in 0..cinfo.nz() {
        reader.read_slice_f32(z, &mut slice).unwrap();
        tissue.extend(slice.iter().copied().filter(|&v| v > 0.0));
    }
    tissue.sort_by(f32::total_cmp);
    let median = tissue[tissue.len() / 2];
    assert!(tissue.len() > 10_000, "{} tissue voxels", tissue.len());
    assert!((10.0..=80.0).contains(&median), "median CBF {median}");
    report
}

#[test]
fn maps_are_computed_when_the_study_has_only_the_raw_series() {
    let dir = tempfile::tempdir().unwrap();
    let case = study_with_series(dir.path(), "case", false);
    let out = dir.path().join("out");
    let o = edge(&[
        "segment",
        case.to_str().unwrap(),
        "--method",
        "threshold",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report = check_computed(&case, &out);
    assert!(report.threshold.is_some());
    // The AIF/VOF plot: a PNG with the AIF drawn.
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(out.join(AIF_VOF_FILE)).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    let aif = strokeseg_edge::perfusion::AIF_COLOUR;
    assert!(buf.chunks_exact(3).filter(|p| *p == aif).count() > 200);
}

/// A fixture model whose metadata says it was trained on maps computed with the default
/// preset.
fn model_on_computed_maps(dir: &Path) -> PathBuf {
    model_file(
        dir,
        "computed.onnx",
        &FixtureOptions {
            preprocess: PreprocessConfig {
                maps: MapsProvenance::computed(PerfusionPreset::Default),
                ..PreprocessConfig::default()
            },
            ..FixtureOptions::default()
        },
    )
}

#[test]
fn a_model_trained_on_computed_maps_gets_computed_maps() {
    let dir = tempfile::tempdir().unwrap();
    let case = study_with_series(dir.path(), "case", true);
    let model = model_on_computed_maps(dir.path());
    let out = dir.path().join("out");
    // auto: the study has its own maps, but the model reads computed ones.
    let o = edge(&[
        "segment",
        case.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report = check_computed(&case, &out);
    assert!(report.model.is_some());
    // The rule beside the model read the computed maps too.
    assert!(report.rule_comparison.is_some());

    // With the study's own maps it is refused, saying what it was trained on.
    let refused = dir.path().join("refused");
    let o = edge(&[
        "segment",
        case.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--maps",
        "provided",
        "--out",
        refused.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("trained on maps computed by strokeseg"),
        "{}",
        text(&o)
    );

    // The threshold rule with auto and all four maps present: the study's own maps.
    let out_auto = dir.path().join("out-auto");
    let o = edge(&[
        "segment",
        case.to_str().unwrap(),
        "--method",
        "threshold",
        "--out",
        out_auto.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        entries(&out_auto),
        vec![MASK_FILE, OVERLAY_FILE, REPORT_FILE]
    );
    assert!(report_of(&out_auto).computed_maps.is_none());
}

#[test]
fn a_model_trained_on_provided_maps_refuses_computed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let case = study_with_series(dir.path(), "case", false);
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
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("trained on the maps provided with the study")
            && t.contains("maps computed by strokeseg"),
        "{t}"
    );
    assert!(!out.join(REPORT_FILE).exists());
}

#[test]
fn metadata_without_maps_means_provided() {
    // Older metadata (the shipped model's) has no `maps`: provided.
    let mut json = serde_json::to_value(PreprocessConfig::default()).unwrap();
    assert_eq!(json["maps"]["source"], "provided");
    json.as_object_mut().unwrap().remove("maps");
    let back: PreprocessConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.maps, MapsProvenance::Provided);
    let computed =
        serde_json::to_value(MapsProvenance::computed(PerfusionPreset::Default)).unwrap();
    assert_eq!(
        computed,
        serde_json::json!({"source": "computed", "preset": "default", "version": strokeseg_shared::perfusion::PERFUSION_VERSION})
    );
}

#[test]
fn missing_maps_or_series_are_refused_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let case = study_with_series(dir.path(), "case", false);
    let out = dir.path().join("out");
    let o = edge(&[
        "segment",
        case.to_str().unwrap(),
        "--method",
        "threshold",
        "--maps",
        "provided",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("CT_CBF"), "{}", text(&o));
    assert!(
        entries(&out).iter().all(|e| e.starts_with('.')),
        "{:?}",
        entries(&out)
    );

    // A classic study (maps, no raw series): `--maps computed` names CT_4DPWI.
    let classic = dir.path().join("classic");
    let opts = phantom_opts(2018, 2);
    let c = strokeseg_phantom::generate_case(opts.seed, 0, &opts).unwrap();
    strokeseg_phantom::write_case(&classic, &c, 100, false, false).unwrap();
    let o = edge(&[
        "segment",
        classic.to_str().unwrap(),
        "--method",
        "threshold",
        "--maps",
        "computed",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("CT_4DPWI"), "{}", text(&o));
}
