//! Study I/O on files generated here: every datatype, plain and gzip, slice-by-slice
//! reads, mask writing with the reference geometry, and every kind of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};

use strokeseg_io::{
    CaseFiles, Dataset, Dtype, IoError, NiftiVolumeReader, NiftiWriter, PatientGrouping,
    ReadLimits, Study, new_header, read_header,
};
use strokeseg_shared::Modality;

const NX: usize = 6;
const NY: usize = 5;
const NZ: usize = 4;

/// Value of voxel (x, y, z): distinct, small enough for every datatype.
fn voxel(x: usize, y: usize, z: usize) -> f64 {
    (x + 10 * y + 60 * z) as f64 % 120.0
}

fn slice_values(z: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(NX * NY);
    for y in 0..NY {
        for x in 0..NX {
            v.push(voxel(x, y, z));
        }
    }
    v
}

fn write_volume(path: &Path, dtype: Dtype, spacing_mm: [f32; 3]) {
    let h = new_header(&[NX, NY, NZ], spacing_mm, [-10.0, 20.0, 5.0], dtype).unwrap();
    let mut w = NiftiWriter::create(path, &h, dtype).unwrap();
    for z in 0..NZ {
        w.write_slice_f64(&slice_values(z)).unwrap();
    }
    assert_eq!(w.finish().unwrap(), path);
}

#[test]
fn every_dtype_round_trips_plain_and_gzip_in_any_slice_order() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in Dtype::ALL {
        for ext in ["nii", "nii.gz"] {
            let path = dir.path().join(format!("{dtype}.{ext}"));
            write_volume(&path, dtype, [0.9, 0.9, 5.0]);
            let mut r = NiftiVolumeReader::open(&path).unwrap();
            assert_eq!(r.dtype(), dtype);
            assert_eq!(r.dims(), [NX, NY, NZ]);
            assert_eq!(r.info().compressed, ext == "nii.gz");
            let mut out = vec![0f32; NX * NY];
            // Backwards, forwards, repeated: the gzip reader must reopen and skip.
            for z in [3, 0, 2, 2, 1] {
                let stats = r.read_slice_f32(z, &mut out).unwrap();
                assert_eq!(stats.non_finite, 0);
                let want: Vec<f32> = slice_values(z).iter().map(|&v| v as f32).collect();
                assert_eq!(out, want, "{dtype} {ext} slice {z}");
            }
        }
    }
}

#[test]
fn scaling_and_non_finite_values_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.nii");
    let h = new_header(&[2, 2, 1], [1.0; 3], [0.0; 3], Dtype::F64).unwrap();
    let mut w = NiftiWriter::create(&path, &h, Dtype::F64).unwrap();
    w.write_slice_f64(&[1.0, f64::NAN, f64::INFINITY, 4.0])
        .unwrap();
    w.finish().unwrap();
    let mut r = NiftiVolumeReader::open(&path).unwrap();
    let mut out = [9f32; 4];
    assert_eq!(r.read_slice_f32(0, &mut out).unwrap().non_finite, 2);
    assert_eq!(out, [1.0, 0.0, 0.0, 4.0]);

    // scl_slope/scl_inter: patch the header of an int16 file.
    let path = dir.path().join("s.nii");
    write_volume(&path, Dtype::I16, [1.0; 3]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
    bytes[116..120].copy_from_slice(&(-3.0f32).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let mut r = NiftiVolumeReader::open(&path).unwrap();
    let mut out = vec![0f32; NX * NY];
    r.read_slice_f32(1, &mut out).unwrap();
    assert_eq!(out[7], (voxel(1, 1, 1) * 2.0 - 3.0) as f32);
}

#[test]
fn mask_writer_keeps_the_reference_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ct.nii");
    write_volume(&src, Dtype::I32, [0.78, 0.81, 6.5]);
    let r = NiftiVolumeReader::open(&src).unwrap();
    let out = dir.path().join("mask.nii.gz");
    let mut w = NiftiWriter::create(&out, r.header(), Dtype::U8).unwrap();
    for z in 0..NZ {
        let m: Vec<u8> = (0..NX * NY).map(|i| ((i + z) % 2) as u8).collect();
        w.write_slice_u8(&m).unwrap();
    }
    w.finish().unwrap();
    let (h_src, i_src) = read_header(&src, &ReadLimits::default()).unwrap();
    let (h_out, i_out) = read_header(&out, &ReadLimits::default()).unwrap();
    assert_eq!(i_out.dtype, Dtype::U8);
    assert_eq!(i_out.dims, i_src.dims);
    assert_eq!(i_out.spacing_mm, i_src.spacing_mm);
    assert_eq!(i_out.affine, i_src.affine);
    for (a, b) in [
        (h_src.qform_code, h_out.qform_code),
        (h_src.sform_code, h_out.sform_code),
    ] {
        assert_eq!(a, b);
    }
    assert_eq!(h_src.pixdim, h_out.pixdim);
    assert_eq!(h_src.srow_x, h_out.srow_x);
    assert_eq!(h_src.xyzt_units, h_out.xyzt_units);
    i_src.check_same_grid(&i_out, Default::default()).unwrap();
}

