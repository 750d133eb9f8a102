//! The entry point: a study's dynamic series → CBF, CBV, MTT and Tmax, slice by slice, in
//! two passes over a [`DynamicSource`] (each slice read twice, one slice in memory):
//! pass 1 checks every slice (finite values, no frame jumps) and searches the AIF and VOF
//! over the whole study; pass 2 computes each slice's maps and hands them to a sink.

use alloc::vec;
use alloc::vec::Vec;

use super::PerfusionConfig;
use super::aif::{ArterialInput, ArterialSearch, PerfusionWarning};
use super::curve::TimeGrid;
use super::maps::{HEAD_MIN_HU, SliceMaps, SliceProcessor, check_slice};
use crate::error::CoreError;

/// A dynamic series that can be read one slice (all frames) at a time.
pub trait DynamicSource {
    /// Why a slice could not be read.
    type Error;
    /// `[nx, ny, nz]`.
    fn dims(&self) -> [usize; 3];
    /// The frame grid.
    fn grid(&self) -> TimeGrid;
    /// Reads slice `slice_idx` into `frames`, `[n_frames][ny][nx]` in HU.
    fn read_slice(&mut self, slice_idx: usize, frames: &mut [f32]) -> Result<(), Self::Error>;
}

/// Why a study's maps could not be computed: the source failed, or the core refused.
#[derive(Debug, thiserror::Error)]
pub enum StudyError<E> {
    /// Reading the series failed.
    #[error(transparent)]
    Source(E),
    /// The series cannot give meaningful maps.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// What a study's computation found besides the maps.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfusionSummary {
    /// The frame grid.
    pub grid: TimeGrid,
    /// The configuration used.
    pub config: PerfusionConfig,
    /// AIF and VOF: voxels, curves, partial-volume scale, baseline window.
    pub arterial: ArterialInput,
    /// Conditions under which the maps were still computed.
    pub warnings: Vec<PerfusionWarning>,
    /// Voxels inside the tissue mask over all slices.
    pub n_tissue_voxels: u64,
}

/// Computes the maps of the study in `source`, handing each slice to `sink(slice_idx, maps)`
/// in order. Memory: one slice of frames (`n_frames · nx · ny` f32) plus the buffers of
/// [`SliceProcessor`] and [`ArterialSearch`], independent of `nz`.
pub fn compute_perfusion<S, F>(
    source: &mut S,
    config: &PerfusionConfig,
    mut sink: F,
) -> Result<PerfusionSummary, StudyError<S::Error>>
where
    S: DynamicSource,
    F: FnMut(usize, &SliceMaps<'_>) -> Result<(), S::Error>,
{
    config.validate()?;
    let grid = source.grid();
    let grid = TimeGrid::new(grid.n_frames, grid.dt_s)?;
    let [nx, ny, nz] = source.dims();
    let nxy = nx * ny;
    let n = grid.n_frames;
    let mut frames = vec![0.0f32; n * nxy];
    let mut diffs = vec![0.0f32; n];
    let mut mean = vec![0.0f32; n];
    let mut curve = vec![0.0f32; n];
    let mut search = ArterialSearch::new(
        config.arterial,
        grid,
        config.skip_frames,
        config.baseline_margin_s,
    )?;
    let (lo, hi) = config.arterial.baseline_hu;
    for z in 0..nz {
        source
            .read_slice(z, &mut frames)
            .map_err(StudyError::Source)?;
        check_slice(z, &frames, nxy, &grid, config.motion_factor, &mut diffs)?;
        let first = &frames[..nxy];
        let mut count = 0usize;
        mean.iter_mut().for_each(|m| *m = 0.0);
        for (v, _) in first
            .iter()
            .enumerate()
            .filter(|(_, f)| (lo..=hi).contains(*f))
        {
            count += 1;
            for (k, m) in mean.iter_mut().enumerate() {
                *m += frames[k * nxy + v];
            }
        }
        if count == 0 {
            continue;
        }
        mean.iter_mut().for_each(|m| *m /= count as f32);
        let window = search.provisional_window(&mean);
        for v in 0..nxy {
            if first[v] <= HEAD_MIN_HU {
                continue;
            }
            for (k, c) in curve.iter_mut().enumerate() {
                *c = frames[k * nxy + v];
            }
            search.offer([v % nx, v / nx, z], &curve, window);
        }
    }
    let (arterial, warnings) = search.finish()?;
    let mut processor = SliceProcessor::new(*config, grid, nx, ny, &arterial)?;
    let mut n_tissue_voxels = 0u64;
    for z in 0..nz {
        source
            .read_slice(z, &mut frames)
            .map_err(StudyError::Source)?;
        let maps = processor.process(&mut frames)?;
        n_tissue_voxels += maps.tissue_mask.iter().map(|&m| u64::from(m)).sum::<u64>();
        sink(z, &maps).map_err(StudyError::Source)?;
    }
    Ok(PerfusionSummary {
        grid,
        config: *config,
        arterial,
        warnings,
        n_tissue_voxels,
    })
}
