//! Cross-check of the deconvolution against an independent numpy implementation
//! (`tests/scripts/deconv_check.py`): noisy tissue curves with delays and several MTTs are
//! deconvolved here (block-circulant SVD, fixed threshold), the curves and results written
//! as JSON, and the script recomputes them with numpy's SVD. Tolerances (in the script):
//! 1e-3 relative on r_max, CBF and CBV; 0.05 s on Tmax.
//!
//! Python: `$STROKESEG_PYTHON`, else `.cache/venv-numpy/bin/python` (`python3 -m venv
//! .cache/venv-numpy && .cache/venv-numpy/bin/pip install numpy`), else `python3`. Without
//! numpy the test prints `deconv cross-check SKIPPED` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

use strokeseg_shared::perfusion::curve::area_hu_s;
use strokeseg_shared::perfusion::{
    Basis, CBF_PER_RESIDUE, CBV_PER_AREA_RATIO, DeconvolutionMethod, TimeGrid,
};

fn gamma(t: f32, t0: f32, alpha: f32, beta: f32) -> f32 {
    let x = (t - t0) / (alpha * beta);
    if x <= 0.0 {
        0.0
    } else {
        (alpha * (x.ln() + 1.0 - x)).exp()
    }
}

fn python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("STROKESEG_PYTHON").map(PathBuf::from),
        Some(root.join(".cache/venv-numpy/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn numpy_svd_deconvolution_agrees() {
    let Some(python) = python() else {
        println!("deconv cross-check SKIPPED: no python with numpy (see the file's doc comment)");
        return;
    };
    let (n, dt) = (48, 1.5f32);
    let grid = TimeGrid::new(n, dt).unwrap();
    let aif: Vec<f32> = (0..n)
        .map(|k| 380.0 * gamma(k as f32 * dt, 6.0, 3.0, 1.5))
        .collect();
    let threshold = 0.1;
    let basis = Basis::new(
        &aif,
        grid,
        DeconvolutionMethod::BlockCirculantFixed { threshold },
    )
    .unwrap();
    let len = basis.residue_len();
    let (mut r, mut scratch) = (vec![0.0; len], vec![0.0; len]);
    let mut rng = strokeseg_shared::rng::Rng::new(12);
    let mut tissues = Vec::new();
    for i in 0..24 {
        let (delay, mtt) = ((i % 6) as f32 * 1.3, 3.0 + (i / 6) as f32 * 2.5);
        // A delayed exponential tissue curve plus 3 HU noise.
        let curve: Vec<f32> = (0..n)
            .map(|k| {
                let t = k as f32 * dt;
                let mut c = 0.0;
                for (j, &a) in aif.iter().enumerate().take(k + 1) {
                    let s = t - j as f32 * dt - delay;
                    if s >= 0.0 {
                        c += dt * a * 0.012 * (-s / mtt).exp();
                    }
                }
                c + 3.0 * rng.normal() as f32
            })
            .collect();
        let fit = basis.deconvolve(&curve, &mut r, &mut scratch).unwrap();
        let cbv = f64::from(area_hu_s(&curve, dt) / area_hu_s(&aif, dt)) * CBV_PER_AREA_RATIO;
        tissues.push(format!(
            "{{\"curve_hu\":{:?},\"r_max_per_s\":{},\"tmax_s\":{},\"cbf_ml_100g_min\":{},\"cbv_ml_100g\":{}}}",
            curve,
            fit.r_max_per_s,
            fit.tmax_s,
            f64::from(fit.r_max_per_s) * CBF_PER_RESIDUE,
            cbv
        ));
    }
    let json = format!(
        "{{\"dt_s\":{dt},\"threshold\":{threshold},\"aif_hu\":{aif:?},\"tissues\":[{}]}}",
        tissues.join(",")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deconv.json");
    std::fs::write(&path, json).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts/deconv_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "numpy disagrees:\n{text}");
}
