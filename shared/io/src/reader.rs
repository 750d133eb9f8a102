//! Slice-by-slice reading of one NIfTI-1 image, in memory bounded by one slice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use nifti::{NiftiHeader, StreamedNiftiVolume};

use super::header::{open_stream, stream_error};
use super::{Dtype, HeaderInfo, IoError, ReadLimits, read_header};
use strokeseg_shared::preprocess::sanitize_non_finite;

/// What a slice read found besides the values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SliceStats {
    /// Voxels that were NaN or ±inf (after scaling) and were replaced by 0.
    pub non_finite: usize,
}

enum Source {
    /// Uncompressed: random access by seeking, so reading slice z reads only slice z.
    Plain(File),
    /// gzip: a forward-only stream positioned at the start of plane `next_plane`.
    Gzip {
        volume: StreamedNiftiVolume<Box<dyn Read + Send>>,
        next_plane: usize,
    },
}

/// Reads the 2D planes (slices) of a NIfTI-1 image one at a time.
///
/// Memory: the header plus one slice of raw bytes, whatever the number of slices. For a
/// series (`[nx, ny, nz, 1, nt]`), plane `t * nz + z` is slice `z` of volume `t`.
/// Uncompressed files are read by seeking (reading slice z touches only slice z on disk);
/// gzip files are streamed forward and reopened if an earlier slice is asked for.
pub struct NiftiVolumeReader {
    header: NiftiHeader,
    info: HeaderInfo,
    source: Source,
    raw: Vec<u8>,
}

impl NiftiVolumeReader {
    /// Opens and validates `path` with the default [`ReadLimits`].
    pub fn open(path: &Path) -> Result<Self, IoError> {
        Self::open_with_limits(path, &ReadLimits::default())
    }

    /// Opens and validates `path`; refuses images that are not at least 2D.
    pub fn open_with_limits(path: &Path, limits: &ReadLimits) -> Result<Self, IoError> {
        let (header, info) = read_header(path, limits)?;
        if info.dims.len() < 2 {
            return Err(IoError::WrongDimensionality {
                path: path.to_path_buf(),
                expected: "2D or higher",
                dims: info.dims.clone(),
            });
        }
        let source = if info.compressed {
            Source::Gzip {
                volume: Self::gzip_volume(&header, &info)?,
                next_plane: 0,
            }
        } else {
            Source::Plain(File::open(path).map_err(|e| IoError::io(path, e))?)
        };
        let raw = vec![0u8; info.slice_bytes()];
        Ok(NiftiVolumeReader {
            header,
            info,
            source,
            raw,
        })
    }

