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

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for watched in [
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
        }
        _ => println!(
            "cargo:warning=torch-sys did not report its libtorch lib dir (DEP_TCH_LIBTORCH_LIB): \
             no rpath added, set LD_LIBRARY_PATH to run the trainer"
        ),
    }
}
