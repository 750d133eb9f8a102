//! `mask_agreement`: how far other models' lesion masks agree with a reference model's on
//! held-out phantom cases (not a test; nothing is asserted). Used to judge an int8 form
//! against fp32 (BENCHMARKS.md, models/default/MODEL_CARD.md).
//!
//! `cargo build --release -p strokeseg-edge --examples && target/release/examples/mask_agreement
//! DIR N_CASES REFERENCE.onnx OTHER.onnx...` writes `N_CASES` cases of the `holdout` phantom
//! family (seed 9101, as `cargo xtask evaluate-model`) into `DIR` unless `DIR/case_1`
//! exists, runs every model on every slice with brain (the edge's two-pass preprocessing,
//! `SlicePreparer`), and prints per model the Dice between its argmax lesion mask and the
//! reference's, pooled over all voxels of the model grid, and the count of voxels that differ.

use std::path::Path;

use anyhow::{Context, Result, bail};
use strokeseg_edge::model::SegModel;
use strokeseg_io::{SlicePreparer, Study};
use strokeseg_phantom::{DatasetOptions, Family};
use strokeseg_shared::metrics::ConfusionCounts;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: mask_agreement DIR N_CASES REFERENCE.onnx OTHER.onnx...");
    }
    let dir = Path::new(&args[0]);
    let n_cases: usize = args[1].parse().context("N_CASES")?;
    if !dir.join("case_1").exists() {
        let options = DatasetOptions {
            n_cases,
            seed: 9101,
            ..DatasetOptions::default()
        }
        .with_family(Family::Holdout, None);
        strokeseg_phantom::write_dataset(dir, &options)
            .with_context(|| format!("writing phantom cases into {}", dir.display()))?;
    }
    let mut models = args[2..]
        .iter()
        .map(|p| SegModel::from_path(p.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let config = models[0].metadata().preprocess.clone();
    let shape = models[0].metadata().input_shape;
    if let Some(m) = models.iter().find(|m| m.metadata().input_shape != shape) {
        bail!(
            "{} takes another input shape than the reference",
            m.source()
        );
    }
    let [_, c, h, w] = shape;
    let plane = h * w;
    let modalities: Vec<_> = config.channels.iter().map(|c| c.modality).collect();
    // Per model: its mask against the reference's, pooled over every slice.
    let mut counts = vec![ConfusionCounts::default(); models.len()];
    let mut n_slices = 0usize;
    let mut input = vec![0f32; c * plane];
    let mut logits = vec![0f32; models[0].n_classes() * plane];
    let mut masks = vec![vec![0u8; plane]; models.len()];
    for k in 1..=n_cases {
        let case = dir.join(format!("case_{k}"));
        let mut study = Study::open(&case, &modalities, false)
            .with_context(|| format!("opening {}", case.display()))?;
        let stats = study.gather_stats(&config)?;
        let mut preparer = SlicePreparer::new(&study, &config, stats.norm)?;
        for s in 0..study.n_slices() {
            if preparer.prepare(&mut study, s, &mut input)? == 0 {
                continue;
            }
            n_slices += 1;
            for (model, mask) in models.iter_mut().zip(&mut masks) {
                model.run_slice(s, &input, &mut logits)?;
                for (i, m) in mask.iter_mut().enumerate() {
                    *m = u8::from(logits[plane + i] > logits[i]);
                }
            }
            for (count, mask) in counts.iter_mut().zip(&masks) {
                count.add_slice(mask, &masks[0])?;
            }
        }
    }
    for (path, count) in args[2..].iter().zip(&counts) {
        println!(
            "{path}: mask Dice vs {} {:.4}, {} of {} voxels differ ({n_slices} slices, {n_cases} cases)",
            args[2],
            count.dice(),
            count.fp + count.fn_,
            count.total_voxels()
        );
    }
    Ok(())
}
