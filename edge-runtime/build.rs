//! Embeds the default model in the binary when one exists, so one file deploys.
//!
//! Environment variables read (each also emits `rerun-if-env-changed`):
//! - `STROKESEG_EDGE_MODEL`: path of the ONNX model to embed instead of
//!   `models/default/model.onnx` (relative paths are taken from the workspace root); set it
//!   to an empty string to build without an embedded model.
//!
//! Without the variable, `<workspace>/models/default/model.onnx` is embedded if the file
//! exists; otherwise the binary has no default model and `segment --method model` needs
//! `--model FILE`. When a model is embedded, the build sets `cfg(strokeseg_embedded_model)`
//! and `STROKESEG_EMBEDDED_MODEL` (its absolute path, for `include_bytes!`).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(strokeseg_embedded_model)");
    println!("cargo::rerun-if-env-changed=STROKESEG_EDGE_MODEL");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest_dir.parent().map(PathBuf::from).unwrap_or_default();
    // A folder is scanned recursively, so adding models/default/model.onnx reruns this.
    let models_dir = workspace.join("models");
    println!("cargo::rerun-if-changed={}", models_dir.display());
    let model = match std::env::var_os("STROKESEG_EDGE_MODEL") {
        Some(v) if v.is_empty() => None,
        Some(v) => {
            let p = PathBuf::from(v);
            let p = if p.is_absolute() {
                p
            } else {
                workspace.join(p)
            };
            if !p.is_file() {
                println!(
                    "cargo::error=STROKESEG_EDGE_MODEL={} is not a file; unset it to build without an embedded model",
                    p.display()
                );
                return;
            }
            Some(p)
        }
        None => Some(models_dir.join("default").join("model.onnx")).filter(|p| p.is_file()),
    };
    if let Some(p) = model {
        println!("cargo::rerun-if-changed={}", p.display());
        println!("cargo::rustc-cfg=strokeseg_embedded_model");
        println!("cargo::rustc-env=STROKESEG_EMBEDDED_MODEL={}", p.display());
    }
}
