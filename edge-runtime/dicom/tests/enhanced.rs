//! Enhanced CT (multi-frame) instances: a phantom study written as one Enhanced CT instance
//! per series reads to the same NIfTI case folder, byte for byte, as the single-frame
//! writing of the same study (maps and plain CT; the raw dynamic series and the plain CT);
//! the files pass dciodvfy; corrupt multi-frame instances are refused naming file and frame.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use strokeseg_dicom::RecognizerConfig;
use strokeseg_dicom::attr::{self, Object, put_ds, put_is, put_seq};
use strokeseg_dicom::derived::{DerivedOptions, Provenance, write_segmentation};
use strokeseg_dicom::read::{DicomStudy, InstanceLimits, SeriesKind, validate_instance};
use strokeseg_dicom::write::{PhantomSeriesOptions, WrittenStudy, write_phantom_study};

fn write(dir: &Path, multi_frame: bool) -> WrittenStudy {
    let opts = PhantomSeriesOptions {
        multi_frame,
        with_dynamic: true,
        ..PhantomSeriesOptions::default()
    };
    write_phantom_study(&common::small_case(), dir, &opts).unwrap()
}

#[test]
fn an_enhanced_ct_study_reads_to_the_same_case_folder_as_single_frame_images() {
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let single = write(&dir.path().join("single"), false);
    let multi = write(&dir.path().join("multi"), true);
    // Plain CT, four maps, the dynamic series: one file each.
    assert_eq!(multi.files().count(), 6);
    assert!(single.files().count() > 6);

    let mut folders = Vec::new();
    for (name, written) in [("single", &single), ("multi", &multi)] {
        let study =
            DicomStudy::from_dir(&dir.path().join(name), &RecognizerConfig::default()).unwrap();
        let kinds: Vec<&SeriesKind> = study.series.iter().map(|s| &s.kind).collect();
        assert!(kinds.contains(&&SeriesKind::PlainCt), "{name}: {kinds:?}");
        assert!(
            kinds.contains(&&SeriesKind::Dynamic {
                n_frames: case.bolus.n_frames
            }),
            "{name}: {kinds:?}"
        );
        assert_eq!(study.attributes.study_uid, written.study.study_uid);
        let maps = dir.path().join(format!("case-maps-{name}"));
        study.write_case_folder(&maps).unwrap();
        let dynamic = dir.path().join(format!("case-dynamic-{name}"));
        study.write_dynamic_case_folder(&dynamic).unwrap();
        folders.push((
            common::case_folder_bytes(&maps),
            common::case_folder_bytes(&dynamic),
        ));
    }
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&folders[0].0).len(), 5, "{:?}", names(&folders[0].0));
    assert_eq!(names(&folders[0].1).len(), 2, "{:?}", names(&folders[0].1));
    for (a, b) in [
        (&folders[0].0, &folders[1].0),
        (&folders[0].1, &folders[1].1),
    ] {
        assert_eq!(names(a), names(b));
        for ((name, x), (_, y)) in a.iter().zip(b) {
            assert!(
                x == y,
                "{}: the Enhanced CT case file differs",
                name.display()
            );
        }
    }
}

