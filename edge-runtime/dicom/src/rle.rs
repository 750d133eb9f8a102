//! RLE Lossless (1.2.840.10008.1.2.5, DICOM PS3.5 Annex G) decoded to native pixel data:
//! little-endian samples, colour-by-pixel, one frame from its fragment, exactly what an
//! uncompressed instance holds, so the reader has one pixel path after this
//! ([`crate::pixels`] finds the fragments).
//!
//! Written here rather than taken from dicom-rs (whose decoder indexes and unwraps on a
//! short header or a truncated segment): every offset, run and length is checked, and
//! corrupt data is an error with the reason, never a panic and never a partial image.

/// The RLE header: the number of segments and 15 segment offsets, 4 bytes each.
const HEADER_BYTES: usize = 64;
/// Most segments one frame may have (the header's 15 offsets).
const MAX_SEGMENTS: usize = 15;

/// The shape of one frame's native samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameShape {
    /// Rows × Columns.
    pub pixels: usize,
    /// Samples per Pixel (1 or 3).
    pub samples_per_pixel: usize,
    /// Bytes per sample (Bits Allocated / 8: 1 or 2).
    pub bytes_per_sample: usize,
}

impl FrameShape {
    /// Native bytes of one frame.
    pub fn frame_bytes(&self) -> usize {
        self.pixels * self.samples_per_pixel * self.bytes_per_sample
    }
}

/// Decodes one RLE frame into `dst` (`shape.frame_bytes()` bytes).
pub(crate) fn decode_frame(
    fragment: &[u8],
    shape: FrameShape,
    dst: &mut [u8],
) -> Result<(), String> {
    let u32_at = |i: usize| -> u32 {
        let b = &fragment[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    if fragment.len() < HEADER_BYTES {
        return Err(format!(
            "RLE header truncated: {} bytes, {HEADER_BYTES} needed",
            fragment.len()
        ));
    }
    let expected = shape.samples_per_pixel * shape.bytes_per_sample;
    let n_segments = u32_at(0) as usize;
    if n_segments != expected || n_segments > MAX_SEGMENTS {
        return Err(format!(
            "RLE header declares {n_segments} segments, {} samples × {} bytes need {expected}",
            shape.samples_per_pixel, shape.bytes_per_sample
        ));
    }
    let mut bounds: Vec<usize> = (1..=n_segments).map(|i| u32_at(i) as usize).collect();
    bounds.push(fragment.len());
    if bounds[0] != HEADER_BYTES {
        return Err(format!(
            "first RLE segment at offset {}, must follow the {HEADER_BYTES}-byte header",
            bounds[0]
        ));
    }
    for (s, pair) in bounds.windows(2).enumerate() {
        let (start, end) = (pair[0], pair[1]);
        if start > end || end > fragment.len() {
            return Err(format!(
                "RLE segment {} spans bytes {start}..{end} of a {}-byte fragment (truncated or corrupt)",
                s + 1,
                fragment.len()
            ));
        }
        // Segment s holds byte (bytes_per_sample - 1 - s % bps) of sample s / bps: the
        // most significant byte first; native data is little endian, colour-by-pixel.
        let sample = s / shape.bytes_per_sample;
        let byte = shape.bytes_per_sample - 1 - s % shape.bytes_per_sample;
        let first = sample * shape.bytes_per_sample + byte;
        let stride = shape.samples_per_pixel * shape.bytes_per_sample;
        unpack_segment(&fragment[start..end], shape.pixels, dst, first, stride)
            .map_err(|e| format!("RLE segment {}: {e}", s + 1))?;
    }
    Ok(())
}

/// PackBits-decodes `segment` into `pixels` bytes written at `dst[first + k × stride]`.
/// The segment must decode to exactly `pixels` bytes; at most one byte of padding may
/// follow (segments are of even length).
fn unpack_segment(
    segment: &[u8],
    pixels: usize,
    dst: &mut [u8],
    first: usize,
    stride: usize,
) -> Result<(), String> {
    let mut put = {
        let mut k = 0usize;
        move |dst: &mut [u8], value: u8| -> Result<(), String> {
            if k >= pixels {
                return Err(format!("decodes to more than {pixels} bytes"));
            }
            let i = first + k * stride;
            *dst.get_mut(i)
                .ok_or_else(|| "output index out of range".to_string())? = value;
            k += 1;
            Ok(())
        }
    };
    let (mut pos, mut produced) = (0usize, 0usize);
    while produced < pixels {
        let Some(&header) = segment.get(pos) else {
            return Err(format!(
                "truncated: {produced} of {pixels} bytes decoded at the end of its {} bytes",
                segment.len()
            ));
        };
        pos += 1;
        let n = header as i8;
        if n >= 0 {
            let count = n as usize + 1;
            let literal = segment.get(pos..pos + count).ok_or_else(|| {
                format!(
                    "truncated: a literal run of {count} bytes at byte {pos} of {}",
                    segment.len()
                )
            })?;
            for &v in literal {
                put(dst, v)?;
            }
            pos += count;
            produced += count;
        } else if n != -128 {
            let count = 1 - n as isize;
            let &v = segment.get(pos).ok_or_else(|| {
                format!(
                    "truncated: a repeat run at byte {pos} of {} has no value",
                    segment.len()
                )
            })?;
            for _ in 0..count {
                put(dst, v)?;
            }
            pos += 1;
            produced += count as usize;
        }
    }
    if segment.len() - pos > 1 {
        return Err(format!(
            "{} bytes left after the {pixels} bytes of the image",
            segment.len() - pos
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(offsets: &[u32]) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_BYTES];
        h[..4].copy_from_slice(&(offsets.len() as u32).to_le_bytes());
        for (i, o) in offsets.iter().enumerate() {
            h[4 + i * 4..8 + i * 4].copy_from_slice(&o.to_le_bytes());
        }
        h
    }

    const SHAPE16: FrameShape = FrameShape {
        pixels: 4,
        samples_per_pixel: 1,
        bytes_per_sample: 2,
    };

    #[test]
    fn sixteen_bit_frame_decodes_to_little_endian_samples() {
        // MSB segment: repeat 0x01 four times; LSB segment: literal 10 20 30 40.
        let mut f = header(&[64, 66]);
        f.extend_from_slice(&[(-3i8) as u8, 0x01]);
        f.extend_from_slice(&[3, 10, 20, 30, 40, 0]);
        let mut out = vec![0u8; SHAPE16.frame_bytes()];
        decode_frame(&f, SHAPE16, &mut out).unwrap();
        assert_eq!(out, vec![10, 1, 20, 1, 30, 1, 40, 1]);
    }

    #[test]
    fn corrupt_frames_are_errors_never_panics() {
        let decode = |f: &[u8]| decode_frame(f, SHAPE16, &mut [0u8; 8]);
        let short = vec![1u8, 0, 0];
        assert!(decode(&short).unwrap_err().contains("header truncated"));
        let mut truncated = header(&[64, 66]);
        truncated.extend_from_slice(&[(-3i8) as u8, 0x01, 3, 10, 20]);
        let e = decode(&truncated).unwrap_err();
        assert!(e.contains("segment 2") && e.contains("truncated"), "{e}");
        let mut past_end = header(&[64, 9999]);
        past_end.extend_from_slice(&[0u8; 8]);
        assert!(decode(&past_end).unwrap_err().contains("spans bytes"));
        let mut too_long = header(&[64, 66]);
        too_long.extend_from_slice(&[(-5i8) as u8, 1, (-3i8) as u8, 2]);
        assert!(decode(&too_long).unwrap_err().contains("more than 4"));
    }
}
