//! Data augmentation of a batch on the training device: random flips, rotation, scaling,
//! translation and a small elastic deformation share one sampling grid per slice, applied to
//! the image bilinearly and to the labels with nearest neighbour, so both stay aligned; then
//! per-channel intensity operations on the brain pixels, in normalised units, that mimic how
//! maps differ between vendors, scanners and protocols ([`intensity`]: noise, blur, gain,
//! contrast, low resolution, gamma, with nnU-Net's probabilities and ranges); last a small
//! per-channel gain and offset jitter. Labels are untouched by every intensity operation, and
//! non-brain pixels keep their value (0 after preprocessing).
//!
//! Every random number comes from the caller's [`Rng`] (not libtorch's global generator), so
//! a step's augmentation is a pure function of `(seed, epoch, step)` on every device.
//!
//! Geometry: the affine part acts about the slice centre in pixel units (so rotation is a true
//! rotation for non-square slices). The elastic part is a displacement field drawn as i.i.d.
//! normal values (σ = `elastic_sigma_px`) on a coarse `elastic_grid × elastic_grid` lattice and
//! upsampled bicubically to `H × W`: smooth, with about `H / elastic_grid` pixels of
//! correlation length. Pixels sampled from outside the slice read 0 (the value of non-brain
//! voxels after preprocessing) and label 0.

pub mod intensity;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::rng::Rng;
pub use intensity::{IntensityOps, MAX_BLUR_SIGMA_PX, MAX_LOW_RES_FACTOR, MIN_FACTOR, RandomOp};

/// Augmentation settings. Probabilities are per slice. The intensity operations
/// ([`intensity`]) read as off when a `run.json` lacks them (written before they existed), so
/// such a run resumes with the augmentation it was started with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Master switch; `false` returns the batch unchanged.
    pub enabled: bool,
    /// Probability of a left–right flip.
    pub flip_x_prob: f64,
    /// Probability of an anterior–posterior flip (0 by default: not anatomical).
    pub flip_y_prob: f64,
    /// Rotation drawn uniformly from ±this many degrees.
    pub rotation_deg: f64,
    /// Isotropic scale drawn uniformly from `[min, max]`.
    pub scale_range: (f64, f64),
    /// Translation drawn uniformly from ±this fraction of the slice size, per axis.
    pub translate_frac: f64,
    /// Probability of the elastic deformation.
    pub elastic_prob: f64,
    /// Standard deviation of the coarse displacement values, pixels.
    pub elastic_sigma_px: f64,
    /// Control points per axis of the displacement lattice (≥ 2).
    pub elastic_grid: i64,
    /// Probability of the intensity jitter.
    pub intensity_prob: f64,
    /// Per-channel gain drawn from `1 ± intensity_scale`.
    pub intensity_scale: f64,
    /// Per-channel offset drawn from `± intensity_shift` (normalised units).
    pub intensity_shift: f64,
    /// Additive gaussian noise; `range`: σ in units of the plane's brain standard deviation.
    #[serde(default = "intensity::defaults::noise_off")]
    pub noise: RandomOp,
    /// Gaussian blur; `range`: σ in model-grid pixels (≤ [`MAX_BLUR_SIGMA_PX`]).
    #[serde(default = "intensity::defaults::blur_off")]
    pub blur: RandomOp,
    /// Multiplicative brightness; `range`: the gain.
    #[serde(default = "intensity::defaults::gain_off")]
    pub gain: RandomOp,
    /// Contrast about the brain mean; `range`: the factor.
    #[serde(default = "intensity::defaults::contrast_off")]
    pub contrast: RandomOp,
    /// Low-resolution simulation; `range`: the downsampling factor (1 to
    /// [`MAX_LOW_RES_FACTOR`]).
    #[serde(default = "intensity::defaults::low_res_off")]
    pub low_res: RandomOp,
    /// Gamma on the plane's brain range; `range`: γ.
    #[serde(default = "intensity::defaults::gamma_off")]
    pub gamma: RandomOp,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            enabled: true,
            flip_x_prob: 0.5,
            flip_y_prob: 0.0,
            rotation_deg: 15.0,
            scale_range: (0.9, 1.1),
            translate_frac: 0.04,
            elastic_prob: 0.3,
            elastic_sigma_px: 2.0,
            elastic_grid: 6,
            intensity_prob: 0.8,
            intensity_scale: 0.1,
            intensity_shift: 0.1,
            noise: intensity::defaults::NOISE,
            blur: intensity::defaults::BLUR,
            gain: intensity::defaults::GAIN,
            contrast: intensity::defaults::CONTRAST,
            low_res: intensity::defaults::LOW_RES,
            gamma: intensity::defaults::GAMMA,
        }
    }
}

