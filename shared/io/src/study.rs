//! One CTP study (an ISLES 2018 case folder or a plain folder of per-modality files):
//! finding its files, checking they share one grid, and reading them slice by slice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nifti::NiftiHeader;

use super::{GridTolerance, HeaderInfo, IoError, NiftiVolumeReader, ReadLimits, SliceStats};
use strokeseg_shared::brain_mask::compute_brain_mask;
use strokeseg_shared::config::{MAX_CHANNELS, PreprocessConfig};
use strokeseg_shared::modality::Modality;
use strokeseg_shared::preprocess::{GridMap, SliceGeometry, SliceScratch, prepare_model_input};
use strokeseg_shared::stats::{NormParams, VolumeStats};

/// The image files of one case, by modality. Nothing is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFiles {
    /// The case folder.
    pub case_dir: PathBuf,
    /// One file per modality found.
    pub files: BTreeMap<Modality, PathBuf>,
}

fn nifti_stem(file_name: &str) -> Option<&str> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".nii.gz") {
        Some(&file_name[..file_name.len() - 7])
    } else if lower.ends_with(".nii") {
        Some(&file_name[..file_name.len() - 4])
    } else {
        None
    }
}

/// The modality a file or folder name stands for: an ISLES name
/// (`SMIR.Brain.XX.O.CT_CBF.345560`) or a plain one (`CT_CBF`, `cbf`).
pub(crate) fn modality_of_name(name: &str) -> Option<Modality> {
    if let Some(m) = Modality::parse(name) {
        return Some(m);
    }
    // ISLES: SMIR.Brain.XX.O.<MOD>.<id>
    let after = name.split_once(".O.").map(|(_, rest)| rest)?;
    let (tag, id) = after.rsplit_once('.')?;
    if !id.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Modality::parse(tag)
}

