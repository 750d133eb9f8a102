//! `cargo xtask setup-libtorch`: a CPU libtorch 2.11.0 in `.cache/libtorch`, from PyPI wheels.
//!
//! tch 0.24 (torch-sys 0.24) needs libtorch 2.11.0. The official libtorch zips are not on a
//! package registry, so this task takes the pieces out of the PyPI `torch` wheel instead:
//! `python3 -m pip download` fetches the pinned wheels (exact versions, platform tags and
//! sha256 hashes) into `.cache/wheels`, and only what torch-sys needs is unpacked:
//!
//! ```text
//! .cache/libtorch/include/          torch/include of the torch wheel
//! .cache/libtorch/lib/              libtorch_cpu.so libtorch.so libc10.so libgomp.so.1
//!                                   libcudart.so.13 libcupti.so.13 (DT_NEEDED by libtorch_cpu.so)
//!                                   libgomp.so -> libgomp.so.1 (for torch-sys's `-lgomp`)
//! .cache/libtorch/build-version     the wheel's torch.__version__, read by torch-sys's version check
//! .cache/libtorch/strokeseg-libtorch.txt   marker: written last, says what was installed
//! ```
//!
//! `libtorch_cuda*.so` are left out, so torch-sys links the CPU backend only. The wheel's
//! `libtorch.so` still lists `libtorch_cuda.so` as DT_NEEDED; nothing the tch shim calls lives in
//! it, so the linker's `--as-needed` (rustc's default) drops it from our binaries.
//!
//! Environment read:
//! - `LIBTORCH`: when set to anything but `.cache/libtorch` (which `.cargo/config.toml` sets), the
//!   user's own libtorch is used and nothing is installed.
//! - `LIBTORCH_USE_PYTORCH`: when set, torch-sys takes libtorch from the python `torch` package
//!   (the way to build on the CUDA machine: `pip install torch==2.11.0` and
//!   `LIBTORCH_USE_PYTORCH=1 cargo build -p strokeseg-trainer`); nothing is installed.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::process;

/// The libtorch version that tch 0.24 / torch-sys 0.24 checks for.
pub const TORCH_VERSION: &str = "2.11.0";

/// Where the install goes, relative to the repo root (git-ignored).
const LIBTORCH_DIR: &str = ".cache/libtorch";
/// Where the downloaded wheels are kept, relative to the repo root (git-ignored).
pub(crate) const WHEELS_DIR: &str = ".cache/wheels";
/// Written last; its content must match [`marker_text`] for the install to count as complete.
const MARKER_FILE: &str = "strokeseg-libtorch.txt";

/// One pinned PyPI wheel and the parts of it to unpack.
pub(crate) struct Wheel {
    /// `name==version`, as pip takes it.
    pub requirement: &'static str,
    /// The file pip saves for the pinned platform tags below.
    pub file_name: &'static str,
    pub sha256: &'static str,
    /// `(path in wheel, path under the destination)`; a source ending in `/` copies a whole
    /// tree.
    pub extract: &'static [(&'static str, &'static str)],
}

/// Platform tags given to pip: pip does not widen `--platform`, so each manylinux level that one
/// of the wheels uses is listed (torch: 2_28, cupti: 2_25, cudart: 2_17/2014).
const PIP_PLATFORMS: &[&str] = &[
    "manylinux_2_28_x86_64",
    "manylinux_2_25_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
];

const WHEELS: &[Wheel] = &[
    Wheel {
        requirement: "torch==2.11.0",
        file_name: "torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        sha256: "7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a",
        extract: &[
            ("torch/include/", "include/"),
            ("torch/lib/libtorch_cpu.so", "lib/libtorch_cpu.so"),
            ("torch/lib/libtorch.so", "lib/libtorch.so"),
            ("torch/lib/libc10.so", "lib/libc10.so"),
            ("torch/lib/libgomp.so.1", "lib/libgomp.so.1"),
        ],
    },
    Wheel {
        requirement: "nvidia-cuda-runtime==13.0.96",
        file_name: "nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        sha256: "7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548",
        extract: &[("nvidia/cu13/lib/libcudart.so.13", "lib/libcudart.so.13")],
    },
    Wheel {
        requirement: "nvidia-cuda-cupti==13.0.85",
        file_name: "nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl",
        sha256: "4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8",
        extract: &[("nvidia/cu13/lib/libcupti.so.13", "lib/libcupti.so.13")],
    },
];

