//! Perfusion maps computed from each case's raw series for a model trained on computed maps
//! (`PreprocessConfig::maps` = `computed`, `strokeseg-train train|cv --maps computed`): the
//! edge's function, `strokeseg_io::computed_maps::compute_map_files`, once per case input,
//! cached on disk so folds, sweep settings and reruns read the same files.
//!
//! The cache ([`cache_dir`]: `$STROKESEG_MAPS_CACHE`, else `$XDG_CACHE_HOME/strokeseg/maps`,
//! else `~/.cache/strokeseg/maps`) holds one folder per entry, named by the SHA-256 of
//! [`PERFUSION_VERSION`], the configuration (JSON) and the bytes of the series and the CT
//! file (the maps are written on the CT's grid): a changed file, configuration or algorithm
//! version is a new entry, never a stale hit. An entry is computed into a temporary sibling
//! folder and renamed into place, so concurrent folds on one cache never see half an entry.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest;
use strokeseg_io::CaseFiles;
use strokeseg_io::computed_maps::{MAP_MODALITIES, compute_map_files, map_file_name};
use strokeseg_shared::Modality;
use strokeseg_shared::config::MapsProvenance;
use strokeseg_shared::perfusion::{PERFUSION_VERSION, PerfusionPreset};

use crate::error::TrainError;

/// Environment variable naming the cache folder of computed maps.
pub const MAPS_CACHE_ENV: &str = "STROKESEG_MAPS_CACHE";
/// What an entry records besides the maps.
pub const ENTRY_FILE: &str = "computed.json";

/// The cache folder: [`MAPS_CACHE_ENV`], else `$XDG_CACHE_HOME/strokeseg/maps`, else
/// `$HOME/.cache/strokeseg/maps`, else `strokeseg-maps` in the temporary folder.
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(MAPS_CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("strokeseg").join("maps");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home)
            .join(".cache")
            .join("strokeseg")
            .join("maps");
    }
    std::env::temp_dir().join("strokeseg-maps")
}

/// The case's files with the maps a model trained on `maps` reads: as they are for provided
/// maps; for computed ones, the four maps of the cache entry of its `CT_4DPWI` and `CT`
/// (computed now when missing). Refuses maps of another [`PERFUSION_VERSION`] (this build
/// cannot compute them) and a case without the raw series or the CT, naming the case.
pub fn case_files(
    files: &CaseFiles,
    maps: MapsProvenance,
    cache: &Path,
) -> Result<CaseFiles, TrainError> {
    let MapsProvenance::Computed { preset, version } = maps else {
        return Ok(files.clone());
    };
    let refuse = |reason: String| TrainError::ComputedMaps {
        case_dir: files.case_dir.clone(),
        reason,
    };
    if version != PERFUSION_VERSION {
        return Err(refuse(format!(
            "the configuration asks for maps of perfusion version {version}, this build computes version {PERFUSION_VERSION}"
        )));
    }
    let (Some(pwi), Some(ct)) = (
        files.files.get(&Modality::Pwi),
        files.files.get(&Modality::Ct),
    ) else {
        return Err(refuse(
            "computed maps need the raw series CT_4DPWI and the plain CT, and the case lacks one"
                .into(),
        ));
    };
    let entry = cached_maps(pwi, ct, preset, cache)?;
    let mut out = files.clone();
    for m in MAP_MODALITIES {
        out.files.insert(m, entry.join(map_file_name(m)));
    }
    Ok(out)
}

/// The cache entry of the maps of `pwi` on the grid of `ct` with `preset`, computed when it
/// is missing.
pub fn cached_maps(
    pwi: &Path,
    ct: &Path,
    preset: PerfusionPreset,
    cache: &Path,
) -> Result<PathBuf, TrainError> {
    let config = preset.config();
    let mut hasher = sha2::Sha256::new();
    hasher.update(format!(
        "strokeseg computed maps, perfusion version {PERFUSION_VERSION}\n"
    ));
    hasher.update(
        serde_json::to_vec(&config).map_err(|source| TrainError::Json {
            path: pwi.to_path_buf(),
            source,
        })?,
    );
    for path in [pwi, ct] {
        hash_file(&mut hasher, path)?;
    }
    let key: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let entry = cache.join(&key);
    if MAP_MODALITIES
        .iter()
        .all(|&m| entry.join(map_file_name(m)).is_file())
    {
        tracing::debug!(
            "computed maps of {} from {}",
            pwi.display(),
            entry.display()
        );
        return Ok(entry);
    }
    let file = |path: &Path, source| TrainError::File {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(cache).map_err(|e| file(cache, e))?;
    let partial = cache.join(format!(
        "{key}.partial-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&partial).map_err(|e| file(&partial, e))?;
    let started = std::time::Instant::now();
    let computed = compute_map_files(pwi, ct, &config, &partial, || true).and_then(|summary| {
        let record = serde_json::json!({
            "series": pwi,
            "ct": ct,
            "preset": preset,
            "perfusion_version": PERFUSION_VERSION,
            "aif_voxels": summary.arterial.aif_voxels,
            "pv_scale": summary.arterial.pv_scale,
            "n_tissue_voxels": summary.n_tissue_voxels,
            "warnings": summary.warnings,
        });
        strokeseg_io::atomic::write_json_atomically(&partial.join(ENTRY_FILE), &record)
    });
    if let Err(e) = computed {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e.into());
    }
    tracing::info!(
        "computed the maps of {} in {:.1} s into {}",
        pwi.display(),
        started.elapsed().as_secs_f64(),
        entry.display()
    );
    if let Err(e) = std::fs::rename(&partial, &entry) {
        let _ = std::fs::remove_dir_all(&partial);
        // Another process finished the same entry first.
        if !entry.join(map_file_name(Modality::Cbf)).is_file() {
            return Err(file(&entry, e));
        }
    }
    Ok(entry)
}

fn hash_file(hasher: &mut sha2::Sha256, path: &Path) -> Result<(), TrainError> {
    let err = |source| TrainError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}