#[test]
fn the_enhanced_ct_files_pass_dciodvfy() {
    let Some(dciodvfy) = common::tool("dciodvfy", "the_enhanced_ct_files_pass_dciodvfy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let multi = write(dir.path(), true);
    for file in multi.files() {
        let (_, out) = common::run(&dciodvfy, &[file.to_str().unwrap()]);
        // Straight to the process's stderr, so `--nocapture` is not needed to see it.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "dciodvfy {}:\n{out}", file.display());
        // The maps' Rescale Type (US, S) is not HU. PS3.3 C.8.15.3.10 (CT Pixel Value
        // Transformation Macro) requires HU only where Frame Type Value 1 is ORIGINAL; the
        // maps' frames are DERIVED, where C.11.1.1.2's terms (US, or a unit) apply. Debian's
        // dciodvfy still enumerates HU alone: that one message is tolerated, for derived
        // files only; an original image (the plain CT, the dynamic series) must pass clean.
        let derived = dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(file)
            .unwrap()
            .element(tags::IMAGE_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("DERIVED");
        let errors: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("Error"))
            .filter(|l| {
                !(derived
                    && (l.contains(
                        "Unrecognized enumerated value <US> for value 1 of attribute <Rescale Type>",
                    ) || l.contains(
                        "Unrecognized enumerated value <S> for value 1 of attribute <Rescale Type>",
                    )))
            })
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
}

/// The plain CT's Enhanced CT file of a fresh study in `dir`.
fn enhanced_ct(dir: &Path) -> PathBuf {
    let multi = write(dir, true);
    multi.series[0].files[0].clone()
}

/// Rewrites the file at `path` with `f` applied.
fn edit(path: &Path, f: impl FnOnce(&mut Object)) {
    let mut file = dicom_object::open_file(path).unwrap();
    f(&mut file);
    file.write_to_file(path).unwrap();
}

/// Applies `f` to frame `k`'s (0-based) per-frame functional group.
fn edit_frame(path: &Path, k: usize, f: impl FnOnce(&mut Object)) {
    edit(path, |obj| {
        let mut items: Vec<Object> = obj
            .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .to_vec();
        f(&mut items[k]);
        put_seq(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, items);
    });
}

/// The error reading the study at `dir`, with the one at the SCP's check of `file`.
fn refusals(dir: &Path, file: &Path) -> (String, String) {
    let read = match DicomStudy::from_dir(dir, &RecognizerConfig::default()) {
        Ok(study) => match study.write_case_folder(&dir.join("case")) {
            Ok(_) => panic!("{}: read without an error", file.display()),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let scp = match validate_instance(file, &InstanceLimits::default()) {
        Ok(_) => panic!("{}: validated without an error", file.display()),
        Err(e) => e.to_string(),
    };
    (read, scp)
}

#[test]
fn corrupt_enhanced_ct_instances_are_refused_naming_file_and_frame() {
    let file_name = |p: &Path| p.display().to_string();
    // Number of Frames not the number of per-frame functional groups.
    let dir = tempfile::tempdir().unwrap();
    let f = enhanced_ct(dir.path());
    edit(&f, |o| put_is(o, tags::NUMBER_OF_FRAMES, 3));
    let (read, scp) = refusals(dir.path(), &f);
    for e in [&read, &scp] {
        assert!(e.contains(&file_name(&f)), "{e}");
        assert!(e.contains("NumberOfFrames"), "{e}");
    }

    // Absurd Number of Frames: refused by its bound before anything is allocated.
    let dir = tempfile::tempdir().unwrap();
    let f = enhanced_ct(dir.path());
    edit(&f, |o| put_is(o, tags::NUMBER_OF_FRAMES, 2_000_000_000));
    let (_, scp) = refusals(dir.path(), &f);
    assert!(
        scp.contains(&file_name(&f)) && scp.contains("NumberOfFrames"),
        "{scp}"
    );

    // Pixel data shorter than the frames need.
    let dir = tempfile::tempdir().unwrap();
    let f = enhanced_ct(dir.path());
    edit(&f, |o| {
        o.put(dicom_core::DataElement::new(
            tags::PIXEL_DATA,
            dicom_core::VR::OW,
            dicom_core::value::PrimitiveValue::U16(vec![0u16; 1000].into()),
        ));
    });
    let (read, scp) = refusals(dir.path(), &f);
    for e in [&read, &scp] {
        assert!(e.contains(&file_name(&f)) && e.contains("PixelData"), "{e}");
    }

    // A frame without its Image Position (Patient).
    let dir = tempfile::tempdir().unwrap();
    let f = enhanced_ct(dir.path());
    edit_frame(&f, 1, |g| {
        g.remove_element(tags::PLANE_POSITION_SEQUENCE);
    });
    let (read, scp) = refusals(dir.path(), &f);
    for e in [&read, &scp] {
        assert!(e.contains(&file_name(&f)), "{e}");
        assert!(
            e.contains("ImagePositionPatient") && e.contains("frame 2"),
            "{e}"
        );
    }

    // Frame 2 in another orientation than frame 1.
    let dir = tempfile::tempdir().unwrap();
    let f = enhanced_ct(dir.path());
    edit_frame(&f, 1, |g| {
        let mut item = Object::new_empty();
        put_ds(
            &mut item,
            tags::IMAGE_ORIENTATION_PATIENT,
            &[1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
        );
        put_seq(g, tags::PLANE_ORIENTATION_SEQUENCE, vec![item]);
    });
    let (read, scp) = refusals(dir.path(), &f);
    for e in [&read, &scp] {
        assert!(e.contains(&file_name(&f)), "{e}");
        assert!(
            e.contains("frame 2") && e.contains("mixed orientations"),
            "{e}"
        );
    }
}

#[test]
fn a_seg_of_an_enhanced_ct_source_references_its_frames_and_passes_dciodvfy() {
    let test = "a_seg_of_an_enhanced_ct_source_references_its_frames_and_passes_dciodvfy";
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let multi = write(&dir.path().join("in"), true);
    let study = DicomStudy::from_dir(&dir.path().join("in"), &RecognizerConfig::default()).unwrap();
    let source = study.find(&SeriesKind::PlainCt).unwrap();
    assert_eq!(source.instances.len(), case.n_slices());
    let mask: Vec<u8> = case.ot.iter().map(|&v| u8::from(v > 0.5)).collect();
    let provenance = Provenance {
        model_name: "strokeseg-unet".into(),
        model_version: "2.0.0".into(),
        model_sha256: "0".repeat(64),
        software_version: env!("CARGO_PKG_VERSION").into(),
        not_for_diagnostic_use: true,
    };
    let seg_path = dir.path().join("seg.dcm");
    write_segmentation(
        &seg_path,
        source,
        &study.attributes,
        &mask,
        &provenance,
        &DerivedOptions::default(),
    )
    .unwrap();
    let seg = dicom_object::open_file(&seg_path).unwrap();
    let frames = seg
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    let ct_uid = &multi.series[0].sop_instance_uids[0];
    for (k, frame) in frames.iter().enumerate() {
        let derivation = &frame
            .element(tags::DERIVATION_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let source_item = &derivation
            .element(tags::SOURCE_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            attr::opt_str(source_item, tags::REFERENCED_SOP_INSTANCE_UID).as_deref(),
            Some(ct_uid.as_str())
        );
        assert_eq!(
            attr::opt_str(source_item, tags::REFERENCED_FRAME_NUMBER),
            Some((k + 1).to_string())
        );
    }
    let Some(dciodvfy) = common::tool("dciodvfy", test) else {
        return;
    };
    let (_, out) = common::run(&dciodvfy, &[seg_path.to_str().unwrap()]);
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn an_rle_compressed_enhanced_ct_instance_reads_as_the_uncompressed_one() {
    let test = "an_rle_compressed_enhanced_ct_instance_reads_as_the_uncompressed_one";
    let Some(dcmcrle) = common::tool("dcmcrle", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for rle in [false, true] {
        let study_dir = dir.path().join(format!("study-rle-{rle}"));
        let multi = write(&study_dir, true);
        if rle {
            // dcmcrle: one fragment per frame.
            for file in multi.files() {
                let (ok, out) =
                    common::run(&dcmcrle, &[file.to_str().unwrap(), file.to_str().unwrap()]);
                assert!(ok, "dcmcrle {}: {out}", file.display());
                let obj = dicom_object::open_file(file).unwrap();
                assert_eq!(
                    obj.meta().transfer_syntax().trim_end_matches('\0'),
                    dicom_dictionary_std::uids::RLE_LOSSLESS
                );
            }
        }
        let study = DicomStudy::from_dir(&study_dir, &RecognizerConfig::default()).unwrap();
        let maps = dir.path().join(format!("maps-rle-{rle}"));
        study.write_case_folder(&maps).unwrap();
        let dynamic = dir.path().join(format!("dynamic-rle-{rle}"));
        study.write_dynamic_case_folder(&dynamic).unwrap();
        folders.push([
            common::case_folder_bytes(&maps),
            common::case_folder_bytes(&dynamic),
        ]);
    }
    assert!(
        folders[0] == folders[1],
        "the RLE Enhanced CT study's case folders differ from the uncompressed one's"
    );
}
