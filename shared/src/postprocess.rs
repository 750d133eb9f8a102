//! Model output to lesion mask: softmax over class logits, thresholding, and removal of
//! small 2D connected components, all into caller-provided buffers.
//!
//! A study is processed one slice at a time:
//! [`lesion_probability_from_logits`] → [`threshold_mask`] → [`remove_small_components`].
//! Every buffer is sized once per study from the slice shape `[H, W]`, so memory is
//! O(W·H) whatever the number of slices.

/// Why a postprocessing step was refused. Nothing is written to the outputs on error.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PostprocessError {
    /// A buffer does not have the length the shape requires.
    #[error("{buffer} has length {got}, expected {expected}")]
    LengthMismatch {
        /// Which buffer (`"logits"`, `"out_prob"`, `"out_mask"`, `"mask"`, `"brain"`,
        /// `"prob_model"`).
        buffer: &'static str,
        /// Length the shape requires.
        expected: usize,
        /// Length supplied.
        got: usize,
    },
    /// A scratch buffer is shorter than the slice has pixels.
    #[error("scratch buffer {buffer} has length {got}, needs at least {needed}")]
    ScratchTooSmall {
        /// Which buffer (`"labels"`, `"parent"`).
        buffer: &'static str,
        /// Pixels in the slice.
        needed: usize,
        /// Length supplied.
        got: usize,
    },
    /// The logits have fewer than two classes, so there is no lesion class (index 1).
    #[error("logits need at least 2 classes (background, lesion), got {n_classes}")]
    TooFewClasses {
        /// Number of classes supplied.
        n_classes: usize,
    },
    /// A shape whose element count does not fit in `usize`, or a slice with more pixels than
    /// `u32` component labels can address.
    #[error("shape {rows} × {cols} is too large")]
    ShapeTooLarge {
        /// Rows (classes for logits, height for masks).
        rows: usize,
        /// Columns (pixels per class for logits, width for masks).
        cols: usize,
    },
    /// The threshold is NaN.
    #[error("threshold must not be NaN")]
    NanThreshold,
    /// A [`PostprocessConfig`] field is out of range.
    #[error("invalid config: {field} = {value}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: f32,
    },
}

/// Which neighbours join two lesion pixels into one 2D component.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Connectivity {
    /// Edge neighbours only (left, right, up, down).
    Four,
    /// Edge and corner neighbours. The default: diagonal touches count as connected, so
    /// thin oblique lesion parts are kept rather than removed as specks.
    #[default]
    Eight,
}

/// Settings that turn lesion probabilities into the final mask.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PostprocessConfig {
    /// A pixel is lesion when P(lesion) ≥ `threshold`; in `[0, 1]`, default `0.5`.
    pub threshold: f32,
    /// In-plane 2D components smaller than this area in mm² are removed; `0.0` disables
    /// removal. Finite and ≥ 0, default `10.0`.
    pub min_component_area_mm2: f32,
    /// Neighbourhood for the components, default [`Connectivity::Eight`].
    pub connectivity: Connectivity,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_component_area_mm2: 10.0,
            connectivity: Connectivity::Eight,
        }
    }
}

impl PostprocessConfig {
    /// Checks that `threshold` is in `[0, 1]` and `min_component_area_mm2` is finite and ≥ 0.
    pub fn validate(&self) -> Result<(), PostprocessError> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(PostprocessError::InvalidConfig {
                field: "threshold",
                value: self.threshold,
            });
        }
        if !(self.min_component_area_mm2.is_finite() && self.min_component_area_mm2 >= 0.0) {
            return Err(PostprocessError::InvalidConfig {
                field: "min_component_area_mm2",
                value: self.min_component_area_mm2,
            });
        }
        Ok(())
    }

    /// The minimum component area in pixels for in-plane spacing in mm; see
    /// [`min_area_px_from_mm2`].
    pub fn min_area_px(&self, spacing_x_mm: f32, spacing_y_mm: f32) -> u32 {
        min_area_px_from_mm2(self.min_component_area_mm2, spacing_x_mm, spacing_y_mm)
    }
}

