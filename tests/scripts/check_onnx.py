#!/usr/bin/env python3
"""Independent check of the exported strokeseg ONNX models with onnx and onnxruntime.

Usage: check_onnx.py FIXTURE_DIR [--bench]

FIXTURE_DIR is what host-trainer/tests/export_parity.rs leaves in
$CARGO_TARGET_TMPDIR/export-check/: fixture.json, the models it lists, the inputs
(inputs.f32: n_slices x [1, C, H, W] little-endian f32) and tract's outputs for each model
(n_slices x [1, K, H, W]). For every model:

- onnx.checker.check_model(model, full_check=True) (with strict shape inference);
- metadata_props holds `strokeseg.metadata` JSON whose precision, input name and shape
  match the graph;
- onnxruntime (CPU, one thread) reproduces tract's outputs: fp32 logits within 1e-4,
  int8 argmax agreement >= 99.5 % of voxels (unless the fixture says
  "check_int8_agreement": false, as the benchmark's untrained model does: its logits are
  near ties, so argmax flips on rounding and says nothing about the export).

--bench also prints onnxruntime's per-slice latency (single thread, median of 20 runs
after 3 warm-ups, same input) for each model.

Exits 1 on any problem. Needs: pip install onnx onnxruntime (numpy comes with them).
`cargo xtask ci onnx-check` installs them into .cache/venv-onnx and runs this.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

METADATA_KEY = "strokeseg.metadata"
FP32_TOLERANCE = 1e-4
INT8_MIN_AGREEMENT = 0.995

problems = []


def problem(msg):
    problems.append(msg)
    print("PROBLEM:", msg)


def read_f32(path, n, shape):
    values = np.fromfile(path, dtype="<f4")
    expected = n * int(np.prod(shape))
    if values.size != expected:
        raise SystemExit(f"{path}: {values.size} values, expected {expected}")
    return values.reshape((n, *shape))


def check_model_file(path, precision, input_name, input_shape):
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # the checker raises several exception types
        problem(f"{path.name}: onnx checker: {err}")
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        problem(f"{path.name}: no {METADATA_KEY} in metadata_props")
        return
    meta = json.loads(props[METADATA_KEY])
    if meta.get("precision") != precision:
        problem(f"{path.name}: metadata precision {meta.get('precision')!r}, expected {precision!r}")
    if meta.get("input_name") != input_name or list(meta.get("input_shape", [])) != list(input_shape):
        problem(f"{path.name}: metadata input {meta.get('input_name')} {meta.get('input_shape')} "
                f"!= graph {input_name} {input_shape}")
    graph_inputs = [i.name for i in model.graph.input]
    if graph_inputs != [input_name]:
        problem(f"{path.name}: graph inputs {graph_inputs}, expected [{input_name!r}]")
    ops = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    print(f"{path.name}: ir {model.ir_version}, opset "
          f"{[(o.domain or 'ai.onnx', o.version) for o in model.opset_import]}, ops {ops}")


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(path, precision, sess, inputs, tract_out, input_name, check_int8):
    n_classes = tract_out.shape[2]
    worst = 0.0
    agree = 0
    total = 0
    for x, expected in zip(inputs, tract_out):
        (got,) = sess.run(None, {input_name: x})
        if got.shape != expected.shape:
            problem(f"{path.name}: onnxruntime output shape {got.shape}, tract {expected.shape}")
            return
        worst = max(worst, float(np.max(np.abs(got - expected))))
        agree += int(np.sum(np.argmax(got, axis=1) == np.argmax(expected, axis=1)))
        total += got.size // n_classes
    agreement = agree / total
    print(f"{path.name}: onnxruntime vs tract over {len(inputs)} slices: max |dlogit| {worst:.3e}, "
          f"argmax agreement {100 * agreement:.4f} %")
    if precision == "fp32" and not worst <= FP32_TOLERANCE:
        problem(f"{path.name}: fp32 logits differ by {worst:.3e} > {FP32_TOLERANCE}")
    if precision == "int8" and check_int8 and not agreement >= INT8_MIN_AGREEMENT:
        problem(f"{path.name}: int8 argmax agreement {agreement:.5f} < {INT8_MIN_AGREEMENT}")


def bench(path, sess, x, input_name):
    for _ in range(3):
        sess.run(None, {input_name: x})
    times = []
    for _ in range(20):
        start = time.perf_counter()
        sess.run(None, {input_name: x})
        times.append(time.perf_counter() - start)
    print(f"bench onnxruntime {path.name}: {1e3 * float(np.median(times)):.3f} ms/slice "
          f"(median of 20, 1 thread, onnxruntime {ort.__version__})")


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__)
        return 2
    root = Path(args[0])
    fixture = json.loads((root / "fixture.json").read_text())
    n = int(fixture["n_slices"])
    input_shape = fixture["input_shape"]
    input_name = fixture["input_name"]
    inputs = read_f32(root / fixture["inputs"], n, input_shape)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, {n} slices of {input_shape}")
    for entry in fixture["models"]:
        path = root / entry["file"]
        precision = entry["precision"]
        check_model_file(path, precision, input_name, input_shape)
        tract_out = read_f32(root / entry["tract_outputs"], n, fixture["output_shape"])
        sess = session(path)
        check_int8 = fixture.get("check_int8_agreement", True)
        compare(path, precision, sess, inputs, tract_out, input_name, check_int8)
        if "--bench" in argv:
            bench(path, sess, inputs[0], input_name)
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    print("onnx check: all models passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