impl CaseFiles {
    /// Finds the images of the case in `case_dir`: either ISLES sub-folders
    /// (`SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii`) or files named by
    /// modality directly in the folder (`CT.nii.gz`, `cbf.nii`, ISLES file names).
    /// Unrelated files are ignored; two files for one modality are an error.
    pub fn discover(case_dir: &Path) -> Result<CaseFiles, IoError> {
        let entries = std::fs::read_dir(case_dir).map_err(|e| IoError::io(case_dir, e))?;
        let mut files: BTreeMap<Modality, PathBuf> = BTreeMap::new();
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| IoError::io(case_dir, e))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            names.push((name, path));
        }
        names.sort();
        for (name, path) in names {
            let found = if path.is_dir() {
                modality_of_name(&name)
                    .and_then(|m| Self::file_in_dir(&path, &name).map(|f| (m, f)))
            } else {
                nifti_stem(&name)
                    .and_then(modality_of_name)
                    .map(|m| (m, path.clone()))
            };
            let Some((modality, file)) = found else {
                continue;
            };
            if let Some(first) = files.get(&modality) {
                return Err(IoError::DuplicateModality {
                    case_dir: case_dir.to_path_buf(),
                    modality,
                    first: first.clone(),
                    second: file,
                });
            }
            files.insert(modality, file);
        }
        Ok(CaseFiles {
            case_dir: case_dir.to_path_buf(),
            files,
        })
    }

    /// The NIfTI file inside an ISLES modality folder: the one named like the folder,
    /// else the only NIfTI file there.
    fn file_in_dir(dir: &Path, dir_name: &str) -> Option<PathBuf> {
        for ext in ["nii", "nii.gz"] {
            let p = dir.join(format!("{dir_name}.{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
        let mut niftis = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(nifti_stem)
                        .is_some()
            });
        let first = niftis.next()?;
        niftis.next().is_none().then_some(first)
    }

    /// The file of `modality`, or a [`IoError::MissingModality`] that lists what was found.
    pub fn require(&self, modality: Modality) -> Result<&Path, IoError> {
        self.files
            .get(&modality)
            .map(PathBuf::as_path)
            .ok_or_else(|| IoError::MissingModality {
                case_dir: self.case_dir.clone(),
                modality,
                found: self.found_list(),
            })
    }

    /// The modalities found, comma-separated (for messages).
    pub fn found_list(&self) -> String {
        if self.files.is_empty() {
            return "no NIfTI files".into();
        }
        self.files
            .keys()
            .map(|m| m.isles_tag())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An opened study: one reader per requested channel (and optionally the ground truth),
/// all checked to share one 3D grid. Memory: one slice buffer per open file.
pub struct Study {
    files: CaseFiles,
    channels: Vec<(Modality, NiftiVolumeReader)>,
    truth: Option<NiftiVolumeReader>,
    reference: HeaderInfo,
    reference_header: NiftiHeader,
}

impl Study {
    /// Opens the `channels` of the case in `case_dir` (and its `OT` ground truth when
    /// `with_truth`), validates every header, and checks that all share the grid of the
    /// first channel. Each image must be 3D (a trailing axis of size 1 is accepted).
    pub fn open(
        case_dir: &Path,
        channels: &[Modality],
        with_truth: bool,
    ) -> Result<Study, IoError> {
        let files = CaseFiles::discover(case_dir)?;
        Self::open_files(
            files,
            channels,
            with_truth,
            &ReadLimits::default(),
            GridTolerance::default(),
        )
    }

    /// [`Study::open`] with already discovered files and explicit limits.
    pub fn open_files(
        files: CaseFiles,
        channels: &[Modality],
        with_truth: bool,
        limits: &ReadLimits,
        tol: GridTolerance,
    ) -> Result<Study, IoError> {
        if channels.is_empty() {
            return Err(IoError::Dataset {
                path: files.case_dir.clone(),
                reason: "no channels requested".into(),
            });
        }
        let mut readers = Vec::with_capacity(channels.len());
        for &m in channels {
            let path = files.require(m)?;
            readers.push((m, open_3d(path, limits)?));
        }
        let truth = if with_truth {
            Some(open_3d(files.require(Modality::Ot)?, limits)?)
        } else {
            None
        };
        let (reference, reference_header) = match readers.first() {
            Some((_, r)) => (r.info().clone(), r.header().clone()),
            None => unreachable_empty(&files.case_dir)?,
        };
        for (_, r) in readers.iter().skip(1) {
            reference.check_same_grid(r.info(), tol)?;
        }
        if let Some(t) = &truth {
            reference.check_same_grid(t.info(), tol)?;
        }
        Ok(Study {
            files,
            channels: readers,
            truth,
            reference,
            reference_header,
        })
    }

    /// The case's files.
    pub fn files(&self) -> &CaseFiles {
        &self.files
    }
    /// The validated header of the reference image (the first channel).
    pub fn reference(&self) -> &HeaderInfo {
        &self.reference
    }
    /// The grid a lesion mask of this study is written on: the CT's header when the case
    /// has a CT (checked to share the study's grid), else the reference image's.
    pub fn mask_grid(&self) -> Result<MaskGrid, IoError> {
        match self.files.files.get(&Modality::Ct) {
            Some(ct) => {
                let (header, info) = super::read_header(ct, &ReadLimits::default())?;
                self.reference
                    .check_same_grid(&info, GridTolerance::default())?;
                Ok(MaskGrid {
                    header,
                    path: ct.clone(),
                    from_ct: true,
                })
            }
            None => Ok(MaskGrid {
                header: self.reference_header.clone(),
                path: self.reference.path.clone(),
                from_ct: false,
            }),
        }
    }

    /// The channels, in the order requested.
    pub fn channels(&self) -> impl Iterator<Item = Modality> + '_ {
        self.channels.iter().map(|(m, _)| *m)
    }
    /// Number of channels.
    pub fn n_channels(&self) -> usize {
        self.channels.len()
    }
    /// Number of slices.
    pub fn n_slices(&self) -> usize {
        self.reference.nz()
    }
    /// `(nx, ny)`.
    pub fn slice_shape(&self) -> (usize, usize) {
        (self.reference.nx(), self.reference.ny())
    }
    /// Voxel spacing in millimetres.
    pub fn spacing_mm(&self) -> [f32; 3] {
        self.reference.spacing_mm
    }

    /// Reads slice `slice_idx` of channel `channel_idx` (index into the requested
    /// channels) into `out` (`nx * ny` values).
    pub fn read_channel_slice(
        &mut self,
        channel_idx: usize,
        slice_idx: usize,
        out: &mut [f32],
    ) -> Result<SliceStats, IoError> {
        let n = self.channels.len();
        match self.channels.get_mut(channel_idx) {
            Some((_, r)) => r.read_slice_f32(slice_idx, out),
            None => Err(IoError::SliceOutOfRange {
                path: self.files.case_dir.clone(),
                slice_idx: channel_idx,
                n_slices: n,
            }),
        }
    }

    /// Reads slice `slice_idx` of the ground truth (0/1) into `out`; an error if the study
    /// was opened without truth.
    pub fn read_truth_slice(
        &mut self,
        slice_idx: usize,
        out: &mut [f32],
    ) -> Result<SliceStats, IoError> {
        match self.truth.as_mut() {
            Some(r) => r.read_slice_f32(slice_idx, out),
            None => Err(IoError::MissingModality {
                case_dir: self.files.case_dir.clone(),
                modality: Modality::Ot,
                found: "study opened without ground truth".into(),
            }),
        }
    }
}

/// The header an output mask copies ([`Study::mask_grid`]), and where it came from.
#[derive(Debug, Clone)]
pub struct MaskGrid {
    /// Geometry to write with (dims, pixdim, qform, sform, units); give it to
    /// [`crate::NiftiWriter::create`].
    pub header: NiftiHeader,
    /// The file it was read from.
    pub path: PathBuf,
    /// Whether that file is the case's CT (else the reference channel: no CT in the case).
    pub from_ct: bool,
}

/// What pass 1 over a study found.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyStats {
    /// Per-channel statistics over the brain voxels of the whole volume.
    pub volume: VolumeStats,
    /// Non-finite voxels replaced by 0, per channel (config order).
    pub non_finite_per_channel: Vec<usize>,
    /// The normalisation of each channel that pass 2 applies.
    pub norm: NormParams,
}