impl AugmentConfig {
    /// No augmentation.
    pub fn off() -> AugmentConfig {
        AugmentConfig {
            enabled: false,
            ..AugmentConfig::default()
        }
    }

    /// The six intensity operations.
    pub fn intensity_ops(&self) -> IntensityOps {
        IntensityOps {
            noise: self.noise,
            blur: self.blur,
            gain: self.gain,
            contrast: self.contrast,
            low_res: self.low_res,
            gamma: self.gamma,
        }
    }

    /// The same geometry and jitter, every intensity operation off (the recipe before they
    /// existed).
    pub fn without_intensity_ops(&self) -> AugmentConfig {
        AugmentConfig {
            noise: self.noise.off(),
            blur: self.blur.off(),
            gain: self.gain.off(),
            contrast: self.contrast.off(),
            low_res: self.low_res.off(),
            gamma: self.gamma.off(),
            ..*self
        }
    }

    /// Checks the ranges; returns the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("augment.{name} = {p} is not a probability"))
            }
        };
        prob("flip_x_prob", self.flip_x_prob)?;
        prob("flip_y_prob", self.flip_y_prob)?;
        prob("elastic_prob", self.elastic_prob)?;
        prob("intensity_prob", self.intensity_prob)?;
        let (lo, hi) = self.scale_range;
        if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
            return Err(format!(
                "augment.scale_range = ({lo}, {hi}) must be 0 < min ≤ max"
            ));
        }
        for (name, v) in [
            ("rotation_deg", self.rotation_deg),
            ("translate_frac", self.translate_frac),
            ("elastic_sigma_px", self.elastic_sigma_px),
            ("intensity_scale", self.intensity_scale),
            ("intensity_shift", self.intensity_shift),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("augment.{name} = {v} must be finite and ≥ 0"));
            }
        }
        if self.elastic_grid < 2 {
            return Err(format!(
                "augment.elastic_grid = {} must be at least 2",
                self.elastic_grid
            ));
        }
        self.noise.validate("noise", 0.0, f64::INFINITY)?;
        self.blur.validate("blur", 0.0, MAX_BLUR_SIGMA_PX)?;
        self.gain.validate("gain", MIN_FACTOR, f64::INFINITY)?;
        self.contrast
            .validate("contrast", MIN_FACTOR, f64::INFINITY)?;
        self.low_res.validate("low_res", 1.0, MAX_LOW_RES_FACTOR)?;
        self.gamma.validate("gamma", MIN_FACTOR, f64::INFINITY)?;
        Ok(())
    }
}

