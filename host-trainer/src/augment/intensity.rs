//! Per-channel intensity augmentation of brain pixels, in normalised units (after the shared
//! preprocessing): what differs between vendors, scanners and protocols once the per-study
//! normalisation has removed the gain.
//!
//! Six operations, each a [`RandomOp`]: it runs on a slice with probability `prob`, then on each
//! channel of that slice with probability `channel_prob`, with a parameter drawn from `range`
//! independently per channel (maps of one study need not share vendor processing). They are
//! applied in the order of nnU-Net's training pipeline (Isensee et al., Nature Methods 2021;
//! `batchgenerators`), after the geometric warp:
//!
//! | op | what it does to the brain pixels `x` of one channel of one slice | parameter |
//! |---|---|---|
//! | noise | `x + σ · sd(x) · n`, `n` i.i.d. standard normal per pixel | `σ`, relative to the plane's brain standard deviation (nnU-Net's images are z-scored, so its σ is in sd units too) |
//! | blur | gaussian blur, separable, normalised by the blurred brain mask (no dark rim from the zero background) | `σ`, model-grid pixels |
//! | gain | `x · g` (nnU-Net's multiplicative brightness) | `g` |
//! | contrast | `mean + (x − mean) · f`, clamped to the plane's brain range before the op | `f` |
//! | low_res | area downsampling by `f` (larger voxels, partial volume), bilinear upsampling back, both normalised by the brain mask | `f` |
//! | gamma | `lo + span · ((x − lo) / span)^γ`, `[lo, lo + span]` the plane's brain range: sign-safe, range kept | `γ` |
//!
//! For `gain`, `contrast` and `gamma` a range that straddles 1 is sampled below 1 and above 1
//! with equal chance (as nnU-Net does), so strengthening and weakening are equally likely.
//!
//! Defaults (nnU-Net's, conservative): noise p 0.1, σ 0–0.1 sd; blur p 0.2, per channel 0.5,
//! σ 0.5–1 px; gain p 0.15, ×0.7–1.3; contrast p 0.15, ×0.65–1.5; low_res p 0.25, per channel
//! 0.5, ×1–2; gamma p 0.3, 0.7–1.5. A `run.json` written before these settings existed reads
//! each as off (`prob` 0), so an old run resumes with the augmentation it was started with.
//!
//! Contract: images `[B, C, H, W]` (float), brain `[B, 1, H, W]` (bool); only brain pixels
//! change, non-brain pixels keep their value (0 after preprocessing), labels are never seen.
//! Every random number, the noise fields included, comes from the caller's [`Rng`] on the
//! host, so the result is a pure function of the stream on every device. Memory: a few
//! `[B, C, H, W]` temporaries on the device, `n_noisy · H · W` f32 on the host.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::rng::Rng;

/// Largest blur σ the config accepts, pixels (the kernel spans ±3σ).
pub const MAX_BLUR_SIGMA_PX: f64 = 4.0;
/// Smallest gain, contrast factor or γ the config accepts.
pub const MIN_FACTOR: f64 = 0.01;
/// Largest low-resolution factor the config accepts.
pub const MAX_LOW_RES_FACTOR: f64 = 4.0;

/// Values below this count as zero in the normalised convolutions and plane statistics.
const EPS: f64 = 1e-6;

/// One random intensity operation: when it runs and how strong it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandomOp {
    /// Probability per slice that the operation runs (0 disables it).
    pub prob: f64,
    /// Given that it runs on a slice, probability per channel.
    pub channel_prob: f64,
    /// Range `[min, max]` of the parameter, drawn per channel (meaning per operation, see the
    /// module docs).
    pub range: (f64, f64),
}

impl RandomOp {
    /// An operation with these settings.
    pub const fn new(prob: f64, channel_prob: f64, range: (f64, f64)) -> RandomOp {
        RandomOp {
            prob,
            channel_prob,
            range,
        }
    }

    /// The same ranges, never run.
    pub const fn off(self) -> RandomOp {
        RandomOp { prob: 0.0, ..self }
    }

    /// Whether the operation can run at all.
    pub fn is_on(&self) -> bool {
        self.prob > 0.0 && self.channel_prob > 0.0
    }