/// Writes P(lesion) = softmax(logits)\[class 1\] for every pixel of one slice.
///
/// `logits` is `[C, H, W]` class-major (an ONNX NCHW output with N = 1), so its length must
/// be `n_classes · hw` with `n_classes ≥ 2`; `out_prob` is `[H, W]` of length `hw` and
/// receives values in `[0, 1]`.
///
/// Computed as `1 / Σ_c exp(l_c − l_1)`, which never overflows to NaN for finite logits
/// (a term that overflows to +∞ yields probability 0, the correctly rounded result down to
/// f32's normal range); for two classes this is the sigmoid of `l_1 − l_0` in its stable
/// two-branch form. Logits that are NaN, or infinities of equal sign in class 1 and another
/// class, give NaN, which [`threshold_mask`] maps to background.
pub fn lesion_probability_from_logits(
    logits: &[f32],
    n_classes: usize,
    hw: usize,
    out_prob: &mut [f32],
) -> Result<(), PostprocessError> {
    if n_classes < 2 {
        return Err(PostprocessError::TooFewClasses { n_classes });
    }
    let expected = n_classes
        .checked_mul(hw)
        .ok_or(PostprocessError::ShapeTooLarge {
            rows: n_classes,
            cols: hw,
        })?;
    check_len("logits", expected, logits.len())?;
    check_len("out_prob", hw, out_prob.len())?;
    if hw == 0 {
        return Ok(());
    }
    let (background, rest) = logits.split_at(hw);
    let (lesion, others) = rest.split_at(hw);

    if others.is_empty() {
        for ((p, &l0), &l1) in out_prob.iter_mut().zip(background).zip(lesion) {
            *p = stable_sigmoid(l1 - l0);
        }
        return Ok(());
    }

    // Accumulate Σ_c exp(l_c − l_1) in `out_prob`, one class plane at a time (cache-friendly
    // for the class-major layout); the c = 1 term is exp(0) = 1, so the sum is ≥ 1.
    out_prob.fill(1.0);
    for plane in core::iter::once(background).chain(others.chunks_exact(hw)) {
        for ((sum, &l), &l1) in out_prob.iter_mut().zip(plane).zip(lesion) {
            *sum += libm::expf(l - l1);
        }
    }
    for p in out_prob.iter_mut() {
        *p = 1.0 / *p;
    }
    Ok(())
}

/// `1 / (1 + e^−x)` without overflow: for x < 0 the equivalent `e^x / (1 + e^x)`.
fn stable_sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::expf(-x))
    } else {
        let e = libm::expf(x);
        e / (1.0 + e)
    }
}

/// Writes `1` where `prob ≥ threshold` and `0` elsewhere (NaN probabilities are `0`);
/// returns how many pixels are lesion.
///
/// `prob` and `out_mask` have the same length (any shape, usually `[H, W]`). A NaN
/// `threshold` is an error rather than a silently empty mask.
pub fn threshold_mask(
    prob: &[f32],
    threshold: f32,
    out_mask: &mut [u8],
) -> Result<usize, PostprocessError> {
    if threshold.is_nan() {
        return Err(PostprocessError::NanThreshold);
    }
    check_len("out_mask", prob.len(), out_mask.len())?;
    let mut n_lesion = 0;
    for (m, &p) in out_mask.iter_mut().zip(prob) {
        // Comparisons with NaN are false, so NaN → 0.
        let lesion = p >= threshold;
        *m = u8::from(lesion);
        n_lesion += usize::from(lesion);
    }
    Ok(n_lesion)
}

/// Minimum component area in whole pixels for a minimum area in mm² and an in-plane pixel
/// of `spacing_x_mm × spacing_y_mm`.
///
/// Returns the smallest pixel count whose area is at least `min_area_mm2`
/// (`ceil(min_area_mm2 / pixel_area_mm2)`, tolerant of float rounding), saturating at
/// `u32::MAX`. Returns `0`, which disables removal, when `min_area_mm2` is ≤ 0 or NaN or when
/// a spacing is not finite and positive (so bad metadata never deletes lesions).
pub fn min_area_px_from_mm2(min_area_mm2: f32, spacing_x_mm: f32, spacing_y_mm: f32) -> u32 {
    let pixel_area_mm2 = f64::from(spacing_x_mm) * f64::from(spacing_y_mm);
    let valid_spacing = |s: f32| s.is_finite() && s > 0.0;
    if !(min_area_mm2 > 0.0 && valid_spacing(spacing_x_mm) && valid_spacing(spacing_y_mm)) {
        return 0;
    }
    let ratio = f64::from(min_area_mm2) / pixel_area_mm2;
    // Spacings such as 0.1 mm are not exact in f32; keep 10 mm² / 0.01 mm² at 1000 px.
    // `as` saturates (and maps +∞ to u32::MAX).
    libm::ceil(ratio * (1.0 - 1e-6)) as u32
}

/// How many 2D components and pixels [`remove_small_components`] kept and removed.
///
/// Counts are u64 so per-slice results of a study can be summed with
/// [`ComponentStats::merge`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ComponentStats {
    /// Components with area ≥ the minimum.
    pub components_kept: u64,
    /// Components with area < the minimum, now set to background.
    pub components_removed: u64,
    /// Lesion pixels left in the mask.
    pub pixels_kept: u64,
    /// Lesion pixels set to background.
    pub pixels_removed: u64,
}

