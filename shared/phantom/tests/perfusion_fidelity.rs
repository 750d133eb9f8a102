//! Perfusion maps computed from the phantom's exact dynamic series
//! ([`DynamicSeries::ctp`]: 10 HU per frame, 1–2 s frames, 40–60 frames, per-voxel delay
//! and dispersion) against the phantom's true maps, through the whole path: phantom →
//! `CT_4DPWI` NIfTI on disk → `strokeseg_io::DynamicSeries` → `strokeseg_shared::perfusion`.
//!
//! Evaluated in tissue: voxels the computed tissue mask keeps whose majority tissue is
//! parenchyma (grey, white, deep grey, cerebellum) and that hold no vessel, against the true
//! maps as they are (not smoothed). `STROKESEG_PERFUSION_REPORT=1` prints the figures
//! (BENCHMARKS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use strokeseg_io::{DynamicOptions, DynamicSeries, IoError};
use strokeseg_phantom::{
    DatasetOptions, DynamicSeries as Dyn, PhantomCase, Tissue, apparent_tmax_s, generate_case,
    write_case,
};
use strokeseg_shared::perfusion::PerfusionConfig;
use strokeseg_shared::perfusion_rule::{CoreRule, HealthyCbfStats, core_mask_slice};

/// Two-slice cases with the exact series.
fn options(seed: u64, noise_hu: f64) -> DatasetOptions {
    DatasetOptions {
        n_cases: 1,
        seed,
        min_slices: 2,
        max_slices: 2,
        dynamic: Dyn {
            noise_hu,
            ..Dyn::ctp()
        },
        ..DatasetOptions::default()
    }
}

/// The first case (from index 0) with at least `min_core_ml` of core in its slab.
fn case_with_core(opts: &DatasetOptions, min_core_ml: f64) -> PhantomCase {
    for k in 0..40 {
        let c = generate_case(opts.seed, k, opts).unwrap();
        if c.truth.core_volume_ml >= min_core_ml {
            return c;
        }
    }
    panic!("no case with a {min_core_ml} mL core among the first 40");
}

/// Computed maps of every slice, concatenated: cbf, cbv, tmax, mask.
struct Computed {
    cbf: Vec<f32>,
    cbv: Vec<f32>,
    tmax: Vec<f32>,
    mask: Vec<u8>,
}

fn compute(
    dir: &Path,
    case: &PhantomCase,
    config: &PerfusionConfig,
) -> (
    Computed,
    strokeseg_shared::perfusion::study::PerfusionSummary,
) {
    let summary = write_case(dir, case, 1, false, true).unwrap();
    let pwi = summary
        .files
        .iter()
        .find(|f| f.contains("CT_4DPWI"))
        .unwrap();
    let mut series = DynamicSeries::open(&dir.join(pwi), &DynamicOptions::default()).unwrap();
    assert!((series.grid().dt_s as f64 - case.bolus.frame_interval_s).abs() < 1e-6);
    let mut out = Computed {
        cbf: Vec::new(),
        cbv: Vec::new(),
        tmax: Vec::new(),
        mask: Vec::new(),
    };
    let result = series
        .compute_maps(config, |_, maps| {
            out.cbf.extend_from_slice(maps.cbf_ml_100g_min);
            out.cbv.extend_from_slice(maps.cbv_ml_100g);
            out.tmax.extend_from_slice(maps.tmax_s);
            out.mask.extend_from_slice(maps.tissue_mask);
            Ok::<(), IoError>(())
        })
        .unwrap();
    (out, result)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Read through `Debug` (printed), not field by field.
#[allow(dead_code)]
#[derive(Debug)]
struct Figures {
    noise_hu: f64,
    dt_s: f64,
    n_frames: usize,
    n_voxels: usize,
    cbf_r: f64,
    cbv_r: f64,
    rcbf_median_abs_err: f64,
    tmax_mae_s: f64,
    /// The rule on the computed maps vs on the true maps.
    rule_dice: f64,
    /// The rule on the true maps with the dispersed flow vs on the true maps: the most a
    /// deconvolution without a dispersion model reaches.
    rule_dice_dispersed_truth: f64,
    /// The rule on the computed maps vs on the true maps with the dispersed flow.
    rule_dice_vs_dispersed: f64,
    pv_scale: f32,
}

/// Maximum of the dispersed exponential residue `(D_β ⊗ e^{−t/M})(t)`, at
/// [`apparent_tmax_s`]: `M / (M − β) · (e^{−t/M} − e^{−t/β})` (1 without dispersion).
fn dispersed_peak(mtt_s: f64, dispersion_s: f64) -> f64 {
    if dispersion_s <= 1e-6 || mtt_s <= 1e-6 {
        return 1.0;
    }
    let t = apparent_tmax_s(mtt_s, dispersion_s);
    if (mtt_s - dispersion_s).abs() < 1e-6 {
        return (-1.0f64).exp();
    }
    mtt_s / (mtt_s - dispersion_s) * ((-t / mtt_s).exp() - (-t / dispersion_s).exp())
}

/// Dice of two masks (1 when both are empty).
fn dice(a: &[u8], b: &[u8]) -> f64 {
    let both = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 && **y != 0)
        .count();
    let total = a.iter().filter(|&&x| x != 0).count() + b.iter().filter(|&&x| x != 0).count();
    if total == 0 {
        1.0
    } else {
        2.0 * both as f64 / total as f64
    }
}