    /// Checks the probabilities and that `range` is finite, ordered and inside
    /// `[lowest, highest]`; `name` names the field in the message.
    pub fn validate(&self, name: &str, lowest: f64, highest: f64) -> Result<(), String> {
        for (what, p) in [("prob", self.prob), ("channel_prob", self.channel_prob)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("augment.{name}.{what} = {p} is not a probability"));
            }
        }
        let (lo, hi) = self.range;
        if !(lo.is_finite() && hi.is_finite() && lo >= lowest && hi >= lo && hi <= highest) {
            return Err(format!(
                "augment.{name}.range = ({lo}, {hi}) must satisfy {lowest} ≤ min ≤ max ≤ {highest}"
            ));
        }
        Ok(())
    }
}

/// Defaults of the six operations (see the module docs).
pub mod defaults {
    use super::RandomOp;

    /// Additive gaussian noise, σ in units of the plane's brain standard deviation.
    pub const NOISE: RandomOp = RandomOp::new(0.1, 1.0, (0.0, 0.1));
    /// Gaussian blur, σ in pixels.
    pub const BLUR: RandomOp = RandomOp::new(0.2, 0.5, (0.5, 1.0));
    /// Multiplicative brightness.
    pub const GAIN: RandomOp = RandomOp::new(0.15, 1.0, (0.7, 1.3));
    /// Contrast about the brain mean.
    pub const CONTRAST: RandomOp = RandomOp::new(0.15, 1.0, (0.65, 1.5));
    /// Low-resolution simulation, downsampling factor.
    pub const LOW_RES: RandomOp = RandomOp::new(0.25, 0.5, (1.0, 2.0));
    /// Gamma on the brain range.
    pub const GAMMA: RandomOp = RandomOp::new(0.3, 1.0, (0.7, 1.5));

    // serde defaults for fields a run.json written before them lacks: off, same ranges.
    pub(crate) fn noise_off() -> RandomOp {
        NOISE.off()
    }
    pub(crate) fn blur_off() -> RandomOp {
        BLUR.off()
    }
    pub(crate) fn gain_off() -> RandomOp {
        GAIN.off()
    }
    pub(crate) fn contrast_off() -> RandomOp {
        CONTRAST.off()
    }
    pub(crate) fn low_res_off() -> RandomOp {
        LOW_RES.off()
    }
    pub(crate) fn gamma_off() -> RandomOp {
        GAMMA.off()
    }
}

/// The six operations of [`apply_intensity_ops`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntensityOps {
    /// Additive noise.
    pub noise: RandomOp,
    /// Gaussian blur.
    pub blur: RandomOp,
    /// Multiplicative brightness.
    pub gain: RandomOp,
    /// Contrast about the brain mean.
    pub contrast: RandomOp,
    /// Low-resolution simulation.
    pub low_res: RandomOp,
    /// Gamma.
    pub gamma: RandomOp,
}

/// What one operation does to one batch: per plane (slice-major, `B · C`), whether it runs
/// and its parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneDraws {
    /// `B · C` flags.
    pub on: Vec<bool>,
    /// `B · C` parameters (drawn whether or not the plane is on).
    pub param: Vec<f64>,
}

impl PlaneDraws {
    /// Draws `op` for `n_slices × n_channels` planes: slice chance, then per channel the
    /// channel chance and the parameter. `balanced` samples a range straddling 1 below and
    /// above 1 with equal chance.
    pub fn draw(
        op: &RandomOp,
        n_slices: usize,
        n_channels: usize,
        balanced: bool,
        rng: &mut Rng,
    ) -> PlaneDraws {
        let mut on = Vec::with_capacity(n_slices * n_channels);
        let mut param = Vec::with_capacity(n_slices * n_channels);
        for _ in 0..n_slices {
            let slice_on = rng.chance(op.prob);
            for _ in 0..n_channels {
                on.push(rng.chance(op.channel_prob) && slice_on);
                let (lo, hi) = op.range;
                let v = if balanced && lo < 1.0 && hi > 1.0 {
                    if rng.chance(0.5) {
                        rng.uniform(lo, 1.0)
                    } else {
                        rng.uniform(1.0, hi)
                    }
                } else {
                    rng.uniform(lo, hi)
                };
                param.push(v);
            }
        }
        PlaneDraws { on, param }
    }

    /// Whether any plane runs.
    pub fn any(&self) -> bool {
        self.on.iter().any(|&on| on)
    }
}

