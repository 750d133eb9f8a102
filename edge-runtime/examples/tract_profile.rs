//! `tract_profile`: per-slice latency and per-op timing of any model in the edge runtime's
//! tract plan (not a test; nothing is asserted). Used to choose how the plan is built
//! (`strokeseg_edge::model`); figures and their reading are in BENCHMARKS.md.
//!
//! `cargo build --release -p strokeseg-edge --examples && target/release/examples/tract_profile
//! MODEL.onnx [--reps N] [--ops] [--direct-spatial]` — `--direct-spatial` builds the plan with
//! tract's own choice of `DirectSpatialConv` instead of [`PlanOptions::default`] (to A/B the
//! lowering), `--ops` prints the time per op kind and per node (median over the reps).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use strokeseg_edge::model::{PlanOptions, SegModel};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut model_path = None;
    let mut reps = 20usize;
    let mut ops = false;
    let mut options = PlanOptions::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().context("--reps N")?.parse()?,
            "--ops" => ops = true,
            "--direct-spatial" => options.direct_spatial_conv = true,
            _ if model_path.is_none() => model_path = Some(a),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let path = model_path.context("usage: tract_profile MODEL.onnx [--reps N] [--ops]")?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let t = Instant::now();
    let mut model = SegModel::from_bytes_with(&bytes, &path, options)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let n_in = model.input_len();
    let [_, _, h, w] = model.metadata().input_shape;
    let input: Vec<f32> = (0..n_in)
        .map(|i| ((i as u64).wrapping_mul(2654435761) % 1000) as f32 / 1000.0)
        .collect();
    let mut logits = vec![0f32; model.n_classes() * h * w];
    model.run_slice(0, &input, &mut logits)?;
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        model.run_slice(0, &input, &mut logits)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let checksum: f64 = logits.iter().map(|&v| f64::from(v)).sum();
    println!(
        "{path}: load {load_ms:.0} ms; per slice min {:.2} p50 {:.2} p90 {:.2} ms ({reps} reps); logits sum {checksum:.4}",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() * 9 / 10],
    );
    if ops {
        per_op(&model, &input, reps)?;
    }
    Ok(())
}

/// Times every node of the plan over `reps` runs and prints the medians, by op kind and by
/// node (the 25 slowest).
fn per_op(model: &SegModel, input: &[f32], reps: usize) -> Result<()> {
    let plan = model.plan();
    let shape = model.metadata().input_shape;
    let tensor = Tensor::from_shape(&shape, input)?;
    let mut state = plan.spawn()?;
    let n = plan.model().nodes.len();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
    for _ in 0..reps.max(1) {
        state.run_plan_with_eval(
            tvec!(tensor.clone().into_tvalue()),
            |ctx, st, node, inputs| {
                let t = Instant::now();
                let r = eval(ctx, st, node, inputs);
                times[node.id].push(t.elapsed().as_secs_f64() * 1e3);
                r
            },
        )?;
    }
    let med = |v: &mut Vec<f64>| {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut by_kind: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut by_node = Vec::new();
    let mut total = 0.0;
    for node in &plan.model().nodes {
        let m = med(&mut times[node.id]);
        total += m;
        let kind = node.op().name().to_string();
        let e = by_kind.entry(kind.clone()).or_default();
        e.0 += m;
        e.1 += 1;
        let out = plan
            .model()
            .outlet_fact(OutletId::new(node.id, 0))
            .map(|f| format!("{f:?}"))
            .unwrap_or_default();
        by_node.push((m, format!("{kind} {} -> {out}", node.name)));
    }
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!("sum of node medians {total:.2} ms; by op kind:");
    for (k, (m, c)) in kinds {
        println!("  {m:8.2} ms {:5.1} %  {c:3} × {k}", 100.0 * m / total);
    }
    by_node.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("slowest nodes:");
    for (m, d) in by_node.iter().take(25) {
        println!("  {m:8.2} ms  {d}");
    }
    Ok(())
}
