//! Integration tests of the CTP phantom generator: determinism, the ISLES 2018 layout and
//! datatypes on disk, physiological plausibility of the values, lesion-free and two-slab
//! cases, and sizes.
//!
//! Datasets here are tiny (2–4 cases of 2–4 slices). Set `STROKESEG_PHANTOM_OUT=<dir>`
//! (and optionally `STROKESEG_PHANTOM_CASES`, `STROKESEG_PHANTOM_GZIP=1`,
//! `STROKESEG_PHANTOM_PWI=1`) to have `write_env_dataset` write a default-options dataset
//! there, e.g. for `tests/scripts/check_phantom_nibabel.py`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use strokeseg_io::{Dataset, Dtype, NiftiVolumeReader, PatientGrouping};
use strokeseg_phantom::{
    CORE_RELATIVE_CBF, DatasetOptions, Hemisphere, PENUMBRA_TMAX_S, PhantomCase, Tissue, Zone,
    generate_case, isles_dtype, write_case, write_dataset,
};
use strokeseg_shared::Modality;

/// Small, fast options: few slices, every knob else at its default.
fn tiny(n_cases: usize, seed: u64) -> DatasetOptions {
    DatasetOptions {
        n_cases,
        seed,
        min_slices: 2,
        max_slices: 3,
        ..DatasetOptions::default()
    }
}

/// All files under `dir`, by path relative to it, with their bytes.
fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// SHA-256 over every file of `dir` (relative path, length, bytes; paths in sorted order).
fn tree_sha256(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (path, bytes) in read_tree(dir) {
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The generator's output for a fixed seed is pinned byte for byte: every model, the
/// README's numbers and the CV folds depend on it. A change here must be deliberate (a new
/// generator version), never a side effect of a refactor.
#[test]
fn a_fixed_seed_gives_pinned_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        with_pwi: true,
        ..tiny(3, 2018)
    };
    write_dataset(dir.path(), &opts).unwrap();
    assert_eq!(
        tree_sha256(dir.path()),
        "809c17030a43238ba13a681e8f973106955ca89669e352e598e2f6070814d4d4",
        "the phantom's bytes for seed 2018 changed"
    );
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    assert!(n > 0, "mean of nothing");
    s / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The first case (scanning indices from 0) with a core of at least `min_core_ml`.
fn case_with_lesion(seed: u64, min_core_ml: f64) -> PhantomCase {
    let opts = tiny(1, seed);
    for k in 0..40 {
        let c = generate_case(seed, k, &opts).unwrap();
        if c.truth.core_volume_ml >= min_core_ml
            && c.truth.hypoperfused_volume_ml > c.truth.core_volume_ml + 2.0
        {
            return c;
        }
    }
    panic!("no case with a {min_core_ml} mL core among the first 40");
}

#[test]
fn same_seed_gives_byte_identical_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = tiny(2, 7);
    let sa = write_dataset(a.path(), &opts).unwrap();
    let sb = write_dataset(b.path(), &opts).unwrap();
    assert_eq!(sa, sb);
    let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (path, bytes) in &ta {
        assert!(bytes == &tb[path], "{} differs", path.display());
    }
    // A different seed gives different images.
    let c = tempfile::tempdir().unwrap();
    write_dataset(c.path(), &tiny(2, 8)).unwrap();
    let tc = read_tree(c.path());
    let ot_or_ct = |t: &BTreeMap<PathBuf, Vec<u8>>| {
        t.iter()
            .find(|(p, _)| p.to_string_lossy().contains(".O.CT.") && p.starts_with("case_1"))
            .map(|(_, b)| b.clone())
            .unwrap()
    };
    assert_ne!(ot_or_ct(&ta), ot_or_ct(&tc));
}