/// Runs `op` on the planes of `x` `[B, C, H, W]` that `d` turns on, and only on those:
/// they are gathered into `[N, 1, H, W]` with their brain masks (bool, same shape) and
/// parameters, `op` returns their new values, and its result replaces the brain pixels of
/// those planes. Every other pixel keeps its value bit for bit; with no plane on, `x` is
/// returned as it is.
fn on_planes(
    x: &Tensor,
    brain: &Tensor,
    d: &PlaneDraws,
    op: impl FnOnce(&Tensor, &Tensor, &[f64]) -> Result<Tensor, tch::TchError>,
) -> Result<Tensor, tch::TchError> {
    let (b, c, h, w) = x.size4()?;
    let on: Vec<i64> = (0..b * c)
        .filter(|&i| d.on.get(i as usize).copied().unwrap_or(false))
        .collect();
    if on.is_empty() {
        return Ok(x.shallow_clone());
    }
    let params: Vec<f64> = on
        .iter()
        .map(|&i| d.param.get(i as usize).copied().unwrap_or(1.0))
        .collect();
    let idx = Tensor::f_from_slice(&on)?.f_to_device(x.device())?;
    let flat = x.f_reshape([b * c, 1, h, w])?;
    let masks = brain
        .f_expand([b, c, h, w], false)?
        .f_reshape([b * c, 1, h, w])?
        .f_index_select(0, &idx)?;
    let planes = flat.f_index_select(0, &idx)?;
    let new = op(&planes, &masks, &params)?.f_where_self(&masks, &planes)?;
    flat.f_index_copy(0, &idx, &new)?.f_reshape([b, c, h, w])
}

/// `[N, 1, 1, 1]` tensor of `values` in `like`'s kind and device.
fn per_plane(values: &[f64], like: &Tensor) -> Result<Tensor, tch::TchError> {
    let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::f_from_slice(&v)?
        .f_reshape([v.len() as i64, 1, 1, 1])?
        .f_to_device(like.device())?
        .f_to_kind(like.kind())
}

/// Brain mean and standard deviation of each plane `[N, 1, H, W]`, as `[N, 1, 1, 1]` (0 for
/// a plane without brain).
fn mean_sd(x: &Tensor, brain: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
    let kind = x.kind();
    let m = brain.f_to_kind(kind)?;
    let dims = &[1i64, 2, 3][..];
    let count = m.f_sum_dim_intlist(dims, true, kind)?.f_clamp_min(1.0)?;
    let mean = x
        .f_mul(&m)?
        .f_sum_dim_intlist(dims, true, kind)?
        .f_div(&count)?;
    let dev = x.f_sub(&mean)?.f_mul(&m)?;
    let sd = dev
        .f_mul(&dev)?
        .f_sum_dim_intlist(dims, true, kind)?
        .f_div(&count)?
        .f_sqrt()?;
    Ok((mean, sd))
}

/// Brain minimum and maximum of each plane `[N, 1, H, W]`, as `[N, 1, 1, 1]` (+∞ and −∞
/// for a plane without brain).
fn min_max(x: &Tensor, brain: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
    let dims = &[1i64, 2, 3][..];
    let inf = Tensor::f_from_slice(&[f32::INFINITY])?
        .f_to_device(x.device())?
        .f_to_kind(x.kind())?;
    let min = x.f_where_self(brain, &inf)?.f_amin(dims, true)?;
    let max = x.f_where_self(brain, &inf.f_neg()?)?.f_amax(dims, true)?;
    Ok((min, max))
}

/// Multiplies the brain pixels of each `on` plane by its parameter.
pub fn apply_gain(x: &Tensor, brain: &Tensor, d: &PlaneDraws) -> Result<Tensor, tch::TchError> {
    on_planes(x, brain, d, |planes, _, gains| {
        planes.f_mul(&per_plane(gains, planes)?)
    })
}

/// Scales the brain pixels of each `on` plane about their mean by its parameter, clamped to
/// the plane's brain range before the operation.
pub fn apply_contrast(x: &Tensor, brain: &Tensor, d: &PlaneDraws) -> Result<Tensor, tch::TchError> {
    on_planes(x, brain, d, |planes, masks, factors| {
        let (mean, _) = mean_sd(planes, masks)?;
        let (min, max) = min_max(planes, masks)?;
        planes
            .f_sub(&mean)?
            .f_mul(&per_plane(factors, planes)?)?
            .f_add(&mean)?
            .f_clamp_min_tensor(&min)?
            .f_clamp_max_tensor(&max)
    })
}

