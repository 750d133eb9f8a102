//! The brain-template anatomy: determinism, ISLES layout and datatypes, and anatomy that looks
//! like a brain (tissue mix, hemispheres, territories). Needs the template that `cargo xtask
//! setup-templates` installs (CI runs it before the tests).

mod common;

use common::template_dir;

use strokeseg_io::{Dataset, NiftiVolumeReader, PatientGrouping};
use strokeseg_phantom::{
    AnatomySource, DatasetOptions, Tissue, generate_case, isles_dtype, write_dataset,
};
use strokeseg_shared::modality::Modality;

fn template_opts(n_cases: usize, seed: u64) -> DatasetOptions {
    DatasetOptions {
        n_cases,
        seed,
        anatomy: AnatomySource {
            template_fraction: 1.0,
            template_dir: Some(template_dir()),
        },
        ..DatasetOptions::default()
    }
}

#[test]
fn template_cases_are_deterministic_per_seed() {
    let opts = template_opts(2, 5);
    let a = generate_case(5, 0, &opts).unwrap();
    let b = generate_case(5, 0, &opts).unwrap();
    assert_eq!(a, b);
    let other = generate_case(6, 0, &opts).unwrap();
    assert_ne!(a.ct_hu, other.ct_hu);
}

#[test]
fn template_anatomy_looks_like_a_brain() {
    let mut grey = 0usize;
    let mut white = 0usize;
    let mut csf = 0usize;
    let mut deep = 0usize;
    let mut brain = 0usize;
    let mut left = 0usize;
    let mut right = 0usize;
    let mut lesions = 0usize;
    for k in 0..6 {
        let opts = DatasetOptions {
            min_slices: 4,
            max_slices: 8,
            ..template_opts(6, 41)
        };
        let c = generate_case(41, k, &opts).unwrap();
        for (v, &t) in c.truth.tissue.iter().enumerate() {
            if c.truth.brain_mask[v] == 0 {
                continue;
            }
            brain += 1;
            match Tissue::from_code(t) {
                Some(Tissue::Grey) => grey += 1,
                Some(Tissue::White) => white += 1,
                Some(Tissue::Csf) => csf += 1,
                Some(Tissue::DeepGrey) => deep += 1,
                _ => {}
            }
            match c.truth.hemisphere[v] {
                1 => left += 1,
                2 => right += 1,
                _ => {}
            }
        }
        lesions += usize::from(c.truth.lesion_volume_ml > 0.0);
        // The whole head fits the 256 × 256 field of view: no brain on the image border.
        let [nx, ny, nz] = c.dims;
        for z in 0..nz {
            for j in 0..ny {
                for i in [0, nx - 1] {
                    assert_eq!(c.truth.brain_mask[z * nx * ny + j * nx + i], 0);
                }
            }
        }
    }
    let frac = |n: usize| n as f64 / brain as f64;
    // Adult brains: grey ≈ 40–55 % and white ≈ 30–45 % of the intracranial volume at these
    // levels, CSF 8–25 % (older brains more).
    assert!((0.30..0.60).contains(&frac(grey)), "grey {:.3}", frac(grey));
    assert!(
        (0.20..0.50).contains(&frac(white)),
        "white {:.3}",
        frac(white)
    );
    assert!((0.05..0.30).contains(&frac(csf)), "csf {:.3}", frac(csf));
    assert!(deep > 0, "no deep grey nuclei");
    let balance = left as f64 / (left + right) as f64;
    assert!((0.42..0.58).contains(&balance), "left share {balance:.3}");
    assert!(
        lesions >= 3,
        "only {lesions} of 6 template cases have a lesion"
    );
}

#[test]
fn template_datasets_keep_the_isles_layout_and_datatypes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        min_slices: 2,
        max_slices: 3,
        ..template_opts(2, 9)
    };
    write_dataset(dir.path(), &opts).unwrap();
    let dataset = Dataset::discover(
        dir.path(),
        &PatientGrouping::Csv(dir.path().join("patients.csv")),
    )
    .unwrap();
    assert_eq!(dataset.cases.len(), 2);
    for case in &dataset.cases {
        for modality in [
            Modality::Ct,
            Modality::Cbf,
            Modality::Cbv,
            Modality::Mtt,
            Modality::Tmax,
            Modality::Ot,
        ] {
            let path = case.files.require(modality).unwrap();
            let reader = NiftiVolumeReader::open(path).unwrap();
            assert_eq!(reader.dtype(), isles_dtype(modality), "{}", path.display());
            assert_eq!(&reader.dims()[..2], &[256, 256]);
        }
    }
}

#[test]
fn a_missing_template_is_a_clear_error() {
    let missing = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        anatomy: AnatomySource {
            template_fraction: 0.5,
            template_dir: Some(missing.path().to_path_buf()),
        },
        ..DatasetOptions::default()
    };
    let err = generate_case(1, 0, &opts).unwrap_err().to_string();
    assert!(err.contains(&missing.path().display().to_string()), "{err}");
    let no_dir = DatasetOptions {
        anatomy: AnatomySource {
            template_fraction: 0.5,
            template_dir: None,
        },
        ..DatasetOptions::default()
    };
    let err = generate_case(1, 0, &no_dir).unwrap_err().to_string();
    assert!(err.contains("template"), "{err}");
}