    fn gzip_volume(
        header: &NiftiHeader,
        info: &HeaderInfo,
    ) -> Result<StreamedNiftiVolume<Box<dyn Read + Send>>, IoError> {
        let path = info.path.as_path();
        let (mut stream, _, _) = open_stream(path)?;
        let skipped = std::io::copy(
            &mut (&mut stream).take(info.vox_offset),
            &mut std::io::sink(),
        )
        .map_err(|e| stream_error(path, true, e))?;
        if skipped < info.vox_offset {
            return Err(IoError::Truncated {
                path: path.to_path_buf(),
                what: "header and extensions".into(),
                needed_bytes: info.vox_offset,
                available_bytes: skipped,
            });
        }
        StreamedNiftiVolume::from_reader_rank(stream, header, 2).map_err(|e| IoError::NotNifti {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Names `path` instead of the opened file in every later error (a spooled copy of a
    /// compressed file reports the original).
    pub(crate) fn set_display_path(&mut self, path: &Path) {
        self.info.path = path.to_path_buf();
    }

    /// The validated header.
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }
    /// The raw header, for writing images on the same grid.
    pub fn header(&self) -> &NiftiHeader {
        &self.header
    }
    /// `[nx, ny, nz]`.
    pub fn dims(&self) -> [usize; 3] {
        [self.info.nx(), self.info.ny(), self.info.nz()]
    }
    /// Number of slices (`nz`).
    pub fn n_slices(&self) -> usize {
        self.info.nz()
    }
    /// Voxel spacing in millimetres.
    pub fn spacing_mm(&self) -> [f32; 3] {
        self.info.spacing_mm
    }
    /// The on-disk datatype.
    pub fn dtype(&self) -> Dtype {
        self.info.dtype
    }
    /// The file.
    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// Reads slice `slice_idx` of the (first) volume into `out` (`nx * ny` values, x
    /// fastest), scaled by `scl_slope`/`scl_inter`; NaN and ±inf become 0 and are counted.
    pub fn read_slice_f32(
        &mut self,
        slice_idx: usize,
        out: &mut [f32],
    ) -> Result<SliceStats, IoError> {
        if slice_idx >= self.info.nz() {
            return Err(IoError::SliceOutOfRange {
                path: self.info.path.clone(),
                slice_idx,
                n_slices: self.info.nz(),
            });
        }
        self.read_plane_f32(slice_idx, out)
    }

    /// Reads slice `slice_idx` of volume `volume_idx` of a series (`[nx, ny, nz, 1, nt]`).
    pub fn read_series_slice_f32(
        &mut self,
        volume_idx: usize,
        slice_idx: usize,
        out: &mut [f32],
    ) -> Result<SliceStats, IoError> {
        let (nz, nv) = (self.info.nz(), self.info.n_volumes());
        if slice_idx >= nz || volume_idx >= nv {
            return Err(IoError::SliceOutOfRange {
                path: self.info.path.clone(),
                slice_idx: volume_idx * nz + slice_idx,
                n_slices: nz * nv,
            });
        }
        self.read_plane_f32(volume_idx * nz + slice_idx, out)
    }

    fn read_plane_f32(&mut self, plane: usize, out: &mut [f32]) -> Result<SliceStats, IoError> {
        let path = self.info.path.clone();
        if out.len() != self.info.slice_voxels() {
            return Err(IoError::BufferSize {
                path,
                expected: self.info.slice_voxels(),
                got: out.len(),
            });
        }
        let slice_bytes = self.info.slice_bytes() as u64;
        let truncated = |available: u64| IoError::Truncated {
            path: path.clone(),
            what: format!("slice {plane}"),
            needed_bytes: self.info.vox_offset + (plane as u64 + 1) * slice_bytes,
            available_bytes: available,
        };
        let buffer = std::mem::take(&mut self.raw);
        let result = match &mut self.source {
            Source::Plain(file) => {
                let offset = self.info.vox_offset + plane as u64 * slice_bytes;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| IoError::io(&path, e))?;
                StreamedNiftiVolume::from_reader_rank(&mut *file, &self.header, 2)
                    .and_then(|mut v| v.read_slice_inline(buffer))
            }
            Source::Gzip { volume, next_plane } => {
                if plane < *next_plane {
                    *volume = Self::gzip_volume(&self.header, &self.info)?;
                    *next_plane = 0;
                }
                let mut buffer = buffer;
                while *next_plane < plane {
                    buffer = volume
                        .read_slice_inline(buffer)
                        .map_err(|e| nifti_read_error(e, &path, truncated(0)))?
                        .into_raw_data();
                    *next_plane += 1;
                }
                let r = volume.read_slice_inline(buffer);
                *next_plane += 1;
                r
            }
        };
        let compressed = self.info.compressed;
        let slice = result.map_err(|e| match e {
            nifti::NiftiError::Io(io) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
                stream_error(&path, compressed, io)
            }
            other => nifti_read_error(other, &path, truncated(0)),
        })?;
        self.raw = slice.into_raw_data();
        let info = &self.info;
        if !info.dtype.decode_f32(
            &self.raw,
            info.big_endian,
            info.scl_slope,
            info.scl_inter,
            out,
        ) {
            return Err(IoError::BufferSize {
                path,
                expected: info.slice_voxels(),
                got: self.raw.len() / info.dtype.size_bytes(),
            });
        }
        Ok(SliceStats {
            non_finite: sanitize_non_finite(out, 0.0),
        })
    }
}

fn nifti_read_error(e: nifti::NiftiError, path: &Path, truncated: IoError) -> IoError {
    match e {
        nifti::NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => truncated,
        nifti::NiftiError::Io(io) => IoError::io(path, io),
        other => IoError::NotNifti {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
