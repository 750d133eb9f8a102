//! Slice-by-slice NIfTI-1 writing with atomic publication: a file appears under its
//! final name complete or not at all.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use nifti::NiftiHeader;

use super::header::{NIFTI1_HEADER_BYTES, NIFTI1_VOX_OFFSET};
use super::{Dtype, IoError};
use crate::atomic::{publish_atomically, tmp_path};

enum Sink {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

/// Writes a NIfTI-1 image one slice at a time to `<path>.tmp`, renamed to `path` by
/// [`NiftiWriter::finish`]. Dropping the writer unfinished deletes the temporary file, so
/// a failed run leaves nothing behind under the final name. A path ending in `.gz` is
/// gzip-compressed.
///
/// Memory: one slice of encoded bytes.
pub struct NiftiWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    sink: Option<Sink>,
    dtype: Dtype,
    slice_voxels: usize,
    planes_expected: usize,
    planes_written: usize,
    bytes: Vec<u8>,
}

impl NiftiWriter {
    /// Starts writing `path` with the geometry of `header` (dims, pixdim, qform, sform,
    /// units and description are copied) and the voxel type `dtype`; the datatype, bitpix,
    /// vox_offset and scaling fields are set for the new data (no scaling).
    pub fn create(path: &Path, header: &NiftiHeader, dtype: Dtype) -> Result<Self, IoError> {
        let ndim = usize::from(header.dim[0]);
        if !(2..=7).contains(&ndim)
            || header.dim[1..=ndim]
                .iter()
                .any(|&d| d == 0 || d as i16 <= 0)
        {
            return Err(IoError::InvalidHeader {
                path: path.to_path_buf(),
                field: "dim",
                reason: format!("{:?} is not a valid image shape", header.dim),
            });
        }
        let dims: Vec<usize> = header.dim[1..=ndim]
            .iter()
            .map(|&d| usize::from(d))
            .collect();
        let slice_voxels = dims[0] * dims[1];
        let planes_expected = dims[2..].iter().product();

        let mut h = header.clone();
        h.sizeof_hdr = NIFTI1_HEADER_BYTES as i32;
        h.datatype = dtype.code();
        h.bitpix = (8 * dtype.size_bytes()) as i16;
        h.vox_offset = NIFTI1_VOX_OFFSET as f32;
        h.scl_slope = 1.0;
        h.scl_inter = 0.0;
        h.cal_min = 0.0;
        h.cal_max = 0.0;
        h.magic = *b"n+1\0";
        h.descrip.resize(80, 0);

        let tmp_path = tmp_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| IoError::io(&tmp_path, e))?;
        let buffered = BufWriter::with_capacity(1 << 16, file);
        let gz = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
        let mut sink = if gz {
            Sink::Gzip(flate2::write::GzEncoder::new(
                buffered,
                flate2::Compression::new(6),
            ))
        } else {
            Sink::Plain(buffered)
        };
        let mut writer_err = |e| IoError::io(&tmp_path, e);
        sink.write_all(&serialize_header_le(&h))
            .map_err(&mut writer_err)?;
        sink.write_all(&[0u8; 4]).map_err(&mut writer_err)?; // no extensions
        Ok(NiftiWriter {
            path: path.to_path_buf(),
            tmp_path,
            sink: Some(sink),
            dtype,
            slice_voxels,
            planes_expected,
            planes_written: 0,
            bytes: Vec::with_capacity(slice_voxels * dtype.size_bytes()),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the next slice (`nx * ny` values, x fastest); values are rounded and
    /// saturated to integer datatypes. For a series, all slices of volume 0 come first.
    pub fn write_slice_f64(&mut self, values: &[f64]) -> Result<(), IoError> {
        self.check_slice(values.len())?;
        self.bytes.clear();
        self.dtype.encode_le_f64(values, &mut self.bytes);
        self.flush_slice()
    }

    /// [`NiftiWriter::write_slice_f64`] for `f32` values.
    pub fn write_slice_f32(&mut self, values: &[f32]) -> Result<(), IoError> {
        self.write_slice_widened(values)
    }

    /// Appends the next slice of a mask (`0`/`1` or label values).
    pub fn write_slice_u8(&mut self, values: &[u8]) -> Result<(), IoError> {
        self.write_slice_widened(values)
    }

    fn write_slice_widened<T: Copy + Into<f64>>(&mut self, values: &[T]) -> Result<(), IoError> {
        self.check_slice(values.len())?;
        self.bytes.clear();
        // Encode in chunks through a small stack buffer: no per-slice allocation.
        let mut wide = [0f64; 256];
        for chunk in values.chunks(wide.len()) {
            for (w, &v) in wide.iter_mut().zip(chunk) {
                *w = v.into();
            }
            self.dtype
                .encode_le_f64(&wide[..chunk.len()], &mut self.bytes);
        }
        self.flush_slice()
    }

    fn check_slice(&mut self, len: usize) -> Result<(), IoError> {
        if len != self.slice_voxels {
            return Err(IoError::BufferSize {
                path: self.path.clone(),
                expected: self.slice_voxels,
                got: len,
            });
        }
        if self.planes_written >= self.planes_expected {
            return Err(IoError::SliceCount {
                path: self.path.clone(),
                expected: self.planes_expected,
                written: self.planes_written + 1,
            });
        }
        self.planes_written += 1;
        Ok(())
    }

    fn flush_slice(&mut self) -> Result<(), IoError> {
        match self.sink.as_mut() {
            Some(sink) => sink
                .write_all(&self.bytes)
                .map_err(|e| IoError::io(&self.tmp_path, e)),
            None => Ok(()),
        }
    }

    /// Checks that every slice was written, flushes and syncs the data, and renames the
    /// temporary file to the final path. Returns the final path.
    pub fn finish(mut self) -> Result<PathBuf, IoError> {
        if self.planes_written != self.planes_expected {
            return Err(IoError::SliceCount {
                path: self.path.clone(),
                expected: self.planes_expected,
                written: self.planes_written,
            });
        }
        let tmp = self.tmp_path.clone();
        let err = |e| IoError::io(&tmp, e);
        let buffered = match self.sink.take() {
            Some(Sink::Plain(w)) => w,
            Some(Sink::Gzip(w)) => w.finish().map_err(err)?,
            None => {
                return Err(IoError::io(
                    &tmp,
                    std::io::Error::other("writer already finished"),
                ));
            }
        };
        let file = buffered.into_inner().map_err(|e| err(e.into_error()))?;
        drop(file);
        publish_atomically(&self.tmp_path, &self.path)?;
        Ok(self.path.clone())
    }
}

impl Drop for NiftiWriter {
    fn drop(&mut self) {
        if self.sink.take().is_some() {
            // Unfinished: leave nothing behind.
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// The 348-byte NIfTI-1 header in little-endian byte order.
pub(crate) fn serialize_header_le(h: &NiftiHeader) -> Vec<u8> {
    let mut b = Vec::with_capacity(NIFTI1_HEADER_BYTES);
    let fixed = |bytes: &[u8], len: usize, b: &mut Vec<u8>| {
        let n = bytes.len().min(len);
        b.extend_from_slice(&bytes[..n]);
        b.resize(b.len() + (len - n), 0);
    };
    b.extend_from_slice(&(NIFTI1_HEADER_BYTES as i32).to_le_bytes());
    fixed(&h.data_type, 10, &mut b);
    fixed(&h.db_name, 18, &mut b);
    b.extend_from_slice(&h.extents.to_le_bytes());
    b.extend_from_slice(&h.session_error.to_le_bytes());
    b.push(h.regular);
    b.push(h.dim_info);
    for d in h.dim {
        b.extend_from_slice(&d.to_le_bytes());
    }
    for f in [h.intent_p1, h.intent_p2, h.intent_p3] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    for i in [h.intent_code, h.datatype, h.bitpix, h.slice_start] {
        b.extend_from_slice(&i.to_le_bytes());
    }
    for f in h.pixdim {
        b.extend_from_slice(&f.to_le_bytes());
    }
    for f in [h.vox_offset, h.scl_slope, h.scl_inter] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(&h.slice_end.to_le_bytes());
    b.push(h.slice_code);
    b.push(h.xyzt_units);
    for f in [h.cal_max, h.cal_min, h.slice_duration, h.toffset] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(&h.glmax.to_le_bytes());
    b.extend_from_slice(&h.glmin.to_le_bytes());
    fixed(&h.descrip, 80, &mut b);
    fixed(&h.aux_file, 24, &mut b);
    b.extend_from_slice(&h.qform_code.to_le_bytes());
    b.extend_from_slice(&h.sform_code.to_le_bytes());
    for f in [
        h.quatern_b,
        h.quatern_c,
        h.quatern_d,
        h.quatern_x,
        h.quatern_y,
        h.quatern_z,
    ] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    for f in h.srow_x.iter().chain(&h.srow_y).chain(&h.srow_z) {
        b.extend_from_slice(&f.to_le_bytes());
    }
    fixed(&h.intent_name, 16, &mut b);
    fixed(&h.magic, 4, &mut b);
    b
}