#[test]
fn a_case_regenerated_alone_equals_the_case_in_the_set() {
    let opts = tiny(4, 21);
    let set = tempfile::tempdir().unwrap();
    let summary = write_dataset(set.path(), &opts).unwrap();
    let k = 3;
    let alone = generate_case(
        opts.seed,
        k,
        &DatasetOptions {
            n_cases: 1,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(alone, generate_case(opts.seed, k, &opts).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let case_dir = dir.path().join(alone.case_name());
    let s = write_case(
        &case_dir,
        &alone,
        opts.first_file_id + 7 * k as u64,
        opts.gzip,
        opts.with_pwi,
    )
    .unwrap();
    assert_eq!(s, summary.cases[k]);
    let from_set = read_tree(&set.path().join("case_4"));
    let regenerated = read_tree(&case_dir);
    assert_eq!(from_set, regenerated);
}

#[test]
fn isles_names_datatypes_and_grid_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        with_pwi: true,
        ..tiny(2, 3)
    };
    let summary = write_dataset(dir.path(), &opts).unwrap();
    assert_eq!(summary.n_cases, 2);
    for (k, c) in summary.cases.iter().enumerate() {
        assert_eq!(c.case_name, format!("case_{}", k + 1));
        assert_eq!(c.files.len(), 7);
        let mut ids = Vec::new();
        for (file, m) in c.files.iter().zip(Modality::ALL) {
            // SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii
            let (folder, name) = file.split_once('/').unwrap();
            assert_eq!(name, format!("{folder}.nii"));
            let (prefix, id) = folder.rsplit_once('.').unwrap();
            assert_eq!(prefix, format!("SMIR.Brain.XX.O.{}", m.isles_tag()));
            ids.push(id.parse::<u64>().unwrap());

            let path = dir.path().join(&c.case_name).join(file);
            let mut r = NiftiVolumeReader::open(&path).unwrap();
            assert_eq!(r.dtype(), isles_dtype(m), "{file}");
            assert_eq!(r.dims(), [256, 256, c.n_slices], "{file}");
            let sp = r.spacing_mm();
            for (a, b) in sp.iter().zip(c.spacing_mm) {
                assert!((f64::from(*a) - b).abs() < 1e-4, "{file}: {sp:?}");
            }
            let mut buf = vec![0f32; 256 * 256];
            if m == Modality::Pwi {
                assert_eq!(r.info().dims.len(), 5, "4D PWI is (X, Y, Z, 1, T)");
                assert_eq!(r.info().dims[3], 1);
                let nt = r.info().dims[4];
                assert!((40..=50).contains(&nt), "{nt} frames");
                r.read_series_slice_f32(nt - 1, c.n_slices - 1, &mut buf)
                    .unwrap();
            } else {
                r.read_slice_f32(c.n_slices - 1, &mut buf).unwrap();
            }
            match m {
                Modality::Ot => assert!(buf.iter().all(|&v| v == 0.0 || v == 1.0)),
                Modality::Ct => {
                    assert!(buf.iter().any(|&v| v > 700.0) && buf.iter().any(|&v| v < -900.0))
                }
                Modality::Cbf | Modality::Cbv | Modality::Mtt | Modality::Tmax => {
                    assert!(buf.iter().all(|&v| v >= 0.0));
                    assert_eq!(buf[0], 0.0, "skull-stripped: zero in the corner");
                    assert!(buf.iter().any(|&v| v > 0.0));
                }
                Modality::Pwi => assert!(buf.iter().any(|&v| v > 700.0)),
            }
        }
        let first = opts.first_file_id + 7 * k as u64;
        assert_eq!(ids, (first..first + 7).collect::<Vec<_>>());
    }
    // The lead's dataset discovery reads it, and patients.csv matches the summary.
    let csv = dir.path().join("patients.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("case,patient\n"));
    let ds = Dataset::discover(dir.path(), &PatientGrouping::Csv(csv)).unwrap();
    assert_eq!(ds.cases.len(), 2);
    for (d, c) in ds.cases.iter().zip(&summary.cases) {
        assert_eq!((&d.name, &d.patient), (&c.case_name, &c.patient));
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("phantom_truth.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["n_cases"], 2);
    assert_eq!(
        json["cases"][1]["patient"],
        summary.cases[1].patient.as_str()
    );
}

#[test]
fn stored_values_are_physical_times_gain() {
    let dir = tempfile::tempdir().unwrap();
    let opts = tiny(1, 5);
    let case = generate_case(opts.seed, 0, &opts).unwrap();
    let s = write_case(&dir.path().join("case_1"), &case, 1000, false, false).unwrap();
    let nxy = case.slice_voxels();
    for (file, m) in s.files.iter().zip([
        Modality::Ct,
        Modality::Cbf,
        Modality::Cbv,
        Modality::Mtt,
        Modality::Tmax,
        Modality::Ot,
    ]) {
        let mut r = NiftiVolumeReader::open(&dir.path().join("case_1").join(file)).unwrap();
        let mut buf = vec![0f32; nxy];
        let z = case.n_slices() / 2;
        r.read_slice_f32(z, &mut buf).unwrap();
        let phys = &case.volume(m).unwrap()[z * nxy..(z + 1) * nxy];
        let gain = case.stored_gain(m);
        for (&stored, &p) in buf.iter().zip(phys) {
            let expect = match r.dtype() {
                Dtype::U16 => (p * gain).round().clamp(0.0, 65535.0),
                Dtype::I32 | Dtype::U8 => (p * gain).round(),
                _ => p,
            };
            assert!(
                (f64::from(stored) - expect).abs() <= 1e-3 * expect.abs().max(1.0),
                "{m}: {stored} vs {expect}"
            );
        }
    }
}

#[test]
fn perfusion_values_follow_physiology() {
    let c = case_with_lesion(11, 3.0);
    let t = &c.truth;
    let healthy_in = |tissue: Tissue, i: usize| {
        t.tissue[i] == tissue as u8 && t.zone[i] == Zone::Healthy as u8 && c.ot[i] == 0.0
    };
    let n = c.cbf_ml_100g_min.len();
    // Grey > white in physical units (noisy maps, before gain).
    let grey_cbf = mean(
        (0..n)
            .filter(|&i| healthy_in(Tissue::Grey, i))
            .map(|i| c.cbf_ml_100g_min[i]),
    );
    let white_cbf = mean(
        (0..n)
            .filter(|&i| healthy_in(Tissue::White, i))
            .map(|i| c.cbf_ml_100g_min[i]),
    );
    let grey_cbv = mean(
        (0..n)
            .filter(|&i| healthy_in(Tissue::Grey, i))
            .map(|i| c.cbv_ml_100g[i]),
    );
    let white_cbv = mean(
        (0..n)
            .filter(|&i| healthy_in(Tissue::White, i))
            .map(|i| c.cbv_ml_100g[i]),
    );
    eprintln!(
        "CBF grey {grey_cbf:.1} white {white_cbf:.1}; CBV grey {grey_cbv:.2} white {white_cbv:.2}"
    );
    assert!(grey_cbf > 1.4 * white_cbf);
    assert!((35.0..65.0).contains(&grey_cbf), "{grey_cbf}");
    assert!((17.0..30.0).contains(&white_cbf), "{white_cbf}");
    assert!(grey_cbv > 1.3 * white_cbv);
    assert!((2.8..4.8).contains(&grey_cbv) && (1.5..2.8).contains(&white_cbv));

    // MTT = 60 CBV / CBF: exact on the truth, within noise on the maps.
    let parenchyma = |i: usize| {
        Tissue::from_code(t.tissue[i]).is_some_and(Tissue::is_parenchyma)
            && t.cbf_ml_100g_min[i] > 5.0
    };
    for i in (0..n).filter(|&i| parenchyma(i)) {
        let expect = 60.0 * t.cbv_ml_100g[i] / t.cbf_ml_100g_min[i];
        assert!((t.mtt_s[i] - expect).abs() < 1e-9);
    }
    // On the maps MTT is the ratio of the noisy CBV and CBF (as deconvolution software
    // computes it), capped at 40 s.
    for i in (0..n).filter(|&i| c.cbf_ml_100g_min[i] >= 2.0 && c.mtt_s[i] < 40.0) {
        let expect = 60.0 * c.cbv_ml_100g[i] / c.cbf_ml_100g_min[i];
        assert!((c.mtt_s[i] - expect).abs() < 1e-9 * expect.max(1.0));
    }
    let healthy_mtt = median(
        (0..n)
            .filter(|&i| healthy_in(Tissue::Grey, i))
            .map(|i| c.mtt_s[i])
            .collect(),
    );
    assert!((3.0..6.5).contains(&healthy_mtt), "grey MTT {healthy_mtt}");

    // Tmax: 0–2 s in the healthy hemisphere, > 6 s in the penumbra.
    let (side, _) = t.lesion_site.unwrap();
    let contra = match side.opposite() {
        Hemisphere::Left => 1,
        Hemisphere::Right => 2,
    };
    let healthy_tmax: Vec<f64> = (0..n)
        .filter(|&i| t.hemisphere[i] == contra && parenchyma(i))
        .map(|i| t.tmax_s[i])
        .collect();
    assert!(
        healthy_tmax
            .iter()
            .all(|&v| (0.0..=2.0 + 1e-9).contains(&v))
    );
    let pen: Vec<usize> = (0..n)
        .filter(|&i| t.zone[i] == Zone::Penumbra as u8 && parenchyma(i))
        .collect();
    assert!(!pen.is_empty());
    let over = pen
        .iter()
        .filter(|&&i| t.tmax_s[i] > PENUMBRA_TMAX_S)
        .count() as f64
        / pen.len() as f64;
    let noisy_over = pen
        .iter()
        .filter(|&&i| c.tmax_s[i] > PENUMBRA_TMAX_S)
        .count() as f64
        / pen.len() as f64;
    eprintln!("penumbra voxels with Tmax > 6 s: truth {over:.3}, noisy {noisy_over:.3}");
    assert!(over > 0.95);
    assert!(noisy_over > 0.8);

    // Core CBF < 30 % of the contralateral healthy mean.
    let contra_cbf = mean(
        (0..n)
            .filter(|&i| t.hemisphere[i] == contra && parenchyma(i) && t.zone[i] == 0)
            .map(|i| c.cbf_ml_100g_min[i]),
    );
    let core_cbf = mean(
        (0..n)
            .filter(|&i| t.zone[i] == Zone::Core as u8)
            .map(|i| c.cbf_ml_100g_min[i]),
    );
    eprintln!(
        "core CBF {core_cbf:.1} vs contralateral {contra_cbf:.1} ({:.0} %)",
        100.0 * core_cbf / contra_cbf
    );
    assert!(core_cbf < CORE_RELATIVE_CBF * contra_cbf);
    let core_cbv = mean(
        (0..n)
            .filter(|&i| t.zone[i] == Zone::Core as u8)
            .map(|i| c.cbv_ml_100g[i]),
    );
    let contra_cbv = mean(
        (0..n)
            .filter(|&i| t.hemisphere[i] == contra && parenchyma(i) && t.zone[i] == 0)
            .map(|i| c.cbv_ml_100g[i]),
    );
    assert!(
        core_cbv < 0.8 * contra_cbv,
        "core CBV {core_cbv} vs {contra_cbv}"
    );

    // The ground truth overlaps the core but is not identical to it.
    let core: Vec<usize> = (0..n).filter(|&i| t.zone[i] == Zone::Core as u8).collect();
    let ot_in_core = core.iter().filter(|&&i| c.ot[i] > 0.0).count() as f64;
    let ot_total = c.ot.iter().filter(|&&v| v > 0.0).count() as f64;
    let dice = 2.0 * ot_in_core / (core.len() as f64 + ot_total);
    eprintln!("Dice(OT, CTP core) = {dice:.2}");
    assert!(dice > 0.3 && dice < 0.99, "{dice}");

    // CT: skull bright, brain in the soft-tissue range, zero perfusion outside the brain.
    let bone = mean(
        (0..n)
            .filter(|&i| t.tissue[i] == Tissue::Bone as u8)
            .map(|i| c.ct_hu[i]),
    );
    let grey_hu = mean(
        (0..n)
            .filter(|&i| healthy_in(Tissue::Grey, i))
            .map(|i| c.ct_hu[i]),
    );
    let white_hu = mean(
        (0..n)
            .filter(|&i| healthy_in(Tissue::White, i))
            .map(|i| c.ct_hu[i]),
    );
    eprintln!("CT bone {bone:.0} grey {grey_hu:.1} white {white_hu:.1} HU");
    assert!((700.0..1500.0).contains(&bone));
    assert!(grey_hu > white_hu + 4.0 && (25.0..50.0).contains(&grey_hu));
    for i in (0..n).filter(|&i| t.brain_mask[i] == 0) {
        assert_eq!(
            (
                c.cbf_ml_100g_min[i],
                c.cbv_ml_100g[i],
                c.mtt_s[i],
                c.tmax_s[i]
            ),
            (0.0, 0.0, 0.0, 0.0)
        );
    }
}

#[test]
fn lesion_free_cases_have_all_zero_ot() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        lesion_free_fraction: 1.0,
        ..tiny(2, 9)
    };
    let s = write_dataset(dir.path(), &opts).unwrap();
    assert_eq!(s.n_lesion_free, 2);
    for c in &s.cases {
        assert_eq!(c.lesion_site, None);
        assert_eq!(c.lesion_volume_ml, 0.0);
        let ot_file = c.files.iter().find(|f| f.contains(".O.OT.")).unwrap();
        let mut r = NiftiVolumeReader::open(&dir.path().join(&c.case_name).join(ot_file)).unwrap();
        let mut buf = vec![0f32; 256 * 256];
        for z in 0..c.n_slices {
            r.read_slice_f32(z, &mut buf).unwrap();
            assert!(buf.iter().all(|&v| v == 0.0));
        }
    }
    // With no lesion-free patients, lesions appear.
    let c = generate_case(
        9,
        0,
        &DatasetOptions {
            lesion_free_fraction: 0.0,
            ..opts
        },
    )
    .unwrap();
    assert!(c.truth.lesion_site.is_some());
}

#[test]
fn two_slab_patients_share_in_plane_geometry() {
    let opts = DatasetOptions {
        two_slab_fraction: 1.0,
        ..tiny(2, 13)
    };
    let a = generate_case(opts.seed, 0, &opts).unwrap();
    let b = generate_case(opts.seed, 1, &opts).unwrap();
    assert_eq!((a.patient_index, a.slab_index, a.n_slabs), (0, 0, 2));
    assert_eq!((b.patient_index, b.slab_index, b.n_slabs), (0, 1, 2));
    assert_eq!(a.dims, b.dims);
    assert_eq!(a.spacing_mm, b.spacing_mm);
    assert_eq!(a.origin_mm[..2], b.origin_mm[..2]);
    let dz = b.origin_mm[2] - a.origin_mm[2];
    assert!(
        (dz - a.n_slices() as f64 * a.spacing_mm[2]).abs() < 1e-9,
        "slabs are adjacent: {dz}"
    );
    assert_eq!(a.truth.lesion_site, b.truth.lesion_site);
    // Anatomy continues across the junction: the last slice of slab 0 and the first of
    // slab 1 have similar brain areas and agree on most voxel classes.
    let nxy = a.slice_voxels();
    let last = &a.truth.tissue[(a.n_slices() - 1) * nxy..];
    let first = &b.truth.tissue[..nxy];
    let area = |s: &[u8]| s.iter().filter(|&&t| t != Tissue::Air as u8).count() as f64;
    assert!((area(last) / area(first) - 1.0).abs() < 0.35);
    // The lead's two-slab heuristic recognises the pair.
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &opts).unwrap();
    let ds = Dataset::discover(dir.path(), &PatientGrouping::Heuristic).unwrap();
    assert_eq!(ds.cases[0].patient, ds.cases[1].patient);
}

#[test]
fn slice_counts_and_spacing_stay_in_isles_ranges() {
    let opts = DatasetOptions {
        min_slices: 2,
        max_slices: 22,
        ..DatasetOptions::default()
    };
    // Only the geometry matters here; generating is the cheapest way through the API.
    for k in 0..3 {
        let c = generate_case(17, k, &opts).unwrap();
        assert!((2..=22).contains(&c.n_slices()));
        assert!((0.78..=1.1).contains(&c.spacing_mm[0]));
        assert!((4.0..=12.0).contains(&c.spacing_mm[2]));
        assert_eq!(c.dims[..2], [256, 256]);
    }
    let narrow = DatasetOptions {
        min_slices: 3,
        max_slices: 3,
        ..opts.clone()
    };
    assert_eq!(generate_case(17, 0, &narrow).unwrap().n_slices(), 3);
    // Nonsense bounds are repaired, not a panic.
    let odd = DatasetOptions {
        min_slices: 0,
        max_slices: 0,
        two_slab_fraction: f64::NAN,
        ..opts
    };
    let c = generate_case(17, 0, &odd).unwrap();
    assert_eq!(c.n_slices(), 1);
}

#[test]
fn sizes_per_case() {
    let opts = DatasetOptions {
        min_slices: 5,
        max_slices: 5,
        ..DatasetOptions::default()
    };
    let case = generate_case(1, 0, &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let plain = write_case(&dir.path().join("plain"), &case, 1, false, false).unwrap();
    let gz = write_case(&dir.path().join("gz"), &case, 1, true, false).unwrap();
    let t1 = Instant::now();
    let pwi = write_case(&dir.path().join("pwi"), &case, 1, true, true).unwrap();
    let t2 = Instant::now();
    eprintln!(
        "one 5-slice case: {:.2} MB plain, {:.2} MB gz, {:.2} MB gz with 4D PWI ({} frames); writing {:.1} s, PWI {:.1} s",
        plain.bytes_written as f64 / 1e6,
        gz.bytes_written as f64 / 1e6,
        pwi.bytes_written as f64 / 1e6,
        case.bolus.n_frames,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
    );
    let slice_bytes = 256 * 256;
    // int32 + 2 × uint16 + 2 × float64 + uint8 = 25 bytes per voxel, plus 6 headers.
    assert_eq!(plain.bytes_written, (25 * slice_bytes * 5 + 6 * 352) as u64);
    assert!(gz.bytes_written < plain.bytes_written / 2);
    assert!(pwi.bytes_written > gz.bytes_written);
}

#[test]
fn rewriting_replaces_an_earlier_phantom_and_refuses_other_data() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &tiny(3, 2)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "kept").unwrap();
    let s = write_dataset(dir.path(), &tiny(2, 2)).unwrap();
    assert_eq!(s.n_cases, 2);
    assert!(!dir.path().join("case_3").exists(), "stale case removed");
    assert!(dir.path().join("notes.txt").exists(), "other files kept");
    assert_eq!(
        Dataset::discover(dir.path(), &PatientGrouping::OnePerCase)
            .unwrap()
            .cases
            .len(),
        2
    );

    let foreign = tempfile::tempdir().unwrap();
    std::fs::create_dir(foreign.path().join("case_1")).unwrap();
    let err = write_dataset(foreign.path(), &tiny(1, 2)).unwrap_err();
    assert!(err.to_string().contains("not a phantom dataset"), "{err}");
    assert!(foreign.path().join("case_1").is_dir());
}