fn figures(case: &PhantomCase, c: &Computed, noise_hu: f64, pv_scale: f32) -> Figures {
    let t = &case.truth;
    let nx = case.dims[0];
    let parenchyma = [
        Tissue::Grey,
        Tissue::White,
        Tissue::DeepGrey,
        Tissue::Cerebellum,
    ]
    .map(|x| x as u8);
    let eval: Vec<u8> = (0..t.cbf_ml_100g_min.len())
        .map(|v| {
            u8::from(
                c.mask[v] != 0
                    && t.brain_mask[v] != 0
                    && parenchyma.contains(&t.tissue[v])
                    && t.vessel_fraction[v] == 0.0,
            )
        })
        .collect();
    let idx: Vec<usize> = (0..eval.len()).filter(|&v| eval[v] != 0).collect();
    let pick = |m: &[f64]| idx.iter().map(|&v| m[v]).collect::<Vec<f64>>();
    let pick32 = |m: &[f32]| idx.iter().map(|&v| f64::from(m[v])).collect::<Vec<f64>>();
    let cbf_true = pick(&t.cbf_ml_100g_min);
    let cbf_comp = pick32(&c.cbf);
    let healthy: Vec<usize> = idx
        .iter()
        .enumerate()
        .filter(|&(_, &v)| t.zone[v] == strokeseg_phantom::Zone::Healthy as u8)
        .map(|(i, _)| i)
        .collect();
    let ref_true = median(healthy.iter().map(|&i| cbf_true[i]).collect());
    let ref_comp = median(healthy.iter().map(|&i| cbf_comp[i]).collect());
    let rcbf_err = median(
        cbf_true
            .iter()
            .zip(&cbf_comp)
            .map(|(&a, &b)| (b / ref_comp - a / ref_true).abs() / (a / ref_true))
            .collect(),
    );
    let tmax_true = pick(&t.tmax_s);
    let tmax_comp = pick32(&c.tmax);
    let tmax_mae = tmax_true
        .iter()
        .zip(&tmax_comp)
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / idx.len() as f64;
    if std::env::var_os("STROKESEG_PERFUSION_REPORT").is_some() {
        // Where the Tmax error comes from: signed mean and MAE per true zone.
        for (zone, name) in [(0u8, "healthy"), (1, "penumbra"), (2, "core")] {
            let err: Vec<f64> = idx
                .iter()
                .enumerate()
                .filter(|&(_, &v)| t.zone[v] == zone)
                .map(|(i, _)| tmax_comp[i] - tmax_true[i])
                .collect();
            if err.is_empty() {
                continue;
            }
            let n = err.len() as f64;
            println!(
                "  noise {noise_hu} HU, {name} ({} voxels): Tmax bias {:+.2} s, MAE {:.2} s",
                err.len(),
                err.iter().sum::<f64>() / n,
                err.iter().map(|e| e.abs()).sum::<f64>() / n
            );
        }
    }

    // The threshold rule on the computed and on the true maps, inside the evaluated tissue.
    let rule = CoreRule::default();
    let nxy = nx * nx;
    let as32 = |m: &[f64]| m.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let (true_cbf, true_tmax) = (as32(&t.cbf_ml_100g_min), as32(&t.tmax_s));
    let core = |cbf: &[f32], tmax: &[f32]| {
        let mut stats = HealthyCbfStats::default();
        for z in 0..case.n_slices() {
            let r = z * nxy..(z + 1) * nxy;
            stats
                .add_slice(&rule, &cbf[r.clone()], &tmax[r.clone()], &eval[r], nx)
                .unwrap();
        }
        let reference = stats.reference(&rule).unwrap();
        let mut mask = vec![0u8; cbf.len()];
        for z in 0..case.n_slices() {
            let r = z * nxy..(z + 1) * nxy;
            core_mask_slice(
                &rule,
                &reference,
                &cbf[r.clone()],
                &tmax[r.clone()],
                &eval[r.clone()],
                &mut mask[r],
            )
            .unwrap();
        }
        mask
    };
    let (a, b) = (core(&c.cbf, &c.tmax), core(&true_cbf, &true_tmax));
    // What deconvolution can recover at best: the flow times the maximum of the dispersed
    // residue `D_β ⊗ e^{−t/M}` (below 1; more so where the transit is short), not the
    // physiological flow (Calamante et al. 2000).
    let dispersed_cbf: Vec<f32> = (0..t.cbf_ml_100g_min.len())
        .map(|v| (t.cbf_ml_100g_min[v] * dispersed_peak(t.mtt_s[v], t.dispersion_s[v])) as f32)
        .collect();
    let d = core(&dispersed_cbf, &true_tmax);
    Figures {
        noise_hu,
        dt_s: case.bolus.frame_interval_s,
        n_frames: case.bolus.n_frames,
        n_voxels: idx.len(),
        cbf_r: pearson(&cbf_true, &cbf_comp),
        cbv_r: pearson(&pick(&t.cbv_ml_100g), &pick32(&c.cbv)),
        rcbf_median_abs_err: rcbf_err,
        tmax_mae_s: tmax_mae,
        rule_dice: dice(&a, &b),
        rule_dice_dispersed_truth: dice(&d, &b),
        rule_dice_vs_dispersed: dice(&a, &d),
        pv_scale,
    }
}

