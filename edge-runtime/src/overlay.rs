//! `overlay.png`: a montage of the study's slices, a perfusion map in grey with the lesion
//! outline in red and, for a model run, the threshold rule's outline in cyan (where it does
//! not run along the model's), for a person to look at. Slices run left to right, top to bottom
//! (slice 0 first); in each tile the image x axis runs to the right and the y axis up
//! (row `ny − 1` at the top). No text is drawn (no fonts needed).
//!
//! Written as a PNG stream one band of tiles at a time (the PNG encoder buffers and
//! compresses into the file as it goes): memory is one band buffer sized for
//! [`MAX_COLUMNS`] tiles, whatever the number of slices (a study with fewer slices uses a
//! narrower image but the same buffer, so peak memory does not depend on the slice count). Tiles are at most
//! [`MAX_TILE_PX`] pixels on a side (nearest-neighbour downsampling of larger slices).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::EdgeError;

/// Largest tile side, pixels.
pub const MAX_TILE_PX: usize = 256;
/// Most tiles per montage row.
pub const MAX_COLUMNS: usize = 6;
const GAP_PX: usize = 2;
const BACKGROUND: [u8; 3] = [16, 16, 24];
const OUTLINE: [u8; 3] = [255, 40, 40];
/// The threshold rule's outline beside a model's (cyan: apart from red for every reader).
const REFERENCE_OUTLINE: [u8; 3] = [40, 220, 255];

/// Streams the montage to a PNG file.
pub struct MontageWriter {
    path: PathBuf,
    stream: Option<png::StreamWriter<'static, File>>,
    nx: usize,
    ny: usize,
    step: usize,
    tile_w: usize,
    tile_h: usize,
    columns: usize,
    width: usize,
    /// Pixels per row of `band` (the width of a [`MAX_COLUMNS`] montage, ≥ `width`).
    stride: usize,
    /// One band of RGB rows: a top gap plus `tile_h` rows of `stride` pixels, of which the
    /// first `width` are the image.
    band: Vec<u8>,
    /// Tile mask at tile resolution, reused.
    tile_mask: Vec<u8>,
    /// The reference (threshold rule) mask at tile resolution, reused.
    tile_reference: Vec<u8>,
    in_band: usize,
    slices_added: usize,
    n_slices: usize,
}

fn png_error(path: &Path, e: png::EncodingError) -> EdgeError {
    let io = match e {
        png::EncodingError::IoError(io) => io,
        other => std::io::Error::other(other.to_string()),
    };
    EdgeError::output(path, io)
}

impl MontageWriter {
    /// Starts `path` for `n_slices` slices of `nx × ny` pixels.
    pub fn create(path: &Path, nx: usize, ny: usize, n_slices: usize) -> Result<Self, EdgeError> {
        let invalid = |what: &str| {
            EdgeError::output(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned()),
            )
        };
        if nx == 0 || ny == 0 || n_slices == 0 {
            return Err(invalid("empty image"));
        }
        let step = nx.max(ny).div_ceil(MAX_TILE_PX).max(1);
        let (tile_w, tile_h) = (nx.div_ceil(step), ny.div_ceil(step));
        let columns = n_slices.min(MAX_COLUMNS);
        let rows = n_slices.div_ceil(columns);
        let width = columns * tile_w + (columns + 1) * GAP_PX;
        let stride = MAX_COLUMNS * tile_w + (MAX_COLUMNS + 1) * GAP_PX;
        let height = rows * tile_h + (rows + 1) * GAP_PX;
        let (w32, h32) = match (u32::try_from(width), u32::try_from(height)) {
            (Ok(w), Ok(h)) => (w, h),
            _ => return Err(invalid("montage too large")),
        };
        let file = File::create(path).map_err(|e| EdgeError::output(path, e))?;
        let mut encoder = png::Encoder::new(file, w32, h32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let stream = encoder
            .write_header()
            .and_then(png::Writer::into_stream_writer)
            .map_err(|e| png_error(path, e))?;
        let mut w = MontageWriter {
            path: path.to_path_buf(),
            stream: Some(stream),
            nx,
            ny,
            step,
            tile_w,
            tile_h,
            columns,
            width,
            stride,
            band: vec![0; (GAP_PX + tile_h) * stride * 3],
            tile_mask: vec![0; tile_w * tile_h],
            tile_reference: vec![0; tile_w * tile_h],
            in_band: 0,
            slices_added: 0,
            n_slices,
        };
        w.clear_band();
        Ok(w)
    }

