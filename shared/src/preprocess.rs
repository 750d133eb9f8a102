//! Per-slice preprocessing shared by trainer and edge runtime: replacing non-finite
//! values, normalising channels, and mapping between the image grid and the model grid
//! (resampling to the target spacing plus centred padding/cropping) in both directions.
//!
//! Everything works into caller-provided buffers; nothing allocates.

use crate::brain_mask::compute_brain_mask;
use crate::config::PreprocessConfig;
use crate::error::CoreError;
use crate::stats::NormParams;

/// Replaces NaN and ±inf in `values` by `replacement`; returns how many were replaced.
pub fn sanitize_non_finite(values: &mut [f32], replacement: f32) -> usize {
    let mut n = 0;
    for v in values.iter_mut() {
        if !v.is_finite() {
            *v = replacement;
            n += 1;
        }
    }
    n
}

/// The in-plane grid of an image slice: `nx` columns (x, fastest in memory) by `ny` rows.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SliceGeometry {
    /// Columns.
    pub nx: usize,
    /// Rows.
    pub ny: usize,
    /// Column spacing, millimetres.
    pub spacing_x_mm: f32,
    /// Row spacing, millimetres.
    pub spacing_y_mm: f32,
}

impl SliceGeometry {
    /// Pixels in the slice.
    pub fn len(&self) -> usize {
        self.nx * self.ny
    }
    /// Whether the slice has no pixels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Area of one pixel in mm².
    pub fn pixel_area_mm2(&self) -> f64 {
        f64::from(self.spacing_x_mm) * f64::from(self.spacing_y_mm)
    }
}

/// One axis of the map: `image_index = scale * model_index + offset` (pixel centres).
#[derive(Debug, Clone, Copy, PartialEq)]
struct AxisMap {
    scale: f64,
    offset: f64,
}

impl AxisMap {
    /// Centres the model axis (`n_model` pixels of `target_mm`) on the image axis
    /// (`n_image` pixels of `spacing_mm`). Without resampling the offset is a whole
    /// number of pixels, so the map is pure padding/cropping and exactly invertible.
    fn new(n_image: usize, spacing_mm: f32, n_model: usize, target_mm: f32) -> AxisMap {
        let scale = f64::from(target_mm) / f64::from(spacing_mm);
        let offset = if (scale - 1.0).abs() < 1e-6 {
            libm::floor((n_image as f64 - n_model as f64) / 2.0)
        } else {
            (n_image as f64 / 2.0 - 0.5) - scale * (n_model as f64 / 2.0 - 0.5)
        };
        let scale = if (scale - 1.0).abs() < 1e-6 {
            1.0
        } else {
            scale
        };
        AxisMap { scale, offset }
    }
    fn to_image(self, model: f64) -> f64 {
        self.scale * model + self.offset
    }
    fn to_model(self, image: f64) -> f64 {
        (image - self.offset) / self.scale
    }
}

/// The map between an image slice grid and the model input grid (`height × width` pixels
/// of `target_spacing_mm`, centred on the image). Forward ([`GridMap::image_to_model_bilinear`])
/// resamples image values onto the model grid; the inverse
/// ([`GridMap::model_to_image_bilinear`], [`GridMap::model_to_image_nearest`]) maps model
/// outputs back onto the original grid. The two coordinate maps are exact inverses of
/// each other; without resampling (image spacing = target) they are a whole-pixel shift,
/// so a mask survives forward + inverse unchanged wherever it lies inside the model grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridMap {
    image: SliceGeometry,
    width: usize,
    height: usize,
    x: AxisMap,
    y: AxisMap,
}

impl GridMap {
    /// The map for `image` under `config` (target spacing and input size).
    pub fn new(image: SliceGeometry, config: &PreprocessConfig) -> Result<GridMap, CoreError> {
        Self::with_target(
            image,
            config.target_spacing_mm,
            usize::from(config.input_width),
            usize::from(config.input_height),
        )
    }

    /// The map for `image` onto a `width × height` grid of `target_spacing_mm`.
    pub fn with_target(
        image: SliceGeometry,
        target_spacing_mm: f32,
        width: usize,
        height: usize,
    ) -> Result<GridMap, CoreError> {
        let bad = |reason| Err(CoreError::InvalidGeometry { reason });
        if image.nx == 0 || image.ny == 0 || width == 0 || height == 0 {
            return bad("zero-sized grid");
        }
        let ok = |s: f32| s.is_finite() && s > 0.0;
        if !ok(image.spacing_x_mm) || !ok(image.spacing_y_mm) || !ok(target_spacing_mm) {
            return bad("spacings must be finite and > 0");
        }
        Ok(GridMap {
            image,
            width,
            height,
            x: AxisMap::new(image.nx, image.spacing_x_mm, width, target_spacing_mm),
            y: AxisMap::new(image.ny, image.spacing_y_mm, height, target_spacing_mm),
        })
    }

