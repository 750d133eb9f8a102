"""Independent check of strokeseg's block-circulant SVD deconvolution (issue 12).

Reads the JSON a Rust test writes (shared/tests/deconv_crosscheck.rs): the frame interval,
the AIF and tissue enhancement curves (HU) and strokeseg's results per tissue curve. Rebuilds
the deconvolution from the published method with numpy only -- the block-circulant matrix
(Wu et al. 2003) of the zero-padded AIF with interval weights dt * (a[k] + a[k-1]) / 2
(residue piecewise constant per frame interval, AIF piecewise linear), numpy's SVD, a fixed
truncation threshold, the residue maximum with parabolic refinement -- and the CBF and CBV
formulas with rho = 1.04 g/mL and k_H = 0.55 / 0.75. Tolerances: 1e-3 relative on the residue
maximum, CBF and CBV (f32 vs f64), 0.05 s on Tmax. Exit 1 on a mismatch.
"""
import json
import sys

import numpy as np

RHO = 1.04
K_H = 0.55 / 0.75


def residue(aif, tissue, dt, threshold):
    n = len(aif)
    length = 2 * n
    padded = np.zeros(length)
    padded[:n] = aif
    weights = 0.5 * dt * (padded + np.roll(padded, 1))
    matrix = np.array([[weights[(i - j) % length] for j in range(length)] for i in range(length)])
    u, s, vt = np.linalg.svd(matrix)
    inv = np.where(s >= threshold * s.max(), 1.0 / s, 0.0)
    c = np.zeros(length)
    c[:n] = tissue
    return vt.T @ (inv * (u.T @ c))


def peak(r, dt):
    k = int(np.argmax(r))
    value = r[k]
    pos = float(k)
    if 0 < k < len(r) - 1:
        a, b, c = r[k - 1], r[k], r[k + 1]
        denom = a - 2 * b + c
        if denom < 0:
            pos += float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    tmax = 0.0 if pos > 0.5 * len(r) else pos * dt
    return value, tmax


def area(curve, dt):
    curve = np.asarray(curve)
    return dt * (curve.sum() - 0.5 * (curve[0] + curve[-1]))


def main(path):
    case = json.load(open(path))
    dt, aif, threshold = case["dt_s"], np.array(case["aif_hu"]), case["threshold"]
    worst = {"r_max": 0.0, "tmax_s": 0.0, "cbf": 0.0, "cbv": 0.0}
    failures = 0
    for t in case["tissues"]:
        curve = np.array(t["curve_hu"])
        r = residue(aif, curve, dt, threshold)
        r_max, tmax = peak(r, dt)
        cbf = r_max * K_H * 6000.0 / RHO
        cbv = area(curve, dt) / area(aif, dt) * K_H * 100.0 / RHO
        errs = {
            "r_max": abs(r_max - t["r_max_per_s"]) / max(abs(r_max), 1e-12),
            "tmax_s": abs(tmax - t["tmax_s"]),
            "cbf": abs(cbf - t["cbf_ml_100g_min"]) / max(abs(cbf), 1e-12),
            "cbv": abs(cbv - t["cbv_ml_100g"]) / max(abs(cbv), 1e-12),
        }
        for k, v in errs.items():
            worst[k] = max(worst[k], v)
        if errs["r_max"] > 1e-3 or errs["cbf"] > 1e-3 or errs["cbv"] > 1e-3 or errs["tmax_s"] > 0.05:
            failures += 1
            print(f"mismatch: numpy r_max {r_max:.6g} tmax {tmax:.3f} cbf {cbf:.4g} cbv {cbv:.4g} vs {t}")
    print(f"deconv cross-check: {len(case['tissues'])} curves, worst relative r_max {worst['r_max']:.2e}, "
          f"CBF {worst['cbf']:.2e}, CBV {worst['cbv']:.2e}, worst Tmax {worst['tmax_s']:.3f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
