//! Scalar NIfTI voxel datatypes and the conversion of raw voxel bytes to and from numbers.

/// A NIfTI-1 datatype that can hold a scalar image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    /// `DT_UINT8` (2).
    U8,
    /// `DT_INT8` (256).
    I8,
    /// `DT_INT16` (4).
    I16,
    /// `DT_UINT16` (512).
    U16,
    /// `DT_INT32` (8).
    I32,
    /// `DT_UINT32` (768).
    U32,
    /// `DT_INT64` (1024).
    I64,
    /// `DT_UINT64` (1280).
    U64,
    /// `DT_FLOAT32` (16).
    F32,
    /// `DT_FLOAT64` (64).
    F64,
}

impl Dtype {
    /// Every supported datatype.
    pub const ALL: [Dtype; 10] = [
        Dtype::U8,
        Dtype::I8,
        Dtype::I16,
        Dtype::U16,
        Dtype::I32,
        Dtype::U32,
        Dtype::I64,
        Dtype::U64,
        Dtype::F32,
        Dtype::F64,
    ];

    /// The NIfTI `datatype` code.
    pub const fn code(self) -> i16 {
        match self {
            Dtype::U8 => 2,
            Dtype::I8 => 256,
            Dtype::I16 => 4,
            Dtype::U16 => 512,
            Dtype::I32 => 8,
            Dtype::U32 => 768,
            Dtype::I64 => 1024,
            Dtype::U64 => 1280,
            Dtype::F32 => 16,
            Dtype::F64 => 64,
        }
    }

    /// The datatype for a NIfTI code, or `None` for codes that are not scalar images
    /// (complex, RGB, float128, binary, unknown).
    pub fn from_code(code: i16) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per voxel.
    pub const fn size_bytes(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// Whether values are floating point (and can be NaN or infinite).
    pub const fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// Lowercase name (`uint16`, `float64`, …), as nibabel prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::U16 => "uint16",
            Dtype::I32 => "int32",
            Dtype::U32 => "uint32",
            Dtype::I64 => "int64",
            Dtype::U64 => "uint64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Decodes `out.len()` voxels from `raw` (exactly `out.len() * size_bytes()` bytes)
    /// and applies the NIfTI scaling `value * slope + inter` when `slope` is finite and
    /// non-zero (the NIfTI rule: slope 0 means "no scaling"). Returns `false` if the
    /// lengths disagree.
    pub fn decode_f32(
        self,
        raw: &[u8],
        big_endian: bool,
        scl_slope: f32,
        scl_inter: f32,
        out: &mut [f32],
    ) -> bool {
        if raw.len() != out.len() * self.size_bytes() {
            return false;
        }
        macro_rules! decode {
            ($t:ty, $n:expr) => {
                for (o, c) in out.iter_mut().zip(raw.chunks_exact($n)) {
                    let mut b = [0u8; $n];
                    b.copy_from_slice(c);
                    let v = if big_endian {
                        <$t>::from_be_bytes(b)
                    } else {
                        <$t>::from_le_bytes(b)
                    };
                    *o = v as f32;
                }
            };
        }
        match self {
            Dtype::U8 => decode!(u8, 1),
            Dtype::I8 => decode!(i8, 1),
            Dtype::I16 => decode!(i16, 2),
            Dtype::U16 => decode!(u16, 2),
            Dtype::I32 => decode!(i32, 4),
            Dtype::U32 => decode!(u32, 4),
            Dtype::I64 => decode!(i64, 8),
            Dtype::U64 => decode!(u64, 8),
            Dtype::F32 => decode!(f32, 4),
            Dtype::F64 => decode!(f64, 8),
        }
        let scaled = scl_slope != 0.0 && scl_slope.is_finite() && scl_inter.is_finite();
        if scaled && (scl_slope != 1.0 || scl_inter != 0.0) {
            for o in out.iter_mut() {
                *o = *o * scl_slope + scl_inter;
            }
        }
        true
    }

    /// Appends `values` to `out` in little-endian byte order. Integer types round to the
    /// nearest integer and saturate at the type's range; NaN becomes 0.
    pub fn encode_le_f64(self, values: &[f64], out: &mut Vec<u8>) {
        out.reserve(values.len() * self.size_bytes());
        macro_rules! encode_int {
            ($t:ty) => {
                for &v in values {
                    // `as` saturates and maps NaN to 0 for float-to-int casts.
                    out.extend_from_slice(&(v.round() as $t).to_le_bytes());
                }
            };
        }
        match self {
            Dtype::U8 => encode_int!(u8),
            Dtype::I8 => encode_int!(i8),
            Dtype::I16 => encode_int!(i16),
            Dtype::U16 => encode_int!(u16),
            Dtype::I32 => encode_int!(i32),
            Dtype::U32 => encode_int!(u32),
            Dtype::I64 => encode_int!(i64),
            Dtype::U64 => encode_int!(u64),
            Dtype::F32 => {
                for &v in values {
                    out.extend_from_slice(&(v as f32).to_le_bytes());
                }
            }
            Dtype::F64 => {
                for &v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

impl core::fmt::Display for Dtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_code(d.code()), Some(d));
        }
        assert_eq!(
            Dtype::from_code(32),
            None,
            "complex64 is not a scalar image"
        );
        assert_eq!(Dtype::from_code(128), None, "rgb24 is not a scalar image");
    }

    #[test]
    fn encode_then_decode_every_dtype() {
        let values = [0.0, 1.0, 2.4, 2.6, 100.0];
        for d in Dtype::ALL {
            let mut raw = Vec::new();
            d.encode_le_f64(&values, &mut raw);
            let mut out = [0f32; 5];
            assert!(d.decode_f32(&raw, false, 0.0, 0.0, &mut out));
            let expect: [f32; 5] = if d.is_float() {
                [0.0, 1.0, 2.4, 2.6, 100.0]
            } else {
                [0.0, 1.0, 2.0, 3.0, 100.0]
            };
            assert_eq!(out, expect, "{d}");
        }
    }

    #[test]
    fn saturates_and_maps_nan_to_zero() {
        let mut raw = Vec::new();
        Dtype::U8.encode_le_f64(&[-5.0, 300.0, f64::NAN], &mut raw);
        assert_eq!(raw, [0, 255, 0]);
    }

    #[test]
    fn applies_scaling_and_big_endian() {
        let raw = 1000i16.to_be_bytes();
        let mut out = [0f32];
        assert!(Dtype::I16.decode_f32(&raw, true, 0.5, -10.0, &mut out));
        assert_eq!(out[0], 490.0);
    }

    #[test]
    fn refuses_wrong_lengths() {
        let mut out = [0f32; 2];
        assert!(!Dtype::I32.decode_f32(&[0u8; 7], false, 1.0, 0.0, &mut out));
    }
}
