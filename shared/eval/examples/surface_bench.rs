//! Benchmark of the surface distances (Hausdorff, HD95, ASSD) on ISLES-sized volumes
//! (256 × 256 × 22, 0.9 × 0.9 × 5 mm) and of `evaluate_case` on the same masks as NIfTI
//! files. Prints wall times; asserts nothing.
//!
//! `cargo run --release -p strokeseg-eval --example surface_bench [-- REPEATS]`

fn main() {
    bench::run();
}

mod bench {
    use std::time::{Duration, Instant};

    use strokeseg_eval::evaluate_case;
    use strokeseg_io::{Dtype, NiftiWriter, new_header};
    use strokeseg_shared::surface::surface_distances;

    const DIMS: [usize; 3] = [256, 256, 22];
    const SPACING_MM: [f32; 3] = [0.9, 0.9, 5.0];

    /// Ellipsoid with semi-axes `radii_mm` around `centre_mm`, with a wavy outline.
    fn blob(centre_mm: [f64; 3], radii_mm: [f64; 3], wobble: f64) -> Vec<u8> {
        let [nx, ny, nz] = DIMS;
        let mut m = vec![0u8; nx * ny * nz];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let p = [x, y, z].map(|v| v as f64);
                    let q: [f64; 3] = std::array::from_fn(|a| {
                        (p[a] * f64::from(SPACING_MM[a]) - centre_mm[a]) / radii_mm[a]
                    });
                    let r2 = q[0] * q[0] + q[1] * q[1] + q[2] * q[2];
                    let angle = q[1].atan2(q[0]);
                    let limit = 1.0 + wobble * (5.0 * angle).sin();
                    if r2 <= limit * limit {
                        m[(z * ny + y) * nx + x] = 1;
                    }
                }
            }
        }
        m
    }

    /// Every voxel foreground with probability `density` (the project's PRNG, fixed seed).
    fn noise(density: f64, seed: u64) -> Vec<u8> {
        let mut rng = strokeseg_shared::rng::Rng::new(seed);
        (0..DIMS.iter().product::<usize>())
            .map(|_| u8::from(rng.next_f64() < density))
            .collect()
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    fn time_surface(name: &str, pred: &[u8], truth: &[u8], repeats: usize) {
        let mut times = Vec::with_capacity(repeats);
        let mut last = None;
        for _ in 0..repeats {
            let t0 = Instant::now();
            let d = surface_distances(pred, truth, DIMS, SPACING_MM);
            times.push(t0.elapsed());
            last = Some(d);
        }
        let fg = |m: &[u8]| m.iter().filter(|&&v| v != 0).count();
        match last {
            Some(Ok(d)) => println!(
                "{name:<34} fg {:>7}/{:>7} surf {:>7}/{:>7}  HD {:>7.2} mm  HD95 {:>6.2} mm  ASSD {:>6.2} mm  \
                 median {:>7.1} ms  min {:>7.1} ms",
                fg(pred),
                fg(truth),
                d.pred_surface_voxels,
                d.truth_surface_voxels,
                d.hausdorff_mm.unwrap_or(f64::INFINITY),
                d.hausdorff95_mm.unwrap_or(f64::INFINITY),
                d.assd_mm.unwrap_or(f64::INFINITY),
                median(times.clone()).as_secs_f64() * 1e3,
                times
                    .iter()
                    .min()
                    .copied()
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1e3,
            ),
            Some(Err(e)) => println!("{name}: error {e}"),
            None => {}
        }
    }

    fn write_mask(path: &std::path::Path, mask: &[u8]) -> Result<(), String> {
        let h = new_header(&DIMS, SPACING_MM, [0.0; 3], Dtype::U8).map_err(|e| e.to_string())?;
        let mut w = NiftiWriter::create(path, &h, Dtype::U8).map_err(|e| e.to_string())?;
        for slice in mask.chunks(DIMS[0] * DIMS[1]) {
            w.write_slice_u8(slice).map_err(|e| e.to_string())?;
        }
        w.finish().map(|_| ()).map_err(|e| e.to_string())
    }

    pub fn run() {
        let repeats: usize = std::env::args()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(7)
            .max(1);
        println!(
            "surface distances on {}×{}×{} voxels of {:?} mm, {repeats} repeats",
            DIMS[0], DIMS[1], DIMS[2], SPACING_MM
        );
        let c = [115.0, 120.0, 55.0];
        let typical_truth = blob(c, [25.0, 30.0, 20.0], 0.15);
        let typical_pred = blob([c[0] + 3.0, c[1] - 2.0, c[2]], [22.0, 33.0, 18.0], 0.1);
        time_surface(
            "typical lesion (~50 mL)",
            &typical_pred,
            &typical_truth,
            repeats,
        );

        let big_truth = blob(c, [105.0, 110.0, 60.0], 0.05);
        let big_pred = blob([c[0] - 4.0, c[1], c[2] + 3.0], [100.0, 112.0, 58.0], 0.08);
        time_surface(
            "hemisphere-sized (box ≈ volume)",
            &big_pred,
            &big_truth,
            repeats,
        );

        let noise_pred = noise(0.3, 1);
        let noise_truth = noise(0.3, 2);
        time_surface(
            "worst case: 30 % noise both",
            &noise_pred,
            &noise_truth,
            repeats,
        );

        let dir =
            std::env::temp_dir().join(format!("strokeseg_surface_bench_{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            println!("evaluate_case: cannot create {}: {e}", dir.display());
            return;
        }
        for ext in ["nii", "nii.gz"] {
            let (p, t) = (
                dir.join(format!("pred.{ext}")),
                dir.join(format!("truth.{ext}")),
            );
            if let Err(e) =
                write_mask(&p, &typical_pred).and_then(|()| write_mask(&t, &typical_truth))
            {
                println!("evaluate_case: cannot write masks: {e}");
                break;
            }
            let mut times = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                let t0 = Instant::now();
                if let Err(e) = evaluate_case(&p, &t) {
                    println!("evaluate_case: {e}");
                    break;
                }
                times.push(t0.elapsed());
            }
            if !times.is_empty() {
                println!(
                    "evaluate_case, typical lesion, .{ext:<6}  median {:>7.1} ms  (read 2 files + Dice + HD + ASSD)",
                    median(times).as_secs_f64() * 1e3
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