/// Applies `lo + span · ((x − lo) / span)^γ` on each `on` plane, `[lo, lo + span]` the plane's
/// brain range (planes with a constant brain are left alone).
pub fn apply_gamma(x: &Tensor, brain: &Tensor, d: &PlaneDraws) -> Result<Tensor, tch::TchError> {
    on_planes(x, brain, d, |planes, masks, gammas| {
        let (min, max) = min_max(planes, masks)?;
        let span = max.f_sub(&min)?;
        let new = planes
            .f_sub(&min)?
            .f_div(&span.f_clamp_min(EPS)?)?
            .f_clamp(0.0, 1.0)?
            .f_pow(&per_plane(gammas, planes)?)?
            .f_mul(&span)?
            .f_add(&min)?;
        new.f_where_self(&span.f_gt(EPS)?, planes)
    })
}

/// Adds `σ · sd · n` to the brain pixels of each `on` plane, `σ` its parameter, `sd` the
/// plane's brain standard deviation, `n` standard normal values drawn from `rng` (row-major,
/// plane after plane, only for the planes that are on).
pub fn apply_noise(
    x: &Tensor,
    brain: &Tensor,
    d: &PlaneDraws,
    rng: &mut Rng,
) -> Result<Tensor, tch::TchError> {
    on_planes(x, brain, d, |planes, masks, sigmas| {
        let (n, _, h, w) = planes.size4()?;
        let noise: Vec<f32> = (0..n * h * w).map(|_| rng.normal() as f32).collect();
        let noise = Tensor::f_from_slice(&noise)?
            .f_reshape([n, 1, h, w])?
            .f_to_device(planes.device())?
            .f_to_kind(planes.kind())?;
        let (_, sd) = mean_sd(planes, masks)?;
        let sigma = per_plane(sigmas, planes)?.f_mul(&sd)?;
        planes.f_add(&noise.f_mul(&sigma)?)
    })
}

