//! Reading and validating NIfTI-1 headers before anything sized by them is allocated,
//! building headers for new images, and comparing image grids.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use nifti::NiftiHeader;

use super::{Dtype, IoError};

/// The NIfTI-1 header size in bytes.
pub(crate) const NIFTI1_HEADER_BYTES: usize = 348;
/// Offset of the voxel data that our writer uses (header + 4 empty extension bytes).
pub(crate) const NIFTI1_VOX_OFFSET: u64 = 352;
const NIFTI2_HEADER_BYTES: i32 = 540;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Upper bounds on what a header may declare, checked before allocating anything.
///
/// The defaults are far above any CT perfusion study (ISLES: 256×256×≤22, 4D PWI with
/// under 100 time points) and far below what would exhaust the edge box's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most voxels in one slice (`dim[1] * dim[2]`).
    pub max_slice_voxels: usize,
    /// Most slices of a 3D volume (`dim[3]`).
    pub max_slices: usize,
    /// Most bytes of voxel data in the whole file.
    pub max_data_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_slice_voxels: 2048 * 2048,
            max_slices: 2048,
            max_data_bytes: 4 << 30,
        }
    }
}

/// A voxel-to-world affine, the top three rows of the 4×4 matrix (millimetres).
pub type Affine = [[f64; 4]; 3];

/// How far two images' grids may differ and still count as one grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridTolerance {
    /// Largest relative difference of a voxel spacing.
    pub spacing_rel: f64,
    /// Largest absolute difference of an affine entry, in millimetres.
    pub affine_mm: f64,
}

impl Default for GridTolerance {
    fn default() -> Self {
        GridTolerance {
            spacing_rel: 1e-3,
            affine_mm: 1e-2,
        }
    }
}

/// A validated NIfTI-1 header: everything the reader needs, in checked, typed form.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderInfo {
    /// The file.
    pub path: PathBuf,
    /// `dim[1..=dim[0]]`, every entry ≥ 1.
    pub dims: Vec<usize>,
    /// Voxel spacing along x, y, z in millimetres (`pixdim[1..=3]`, 1.0 for absent axes).
    pub spacing_mm: [f32; 3],
    /// The voxel datatype.
    pub dtype: Dtype,
    /// Byte offset of the voxel data in the (decompressed) stream.
    pub vox_offset: u64,
    /// Whether the file is gzip-compressed (detected from its content, not its name).
    pub compressed: bool,
    /// Whether the header and data are big-endian.
    pub big_endian: bool,
    /// `scl_slope` (0 or non-finite means no scaling).
    pub scl_slope: f32,
    /// `scl_inter`.
    pub scl_inter: f32,
    /// The voxel-to-world affine: the sform if set, else the qform, else pixdim scaling.
    pub affine: Affine,
}

impl HeaderInfo {
    /// `dim[1]`, the fastest-varying axis.
    pub fn nx(&self) -> usize {
        self.dims.first().copied().unwrap_or(1)
    }
    /// `dim[2]`.
    pub fn ny(&self) -> usize {
        self.dims.get(1).copied().unwrap_or(1)
    }
    /// `dim[3]`, the number of slices.
    pub fn nz(&self) -> usize {
        self.dims.get(2).copied().unwrap_or(1)
    }
    /// Product of `dim[4..]`: time points (or volumes) of a series; 1 for a 3D volume.
    pub fn n_volumes(&self) -> usize {
        self.dims.iter().skip(3).product()
    }
    /// Voxels in one slice (`nx * ny`).
    pub fn slice_voxels(&self) -> usize {
        self.nx() * self.ny()
    }
    /// Bytes of one slice.
    pub fn slice_bytes(&self) -> usize {
        self.slice_voxels() * self.dtype.size_bytes()
    }
    /// Volume of one voxel in mm³.
    pub fn voxel_volume_mm3(&self) -> f64 {
        self.spacing_mm.iter().map(|&s| f64::from(s)).product()
    }

