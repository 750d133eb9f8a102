//! Lesion-size distribution and generation time of a phantom family:
//! `cargo run --release -p strokeseg-phantom --example family_stats -- FAMILY CASES [SEED]`
//! with FAMILY `classic`, `hospitals` or `holdout` (the template from
//! `STROKESEG_TEMPLATE_DIR`, else `.cache/templates/icbm152_2009a`).

use std::path::PathBuf;
use std::time::Instant;

use strokeseg_phantom::{DatasetOptions, Family, TEMPLATE_DIR, TEMPLATE_DIR_ENV, generate_case};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let family = match args.first().map(String::as_str) {
        Some("hospitals") => Family::Hospitals,
        Some("holdout") => Family::Holdout,
        Some("classic") | None => Family::Classic,
        Some(other) => return Err(format!("unknown family `{other}`").into()),
    };
    let n_cases: usize = args.get(1).map_or(Ok(30), |v| v.parse())?;
    let seed: u64 = args.get(2).map_or(Ok(77), |v| v.parse())?;
    let template = std::env::var_os(TEMPLATE_DIR_ENV).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(TEMPLATE_DIR)
        },
        PathBuf::from,
    );
    let opts = DatasetOptions {
        n_cases,
        seed,
        ..DatasetOptions::default()
    }
    .with_family(family, Some(template));
    let started = Instant::now();
    let mut volumes = Vec::new();
    let mut slices = 0;
    for k in 0..n_cases {
        let case = generate_case(seed, k, &opts)?;
        slices += case.n_slices();
        volumes.push(case.truth.lesion_volume_ml);
    }
    let seconds = started.elapsed().as_secs_f64();
    let lesion_free = volumes.iter().filter(|&&v| v == 0.0).count();
    let mut lesions: Vec<f64> = volumes.into_iter().filter(|&v| v > 0.0).collect();
    lesions.sort_by(f64::total_cmp);
    let q = |p: f64| {
        lesions
            .get(((lesions.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{} family, seed {seed}: {n_cases} cases ({lesion_free} lesion-free), {slices} slices in {seconds:.1} s ({:.3} s per slice)",
        family.name(),
        seconds / slices.max(1) as f64
    );
    println!(
        "lesion volume, mL: q25 {:.1}, median {:.1}, q75 {:.1}, max {:.1} (ISLES 2018: median ≈ 15, IQR 5.7–45, > 100)",
        q(0.25),
        q(0.5),
        q(0.75),
        q(1.0)
    );
    Ok(())
}
