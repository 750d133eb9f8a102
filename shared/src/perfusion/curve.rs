//! Time curves of one voxel: the frame grid, the pre-bolus baseline and bolus arrival,
//! HU enhancement (∝ contrast concentration), temporal smoothing and curve shape features.
//! Nothing here allocates; every function works on caller slices of `n_frames` values.

use crate::error::CoreError;

/// Fewest frames a dynamic series may have: a few baseline frames, the first pass of the
/// bolus (≈ 15–20 s) and its wash-out at 1–2 s per frame.
pub const MIN_FRAMES: usize = 20;
/// Most frames a series may have (ISLES 2018: 43–64; clinical protocols stay below 100).
/// Bounds the deconvolution matrices: `(2 · MAX_FRAMES)²` values.
pub const MAX_FRAMES: usize = 256;
/// Shortest and longest plausible frame interval, s (clinical CTP: 0.5–3 s).
pub const FRAME_INTERVAL_RANGE_S: (f32, f32) = (0.1, 10.0);
/// Relative deviation from the median interval up to which frame times count as uniform.
pub const UNIFORM_FRAME_TOLERANCE: f32 = 0.05;

/// The uniform time grid of a dynamic series: frame `k` at `k · dt_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TimeGrid {
    /// Frames, `MIN_FRAMES..=MAX_FRAMES`.
    pub n_frames: usize,
    /// Frame interval, s, within [`FRAME_INTERVAL_RANGE_S`].
    pub dt_s: f32,
}

impl TimeGrid {
    /// A checked grid: [`CoreError::TooFewFrames`], [`CoreError::TooManyFrames`] or
    /// [`CoreError::InvalidFrameInterval`] otherwise.
    pub fn new(n_frames: usize, dt_s: f32) -> Result<TimeGrid, CoreError> {
        if n_frames < MIN_FRAMES {
            return Err(CoreError::TooFewFrames {
                n_frames,
                min_frames: MIN_FRAMES,
            });
        }
        if n_frames > MAX_FRAMES {
            return Err(CoreError::TooManyFrames {
                n_frames,
                max_frames: MAX_FRAMES,
            });
        }
        let (lo, hi) = FRAME_INTERVAL_RANGE_S;
        if !(dt_s.is_finite() && (lo..=hi).contains(&dt_s)) {
            return Err(CoreError::InvalidFrameInterval { dt_s });
        }
        Ok(TimeGrid { n_frames, dt_s })
    }

    /// The grid of explicit frame times (s, any origin): they must increase strictly and be
    /// uniform within [`UNIFORM_FRAME_TOLERANCE`] of their mean interval.
    pub fn from_frame_times(times_s: &[f32]) -> Result<TimeGrid, CoreError> {
        for (k, w) in times_s.windows(2).enumerate() {
            if w[1].partial_cmp(&w[0]) != Some(core::cmp::Ordering::Greater) {
                return Err(CoreError::NonIncreasingFrameTimes {
                    frame_idx: k + 1,
                    time_s: w[1],
                    previous_s: w[0],
                });
            }
        }
        let (Some(first), Some(last)) = (times_s.first(), times_s.last()) else {
            return Err(CoreError::TooFewFrames {
                n_frames: 0,
                min_frames: MIN_FRAMES,
            });
        };
        let n = times_s.len();
        let dt_s = if n > 1 {
            (last - first) / (n - 1) as f32
        } else {
            0.0
        };
        for (k, w) in times_s.windows(2).enumerate() {
            let step = w[1] - w[0];
            if (step - dt_s).abs() > UNIFORM_FRAME_TOLERANCE * dt_s {
                return Err(CoreError::NonUniformFrameTimes {
                    frame_idx: k + 1,
                    interval_s: step,
                    mean_interval_s: dt_s,
                });
            }
        }
        TimeGrid::new(n, dt_s)
    }

    /// Time of frame `k`, s.
    pub fn time_s(&self, k: usize) -> f32 {
        k as f32 * self.dt_s
    }
}

/// Pre-bolus frames `[start, end)` whose mean is a voxel's unenhanced value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BaselineWindow {
    /// First baseline frame.
    pub start: usize,
    /// One past the last baseline frame (`> start`).
    pub end: usize,
}

