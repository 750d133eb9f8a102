//! The raw dynamic CT perfusion series (`CT_4DPWI`): 4D NIfTI-1 in the layouts ISLES uses
//! (`X, Y, Z, T` and `X, Y, Z, 1, T`), its frame timing, slice-by-slice reading of all
//! frames of one slice, and the computation of CBF, CBV, MTT and Tmax from it with
//! `strokeseg_shared::perfusion`.
//!
//! Memory: one plane of raw bytes plus what the caller's slice buffer holds
//! (`n_frames · nx · ny` f32). An uncompressed file is read by seeking; a `.nii.gz` is
//! decompressed once into an uncompressed temporary file (in [`DynamicOptions::spool_dir`]
//! or the system's temporary folder, removed when the series is dropped) instead of being
//! held in memory or re-streamed for every slice.

use std::path::{Path, PathBuf};

use strokeseg_shared::CoreError;
use strokeseg_shared::perfusion::PerfusionConfig;
use strokeseg_shared::perfusion::TimeGrid;
use strokeseg_shared::perfusion::maps::SliceMaps;
use strokeseg_shared::perfusion::study::{
    DynamicSource, PerfusionSummary, StudyError, compute_perfusion,
};

use super::header::{open_stream, stream_error};
use super::{GridTolerance, HeaderInfo, IoError, NiftiVolumeReader, ReadLimits, read_header};

/// NIfTI `xyzt_units` time codes (bits 3–5).
const UNITS_TIME_MASK: u8 = 0x38;
const UNITS_SEC: u8 = 8;
const UNITS_MSEC: u8 = 16;
const UNITS_USEC: u8 = 24;

/// Where the frame timing comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FrameInterval {
    /// The header: the time axis' `pixdim` (`pixdim[4]` for `X, Y, Z, T`; `pixdim[5]` for
    /// `X, Y, Z, 1, T`, or `pixdim[4]` when that is not positive) in the `xyzt_units` time
    /// unit (seconds when unset).
    #[default]
    FromHeader,
    /// A given interval, s (a header without or with a wrong interval).
    Seconds(f32),
    /// Given acquisition times of every frame, s (e.g. from DICOM); they must increase and
    /// be uniform.
    FrameTimes(Vec<f32>),
}

/// How a dynamic series is opened.
#[derive(Debug, Clone, Default)]
pub struct DynamicOptions {
    /// Frame timing.
    pub frame_interval: FrameInterval,
    /// Folder for the uncompressed copy of a `.nii.gz` (default: the system's temporary
    /// folder).
    pub spool_dir: Option<PathBuf>,
    /// Header limits.
    pub limits: ReadLimits,
}

/// The axis layout of the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicLayout {
    /// `[nx, ny, nz, nt]`.
    Xyzt,
    /// `[nx, ny, nz, 1, nt]` (ISLES 2018 `CT_4DPWI`).
    Xyz1t,
}

/// An opened, validated dynamic series.
pub struct DynamicSeries {
    path: PathBuf,
    reader: NiftiVolumeReader,
    info: HeaderInfo,
    grid: TimeGrid,
    layout: DynamicLayout,
    spooled: Option<tempfile::TempPath>,
}

impl std::fmt::Debug for DynamicSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicSeries")
            .field("path", &self.path)
            .field("dims", &self.info.dims)
            .field("grid", &self.grid)
            .field("layout", &self.layout)
            .field("spooled", &self.spooled.as_ref().map(|p| p.to_path_buf()))
            .finish()
    }
}

fn perfusion_error(path: &Path, source: CoreError) -> IoError {
    IoError::Perfusion {
        path: path.to_path_buf(),
        source,
    }
}