    /// The image grid.
    pub fn image(&self) -> SliceGeometry {
        self.image
    }
    /// `(width, height)` of the model grid.
    pub fn model_size(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    /// Continuous image coordinates (x, y) of a model pixel centre (col, row).
    pub fn model_to_image_coords(&self, col: f64, row: f64) -> (f64, f64) {
        (self.x.to_image(col), self.y.to_image(row))
    }
    /// Continuous model coordinates (col, row) of an image pixel centre (x, y).
    pub fn image_to_model_coords(&self, x: f64, y: f64) -> (f64, f64) {
        (self.x.to_model(x), self.y.to_model(y))
    }

    fn check(&self, what: &'static str, expected: usize, got: usize) -> Result<(), CoreError> {
        if expected == got {
            Ok(())
        } else {
            Err(CoreError::LengthMismatch {
                what,
                expected,
                got,
            })
        }
    }

    /// Resamples an image slice (`ny × nx`) onto the model grid (`height × width`) with
    /// bilinear interpolation; model pixels outside the image get `fill`.
    pub fn image_to_model_bilinear(
        &self,
        image: &[f32],
        fill: f32,
        model: &mut [f32],
    ) -> Result<(), CoreError> {
        self.check("image slice", self.image.len(), image.len())?;
        self.check("model plane", self.width * self.height, model.len())?;
        for (row, out_row) in model.chunks_exact_mut(self.width).enumerate() {
            let y = self.y.to_image(row as f64);
            for (col, out) in out_row.iter_mut().enumerate() {
                let x = self.x.to_image(col as f64);
                *out = bilinear(image, self.image.nx, self.image.ny, x, y, fill);
            }
        }
        Ok(())
    }

    /// Resamples a label slice (`ny × nx`) onto the model grid with nearest neighbour;
    /// outside the image → 0.
    pub fn image_to_model_nearest(&self, image: &[u8], model: &mut [u8]) -> Result<(), CoreError> {
        self.check("image labels", self.image.len(), image.len())?;
        self.check("model labels", self.width * self.height, model.len())?;
        for (row, out_row) in model.chunks_exact_mut(self.width).enumerate() {
            let y = self.y.to_image(row as f64);
            for (col, out) in out_row.iter_mut().enumerate() {
                let x = self.x.to_image(col as f64);
                *out = nearest(image, self.image.nx, self.image.ny, x, y);
            }
        }
        Ok(())
    }

    /// Maps a model-grid plane (e.g. lesion probabilities) back onto the image grid with
    /// bilinear interpolation; image pixels outside the model grid get `fill`.
    pub fn model_to_image_bilinear(
        &self,
        model: &[f32],
        fill: f32,
        image: &mut [f32],
    ) -> Result<(), CoreError> {
        self.check("model plane", self.width * self.height, model.len())?;
        self.check("image slice", self.image.len(), image.len())?;
        for (y, out_row) in image.chunks_exact_mut(self.image.nx).enumerate() {
            let row = self.y.to_model(y as f64);
            for (x, out) in out_row.iter_mut().enumerate() {
                let col = self.x.to_model(x as f64);
                *out = bilinear(model, self.width, self.height, col, row, fill);
            }
        }
        Ok(())
    }

    /// Maps a model-grid mask back onto the image grid with nearest neighbour; image
    /// pixels outside the model grid get 0.
    pub fn model_to_image_nearest(&self, model: &[u8], image: &mut [u8]) -> Result<(), CoreError> {
        self.check("model labels", self.width * self.height, model.len())?;
        self.check("image labels", self.image.len(), image.len())?;
        for (y, out_row) in image.chunks_exact_mut(self.image.nx).enumerate() {
            let row = self.y.to_model(y as f64);
            for (x, out) in out_row.iter_mut().enumerate() {
                let col = self.x.to_model(x as f64);
                *out = nearest(model, self.width, self.height, col, row);
            }
        }
        Ok(())
    }
}

/// Bilinear sample at continuous pixel coordinates (pixel centres at integers); points
/// more than half a pixel outside the grid get `fill`, points in the outer half pixel
/// take the edge value.
fn bilinear(values: &[f32], w: usize, h: usize, x: f64, y: f64, fill: f32) -> f32 {
    if x < -0.5 || y < -0.5 || x > w as f64 - 0.5 || y > h as f64 - 0.5 {
        return fill;
    }
    let xc = x.clamp(0.0, (w - 1) as f64);
    let yc = y.clamp(0.0, (h - 1) as f64);
    let x0 = libm::floor(xc) as usize;
    let y0 = libm::floor(yc) as usize;
    let x1 = (x0 + 1).min(w - 1);
    let y1 = (y0 + 1).min(h - 1);
    let fx = (xc - x0 as f64) as f32;
    let fy = (yc - y0 as f64) as f32;
    let at = |xx: usize, yy: usize| values.get(yy * w + xx).copied().unwrap_or(fill);
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Nearest-neighbour sample (ties round up); outside the grid → 0.
fn nearest(values: &[u8], w: usize, h: usize, x: f64, y: f64) -> u8 {
    let xi = libm::floor(x + 0.5);
    let yi = libm::floor(y + 0.5);
    if xi < 0.0 || yi < 0.0 || xi >= w as f64 || yi >= h as f64 {
        return 0;
    }
    values
        .get(yi as usize * w + xi as usize)
        .copied()
        .unwrap_or(0)
}

/// Caller-owned scratch buffers for [`prepare_model_input`], sized once per study.
pub struct SliceScratch<'a> {
    /// Brain mask of the slice, `nx * ny`.
    pub brain_mask: &'a mut [u8],
    /// One normalised channel on the image grid, `nx * ny`.
    pub normalized: &'a mut [f32],
}

/// Turns one slice of raw channels into the model input.
///
/// `raw` holds the slice's channel values on the image grid in config channel order
/// (already free of NaN/inf: see [`sanitize_non_finite`]); `norm` the volume's
/// normalisation. Writes `out` as `[C, height, width]` (channel-major, row-major planes):
/// brain voxels normalised, non-brain voxels and the padding 0. Returns the slice's brain
/// voxel count. Memory: the caller's buffers only.
pub fn prepare_model_input(
    config: &PreprocessConfig,
    norm: &NormParams,
    map: &GridMap,
    raw: &[&[f32]],
    scratch: SliceScratch<'_>,
    out: &mut [f32],
) -> Result<usize, CoreError> {
    let n_channels = config.n_channels();
    if raw.len() != n_channels || norm.len() != n_channels {
        return Err(CoreError::ChannelCount {
            expected: n_channels,
            got: if raw.len() != n_channels {
                raw.len()
            } else {
                norm.len()
            },
        });
    }
    let image_len = map.image().len();
    let (w, h) = map.model_size();
    if out.len() != n_channels * w * h {
        return Err(CoreError::LengthMismatch {
            what: "model input",
            expected: n_channels * w * h,
            got: out.len(),
        });
    }
    if scratch.normalized.len() != image_len {
        return Err(CoreError::LengthMismatch {
            what: "normalisation scratch",
            expected: image_len,
            got: scratch.normalized.len(),
        });
    }
    let brain = compute_brain_mask(config, raw, scratch.brain_mask)?;
    for ((values, params), plane) in raw.iter().zip(norm.iter()).zip(out.chunks_exact_mut(w * h)) {
        for ((dst, &x), &inside) in scratch
            .normalized
            .iter_mut()
            .zip(values.iter())
            .zip(scratch.brain_mask.iter())
        {
            *dst = if inside != 0 { params.apply(x) } else { 0.0 };
        }
        map.image_to_model_bilinear(scratch.normalized, 0.0, plane)?;
    }
    Ok(brain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(nx: usize, ny: usize, s: f32) -> SliceGeometry {
        SliceGeometry {
            nx,
            ny,
            spacing_x_mm: s,
            spacing_y_mm: s,
        }
    }

    #[test]
    fn sanitize_counts_and_replaces() {
        let mut v = [1.0, f32::NAN, f32::INFINITY, -f32::INFINITY, 2.0];
        assert_eq!(sanitize_non_finite(&mut v, 0.0), 3);
        assert_eq!(v, [1.0, 0.0, 0.0, 0.0, 2.0]);
    }

    #[test]
    fn coordinate_maps_are_exact_inverses() {
        for (nx, s, w, t) in [
            (256, 0.78f32, 160, 1.5f32),
            (256, 1.09, 160, 1.5),
            (200, 1.0, 256, 1.0),
            (7, 0.9, 4, 2.0),
        ] {
            let m = GridMap::with_target(geom(nx, nx, s), t, w, w).unwrap();
            for c in [0.0, 1.5, w as f64 - 1.0] {
                let (x, y) = m.model_to_image_coords(c, c);
                let (c2, r2) = m.image_to_model_coords(x, y);
                assert!((c2 - c).abs() < 1e-9 && (r2 - c).abs() < 1e-9);
            }
            // centres coincide
            let (cx, _) = m.model_to_image_coords(w as f64 / 2.0 - 0.5, 0.0);
            let want = if (t / s - 1.0).abs() < 1e-6 {
                libm::floor((nx as f64 - w as f64) / 2.0) + w as f64 / 2.0 - 0.5
            } else {
                nx as f64 / 2.0 - 0.5
            };
            assert!((cx - want).abs() < 1e-9, "{cx} vs {want}");
        }
    }

    #[test]
    fn pad_and_crop_without_resampling_round_trip_exactly() {
        // 9×7 image into a 12×4 model grid at the same spacing: pads x, crops y.
        let img = geom(9, 7, 1.0);
        let m = GridMap::with_target(img, 1.0, 12, 4).unwrap();
        let labels: [u8; 63] = core::array::from_fn(|i| (i % 5 == 0) as u8);
        let mut model = [0u8; 48];
        m.image_to_model_nearest(&labels, &mut model).unwrap();
        let mut back = [0u8; 63];
        m.model_to_image_nearest(&model, &mut back).unwrap();
        // Rows inside the crop come back exactly; cropped rows are 0.
        let (_, r0) = m.model_to_image_coords(0.0, 0.0);
        let first = r0 as usize;
        for y in 0..7 {
            for x in 0..9 {
                let want = if (first..first + 4).contains(&y) {
                    labels[y * 9 + x]
                } else {
                    0
                };
                assert_eq!(back[y * 9 + x], want, "x {x} y {y}");
            }
        }
        // Bilinear on values is exact too (integer shift).
        let values: [f32; 63] = core::array::from_fn(|i| i as f32);
        let mut mv = [0f32; 48];
        m.image_to_model_bilinear(&values, -1.0, &mut mv).unwrap();
        let mut vb = [0f32; 63];
        m.model_to_image_bilinear(&mv, -7.0, &mut vb).unwrap();
        for y in first..first + 4 {
            for x in 0..9 {
                assert_eq!(vb[y * 9 + x], values[y * 9 + x]);
            }
        }
    }

    #[test]
    fn resampled_mask_returns_to_its_place() {
        // A disc of radius 30 mm on a 0.8 mm grid, through a 1.5 mm model grid and back.
        let img = geom(256, 256, 0.8);
        let m = GridMap::with_target(img, 1.5, 160, 160).unwrap();
        let mut mask = [0u8; 256 * 256];
        let (cx, cy, r) = (140.0, 110.0, 30.0 / 0.8);
        for y in 0..256 {
            for x in 0..256 {
                let d2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                mask[y * 256 + x] = (d2 <= r * r) as u8;
            }
        }
        let mut model = [0u8; 160 * 160];
        m.image_to_model_nearest(&mask, &mut model).unwrap();
        let mut back = [0u8; 256 * 256];
        m.model_to_image_nearest(&model, &mut back).unwrap();
        let inter = mask
            .iter()
            .zip(back.iter())
            .filter(|(a, b)| **a == 1 && **b == 1)
            .count();
        let total =
            mask.iter().filter(|&&a| a == 1).count() + back.iter().filter(|&&b| b == 1).count();
        let dice = 2.0 * inter as f64 / total as f64;
        assert!(dice > 0.97, "round-trip Dice {dice}");
        // centroid within half an image pixel
        let centroid = |m: &[u8]| {
            let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
            for (i, &v) in m.iter().enumerate() {
                if v == 1 {
                    sx += (i % 256) as f64;
                    sy += (i / 256) as f64;
                    n += 1.0;
                }
            }
            (sx / n, sy / n)
        };
        let (bx, by) = centroid(&back);
        assert!((bx - cx).abs() < 0.5 && (by - cy).abs() < 0.5, "{bx},{by}");
    }

    #[test]
    fn prepare_model_input_normalises_brain_and_zeroes_the_rest() {
        use crate::config::{ChannelSpec, Normalization};
        let mut cfg = PreprocessConfig::default();
        cfg.channels.clear();
        let _ = cfg.channels.push(ChannelSpec {
            modality: crate::Modality::Cbf,
            norm: Normalization::Fixed {
                offset: 10.0,
                scale: 20.0,
                clip: 0.5,
            },
        });
        cfg.target_spacing_mm = 1.0;
        cfg.input_width = 4;
        cfg.input_height = 2;
        let img = geom(4, 2, 1.0);
        let map = GridMap::new(img, &cfg).unwrap();
        let mut stats = crate::stats::VolumeStats::new(1).unwrap();
        let raw = [0.0, 10.0, 20.0, 30.0, 50.0, 0.0, 15.0, 0.0];
        stats.add_slice(&[&raw], &[1; 8]).unwrap();
        let norm = stats.norm_params(&cfg).unwrap();
        let mut brain = [0u8; 8];
        let mut tmp = [0f32; 8];
        let mut out = [9f32; 8];
        let n = prepare_model_input(
            &cfg,
            &norm,
            &map,
            &[&raw],
            SliceScratch {
                brain_mask: &mut brain,
                normalized: &mut tmp,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 5);
        assert_eq!(out, [0.0, 0.0, 0.5, 1.0, 1.5, 0.0, 0.25, 0.0]);
    }
}
