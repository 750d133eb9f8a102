//! Phantom → DICOM series → recognised study → NIfTI case folder: the same volumes and the
//! same grid as the phantom's own NIfTI files; broken series refused with their reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use strokeseg_dicom::read::{DicomStudy, SeriesKind};
use strokeseg_dicom::write::{ImageClass, PhantomSeriesOptions, write_phantom_study};
use strokeseg_dicom::{DicomError, RecognizerConfig, attr};
use strokeseg_io::{GridTolerance, ReadLimits, Study};
use strokeseg_shared::modality::Modality;

const MAPS_AND_CT: [Modality; 5] = [
    Modality::Cbf,
    Modality::Cbv,
    Modality::Mtt,
    Modality::Tmax,
    Modality::Ct,
];

#[test]
fn a_dicom_study_reads_as_the_phantoms_nifti_study() {
    let case = common::small_case();
    let dir = tempfile::tempdir().unwrap();
    let nifti_dir = dir.path().join("nifti");
    strokeseg_phantom::write_case(&nifti_dir, &case, 1, false, false).unwrap();
    for maps_as in [ImageClass::Ct, ImageClass::SecondaryCapture] {
        let dicom_dir = dir.path().join(format!("dicom-{maps_as:?}"));
        let opts = PhantomSeriesOptions {
            maps_as,
            ..PhantomSeriesOptions::default()
        };
        let written = write_phantom_study(&case, &dicom_dir, &opts).unwrap();
        assert_eq!(written.files().count(), 5 * case.n_slices());

        let study = DicomStudy::from_dir(&dicom_dir, &RecognizerConfig::default()).unwrap();
        let kinds: Vec<&SeriesKind> = study.series.iter().map(|s| &s.kind).collect();
        for m in [Modality::Cbf, Modality::Cbv, Modality::Mtt, Modality::Tmax] {
            assert!(
                kinds.contains(&&SeriesKind::Map(m)),
                "{m:?} not recognised: {kinds:?}"
            );
        }
        assert!(kinds.contains(&&SeriesKind::PlainCt), "{kinds:?}");
        assert_eq!(study.attributes.study_uid, written.study.study_uid);

        let case_dir = dir.path().join(format!("case-{maps_as:?}"));
        let files = study.write_case_folder(&case_dir).unwrap();
        let mut from_dicom = Study::open_files(
            files,
            &MAPS_AND_CT,
            false,
            &ReadLimits::default(),
            GridTolerance::default(),
        )
        .unwrap();
        let mut from_nifti = Study::open(&nifti_dir, &MAPS_AND_CT, false).unwrap();
        from_nifti
            .reference()
            .check_same_grid(from_dicom.reference(), GridTolerance::default())
            .unwrap();
        assert_eq!(from_dicom.reference().affine, from_nifti.reference().affine);
        let n = case.slice_voxels();
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        for (c, m) in MAPS_AND_CT.iter().enumerate() {
            // MTT and Tmax are stored in 1 ms steps; the others exactly.
            let tol = if matches!(m, Modality::Mtt | Modality::Tmax) {
                6e-4
            } else {
                0.0
            };
            for z in 0..case.n_slices() {
                from_dicom.read_channel_slice(c, z, &mut a).unwrap();
                from_nifti.read_channel_slice(c, z, &mut b).unwrap();
                let worst = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= tol, "{m:?} slice {z}: differs by {worst}");
            }
        }
    }
}

/// Rewrites one attribute of a written file.
fn edit(path: &std::path::Path, f: impl FnOnce(&mut attr::Object)) {
    let mut file = dicom_object::open_file(path).unwrap();
    f(&mut file);
    file.write_to_file(path).unwrap();
}

fn refused(dir: &std::path::Path) -> String {
    match DicomStudy::from_dir(dir, &RecognizerConfig::default()) {
        Err(e @ DicomError::Series { .. }) => e.to_string(),
        other => panic!("expected a refused series, got {other:?}"),
    }
}

#[test]
fn broken_geometry_is_refused_with_the_series_and_the_reason() {
    let case = common::small_case();
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = dir.path().join(name);
        let w = write_phantom_study(&case, &d, &PhantomSeriesOptions::default()).unwrap();
        (d, w)
    };

    let (d, w) = fresh("tilt");
    for f in &w.series[1].files {
        edit(f, |o| attr::put_ds(o, tags::GANTRY_DETECTOR_TILT, &[12.0]));
    }
    let msg = refused(&d);
    assert!(
        msg.contains("gantry tilt 12") && msg.contains("(CBF)"),
        "{msg}"
    );

    // A third slice 1.7 spacings above the second: uneven steps.
    let three = strokeseg_phantom::generate_case(
        13,
        0,
        &strokeseg_phantom::DatasetOptions {
            min_slices: 3,
            max_slices: 3,
            ..strokeseg_phantom::DatasetOptions::default()
        },
    )
    .unwrap();
    let d = dir.path().join("spacing");
    let w = write_phantom_study(&three, &d, &PhantomSeriesOptions::default()).unwrap();
    edit(&w.series[2].files[2], |o| {
        let z = three.origin_mm[2] + 2.7 * three.spacing_mm[2];
        attr::put_ds(
            o,
            tags::IMAGE_POSITION_PATIENT,
            &[-three.origin_mm[0], -three.origin_mm[1], z],
        );
    });
    let msg = refused(&d);
    assert!(
        msg.contains("non-uniform slice spacing") && msg.contains("(CBV)"),
        "{msg}"
    );

    let (d2, w2) = fresh("shear");
    edit(&w2.series[2].files[1], |o| {
        let z = case.origin_mm[2] + case.spacing_mm[2];
        attr::put_ds(
            o,
            tags::IMAGE_POSITION_PATIENT,
            &[-case.origin_mm[0] + 4.0, -case.origin_mm[1], z],
        );
    });
    let msg = refused(&d2);
    assert!(msg.contains("shifted") && msg.contains("(CBV)"), "{msg}");

    let (d, w) = fresh("orientation");
    edit(&w.series[3].files[1], |o| {
        attr::put_ds(
            o,
            tags::IMAGE_ORIENTATION_PATIENT,
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        );
    });
    let msg = refused(&d);
    assert!(
        msg.contains("mixed orientations") && msg.contains("(MTT)"),
        "{msg}"
    );

    let (d, w) = fresh("size");
    edit(&w.series[4].files[0], |o| {
        attr::put_u16(o, tags::ROWS, &[128]);
        attr::put_str(o, tags::SERIES_DESCRIPTION, VR::LO, "Tmax");
    });
    let msg = refused(&d);
    assert!(
        msg.contains("mixed sizes") && msg.contains("(Tmax)"),
        "{msg}"
    );
}