/// Normalised 1D gaussian taps of `sigma_px` over `±radius` (a unit impulse for σ ≤ 0).
fn gaussian_taps(sigma_px: f64, radius: i64) -> Vec<f32> {
    let taps: Vec<f64> = (-radius..=radius)
        .map(|k| {
            if sigma_px > 0.0 {
                (-(k * k) as f64 / (2.0 * sigma_px * sigma_px)).exp()
            } else {
                f64::from(u8::from(k == 0))
            }
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter().map(|&t| (t / sum) as f32).collect()
}

/// Blurs each `on` plane with a gaussian of its parameter's σ (pixels): one separable grouped
/// convolution over those planes, normalised by the equally blurred brain mask so that
/// background zeros do not darken the brain edge. `max_sigma_px` sizes the kernel
/// (`±ceil(3σ)`).
pub fn apply_blur(
    x: &Tensor,
    brain: &Tensor,
    d: &PlaneDraws,
    max_sigma_px: f64,
) -> Result<Tensor, tch::TchError> {
    on_planes(x, brain, d, |planes, masks, sigmas| {
        let (n, _, h, w) = planes.size4()?;
        let radius = (3.0 * max_sigma_px.max(EPS)).ceil() as i64;
        let k = 2 * radius + 1;
        let taps: Vec<f32> = sigmas
            .iter()
            .flat_map(|&sigma| gaussian_taps(sigma, radius))
            .collect();
        let taps = Tensor::f_from_slice(&taps)?
            .f_to_device(planes.device())?
            .f_to_kind(planes.kind())?;
        let kx = taps.f_reshape([n, 1, 1, k])?;
        let ky = taps.f_reshape([n, 1, k, 1])?;
        let m = masks.f_to_kind(planes.kind())?;
        // [2, N, H, W]: the masked values and the mask, each plane its own group.
        let stacked = Tensor::f_stack(&[planes.f_mul(&m)?, m], 0)?.f_reshape([2, n, h, w])?;
        let blurred = stacked
            .f_conv2d(&kx, None::<Tensor>, [1, 1], [0, radius], [1, 1], n)?
            .f_conv2d(&ky, None::<Tensor>, [1, 1], [radius, 0], [1, 1], n)?;
        let num = blurred.f_select(0, 0)?.f_reshape([n, 1, h, w])?;
        let den = blurred.f_select(0, 1)?.f_reshape([n, 1, h, w])?;
        num.f_div(&den.f_clamp_min(EPS)?)?
            .f_where_self(&den.f_gt(EPS)?, planes)
    })
}

/// Simulates a coarser acquisition on each `on` plane: area downsampling by its parameter's
/// factor (to `round(H / f) × round(W / f)`), bilinear upsampling back to `H × W`, both
/// normalised by the brain mask. One small interpolation pair per plane that is on.
pub fn apply_low_res(x: &Tensor, brain: &Tensor, d: &PlaneDraws) -> Result<Tensor, tch::TchError> {
    on_planes(x, brain, d, |planes, masks, factors| {
        let (_, _, h, w) = planes.size4()?;
        let mut out = Vec::with_capacity(factors.len());
        for (i, &f) in factors.iter().enumerate() {
            let plane = planes.f_narrow(0, i as i64, 1)?;
            let m = masks.f_narrow(0, i as i64, 1)?.f_to_kind(planes.kind())?;
            let f = f.max(1.0);
            let size = [
                ((h as f64 / f).round() as i64).max(1),
                ((w as f64 / f).round() as i64).max(1),
            ];
            let down_x = plane.f_mul(&m)?.f_adaptive_avg_pool2d(size)?;
            let down_m = m.f_adaptive_avg_pool2d(size)?;
            let has = down_m.f_gt(EPS)?.f_to_kind(planes.kind())?;
            let low = down_x.f_div(&down_m.f_clamp_min(EPS)?)?.f_mul(&has)?;
            let up_x = low.f_upsample_bilinear2d([h, w], false, None, None)?;
            let up_m = has.f_upsample_bilinear2d([h, w], false, None, None)?;
            let new = up_x.f_div(&up_m.f_clamp_min(EPS)?)?;
            out.push(new.f_where_self(&up_m.f_gt(EPS)?, &plane)?);
        }
        Tensor::f_cat(&out, 0)
    })
}

/// Draws every operation of `ops` for the batch (fixed order: noise, blur, gain, contrast,
/// low_res, gamma; then the noise fields) and applies them in that order to the brain pixels
/// of `images` `[B, C, H, W]`; `brain` is `[B, 1, H, W]` bool. Operations that run on no plane
/// cost nothing.
pub fn apply_intensity_ops(
    images: &Tensor,
    brain: &Tensor,
    ops: &IntensityOps,
    rng: &mut Rng,
) -> Result<Tensor, tch::TchError> {
    let (b, c, _, _) = images.size4()?;
    let (b, c) = (b as usize, c as usize);
    let mut draw = |op: &RandomOp, balanced: bool| {
        if op.is_on() {
            Some(PlaneDraws::draw(op, b, c, balanced, rng))
        } else {
            None
        }
    };
    let noise = draw(&ops.noise, false);
    let blur = draw(&ops.blur, false);
    let gain = draw(&ops.gain, true);
    let contrast = draw(&ops.contrast, true);
    let low_res = draw(&ops.low_res, false);
    let gamma = draw(&ops.gamma, true);
    fn active(d: &Option<PlaneDraws>) -> Option<&PlaneDraws> {
        d.as_ref().filter(|d| d.any())
    }

    let mut x = images.shallow_clone();
    if let Some(d) = active(&noise) {
        x = apply_noise(&x, brain, d, rng)?;
    }
    if let Some(d) = active(&blur) {
        x = apply_blur(&x, brain, d, ops.blur.range.1)?;
    }
    if let Some(d) = active(&gain) {
        x = apply_gain(&x, brain, d)?;
    }
    if let Some(d) = active(&contrast) {
        x = apply_contrast(&x, brain, d)?;
    }
    if let Some(d) = active(&low_res) {
        x = apply_low_res(&x, brain, d)?;
    }
    if let Some(d) = active(&gamma) {
        x = apply_gamma(&x, brain, d)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const H: i64 = 40;
    const W: i64 = 48;

    /// `[2, 1, H, W]` brain: a centred disc of radius 16 px in both slices.
    fn brain() -> Tensor {
        let mut m = vec![0u8; (2 * H * W) as usize];
        for s in 0..2 {
            for y in 0..H {
                for x in 0..W {
                    let (dy, dx) = ((y - H / 2) as f64, (x - W / 2) as f64);
                    if dx * dx + dy * dy < 16.0 * 16.0 {
                        m[(s * H * W + y * W + x) as usize] = 1;
                    }
                }
            }
        }
        Tensor::from_slice(&m)
            .reshape([2, 1, H, W])
            .to_kind(Kind::Bool)
    }

    /// `[2, 2, H, W]` images, 0 outside the brain: channel 0 a smooth ramp in [0.2, 1.0],
    /// channel 1 i.i.d. uniform values in [-0.5, 1.5] (signed, as normalised maps may be).
    fn images(brain: &Tensor) -> Tensor {
        let ramp = (Tensor::arange(W, (Kind::Float, Device::Cpu)) / (W - 1) as f64 * 0.8 + 0.2)
            .view([1, 1, 1, W])
            .expand([2, 1, H, W], true);
        let mut rng = Rng::new(11);
        let values: Vec<f32> = (0..2 * H * W)
            .map(|_| rng.uniform(-0.5, 1.5) as f32)
            .collect();
        let random = Tensor::from_slice(&values).reshape([2, 1, H, W]);
        let x = Tensor::cat(&[ramp, random], 1);
        x * brain.to_kind(Kind::Float)
    }

    /// Every plane on with these parameters (slice-major, 4 planes).
    fn all_on(param: [f64; 4]) -> PlaneDraws {
        PlaneDraws {
            on: vec![true; 4],
            param: param.to_vec(),
        }
    }

    fn max_abs(t: &Tensor) -> f64 {
        f64::try_from(t.abs().max()).unwrap()
    }

    /// The brain pixels of plane `(b, c)`.
    fn brain_values(x: &Tensor, brain: &Tensor, b: i64, c: i64) -> Tensor {
        x.get(b).get(c).masked_select(&brain.get(b).get(0))
    }

    fn background_max(x: &Tensor, brain: &Tensor) -> f64 {
        let outside = brain.logical_not().expand_as(x);
        max_abs(&x.masked_select(&outside))
    }

    fn sd(t: &Tensor) -> f64 {
        f64::try_from(t.std(false)).unwrap()
    }

    fn mean(t: &Tensor) -> f64 {
        f64::try_from(t.mean(Kind::Float)).unwrap()
    }

    #[test]
    fn gain_scales_brain_pixels_only_and_skips_planes_that_are_off() {
        let brain = brain();
        let x = images(&brain);
        let d = PlaneDraws {
            on: vec![true, true, false, true],
            param: vec![1.3, 0.7, 2.0, 1.1],
        };
        let y = apply_gain(&x, &brain, &d).unwrap();
        for (i, &g) in d.param.iter().enumerate() {
            let (b, c) = (i as i64 / 2, i as i64 % 2);
            let expected = if d.on[i] {
                x.get(b).get(c) * g
            } else {
                x.get(b).get(c)
            };
            assert!(max_abs(&(y.get(b).get(c) - expected)) < 1e-6, "plane {i}");
        }
        assert!(
            y.get(1).get(0).equal(&x.get(1).get(0)),
            "an off plane is bit-identical"
        );
        assert_eq!(background_max(&y, &brain), 0.0);
    }

    #[test]
    fn contrast_scales_the_spread_about_the_brain_mean_within_the_range() {
        let brain = brain();
        let x = images(&brain);
        let y = apply_contrast(&x, &brain, &all_on([0.6, 0.6, 1.5, 1.5])).unwrap();
        for (b, c) in [(0, 0), (0, 1)] {
            let (before, after) = (
                brain_values(&x, &brain, b, c),
                brain_values(&y, &brain, b, c),
            );
            assert!((mean(&after) - mean(&before)).abs() < 1e-5);
            assert!((sd(&after) / sd(&before) - 0.6).abs() < 1e-4);
        }
        // Stronger contrast: the spread grows, the values stay inside the old brain range.
        for (b, c) in [(1, 0), (1, 1)] {
            let (before, after) = (
                brain_values(&x, &brain, b, c),
                brain_values(&y, &brain, b, c),
            );
            assert!(sd(&after) > 1.2 * sd(&before));
            assert!(f64::try_from(after.max()).unwrap() <= f64::try_from(before.max()).unwrap());
            assert!(f64::try_from(after.min()).unwrap() >= f64::try_from(before.min()).unwrap());
        }
        assert_eq!(background_max(&y, &brain), 0.0);
    }

    #[test]
    fn gamma_keeps_the_brain_range_and_is_sign_safe() {
        let brain = brain();
        let x = images(&brain);
        let y = apply_gamma(&x, &brain, &all_on([1.5, 1.5, 0.7, 0.7])).unwrap();
        assert!(bool::try_from(y.isfinite().all()).unwrap());
        for b in 0..2 {
            for c in 0..2 {
                let (before, after) = (
                    brain_values(&x, &brain, b, c),
                    brain_values(&y, &brain, b, c),
                );
                let range = |t: &Tensor| {
                    (
                        f64::try_from(t.min()).unwrap(),
                        f64::try_from(t.max()).unwrap(),
                    )
                };
                let ((lo0, hi0), (lo1, hi1)) = (range(&before), range(&after));
                assert!(
                    (lo0 - lo1).abs() < 1e-5 && (hi0 - hi1).abs() < 1e-5,
                    "({b}, {c})"
                );
                // γ > 1 pulls the mid-range down, γ < 1 pushes it up.
                let shift = mean(&after) - mean(&before);
                if b == 0 {
                    assert!(shift < -0.01, "({b}, {c}): {shift}");
                } else {
                    assert!(shift > 0.01, "({b}, {c}): {shift}");
                }
            }
        }
        // Channel 1 crosses zero; γ = 1 is the identity there too.
        let same = apply_gamma(&x, &brain, &all_on([1.0; 4])).unwrap();
        assert!(max_abs(&(same - &x)) < 1e-5);
        assert_eq!(background_max(&y, &brain), 0.0);
    }

    #[test]
    fn noise_adds_the_drawn_relative_sigma_and_is_a_function_of_the_stream() {
        let brain = brain();
        let x = images(&brain);
        let d = all_on([0.5, 0.5, 0.0, 0.0]);
        let y = apply_noise(&x, &brain, &d, &mut Rng::new(3)).unwrap();
        for c in 0..2 {
            let before = brain_values(&x, &brain, 0, c);
            let added = brain_values(&y, &brain, 0, c) - &before;
            let ratio = sd(&added) / sd(&before);
            assert!((ratio - 0.5).abs() < 0.05, "channel {c}: {ratio}");
            assert!(mean(&added).abs() < 0.05 * sd(&before));
        }
        // σ = 0 leaves a plane as it was.
        assert!(max_abs(&(y.get(1) - x.get(1))) < 1e-7);
        assert_eq!(background_max(&y, &brain), 0.0);
        let again = apply_noise(&x, &brain, &d, &mut Rng::new(3)).unwrap();
        assert!(again.equal(&y));
        let other = apply_noise(&x, &brain, &d, &mut Rng::new(4)).unwrap();
        assert!(!other.equal(&y));
    }

    #[test]
    fn blur_reduces_the_variance_of_noise_and_keeps_a_constant_brain_constant() {
        let brain = brain();
        let x = images(&brain);
        let d = PlaneDraws {
            on: vec![true, true, true, false],
            param: vec![1.0, 1.0, 1.0, 1.0],
        };
        let y = apply_blur(&x, &brain, &d, 1.0).unwrap();
        // I.i.d. noise (channel 1): a σ = 1 px gaussian keeps Σw² ≈ 1 / (4π) of the variance
        // in the interior; the brain edge keeps more, so the bound is loose.
        let before = sd(&brain_values(&x, &brain, 0, 1)).powi(2);
        let after = sd(&brain_values(&y, &brain, 0, 1)).powi(2);
        assert!(after < 0.2 * before, "variance {before} → {after}");
        // A plane that was off is bit-identical.
        assert!(y.get(1).get(1).equal(&x.get(1).get(1)));
        // Normalised by the blurred mask: a constant brain stays constant up to its edge.
        let constant = brain.to_kind(Kind::Float).expand([2, 2, H, W], true) * 0.7;
        let blurred = apply_blur(&constant, &brain, &all_on([1.0; 4]), 1.0).unwrap();
        assert!(max_abs(&(&blurred - &constant)) < 1e-5);
        assert_eq!(background_max(&y, &brain), 0.0);
        // The ramp (linear inside the brain) keeps its mean.
        let ramp = (
            brain_values(&x, &brain, 0, 0),
            brain_values(&y, &brain, 0, 0),
        );
        assert!((mean(&ramp.0) - mean(&ramp.1)).abs() < 0.01);
    }

    #[test]
    fn low_res_removes_the_highest_frequencies() {
        let brain = brain();
        // A checkerboard (the Nyquist frequency) on a constant 0.5, inside the brain.
        let yy = Tensor::arange(H, (Kind::Int64, Device::Cpu)).view([H, 1]);
        let xx = Tensor::arange(W, (Kind::Int64, Device::Cpu)).view([1, W]);
        let checker = ((yy + xx).remainder(2) * 2 - 1).to_kind(Kind::Float) * 0.3 + 0.5;
        let m = brain.to_kind(Kind::Float);
        let x = checker.view([1, 1, H, W]).expand([2, 2, H, W], true) * &m;
        // The checkerboard's amplitude in plane (b, c): the mean of (x − 0.5) · (±1).
        let sign = ((&checker - 0.5) / 0.3)
            .view([1, 1, H, W])
            .expand([2, 2, H, W], true);
        let nyquist = |t: &Tensor, b: i64, c: i64| {
            let signs = brain_values(&sign, &brain, b, c);
            mean(&((brain_values(t, &brain, b, c) - 0.5) * signs)).abs()
        };
        let d = PlaneDraws {
            on: vec![true, true, true, false],
            param: vec![2.0, 1.5, 1.0, 2.0],
        };
        let y = apply_low_res(&x, &brain, &d).unwrap();
        let amplitude = nyquist(&x, 0, 0);
        assert!((amplitude - 0.3).abs() < 1e-5);
        assert!(
            nyquist(&y, 0, 0) < 0.05 * amplitude,
            "×2: {}",
            nyquist(&y, 0, 0)
        );
        assert!(
            nyquist(&y, 0, 1) < 0.5 * amplitude,
            "×1.5: {}",
            nyquist(&y, 0, 1)
        );
        // Factor 1 and planes that are off: unchanged.
        assert!(max_abs(&(y.get(1).get(0) - x.get(1).get(0))) < 1e-5);
        assert!(y.get(1).get(1).equal(&x.get(1).get(1)));
        // The mean level survives (the brain-normalised resampling adds no dark rim).
        assert!((mean(&brain_values(&y, &brain, 0, 0)) - 0.5).abs() < 0.02);
        assert_eq!(background_max(&y, &brain), 0.0);
    }

    #[test]
    fn draws_follow_the_probabilities_and_balance_factors_about_one() {
        let op = RandomOp::new(0.5, 0.5, (0.5, 1.5));
        let d = PlaneDraws::draw(&op, 4000, 2, true, &mut Rng::new(8));
        let on = d.on.iter().filter(|&&on| on).count() as f64 / d.on.len() as f64;
        assert!((on - 0.25).abs() < 0.02, "{on}");
        let below = d.param.iter().filter(|&&p| p < 1.0).count() as f64 / d.param.len() as f64;
        assert!((below - 0.5).abs() < 0.02, "{below}");
        assert!(d.param.iter().all(|&p| (0.5..=1.5).contains(&p)));
        assert_eq!(d, PlaneDraws::draw(&op, 4000, 2, true, &mut Rng::new(8)));
        assert!(!PlaneDraws::draw(&op.off(), 10, 2, true, &mut Rng::new(8)).any());
    }

    #[test]
    fn all_ops_together_are_deterministic_finite_and_stay_in_the_brain() {
        let brain = brain();
        let x = images(&brain);
        let always = |op: RandomOp| RandomOp {
            prob: 1.0,
            channel_prob: 1.0,
            ..op
        };
        let ops = IntensityOps {
            noise: always(defaults::NOISE),
            blur: always(defaults::BLUR),
            gain: always(defaults::GAIN),
            contrast: always(defaults::CONTRAST),
            low_res: always(defaults::LOW_RES),
            gamma: always(defaults::GAMMA),
        };
        let a = apply_intensity_ops(&x, &brain, &ops, &mut Rng::new(5)).unwrap();
        let b = apply_intensity_ops(&x, &brain, &ops, &mut Rng::new(5)).unwrap();
        let c = apply_intensity_ops(&x, &brain, &ops, &mut Rng::new(6)).unwrap();
        assert!(a.equal(&b) && !a.equal(&c) && !a.equal(&x));
        assert!(bool::try_from(a.isfinite().all()).unwrap());
        assert_eq!(background_max(&a, &brain), 0.0);
        let off = IntensityOps {
            noise: ops.noise.off(),
            blur: ops.blur.off(),
            gain: ops.gain.off(),
            contrast: ops.contrast.off(),
            low_res: ops.low_res.off(),
            gamma: ops.gamma.off(),
        };
        assert!(
            apply_intensity_ops(&x, &brain, &off, &mut Rng::new(5))
                .unwrap()
                .equal(&x)
        );
    }
}
