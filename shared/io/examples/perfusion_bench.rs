//! Perfusion maps from a raw dynamic series: time per 256 × 256 slice of 50 frames (one
//! core; the computation is single-threaded) and peak RSS for a 22-slice vs a 2-slice
//! study, each computed in a child process of its own, and the edge-preserving smoothing
//! passes of [`PerfusionConfig::default`] timed alone (best of 15 on a 256 × 256 plane,
//! so a loaded machine's stalls fall out). Prints figures, asserts nothing.
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

/// The smoothing passes of one slice, timed alone: the CBV areas, the guide's areas (one
/// channel each) and the deconvolution coefficients (`channels` interleaved).
fn smoothing_passes() {
    use strokeseg_shared::perfusion::spatial::GuidedSmoother;
    let config = PerfusionConfig::default();
    let n = N * N;
    let mut rng = strokeseg_shared::rng::Rng::new(3);
    let mask: Vec<u8> = (0..n)
        .map(|i| {
            let (x, y) = ((i % N) as f32 - 128.0, (i / N) as f32 - 128.0);
            u8::from(x * x + y * y < 110.0 * 110.0)
        })
        .collect();
    let guide: Vec<f32> = (0..n)
        .map(|i| if (i % N / 6).is_multiple_of(2) { 40.0 } else { 28.0 } + rng.normal() as f32)
        .collect();
    let best_ms = |f: &mut dyn FnMut()| {
        (0..15)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    };
    let (mut mask_t, mut guide_t, mut tmp) = (vec![0u8; n], vec![0f32; n], vec![0f32; n]);
    for (name, sigma, range) in [
        (
            "CBV areas",
            config.cbv_spatial_sigma_px,
            config.cbv_range_hu,
        ),
        (
            "guide areas",
            config.guide_area_sigma_px,
            config.guide_area_range_hu,
        ),
    ] {
        let s = GuidedSmoother::new(sigma, range);
        let mut plane: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let ms = best_ms(&mut || {
            s.apply_plane(
                &mut plane,
                &mut tmp,
                &mask,
                &guide,
                &mut mask_t,
                &mut guide_t,
                N,
                N,
            )
            .unwrap();
        });
        println!("smoothing, {name} (σ {sigma} px, one channel): {ms:.1} ms per slice");
    }
    let channels = 30;
    let s = GuidedSmoother::new(config.spatial_sigma_px, config.spatial_range_hu);
    let mut coef: Vec<f32> = (0..n * channels).map(|_| rng.normal() as f32).collect();
    let mut coef_tmp = vec![0f32; n * channels];
    let ms = best_ms(&mut || {
        s.apply(&mut coef, &mut coef_tmp, channels, &mask, &guide, N, N)
            .unwrap();
    });
    println!(
        "smoothing, coefficients (σ {} px, {channels} channels): {ms:.1} ms per slice",
        config.spatial_sigma_px
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
    smoothing_passes();
}