impl BaselineWindow {
    /// Number of baseline frames.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    /// Never true for a window made by [`baseline_window`].
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Fraction of the peak enhancement a curve must reach for the bolus to have arrived.
pub const ARRIVAL_FRACTION: f32 = 0.1;

/// The frame at which the bolus arrives in `curve` (HU): the first frame from which two
/// consecutive frames exceed the first frames' level by [`ARRIVAL_FRACTION`] of the peak
/// enhancement. `None` when the curve never rises (flat) or only at its last frame.
pub fn arrival_frame(curve: &[f32], skip_frames: usize) -> Option<usize> {
    let head = curve.get(skip_frames..)?;
    let base = *head.first()?;
    let peak = head.iter().copied().fold(f32::MIN, f32::max);
    if peak.partial_cmp(&base) != Some(core::cmp::Ordering::Greater) {
        return None;
    }
    let threshold = base + ARRIVAL_FRACTION * (peak - base);
    head.windows(2)
        .position(|w| w[0] > threshold && w[1] > threshold)
        .map(|k| k + skip_frames)
}

/// The baseline window that ends `margin_frames` frames before the arrival frame (at least
/// one frame long), starting at `skip_frames`.
pub fn baseline_window(arrival: usize, skip_frames: usize, margin_frames: usize) -> BaselineWindow {
    let end = arrival.saturating_sub(margin_frames).max(skip_frames + 1);
    BaselineWindow {
        start: skip_frames,
        end,
    }
}

/// Mean of `curve` over `window` (HU); 0 for an empty window.
pub fn baseline_hu(curve: &[f32], window: BaselineWindow) -> f32 {
    let frames = curve
        .get(window.start..window.end.min(curve.len()))
        .unwrap_or(&[]);
    if frames.is_empty() {
        return 0.0;
    }
    frames.iter().sum::<f32>() / frames.len() as f32
}

/// Enhancement over the baseline, in place: `curve[k] − baseline` (HU). CT attenuation
/// rises linearly with the iodine concentration, so enhancement is the concentration up to
/// one scanner constant (≈ 25 HU per mg I/mL at 80 kVp), which cancels in every map
/// because tissue is always divided by the arterial input. Returns the baseline.
pub fn to_enhancement(curve: &mut [f32], window: BaselineWindow) -> f32 {
    let base = baseline_hu(curve, window);
    curve.iter_mut().for_each(|v| *v -= base);
    base
}

/// Temporal smoothing in place with the `[1, 2, 1] / 4` kernel (end frames kept by
/// reflection), which keeps a curve's area.
pub fn smooth_temporal(curve: &mut [f32]) {
    let n = curve.len();
    if n < 3 {
        return;
    }
    let mut prev = curve[0];
    for k in 0..n {
        let cur = curve[k];
        let next = if k + 1 < n {
            curve[k + 1]
        } else {
            curve[k - 1]
        };
        let left = if k == 0 { next } else { prev };
        curve[k] = 0.25 * (left + 2.0 * cur + next);
        prev = cur;
    }
}

/// Shape of an enhancement curve (HU above baseline).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CurveShape {
    /// Peak enhancement, HU.
    pub peak_hu: f32,
    /// Frame of the peak.
    pub peak_frame: usize,
    /// Time to peak, s after the first frame.
    pub ttp_s: f32,
    /// Full width at half maximum, s (frames above half the peak around it).
    pub fwhm_s: f32,
    /// Area under the curve, HU·s (trapezoid rule over the whole acquisition).
    pub area_hu_s: f32,
}

/// The shape of `enh` (enhancement, HU) on `grid`.
pub fn curve_shape(enh: &[f32], grid: &TimeGrid) -> CurveShape {
    let (mut peak_frame, mut peak_hu) = (0, f32::MIN);
    for (k, &v) in enh.iter().enumerate() {
        if v > peak_hu {
            peak_hu = v;
            peak_frame = k;
        }
    }
    if enh.is_empty() {
        return CurveShape::default();
    }
    let half = 0.5 * peak_hu;
    let mut lo = peak_frame;
    while lo > 0 && enh[lo - 1] > half {
        lo -= 1;
    }
    let mut hi = peak_frame;
    while hi + 1 < enh.len() && enh[hi + 1] > half {
        hi += 1;
    }
    CurveShape {
        peak_hu,
        peak_frame,
        ttp_s: grid.time_s(peak_frame),
        fwhm_s: (hi - lo + 1) as f32 * grid.dt_s,
        area_hu_s: area_hu_s(enh, grid.dt_s),
    }
}

