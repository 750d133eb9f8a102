//! `strokeseg-edge bench` end to end on the fp32 and int8 fixture models: the report's
//! fields are present and sane (latency percentiles ordered, FLOPs of the fixture's two
//! convolutions, kernels named, thread count as asked), the dumps have the model's sizes and
//! `--input` of a dumped input gives the same logits; a broken model file and a bad thread
//! count are refused with their exit codes. No timing is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::{edge, fp32_model, int8_model, text};

#[test]
fn bench_reports_latency_flops_and_kernels_of_the_fixture_models() {
    let dir = tempfile::tempdir().unwrap();
    for (model, threads) in [(fp32_model(dir.path()), "1"), (int8_model(dir.path()), "2")] {
        let input = dir.path().join("input.f32");
        let logits = dir.path().join("logits.f32");
        let args = [
            "bench",
            "--model",
            model.to_str().unwrap(),
            "--threads",
            threads,
            "--reps",
            "3",
            "--warmup",
            "1",
            "--json",
            "--dump-input",
            input.to_str().unwrap(),
            "--dump-output",
            logits.to_str().unwrap(),
        ];
        let o = edge(&args);
        assert!(o.status.success(), "{}", text(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let l = &r["latency_ms"];
        let f = |k: &str| l[k].as_f64().unwrap();
        assert!(f("min") > 0.0, "{r}");
        assert!(f("min") <= f("p50") && f("p50") <= f("p90") && f("p90") <= f("p99"));
        assert!(f("p99") <= f("max"), "{r}");
        assert_eq!(r["threads"].as_u64(), Some(threads.parse().unwrap()));
        assert_eq!(r["reps"].as_u64(), Some(3));
        // The fixture: 3×3 conv 5→4 and 1×1 conv 4→2 on 160×160.
        let macs = (5 * 4 * 9 + 4 * 2) * 160 * 160;
        assert_eq!(r["macs_per_slice"].as_u64(), Some(macs), "{r}");
        assert_eq!(r["flops_per_slice"].as_u64(), Some(2 * macs));
        assert!(r["gflops_per_s"].as_f64().unwrap() > 0.0);
        let kernels = r["plan"]["kernels"].as_object().unwrap();
        assert!(!kernels.is_empty(), "{r}");
        assert!(!r["cpu"]["isa"].as_array().unwrap().is_empty());
        assert!(r["input"].as_str().unwrap().contains("phantom"));
        assert!(r["peak_rss_kib"].as_u64().unwrap() > 0);
        assert_eq!(std::fs::metadata(&input).unwrap().len(), 4 * 5 * 160 * 160);
        assert_eq!(std::fs::metadata(&logits).unwrap().len(), 4 * 2 * 160 * 160);

        // The dumped input again: the same logits.
        let again = dir.path().join("again.f32");
        let o = edge(&[
            "bench",
            "--model",
            model.to_str().unwrap(),
            "--threads",
            threads,
            "--reps",
            "1",
            "--input",
            input.to_str().unwrap(),
            "--dump-output",
            again.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("GFLOP per slice"), "{}", text(&o));
        assert_eq!(
            std::fs::read(&logits).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}

#[test]
fn bench_refuses_a_broken_model_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.onnx");
    std::fs::write(&bad, b"not a model").unwrap();
    let o = edge(&["bench", "--model", bad.to_str().unwrap(), "--reps", "1"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("broken.onnx"), "{}", text(&o));

    let model = fp32_model(dir.path());
    let o = edge(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--threads",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("threads"), "{}", text(&o));

    let short = dir.path().join("short.f32");
    std::fs::write(&short, [0u8; 12]).unwrap();
    let o = edge(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--input",
        short.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("short.f32"), "{}", text(&o));
}
