#!/usr/bin/env python3
"""Independent check of a strokeseg phantom dataset with nibabel.

Usage: check_phantom_nibabel.py DATASET_DIR

Loads every image of every case_N folder with nibabel (not our reader) and checks the
ISLES 2018 layout and conventions: folder and file names, datatypes per modality, shapes
(3D, and (X, Y, Z, 1, T) for the 4D PWI), one affine per case, spacing and slice-count
ranges, value sanity (OT is 0/1, perfusion maps are skull-stripped and non-negative, CT
shows air and skull), the truth summary (phantom_truth.json: OT volumes) and the patient
map (patients.csv, two-slab patients on one grid at adjacent z). Exits 1 on any problem.

Needs: pip install nibabel (numpy comes with it).
"""

import csv
import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

DTYPES = {
    "CT": np.int32,
    "CT_CBF": np.uint16,
    "CT_CBV": np.uint16,
    "CT_MTT": np.float64,
    "CT_Tmax": np.float64,
    "CT_4DPWI": np.int16,
    "OT": np.uint8,
}
NAME = re.compile(r"^SMIR\.Brain\.XX\.O\.(CT|CT_CBF|CT_CBV|CT_MTT|CT_Tmax|CT_4DPWI|OT)\.(\d+)$")

problems = []


def problem(msg):
    problems.append(msg)
    print("PROBLEM:", msg)


def check_case(case_dir, seen_ids):
    images = {}
    for sub in sorted(p for p in case_dir.iterdir() if p.is_dir()):
        m = NAME.match(sub.name)
        if not m:
            problem(f"{sub}: folder name is not SMIR.Brain.XX.O.<MOD>.<id>")
            continue
        mod, file_id = m.group(1), int(m.group(2))
        if file_id in seen_ids:
            problem(f"{sub}: file id {file_id} used twice")
        seen_ids.add(file_id)
        files = [f for f in sub.iterdir() if f.name in (sub.name + ".nii", sub.name + ".nii.gz")]
        if len(files) != 1:
            problem(f"{sub}: expected exactly {sub.name}.nii[.gz], found {[f.name for f in sub.iterdir()]}")
            continue
        images[mod] = nib.load(str(files[0]))
    for mod in ("CT", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT"):
        if mod not in images:
            problem(f"{case_dir}: missing {mod}")
    if "CT" not in images:
        return None
    ref = images["CT"]
    nz = ref.shape[2] if len(ref.shape) >= 3 else -1
    info = {"affine": ref.affine, "zooms": ref.header.get_zooms()[:3], "nz": nz}
    for mod, img in images.items():
        where = f"{case_dir.name}/{mod}"
        dtype = img.get_data_dtype()
        if dtype != np.dtype(DTYPES[mod]):
            problem(f"{where}: dtype {dtype}, expected {np.dtype(DTYPES[mod])}")
        if mod == "CT_4DPWI":
            if len(img.shape) != 5 or img.shape[3] != 1 or img.shape[:3] != ref.shape:
                problem(f"{where}: shape {img.shape}, expected (256, 256, {nz}, 1, T)")
            elif not 40 <= img.shape[4] <= 50:
                problem(f"{where}: {img.shape[4]} frames")
        elif img.shape != (256, 256, nz):
            problem(f"{where}: shape {img.shape}, expected (256, 256, {nz})")
        if not np.allclose(img.affine, ref.affine, atol=1e-4):
            problem(f"{where}: affine differs from CT\n{img.affine}\n{ref.affine}")
        if img.header["qform_code"] == 0 and img.header["sform_code"] == 0:
            problem(f"{where}: neither qform nor sform set")
        if mod == "CT_4DPWI":
            frame = np.asarray(img.dataobj[:, :, :, 0, img.shape[4] // 2])
            if frame.max() < 700:
                problem(f"{where}: no skull in the middle frame")
            continue
        data = np.asarray(img.dataobj)
        if mod == "OT":
            if not set(np.unique(data)).issubset({0, 1}):
                problem(f"{where}: values {np.unique(data)[:10]} not 0/1")
        elif mod == "CT":
            if data.min() > -900 or data.max() < 700:
                problem(f"{where}: range {data.min()}..{data.max()} lacks air or skull")
        else:
            if data.min() < 0:
                problem(f"{where}: negative values")
            if data[:8, :8, :].any():
                problem(f"{where}: non-zero outside the head (not skull-stripped)")
            if not data.any():
                problem(f"{where}: all zero")
    zooms = info["zooms"]
    if not (0.78 <= zooms[0] <= 1.1 and abs(zooms[0] - zooms[1]) < 1e-6 and 4 <= zooms[2] <= 12):
        problem(f"{case_dir.name}: spacing {zooms}")
    if not np.allclose(np.diag(ref.affine)[:3], zooms, atol=1e-5):
        problem(f"{case_dir.name}: affine diagonal {np.diag(ref.affine)[:3]} vs zooms {zooms}")
    if not 2 <= nz <= 22:
        problem(f"{case_dir.name}: {nz} slices")
    if "OT" in images:
        info["ot_ml"] = float(np.asarray(images["OT"].dataobj).sum()) * float(np.prod(zooms)) / 1000.0
    return info


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    root = Path(sys.argv[1])
    cases = sorted(
        (p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"case_\d+", p.name)),
        key=lambda p: int(p.name[5:]),
    )
    if not cases:
        problem(f"{root}: no case_N folders")
    seen_ids = set()
    infos = {}
    for c in cases:
        infos[c.name] = check_case(c, seen_ids)
    truth_path = root / "phantom_truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else None
    if truth is None:
        problem("phantom_truth.json missing")
    else:
        if truth["n_cases"] != len(cases):
            problem(f"phantom_truth.json: n_cases {truth['n_cases']}, folders {len(cases)}")
        for c in truth["cases"]:
            info = infos.get(c["case_name"])
            if info is None:
                continue
            if abs(info.get("ot_ml", -1) - c["lesion_volume_ml"]) > 1e-6 * max(1.0, c["lesion_volume_ml"]):
                problem(f"{c['case_name']}: OT {info.get('ot_ml')} mL, summary {c['lesion_volume_ml']} mL")
    patients = {}
    csv_path = root / "patients.csv"
    with csv_path.open() as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["case", "patient"]:
        problem(f"patients.csv: header {rows[:1]}")
    for case_name, patient in rows[1:]:
        patients.setdefault(patient, []).append(case_name)
    if truth is not None:
        for c in truth["cases"]:
            if c["case_name"] not in patients.get(c["patient"], []):
                problem(f"patients.csv disagrees with phantom_truth.json for {c['case_name']}")
    n_pairs = 0
    for patient, names in patients.items():
        if len(names) != 2 or any(infos.get(n) is None for n in names):
            continue
        n_pairs += 1
        a, b = infos[names[0]], infos[names[1]]
        if not np.allclose(a["affine"][:2, :], b["affine"][:2, :], atol=1e-4) or a["zooms"] != b["zooms"]:
            problem(f"{patient}: slabs {names} do not share the in-plane grid")
        dz = b["affine"][2, 3] - a["affine"][2, 3]
        if abs(dz - a["nz"] * a["zooms"][2]) > 1e-3:
            problem(f"{patient}: slabs {names} are not adjacent (dz = {dz})")
    print(
        f"{len(cases)} cases, {len(patients)} patients ({n_pairs} with two slabs), "
        f"{len(seen_ids)} files checked with nibabel {nib.__version__}: "
        + ("OK" if not problems else f"{len(problems)} problem(s)")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
