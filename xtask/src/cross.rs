//! `cargo xtask cross`: a static `aarch64-unknown-linux-musl` `strokeseg-edge` for the ARM box,
//! built on the x86 host, plus the tool installs the HIL loops share.
//!
//! The binary is linked by `rust-lld` (from the Rust toolchain) against musl's self-contained
//! CRT, so it runs on any aarch64 Linux. tract's build script assembles its NEON kernels with a
//! C compiler, which is Debian's `aarch64-linux-gnu-gcc` (`CC_aarch64_unknown_linux_musl`).
//! The build shares the workspace target dir (`target/aarch64-unknown-linux-musl/release/`),
//! so the host builds stay warm and a second run only relinks what changed.
//!
//! Missing tools are installed: the rustup target, and the Debian packages
//! `gcc-aarch64-linux-gnu` and `qemu-user-static` (via `apt-get`, as root or with `sudo -n`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::process;

/// The edge box's target.
pub const TARGET: &str = "aarch64-unknown-linux-musl";

/// The environment the cross build runs with. Keep it stable: `CC_*` is tracked by tract's
/// build script, so changing it rebuilds tract.
const CROSS_ENV: &[(&str, &str)] = &[
    ("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"),
    ("AR_aarch64_unknown_linux_musl", "aarch64-linux-gnu-ar"),
    ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld"),
];

/// `cargo xtask cross`: installs what is missing, builds, prints the binary's path and size.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        bail!("cross takes no arguments, got `{extra}`");
    }
    let binary = build(root)?;
    let size = std::fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len();
    println!(
        "cross: {} ({:.1} MiB, static {TARGET})",
        binary.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Installs the toolchain pieces if missing and builds the release `strokeseg-edge` for
/// [`TARGET`]; returns the binary's path.
pub fn build(root: &Path) -> Result<PathBuf> {
    ensure_rustup_target(root, TARGET)?;
    ensure_apt_tools(
        root,
        &[(&["aarch64-linux-gnu-gcc"], "gcc-aarch64-linux-gnu")],
    )?;
    let started = Instant::now();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "--package",
            "strokeseg-edge",
            "--bin",
            "strokeseg-edge",
            "--target",
            TARGET,
        ])
        .envs(CROSS_ENV.iter().copied());
    run_command(&mut cmd)?;
    println!(
        "cross: build finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let binary = target_dir(root)
        .join(TARGET)
        .join("release")
        .join("strokeseg-edge");
    if !binary.is_file() {
        bail!(
            "the cross build succeeded but {} is missing",
            binary.display()
        );
    }
    Ok(binary)
}

/// The cargo target dir: `CARGO_TARGET_DIR` when set (relative to the workspace root), else
/// `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The qemu-user emulator for aarch64 (`qemu-aarch64-static` or `qemu-aarch64`), installed
/// from Debian's `qemu-user-static` when neither is on PATH.
pub fn qemu_aarch64(root: &Path) -> Result<PathBuf> {
    const NAMES: &[&str] = &["qemu-aarch64-static", "qemu-aarch64"];
    ensure_apt_tools(root, &[(NAMES, "qemu-user-static")])?;
    NAMES
        .iter()
        .find_map(|name| which(name))
        .context("qemu-aarch64 is still missing after installing qemu-user-static")
}

/// `rustup target add TARGET` unless it is installed.
pub fn ensure_rustup_target(root: &Path, target: &str) -> Result<()> {
    let installed = process::output(root, "rustup", &["target", "list", "--installed"])
        .with_context(|| {
            format!("`rustup target list --installed` failed: rustup is needed to add {target}")
        })?;
    if installed.lines().any(|line| line.trim() == target) {
        return Ok(());
    }
    process::run(root, "rustup", &["target", "add", target])
}

/// For each `(binaries, package)`: installs the Debian `package` with apt-get when none of
/// `binaries` is on PATH. Runs `apt-get update` once if the first install attempt fails (a
/// fresh machine has no package lists). Needs root or passwordless sudo.
pub fn ensure_apt_tools(root: &Path, tools: &[(&[&str], &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(binaries, _)| binaries.iter().all(|b| which(b).is_none()))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sudo = if is_root(root) {
        false
    } else if which("sudo").is_some() {
        true
    } else {
        bail!(
            "missing Debian packages {}: install them (apt-get install {}) or run as root",
            missing.join(", "),
            missing.join(" ")
        );
    };
    let apt = |args: &[&str]| -> Result<()> {
        // sudo resets the environment, so the frontend goes through `env`.
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            c
        } else {
            let mut c = Command::new("apt-get");
            c.env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        cmd.current_dir(root).args(args);
        run_command(&mut cmd)
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(missing.iter().copied());
    if apt(&install).is_err() {
        println!("apt-get install failed; updating the package lists and retrying");
        apt(&["update"])?;
        apt(&install)?;
    }
    Ok(())
}

/// `cargo install CRATE --version VERSION --locked` unless `binary --version` already prints
/// `binary <major>.` of that version's major (the wire formats match within a major).
pub fn ensure_cargo_tool(root: &Path, krate: &str, version: &str, binary: &str) -> Result<PathBuf> {
    let major = version.split('.').next().unwrap_or(version);
    let compatible = |path: &Path| {
        process::output(root, &path.to_string_lossy(), &["--version"]).is_some_and(|out| {
            out.split_whitespace()
                .nth(1)
                .is_some_and(|v| v.split('.').next() == Some(major))
        })
    };
    let cargo_bin = cargo_home().join("bin").join(binary);
    for candidate in [which(binary), Some(cargo_bin.clone())]
        .into_iter()
        .flatten()
    {
        if candidate.is_file() && compatible(&candidate) {
            return Ok(candidate);
        }
    }
    println!(
        "installing {krate} {version} (once; it is kept in {})",
        cargo_bin.display()
    );
    process::run(
        root,
        "cargo",
        &["install", krate, "--version", version, "--locked"],
    )?;
    if compatible(&cargo_bin) {
        Ok(cargo_bin)
    } else {
        bail!(
            "`cargo install {krate}` finished but {} does not run",
            cargo_bin.display()
        )
    }
}

fn cargo_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo"))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_root(root: &Path) -> bool {
    process::output(root, "id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}

/// Runs a prepared command with inherited stdio; an error when it fails.
pub fn run_command(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// A command as a user would type it (environment assignments first).
pub fn describe(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(
        cmd.get_args()
            .map(|a: &OsStr| a.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}
