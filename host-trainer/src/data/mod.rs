//! Training data in memory: every slice of every case, preprocessed by the shared code into
//! model inputs `[N, C, H, W]` and labels `[N, H, W]` on the training device, plus what
//! case-level (ISLES-style) validation needs: each case's grid map, its ground truth and its
//! brain mask on the original grid.
//!
//! Per case, exactly the path the edge runtime takes: `Study::open_files` with the config's
//! channels → `Study::gather_stats` (pass 1, per-volume normalisation) → per slice
//! `prepare_model_input` (pass 2). Labels are the `OT` slice (nonzero = lesion) mapped with
//! `GridMap::image_to_model_nearest`. Nothing here re-implements preprocessing. A config
//! whose `maps` are computed reads each case's maps from [`maps`] (computed from its
//! `CT_4DPWI` by the edge's function, cached on disk).
//!
//! Memory: `N · (C + 1) · H · W` values on the device (ISLES 2018: 502 slices of 5 × 160 × 160,
//! about 260 MB in f32) plus the truth and the brain mask of every case on its original grid
//! in host memory (`2 · Σ nx · ny · nz` bytes, 66 MB for ISLES).

pub mod folds;
pub mod maps;
pub mod sampler;

use std::path::{Path, PathBuf};

use strokeseg_io::{
    Dataset, DatasetCase, GridTolerance, PatientGrouping, ReadLimits, SlicePreparer, Study,
};
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::modality::Modality;
use strokeseg_shared::preprocess::{GridMap, SliceGeometry};
use tch::{Device, Kind, Tensor};

use crate::error::TrainError;

pub use folds::{FoldPlan, assign_folds};
pub use sampler::{LesionSampler, LesionSlice};

/// One case held in memory.
#[derive(Debug, Clone)]
pub struct CaseData {
    /// Case folder name (`case_12`).
    pub name: String,
    /// Patient label (two slabs of one patient share it).
    pub patient: String,
    /// The case folder.
    pub case_dir: PathBuf,
    /// Index of the case's first slice in [`LoadedDataset::inputs`].
    pub first_slice: usize,
    /// Number of slices (the volume's `nz`).
    pub n_slices: usize,
    /// The in-plane image grid.
    pub geometry: SliceGeometry,
    /// The map between the image grid and the model grid.
    pub map: GridMap,
    /// Voxel spacing of the original grid `[x, y, z]`, mm (surface distances).
    pub spacing_mm: [f32; 3],
    /// Volume of one image voxel, mm³.
    pub voxel_volume_mm3: f64,
    /// Ground truth on the original grid, `[n_slices, ny, nx]`, 1 = lesion, 0 = background.
    pub truth: Vec<u8>,
    /// The shared brain mask on the original grid, `[n_slices, ny, nx]`, 1 = brain: lesion
    /// masks are restricted to it, in validation as in the edge runtime.
    pub brain: Vec<u8>,
}

impl CaseData {
    /// The global slice indices of this case.
    pub fn slice_range(&self) -> std::ops::Range<usize> {
        self.first_slice..self.first_slice + self.n_slices
    }

    /// Lesion voxels in the ground truth on the original grid.
    pub fn true_lesion_voxels(&self) -> u64 {
        self.truth.iter().filter(|&&v| v != 0).count() as u64
    }
}

/// A whole dataset, preprocessed, on one device.
#[derive(Debug)]
pub struct LoadedDataset {
    /// The dataset folder.
    pub root: PathBuf,
    /// The preprocessing every slice went through.
    pub config: PreprocessConfig,
    /// The cases, in dataset order (by case number).
    pub cases: Vec<CaseData>,
    /// Model inputs `[N, C, H, W]`, f32, on the device.
    pub inputs: Tensor,
    /// Labels on the model grid `[N, H, W]`, u8 (0 background, 1 lesion), on the device.
    pub labels: Tensor,
    /// Lesion pixels of each slice on the model grid (length N).
    pub lesion_pixels: Vec<u64>,
}

impl LoadedDataset {
    /// Number of slices.
    pub fn n_slices(&self) -> usize {
        self.lesion_pixels.len()
    }

    /// `(height, width)` of the model grid.
    pub fn model_size(&self) -> (usize, usize) {
        (
            usize::from(self.config.input_height),
            usize::from(self.config.input_width),
        )
    }

    /// Global slice indices of the given cases, in order.
    pub fn slices_of(&self, case_indices: &[usize]) -> Vec<usize> {
        case_indices
            .iter()
            .filter_map(|&i| self.cases.get(i))
            .flat_map(CaseData::slice_range)
            .collect()
    }

    /// Background and lesion pixel counts over the given slices on the model grid
    /// (zero padding counts as background).
    pub fn class_counts(&self, slices: &[usize]) -> [u64; 2] {
        let plane = (self.config.input_plane_len()) as u64;
        let lesion: u64 = slices
            .iter()
            .filter_map(|&s| self.lesion_pixels.get(s))
            .sum();
        let total = plane * slices.len() as u64;
        [total.saturating_sub(lesion), lesion]
    }

