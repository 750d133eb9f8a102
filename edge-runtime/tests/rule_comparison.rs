//! A model run reports the threshold rule beside the model: the rule's volume is exactly what
//! `--method threshold` finds on the same study, the masks' Dice is what the two written
//! masks give, and the disagreement warning follows the documented margin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::*;
use strokeseg_edge::model::SegModel;
use strokeseg_edge::report::{DisagreementMargin, MASK_FILE, Method, Report};
use strokeseg_edge::segment::{SegmentOptions, segment_to_dir};
use strokeseg_edge::segmenter::Segmenter;
use strokeseg_io::NiftiVolumeReader;

fn segment(
    case: &Path,
    method: Method,
    model: Option<&Path>,
    options: &SegmentOptions,
    out: &Path,
) -> Report {
    let mut model = model.map(|p| Segmenter::from(SegModel::from_path(p).unwrap()));
    segment_to_dir(
        case,
        method,
        model.as_mut(),
        options,
        out,
        &AtomicBool::new(false),
    )
    .unwrap()
}

/// Lesion voxels of each mask and of both, read back from the two files.
fn overlap(a: &Path, b: &Path) -> (u64, u64, u64) {
    let (mut ra, mut rb) = (
        NiftiVolumeReader::open(a).unwrap(),
        NiftiVolumeReader::open(b).unwrap(),
    );
    let n = ra.info().slice_voxels();
    let (mut sa, mut sb) = (vec![0f32; n], vec![0f32; n]);
    let (mut na, mut nb, mut both) = (0, 0, 0);
    for z in 0..ra.info().nz() {
        ra.read_slice_f32(z, &mut sa).unwrap();
        rb.read_slice_f32(z, &mut sb).unwrap();
        for (&x, &y) in sa.iter().zip(&sb) {
            na += u64::from(x != 0.0);
            nb += u64::from(y != 0.0);
            both += u64::from(x != 0.0 && y != 0.0);
        }
    }
    (na, nb, both)
}

#[test]
fn the_rule_beside_the_model_is_the_threshold_method() {
    let dir = tempfile::tempdir().unwrap();
    let model = fp32_model(dir.path());
    let (case, summary) = phantom_case(dir.path(), "case_1", &phantom_opts(31, 6), 0, false);
    assert!(summary.lesion_volume_ml > 0.0);
    let options = SegmentOptions::default();
    let by_model = segment(
        &case,
        Method::Model,
        Some(&model),
        &options,
        &dir.path().join("model"),
    );
    let by_rule = segment(
        &case,
        Method::Threshold,
        None,
        &options,
        &dir.path().join("rule"),
    );

    let cmp = by_model
        .rule_comparison
        .clone()
        .expect("a model run reports the rule");
    assert!(by_rule.rule_comparison.is_none());
    assert_eq!(Some(&cmp.rule), by_rule.threshold.as_ref());
    assert_eq!(cmp.rule_volume_ml, by_rule.lesion_volume_ml);
    assert_eq!(cmp.model_volume_ml, by_model.lesion_volume_ml);
    assert_eq!(
        cmp.volume_difference_ml,
        by_model.lesion_volume_ml - by_rule.lesion_volume_ml
    );
    assert_eq!(cmp.margin, DisagreementMargin::default());

    let (n_model, n_rule, both) = overlap(
        &dir.path().join("model").join(MASK_FILE),
        &dir.path().join("rule").join(MASK_FILE),
    );
    assert_eq!(n_model, by_model.lesion_voxels);
    assert_eq!(n_rule, by_rule.lesion_voxels);
    let dice = 2.0 * both as f64 / (n_model + n_rule) as f64;
    assert!(
        (cmp.mask_dice - dice).abs() < 1e-12,
        "{} vs {dice}",
        cmp.mask_dice
    );
    assert!(by_model.timings.rule_ms > 0.0);
}

#[test]
fn the_disagreement_warning_follows_the_margin() {
    let dir = tempfile::tempdir().unwrap();
    let model = fp32_model(dir.path());
    let (case, _) = phantom_case(dir.path(), "case_1", &phantom_opts(32, 6), 0, false);
    let warned = |r: &Report| r.warnings.iter().any(|w| w.contains("disagree"));

    let strict = SegmentOptions {
        disagreement: DisagreementMargin {
            absolute_ml: 0.0,
            relative: 0.0,
        },
        ..SegmentOptions::default()
    };
    let r = segment(
        &case,
        Method::Model,
        Some(&model),
        &strict,
        &dir.path().join("strict"),
    );
    let cmp = r.rule_comparison.clone().unwrap();
    assert_ne!(
        cmp.volume_difference_ml, 0.0,
        "the fixture model and the rule should differ here"
    );
    assert!(cmp.disagree);
    assert!(warned(&r), "{:?}", r.warnings);

    let lenient = SegmentOptions {
        disagreement: DisagreementMargin {
            absolute_ml: 1e6,
            relative: 1.0,
        },
        ..SegmentOptions::default()
    };
    let r = segment(
        &case,
        Method::Model,
        Some(&model),
        &lenient,
        &dir.path().join("lenient"),
    );
    assert!(!r.rule_comparison.as_ref().unwrap().disagree);
    assert!(!warned(&r), "{:?}", r.warnings);

    let invalid = SegmentOptions {
        disagreement: DisagreementMargin {
            absolute_ml: -1.0,
            relative: 0.5,
        },
        ..SegmentOptions::default()
    };
    let mut m = Segmenter::from(SegModel::from_path(&model).unwrap());
    let out = dir.path().join("invalid");
    let err = segment_to_dir(
        &case,
        Method::Model,
        Some(&mut m),
        &invalid,
        &out,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(err.to_string().contains("disagreement"), "{err}");
    assert!(!out.join(MASK_FILE).exists());
}