fn run(seed: u64, noise_hu: f64, config: &PerfusionConfig) -> Figures {
    let opts = options(seed, noise_hu);
    let case = case_with_core(&opts, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let (computed, summary) = compute(dir.path(), &case, config);
    let f = figures(&case, &computed, noise_hu, summary.arterial.pv_scale);
    if std::env::var_os("STROKESEG_PERFUSION_REPORT").is_some() {
        println!(
            "{f:?} warnings {:?} aif {:?} vof {:?}",
            summary.warnings, summary.arterial.aif_voxels, summary.arterial.vof_voxels
        );
    }
    f
}

/// The issue's targets (CBF and CBV r ≥ 0.9, rCBF error ≤ 15 %, Tmax MAE ≤ 1 s, rule Dice
/// ≥ 0.85) are met at 5 HU per frame; at 10 HU CBF r and rCBF are (see
/// [`computed_maps_at_ctp_noise`]).
#[test]
fn computed_maps_meet_the_issue_targets_at_5_hu() {
    let f = run(2018, 5.0, &PerfusionConfig::default());
    println!("{f:?}");
    assert!(f.cbf_r >= 0.9, "{f:?}");
    assert!(f.cbv_r >= 0.9, "{f:?}");
    assert!(f.rcbf_median_abs_err <= 0.15, "{f:?}");
    assert!(f.tmax_mae_s <= 1.0, "{f:?}");
    assert!(f.rule_dice >= 0.85, "{f:?}");
}

/// At 10 HU per frame the CBF and CBV targets are met (r 0.90 and 0.91, rCBF 13 %); Tmax
/// (MAE 1.27 s) and the rule's Dice (0.78) are not (BENCHMARKS.md, "Perfusion maps from the
/// raw series", says why): the bounds guard today's figures.
#[test]
fn computed_maps_at_ctp_noise() {
    let f = run(2018, 10.0, &PerfusionConfig::default());
    println!("{f:?}");
    assert!(f.cbf_r >= 0.9, "{f:?}");
    assert!(f.rcbf_median_abs_err <= 0.15, "{f:?}");
    assert!(f.cbv_r >= 0.9, "{f:?}");
    assert!(f.tmax_mae_s <= 1.35, "{f:?}");
    assert!(f.rule_dice >= 0.76, "{f:?}");
}

/// The model-based Tmax ([`PerfusionConfig::model_refinement`], off by default) at 10 HU
/// per frame: Tmax within ≈ 1.1 s instead of 1.27 s (no truncation lateness), the other
/// maps unchanged, the rule's Dice lower (0.76 vs 0.78: more voxels fall under the healthy
/// reference's Tmax < 4 s and its CBF drops, while the noisy low-flow CBF stays high).
#[test]
fn model_based_tmax_at_ctp_noise() {
    let config = PerfusionConfig {
        model_refinement: true,
        ..PerfusionConfig::default()
    };
    let f = run(2018, 10.0, &config);
    println!("{f:?}");
    assert!(f.tmax_mae_s <= 1.15, "{f:?}");
    assert!(f.cbf_r >= 0.89 && f.cbv_r >= 0.85, "{f:?}");
    assert!(f.rule_dice >= 0.62, "{f:?}");
}

/// `STROKESEG_PERFUSION_REPORT=1`: the figures at several noise levels (BENCHMARKS.md),
/// with the default configuration and with the model-based Tmax, per seed
/// (`STROKESEG_PERFUSION_SEEDS`, default 2018).
#[test]
fn figures_per_noise_level() {
    if std::env::var_os("STROKESEG_PERFUSION_REPORT").is_none() {
        return;
    }
    let model = PerfusionConfig {
        model_refinement: true,
        ..PerfusionConfig::default()
    };
    // `STROKESEG_PERFUSION_SEEDS=2018,99,7`: more phantom cases than the default one.
    let seeds: Vec<u64> = std::env::var("STROKESEG_PERFUSION_SEEDS")
        .map(|v| v.split(',').map(|s| s.trim().parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![2018]);
    for seed in seeds {
        for (name, config) in [
            ("default", PerfusionConfig::default()),
            ("model Tmax", model),
        ] {
            for noise_hu in [0.0, 2.5, 5.0, 7.5, 10.0, 15.0] {
                println!("seed {seed} {name}: {:?}", run(seed, noise_hu, &config));
            }
        }
    }
}

#[test]
fn head_motion_is_refused_naming_the_file() {
    let opts = DatasetOptions {
        dynamic: Dyn {
            motion_shift_px: 2,
            ..Dyn::ctp()
        },
        ..options(2018, 10.0)
    };
    let case = generate_case(opts.seed, 0, &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = write_case(dir.path(), &case, 1, false, true).unwrap();
    let pwi = summary
        .files
        .iter()
        .find(|f| f.contains("CT_4DPWI"))
        .unwrap();
    let mut series =
        DynamicSeries::open(&dir.path().join(pwi), &DynamicOptions::default()).unwrap();
    let err = series
        .compute_maps(&PerfusionConfig::default(), |_, _| Ok(()))
        .unwrap_err();
    let expected_frame = 2 * case.bolus.n_frames / 3;
    match &err {
        IoError::Perfusion {
            path,
            source: strokeseg_shared::CoreError::FrameJump { frame_idx, .. },
        } => {
            assert!(path.ends_with(pwi));
            assert_eq!(*frame_idx, expected_frame);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("motion"), "{err}");
}