    /// Checks that `other` lies on the same grid (in-plane size, slices, spacing, affine),
    /// within `tol`. Only the first three axes count, so a 4D series may be compared with
    /// a 3D map.
    pub fn check_same_grid(&self, other: &HeaderInfo, tol: GridTolerance) -> Result<(), IoError> {
        let mismatch = |what: String| IoError::GridMismatch {
            reference: self.path.clone(),
            other: other.path.clone(),
            what,
        };
        let a = [self.nx(), self.ny(), self.nz()];
        let b = [other.nx(), other.ny(), other.nz()];
        if a != b {
            return Err(mismatch(format!("dims {a:?} vs {b:?}")));
        }
        for axis in 0..3 {
            let (sa, sb) = (
                f64::from(self.spacing_mm[axis]),
                f64::from(other.spacing_mm[axis]),
            );
            if (sa - sb).abs() > tol.spacing_rel * sa.abs().max(sb.abs()) {
                return Err(mismatch(format!(
                    "spacing_mm {:?} vs {:?}",
                    self.spacing_mm, other.spacing_mm
                )));
            }
        }
        for (row_a, row_b) in self.affine.iter().zip(other.affine.iter()) {
            for (x, y) in row_a.iter().zip(row_b.iter()) {
                if (x - y).abs() > tol.affine_mm {
                    return Err(mismatch(format!(
                        "affine {:?} vs {:?}",
                        self.affine, other.affine
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Opens `path` (plain or gzip, detected from the content) positioned at byte 0 of the
/// decompressed stream.
pub(crate) fn open_stream(path: &Path) -> Result<(Box<dyn Read + Send>, bool, u64), IoError> {
    let mut file = File::open(path).map_err(|e| IoError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| IoError::io(path, e))?.len();
    if file_len == 0 {
        return Err(IoError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| IoError::io(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| IoError::io(path, e))?;
    let compressed = n == 2 && magic == GZIP_MAGIC;
    let reader: Box<dyn Read + Send> = if compressed {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    Ok((reader, compressed, file_len))
}

/// Reads into `buf` until it is full or the stream ends; returns the bytes read (a short
/// file's magic or preamble is then told apart from an I/O error).
pub fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Maps a read error on a (possibly gzip) stream to a typed error: corrupt gzip data
/// becomes [`IoError::NotNifti`], anything else [`IoError::Io`].
pub(crate) fn stream_error(path: &Path, compressed: bool, e: std::io::Error) -> IoError {
    if compressed && e.kind() != std::io::ErrorKind::UnexpectedEof {
        IoError::NotNifti {
            path: path.to_path_buf(),
            reason: format!("corrupt gzip stream: {e}"),
        }
    } else {
        IoError::io(path, e)
    }
}

/// Reads and validates the header of the NIfTI-1 file at `path`.
///
/// Checks, before anything sized by the header is allocated: the file is non-empty,
/// gzip (if compressed) is readable, `sizeof_hdr` is 348 (NIfTI-2 is refused by name),
/// the magic is `n+1` (single file), `dim` is 1..=7 axes of positive sizes within
/// `limits`, the datatype is a scalar type with a matching `bitpix`, the spacings are
/// finite and positive, `vox_offset` is sane, and (for uncompressed files) the file
/// holds all the voxel data the header declares.
pub fn read_header(path: &Path, limits: &ReadLimits) -> Result<(NiftiHeader, HeaderInfo), IoError> {
    let (mut stream, compressed, file_len) = open_stream(path)?;
    let mut raw = [0u8; NIFTI1_HEADER_BYTES];
    let n = read_up_to(&mut stream, &mut raw).map_err(|e| stream_error(path, compressed, e))?;
    if n < 4 {
        return Err(IoError::Truncated {
            path: path.to_path_buf(),
            what: "header".into(),
            needed_bytes: NIFTI1_HEADER_BYTES as u64,
            available_bytes: n as u64,
        });
    }
    let sizeof_le = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let sizeof_be = i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    if sizeof_le == NIFTI2_HEADER_BYTES || sizeof_be == NIFTI2_HEADER_BYTES {
        return Err(IoError::NotNifti {
            path: path.to_path_buf(),
            reason: "NIfTI-2 is not supported; convert to NIfTI-1 (e.g. nibabel.Nifti1Image)"
                .into(),
        });
    }
    if sizeof_le != NIFTI1_HEADER_BYTES as i32 && sizeof_be != NIFTI1_HEADER_BYTES as i32 {
        return Err(IoError::NotNifti {
            path: path.to_path_buf(),
            reason: format!("sizeof_hdr is {sizeof_le}, expected 348"),
        });
    }
    if n < NIFTI1_HEADER_BYTES {
        return Err(IoError::Truncated {
            path: path.to_path_buf(),
            what: "header".into(),
            needed_bytes: NIFTI1_HEADER_BYTES as u64,
            available_bytes: n as u64,
        });
    }
    let header = NiftiHeader::from_reader(&raw[..]).map_err(|e| IoError::NotNifti {
        path: path.to_path_buf(),
        reason: format!("header does not parse: {e}"),
    })?;
    let info = validate(path, &header, compressed, file_len, limits)?;
    if compressed {
        check_gzip_trailer(path, &info, file_len)?;
    }
    Ok((header, info))
}

fn validate(
    path: &Path,
    h: &NiftiHeader,
    compressed: bool,
    file_len: u64,
    limits: &ReadLimits,
) -> Result<HeaderInfo, IoError> {
    let invalid = |field: &'static str, reason: String| IoError::InvalidHeader {
        path: path.to_path_buf(),
        field,
        reason,
    };
    if &h.magic != b"n+1\0" {
        return Err(IoError::NotNifti {
            path: path.to_path_buf(),
            reason: if &h.magic == b"ni1\0" {
                "a .hdr/.img pair header; only single-file .nii/.nii.gz is supported".into()
            } else {
                format!("magic is {:?}, expected \"n+1\"", h.magic)
            },
        });
    }
    let ndim = usize::from(h.dim[0]);
    if !(1..=7).contains(&ndim) {
        return Err(invalid("dim", format!("dim[0] = {ndim}, must be 1..=7")));
    }
    let mut dims = Vec::with_capacity(ndim);
    for (axis, &d) in h.dim[1..=ndim].iter().enumerate() {
        // dim is signed in the standard; nifti-rs reads it as u16, so negatives wrap.
        let d_signed = d as i16;
        if d_signed <= 0 {
            return Err(invalid(
                "dim",
                format!("dim[{}] = {d_signed}, must be positive", axis + 1),
            ));
        }
        dims.push(usize::from(d));
    }
    let code = h.datatype;
    let dtype = Dtype::from_code(code).ok_or_else(|| IoError::UnsupportedDatatype {
        path: path.to_path_buf(),
        code,
        name: non_scalar_datatype_name(code).into(),
    })?;
    if i64::from(h.bitpix) != 8 * dtype.size_bytes() as i64 {
        return Err(invalid(
            "bitpix",
            format!("{} does not match datatype {dtype}", h.bitpix),
        ));
    }
    let mut spacing_mm = [1.0f32; 3];
    for (axis, s) in spacing_mm.iter_mut().enumerate().take(ndim.min(3)) {
        let p = h.pixdim[axis + 1];
        if !p.is_finite() || p <= 0.0 {
            return Err(invalid(
                "pixdim",
                format!("pixdim[{}] = {p}, must be finite and positive", axis + 1),
            ));
        }
        *s = p;
    }
    let vox = h.vox_offset;
    if !vox.is_finite() || vox < NIFTI1_HEADER_BYTES as f32 || vox.fract() != 0.0 {
        return Err(invalid(
            "vox_offset",
            format!("{vox}, must be a whole number ≥ 348"),
        ));
    }
    let vox_offset = vox as u64;
    if !compressed && vox_offset > file_len {
        return Err(invalid(
            "vox_offset",
            format!("{vox_offset} is past the end of the file ({file_len} bytes)"),
        ));
    }
    let too_large = |reason: String| IoError::TooLarge {
        path: path.to_path_buf(),
        reason,
    };
    let slice_voxels = dims[0].checked_mul(*dims.get(1).unwrap_or(&1));
    match slice_voxels {
        Some(v) if v <= limits.max_slice_voxels => {}
        _ => {
            return Err(too_large(format!(
                "slice of {}×{} voxels exceeds {}",
                dims[0],
                dims.get(1).unwrap_or(&1),
                limits.max_slice_voxels
            )));
        }
    }
    let nz = *dims.get(2).unwrap_or(&1);
    if nz > limits.max_slices {
        return Err(too_large(format!(
            "{nz} slices exceed {}",
            limits.max_slices
        )));
    }
    let data_bytes = dims.iter().try_fold(dtype.size_bytes() as u64, |acc, &d| {
        acc.checked_mul(d as u64)
    });
    let data_bytes = match data_bytes {
        Some(b) if b <= limits.max_data_bytes => b,
        _ => {
            return Err(too_large(format!(
                "dims {dims:?} of {dtype} exceed {} bytes",
                limits.max_data_bytes
            )));
        }
    };
    if !compressed && vox_offset + data_bytes > file_len {
        return Err(IoError::Truncated {
            path: path.to_path_buf(),
            what: "voxel data".into(),
            needed_bytes: vox_offset + data_bytes,
            available_bytes: file_len,
        });
    }
    Ok(HeaderInfo {
        path: path.to_path_buf(),
        dims,
        spacing_mm,
        dtype,
        vox_offset,
        compressed,
        big_endian: h.endianness == nifti::Endianness::Big,
        scl_slope: h.scl_slope,
        scl_inter: h.scl_inter,
        affine: affine_of(h),
    })
}

/// A gzip member's trailer holds the uncompressed size modulo 2³². A trailer smaller than
/// what the header declares means the file was cut short (the common case of a truncated
/// download); other damage is caught while streaming.
fn check_gzip_trailer(path: &Path, info: &HeaderInfo, file_len: u64) -> Result<(), IoError> {
    let needed =
        info.vox_offset + (info.dims.iter().product::<usize>() * info.dtype.size_bytes()) as u64;
    if needed >= 1 << 32 || file_len < 18 {
        return Ok(());
    }
    let mut file = File::open(path).map_err(|e| IoError::io(path, e))?;
    file.seek(SeekFrom::End(-4))
        .map_err(|e| IoError::io(path, e))?;
    let mut trailer = [0u8; 4];
    file.read_exact(&mut trailer)
        .map_err(|e| IoError::io(path, e))?;
    let isize = u64::from(u32::from_le_bytes(trailer));
    if isize < needed {
        return Err(IoError::Truncated {
            path: path.to_path_buf(),
            what: "voxel data (gzip trailer)".into(),
            needed_bytes: needed,
            available_bytes: isize,
        });
    }
    Ok(())
}

/// Names of the NIfTI datatypes that exist but cannot hold a scalar image.
fn non_scalar_datatype_name(code: i16) -> &'static str {
    match code {
        1 => "binary",
        32 => "complex64",
        128 => "rgb24",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "rgba32",
        _ => "unknown",
    }
}

/// The voxel-to-world affine by the NIfTI rules: sform if `sform_code > 0`, else qform if
/// `qform_code > 0`, else scaling by pixdim.
fn affine_of(h: &NiftiHeader) -> Affine {
    if h.sform_code > 0 {
        let row = |r: [f32; 4]| r.map(f64::from);
        return [row(h.srow_x), row(h.srow_y), row(h.srow_z)];
    }
    let dx = f64::from(h.pixdim[1]);
    let dy = f64::from(h.pixdim[2]);
    let dz = f64::from(h.pixdim[3]);
    if h.qform_code > 0 {
        let (b, c, d) = (
            f64::from(h.quatern_b),
            f64::from(h.quatern_c),
            f64::from(h.quatern_d),
        );
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let t = [
            f64::from(h.quatern_x),
            f64::from(h.quatern_y),
            f64::from(h.quatern_z),
        ];
        let mut m = [[0.0; 4]; 3];
        for i in 0..3 {
            m[i] = [r[i][0] * dx, r[i][1] * dy, r[i][2] * dz * qfac, t[i]];
        }
        return m;
    }
    [
        [dx, 0.0, 0.0, 0.0],
        [0.0, dy, 0.0, 0.0],
        [0.0, 0.0, dz, 0.0],
    ]
}

/// A new single-file NIfTI-1 header for an axis-aligned image.
///
/// `dims` is `[nx, ny, nz]` or a series `[nx, ny, nz, 1, nt]` (the ISLES 4D PWI layout);
/// qform and sform are both set (code 1, scanner) to spacing and `origin_mm`; units are
/// millimetres and seconds.
pub fn new_header(
    dims: &[usize],
    spacing_mm: [f32; 3],
    origin_mm: [f32; 3],
    dtype: Dtype,
) -> Result<NiftiHeader, IoError> {
    let bad = |reason: String| IoError::InvalidHeader {
        path: PathBuf::from("<new image>"),
        field: "dim",
        reason,
    };
    if dims.is_empty() || dims.len() > 7 {
        return Err(bad(format!("{} axes, must be 1..=7", dims.len())));
    }
    let mut dim = [1u16; 8];
    dim[0] = dims.len() as u16;
    for (i, &d) in dims.iter().enumerate() {
        if d == 0 || d > i16::MAX as usize {
            return Err(bad(format!("dim[{}] = {d}, must be 1..=32767", i + 1)));
        }
        dim[i + 1] = d as u16;
    }
    if spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(IoError::InvalidHeader {
            path: PathBuf::from("<new image>"),
            field: "pixdim",
            reason: format!("{spacing_mm:?}, must be finite and positive"),
        });
    }
    let mut h = NiftiHeader {
        dim,
        datatype: dtype.code(),
        bitpix: (8 * dtype.size_bytes()) as i16,
        vox_offset: NIFTI1_VOX_OFFSET as f32,
        scl_slope: 1.0,
        scl_inter: 0.0,
        xyzt_units: 2 | 8, // NIFTI_UNITS_MM | NIFTI_UNITS_SEC
        qform_code: 1,
        sform_code: 1,
        quatern_x: origin_mm[0],
        quatern_y: origin_mm[1],
        quatern_z: origin_mm[2],
        srow_x: [spacing_mm[0], 0.0, 0.0, origin_mm[0]],
        srow_y: [0.0, spacing_mm[1], 0.0, origin_mm[1]],
        srow_z: [0.0, 0.0, spacing_mm[2], origin_mm[2]],
        magic: *b"n+1\0",
        endianness: nifti::Endianness::Little,
        ..NiftiHeader::default()
    };
    h.pixdim = [1.0; 8];
    h.pixdim[1..4].copy_from_slice(&spacing_mm);
    Ok(h)
}