/// Files that must exist for an install to count as complete (besides the marker).
const REQUIRED_FILES: &[&str] = &[
    "build-version",
    "include/torch/script.h",
    "include/torch/csrc/api/include/torch/torch.h",
    "lib/libtorch_cpu.so",
    "lib/libtorch.so",
    "lib/libc10.so",
    "lib/libgomp.so.1",
    "lib/libgomp.so",
    "lib/libcudart.so.13",
    "lib/libcupti.so.13",
];

/// Installs libtorch into `<root>/.cache/libtorch` unless it is complete already or the user
/// points torch-sys elsewhere (`LIBTORCH`, `LIBTORCH_USE_PYTORCH`).
pub fn setup(root: &Path) -> Result<()> {
    let target = root.join(LIBTORCH_DIR);
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        println!(
            "LIBTORCH_USE_PYTORCH is set: torch-sys uses the python torch install, nothing to install"
        );
        return Ok(());
    }
    if let Some(user_dir) = user_libtorch(&target) {
        let torch_cpu = user_dir.join("lib/libtorch_cpu.so");
        if !torch_cpu.exists() {
            bail!(
                "LIBTORCH is set to {} but {} is missing: point LIBTORCH at a libtorch {TORCH_VERSION} \
                 install, or unset it so that `cargo xtask setup-libtorch` installs one into {LIBTORCH_DIR}",
                user_dir.display(),
                torch_cpu.display()
            );
        }
        println!(
            "LIBTORCH is set to {}: using it, nothing to install",
            user_dir.display()
        );
        return Ok(());
    }
    if is_complete(&target) {
        println!(
            "libtorch {TORCH_VERSION} already installed in {}",
            target.display()
        );
        return Ok(());
    }

    let wheels_dir = root.join(WHEELS_DIR);
    let started = Instant::now();
    download_wheels(root, &wheels_dir, WHEELS)?;
    println!("wheels ready in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let staging = root.join(format!("{LIBTORCH_DIR}.partial"));
    remove_dir_if_exists(&staging)?;
    fs::create_dir_all(&staging)
        .with_context(|| format!("could not create {}", staging.display()))?;
    let version = unpack(&wheels_dir, &staging)?;
    std::os::unix::fs::symlink("libgomp.so.1", staging.join("lib/libgomp.so"))
        .context("could not create lib/libgomp.so -> libgomp.so.1")?;
    write(&staging.join("build-version"), &format!("{version}\n"))?;
    for file in REQUIRED_FILES {
        if !staging.join(file).exists() {
            bail!(
                "unpacked libtorch lacks {file}: the wheel layout changed, update xtask/src/libtorch.rs"
            );
        }
    }
    write(&staging.join(MARKER_FILE), &marker_text())?;
    remove_dir_if_exists(&target)?;
    fs::rename(&staging, &target).with_context(|| {
        format!(
            "could not move {} to {}",
            staging.display(),
            target.display()
        )
    })?;
    println!(
        "libtorch {version} (CPU libraries only) unpacked into {} in {:.1} s",
        target.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `LIBTORCH` when the user set it to something other than our install dir.
fn user_libtorch(ours: &Path) -> Option<PathBuf> {
    let value = PathBuf::from(std::env::var_os("LIBTORCH")?);
    let same = value == ours
        || matches!(
            (fs::canonicalize(&value), fs::canonicalize(ours)),
            (Ok(a), Ok(b)) if a == b
        );
    (!same).then_some(value)
}

/// What the marker file holds: changes whenever a pinned wheel changes, forcing a reinstall.
fn marker_text() -> String {
    let mut text = String::from("CPU libtorch unpacked by `cargo xtask setup-libtorch` from:\n");
    for wheel in WHEELS {
        text.push_str(&format!("{} sha256:{}\n", wheel.file_name, wheel.sha256));
    }
    text
}

fn is_complete(dir: &Path) -> bool {
    let marker_ok =
        fs::read_to_string(dir.join(MARKER_FILE)).is_ok_and(|text| text == marker_text());
    marker_ok && REQUIRED_FILES.iter().all(|file| dir.join(file).exists())
}

/// Makes sure every wheel of `wheels` is in `wheels_dir`, calling pip (hash-checked) only
/// for a missing one.
pub(crate) fn download_wheels(root: &Path, wheels_dir: &Path, wheels: &[Wheel]) -> Result<()> {
    if wheels
        .iter()
        .all(|wheel| wheels_dir.join(wheel.file_name).exists())
    {
        println!("wheels already in {}", wheels_dir.display());
        return Ok(());
    }
    if process::output(root, "python3", &["-m", "pip", "--version"]).is_none() {
        let names: Vec<&str> = wheels.iter().map(|w| w.requirement).collect();
        bail!(
            "`python3 -m pip` is not available; it is needed to download {} from PyPI.\n\
             fix: install pip (Debian: `apt-get install python3-pip`); for libtorch, or set LIBTORCH \
             to an existing libtorch {TORCH_VERSION} install, or set LIBTORCH_USE_PYTORCH=1 with \
             torch {TORCH_VERSION} installed in python",
            names.join(", ")
        );
    }
    fs::create_dir_all(wheels_dir)
        .with_context(|| format!("could not create {}", wheels_dir.display()))?;
    let first = wheels.first().map_or("none", |w| w.requirement);
    let stem = first.split("==").next().unwrap_or(first);
    let requirements = wheels_dir.join(format!("requirements-{stem}.txt"));
    let mut text = String::new();
    for wheel in wheels {
        text.push_str(&format!(
            "{} --hash=sha256:{}\n",
            wheel.requirement, wheel.sha256
        ));
    }
    write(&requirements, &text)?;

    // `--no-cache-dir`: pip's HTTP cache would buffer each 0.5 GB wheel in a temporary file
    // and keep a second copy in ~/.cache/pip (CI once ran out of disk there).
    let mut args: Vec<String> = [
        "-m",
        "pip",
        "download",
        "--no-cache-dir",
        "--no-deps",
        "--only-binary=:all:",
    ]
    .map(String::from)
    .to_vec();
    for platform in PIP_PLATFORMS {
        args.extend(["--platform".into(), (*platform).into()]);
    }
    args.extend(
        [
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--require-hashes",
            "--dest",
        ]
        .map(String::from),
    );
    args.push(wheels_dir.display().to_string());
    args.push("--requirement".into());
    args.push(requirements.display().to_string());
    process::run(root, "python3", &args).context(
        "downloading the wheels failed; pip needs to reach PyPI (or a mirror configured in pip.conf)",
    )?;
    for wheel in wheels {
        if !wheels_dir.join(wheel.file_name).exists() {
            bail!(
                "pip did not save {} into {}: the pinned platform tags no longer match, update xtask/src/libtorch.rs",
                wheel.file_name,
                wheels_dir.display()
            );
        }
    }
    Ok(())
}

/// Unpacks the parts of every wheel listed in [`WHEELS`] into `dest`; returns torch's version.
fn unpack(wheels_dir: &Path, dest: &Path) -> Result<String> {
    let mut version = None;
    for wheel in WHEELS {
        let found = unpack_wheel(&wheels_dir.join(wheel.file_name), wheel.extract, dest)?;
        version = version.or(found);
    }
    let version = version.context("torch/version.py not found in the torch wheel")?;
    let release = version
        .split_once('+')
        .map_or(version.as_str(), |(release, _)| release);
    if release != TORCH_VERSION {
        bail!(
            "the torch wheel holds version {version}, expected {TORCH_VERSION} (what tch 0.24 needs)"
        );
    }
    Ok(version)
}

/// Unpacks the entries of the wheel at `path` that `rules` name (`(path in wheel, path under
/// dest)`) into `dest`; every rule must match. Returns `torch/version.py`'s version if the
/// wheel holds one.
pub(crate) fn unpack_wheel(
    path: &Path,
    rules: &[(&str, &str)],
    dest: &Path,
) -> Result<Option<String>> {
    let mut version = None;
    let file =
        fs::File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).with_context(|| {
        format!(
            "{} is not a readable wheel (zip); delete it and rerun",
            path.display()
        )
    })?;
    let mut found = vec![false; rules.len()];
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .with_context(|| format!("could not read entry {index} of {}", path.display()))?;
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if name == "torch/version.py" {
            let mut text = String::new();
            entry.read_to_string(&mut text).with_context(|| {
                format!("could not read torch/version.py from {}", path.display())
            })?;
            version = Some(parse_version_py(&text)?);
            continue;
        }
        let Some((rule, out_rel)) = map_entry(rules, &name) else {
            continue;
        };
        if let Some(seen) = found.get_mut(rule) {
            *seen = true;
        }
        if entry.is_dir() {
            continue;
        }
        let out = dest.join(&out_rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        let mut writer = fs::File::create(&out)
            .with_context(|| format!("could not create {}", out.display()))?;
        io::copy(&mut entry, &mut writer)
            .with_context(|| format!("could not unpack {name} from {}", path.display()))?;
        if out_rel.starts_with("lib/") {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&out, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("could not make {} executable", out.display()))?;
        }
    }
    for ((source, _), seen) in rules.iter().zip(&found) {
        if !seen {
            bail!(
                "{source} not found in {}: the wheel layout changed, update xtask/src/libtorch.rs",
                path.display()
            );
        }
    }
    Ok(version)
}

