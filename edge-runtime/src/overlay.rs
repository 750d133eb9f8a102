//! PNG outputs for a person to look at: `overlay.png` ([`MontageWriter`]) and, when the maps
//! were computed from the raw series, the arterial input and venous output curves
//! ([`write_curve_plot`]).
//!
//! `overlay.png`: a montage of the study's slices, a perfusion map in grey with the lesion
//! outline in red and, for a model run, the threshold rule's outline in cyan (where it does
//! not run along the model's), for a person to look at. Slices run left to right, top to bottom
//! (slice 0 first); in each tile the image x axis runs to the right and the y axis up
//! (row `ny − 1` at the top). No text is drawn (no fonts needed).
//!
//! [`colour_slice`] gives one slice in the same colours at full resolution (the DICOM
//! node's Secondary Capture overlay): one colouring for both.
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

/// Whether pixel `(x, y)` of the `w × h` mask `mask` is on its outline (inside, with a
/// 4-neighbour outside or beyond the border).
fn is_edge(mask: &[u8], w: usize, h: usize, x: usize, y: usize) -> bool {
    let at = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && mask[y as usize * w + x as usize] != 0
    };
    let (x, y) = (x as isize, y as isize);
    at(x, y) && !(at(x - 1, y) && at(x + 1, y) && at(x, y - 1) && at(x, y + 1))
}

/// The one colouring of the overlay: the lesion outline in red, else the reference outline
/// in cyan, else `grey` (display value in `[0, 1]`) in grey.
fn pixel_colour(grey: f32, lesion_edge: bool, reference_edge: bool) -> [u8; 3] {
    if lesion_edge {
        OUTLINE
    } else if reference_edge {
        REFERENCE_OUTLINE
    } else {
        let g = (grey.clamp(0.0, 1.0) * 255.0).round() as u8;
        [g, g, g]
    }
}