impl ComponentStats {
    /// Adds the counts of `other` (saturating).
    pub fn merge(&mut self, other: Self) {
        self.components_kept = self.components_kept.saturating_add(other.components_kept);
        self.components_removed = self
            .components_removed
            .saturating_add(other.components_removed);
        self.pixels_kept = self.pixels_kept.saturating_add(other.pixels_kept);
        self.pixels_removed = self.pixels_removed.saturating_add(other.pixels_removed);
    }
}

/// Caller-owned working memory for [`remove_small_components`]: 8 bytes per pixel.
///
/// Allocate both buffers once per study with `W·H` elements (or more) and reuse them for
/// every slice; their contents on entry do not matter.
#[derive(Debug)]
pub struct ComponentScratch<'a> {
    /// Per-pixel provisional labels, `[H, W]` row-major, at least `W·H` long.
    pub labels: &'a mut [u32],
    /// Union-find parents (later component areas), indexed by label, at least `W·H` long.
    pub parent: &'a mut [u32],
}

impl<'a> ComponentScratch<'a> {
    /// Wraps two buffers of at least `W·H` elements each.
    pub fn new(labels: &'a mut [u32], parent: &'a mut [u32]) -> Self {
        Self { labels, parent }
    }
}

/// Sets to `0` every 2D connected component of lesion pixels (nonzero) in `mask` whose area is
/// below `min_area_px` pixels; kept lesion pixels keep their value.
///
/// `mask` is one slice, `[height, width]` row-major, of length `width · height` (at most
/// `u32::MAX` pixels). `min_area_px ≤ 1` removes nothing. Two-pass union-find labelling in
/// `scratch`: memory is the caller's 8 bytes per pixel, O(W·H) independent of the number of
/// slices, with no allocation; time is O(W·H · α(W·H)).
pub fn remove_small_components(
    mask: &mut [u8],
    width: usize,
    height: usize,
    min_area_px: u32,
    connectivity: Connectivity,
    scratch: &mut ComponentScratch<'_>,
) -> Result<ComponentStats, PostprocessError> {
    let too_large = PostprocessError::ShapeTooLarge {
        rows: height,
        cols: width,
    };
    let n_pixels = width.checked_mul(height).ok_or(too_large)?;
    if u32::try_from(n_pixels).is_err() {
        return Err(too_large);
    }
    check_len("mask", n_pixels, mask.len())?;
    let (labels_len, parent_len) = (scratch.labels.len(), scratch.parent.len());
    let labels = scratch
        .labels
        .get_mut(..n_pixels)
        .ok_or(PostprocessError::ScratchTooSmall {
            buffer: "labels",
            needed: n_pixels,
            got: labels_len,
        })?;
    let parent = scratch
        .parent
        .get_mut(..n_pixels)
        .ok_or(PostprocessError::ScratchTooSmall {
            buffer: "parent",
            needed: n_pixels,
            got: parent_len,
        })?;

    // Invariants below: `labels[i]` is 0 (background) or `label + 1`; every label is
    // < `n_labels` ≤ `n_pixels` = `parent.len()` (fits in u32, checked above), and
    // `parent[l] ≤ l` for each label, so indexing cannot go out of bounds.

    // Pass 1: provisional labels in raster order, merging with already-visited neighbours.
    let mut n_labels: u32 = 0;
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            if mask[i] == 0 {
                labels[i] = 0;
                continue;
            }
            let mut current = 0u32;
            let mut visit = |neighbour: u32, parent: &mut [u32]| {
                if neighbour == 0 {
                    return;
                }
                if current == 0 {
                    current = neighbour;
                } else if neighbour != current {
                    union(parent, current - 1, neighbour - 1);
                }
            };
            if x > 0 {
                visit(labels[i - 1], parent);
            }
            if y > 0 {
                let up = i - width;
                visit(labels[up], parent);
                if connectivity == Connectivity::Eight {
                    if x > 0 {
                        visit(labels[up - 1], parent);
                    }
                    if x + 1 < width {
                        visit(labels[up + 1], parent);
                    }
                }
            }
            if current == 0 {
                parent[n_labels as usize] = n_labels;
                n_labels += 1;
                current = n_labels;
            }
            labels[i] = current;
        }
    }
    let parent = &mut parent[..n_labels as usize];

    // Flatten: since parent[l] ≤ l, one ascending sweep maps every label to its root.
    for l in 0..parent.len() {
        parent[l] = parent[parent[l] as usize];
    }
    // Pass 2: relabel pixels with their root; `parent` is then free to hold areas.
    for label in labels.iter_mut() {
        if *label != 0 {
            *label = parent[(*label - 1) as usize] + 1;
        }
    }
    parent.fill(0);
    for &label in labels.iter() {
        if label != 0 {
            parent[(label - 1) as usize] += 1;
        }
    }

    let mut stats = ComponentStats::default();
    for &area_px in parent.iter().filter(|&&a| a > 0) {
        if area_px < min_area_px {
            stats.components_removed += 1;
            stats.pixels_removed += u64::from(area_px);
        } else {
            stats.components_kept += 1;
            stats.pixels_kept += u64::from(area_px);
        }
    }
    // Pass 3: clear the small components.
    if stats.components_removed > 0 {
        for (m, &label) in mask.iter_mut().zip(labels.iter()) {
            if label != 0 && parent[(label - 1) as usize] < min_area_px {
                *m = 0;
            }
        }
    }
    Ok(stats)
}

