"""Rewrites an int8 model's per-channel QLinearConv weight scales as one scale per conv.

Measurement aid for issue 14 (BENCHMARKS.md, "The shipped model in tract, 2026-12-02"): the
shipped 2.0.0 `model.int8.onnx` has per-channel weight scales and its checkpoint is not in the
repository, so the per-tensor form the exporter now writes (host-trainer/src/export/graph.rs)
is made here from the stored int8 values: w = w_q * s_c, one symmetric scale s = max|w| / 127,
w_q' = round(w / s), bias_q' = round(bias_q * s_c / s). Needs numpy and protobuf only (the
onnx wheel's generated `onnx_ml_pb2` is loaded by path, without the rest of the package).

    .cache/venv-onnx/bin/python tests/scripts/requantise_per_tensor.py IN.onnx OUT.onnx
"""

import importlib.util
import pathlib
import sys

import numpy as np

DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32}


def load_pb():
    for base in map(pathlib.Path, sys.path):
        path = base / "onnx" / "onnx_ml_pb2.py"
        if path.exists():
            spec = importlib.util.spec_from_file_location("onnx_ml_pb2", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    sys.exit("onnx_ml_pb2.py not found: install the onnx wheel")


def values(t):
    dt = DTYPES[t.data_type]
    if t.raw_data:
        a = np.frombuffer(t.raw_data, dtype=dt)
    elif t.data_type == 1:
        a = np.array(t.float_data, dtype=dt)
    else:
        a = np.array(t.int32_data, dtype=dt)
    return a.reshape(tuple(t.dims)).copy()


def store(t, a):
    del t.float_data[:]
    del t.int32_data[:]
    del t.dims[:]
    t.raw_data = a.tobytes()
    t.dims.extend(a.shape)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: requantise_per_tensor.py IN.onnx OUT.onnx")
    pb = load_pb()
    model = pb.ModelProto()
    model.ParseFromString(pathlib.Path(sys.argv[1]).read_bytes())
    inits = {t.name: t for t in model.graph.initializer}
    n = 0
    for node in model.graph.node:
        if node.op_type != "QLinearConv":
            continue
        w_q, w_s = inits[node.input[3]], inits[node.input[4]]
        scales = values(w_s).astype(np.float64)
        w = values(w_q).astype(np.float64) * scales.reshape(-1, 1, 1, 1)
        s = np.abs(w).max() / 127.0
        store(w_q, np.clip(np.round(w / s), -127, 127).astype(np.int8))
        store(w_s, np.array(s, dtype=np.float32))
        if len(node.input) > 8:
            b = inits[node.input[8]]
            store(b, np.round(values(b).astype(np.float64) * scales / s).astype(np.int32))
        n += 1
    pathlib.Path(sys.argv[2]).write_bytes(model.SerializeToString())
    print(f"{sys.argv[2]}: {n} QLinearConv with one weight scale each")


if __name__ == "__main__":
    main()