impl Study {
    /// Pass 1: streams every slice of every channel once and gathers the per-volume
    /// statistics inside the brain mask. Memory: one slice per channel plus the fixed-size
    /// statistics, whatever the number of slices. Fails when the volume has no brain
    /// voxels or a channel is constant inside the brain (nothing to normalise).
    ///
    /// The study must have been opened with `config`'s channels, in order.
    pub fn gather_stats(&mut self, config: &PreprocessConfig) -> Result<StudyStats, IoError> {
        let case_dir = self.files.case_dir.clone();
        let core = |source| IoError::Preprocess {
            path: case_dir.clone(),
            source,
        };
        let wanted: Vec<Modality> = config.channels.iter().map(|c| c.modality).collect();
        let have: Vec<Modality> = self.channels().collect();
        if wanted != have {
            return Err(IoError::Dataset {
                path: case_dir.clone(),
                reason: format!("study opened with channels {have:?}, config needs {wanted:?}"),
            });
        }
        let n = self.reference.slice_voxels();
        let mut slices = vec![vec![0f32; n]; wanted.len()];
        let mut brain = vec![0u8; n];
        let mut volume = VolumeStats::new(wanted.len()).map_err(core)?;
        let mut non_finite_per_channel = vec![0usize; wanted.len()];
        for z in 0..self.n_slices() {
            for (c, buf) in slices.iter_mut().enumerate() {
                non_finite_per_channel[c] += self.read_channel_slice(c, z, buf)?.non_finite;
            }
            let views: Vec<&[f32]> = slices.iter().map(Vec::as_slice).collect();
            compute_brain_mask(config, &views, &mut brain).map_err(core)?;
            volume.add_slice(&views, &brain).map_err(core)?;
        }
        let norm = volume.norm_params(config).map_err(core)?;
        Ok(StudyStats {
            volume,
            non_finite_per_channel,
            norm,
        })
    }
}

/// Pass 2, one slice at a time: reads every channel of a slice and turns it into the model
/// input with [`prepare_model_input`]. Trainer, exporter and edge runtime all prepare slices
/// through this one type. Memory: one raw slice per channel plus the brain mask and one
/// normalised channel, sized once per study and reused for every slice.
pub struct SlicePreparer {
    config: PreprocessConfig,
    norm: NormParams,
    map: GridMap,
    raw: Vec<Vec<f32>>,
    brain: Vec<u8>,
    normalized: Vec<f32>,
}