#[test]
fn a_raw_dynamic_series_is_recognised_and_refused_for_segmentation() {
    let case = common::small_case();
    let dir = tempfile::tempdir().unwrap();
    let opts = PhantomSeriesOptions {
        with_dynamic: true,
        ..PhantomSeriesOptions::default()
    };
    let written = write_phantom_study(&case, dir.path(), &opts).unwrap();
    let dynamic = written.series.last().unwrap();
    let n_frames = case.bolus.n_frames;
    assert_eq!(dynamic.files.len(), n_frames * case.n_slices());
    // Only the dynamic series and the plain CT arrive.
    for s in &written.series[1..5] {
        for f in &s.files {
            std::fs::remove_file(f).unwrap();
        }
    }
    let study = DicomStudy::from_dir(dir.path(), &RecognizerConfig::default()).unwrap();
    let dyn_series = study
        .series
        .iter()
        .find(|s| matches!(s.kind, SeriesKind::Dynamic { .. }))
        .unwrap();
    assert_eq!(dyn_series.kind, SeriesKind::Dynamic { n_frames });
    assert_eq!(
        dyn_series.geometry.as_ref().unwrap().n_slices,
        case.n_slices()
    );
    let err = study.segmentable_series().unwrap_err().to_string();
    assert!(err.contains("only a raw dynamic CTP series"), "{err}");
}

#[test]
fn site_patterns_override_the_defaults() {
    let case = common::small_case();
    let dir = tempfile::tempdir().unwrap();
    let written = write_phantom_study(&case, dir.path(), &PhantomSeriesOptions::default()).unwrap();
    for f in &written.series[1].files {
        edit(f, |o| {
            attr::put_str(o, tags::SERIES_DESCRIPTION, VR::LO, "Perf_F_42");
            attr::put_strs(o, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY"]);
            attr::put_str(o, tags::DERIVATION_DESCRIPTION, VR::ST, "vendor");
        });
    }
    let default = DicomStudy::from_dir(dir.path(), &RecognizerConfig::default()).unwrap();
    assert!(default.find(&SeriesKind::Map(Modality::Cbf)).is_none());
    let site = RecognizerConfig {
        cbf: vec!["PERF F".into()],
        ..RecognizerConfig::default()
    };
    let study = DicomStudy::from_dir(dir.path(), &site).unwrap();
    assert_eq!(
        study
            .find(&SeriesKind::Map(Modality::Cbf))
            .unwrap()
            .description,
        "Perf_F_42"
    );
}

#[test]
fn a_latin1_patient_name_reaches_the_seg_as_utf8() {
    use strokeseg_dicom::derived::{DerivedOptions, Provenance, write_segmentation};
    let case = common::small_case();
    let dir = tempfile::tempdir().unwrap();
    let written = write_phantom_study(&case, dir.path(), &PhantomSeriesOptions::default()).unwrap();
    for s in &written.series {
        for f in &s.files {
            edit(f, |o| {
                attr::put_str(o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
                attr::put_str(o, tags::PATIENT_NAME, VR::PN, "Müller^Jörg");
            });
        }
    }
    // The source really is ISO 8859-1 on disk.
    let raw = std::fs::read(&written.series[0].files[0]).unwrap();
    assert!(
        raw.windows(4).any(|w| w == b"M\xfcll"),
        "not ISO 8859-1 on disk"
    );
    let study = DicomStudy::from_dir(dir.path(), &RecognizerConfig::default()).unwrap();
    assert_eq!(study.attributes.patient_name, "Müller^Jörg");
    let ct = study.find(&SeriesKind::PlainCt).unwrap();
    let mask = vec![0u8; case.slice_voxels() * case.n_slices()];
    let provenance = Provenance {
        model_name: "m".into(),
        model_version: "1".into(),
        model_sha256: "0".repeat(64),
        software_version: "0".into(),
        not_for_diagnostic_use: true,
    };
    let seg = write_segmentation(
        &dir.path().join("seg.dcm"),
        ct,
        &study.attributes,
        &mask,
        &provenance,
        &DerivedOptions::default(),
    )
    .unwrap();
    let obj = dicom_object::open_file(&seg.path).unwrap();
    assert_eq!(
        attr::opt_str(&obj, tags::SPECIFIC_CHARACTER_SET).unwrap(),
        "ISO_IR 192"
    );
    assert_eq!(
        attr::opt_str(&obj, tags::PATIENT_NAME).unwrap(),
        "Müller^Jörg"
    );
    let raw = std::fs::read(&seg.path).unwrap();
    assert!(
        raw.windows(5).any(|w| w == "Müll".as_bytes()),
        "not UTF-8 in the SEG"
    );
}