    fn clear_band(&mut self) {
        for px in self.band.chunks_exact_mut(3) {
            px.copy_from_slice(&BACKGROUND);
        }
    }

    /// Adds the next slice: `grey` holds display values in `[0, 1]` and `mask` the lesion
    /// (non-zero), both `nx · ny`, x fastest.
    pub fn add_slice(&mut self, grey: &[f32], mask: &[u8]) -> Result<(), EdgeError> {
        self.add_slice_with_reference(grey, mask, None)
    }

    /// [`MontageWriter::add_slice`] with a second, reference outline (the threshold rule's
    /// mask beside a model's, `nx · ny`), drawn where the lesion outline is not.
    pub fn add_slice_with_reference(
        &mut self,
        grey: &[f32],
        mask: &[u8],
        reference: Option<&[u8]>,
    ) -> Result<(), EdgeError> {
        let n = self.nx * self.ny;
        if grey.len() != n
            || mask.len() != n
            || reference.is_some_and(|r| r.len() != n)
            || self.slices_added >= self.n_slices
        {
            return Err(EdgeError::output(
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "slice of the wrong size or one slice too many",
                ),
            ));
        }
        let (tw, th, step) = (self.tile_w, self.tile_h, self.step);
        // Source voxel of tile pixel (tx, ty): x = tx·step, y = ny − 1 − ty·step.
        let src = |tx: usize, ty: usize| -> usize {
            let x = (tx * step).min(self.nx - 1);
            let y = self.ny - 1 - (ty * step).min(self.ny - 1);
            y * self.nx + x
        };
        for ty in 0..th {
            for tx in 0..tw {
                self.tile_mask[ty * tw + tx] = u8::from(mask[src(tx, ty)] != 0);
                self.tile_reference[ty * tw + tx] =
                    reference.map_or(0, |r| u8::from(r[src(tx, ty)] != 0));
            }
        }
        let is_edge = |tile: &[u8], tx: usize, ty: usize| {
            let at = |x: isize, y: isize| {
                x >= 0
                    && y >= 0
                    && (x as usize) < tw
                    && (y as usize) < th
                    && tile[y as usize * tw + x as usize] != 0
            };
            let (x, y) = (tx as isize, ty as isize);
            at(x, y) && !(at(x - 1, y) && at(x + 1, y) && at(x, y - 1) && at(x, y + 1))
        };
        let x0 = GAP_PX + self.in_band * (tw + GAP_PX);
        for ty in 0..th {
            let row = (GAP_PX + ty) * self.stride;
            for tx in 0..tw {
                let rgb = if is_edge(&self.tile_mask, tx, ty) {
                    OUTLINE
                } else if is_edge(&self.tile_reference, tx, ty) {
                    REFERENCE_OUTLINE
                } else {
                    let g = (grey[src(tx, ty)].clamp(0.0, 1.0) * 255.0).round() as u8;
                    [g, g, g]
                };
                let o = (row + x0 + tx) * 3;
                self.band[o..o + 3].copy_from_slice(&rgb);
            }
        }
        self.in_band += 1;
        self.slices_added += 1;
        if self.in_band == self.columns || self.slices_added == self.n_slices {
            self.flush_band()?;
        }
        Ok(())
    }

    fn flush_band(&mut self) -> Result<(), EdgeError> {
        let path = self.path.clone();
        if let Some(stream) = self.stream.as_mut() {
            for row in self.band.chunks_exact(self.stride * 3) {
                stream
                    .write_all(&row[..self.width * 3])
                    .map_err(|e| EdgeError::output(&path, e))?;
            }
        }
        self.in_band = 0;
        self.clear_band();
        Ok(())
    }

    /// Writes the bottom margin, finishes the PNG and syncs the file. Every slice must have
    /// been added.
    pub fn finish(mut self) -> Result<PathBuf, EdgeError> {
        let path = self.path.clone();
        if self.slices_added != self.n_slices {
            return Err(EdgeError::output(
                &path,
                std::io::Error::other(format!(
                    "montage has {} of {} slices",
                    self.slices_added, self.n_slices
                )),
            ));
        }
        let Some(mut stream) = self.stream.take() else {
            return Err(EdgeError::output(
                &path,
                std::io::Error::other("finished twice"),
            ));
        };
        let margin: Vec<u8> = (0..GAP_PX * self.width).flat_map(|_| BACKGROUND).collect();
        stream
            .write_all(&margin)
            .map_err(|e| EdgeError::output(&path, e))?;
        stream.finish().map_err(|e| png_error(&path, e))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| EdgeError::output(&path, e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn montage_layout_and_outline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.png");
        let (nx, ny) = (10, 8);
        let mut w = MontageWriter::create(&path, nx, ny, 3).unwrap();
        let grey = vec![0.5f32; nx * ny];
        let mut mask = vec![0u8; nx * ny];
        // A 3×3 lesion at x 4..7, y 2..5: its centre pixel is inside, the rest outline.
        for y in 2..5 {
            for x in 4..7 {
                mask[y * nx + x] = 1;
            }
        }
        for _ in 0..3 {
            w.add_slice(&grey, &mask).unwrap();
        }
        assert!(w.add_slice(&grey, &mask).is_err());
        w.finish().unwrap();

        let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3 * 10 + 4 * 2, 8 + 2 * 2));
        let px = |x: usize, y: usize| {
            let o = (y * info.width as usize + x) * 3;
            [buf[o], buf[o + 1], buf[o + 2]]
        };
        // Tile 0 starts at (2, 2); image y = 2 is tile row ny − 1 − 2 = 5.
        assert_eq!(px(2 + 4, 2 + 5), OUTLINE);
        assert_eq!(px(2 + 5, 2 + 4), [128, 128, 128]); // inside (y = 3)
        assert_eq!(px(2, 2), [128, 128, 128]);
        assert_eq!(px(0, 0), BACKGROUND);
    }

    #[test]
    fn the_reference_outline_is_drawn_where_the_lesion_outline_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.png");
        let (nx, ny) = (10, 8);
        let mut w = MontageWriter::create(&path, nx, ny, 1).unwrap();
        let grey = vec![0.5f32; nx * ny];
        let (mut mask, mut rule) = (vec![0u8; nx * ny], vec![0u8; nx * ny]);
        // Model: 3×3 at x 4..7, y 2..5; rule: 5×5 around it at x 3..8, y 1..6.
        for y in 1..6 {
            for x in 3..8 {
                rule[y * nx + x] = 1;
                if (2..5).contains(&y) && (4..7).contains(&x) {
                    mask[y * nx + x] = 1;
                }
            }
        }
        assert!(
            w.add_slice_with_reference(&grey, &mask, Some(&rule[1..]))
                .is_err()
        );
        w.add_slice_with_reference(&grey, &mask, Some(&rule))
            .unwrap();
        w.finish().unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let px = |x: usize, y: usize| {
            let o = ((2 + ny - 1 - y) * info.width as usize + 2 + x) * 3;
            [buf[o], buf[o + 1], buf[o + 2]]
        };
        assert_eq!(px(4, 2), OUTLINE); // the model's outline wins
        assert_eq!(px(3, 1), REFERENCE_OUTLINE); // the rule's alone
        assert_eq!(px(7, 5), REFERENCE_OUTLINE);
        assert_eq!(px(5, 3), [128, 128, 128]); // inside both
        assert_eq!(px(0, 0), [128, 128, 128]); // outside both
    }
}