/// Where [`setup_cuda_link_dir`] builds the CUDA link folder, relative to the repo root.
const CUDA_LINK_DIR: &str = ".cache/libtorch-cuda";
/// What the CUDA link folder adds to the CPU install: the CUDA backend torch-sys links when
/// `lib/libtorch_cuda.so` exists.
const CUDA_EXTRACT: &[(&str, &str)] = &[
    ("torch/lib/libtorch_cuda.so", "lib/libtorch_cuda.so"),
    ("torch/lib/libc10_cuda.so", "lib/libc10_cuda.so"),
];

/// A libtorch folder to *link* a CUDA-capable trainer against on a machine without CUDA
/// (`cargo xtask gpu-bundle`): `.cache/libtorch-cuda` = links to the CPU install's files plus
/// the torch wheel's `libtorch_cuda.so` and `libc10_cuda.so`. CUDA's own libraries (cuDNN,
/// cuBLAS, …) are not here: the link needs `-Wl,--allow-shlib-undefined`, and the binary
/// runs against the GPU machine's torch install. Returns the folder.
pub fn setup_cuda_link_dir(root: &Path) -> Result<PathBuf> {
    let cpu = root.join(LIBTORCH_DIR);
    if !is_complete(&cpu) {
        bail!(
            "{} is not a complete libtorch install: run `cargo xtask setup-libtorch` without \
             LIBTORCH/LIBTORCH_USE_PYTORCH set first",
            cpu.display()
        );
    }
    let dir = root.join(CUDA_LINK_DIR);
    let marker = format!("{}CUDA backend added from the torch wheel\n", marker_text());
    let complete = fs::read_to_string(dir.join(MARKER_FILE)).is_ok_and(|text| text == marker)
        && CUDA_EXTRACT.iter().all(|(_, out)| dir.join(out).exists());
    if complete {
        println!("CUDA link folder ready in {}", dir.display());
        return Ok(dir);
    }
    let started = Instant::now();
    let staging = root.join(format!("{CUDA_LINK_DIR}.partial"));
    remove_dir_if_exists(&staging)?;
    fs::create_dir_all(staging.join("lib"))
        .with_context(|| format!("could not create {}", staging.display()))?;
    let cpu =
        fs::canonicalize(&cpu).with_context(|| format!("could not resolve {}", cpu.display()))?;
    let link = |from: PathBuf, to: PathBuf| {
        std::os::unix::fs::symlink(&from, &to)
            .with_context(|| format!("could not link {} -> {}", to.display(), from.display()))
    };
    link(cpu.join("include"), staging.join("include"))?;
    link(cpu.join("build-version"), staging.join("build-version"))?;
    let lib_dir = cpu.join("lib");
    for entry in
        fs::read_dir(&lib_dir).with_context(|| format!("could not list {}", lib_dir.display()))?
    {
        let entry = entry.with_context(|| format!("could not list {}", lib_dir.display()))?;
        link(entry.path(), staging.join("lib").join(entry.file_name()))?;
    }
    let torch = WHEELS
        .first()
        .context("no torch wheel pinned in xtask/src/libtorch.rs")?;
    download_wheels(root, &root.join(WHEELS_DIR), WHEELS)?;
    unpack_wheel(
        &root.join(WHEELS_DIR).join(torch.file_name),
        CUDA_EXTRACT,
        &staging,
    )?;
    write(&staging.join(MARKER_FILE), &marker)?;
    remove_dir_if_exists(&dir)?;
    fs::rename(&staging, &dir)
        .with_context(|| format!("could not move {} to {}", staging.display(), dir.display()))?;
    println!(
        "CUDA link folder made in {} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// Where a wheel entry goes: the index of the matching rule and the path under the install dir.
fn map_entry(rules: &[(&str, &str)], name: &str) -> Option<(usize, String)> {
    rules.iter().enumerate().find_map(|(index, (source, out))| {
        if source.ends_with('/') {
            name.strip_prefix(source)
                .map(|rest| (index, format!("{out}{rest}")))
        } else {
            (name == *source).then(|| (index, (*out).to_owned()))
        }
    })
}

/// The `__version__ = '2.11.0+cu130'` value of torch's `version.py`.
fn parse_version_py(text: &str) -> Result<String> {
    text.lines()
        .find_map(|line| {
            let value = line
                .strip_prefix("__version__")?
                .trim_start()
                .strip_prefix('=')?
                .trim();
            let value = value.trim_matches(|c| c == '\'' || c == '"');
            (!value.is_empty()).then(|| value.to_owned())
        })
        .context("no `__version__ = ...` line in torch/version.py")
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
}

pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("could not remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wheel_version_line() -> Result<()> {
        let text = "from typing import Optional\n__version__ = '2.11.0+cu130'\ndebug = False\n";
        assert_eq!(parse_version_py(text)?, "2.11.0+cu130");
        assert!(parse_version_py("debug = False\n").is_err());
        Ok(())
    }

    #[test]
    fn maps_trees_and_single_files() {
        let rules = [
            ("torch/include/", "include/"),
            ("torch/lib/libc10.so", "lib/libc10.so"),
        ];
        assert_eq!(
            map_entry(&rules, "torch/include/torch/torch.h"),
            Some((0, "include/torch/torch.h".to_owned()))
        );
        assert_eq!(
            map_entry(&rules, "torch/lib/libc10.so"),
            Some((1, "lib/libc10.so".to_owned()))
        );
        assert_eq!(map_entry(&rules, "torch/lib/libtorch_cuda.so"), None);
    }

    #[test]
    fn every_wheel_is_pinned_by_hash() {
        for wheel in WHEELS {
            assert!(
                wheel.requirement.contains("=="),
                "{} is not pinned",
                wheel.requirement
            );
            assert_eq!(wheel.sha256.len(), 64, "{} hash", wheel.file_name);
        }
    }
}
