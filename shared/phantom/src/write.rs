//! Writes phantom cases and datasets in the ISLES 2018 layout with the ISLES datatypes,
//! plus the truth summary (`phantom_truth.json`) and the patient map (`patients.csv`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{CaseSummary, DatasetOptions, DatasetSummary, PhantomCase, generate_case, isles_dtype};
use strokeseg_io::atomic::write_atomically;
use strokeseg_io::{IoError, NiftiWriter, new_header};
use strokeseg_shared::modality::Modality;

/// File ids used per case: one per entry of [`Modality::ALL`], whether written or not.
pub const FILE_IDS_PER_CASE: u64 = 7;
/// Name of the truth summary in the dataset folder.
pub const TRUTH_FILE: &str = "phantom_truth.json";
/// Name of the patient map in the dataset folder.
pub const PATIENTS_FILE: &str = "patients.csv";

/// Text in the NIfTI `descrip` field of every phantom image.
const DESCRIPTION: &[u8] = b"strokeseg synthetic CTP phantom";

/// `SMIR.Brain.XX.O.<MOD>.<id>`.
fn isles_stem(modality: Modality, file_id: u64) -> String {
    format!("SMIR.Brain.XX.O.{}.{file_id}", modality.isles_tag())
}

/// Writes `case` into `case_dir` (created if needed) as
/// `SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii[.gz]`, the file of
/// `Modality::ALL[i]` with id `first_file_id + i`. CBF and CBV are multiplied by the
/// case's gains; the 4D series is computed only when `with_pwi`. Every file appears
/// complete or not at all (the writer renames a finished temporary file).
pub fn write_case(
    case_dir: &Path,
    case: &PhantomCase,
    first_file_id: u64,
    gzip: bool,
    with_pwi: bool,
) -> Result<CaseSummary, IoError> {
    std::fs::create_dir_all(case_dir).map_err(|e| IoError::io(case_dir, e))?;
    let ext = if gzip { "nii.gz" } else { "nii" };
    let spacing_mm = case.spacing_mm.map(|v| v as f32);
    let origin_mm = case.origin_mm.map(|v| v as f32);
    let [nx, ny, nz] = case.dims;
    let nxy = nx * ny;
    let mut files = Vec::new();
    let mut bytes_written = 0u64;
    for (slot, modality) in Modality::ALL.into_iter().enumerate() {
        if modality == Modality::Pwi && !with_pwi {
            continue;
        }
        let stem = isles_stem(modality, first_file_id + slot as u64);
        let dir = case_dir.join(&stem);
        std::fs::create_dir_all(&dir).map_err(|e| IoError::io(&dir, e))?;
        let file_name = format!("{stem}.{ext}");
        let path = dir.join(&file_name);
        let dtype = isles_dtype(modality);
        let written = match case.volume(modality) {
            Some(volume) => {
                let mut header = new_header(&case.dims, spacing_mm, origin_mm, dtype)?;
                header.descrip = DESCRIPTION.to_vec();
                let mut w = NiftiWriter::create(&path, &header, dtype)?;
                let gain = case.stored_gain(modality);
                let mut buf = vec![0.0; nxy];
                for slice in volume.chunks(nxy) {
                    if gain == 1.0 {
                        w.write_slice_f64(slice)?;
                    } else {
                        buf.iter_mut().zip(slice).for_each(|(b, &v)| *b = v * gain);
                        w.write_slice_f64(&buf)?;
                    }
                }
                w.finish()?
            }
            None => {
                let nt = case.bolus.n_frames;
                let mut header = new_header(&[nx, ny, nz, 1, nt], spacing_mm, origin_mm, dtype)?;
                header.descrip = DESCRIPTION.to_vec();
                header.pixdim[5] = case.bolus.frame_interval_s as f32;
                let mut w = NiftiWriter::create(&path, &header, dtype)?;
                let series = case.pwi_hu();
                let mut buf = vec![0f32; nxy];
                for plane in series.chunks(nxy) {
                    buf.iter_mut()
                        .zip(plane)
                        .for_each(|(b, &v)| *b = f32::from(v));
                    w.write_slice_f32(&buf)?;
                }
                w.finish()?
            }
        };
        bytes_written += std::fs::metadata(&written)
            .map_err(|e| IoError::io(&written, e))?
            .len();
        files.push(format!("{stem}/{file_name}"));
    }
    let t = &case.truth;
    Ok(CaseSummary {
        case_name: case.case_name(),
        case_index: case.case_index,
        patient: case.patient(),
        patient_index: case.patient_index,
        slab_index: case.slab_index,
        n_slabs: case.n_slabs,
        n_slices: case.n_slices(),
        spacing_mm: case.spacing_mm,
        origin_mm: case.origin_mm,
        lesion_volume_ml: t.lesion_volume_ml,
        core_volume_ml: t.core_volume_ml,
        hypoperfused_volume_ml: t.hypoperfused_volume_ml,
        lesion_site: t
            .lesion_site
            .map(|(h, terr)| format!("{} {}", h.name(), terr.name())),
        cbf_gain: case.cbf_gain,
        cbv_gain: case.cbv_gain,
        files,
        bytes_written,
    })
}