/// One slice coloured as in the montage, at full resolution and in the slice's own pixel
/// order (`x` fastest, row `y = 0` first, no flip: the order of the source image, as a
/// DICOM Secondary Capture beside it needs): `grey`, `mask` and `reference` are `nx · ny`,
/// `rgb` is `3 · nx · ny`. Sizes that disagree are an [`EdgeError::Output`] naming `what`.
pub fn colour_slice(
    grey: &[f32],
    mask: &[u8],
    reference: Option<&[u8]>,
    nx: usize,
    ny: usize,
    rgb: &mut [u8],
) -> Result<(), EdgeError> {
    let n = nx * ny;
    if grey.len() != n
        || mask.len() != n
        || reference.is_some_and(|r| r.len() != n)
        || rgb.len() != 3 * n
    {
        return Err(EdgeError::output(
            "overlay slice",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("slice of {nx}×{ny}: buffers of the wrong size"),
            ),
        ));
    }
    for y in 0..ny {
        for x in 0..nx {
            let i = y * nx + x;
            let c = pixel_colour(
                grey[i],
                is_edge(mask, nx, ny, x, y),
                reference.is_some_and(|r| is_edge(r, nx, ny, x, y)),
            );
            rgb[3 * i..3 * i + 3].copy_from_slice(&c);
        }
    }
    Ok(())
}

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
        let x0 = GAP_PX + self.in_band * (tw + GAP_PX);
        for ty in 0..th {
            let row = (GAP_PX + ty) * self.stride;
            for tx in 0..tw {
                let rgb = pixel_colour(
                    grey[src(tx, ty)],
                    is_edge(&self.tile_mask, tw, th, tx, ty),
                    is_edge(&self.tile_reference, tw, th, tx, ty),
                );
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

/// One curve of a [`write_curve_plot`]: values per frame and a colour.
#[derive(Debug, Clone, Copy)]
pub struct PlotCurve<'a> {
    /// Values, one per frame (HU).
    pub values: &'a [f32],
    /// Line colour, RGB.
    pub colour: [u8; 3],
}

/// Size of a curve plot, pixels.
pub const PLOT_SIZE_PX: (usize, usize) = (640, 360);
const PLOT_MARGIN_PX: usize = 24;
const PLOT_BACKGROUND: [u8; 3] = [250, 250, 250];
const PLOT_AXIS: [u8; 3] = [90, 90, 90];
const PLOT_GRID: [u8; 3] = [215, 215, 215];
/// Time between vertical grid lines, s.
const PLOT_GRID_S: f32 = 10.0;

/// Draws `curves` (HU per frame, `dt_s` apart) as lines into a PNG at `path`: time along x
/// from 0 to the last frame, with a grid line every 10 s; HU along y from the lowest value
/// (at most 0, the axis drawn there) to the highest. No text (no fonts): the report holds the
/// numbers. Memory: one `640 × 360` RGB image.
pub fn write_curve_plot(path: &Path, dt_s: f32, curves: &[PlotCurve<'_>]) -> Result<(), EdgeError> {
    let (w, h) = PLOT_SIZE_PX;
    let mut img = vec![0u8; w * h * 3];
    img.chunks_exact_mut(3)
        .for_each(|p| p.copy_from_slice(&PLOT_BACKGROUND));
    let n = curves.iter().map(|c| c.values.len()).max().unwrap_or(0);
    let finite = || {
        curves
            .iter()
            .flat_map(|c| c.values.iter().copied())
            .filter(|v| v.is_finite())
    };
    let lo = finite().fold(0.0f32, f32::min);
    let hi = finite().fold(lo + 1.0, f32::max);
    let (x0, x1) = (PLOT_MARGIN_PX as f32, (w - PLOT_MARGIN_PX) as f32);
    let (y0, y1) = ((h - PLOT_MARGIN_PX) as f32, PLOT_MARGIN_PX as f32);
    let span_s = (n.saturating_sub(1) as f32 * dt_s).max(dt_s).max(1e-3);
    let px = |t_s: f32| x0 + (x1 - x0) * t_s / span_s;
    let py = |v: f32| y0 + (y1 - y0) * (v - lo) / (hi - lo);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
            let i = (y as usize * w + x as usize) * 3;
            img[i..i + 3].copy_from_slice(&c);
        }
    };
    let line =
        |put: &mut dyn FnMut(i64, i64, [u8; 3]), a: (f32, f32), b: (f32, f32), c, thick: bool| {
            let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
            for k in 0..=steps {
                let f = k as f32 / steps as f32;
                let (x, y) = (
                    (a.0 + f * (b.0 - a.0)).round() as i64,
                    (a.1 + f * (b.1 - a.1)).round() as i64,
                );
                put(x, y, c);
                if thick {
                    put(x + 1, y, c);
                    put(x, y + 1, c);
                }
            }
        };
    let mut t = PLOT_GRID_S;
    while t < span_s {
        line(&mut put, (px(t), y0), (px(t), y1), PLOT_GRID, false);
        t += PLOT_GRID_S;
    }
    line(&mut put, (x0, py(0.0)), (x1, py(0.0)), PLOT_AXIS, false);
    line(&mut put, (x0, y0), (x0, y1), PLOT_AXIS, false);
    for c in curves {
        let points: Vec<(f32, f32)> = c
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, &v)| (px(k as f32 * dt_s), py(v)))
            .collect();
        for pair in points.windows(2) {
            line(&mut put, pair[0], pair[1], c.colour, true);
        }
    }
    let file = File::create(path).map_err(|e| EdgeError::output(path, e))?;
    let (w32, h32) = (w as u32, h as u32);
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w32, h32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| png_error(path, e))?;
    writer
        .write_image_data(&img)
        .map_err(|e| png_error(path, e))?;
    writer.finish().map_err(|e| png_error(path, e))?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| EdgeError::output(path, e))
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
    fn a_full_resolution_slice_is_coloured_as_the_montage_without_flip() {
        let (nx, ny) = (10, 8);
        let grey = vec![0.5f32; nx * ny];
        let mut mask = vec![0u8; nx * ny];
        for y in 2..5 {
            for x in 4..7 {
                mask[y * nx + x] = 1;
            }
        }
        let mut rgb = vec![0u8; 3 * nx * ny];
        colour_slice(&grey, &mask, None, nx, ny, &mut rgb).unwrap();
        let px = |x: usize, y: usize| {
            let o = (y * nx + x) * 3;
            [rgb[o], rgb[o + 1], rgb[o + 2]]
        };
        assert_eq!(px(4, 2), OUTLINE);
        assert_eq!(px(5, 3), [128, 128, 128]);
        assert_eq!(px(0, 0), [128, 128, 128]);
        assert!(colour_slice(&grey, &mask, None, nx, ny, &mut rgb[1..]).is_err());
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

    #[test]
    fn curve_plot_draws_each_curve_in_its_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let aif: Vec<f32> = (0..40)
            .map(|k| if (5..15).contains(&k) { 300.0 } else { 0.0 })
            .collect();
        let vof: Vec<f32> = (0..40)
            .map(|k| if (10..25).contains(&k) { 200.0 } else { -5.0 })
            .collect();
        let red = [220, 30, 30];
        let blue = [30, 60, 220];
        write_curve_plot(
            &path,
            1.5,
            &[
                PlotCurve {
                    values: &aif,
                    colour: red,
                },
                PlotCurve {
                    values: &vof,
                    colour: blue,
                },
            ],
        )
        .unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width as usize, info.height as usize), PLOT_SIZE_PX);
        let count = |c: [u8; 3]| buf.chunks_exact(3).filter(|p| *p == c).count();
        assert!(
            count(red) > 300 && count(blue) > 300,
            "{} {}",
            count(red),
            count(blue)
        );
    }
}