/// Writes a default dataset to `$STROKESEG_PHANTOM_OUT` (skipped when unset).
#[test]
fn write_env_dataset() {
    let Ok(out) = std::env::var("STROKESEG_PHANTOM_OUT") else {
        return;
    };
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let opts = DatasetOptions {
        n_cases: std::env::var("STROKESEG_PHANTOM_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6),
        seed: std::env::var("STROKESEG_PHANTOM_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2018),
        gzip: flag("STROKESEG_PHANTOM_GZIP"),
        with_pwi: flag("STROKESEG_PHANTOM_PWI"),
        ..DatasetOptions::default()
    };
    let t0 = Instant::now();
    let s = write_dataset(Path::new(&out), &opts).unwrap();
    let elapsed_s = t0.elapsed().as_secs_f64();
    // How well the lead's two-slab heuristic recovers the true patient grouping.
    let ds = Dataset::discover(Path::new(&out), &PatientGrouping::Heuristic).unwrap();
    let same = |i: usize, j: usize| s.cases[i].patient == s.cases[j].patient;
    let same_h = |i: usize, j: usize| ds.cases[i].patient == ds.cases[j].patient;
    let pairs = (1..s.n_cases).filter(|&i| same(i - 1, i)).count();
    let found = (1..s.n_cases)
        .filter(|&i| same(i - 1, i) && same_h(i - 1, i))
        .count();
    let false_pairs = (1..s.n_cases)
        .filter(|&i| !same(i - 1, i) && same_h(i - 1, i))
        .count();
    eprintln!("two-slab heuristic: {found} of {pairs} true pairs found, {false_pairs} false pairs");
    eprintln!(
        "{} cases ({} patients, {} lesion-free, {} slices), {:.1} MB in {:.1} s",
        s.n_cases,
        s.n_patients,
        s.n_lesion_free,
        s.total_slices,
        s.bytes_written as f64 / 1e6,
        elapsed_s
    );
    for c in &s.cases {
        eprintln!(
            "{} {} slab {}/{}: {} slices of {} mm, {:.2} mm in-plane, OT {:.1} mL, core {:.1} mL, Tmax>6 {:.1} mL, {:?}, gains {:.2}/{:.2}",
            c.case_name,
            c.patient,
            c.slab_index + 1,
            c.n_slabs,
            c.n_slices,
            c.spacing_mm[2],
            c.spacing_mm[0],
            c.lesion_volume_ml,
            c.core_volume_ml,
            c.hypoperfused_volume_ml,
            c.lesion_site,
            c.cbf_gain,
            c.cbv_gain
        );
    }
}

/// Prints lesion statistics over `$STROKESEG_PHANTOM_STATS` cases of the default
/// dataset (skipped when unset): volumes, core rCBF, Dice(OT, core), lesion-free share.
#[test]
fn print_dataset_statistics() {
    let Some(n_cases) = std::env::var("STROKESEG_PHANTOM_STATS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let opts = DatasetOptions::default();
    let (mut lesion_free, mut slices, mut rcbf, mut dices, mut ot_ml, mut pen_ml) =
        (0, 0, vec![], vec![], vec![], vec![]);
    for k in 0..n_cases {
        let c = generate_case(opts.seed, k, &opts).unwrap();
        let t = &c.truth;
        slices += c.n_slices();
        let n = c.ot.len();
        let core: Vec<usize> = (0..n).filter(|&i| t.zone[i] == Zone::Core as u8).collect();
        let ot = c.ot.iter().filter(|&&v| v > 0.0).count();
        if ot == 0 {
            lesion_free += 1;
        } else {
            ot_ml.push(t.lesion_volume_ml);
            pen_ml.push(t.hypoperfused_volume_ml);
        }
        if let (Some((side, _)), false) = (t.lesion_site, core.is_empty()) {
            let contra = if side == Hemisphere::Left { 2 } else { 1 };
            let parenchyma =
                |i: usize| Tissue::from_code(t.tissue[i]).is_some_and(Tissue::is_parenchyma);
            let contra_cbf = mean(
                (0..n)
                    .filter(|&i| t.hemisphere[i] == contra && parenchyma(i))
                    .map(|i| c.cbf_ml_100g_min[i]),
            );
            rcbf.push(mean(core.iter().map(|&i| c.cbf_ml_100g_min[i])) / contra_cbf);
            let inter = core.iter().filter(|&&i| c.ot[i] > 0.0).count();
            dices.push(2.0 * inter as f64 / (core.len() + ot) as f64);
        }
    }
    let q = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return String::from("-");
        }
        format!(
            "min {:.2} median {:.2} max {:.2}",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    eprintln!(
        "{n_cases} cases, {lesion_free} with empty OT, mean {:.2} slices",
        slices as f64 / n_cases as f64
    );
    eprintln!("OT mL: {}", q(&ot_ml));
    eprintln!("Tmax>6 mL: {}", q(&pen_ml));
    eprintln!("core rCBF: {}", q(&rcbf));
    eprintln!("Dice(OT, core): {}", q(&dices));
}