impl SlicePreparer {
    /// Buffers for `study` (opened with `config`'s channels) and the normalisation found by
    /// pass 1 ([`Study::gather_stats`]).
    pub fn new(
        study: &Study,
        config: &PreprocessConfig,
        norm: NormParams,
    ) -> Result<Self, IoError> {
        let (nx, ny) = study.slice_shape();
        let [sx, sy, _] = study.spacing_mm();
        let geometry = SliceGeometry {
            nx,
            ny,
            spacing_x_mm: sx,
            spacing_y_mm: sy,
        };
        let map = GridMap::new(geometry, config).map_err(|source| IoError::Preprocess {
            path: study.files.case_dir.clone(),
            source,
        })?;
        let n = geometry.len();
        Ok(SlicePreparer {
            config: config.clone(),
            norm,
            map,
            raw: vec![vec![0f32; n]; study.n_channels()],
            brain: vec![0u8; n],
            normalized: vec![0f32; n],
        })
    }

    /// The map between the image grid and the model grid.
    pub fn map(&self) -> &GridMap {
        &self.map
    }

    /// Reads slice `slice_idx` of every channel and writes the model input `[C, H, W]` into
    /// `out`; returns the slice's brain voxel count.
    pub fn prepare(
        &mut self,
        study: &mut Study,
        slice_idx: usize,
        out: &mut [f32],
    ) -> Result<usize, IoError> {
        for (c, buf) in self.raw.iter_mut().enumerate() {
            // The reader replaces NaN/±inf by 0 (and counts them) as it reads.
            study.read_channel_slice(c, slice_idx, buf)?;
        }
        let mut views: heapless::Vec<&[f32], MAX_CHANNELS> = heapless::Vec::new();
        for r in &self.raw {
            views.push(r.as_slice()).map_err(|_| IoError::Preprocess {
                path: study.files.case_dir.clone(),
                source: strokeseg_shared::CoreError::ChannelCount {
                    expected: MAX_CHANNELS,
                    got: self.raw.len(),
                },
            })?;
        }
        prepare_model_input(
            &self.config,
            &self.norm,
            &self.map,
            &views,
            SliceScratch {
                brain_mask: &mut self.brain,
                normalized: &mut self.normalized,
            },
            out,
        )
        .map_err(|source| IoError::Preprocess {
            path: study.files.case_dir.clone(),
            source,
        })
    }

    /// The raw values (image grid) of channel `idx` of the last prepared slice.
    pub fn raw_channel(&self, idx: usize) -> Option<&[f32]> {
        self.raw.get(idx).map(Vec::as_slice)
    }

    /// The brain mask (image grid) of the last prepared slice.
    pub fn brain_mask(&self) -> &[u8] {
        &self.brain
    }
}

fn unreachable_empty<T>(case_dir: &Path) -> Result<T, IoError> {
    Err(IoError::Dataset {
        path: case_dir.to_path_buf(),
        reason: "no channels requested".into(),
    })
}

fn open_3d(path: &Path, limits: &ReadLimits) -> Result<NiftiVolumeReader, IoError> {
    let r = NiftiVolumeReader::open_with_limits(path, limits)?;
    let dims = &r.info().dims;
    if dims.len() < 3 || dims.iter().skip(3).any(|&d| d != 1) {
        return Err(IoError::WrongDimensionality {
            path: path.to_path_buf(),
            expected: "3D volume",
            dims: dims.clone(),
        });
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_modalities() {
        assert_eq!(
            modality_of_name("SMIR.Brain.XX.O.CT_CBF.345560"),
            Some(Modality::Cbf)
        );
        assert_eq!(
            modality_of_name("SMIR.Brain.XX.O.CT_4DPWI.12"),
            Some(Modality::Pwi)
        );
        assert_eq!(modality_of_name("SMIR.Brain.XX.O.OT.7"), Some(Modality::Ot));
        assert_eq!(modality_of_name("tmax"), Some(Modality::Tmax));
        assert_eq!(modality_of_name("SMIR.Brain.XX.O.DWI.7"), None);
        assert_eq!(modality_of_name("notes"), None);
        assert_eq!(nifti_stem("a.NII.GZ"), Some("a"));
        assert_eq!(nifti_stem("a.txt"), None);
    }
}