/// Augments `images` `[B, C, H, W]` (float) and `labels` `[B, H, W]` (any integer kind) with
/// one random transform per slice drawn from `rng`; returns them in the same shapes and kinds,
/// on the same device.
pub fn augment_batch(
    images: &Tensor,
    labels: &Tensor,
    config: &AugmentConfig,
    rng: &mut Rng,
) -> Result<(Tensor, Tensor), tch::TchError> {
    if !config.enabled {
        return Ok((images.shallow_clone(), labels.shallow_clone()));
    }
    let (b, c, h, w) = images.size4()?;
    let device = images.device();
    let (hf, wf) = (h as f64, w as f64);

    // Affine part, per slice: theta maps output normalised coordinates to input ones.
    let mut theta = Vec::with_capacity(b as usize * 6);
    let mut elastic_on = Vec::with_capacity(b as usize);
    for _ in 0..b {
        let flip_x = if rng.chance(config.flip_x_prob) {
            -1.0
        } else {
            1.0
        };
        let flip_y = if rng.chance(config.flip_y_prob) {
            -1.0
        } else {
            1.0
        };
        let angle = rng
            .uniform(-config.rotation_deg, config.rotation_deg)
            .to_radians();
        let scale = rng.uniform(config.scale_range.0, config.scale_range.1);
        let tx = rng.uniform(-config.translate_frac, config.translate_frac) * 2.0;
        let ty = rng.uniform(-config.translate_frac, config.translate_frac) * 2.0;
        elastic_on.push(rng.chance(config.elastic_prob));
        // Pixel-space M = R(angle) · diag(flip_x, flip_y) / scale, conjugated by
        // D = diag(W/2, H/2) into normalised space: theta = D⁻¹ M D.
        let (sin, cos) = angle.sin_cos();
        let m = [
            [cos * flip_x / scale, -sin * flip_y / scale],
            [sin * flip_x / scale, cos * flip_y / scale],
        ];
        theta.extend_from_slice(&[
            m[0][0] as f32,
            (m[0][1] * hf / wf) as f32,
            tx as f32,
            (m[1][0] * wf / hf) as f32,
            m[1][1] as f32,
            ty as f32,
        ]);
    }
    let theta = Tensor::f_from_slice(&theta)?
        .f_reshape([b, 2, 3])?
        .f_to_device(device)?;
    let mut grid = Tensor::f_affine_grid_generator(&theta, [b, c, h, w], false)?;

    // Elastic part: coarse normal displacements (pixels → normalised units), upsampled.
    if elastic_on.iter().any(|&on| on) && config.elastic_sigma_px > 0.0 {
        let g = config.elastic_grid;
        let mut coarse = Vec::with_capacity((b * 2 * g * g) as usize);
        for &on in &elastic_on {
            for axis_scale in [2.0 / wf, 2.0 / hf] {
                for _ in 0..g * g {
                    let v = rng.normal() * config.elastic_sigma_px * axis_scale;
                    coarse.push(if on { v as f32 } else { 0.0 });
                }
            }
        }
        let field = Tensor::f_from_slice(&coarse)?
            .f_reshape([b, 2, g, g])?
            .f_to_device(device)?
            .f_upsample_bicubic2d([h, w], true, None, None)?
            .f_permute([0, 2, 3, 1])?;
        grid = grid.f_add(&field)?;
    }

    // Bilinear for the image (and its brain mask, warped along as an extra channel), nearest
    // for the labels; zeros outside.
    let brain = images
        .f_abs()?
        .f_sum_dim_intlist(1, true, images.kind())?
        .f_gt(0.0)?
        .f_to_kind(images.kind())?;
    let warped = Tensor::f_cat(&[images, &brain], 1)?.f_grid_sampler(&grid, 0, 0, false)?;
    let out_images = warped.f_narrow(1, 0, c)?;
    let brain = warped.f_narrow(1, c, 1)?.f_gt(0.5)?;
    let out_labels = labels
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?
        .f_grid_sampler(&grid, 1, 0, false)?
        .f_squeeze_dim(1)?
        .f_round()?
        .f_to_kind(labels.kind())?;

    // Intensity jitter per slice and channel, on brain pixels only (any channel nonzero before
    // the warp; the mask is warped with the image and thresholded at 0.5). Its parameters are
    // drawn before those of the intensity operations, which are applied first.
    let mut gains = Vec::with_capacity((b * c) as usize);
    let mut offsets = Vec::with_capacity((b * c) as usize);
    for _ in 0..b {
        let on = rng.chance(config.intensity_prob);
        for _ in 0..c {
            let gain = 1.0 + rng.uniform(-config.intensity_scale, config.intensity_scale);
            let offset = rng.uniform(-config.intensity_shift, config.intensity_shift);
            gains.push(if on { gain as f32 } else { 1.0 });
            offsets.push(if on { offset as f32 } else { 0.0 });
        }
    }
    let gains = Tensor::f_from_slice(&gains)?
        .f_reshape([b, c, 1, 1])?
        .f_to_device(device)?
        .f_to_kind(images.kind())?;
    let offsets = Tensor::f_from_slice(&offsets)?
        .f_reshape([b, c, 1, 1])?
        .f_to_device(device)?
        .f_to_kind(images.kind())?;
    let out_images =
        intensity::apply_intensity_ops(&out_images, &brain, &config.intensity_ops(), rng)?;
    let jittered = out_images.f_mul(&gains)?.f_add(&offsets)?;
    let out_images = jittered.f_where_self(&brain, &out_images)?;
    Ok((out_images, out_labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Two slices: channel 0 is an off-centre disc equal to the label, channel 1 a ramp.
    fn batch(h: i64, w: i64) -> (Tensor, Tensor) {
        let mut label = vec![0i64; (2 * h * w) as usize];
        for s in 0..2 {
            let (cy, cx, r) = if s == 0 {
                (0.35, 0.6, 0.18)
            } else {
                (0.6, 0.3, 0.12)
            };
            for y in 0..h {
                for x in 0..w {
                    let dy = y as f64 / h as f64 - cy;
                    let dx = x as f64 / w as f64 - cx;
                    if dx * dx + dy * dy < r * r {
                        label[(s * h * w + y * w + x) as usize] = 1;
                    }
                }
            }
        }
        let labels = Tensor::from_slice(&label).reshape([2, h, w]);
        let ramp = Tensor::arange(w, (Kind::Float, Device::Cpu))
            .view([1, 1, 1, w])
            .expand([2, 1, h, w], false)
            / w as f64
            + 0.5;
        let images = Tensor::cat(&[labels.to_kind(Kind::Float).unsqueeze(1), ramp], 1);
        (images, labels)
    }

    #[test]
    fn image_and_label_stay_aligned() {
        let (images, labels) = batch(48, 64);
        let config = AugmentConfig {
            elastic_prob: 1.0,
            elastic_sigma_px: 2.5,
            intensity_prob: 0.0,
            ..AugmentConfig::default().without_intensity_ops()
        };
        for seed in 0..6 {
            let mut rng = Rng::new(seed);
            let (x, y) = augment_batch(&images, &labels, &config, &mut rng).unwrap();
            assert_eq!(x.size(), images.size());
            assert_eq!(y.size(), labels.size());
            assert_eq!(y.kind(), Kind::Int64);
            let from_image = x.select(1, 0).gt(0.5);
            let from_label = y.eq(1);
            let both = from_image.logical_and(&from_label).sum(Kind::Float);
            let either = from_image.logical_or(&from_label).sum(Kind::Float);
            let iou = f64::try_from(both / either).unwrap();
            assert!(iou > 0.9, "seed {seed}: IoU {iou}");
            // Something did move.
            assert!(!y.equal(&labels), "seed {seed}: labels unchanged");
        }
    }

    #[test]
    fn a_certain_flip_is_an_exact_mirror() {
        let (images, labels) = batch(16, 20);
        let config = AugmentConfig {
            flip_x_prob: 1.0,
            rotation_deg: 0.0,
            scale_range: (1.0, 1.0),
            translate_frac: 0.0,
            elastic_prob: 0.0,
            intensity_prob: 0.0,
            ..AugmentConfig::default().without_intensity_ops()
        };
        let (x, y) = augment_batch(&images, &labels, &config, &mut Rng::new(1)).unwrap();
        assert!(y.equal(&labels.flip([2])));
        let diff = f64::try_from((x - images.flip([3])).abs().max()).unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn same_stream_same_batch_and_off_is_identity() {
        let (images, labels) = batch(32, 32);
        let config = AugmentConfig::default();
        let (a, la) = augment_batch(&images, &labels, &config, &mut Rng::new(9)).unwrap();
        let (b, lb) = augment_batch(&images, &labels, &config, &mut Rng::new(9)).unwrap();
        assert!(a.equal(&b) && la.equal(&lb));
        let (c, lc) =
            augment_batch(&images, &labels, &AugmentConfig::off(), &mut Rng::new(9)).unwrap();
        assert!(c.equal(&images) && lc.equal(&labels));
        assert!(AugmentConfig::default().validate().is_ok());
        let bad = AugmentConfig {
            flip_x_prob: 1.5,
            ..AugmentConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn intensity_jitter_leaves_the_background_at_zero() {
        let (images, labels) = batch(16, 16);
        // Zero the ramp outside the disc so that background pixels are all-zero.
        let images = &images * images.select(1, 0).unsqueeze(1);
        let config = AugmentConfig {
            flip_x_prob: 0.0,
            rotation_deg: 0.0,
            scale_range: (1.0, 1.0),
            translate_frac: 0.0,
            elastic_prob: 0.0,
            intensity_prob: 1.0,
            ..AugmentConfig::default()
        };
        let (x, _) = augment_batch(&images, &labels, &config, &mut Rng::new(4)).unwrap();
        let outside = labels.eq(0).unsqueeze(1).expand_as(&x);
        let leaked = f64::try_from(x.masked_select(&outside).abs().max()).unwrap();
        assert!(leaked < 1e-4, "{leaked}");
        assert!(!x.equal(&images));
    }

    /// Every intensity operation on every plane, geometry and jitter off.
    fn intensity_only() -> AugmentConfig {
        let always = |op: RandomOp| RandomOp {
            prob: 1.0,
            channel_prob: 1.0,
            ..op
        };
        let d = AugmentConfig::default();
        AugmentConfig {
            flip_x_prob: 0.0,
            rotation_deg: 0.0,
            scale_range: (1.0, 1.0),
            translate_frac: 0.0,
            elastic_prob: 0.0,
            intensity_prob: 0.0,
            noise: always(d.noise),
            blur: always(d.blur),
            gain: always(d.gain),
            contrast: always(d.contrast),
            low_res: always(d.low_res),
            gamma: always(d.gamma),
            ..d
        }
    }

    #[test]
    fn intensity_operations_leave_labels_and_background_alone() {
        let (images, labels) = batch(32, 40);
        let images = &images * images.select(1, 0).unsqueeze(1);
        let config = intensity_only();
        assert!(config.validate().is_ok());
        for seed in 0..4 {
            let (x, y) = augment_batch(&images, &labels, &config, &mut Rng::new(seed)).unwrap();
            assert!(y.equal(&labels), "seed {seed}: labels changed");
            let outside = labels.eq(0).unsqueeze(1).expand_as(&x);
            assert_eq!(
                f64::try_from(x.masked_select(&outside).abs().max()).unwrap(),
                0.0
            );
            assert!(!x.equal(&images), "seed {seed}: nothing happened");
            assert!(bool::try_from(x.isfinite().all()).unwrap());
        }
        let (a, _) = augment_batch(&images, &labels, &config, &mut Rng::new(2)).unwrap();
        let (b, _) = augment_batch(&images, &labels, &config, &mut Rng::new(2)).unwrap();
        assert!(a.equal(&b));
    }

    #[test]
    fn a_config_written_before_the_intensity_operations_reads_them_as_off() {
        let mut old = serde_json::to_value(AugmentConfig::default()).unwrap();
        let fields = old.as_object_mut().unwrap();
        for name in ["noise", "blur", "gain", "contrast", "low_res", "gamma"] {
            assert!(fields.remove(name).is_some(), "{name}");
        }
        let read: AugmentConfig = serde_json::from_value(old).unwrap();
        assert_eq!(read, AugmentConfig::default().without_intensity_ops());
        assert!(!read.intensity_ops().gamma.is_on());
        let text = serde_json::to_string(&AugmentConfig::default()).unwrap();
        let back: AugmentConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, AugmentConfig::default());
    }

    #[test]
    fn out_of_range_intensity_settings_are_refused() {
        let d = AugmentConfig::default();
        let bad = [
            AugmentConfig {
                gamma: RandomOp::new(1.2, 1.0, (0.7, 1.5)),
                ..d
            },
            AugmentConfig {
                gain: RandomOp::new(0.1, 1.0, (1.3, 0.7)),
                ..d
            },
            AugmentConfig {
                contrast: RandomOp::new(0.1, 1.0, (0.0, 1.5)),
                ..d
            },
            AugmentConfig {
                blur: RandomOp::new(0.1, 1.0, (0.5, MAX_BLUR_SIGMA_PX + 1.0)),
                ..d
            },
            AugmentConfig {
                low_res: RandomOp::new(0.1, 1.0, (0.5, 2.0)),
                ..d
            },
            AugmentConfig {
                noise: RandomOp::new(0.1, f64::NAN, (0.0, 0.1)),
                ..d
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    /// Cost of the augmentation of one default batch (`[8, 5, 160, 160]`) on the CPU, with
    /// and without the intensity operations, beside one forward and backward pass of the
    /// default network: `cargo test -p strokeseg-trainer --lib augment_cost -- --ignored
    /// --nocapture` (`AUGMENT_COST_THREADS=N` for N libtorch threads, default 1). Prints
    /// figures, asserts nothing about time.
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn augment_cost() {
        use std::time::Instant;
        use tch::nn::ModuleT;
        // One libtorch thread unless AUGMENT_COST_THREADS says otherwise: on a busy machine
        // the many small operations of the augmentation measure thread wake-ups, not work.
        let threads = std::env::var("AUGMENT_COST_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        tch::set_num_threads(threads);
        let (b, c, h, w) = (8, 5, 160, 160);
        let (disc, labels) = batch(h, w);
        let brain = disc.select(1, 0).unsqueeze(1).gt(-1.0).to_kind(Kind::Float);
        let images = Tensor::cat(
            &[
                disc.repeat([b / 2, 2, 1, 1]),
                Tensor::ones([b, c - 4, h, w], (Kind::Float, Device::Cpu)),
            ],
            1,
        ) * brain.repeat([b / 2, 1, 1, 1])
            + 0.1;
        let labels = labels.repeat([b / 2, 1, 1]);
        let median_ms = |config: &AugmentConfig| {
            let mut times: Vec<f64> = (0..30)
                .map(|seed| {
                    let started = Instant::now();
                    let out = augment_batch(&images, &labels, config, &mut Rng::new(seed));
                    assert!(out.is_ok());
                    started.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        };
        let with = median_ms(&AugmentConfig::default());
        let without = median_ms(&AugmentConfig::default().without_intensity_ops());
        let always = median_ms(&intensity_only());
        let (_vs, net) =
            crate::model::new_model(crate::model::UNetConfig::default(), Device::Cpu, 1);
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let started = Instant::now();
                let loss = net.forward_t(&images, true).mean(Kind::Float);
                loss.backward();
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "augment_batch [{b}, {c}, {h}, {w}], {} CPU threads, median of 30: geometry + jitter \
             {without:.1} ms, + intensity operations (defaults) {with:.1} ms, every intensity \
             operation on every plane {always:.1} ms; forward + backward of the default U-Net \
             {:.0} ms (median of 5)",
            tch::get_num_threads(),
            times[2]
        );
    }
}