/// Root of `x` with path halving; keeps `parent[l] ≤ l`.
fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grandparent = parent[parent[x as usize] as usize];
        parent[x as usize] = grandparent;
        x = grandparent;
    }
    x
}

/// Joins the sets of `a` and `b` under the smaller root, keeping `parent[l] ≤ l`.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[high as usize] = low;
    }
}

fn check_len(buffer: &'static str, expected: usize, got: usize) -> Result<(), PostprocessError> {
    if expected == got {
        Ok(())
    } else {
        Err(PostprocessError::LengthMismatch {
            buffer,
            expected,
            got,
        })
    }
}

/// Why [`SliceMasker::mask`] refused one slice.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SliceMaskError {
    /// A postprocessing step refused its buffers or the config.
    #[error(transparent)]
    Postprocess(#[from] PostprocessError),
    /// The grid map refused its buffers.
    #[error(transparent)]
    Grid(#[from] crate::CoreError),
}

/// One slice's logits → lesion mask on the image grid: the postprocessing that validation
/// (trainer) and deployment (edge) share, so both score the same mask. Steps: lesion
/// probability on the model grid, bilinear back onto the image grid, threshold, restricted
/// to the brain mask, connected components under the minimum area (image pixels) removed.
/// Buffers are sized once per study: `4 · H · W + 12 · nx · ny` bytes, whatever the number
/// of slices.
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct SliceMasker {
    map: crate::preprocess::GridMap,
    config: PostprocessConfig,
    min_area_px: u32,
    prob_model: alloc::vec::Vec<f32>,
    prob_image: alloc::vec::Vec<f32>,
    labels: alloc::vec::Vec<u32>,
    parent: alloc::vec::Vec<u32>,
}

#[cfg(feature = "alloc")]
impl SliceMasker {
    /// Buffers for the slices `map` maps, postprocessed with `config`.
    pub fn new(map: crate::preprocess::GridMap, config: PostprocessConfig) -> SliceMasker {
        use alloc::vec;
        let (w, h) = map.model_size();
        let image = map.image();
        let n = image.len();
        SliceMasker {
            map,
            config,
            min_area_px: config.min_area_px(image.spacing_x_mm, image.spacing_y_mm),
            prob_model: vec![0.0; w * h],
            prob_image: vec![0.0; n],
            labels: vec![0; n],
            parent: vec![0; n],
        }
    }

    /// `logits` `[K, H, W]` of one slice → lesion mask (0/1) on the image grid in `out`
    /// (`ny · nx`), zero outside `brain` (`ny · nx`, non-zero = brain). Returns what the
    /// component filter kept and removed.
    pub fn mask(
        &mut self,
        logits: &[f32],
        n_classes: usize,
        brain: &[u8],
        out: &mut [u8],
    ) -> Result<ComponentStats, SliceMaskError> {
        check_len("brain", self.map.image().len(), brain.len())?;
        let plane = self.prob_model.len();
        lesion_probability_from_logits(logits, n_classes, plane, &mut self.prob_model)?;
        self.map
            .model_to_image_bilinear(&self.prob_model, 0.0, &mut self.prob_image)?;
        self.threshold_and_clean(brain, out)
    }

    /// P(lesion) `[H, W]` on the model grid → lesion mask (0/1) on the image grid in `out`:
    /// [`SliceMasker::mask`] after its softmax, for an ensemble or test-time augmentation
    /// whose probability is the mean of several runs.
    pub fn mask_probability(
        &mut self,
        prob_model: &[f32],
        brain: &[u8],
        out: &mut [u8],
    ) -> Result<ComponentStats, SliceMaskError> {
        check_len("brain", self.map.image().len(), brain.len())?;
        check_len("prob_model", self.prob_model.len(), prob_model.len())?;
        self.map
            .model_to_image_bilinear(prob_model, 0.0, &mut self.prob_image)?;
        self.threshold_and_clean(brain, out)
    }

    /// The image-grid probability in `prob_image` → thresholded, brain-restricted,
    /// component-filtered mask in `out`.
    fn threshold_and_clean(
        &mut self,
        brain: &[u8],
        out: &mut [u8],
    ) -> Result<ComponentStats, SliceMaskError> {
        let image = self.map.image();
        threshold_mask(&self.prob_image, self.config.threshold, out)?;
        for (m, &b) in out.iter_mut().zip(brain) {
            *m &= u8::from(b != 0);
        }
        Ok(remove_small_components(
            out,
            image.nx,
            image.ny,
            self.min_area_px,
            self.config.connectivity,
            &mut ComponentScratch::new(&mut self.labels, &mut self.parent),
        )?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(feature = "alloc")]
    #[test]
    fn slice_masker_thresholds_on_the_image_grid_inside_the_brain() {
        use crate::preprocess::{GridMap, SliceGeometry};
        // 16 × 16 image at 1 mm onto an 8 × 8 model grid at 2 mm: the same field of view.
        let image = SliceGeometry {
            nx: 16,
            ny: 16,
            spacing_x_mm: 1.0,
            spacing_y_mm: 1.0,
        };
        let map = GridMap::with_target(image, 2.0, 8, 8).unwrap();
        let config = PostprocessConfig {
            min_component_area_mm2: 4.0,
            ..PostprocessConfig::default()
        };
        let mut masker = SliceMasker::new(map, config);
        // Lesion in the model grid's left half, background in its right half.
        let mut logits = [0.0f32; 2 * 64];
        for row in 0..8 {
            for col in 0..8 {
                let class = usize::from(col < 4);
                logits[class * 64 + row * 8 + col] = 10.0;
            }
        }
        // Brain: the top 12 image rows.
        let brain: [u8; 256] = core::array::from_fn(|i| u8::from(i / 16 < 12));
        let mut out = [9u8; 256];
        let stats = masker.mask(&logits, 2, &brain, &mut out).unwrap();
        for y in 0..16 {
            for x in 0..16 {
                let expected = u8::from(x < 8 && y < 12);
                assert_eq!(out[y * 16 + x], expected, "pixel ({x}, {y})");
            }
        }
        assert_eq!(stats.components_kept, 1);
        // A brain mask of the wrong size is refused.
        assert!(matches!(
            masker.mask(&logits, 2, &brain[..10], &mut out),
            Err(SliceMaskError::Postprocess(
                PostprocessError::LengthMismatch { .. }
            ))
        ));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn slice_masker_from_a_probability_equals_the_mask_from_its_logits() {
        use crate::preprocess::{GridMap, SliceGeometry};
        let image = SliceGeometry {
            nx: 12,
            ny: 12,
            spacing_x_mm: 1.0,
            spacing_y_mm: 1.0,
        };
        let map = GridMap::with_target(image, 1.5, 8, 8).unwrap();
        let mut masker = SliceMasker::new(map, PostprocessConfig::default());
        // A smooth ramp of lesion margins crossing 0.5 in the middle of the grid.
        let mut logits = [0.0f32; 2 * 64];
        for i in 0..64 {
            logits[64 + i] = (i % 8) as f32 - 3.5 + 0.3 * (i / 8) as f32;
        }
        let brain = [1u8; 144];
        let (mut from_logits, mut from_prob) = ([0u8; 144], [0u8; 144]);
        masker.mask(&logits, 2, &brain, &mut from_logits).unwrap();
        let mut prob = [0.0f32; 64];
        lesion_probability_from_logits(&logits, 2, 64, &mut prob).unwrap();
        masker
            .mask_probability(&prob, &brain, &mut from_prob)
            .unwrap();
        assert_eq!(from_logits, from_prob);
        assert!(from_prob.contains(&1) && from_prob.contains(&0));
        assert!(matches!(
            masker.mask_probability(&prob[..63], &brain, &mut from_prob),
            Err(SliceMaskError::Postprocess(
                PostprocessError::LengthMismatch {
                    buffer: "prob_model",
                    ..
                }
            ))
        ));
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6
    }

    fn probs<const HW: usize>(logits: &[f32], n_classes: usize) -> [f32; HW] {
        let mut out = [f32::NAN; HW];
        lesion_probability_from_logits(logits, n_classes, HW, &mut out).unwrap();
        out
    }

    #[test]
    fn softmax_two_classes_hand_values() {
        // [C=2, H=1, W=3]: pixels (l0, l1) = (0, 0), (0, ln 3), (ln 3, 0).
        let ln3 = 3f32.ln();
        let p = probs::<3>(&[0.0, 0.0, ln3, 0.0, ln3, 0.0], 2);
        assert!(close(p[0], 0.5));
        assert!(close(p[1], 0.75));
        assert!(close(p[2], 0.25));
    }

    #[test]
    fn softmax_three_classes_hand_values() {
        // One pixel, logits (0, ln 2, ln 5): P(1) = 2 / (1 + 2 + 5) = 0.25.
        let p = probs::<1>(&[0.0, 2f32.ln(), 5f32.ln()], 3);
        assert!(close(p[0], 0.25));
        // Two pixels, equal logits: 1/3 each.
        let p = probs::<2>(&[4.0, -1.0, 4.0, -1.0, 4.0, -1.0], 3);
        assert!(close(p[0], 1.0 / 3.0) && close(p[1], 1.0 / 3.0));
    }

    #[test]
    fn two_classes_equals_sigmoid_and_general_path() {
        for &(l0, l1) in &[(0.3f32, -1.2f32), (-2.0, 5.0), (10.0, 10.5), (-30.0, 40.0)] {
            let two = probs::<1>(&[l0, l1], 2)[0];
            let sigmoid = 1.0 / (1.0 + (-(l1 - l0)).exp());
            assert!(close(two, sigmoid), "{two} vs {sigmoid}");
            // A third class at -∞ contributes nothing, so the general path must agree.
            let three = probs::<1>(&[l0, l1, f32::NEG_INFINITY], 3)[0];
            assert!(close(two, three), "{two} vs {three}");
        }
    }

    #[test]
    fn large_logits_stay_finite() {
        let p = probs::<4>(
            &[
                1000.0, -1000.0, 0.0, 1000.0, -1000.0, 1000.0, 1000.0, 1000.0,
            ],
            2,
        );
        assert_eq!(p, [0.0, 1.0, 1.0, 0.5]);
        let p = probs::<3>(
            &[
                1000.0, -1000.0, 0.0, // class 0
                -1000.0, 1000.0, 0.0, // class 1
                1000.0, -1000.0, 1000.0, // class 2
            ],
            3,
        );
        assert!(p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        assert_eq!(p, [0.0, 1.0, 0.0]);
    }

    #[test]
    fn nan_logit_gives_nan_which_thresholds_to_background() {
        let p = probs::<2>(&[f32::NAN, 0.0, 0.0, 1.0], 2);
        assert!(p[0].is_nan());
        let mut mask = [9u8; 2];
        assert_eq!(threshold_mask(&p, 0.5, &mut mask).unwrap(), 1);
        assert_eq!(mask, [0, 1]);
    }

    #[test]
    fn softmax_validates_shapes() {
        let mut out = [0f32; 2];
        assert_eq!(
            lesion_probability_from_logits(&[0.0; 4], 1, 2, &mut out),
            Err(PostprocessError::TooFewClasses { n_classes: 1 })
        );
        assert_eq!(
            lesion_probability_from_logits(&[0.0; 5], 2, 2, &mut out),
            Err(PostprocessError::LengthMismatch {
                buffer: "logits",
                expected: 4,
                got: 5
            })
        );
        assert_eq!(
            lesion_probability_from_logits(&[0.0; 6], 2, 3, &mut out),
            Err(PostprocessError::LengthMismatch {
                buffer: "out_prob",
                expected: 3,
                got: 2
            })
        );
        assert!(matches!(
            lesion_probability_from_logits(&[], usize::MAX, 2, &mut out),
            Err(PostprocessError::ShapeTooLarge { .. })
        ));
        assert_eq!(lesion_probability_from_logits(&[], 2, 0, &mut []), Ok(()));
    }

    #[test]
    fn threshold_inclusive_and_nan() {
        let mut mask = [7u8; 5];
        let n = threshold_mask(&[0.5, 0.49, 1.0, f32::NAN, 0.0], 0.5, &mut mask).unwrap();
        assert_eq!(mask, [1, 0, 1, 0, 0]);
        assert_eq!(n, 2);
        assert_eq!(
            threshold_mask(&[0.5], f32::NAN, &mut [0]),
            Err(PostprocessError::NanThreshold)
        );
        assert_eq!(
            threshold_mask(&[0.5; 3], 0.5, &mut [0; 2]),
            Err(PostprocessError::LengthMismatch {
                buffer: "out_mask",
                expected: 3,
                got: 2
            })
        );
    }

    /// Runs `remove_small_components` with exactly sized scratch.
    fn remove<const N: usize>(
        mask: &mut [u8; N],
        width: usize,
        min_area_px: u32,
        connectivity: Connectivity,
    ) -> ComponentStats {
        let (mut labels, mut parent) = ([0u32; N], [0u32; N]);
        let mut scratch = ComponentScratch::new(&mut labels, &mut parent);
        remove_small_components(
            mask,
            width,
            N / width,
            min_area_px,
            connectivity,
            &mut scratch,
        )
        .unwrap()
    }

    // An L of 4 pixels with a diagonal tail of 2 pixels touching its corner only diagonally.
    #[rustfmt::skip]
    const L_SHAPE: [u8; 25] = [
        1, 0, 0, 0, 0,
        1, 0, 0, 0, 0,
        1, 1, 0, 0, 0,
        0, 0, 1, 0, 0,
        0, 0, 0, 1, 0,
    ];

    #[test]
    fn l_shape_four_connectivity_splits_diagonal() {
        let mut mask = L_SHAPE;
        let stats = remove(&mut mask, 5, 3, Connectivity::Four);
        // Four: the L (4 px) is kept; the two diagonal pixels are 1-px components, removed.
        assert_eq!(
            stats,
            ComponentStats {
                components_kept: 1,
                components_removed: 2,
                pixels_kept: 4,
                pixels_removed: 2
            }
        );
        #[rustfmt::skip]
        let expected = [
            1, 0, 0, 0, 0,
            1, 0, 0, 0, 0,
            1, 1, 0, 0, 0,
            0, 0, 0, 0, 0,
            0, 0, 0, 0, 0,
        ];
        assert_eq!(mask, expected);
    }

    #[test]
    fn l_shape_eight_connectivity_is_one_component() {
        let mut mask = L_SHAPE;
        let stats = remove(&mut mask, 5, 3, Connectivity::Eight);
        assert_eq!(stats.components_kept, 1);
        assert_eq!(stats.components_removed, 0);
        assert_eq!(stats.pixels_kept, 6);
        assert_eq!(mask, L_SHAPE);
        // Area 6 < 7: the whole component goes.
        let stats = remove(&mut mask, 5, 7, Connectivity::Eight);
        assert_eq!((stats.components_removed, stats.pixels_removed), (1, 6));
        assert_eq!(mask, [0; 25]);
    }

    #[test]
    fn u_shape_merges_labels_met_late() {
        // Two arms get different provisional labels and join only in the bottom row;
        // a second U nested to the right exercises chained unions.
        #[rustfmt::skip]
        let original: [u8; 28] = [
            1, 0, 1, 0, 1, 0, 1,
            1, 0, 1, 0, 1, 0, 1,
            1, 1, 1, 0, 1, 0, 1,
            0, 0, 0, 0, 1, 1, 1,
        ];
        let mut mask = original;
        let stats = remove(&mut mask, 7, 8, Connectivity::Four);
        assert_eq!(stats.components_kept, 1, "{stats:?}"); // right U: 9 px
        assert_eq!(stats.components_removed, 1); // left U: 7 px
        assert_eq!((stats.pixels_kept, stats.pixels_removed), (9, 7));
        assert_eq!(mask[..4], [0, 0, 0, 0]);
        assert_eq!(mask[4], 1);
    }

    #[test]
    fn speck_beside_big_blob_is_removed_and_values_kept() {
        #[rustfmt::skip]
        let mut mask: [u8; 30] = [
            0, 0, 0, 0, 0, 0,
            0, 2, 2, 2, 0, 0,
            0, 2, 2, 2, 0, 5,
            0, 2, 2, 2, 0, 0,
            0, 0, 0, 0, 0, 0,
        ];
        for connectivity in [Connectivity::Four, Connectivity::Eight] {
            let mut m = mask;
            let stats = remove(&mut m, 6, 2, connectivity);
            assert_eq!(
                stats,
                ComponentStats {
                    components_kept: 1,
                    components_removed: 1,
                    pixels_kept: 9,
                    pixels_removed: 1
                }
            );
            assert_eq!(m[17], 0);
            assert_eq!(m.iter().filter(|&&v| v == 2).count(), 9);
        }
        // min_area 1 (and 0) removes nothing but still counts.
        let stats = remove(&mut mask, 6, 1, Connectivity::Eight);
        assert_eq!((stats.components_kept, stats.components_removed), (2, 0));
        assert_eq!(mask[17], 5);
    }

    #[test]
    fn all_zero_and_all_one_masks() {
        let mut zeros = [0u8; 12];
        let stats = remove(&mut zeros, 4, 5, Connectivity::Eight);
        assert_eq!(stats, ComponentStats::default());
        assert_eq!(zeros, [0; 12]);

        let mut ones = [1u8; 12];
        let stats = remove(&mut ones, 4, 12, Connectivity::Four);
        assert_eq!((stats.components_kept, stats.pixels_kept), (1, 12));
        assert_eq!(ones, [1; 12]);
        let stats = remove(&mut ones, 4, 13, Connectivity::Four);
        assert_eq!((stats.components_removed, stats.pixels_removed), (1, 12));
        assert_eq!(ones, [0; 12]);
    }

    #[test]
    fn checkerboard_worst_case_label_count() {
        // Every pixel its own 4-connected component: n_labels = W·H/2, the most possible.
        let mut mask = [0u8; 16];
        for (i, m) in mask.iter_mut().enumerate() {
            *m = u8::from((i / 4 + i % 4) % 2 == 0);
        }
        let stats = remove(&mut mask, 4, 2, Connectivity::Four);
        assert_eq!((stats.components_removed, stats.components_kept), (8, 0));
        // With 8-connectivity the diagonals join into one component.
        let mut mask2 = [0u8; 16];
        for (i, m) in mask2.iter_mut().enumerate() {
            *m = u8::from((i / 4 + i % 4) % 2 == 0);
        }
        let stats = remove(&mut mask2, 4, 2, Connectivity::Eight);
        assert_eq!((stats.components_kept, stats.pixels_kept), (1, 8));
    }

    #[test]
    fn scratch_reused_across_slices_and_oversized() {
        let (mut labels, mut parent) = ([u32::MAX; 64], [u32::MAX; 64]);
        let mut scratch = ComponentScratch::new(&mut labels, &mut parent);
        let mut total = ComponentStats::default();
        for _ in 0..3 {
            let mut slice = [1u8, 0, 1, 0, 0, 0, 1, 1, 0];
            let stats =
                remove_small_components(&mut slice, 3, 3, 2, Connectivity::Four, &mut scratch)
                    .unwrap();
            assert_eq!(slice, [0, 0, 0, 0, 0, 0, 1, 1, 0]);
            total.merge(stats);
        }
        assert_eq!(
            total,
            ComponentStats {
                components_kept: 3,
                components_removed: 6,
                pixels_kept: 6,
                pixels_removed: 6
            }
        );
    }

    #[test]
    fn component_length_mismatches_are_errors() {
        let (mut labels, mut parent) = ([0u32; 8], [0u32; 3]);
        let mut scratch = ComponentScratch::new(&mut labels, &mut parent);
        let mut mask = [1u8; 6];
        assert_eq!(
            remove_small_components(&mut mask, 4, 2, 2, Connectivity::Four, &mut scratch),
            Err(PostprocessError::LengthMismatch {
                buffer: "mask",
                expected: 8,
                got: 6
            })
        );
        assert_eq!(
            remove_small_components(&mut mask, 3, 2, 2, Connectivity::Four, &mut scratch),
            Err(PostprocessError::ScratchTooSmall {
                buffer: "parent",
                needed: 6,
                got: 3
            })
        );
        assert!(matches!(
            remove_small_components(
                &mut mask,
                usize::MAX,
                2,
                2,
                Connectivity::Four,
                &mut scratch
            ),
            Err(PostprocessError::ShapeTooLarge { .. })
        ));
        assert_eq!(mask, [1; 6]);
        // Zero-sized slice: nothing to do.
        assert_eq!(
            remove_small_components(&mut [], 0, 5, 2, Connectivity::Eight, &mut scratch),
            Ok(ComponentStats::default())
        );
    }

    #[test]
    fn min_area_from_mm2() {
        assert_eq!(min_area_px_from_mm2(10.0, 1.0, 1.0), 10);
        assert_eq!(min_area_px_from_mm2(10.0, 0.5, 0.5), 40);
        assert_eq!(min_area_px_from_mm2(10.0, 0.1, 0.1), 1000);
        assert_eq!(min_area_px_from_mm2(10.0, 2.0, 3.0), 2); // 1.67 px → 2
        assert_eq!(min_area_px_from_mm2(10.0, 0.9, 0.9), 13); // 12.35 px → 13
        assert_eq!(min_area_px_from_mm2(0.0, 1.0, 1.0), 0);
        assert_eq!(min_area_px_from_mm2(f32::NAN, 1.0, 1.0), 0);
        assert_eq!(min_area_px_from_mm2(10.0, 0.0, 1.0), 0);
        assert_eq!(min_area_px_from_mm2(10.0, 1.0, f32::NAN), 0);
        assert_eq!(min_area_px_from_mm2(1e30, 1e-20, 1e-20), u32::MAX);
    }

    #[test]
    fn config_default_and_validate() {
        let config = PostprocessConfig::default();
        assert_eq!(config.threshold, 0.5);
        assert_eq!(config.min_component_area_mm2, 10.0);
        assert_eq!(config.connectivity, Connectivity::Eight);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.min_area_px(0.5, 0.5), 40);
        let bad = PostprocessConfig {
            threshold: f32::NAN,
            ..config
        };
        assert!(matches!(
            bad.validate(),
            Err(PostprocessError::InvalidConfig {
                field: "threshold",
                ..
            })
        ));
        let bad = PostprocessConfig {
            min_component_area_mm2: -1.0,
            ..config
        };
        assert!(matches!(
            bad.validate(),
            Err(PostprocessError::InvalidConfig {
                field: "min_component_area_mm2",
                ..
            })
        ));
    }
}
