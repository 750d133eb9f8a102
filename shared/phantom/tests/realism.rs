//! The generator's realism knobs ([`Realism`]): ISLES-like lesion sizes, multifocal lesions,
//! vendor appearance and confounders. Each is deterministic per seed, keeps the ISLES
//! datatypes, and changes only what it says it changes.

mod common;

use common::template_dir;

use strokeseg_phantom::{AnatomySource, DatasetOptions, Realism, generate_case};

fn hospitals(n_cases: usize, seed: u64) -> DatasetOptions {
    DatasetOptions {
        n_cases,
        seed,
        anatomy: AnatomySource {
            template_fraction: 1.0,
            template_dir: Some(template_dir()),
        },
        realism: Realism::hospitals(),
        ..DatasetOptions::default()
    }
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn lesion_sizes_follow_isles_2018() {
    // ISLES 2018 training OT volumes per case: median ≈ 15 mL, IQR ≈ 5.7–45 mL, up to
    // over 100 mL. 48 cases of the realistic family, with lesion-free ones left out.
    let opts = hospitals(48, 2024);
    let mut volumes: Vec<f64> = (0..opts.n_cases)
        .map(|k| {
            generate_case(opts.seed, k, &opts)
                .unwrap()
                .truth
                .lesion_volume_ml
        })
        .filter(|&v| v > 0.0)
        .collect();
    volumes.sort_by(f64::total_cmp);
    let (q25, median, q75) = (
        quantile(&volumes, 0.25),
        quantile(&volumes, 0.5),
        quantile(&volumes, 0.75),
    );
    assert!(volumes.len() >= 32, "{} lesion cases of 48", volumes.len());
    assert!((8.0..30.0).contains(&median), "median {median:.1} mL");
    assert!((2.5..12.0).contains(&q25), "q25 {q25:.1} mL");
    assert!((20.0..70.0).contains(&q75), "q75 {q75:.1} mL");
    let largest = volumes.last().copied().unwrap_or(0.0);
    assert!(largest > 60.0, "largest lesion only {largest:.1} mL");
}

#[test]
fn realistic_cases_are_deterministic_per_seed() {
    let opts = hospitals(3, 8);
    for k in 0..3 {
        assert_eq!(
            generate_case(8, k, &opts).unwrap(),
            generate_case(8, k, &opts).unwrap()
        );
    }
}

#[test]
fn multifocal_patients_have_two_lesions() {
    let opts = DatasetOptions {
        lesion_free_fraction: 0.0,
        min_slices: 2,
        max_slices: 3,
        realism: Realism {
            multifocal_fraction: 1.0,
            ..Realism::hospitals()
        },
        ..hospitals(6, 31)
    };
    let counts: Vec<usize> = (0..6)
        .map(|k| generate_case(31, k, &opts).unwrap().truth.n_lesions)
        .collect();
    assert!(
        counts.iter().filter(|&&n| n == 2).count() >= 4,
        "{counts:?}"
    );
    let single = DatasetOptions {
        realism: Realism::default(),
        ..opts.clone()
    };
    assert!((0..6).all(|k| generate_case(31, k, &single).unwrap().truth.n_lesions == 1));
}

#[test]
fn confounders_darken_and_delay_the_maps_but_never_enter_the_truth() {
    let base = DatasetOptions {
        lesion_free_fraction: 1.0,
        min_slices: 6,
        max_slices: 8,
        realism: Realism {
            confounder_rate: 1.0,
            ..Realism::default()
        },
        ..hospitals(4, 77)
    };
    let plain = DatasetOptions {
        realism: Realism::default(),
        ..base.clone()
    };
    let mut darker = 0usize;
    let mut delayed = 0usize;
    for k in 0..4 {
        let c = generate_case(77, k, &base).unwrap();
        let p = generate_case(77, k, &plain).unwrap();
        assert!(c.ot.iter().all(|&o| o == 0.0), "a confounder entered OT");
        assert_eq!(
            c.truth.zone, p.truth.zone,
            "a confounder changed the lesion zones"
        );
        for v in 0..c.truth.tissue.len() {
            if c.truth.cbf_ml_100g_min[v] < 0.5 * p.truth.cbf_ml_100g_min[v] {
                darker += 1;
            }
            if c.truth.tmax_s[v] > 6.0 && p.truth.tmax_s[v] < 4.0 {
                delayed += 1;
            }
        }
    }
    assert!(darker > 200, "old infarcts darkened only {darker} voxels");
    assert!(
        delayed > 200,
        "delayed arrival raised Tmax past 6 s in only {delayed} voxels"
    );
}

#[test]
fn varied_appearance_changes_the_maps_not_the_truth() {
    let varied = DatasetOptions {
        realism: Realism {
            varied_appearance: true,
            ..Realism::default()
        },
        ..hospitals(3, 5)
    };
    let fixed = DatasetOptions {
        realism: Realism::default(),
        ..varied.clone()
    };
    let mut tmax_caps = Vec::new();
    for k in 0..3 {
        let a = generate_case(5, k, &varied).unwrap();
        let b = generate_case(5, k, &fixed).unwrap();
        assert_eq!(a.ot, b.ot);
        assert_eq!(a.truth, b.truth);
        assert_ne!(a.cbf_ml_100g_min, b.cbf_ml_100g_min);
        assert_ne!(a.tmax_s, b.tmax_s);
        tmax_caps.push(a.tmax_s.iter().copied().fold(0.0, f64::max));
        // Outside the brain the maps stay 0, as ISLES' skull-stripped maps are.
        for v in 0..a.ot.len() {
            if a.truth.brain_mask[v] == 0 {
                assert_eq!(a.cbf_ml_100g_min[v], 0.0);
                assert_eq!(a.tmax_s[v], 0.0);
            }
        }
    }
    assert!(tmax_caps.iter().all(|&m| m <= 40.0), "{tmax_caps:?}");
}
