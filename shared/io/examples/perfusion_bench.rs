//! Perfusion maps from a raw dynamic series: time per 256 × 256 slice of 50 frames (one
//! core; the computation is single-threaded) and peak RSS for a 22-slice vs a 2-slice
//! study, each computed in a child process of its own. Prints figures, asserts nothing.
//!
//! `cargo run --release -p strokeseg-io --example perfusion_bench`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::Instant;

use strokeseg_io::{Dtype, DynamicOptions, DynamicSeries, IoError, NiftiWriter, new_header};
use strokeseg_shared::perfusion::PerfusionConfig;

const N: usize = 256;
const FRAMES: usize = 50;

fn gamma(t: f32, t0: f32) -> f32 {
    let x = (t - t0) / 4.5;
    if x <= 0.0 {
        0.0
    } else {
        (3.0 * (x.ln() + 1.0 - x)).exp()
    }
}

/// A head-like slab: skull ring, brain disc with grey/white-like flow bands, vessels.
fn write_series(path: &Path, nz: usize) {
    let mut header = new_header(
        &[N, N, nz, 1, FRAMES],
        [0.9, 0.9, 5.0],
        [0.0; 3],
        Dtype::I16,
    )
    .unwrap();
    header.pixdim[5] = 1.0;
    let mut w = NiftiWriter::create(path, &header, Dtype::I16).unwrap();
    let mut rng = strokeseg_shared::rng::Rng::new(1);
    let mut plane = vec![0f32; N * N];
    for k in 0..FRAMES {
        let t = k as f32;
        for _z in 0..nz {
            for y in 0..N {
                for x in 0..N {
                    let (dx, dy) = (x as f32 - 128.0, y as f32 - 128.0);
                    let r = (dx * dx + dy * dy).sqrt();
                    let v = if r > 118.0 {
                        -1000.0
                    } else if r > 108.0 {
                        1300.0
                    } else if (x % 40 == 7) && (y % 40 == 7) {
                        40.0 + 350.0 * gamma(t, 6.0)
                    } else if r < 6.0 && y < 20 {
                        40.0 + 300.0 * gamma(t, 10.0)
                    } else {
                        let flow = if (x / 6 + y / 6) % 2 == 0 {
                            0.010
                        } else {
                            0.004
                        };
                        let mut c = 0.0;
                        for j in 0..=k {
                            let s = t - j as f32 - 1.0;
                            if s >= 0.0 {
                                c += 350.0 * gamma(j as f32, 6.0) * flow * (-s / 4.5).exp();
                            }
                        }
                        35.0 + c
                    };
                    plane[y * N + x] = v + 10.0 * rng.normal() as f32;
                }
            }
            w.write_slice_f32(&plane).unwrap();
        }
    }
    w.finish().unwrap();
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn compute(path: &Path) {
    let mut series = DynamicSeries::open(path, &DynamicOptions::default()).unwrap();
    let nz = series.info().nz();
    let start = Instant::now();
    let mut tissue = 0usize;
    let summary = series
        .compute_maps(&PerfusionConfig::default(), |_, maps| {
            tissue += maps.tissue_mask.iter().filter(|&&m| m != 0).count();
            Ok::<(), IoError>(())
        })
        .unwrap();
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    println!(
        "{nz:>2} slices: {total_ms:.0} ms in all (two passes, I/O included), {:.1} ms per slice, {:.0} tissue voxels per slice, peak RSS {} kB, pv scale {:.2}",
        total_ms / nz as f64,
        tissue as f64 / nz as f64,
        peak_rss_kb(),
        summary.arterial.pv_scale
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, path] = args.as_slice()
        && mode == "compute"
    {
        compute(Path::new(path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rss = Vec::new();
    for nz in [2, 22] {
        let path = dir.path().join(format!("pwi_{nz}.nii"));
        write_series(&path, nz);
        let out = std::process::Command::new(&exe)
            .args(["compute", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        print!("{text}");
        rss.push(
            text.split("peak RSS ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0),
        );
    }
    if let [a, b] = rss.as_slice() {
        println!("peak RSS 22 slices / 2 slices: {:.3}", b / a);
    }
}