#[test]
fn unfinished_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.nii.gz");
    let h = new_header(&[NX, NY, NZ], [1.0; 3], [0.0; 3], Dtype::U8).unwrap();
    {
        let mut w = NiftiWriter::create(&path, &h, Dtype::U8).unwrap();
        w.write_slice_u8(&[0; NX * NY]).unwrap();
        assert!(matches!(
            w.write_slice_u8(&[0; 3]),
            Err(IoError::BufferSize { got: 3, .. })
        ));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let mut w = NiftiWriter::create(&path, &h, Dtype::U8).unwrap();
    w.write_slice_u8(&[0; NX * NY]).unwrap();
    assert!(matches!(
        w.finish(),
        Err(IoError::SliceCount {
            expected: 4,
            written: 1,
            ..
        })
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn uncompressed_slice_read_touches_only_that_slice() {
    // Corrupting the bytes of slice 3 on disk must not affect reading slice 1.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.nii");
    write_volume(&path, Dtype::F32, [1.0; 3]);
    let mut bytes = std::fs::read(&path).unwrap();
    let slice_bytes = NX * NY * 4;
    let s3 = 352 + 3 * slice_bytes;
    for b in &mut bytes[s3..s3 + slice_bytes] {
        *b = 0xff; // NaN pattern
    }
    std::fs::write(&path, &bytes).unwrap();
    let mut r = NiftiVolumeReader::open(&path).unwrap();
    let mut out = vec![0f32; NX * NY];
    assert_eq!(r.read_slice_f32(1, &mut out).unwrap().non_finite, 0);
    assert_eq!(r.read_slice_f32(3, &mut out).unwrap().non_finite, NX * NY);
}

// ---- bad inputs -------------------------------------------------------------------

fn valid_bytes(dtype: Dtype) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.nii");
    write_volume(&p, dtype, [1.0; 3]);
    std::fs::read(p).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn open_bytes(
    name: &str,
    bytes: &[u8],
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<NiftiVolumeReader, IoError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let r = NiftiVolumeReader::open(&p);
    (dir, p, r)
}

fn expect_err(name: &str, bytes: &[u8]) -> (IoError, PathBuf) {
    let (_dir, p, r) = open_bytes(name, bytes);
    match r {
        Ok(_) => panic!("{name}: accepted a bad file"),
        Err(e) => {
            assert_eq!(e.path(), p, "error must name the file: {e}");
            assert!(e.to_string().contains(name), "message names the file: {e}");
            (e, p)
        }
    }
}

fn set_i16(bytes: &mut [u8], offset: usize, v: i16) {
    bytes[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn empty_garbage_and_truncated_files_are_refused() {
    assert!(matches!(
        expect_err("empty.nii", &[]).0,
        IoError::Empty { .. }
    ));
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(matches!(
        expect_err("garbage.nii", &garbage).0,
        IoError::NotNifti { .. }
    ));
    let good = valid_bytes(Dtype::I16);
    assert!(matches!(
        expect_err("short_header.nii", &good[..200]).0,
        IoError::Truncated {
            needed_bytes: 348,
            available_bytes: 200,
            ..
        }
    ));
    assert!(matches!(
        expect_err("short_data.nii", &good[..good.len() - 10]).0,
        IoError::Truncated { .. }
    ));
    // gzip: a cut stream is caught by the trailer check or while streaming.
    let gz = gzip(&good);
    let (_d, _p, r) = open_bytes("cut.nii.gz", &gz[..gz.len() / 2]);
    match r {
        Err(e) => assert!(
            matches!(
                e,
                IoError::Truncated { .. } | IoError::NotNifti { .. } | IoError::Io { .. }
            ),
            "{e}"
        ),
        Ok(mut reader) => {
            let mut out = vec![0f32; NX * NY];
            let errs = (0..NZ)
                .filter_map(|z| reader.read_slice_f32(z, &mut out).err())
                .count();
            assert!(errs > 0, "a truncated gzip must fail somewhere");
        }
    }
    // wrong gzip: gzip magic followed by garbage.
    let mut bad_gz = vec![0x1f, 0x8b, 8, 0];
    bad_gz.extend_from_slice(&garbage[..500]);
    let (e, _) = expect_err("bad.nii.gz", &bad_gz);
    assert!(
        matches!(e, IoError::NotNifti { .. } | IoError::Truncated { .. }),
        "{e}"
    );
}

#[test]
fn absurd_headers_are_refused_before_allocating() {
    let good = valid_bytes(Dtype::U16);
    let mut b = good.clone();
    set_i16(&mut b, 40, 9); // dim[0] = 9 (read as other endianness → nonsense)
    assert!(matches!(
        expect_err("dim0.nii", &b).0,
        IoError::NotNifti { .. } | IoError::InvalidHeader { .. }
    ));
    let mut b = good.clone();
    set_i16(&mut b, 44, -3); // dim[2] negative
    assert!(matches!(
        expect_err("negdim.nii", &b).0,
        IoError::InvalidHeader { field: "dim", .. }
    ));
    let mut b = good.clone();
    set_i16(&mut b, 42, 32000);
    set_i16(&mut b, 44, 32000); // 1e9 voxels per slice
    assert!(matches!(
        expect_err("huge.nii", &b).0,
        IoError::TooLarge { .. }
    ));
    let mut b = good.clone();
    b[108..112].copy_from_slice(&1.0e9f32.to_le_bytes()); // vox_offset past the end
    assert!(matches!(
        expect_err("voxoff.nii", &b).0,
        IoError::InvalidHeader {
            field: "vox_offset",
            ..
        }
    ));
    let mut b = good.clone();
    set_i16(&mut b, 70, 32); // complex64
    set_i16(&mut b, 72, 64);
    assert!(matches!(
        expect_err("complex.nii", &b).0,
        IoError::UnsupportedDatatype { code: 32, .. }
    ));
    let mut b = good.clone();
    set_i16(&mut b, 72, 8); // bitpix disagrees with uint16
    assert!(matches!(
        expect_err("bitpix.nii", &b).0,
        IoError::InvalidHeader {
            field: "bitpix",
            ..
        }
    ));
    let mut b = good.clone();
    b[80..84].copy_from_slice(&(-1.0f32).to_le_bytes()); // pixdim[1] < 0
    assert!(matches!(
        expect_err("pixdim.nii", &b).0,
        IoError::InvalidHeader {
            field: "pixdim",
            ..
        }
    ));
    let mut b = good.clone();
    b[0..4].copy_from_slice(&540i32.to_le_bytes());
    let (e, _) = expect_err("nifti2.nii", &b);
    assert!(e.to_string().contains("NIfTI-2"), "{e}");
    let mut b = good;
    b[344..348].copy_from_slice(b"ni1\0");
    assert!(matches!(
        expect_err("pair.nii", &b).0,
        IoError::NotNifti { .. }
    ));
}

#[test]
fn a_2d_image_is_refused_where_a_volume_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case_1");
    std::fs::create_dir(&case).unwrap();
    let h = new_header(&[NX, NY], [1.0; 3], [0.0; 3], Dtype::F32).unwrap();
    let mut w = NiftiWriter::create(&case.join("cbf.nii"), &h, Dtype::F32).unwrap();
    w.write_slice_f32(&[1.0; NX * NY]).unwrap();
    w.finish().unwrap();
    let err = Study::open(&case, &[Modality::Cbf], false).err().unwrap();
    assert!(
        matches!(
            err,
            IoError::WrongDimensionality {
                expected: "3D volume",
                ..
            }
        ),
        "{err}"
    );
}

// ---- studies and datasets ---------------------------------------------------------

fn isles_case(
    root: &Path,
    n: usize,
    modalities: &[(Modality, Dtype)],
    spacing_mm: [f32; 3],
) -> PathBuf {
    let case = root.join(format!("case_{n}"));
    for (i, (m, dtype)) in modalities.iter().enumerate() {
        let name = format!("SMIR.Brain.XX.O.{}.{}", m.isles_tag(), 1000 + 10 * n + i);
        let d = case.join(&name);
        std::fs::create_dir_all(&d).unwrap();
        write_volume(&d.join(format!("{name}.nii")), *dtype, spacing_mm);
    }
    case
}

const ISLES: [(Modality, Dtype); 6] = [
    (Modality::Ct, Dtype::I32),
    (Modality::Cbf, Dtype::U16),
    (Modality::Cbv, Dtype::U16),
    (Modality::Mtt, Dtype::F64),
    (Modality::Tmax, Dtype::F64),
    (Modality::Ot, Dtype::U8),
];

#[test]
fn isles_and_plain_case_folders_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let case = isles_case(dir.path(), 3, &ISLES, [0.9, 0.9, 5.0]);
    let files = CaseFiles::discover(&case).unwrap();
    assert_eq!(files.files.len(), 6);
    let channels = [
        Modality::Cbf,
        Modality::Cbv,
        Modality::Mtt,
        Modality::Tmax,
        Modality::Ct,
    ];
    let mut study = Study::open(&case, &channels, true).unwrap();
    assert_eq!(study.n_slices(), NZ);
    let mut out = vec![0f32; NX * NY];
    study.read_channel_slice(4, 2, &mut out).unwrap();
    assert_eq!(out[NX + 1], voxel(1, 1, 2) as f32);
    study.read_truth_slice(1, &mut out).unwrap();

    // A plain folder of per-modality files, gzip.
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    for (m, dtype) in ISLES {
        write_volume(
            &plain.join(format!("{}.nii.gz", m.short_name())),
            dtype,
            [0.9, 0.9, 5.0],
        );
    }
    std::fs::write(plain.join("notes.txt"), "ignored").unwrap();
    let mut study = Study::open(&plain, &channels, true).unwrap();
    study.read_channel_slice(0, 3, &mut out).unwrap();
    assert_eq!(out[0], voxel(0, 0, 3) as f32);
}

#[test]
fn missing_modalities_and_mismatched_grids_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let case = isles_case(dir.path(), 1, &ISLES[..3], [0.9, 0.9, 5.0]);
    let err = Study::open(&case, &[Modality::Cbf, Modality::Tmax], false)
        .err()
        .unwrap();
    match &err {
        IoError::MissingModality {
            modality: Modality::Tmax,
            found,
            ..
        } => {
            assert!(found.contains("CT_CBF"), "{found}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("CT_Tmax"));

    // Tmax on another spacing.
    let name = "SMIR.Brain.XX.O.CT_Tmax.77";
    let d = case.join(name);
    std::fs::create_dir_all(&d).unwrap();
    write_volume(&d.join(format!("{name}.nii")), Dtype::F64, [0.95, 0.9, 5.0]);
    let err = Study::open(&case, &[Modality::Cbf, Modality::Tmax], false)
        .err()
        .unwrap();
    match &err {
        IoError::GridMismatch {
            reference,
            other,
            what,
        } => {
            assert!(reference.to_string_lossy().contains("CT_CBF"));
            assert!(other.to_string_lossy().contains("CT_Tmax"));
            assert!(what.contains("spacing"), "{what}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn dataset_discovery_orders_cases_and_reads_a_patient_csv() {
    let dir = tempfile::tempdir().unwrap();
    let training = dir.path().join("TRAINING");
    for n in [10, 2, 1] {
        isles_case(&training, n, &ISLES[..2], [0.9, 0.9, 5.0]);
    }
    let ds = Dataset::discover(dir.path(), &PatientGrouping::OnePerCase).unwrap();
    let names: Vec<_> = ds.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["case_1", "case_2", "case_10"]);
    assert_eq!(ds.patients().len(), 3);

    let csv = dir.path().join("patients.csv");
    std::fs::write(&csv, "case,patient\ncase_1,A\ncase_2,A\ncase_10,B\n").unwrap();
    let ds = Dataset::discover(&training, &PatientGrouping::Csv(csv.clone())).unwrap();
    let p = ds.patients();
    assert_eq!(
        p,
        vec![("A".to_string(), vec![0, 1]), ("B".to_string(), vec![2])]
    );

    std::fs::write(&csv, "case,patient\ncase_1,A\n").unwrap();
    let err = Dataset::discover(&training, &PatientGrouping::Csv(csv))
        .err()
        .unwrap();
    assert!(err.to_string().contains("case_2 is not listed"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        Dataset::discover(&empty, &PatientGrouping::Heuristic),
        Err(IoError::Dataset { .. })
    ));
}
