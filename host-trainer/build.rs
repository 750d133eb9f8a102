//! Build script: bakes the libtorch library directory into the trainer's binaries and test
//! binaries as an rpath, so they run without `LD_LIBRARY_PATH`.
//!
//! Environment read:
//! - `DEP_TCH_LIBTORCH_LIB`: set by torch-sys's build script (`links = "tch"`) to the directory it
//!   linked libtorch from. torch-sys derives it from `LIBTORCH` (set to `.cache/libtorch` by
//!   `.cargo/config.toml` unless the user set it), `LIBTORCH_LIB`, or, with
//!   `LIBTORCH_USE_PYTORCH=1`, the python torch install's lib dir. Reading it here keeps one
//!   source of truth for where libtorch is.
//! - `LIBTORCH`, `LIBTORCH_LIB`, `LIBTORCH_USE_PYTORCH`: not read, only watched, so that changing
//!   them reruns this script.
//! - `STROKESEG_ALLOW_SHLIB_UNDEFINED`: when set (by `cargo xtask gpu-bundle`), links with
//!   `-Wl,--allow-shlib-undefined`, so a CUDA trainer links on a machine that has
//!   `libtorch_cuda.so` but not the CUDA libraries it depends on (cuDNN, cuBLAS, …).
//!
//! CUDA: when the libtorch lib dir holds `libtorch_cuda.so`, it is linked with
//! `--no-as-needed`. Nothing the tch shim calls lives in it, so rustc's default `--as-needed`
//! would drop it, and libtorch would then report no CUDA device ("Cannot initialize CUDA
//! without ATen_cuda library"): the CUDA backend registers itself when the library loads.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for watched in [
        "STROKESEG_ALLOW_SHLIB_UNDEFINED",
        "LIBTORCH",
        "LIBTORCH_LIB",
        "LIBTORCH_USE_PYTORCH",
        "DEP_TCH_LIBTORCH_LIB",
    ] {
        println!("cargo:rerun-if-env-changed={watched}");
    }
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib_dir) if !lib_dir.is_empty() => {
            // Applies to every binary, test, example and bench of this package.
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
            if std::path::Path::new(&lib_dir)
                .join("libtorch_cuda.so")
                .exists()
            {
                println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
                println!("cargo:rustc-link-arg=-ltorch_cuda");
                println!("cargo:rustc-link-arg=-Wl,--as-needed");
            }
        }
        _ => println!(
            "cargo:warning=torch-sys did not report its libtorch lib dir (DEP_TCH_LIBTORCH_LIB): \
             no rpath added, set LD_LIBRARY_PATH to run the trainer"
        ),
    }
    if std::env::var_os("STROKESEG_ALLOW_SHLIB_UNDEFINED").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}