    /// Index of the case named `name`.
    pub fn case_index(&self, name: &str) -> Option<usize> {
        self.cases.iter().position(|c| c.name == name)
    }
}

/// The modalities of the config's channels, in order.
pub fn channel_modalities(config: &PreprocessConfig) -> Vec<Modality> {
    config.channels.iter().map(|c| c.modality).collect()
}

/// What [`prepare_case`] returns: model inputs and, with truth, labels and the original truth.
struct PreparedCase {
    geometry: SliceGeometry,
    map: GridMap,
    spacing_mm: [f32; 3],
    voxel_volume_mm3: f64,
    n_slices: usize,
    /// `[n_slices, C, H, W]` row-major.
    inputs: Vec<f32>,
    /// `[n_slices, H, W]` (empty without truth).
    labels: Vec<u8>,
    /// `[n_slices, ny, nx]` (empty without truth).
    truth: Vec<u8>,
    /// `[n_slices, ny, nx]`: the brain mask of each slice.
    brain: Vec<u8>,
}

/// Opens one case and runs the shared two-pass preprocessing over all its slices. With
/// `max_slices`, stops after that many slices. Memory: one slice per channel plus the outputs.
fn prepare_case(
    case: &DatasetCase,
    config: &PreprocessConfig,
    with_truth: bool,
    max_slices: Option<usize>,
) -> Result<PreparedCase, TrainError> {
    let case_dir = case.files.case_dir.clone();
    let core = |source| TrainError::Preprocess {
        case_dir: case_dir.clone(),
        source,
    };
    let channels = channel_modalities(config);
    let files = maps::case_files(&case.files, config.maps, &maps::cache_dir())?;
    let mut study = Study::open_files(
        files,
        &channels,
        with_truth,
        &ReadLimits::default(),
        GridTolerance::default(),
    )?;
    let stats = study.gather_stats(config)?;
    let (nx, ny) = study.slice_shape();
    let spacing_mm = study.spacing_mm();
    let geometry = SliceGeometry {
        nx,
        ny,
        spacing_x_mm: spacing_mm[0],
        spacing_y_mm: spacing_mm[1],
    };
    let mut preparer = SlicePreparer::new(&study, config, stats.norm)?;
    let map = *preparer.map();
    let voxel_volume_mm3 = study.reference().voxel_volume_mm3();
    let n_slices = max_slices.map_or(study.n_slices(), |m| m.min(study.n_slices()));
    let plane = config.input_plane_len();
    let n_channels = config.n_channels();
    let image_len = geometry.len();

    let mut model_input = vec![0f32; n_channels * plane];
    let mut truth_f32 = vec![0f32; image_len];
    let mut truth_u8 = vec![0u8; image_len];
    let mut label_model = vec![0u8; plane];

    let mut inputs = Vec::with_capacity(n_slices * n_channels * plane);
    let mut labels = Vec::with_capacity(if with_truth { n_slices * plane } else { 0 });
    let mut truth = Vec::with_capacity(if with_truth { n_slices * image_len } else { 0 });
    let mut brain = Vec::with_capacity(n_slices * image_len);
    for slice_idx in 0..n_slices {
        preparer.prepare(&mut study, slice_idx, &mut model_input)?;
        inputs.extend_from_slice(&model_input);
        brain.extend_from_slice(preparer.brain_mask());
        if with_truth {
            study.read_truth_slice(slice_idx, &mut truth_f32)?;
            for (t, &v) in truth_u8.iter_mut().zip(&truth_f32) {
                *t = u8::from(v != 0.0);
            }
            map.image_to_model_nearest(&truth_u8, &mut label_model)
                .map_err(core)?;
            labels.extend_from_slice(&label_model);
            truth.extend_from_slice(&truth_u8);
        }
    }
    Ok(PreparedCase {
        geometry,
        map,
        spacing_mm,
        voxel_volume_mm3,
        n_slices,
        inputs,
        labels,
        truth,
        brain,
    })
}

