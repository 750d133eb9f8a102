//! Perfusion maps of one case computed from its raw dynamic series (`CT_4DPWI`) into NIfTI
//! files on the CT's grid: the one implementation behind the edge's
//! `segment --maps computed` and the trainer's `--maps computed`, so a model trained on
//! computed maps meets, at the edge, maps computed by the same code into the same files.
//!
//! Memory: one slice of all frames and the computation's per-slice buffers
//! (`strokeseg_shared::perfusion`, "Memory"), whatever the number of slices; the four maps
//! are written slice by slice.

use std::path::Path;

use strokeseg_shared::Modality;
use strokeseg_shared::perfusion::PerfusionConfig;
use strokeseg_shared::perfusion::study::PerfusionSummary;

use crate::{
    DynamicOptions, DynamicSeries, GridTolerance, IoError, NiftiWriter, ReadLimits, read_header,
};

/// The maps computed, in this order.
pub const MAP_MODALITIES: [Modality; 4] =
    [Modality::Cbf, Modality::Cbv, Modality::Mtt, Modality::Tmax];

/// The file of a computed map: the ISLES tag (`CBF.nii.gz`), so a folder of computed maps
/// reads as a study.
pub fn map_file_name(modality: Modality) -> String {
    format!("{}.nii.gz", modality.isles_tag())
}

/// Computes the maps of the series `pwi` on the grid of `ct` (its header geometry; the
/// series must lie on the same grid) into `out_dir` as [`map_file_name`] files, f32. A gzip
/// series is spooled into `out_dir`. `keep_going` is asked before each slice is written;
/// when it answers false the computation stops with an [`std::io::ErrorKind::Interrupted`]
/// error naming `out_dir`. Errors of the computation (no bolus, motion, …) name the series.
pub fn compute_map_files(
    pwi: &Path,
    ct: &Path,
    config: &PerfusionConfig,
    out_dir: &Path,
    mut keep_going: impl FnMut() -> bool,
) -> Result<PerfusionSummary, IoError> {
    let (ct_header, ct_info) = read_header(ct, &ReadLimits::default())?;
    let options = DynamicOptions {
        spool_dir: Some(out_dir.to_path_buf()),
        ..DynamicOptions::default()
    };
    let mut series = DynamicSeries::open(pwi, &options)?;
    series.check_grid(&ct_info, GridTolerance::default())?;
    let mut writers = Vec::with_capacity(MAP_MODALITIES.len());
    for m in MAP_MODALITIES {
        let path = out_dir.join(map_file_name(m));
        writers.push(NiftiWriter::create(&path, &ct_header, crate::Dtype::F32)?);
    }
    let summary = series.compute_maps(config, |_, maps| {
        if !keep_going() {
            return Err(IoError::io(
                out_dir,
                std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
            ));
        }
        let planes = [
            maps.cbf_ml_100g_min,
            maps.cbv_ml_100g,
            maps.mtt_s,
            maps.tmax_s,
        ];
        for (w, plane) in writers.iter_mut().zip(planes) {
            w.write_slice_f32(plane)?;
        }
        Ok(())
    })?;
    for w in writers {
        w.finish()?;
    }
    Ok(summary)
}
