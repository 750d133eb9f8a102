//! Puts `memory.x` on the linker's search path and brings in the host's golden values.
//!
//! Environment variables read (each also emits `rerun-if-env-changed`):
//! - `STROKESEG_HIL_GOLDEN`: path of the `golden.rs` that `cargo xtask hil` generates on the
//!   host (the fixture study and the expected results, computed by the same `pipeline.rs`
//!   with `strokeseg-shared`). Required: the firmware has nothing to check without it.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=memory.x");
    println!("cargo::rerun-if-env-changed=STROKESEG_HIL_GOLDEN");
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        println!("cargo::error=OUT_DIR is not set (run the build through cargo)");
        return;
    };
    if let Err(e) = std::fs::copy("memory.x", out_dir.join("memory.x")) {
        println!(
            "cargo::error=cannot copy memory.x into {}: {e}",
            out_dir.display()
        );
        return;
    }
    println!("cargo::rustc-link-search={}", out_dir.display());

    let Some(golden) = std::env::var_os("STROKESEG_HIL_GOLDEN").map(PathBuf::from) else {
        println!(
            "cargo::error=STROKESEG_HIL_GOLDEN is not set: build the firmware with \
             `cargo xtask hil` (it computes the golden values on the host first)"
        );
        return;
    };
    println!("cargo::rerun-if-changed={}", golden.display());
    if let Err(e) = std::fs::copy(&golden, out_dir.join("golden.rs")) {
        println!(
            "cargo::error=STROKESEG_HIL_GOLDEN={}: cannot read it ({e}); rerun `cargo xtask hil`",
            golden.display()
        );
    }
}