/// The dataset at `data_dir` of `n_cases` cases described for the model card: `phantom
/// seed S, family F, N cases` for a phantom dataset (its `phantom_truth.json` names the seed
/// and the options; the family is left out when the options match none), else `<folder
/// name>, N cases`.
pub fn describe(data_dir: &Path, n_cases: usize) -> String {
    let truth = std::fs::read_to_string(data_dir.join(strokeseg_phantom::TRUTH_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let seed = truth
        .as_ref()
        .and_then(|v| v.get("seed").and_then(serde_json::Value::as_u64));
    let family = truth.as_ref().and_then(|v| {
        let options = v.get("options")?;
        let fraction = options.get("anatomy")?.get("template_fraction")?.as_f64()?;
        let realism: strokeseg_phantom::Realism =
            serde_json::from_value(options.get("realism")?.clone()).ok()?;
        strokeseg_phantom::Family::matching(fraction, &realism)
    });
    if let (Some(seed), Some(family)) = (seed, family) {
        return format!(
            "phantom seed {seed}, family {}, {n_cases} cases",
            family.name()
        );
    }
    match seed {
        Some(seed) => format!("phantom seed {seed}, {n_cases} cases"),
        None => {
            let name = data_dir.file_name().map_or_else(
                || data_dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            format!("{name}, {n_cases} cases")
        }
    }
}

/// Reads the dataset at `data_dir` with `grouping` (the two-slab heuristic by default; a
/// `case,patient` CSV when known).
pub fn discover(data_dir: &Path, grouping: &PatientGrouping) -> Result<Dataset, TrainError> {
    Ok(Dataset::discover(data_dir, grouping)?)
}

/// Preprocesses every case of `dataset` (with ground truth) and moves the result to `device`.
/// `on_case(i, n, name)` is called before each case (progress).
pub fn load_dataset(
    dataset: &Dataset,
    config: &PreprocessConfig,
    device: Device,
    mut on_case: impl FnMut(usize, usize, &str),
) -> Result<LoadedDataset, TrainError> {
    config.validate().map_err(|source| TrainError::Preprocess {
        case_dir: dataset.root.clone(),
        source,
    })?;
    let n_channels = config.n_channels() as i64;
    let (height, width) = (
        i64::from(config.input_height),
        i64::from(config.input_width),
    );
    let plane = config.input_plane_len();
    let mut cases = Vec::with_capacity(dataset.cases.len());
    let mut input_parts = Vec::with_capacity(dataset.cases.len());
    let mut label_parts = Vec::with_capacity(dataset.cases.len());
    let mut lesion_pixels = Vec::new();
    let mut first_slice = 0;
    for (i, case) in dataset.cases.iter().enumerate() {
        on_case(i, dataset.cases.len(), &case.name);
        let prepared = prepare_case(case, config, true, None)?;
        let n = prepared.n_slices as i64;
        input_parts.push(
            Tensor::f_from_slice(&prepared.inputs)?.f_reshape([n, n_channels, height, width])?,
        );
        label_parts.push(Tensor::f_from_slice(&prepared.labels)?.f_reshape([n, height, width])?);
        lesion_pixels.extend(
            prepared
                .labels
                .chunks_exact(plane)
                .map(|s| s.iter().filter(|&&v| v != 0).count() as u64),
        );
        cases.push(CaseData {
            name: case.name.clone(),
            patient: case.patient.clone(),
            case_dir: case.files.case_dir.clone(),
            first_slice,
            n_slices: prepared.n_slices,
            geometry: prepared.geometry,
            map: prepared.map,
            spacing_mm: prepared.spacing_mm,
            voxel_volume_mm3: prepared.voxel_volume_mm3,
            truth: prepared.truth,
            brain: prepared.brain,
        });
        first_slice += prepared.n_slices;
    }
    if first_slice == 0 {
        return Err(TrainError::EmptyDataset {
            path: dataset.root.clone(),
            reason: "the cases hold no slices".into(),
        });
    }
    let inputs = Tensor::f_cat(&input_parts, 0)?.f_to_device(device)?;
    let labels = Tensor::f_cat(&label_parts, 0)?.f_to_device(device)?;
    Ok(LoadedDataset {
        root: dataset.root.clone(),
        config: config.clone(),
        cases,
        inputs,
        labels,
        lesion_pixels,
    })
}

/// Up to `max_slices` preprocessed model inputs `[N, C, H, W]` (f32, CPU) from the dataset at
/// `data_dir`, for int8 calibration of an exported model.
///
/// Cases are taken in dataset order (by case number) and every slice of a case is used, until
/// `max_slices` is reached; no ground truth is read, so unlabelled studies work too. The
/// inputs are exactly what training and the edge runtime feed the model (the shared two-pass
/// preprocessing with `config`). Fails when the folder has no cases or `max_slices` is 0.
pub fn load_training_slices(
    data_dir: &Path,
    config: &PreprocessConfig,
    max_slices: usize,
) -> Result<Tensor, TrainError> {
    if max_slices == 0 {
        return Err(TrainError::config("max_slices must be at least 1"));
    }
    config.validate().map_err(|source| TrainError::Preprocess {
        case_dir: data_dir.to_path_buf(),
        source,
    })?;
    let dataset = Dataset::discover(data_dir, &PatientGrouping::OnePerCase)?;
    let (n_channels, height, width) = (
        config.n_channels() as i64,
        i64::from(config.input_height),
        i64::from(config.input_width),
    );
    let mut parts = Vec::new();
    let mut n_total = 0usize;
    for case in &dataset.cases {
        if n_total >= max_slices {
            break;
        }
        let prepared = prepare_case(case, config, false, Some(max_slices - n_total))?;
        let n = prepared.n_slices as i64;
        parts.push(
            Tensor::f_from_slice(&prepared.inputs)?.f_reshape([n, n_channels, height, width])?,
        );
        n_total += prepared.n_slices;
    }
    if n_total == 0 {
        return Err(TrainError::EmptyDataset {
            path: data_dir.to_path_buf(),
            reason: "the cases hold no slices".into(),
        });
    }
    Ok(Tensor::f_cat(&parts, 0)?.f_to_kind(Kind::Float)?)
}