fn is_case_folder(name: &str) -> bool {
    name.strip_prefix("case_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Creates `out_dir`, or clears the `case_N` folders of an earlier phantom dataset there.
/// Refuses a folder that holds `case_N` folders but no `phantom_truth.json` (someone
/// else's data). Other files are left alone.
fn prepare_out_dir(out_dir: &Path) -> Result<(), IoError> {
    if !out_dir.exists() {
        return std::fs::create_dir_all(out_dir).map_err(|e| IoError::io(out_dir, e));
    }
    let is_phantom = out_dir.join(TRUTH_FILE).is_file();
    let entries = std::fs::read_dir(out_dir).map_err(|e| IoError::io(out_dir, e))?;
    let mut stale: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| IoError::io(out_dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name.to_str().is_some_and(is_case_folder) {
            stale.push(path);
        }
    }
    if !stale.is_empty() && !is_phantom {
        return Err(IoError::Dataset {
            path: out_dir.to_path_buf(),
            reason: format!(
                "holds {} case_N folders but no {TRUTH_FILE}: not a phantom dataset, refusing to overwrite",
                stale.len()
            ),
        });
    }
    for dir in stale {
        std::fs::remove_dir_all(&dir).map_err(|e| IoError::io(&dir, e))?;
    }
    Ok(())
}

fn case_json(c: &CaseSummary) -> Value {
    let mut m = Map::new();
    m.insert("case_name".into(), json!(c.case_name));
    m.insert("case_index".into(), json!(c.case_index));
    m.insert("patient".into(), json!(c.patient));
    m.insert("patient_index".into(), json!(c.patient_index));
    m.insert("slab_index".into(), json!(c.slab_index));
    m.insert("n_slabs".into(), json!(c.n_slabs));
    m.insert("n_slices".into(), json!(c.n_slices));
    m.insert("spacing_mm".into(), json!(c.spacing_mm));
    m.insert("origin_mm".into(), json!(c.origin_mm));
    m.insert("lesion_volume_ml".into(), json!(c.lesion_volume_ml));
    m.insert("core_volume_ml".into(), json!(c.core_volume_ml));
    m.insert(
        "hypoperfused_volume_ml".into(),
        json!(c.hypoperfused_volume_ml),
    );
    m.insert("lesion_site".into(), json!(c.lesion_site));
    m.insert("cbf_gain".into(), json!(c.cbf_gain));
    m.insert("cbv_gain".into(), json!(c.cbv_gain));
    m.insert("files".into(), json!(c.files));
    m.insert("bytes_written".into(), json!(c.bytes_written));
    Value::Object(m)
}

/// The summary as JSON (the content of `phantom_truth.json`), with the options used.
pub fn summary_json(summary: &DatasetSummary, opts: &DatasetOptions) -> Value {
    let mut value = classic_summary_json(summary, opts);
    // Only non-classic series are named, so classic datasets keep their bytes.
    if opts.dynamic.exact
        && let Some(options) = value.get_mut("options").and_then(Value::as_object_mut)
    {
        options.insert(
            "dynamic".into(),
            serde_json::to_value(opts.dynamic).unwrap_or(Value::Null),
        );
    }
    value
}

fn classic_summary_json(summary: &DatasetSummary, opts: &DatasetOptions) -> Value {
    json!({
        "generator": "strokeseg phantom",
        "seed": summary.seed,
        "n_cases": summary.n_cases,
        "n_patients": summary.n_patients,
        "n_lesion_free": summary.n_lesion_free,
        "total_slices": summary.total_slices,
        "bytes_written": summary.bytes_written,
        "options": {
            "gzip": opts.gzip,
            "with_pwi": opts.with_pwi,
            "min_slices": opts.min_slices,
            "max_slices": opts.max_slices,
            "lesion_free_fraction": opts.lesion_free_fraction,
            "two_slab_fraction": opts.two_slab_fraction,
            "cbf_gain_range": [opts.cbf_gain_range.0, opts.cbf_gain_range.1],
            "cbv_gain_range": [opts.cbv_gain_range.0, opts.cbv_gain_range.1],
            "first_file_id": opts.first_file_id,
            "anatomy": {
                "template_fraction": opts.anatomy.template_fraction,
                "template": if opts.anatomy.template_fraction > 0.0 {
                    "ICBM 2009a nonlinear symmetric (nilearn 0.14.1)"
                } else {
                    "none"
                },
            },
            "realism": serde_json::to_value(opts.realism).unwrap_or(Value::Null),
        },
        "cases": summary.cases.iter().map(case_json).collect::<Vec<_>>(),
    })
}

/// Generates and writes `opts.n_cases` cases under `out_dir` (`case_1`, …), then
/// `phantom_truth.json` and `patients.csv` (`case,patient`). Cases are generated and
/// written one at a time (memory: one case). An earlier phantom dataset in `out_dir` is
/// replaced; a folder with other `case_N` folders is refused.
pub fn write_dataset(out_dir: &Path, opts: &DatasetOptions) -> Result<DatasetSummary, IoError> {
    let opts = opts.sanitized();
    // A missing brain template is refused before anything is written.
    super::model::template_of(&opts)?;
    prepare_out_dir(out_dir)?;
    // Remove the old summary first: a crash mid-way must not leave a stale one behind.
    let truth_path = out_dir.join(TRUTH_FILE);
    if truth_path.exists() {
        std::fs::remove_file(&truth_path).map_err(|e| IoError::io(&truth_path, e))?;
    }
    let mut cases = Vec::with_capacity(opts.n_cases);
    let mut csv = String::from("case,patient\n");
    for k in 0..opts.n_cases {
        let case = generate_case(opts.seed, k, &opts)?;
        let dir = out_dir.join(case.case_name());
        let first_id = opts.first_file_id + FILE_IDS_PER_CASE * k as u64;
        let summary = write_case(&dir, &case, first_id, opts.gzip, opts.with_pwi)?;
        csv.push_str(&format!("{},{}\n", summary.case_name, summary.patient));
        cases.push(summary);
    }
    let mut patients: Vec<usize> = cases.iter().map(|c| c.patient_index).collect();
    patients.dedup();
    let summary = DatasetSummary {
        seed: opts.seed,
        n_cases: cases.len(),
        n_patients: patients.len(),
        n_lesion_free: cases.iter().filter(|c| c.lesion_volume_ml == 0.0).count(),
        total_slices: cases.iter().map(|c| c.n_slices).sum(),
        bytes_written: cases.iter().map(|c| c.bytes_written).sum(),
        cases,
    };
    write_atomically(&out_dir.join(PATIENTS_FILE), csv.as_bytes())?;
    let text = serde_json::to_string_pretty(&summary_json(&summary, &opts))
        .map_err(|e| IoError::io(&truth_path, std::io::Error::other(e)))?;
    write_atomically(&truth_path, text.as_bytes())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_isles() {
        assert_eq!(
            isles_stem(Modality::Tmax, 345_564),
            "SMIR.Brain.XX.O.CT_Tmax.345564"
        );
        assert!(is_case_folder("case_12"));
        assert!(!is_case_folder("case_"));
        assert!(!is_case_folder("case_1a"));
    }
}