/// Area under a sampled curve, trapezoid rule, value·s.
pub fn area_hu_s(curve: &[f32], dt_s: f32) -> f32 {
    let n = curve.len();
    if n < 2 {
        return 0.0;
    }
    let sum: f32 = curve.iter().sum();
    dt_s * (sum - 0.5 * (curve[0] + curve[n - 1]))
}

/// Oscillation index of a residue function (Wu et al. 2003, MRM 50:164, eq. 6):
/// `OI = 1/(L · r_max) · Σ_{k=2}^{L−1} |r[k] − 2 r[k−1] + r[k−2]|`, 0 for a flat residue.
pub fn oscillation_index(residue: &[f32], r_max: f32) -> f32 {
    let n = residue.len();
    if n < 3 || r_max.is_nan() || r_max <= 0.0 {
        return 0.0;
    }
    // Eight partial sums so that the loop vectorises (the per-voxel hot path).
    let mut acc = [0.0f32; LANES];
    let (a, b, c) = (&residue[..n - 2], &residue[1..n - 1], &residue[2..]);
    let mut chunks = a
        .chunks_exact(LANES)
        .zip(b.chunks_exact(LANES))
        .zip(c.chunks_exact(LANES));
    for ((x, y), z) in &mut chunks {
        for l in 0..LANES {
            acc[l] += (z[l] - 2.0 * y[l] + x[l]).abs();
        }
    }
    let tail = (n - 2) / LANES * LANES;
    let mut sum: f32 = acc.iter().sum();
    for k in tail..n - 2 {
        sum += (c[k] - 2.0 * b[k] + a[k]).abs();
    }
    sum / (n as f32 * r_max)
}

/// Lanes of the partial sums in [`dot`], [`max_value`] and [`oscillation_index`].
const LANES: usize = 8;

