//! The shipped default model (`models/default/`): its files match `SHA256SUMS`, this build
//! embeds exactly the shipped fp32 model, and both models' metadata match this build's
//! preprocessing (`PREPROCESS_VERSION`, channels), so a preprocessing change cannot ship
//! with a stale model: bumping `PREPROCESS_VERSION` fails here until the model is retrained
//! (`cargo xtask default-model`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strokeseg_edge::model::{embedded_model, embedded_model_info, model_info};
use strokeseg_model::{ModelInfo, sha256_hex};
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::config::PREPROCESS_VERSION;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
        .join("default")
}

/// `SHA256SUMS` as file name → hex digest (`sha256sum` format: `HEX  NAME`).
fn sha256sums() -> Result<BTreeMap<String, String>, Box<dyn std::error::Error>> {
    let path = model_dir().join("SHA256SUMS");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (the default model must be shipped)",
            path.display()
        )
    })?;
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (digest, name) = line
            .split_once("  ")
            .ok_or_else(|| format!("{}: malformed line `{line}`", path.display()))?;
        assert_eq!(digest.len(), 64, "{}: `{line}`", path.display());
        sums.insert(name.trim().to_owned(), digest.to_owned());
    }
    Ok(sums)
}

#[allow(clippy::panic)] // a test helper: failing is its job
fn assert_matches_this_build(info: &ModelInfo) {
    let Some(meta) = &info.metadata else {
        panic!("{}: no metadata", info.source);
    };
    assert_eq!(
        meta.preprocess.version, PREPROCESS_VERSION,
        "{}: made for preprocessing version {}, this build is {PREPROCESS_VERSION}: retrain \
         with `cargo xtask default-model`",
        info.source, meta.preprocess.version
    );
    let channels: Vec<_> = meta
        .preprocess
        .channels
        .iter()
        .map(|c| c.modality)
        .collect();
    let default_channels: Vec<_> = PreprocessConfig::default()
        .channels
        .iter()
        .map(|c| c.modality)
        .collect();
    assert_eq!(
        channels, default_channels,
        "{}: the default model must take the default channels",
        info.source
    );
    assert!(meta.validate().is_ok(), "{}: metadata invalid", info.source);
}

#[test]
fn shipped_files_match_sha256sums() -> TestResult {
    let sums = sha256sums()?;
    for name in ["model.onnx", "model.int8.onnx"] {
        assert!(sums.contains_key(name), "SHA256SUMS lists no {name}");
    }
    for (name, digest) in &sums {
        let path = model_dir().join(name);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        assert_eq!(
            &sha256_hex(&bytes),
            digest,
            "{} does not match SHA256SUMS",
            path.display()
        );
        // A few MB each, as the model card promises (git stays light).
        assert!(
            bytes.len() < 16 << 20,
            "{} is {} bytes",
            path.display(),
            bytes.len()
        );
    }
    Ok(())
}

#[test]
fn shipped_models_match_this_builds_preprocessing() -> TestResult {
    for name in ["model.onnx", "model.int8.onnx"] {
        let info = model_info(&model_dir().join(name))?;
        assert_matches_this_build(&info);
    }
    Ok(())
}

#[test]
fn the_binary_embeds_the_shipped_fp32_model() -> TestResult {
    if let Some(other) = option_env!("STROKESEG_EDGE_MODEL") {
        eprintln!("built with STROKESEG_EDGE_MODEL={other:?}: not the shipped default, skipped");
        return Ok(());
    }
    let bytes = embedded_model().ok_or("this build embeds no default model")?;
    let sums = sha256sums()?;
    assert_eq!(
        Some(&sha256_hex(bytes)),
        sums.get("model.onnx"),
        "the embedded model is not the shipped models/default/model.onnx"
    );
    let info = embedded_model_info().ok_or("no embedded model info")??;
    assert_matches_this_build(&info);
    Ok(())
}
