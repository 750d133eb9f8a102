//! `cargo xtask setup-templates`: the brain template the phantom's realistic anatomy is built
//! on (ICBM 2009a nonlinear symmetric grey- and white-matter probability maps, 1 mm), taken
//! from the `nilearn` 0.14.1 wheel on PyPI, hash-checked, into `.cache/templates/icbm152_2009a`.
//!
//! The ICBM 2009a templates are © 1993–2009 Louis Collins, McConnell Brain Imaging Centre,
//! Montreal Neurological Institute, McGill University, and may be used, copied and
//! distributed with that notice (Fonov et al. 2011, NeuroImage 54:313). They are downloaded,
//! not committed.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::libtorch::{WHEELS_DIR, Wheel, download_wheels, remove_dir_if_exists, unpack_wheel};

/// Where the template goes, relative to the repo root (git-ignored).
pub const TEMPLATE_DIR: &str = strokeseg_phantom::TEMPLATE_DIR;

/// File names inside the template folder and their SHA-256: the phantom's own list.
const FILES: [(&str, &str); 2] = strokeseg_phantom::template::TEMPLATE_SHA256;

const NILEARN: Wheel = Wheel {
    requirement: "nilearn==0.14.1",
    file_name: "nilearn-0.14.1-py3-none-any.whl",
    sha256: "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
    extract: &[
        (
            "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
            "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        ),
        (
            "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
            "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        ),
    ],
};

/// Installs the template unless it is there with the right hashes; returns its folder.
pub fn setup(root: &Path) -> Result<PathBuf> {
    let target = root.join(TEMPLATE_DIR);
    if is_complete(&target) {
        println!("brain template already in {}", target.display());
        return Ok(target);
    }
    let wheels_dir = root.join(WHEELS_DIR);
    download_wheels(root, &wheels_dir, &[NILEARN])?;
    let staging = target.with_extension("partial");
    remove_dir_if_exists(&staging)?;
    fs::create_dir_all(&staging)
        .with_context(|| format!("could not create {}", staging.display()))?;
    unpack_wheel(
        &wheels_dir.join(NILEARN.file_name),
        NILEARN.extract,
        &staging,
    )?;
    if !is_complete(&staging) {
        bail!(
            "the files unpacked from {} do not have the pinned SHA-256; update xtask/src/templates.rs",
            NILEARN.file_name
        );
    }
    remove_dir_if_exists(&target)?;
    fs::rename(&staging, &target).with_context(|| {
        format!(
            "could not move {} to {}",
            staging.display(),
            target.display()
        )
    })?;
    println!(
        "brain template (ICBM 2009a, from nilearn 0.14.1) in {}",
        target.display()
    );
    Ok(target)
}

fn is_complete(dir: &Path) -> bool {
    FILES.iter().all(|(name, sha)| {
        fs::read(dir.join(name)).is_ok_and(|bytes| strokeseg_io::sha256_hex(&bytes) == *sha)
    })
}