/// `Σ a[i] · b[i]` over the shorter of the two, in eight partial sums (vectorises).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail = n / LANES * LANES;
    acc.iter().sum::<f32>()
        + a[tail..]
            .iter()
            .zip(&b[tail..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

/// The largest of `values` and 0 (NaN never wins), in eight lanes (vectorises).
pub fn max_value(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for x in &mut chunks {
        for l in 0..LANES {
            acc[l] = if x[l] > acc[l] { x[l] } else { acc[l] };
        }
    }
    let mut m = 0.0f32;
    for &v in acc.iter().chain(chunks.remainder()) {
        if v > m {
            m = v;
        }
    }
    m
}

/// The peak of `values` and its sub-frame position by a parabola through the maximum and
/// its neighbours: `(index, refined position in frames, value)`. `None` when empty.
pub fn refined_peak(values: &[f32]) -> Option<(usize, f32, f32)> {
    if values.is_empty() {
        return None;
    }
    // The maximum in vectorised lanes, then its first position.
    let positive = max_value(values);
    let best = if positive > 0.0 {
        positive
    } else {
        values.iter().copied().fold(f32::MIN, f32::max)
    };
    let k = values.iter().position(|&v| v == best).unwrap_or(0);
    if k == 0 || k + 1 >= values.len() {
        return Some((k, k as f32, best));
    }
    let (a, b, c) = (values[k - 1], values[k], values[k + 1]);
    let denom = a - 2.0 * b + c;
    let shift = if denom < 0.0 {
        (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    Some((k, k as f32 + shift, best))
}

#[allow(clippy::unwrap_used)]
#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize, dt: f32) -> TimeGrid {
        TimeGrid::new(n, dt).unwrap()
    }

    /// A gamma variate of peak 1 at `t0 + alpha·beta`.
    fn gamma(t: f32, t0: f32, alpha: f32, beta: f32) -> f32 {
        let x = (t - t0) / (alpha * beta);
        if x <= 0.0 {
            0.0
        } else {
            libm::expf(alpha * (libm::logf(x) + 1.0 - x))
        }
    }

    #[test]
    fn grids_are_checked() {
        assert!(matches!(
            TimeGrid::new(5, 1.0),
            Err(CoreError::TooFewFrames { n_frames: 5, .. })
        ));
        assert!(matches!(
            TimeGrid::new(40, 0.0),
            Err(CoreError::InvalidFrameInterval { .. })
        ));
        assert!(TimeGrid::new(40, f32::NAN).is_err());
        let times: [f32; 30] = core::array::from_fn(|k| 3.0 + 1.5 * k as f32);
        let g = TimeGrid::from_frame_times(&times).unwrap();
        assert_eq!(g.n_frames, 30);
        assert!((g.dt_s - 1.5).abs() < 1e-5);
        let mut bad = times;
        bad[7] = bad[6];
        assert!(matches!(
            TimeGrid::from_frame_times(&bad),
            Err(CoreError::NonIncreasingFrameTimes { frame_idx: 7, .. })
        ));
        let mut uneven = times;
        for t in uneven.iter_mut().skip(15) {
            *t += 1.0;
        }
        assert!(matches!(
            TimeGrid::from_frame_times(&uneven),
            Err(CoreError::NonUniformFrameTimes { frame_idx: 15, .. })
        ));
    }

    #[test]
    fn arrival_and_baseline_of_a_gamma_bolus() {
        let g = grid(40, 1.0);
        let mut c = [0.0f32; 40];
        for (k, v) in c.iter_mut().enumerate() {
            *v = 40.0 + 300.0 * gamma(g.time_s(k), 8.0, 3.0, 1.5);
        }
        let a = arrival_frame(&c, 0).unwrap();
        // 10 % of the peak is reached ≈ 1.7 s after the bolus starts (t = 8 s).
        assert!((9..=11).contains(&a), "arrival {a}");
        let w = baseline_window(a, 0, 2);
        assert!(w.end <= 9 && w.start == 0 && !w.is_empty());
        let base = to_enhancement(&mut c, w);
        assert!((base - 40.0).abs() < 1e-3);
        let s = curve_shape(&c, &g);
        assert!((12..=13).contains(&s.peak_frame));
        assert!((s.peak_hu - 300.0).abs() < 9.0);
        assert!((3.0..=8.0).contains(&s.fwhm_s), "{}", s.fwhm_s);
        // ∫ gamma = β^{-α}... numerically: area of A·x^α e^{α(1−x)} is A·αβ·e^α·Γ(α+1)/α^{α+1}.
        let expected = 300.0 * 4.5 * libm::expf(3.0) * 6.0 / 81.0;
        assert!(
            (s.area_hu_s - expected).abs() / expected < 0.01,
            "{}",
            s.area_hu_s
        );
    }

    #[test]
    fn flat_curves_have_no_arrival() {
        assert_eq!(arrival_frame(&[30.0; 40], 0), None);
        let mut c = [0.0f32; 40];
        c[39] = 50.0;
        assert_eq!(arrival_frame(&c, 0), None);
    }

    #[test]
    fn smoothing_keeps_the_area_and_a_line() {
        let mut c = [0.0f32; 30];
        c[10] = 4.0;
        smooth_temporal(&mut c);
        assert_eq!(&c[9..12], &[1.0, 2.0, 1.0]);
        assert!((c.iter().sum::<f32>() - 4.0).abs() < 1e-6);
        let mut line: [f32; 10] = core::array::from_fn(|k| k as f32);
        smooth_temporal(&mut line);
        assert!((1..9).all(|k| (line[k] - k as f32).abs() < 1e-6));
    }

    #[test]
    fn oscillation_index_and_peak_refinement() {
        let smooth: [f32; 50] = core::array::from_fn(|k| libm::expf(-(k as f32) / 8.0));
        let zigzag: [f32; 50] = core::array::from_fn(|k| if k % 2 == 0 { 1.0 } else { 0.0 });
        assert!(oscillation_index(&smooth, 1.0) < 0.01);
        assert!(oscillation_index(&zigzag, 1.0) > 1.5);
        let plain: f32 = zigzag
            .windows(3)
            .map(|w| (w[2] - 2.0 * w[1] + w[0]).abs())
            .sum::<f32>()
            / 50.0;
        assert!((oscillation_index(&zigzag, 1.0) - plain).abs() < 1e-5);
        let a: [f32; 13] = core::array::from_fn(|k| k as f32 - 3.0);
        assert_eq!(dot(&a, &a), a.iter().map(|x| x * x).sum::<f32>());
        assert_eq!(max_value(&a), 9.0);
        assert_eq!(max_value(&[-1.0, f32::NAN]), 0.0);
        let parabola: [f32; 9] = core::array::from_fn(|k| 10.0 - (k as f32 - 4.3).powi(2));
        let (k, pos, _) = refined_peak(&parabola).unwrap();
        assert_eq!(k, 4);
        assert!((pos - 4.3).abs() < 1e-4);
    }
}