impl DynamicSeries {
    /// Opens `path` (`.nii` or `.nii.gz`, detected from the content): validates the header
    /// and the layout, works out the frame grid and, for gzip, spools the series once to
    /// an uncompressed temporary file.
    pub fn open(path: &Path, options: &DynamicOptions) -> Result<DynamicSeries, IoError> {
        let (header, info) = read_header(path, &options.limits)?;
        let (layout, n_frames) = match info.dims.as_slice() {
            [_, _, _, nt] => (DynamicLayout::Xyzt, *nt),
            [_, _, _, 1, nt] => (DynamicLayout::Xyz1t, *nt),
            _ => {
                return Err(IoError::WrongDimensionality {
                    path: path.to_path_buf(),
                    expected: "4D series (X, Y, Z, T) or (X, Y, Z, 1, T)",
                    dims: info.dims.clone(),
                });
            }
        };
        let grid = match &options.frame_interval {
            FrameInterval::FromHeader => {
                let axis = match layout {
                    DynamicLayout::Xyzt => 4,
                    DynamicLayout::Xyz1t => 5,
                };
                let positive = |v: f32| v.is_finite() && v > 0.0;
                let raw = Some(header.pixdim[axis])
                    .filter(|&v| positive(v))
                    .unwrap_or(header.pixdim[4]);
                let scale = match header.xyzt_units & UNITS_TIME_MASK {
                    UNITS_MSEC => 1e-3,
                    UNITS_USEC => 1e-6,
                    UNITS_SEC | 0 => 1.0,
                    other => {
                        return Err(IoError::InvalidHeader {
                            path: path.to_path_buf(),
                            field: "xyzt_units",
                            reason: format!(
                                "time unit code {other} is not seconds, ms or µs (Hz/ppm/rad/s series are not dynamic CT); give the frame interval explicitly"
                            ),
                        });
                    }
                };
                TimeGrid::new(n_frames, raw * scale)
            }
            FrameInterval::Seconds(dt_s) => TimeGrid::new(n_frames, *dt_s),
            FrameInterval::FrameTimes(times) => {
                if times.len() != n_frames {
                    return Err(IoError::BufferSize {
                        path: path.to_path_buf(),
                        expected: n_frames,
                        got: times.len(),
                    });
                }
                TimeGrid::from_frame_times(times)
            }
        }
        .map_err(|e| perfusion_error(path, e))?;

        let (reader, spooled) = if info.compressed {
            let spooled = spool(path, options.spool_dir.as_deref())?;
            let mut reader = NiftiVolumeReader::open_with_limits(&spooled, &options.limits)?;
            reader.set_display_path(path);
            (reader, Some(spooled))
        } else {
            (
                NiftiVolumeReader::open_with_limits(path, &options.limits)?,
                None,
            )
        };
        Ok(DynamicSeries {
            path: path.to_path_buf(),
            reader,
            info,
            grid,
            layout,
            spooled,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The validated header (of the original file).
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }
    /// The frame grid.
    pub fn grid(&self) -> TimeGrid {
        self.grid
    }
    /// The axis layout.
    pub fn layout(&self) -> DynamicLayout {
        self.layout
    }
    /// The uncompressed temporary copy of a `.nii.gz` (`None` for `.nii`).
    pub fn spooled_path(&self) -> Option<&Path> {
        self.spooled.as_deref()
    }

    /// Refuses a series that is not on the grid of the study's `ct` (dims, spacing,
    /// affine within `tol`): the maps are written on the CT's grid.
    pub fn check_grid(&self, ct: &HeaderInfo, tol: GridTolerance) -> Result<(), IoError> {
        ct.check_same_grid(&self.info, tol)
    }

    /// Reads all frames of slice `slice_idx` into `frames` (`[n_frames][ny][nx]`, HU after
    /// `scl_slope`/`scl_inter`). NaN or ±inf values are refused, naming slice and frame.
    pub fn read_slice_frames(
        &mut self,
        slice_idx: usize,
        frames: &mut [f32],
    ) -> Result<(), IoError> {
        let nxy = self.info.slice_voxels();
        let n = self.grid.n_frames;
        if frames.len() != n * nxy {
            return Err(IoError::BufferSize {
                path: self.path.clone(),
                expected: n * nxy,
                got: frames.len(),
            });
        }
        for (frame_idx, plane) in frames.chunks_mut(nxy).enumerate() {
            let stats = self
                .reader
                .read_series_slice_f32(frame_idx, slice_idx, plane)?;
            if stats.non_finite > 0 {
                return Err(IoError::NonFiniteVoxels {
                    path: self.path.clone(),
                    slice_idx,
                    frame_idx,
                    count: stats.non_finite,
                });
            }
        }
        Ok(())
    }

    /// Computes the study's perfusion maps (two passes, slice by slice; see
    /// `strokeseg_shared::perfusion::study`), handing each slice's maps to `sink`. Errors of
    /// the computation (no bolus, frame jumps, …) name this file.
    pub fn compute_maps<F>(
        &mut self,
        config: &PerfusionConfig,
        sink: F,
    ) -> Result<PerfusionSummary, IoError>
    where
        F: FnMut(usize, &SliceMaps<'_>) -> Result<(), IoError>,
    {
        let path = self.path.clone();
        compute_perfusion(self, config, sink).map_err(|e| match e {
            StudyError::Source(e) => e,
            StudyError::Core(e) => perfusion_error(&path, e),
        })
    }
}

impl DynamicSource for DynamicSeries {
    type Error = IoError;
    fn dims(&self) -> [usize; 3] {
        [self.info.nx(), self.info.ny(), self.info.nz()]
    }
    fn grid(&self) -> TimeGrid {
        self.grid
    }
    fn read_slice(&mut self, slice_idx: usize, frames: &mut [f32]) -> Result<(), IoError> {
        self.read_slice_frames(slice_idx, frames)
    }
}

/// Decompresses the gzip file at `path` into a new temporary file in `dir` (or the system's
/// temporary folder); the file is removed when the returned path is dropped.
fn spool(path: &Path, dir: Option<&Path>) -> Result<tempfile::TempPath, IoError> {
    let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let mut tmp = tempfile::Builder::new()
        .prefix("strokeseg-4d-")
        .suffix(".nii")
        .tempfile_in(&dir)
        .map_err(|e| IoError::io(&dir, e))?;
    let (mut stream, _, _) = open_stream(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(path, true, e)),
        };
        std::io::Write::write_all(tmp.as_file_mut(), &buf[..n])
            .map_err(|e| IoError::io(tmp.path(), e))?;
    }
    Ok(tmp.into_temp_path())
}
