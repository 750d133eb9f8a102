//! `strokeseg-train train --maps computed` on phantom cases that hold the raw series
//! (`CT_4DPWI`): the maps come from `strokeseg_io::computed_maps` (the edge's function),
//! once per case into the on-disk cache, the run and the exported model record
//! `maps = computed` with the preset and `PERFUSION_VERSION`, and at the edge that model is
//! refused with the study's own maps (`--maps provided`) and segments with computed ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use common::{ok, s};
use strokeseg_edge::model::SegModel;
use strokeseg_edge::perfusion::{MAP_MODALITIES, MapsSource, map_file_name};
use strokeseg_edge::report::Method;
use strokeseg_edge::segment::{SegmentOptions, segment_to_dir};
use strokeseg_edge::segmenter::Segmenter;
use strokeseg_phantom::{DatasetOptions, DynamicSeries, write_dataset};
use strokeseg_shared::config::MapsProvenance;
use strokeseg_shared::perfusion::{PERFUSION_VERSION, PerfusionPreset};
use strokeseg_trainer::data::maps::MAPS_CACHE_ENV;
use strokeseg_trainer::export::{Checkpoint, RunExportOptions, export_run};
use strokeseg_trainer::run::RunConfig;

fn train_with_cache(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strokeseg-train"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("RUST_LOG", "warn")
        .env(MAPS_CACHE_ENV, cache)
        .output()
        .unwrap()
}

/// The cache's entries (folder names) and the modification time of each entry's CBF map.
fn cache_entries(cache: &Path) -> Vec<(String, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            for m in MAP_MODALITIES {
                assert!(
                    p.join(map_file_name(m)).is_file(),
                    "{} lacks {m:?}",
                    p.display()
                );
            }
            let mtime = std::fs::metadata(p.join(map_file_name(MAP_MODALITIES[0])))
                .unwrap()
                .modified()
                .unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), mtime)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_model_trained_on_computed_maps_records_them_and_meets_them_at_the_edge() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let opts = DatasetOptions {
        dynamic: DynamicSeries::ctp(),
        with_pwi: true,
        ..common::options(3, 47)
    };
    write_dataset(&data, &opts).unwrap();
    let cache = tmp.path().join("cache");
    let run_dir = tmp.path().join("run");
    let (data_arg, run_arg) = (s(&data), s(&run_dir));
    let tiny = [
        "--device",
        "cpu",
        "--quiet",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--base-width",
        "4",
        "--depth",
        "2",
        "--input-size",
        "64",
        "--target-spacing-mm",
        "4",
        "--warmup-epochs",
        "1",
        "--grouping",
        "per-case",
        "--maps",
        "computed",
    ];
    let mut args = vec!["train", "--data", &data_arg, "--out", &run_arg];
    args.extend(tiny);
    ok(&train_with_cache(&cache, &args));

    let computed = MapsProvenance::Computed {
        preset: PerfusionPreset::Default,
        version: PERFUSION_VERSION,
    };
    let run = RunConfig::load(&run_dir).unwrap();
    assert_eq!(run.preprocess.maps, computed);
    // One cache entry per case, each with the four maps.
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 3, "{entries:?}");

    // A second run over the same cases reuses the entries instead of recomputing them.
    let run2 = s(&tmp.path().join("run2"));
    let mut again = vec!["train", "--data", &data_arg, "--out", &run2];
    again.extend(tiny);
    ok(&train_with_cache(&cache, &again));
    assert_eq!(cache_entries(&cache), entries, "the cache was recomputed");

    let exported = export_run(&RunExportOptions {
        run_dir: run_dir.clone(),
        checkpoint: Checkpoint::Last,
        out_dir: tmp.path().join("model"),
        name: None,
        version: "0.0.1".into(),
        int8: None,
    })
    .unwrap();
    assert_eq!(exported.fp32.metadata.preprocess.maps, computed);

    // int8 calibration sees the computed maps too: calibrated on a copy of the cases that
    // holds only the raw series, the plain CT and the truth (no map folders to fall back
    // on), it reads the cache entries of the same series without recomputing them.
    let raw_only = tmp.path().join("raw_only");
    let cases = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path());
    for case in cases.filter(|p| p.is_dir()) {
        let dst = raw_only.join(case.file_name().unwrap());
        for folder in std::fs::read_dir(&case).unwrap().map(|e| e.unwrap().path()) {
            let name = folder.file_name().unwrap().to_string_lossy().into_owned();
            if ["CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax"]
                .iter()
                .any(|m| name.contains(&format!(".{m}.")))
            {
                continue;
            }
            let to = dst.join(&name);
            std::fs::create_dir_all(&to).unwrap();
            for file in std::fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().path())
            {
                std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
            }
        }
    }
    let int8_dir = s(&tmp.path().join("model_int8"));
    ok(&train_with_cache(
        &cache,
        &[
            "export",
            "--run",
            &s(&run_dir),
            "--checkpoint",
            "last",
            "--out",
            &int8_dir,
            "--int8",
            "--data",
            &s(&raw_only),
            "--calibration-slices",
            "4",
        ],
    ));
    let int8 =
        strokeseg_model::ModelInfo::read(&Path::new(&int8_dir).join("model.int8.onnx")).unwrap();
    assert_eq!(int8.checked_metadata().unwrap().preprocess.maps, computed);
    assert_eq!(
        cache_entries(&cache),
        entries,
        "calibration recomputed the maps"
    );

    // At the edge: the study's own maps are refused, computed ones segment.
    let case = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .min()
        .unwrap();
    let mut seg = Segmenter::from(SegModel::from_path(&exported.fp32.path).unwrap());
    let cancel = AtomicBool::new(false);
    let provided = SegmentOptions {
        maps: MapsSource::Provided,
        ..SegmentOptions::default()
    };
    let refused = segment_to_dir(
        &case,
        Method::Model,
        Some(&mut seg),
        &provided,
        &tmp.path().join("refused"),
        &cancel,
    )
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("trained on maps computed by strokeseg"),
        "{refused}"
    );
    let computed_options = SegmentOptions {
        maps: MapsSource::Computed,
        ..SegmentOptions::default()
    };
    let report = segment_to_dir(
        &case,
        Method::Model,
        Some(&mut seg),
        &computed_options,
        &tmp.path().join("out"),
        &cancel,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.computed_maps.is_some());
}
