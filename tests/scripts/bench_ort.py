#!/usr/bin/env python3
"""onnxruntime's per-slice latency on a strokeseg model, beside `strokeseg-edge bench`.

    .cache/venv-onnx/bin/python tests/scripts/bench_ort.py MODEL [--threads N] [--reps N]
        [--warmup N] [--input FILE] [--dump-output FILE] [--json]

Runs MODEL on the CPU execution provider with N intra-op threads (1: single-threaded;
inter-op 1, sequential, all graph optimisations) on one input: the raw little-endian f32
[C, H, W] file `strokeseg-edge bench --dump-input FILE` wrote (the same prepared phantom
slice tract ran), else a fixed pseudo-random one. Prints nearest-rank latency percentiles
in milliseconds; `--json` prints one JSON object instead. `cargo xtask bench-model` runs
both and prints the ratio. The venv is the one CI's onnx-check step makes (onnx,
onnxruntime).
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import onnxruntime as ort


def percentile(sorted_ms, p):
    """Nearest rank: the smallest sample with at least p of them at or below it."""
    k = min(max(math.ceil(p * len(sorted_ms)), 1), len(sorted_ms))
    return sorted_ms[k - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--input", help="raw little-endian f32 [C, H, W]")
    ap.add_argument("--dump-output", help="write the logits, raw little-endian f32 [K, H, W]")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads < 1 or args.reps < 1 or args.warmup < 0:
        sys.exit("bench_ort.py: --threads and --reps must be >= 1, --warmup >= 0")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        sys.exit(f"bench_ort.py: {args.model}: onnxruntime cannot load it: {e}")
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    n = int(np.prod(shape))
    if args.input:
        x = np.fromfile(args.input, dtype="<f4")
        if x.size != n:
            sys.exit(f"bench_ort.py: {args.input}: {x.size} values, {args.model} takes {shape} = {n}")
        x = x.reshape(shape)
        what = f"{args.input} (raw f32)"
    else:
        x = np.random.default_rng(5).uniform(0.0, 1.0, size=shape).astype(np.float32)
        what = "uniform pseudo-random (seed 5)"
    feed = {inp.name: x}
    out_name = sess.get_outputs()[0].name
    for _ in range(args.warmup):
        sess.run([out_name], feed)
    samples = []
    y = None
    for _ in range(args.reps):
        t = time.perf_counter()
        y = sess.run([out_name], feed)[0]
        samples.append((time.perf_counter() - t) * 1000.0)
    if args.dump_output:
        np.ascontiguousarray(y[0], dtype="<f4").tofile(args.dump_output)
    s = sorted(samples)
    result = {
        "runtime": f"onnxruntime {ort.__version__}",
        "model": args.model,
        "input_shape": shape,
        "input": what,
        "threads": args.threads,
        "reps": args.reps,
        "warmup": args.warmup,
        "latency_ms": {
            "min": s[0],
            "p50": percentile(s, 0.5),
            "p90": percentile(s, 0.9),
            "p99": percentile(s, 0.99),
            "max": s[-1],
            "mean": sum(s) / len(s),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        l = result["latency_ms"]
        print(
            f"{result['runtime']}  {args.model}  threads {args.threads}: "
            f"p50 {l['p50']:.2f} ms, p90 {l['p90']:.2f} ms, p99 {l['p99']:.2f} ms "
            f"({args.reps} runs after {args.warmup} warm-up)"
        )


if __name__ == "__main__":
    main()
