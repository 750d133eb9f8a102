//! Learning-rate schedule (linear warm-up, then cosine or polynomial decay), the optimisers
//! (AdamW, SGD with momentum) and gradient clipping.
//!
//! The optimisers are written here on tensors rather than taken from tch's `nn::Optimizer`,
//! whose libtorch-side state (Adam moments, momentum buffers) cannot be saved: a run that must
//! resume *exactly* needs that state in the checkpoint. They take the gradients as explicit
//! arguments, so the bf16 path can hand in gradients computed on a low-precision shadow copy.
//! The update formulas are PyTorch's (`torch.optim.AdamW`, `torch.optim.SGD`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::TrainError;

/// Shape of the decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DecayKind {
    /// Half a cosine from the peak learning rate down to the minimum.
    Cosine,
    /// `(1 − progress)^poly_power` from the peak down to the minimum.
    Poly,
}

/// Learning-rate schedule settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// Decay shape.
    pub decay: DecayKind,
    /// Warm-up length in epochs (fractions allowed); 0 disables warm-up.
    pub warmup_epochs: f64,
    /// The final learning rate as a fraction of the peak.
    pub min_lr_factor: f64,
    /// Exponent of the polynomial decay.
    pub poly_power: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            decay: DecayKind::Cosine,
            warmup_epochs: 2.0,
            min_lr_factor: 0.01,
            poly_power: 0.9,
        }
    }
}

/// The learning rate of every step of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    peak_lr: f64,
    min_lr: f64,
    warmup_steps: u64,
    total_steps: u64,
    decay: DecayKind,
    poly_power: f64,
}

impl LrSchedule {
    /// The schedule for `total_steps` steps of `steps_per_epoch` each, peaking at `peak_lr`.
    pub fn new(
        config: &ScheduleConfig,
        peak_lr: f64,
        steps_per_epoch: u64,
        total_steps: u64,
    ) -> LrSchedule {
        let warmup_steps = (config.warmup_epochs.max(0.0) * steps_per_epoch as f64).round() as u64;
        LrSchedule {
            peak_lr,
            min_lr: peak_lr * config.min_lr_factor.clamp(0.0, 1.0),
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
            decay: config.decay,
            poly_power: config.poly_power,
        }
    }

    /// Steps of linear warm-up.
    pub fn warmup_steps(&self) -> u64 {
        self.warmup_steps
    }

    /// The learning rate of step `step` (0-based): `peak · (step + 1) / warmup_steps` during
    /// warm-up, then the decay from `peak` (first step after warm-up) towards `min_lr`
    /// (reached at the last step).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps);
        let progress = if decay_steps <= 1 {
            0.0
        } else {
            ((step - self.warmup_steps) as f64 / (decay_steps - 1) as f64).min(1.0)
        };
        let factor = match self.decay {
            DecayKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            DecayKind::Poly => (1.0 - progress).powf(self.poly_power),
        };
        self.min_lr + (self.peak_lr - self.min_lr) * factor
    }
}

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay (Loshchilov & Hutter 2019).
    Adamw,
    /// SGD with (heavy-ball) momentum and L2 weight decay.
    Sgd,
}

/// Optimiser settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Which optimiser.
    pub kind: OptimizerKind,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    /// Weight decay; applied to convolution weights only (tensors of rank ≥ 2), never to
    /// BatchNorm parameters or biases.
    pub weight_decay: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 1e-3,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            momentum: 0.9,
        }
    }
}

/// One parameter and its optimiser state.
#[derive(Debug)]
struct Slot {
    param: Tensor,
    decay: bool,
    /// Adam first moment, or the SGD momentum buffer.
    m: Tensor,
    /// Adam second moment (unused by SGD).
    v: Tensor,
}

/// AdamW or SGD over named parameters, with state that can be saved and restored exactly.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    slots: BTreeMap<String, Slot>,
    step: u64,
}

impl Optimizer {
    /// An optimiser over `params` (name → trainable tensor), with zeroed state.
    pub fn new(
        config: OptimizerConfig,
        params: BTreeMap<String, Tensor>,
    ) -> Result<Optimizer, TrainError> {
        let mut slots = BTreeMap::new();
        for (name, param) in params {
            let decay = param.dim() >= 2;
            let m = param.f_zeros_like()?.f_to_kind(Kind::Float)?;
            let v = param.f_zeros_like()?.f_to_kind(Kind::Float)?;
            slots.insert(name, Slot { param, decay, m, v });
        }
        Ok(Optimizer {
            config,
            slots,
            step: 0,
        })
    }

    /// The parameter names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// Updates taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` and the gradient of each parameter (by name; a
    /// parameter without gradient is left alone).
    pub fn step(&mut self, lr: f64, grads: &BTreeMap<String, Tensor>) -> Result<(), TrainError> {
        self.step += 1;
        let c = self.config;
        let t = self.step as f64;
        let _guard = tch::no_grad_guard();
        for (name, slot) in self.slots.iter_mut() {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let grad = grad.f_to_kind(Kind::Float)?;
            match c.kind {
                OptimizerKind::Adamw => {
                    if slot.decay && c.weight_decay > 0.0 {
                        let _ = slot.param.f_mul_scalar_(1.0 - lr * c.weight_decay)?;
                    }
                    let _ = slot.m.f_mul_scalar_(c.beta1)?;
                    let _ = slot.m.f_add_(&grad.f_mul_scalar(1.0 - c.beta1)?)?;
                    let _ = slot.v.f_mul_scalar_(c.beta2)?;
                    let _ = slot
                        .v
                        .f_add_(&grad.f_mul(&grad)?.f_mul_scalar(1.0 - c.beta2)?)?;
                    let bias1 = 1.0 - c.beta1.powf(t);
                    let bias2 = 1.0 - c.beta2.powf(t);
                    let denom = slot
                        .v
                        .f_sqrt()?
                        .f_div_scalar(bias2.sqrt())?
                        .f_add_scalar(c.eps)?;
                    let update = slot.m.f_div(&denom)?.f_mul_scalar(lr / bias1)?;
                    let _ = slot.param.f_sub_(&update)?;
                }
                OptimizerKind::Sgd => {
                    let grad = if slot.decay && c.weight_decay > 0.0 {
                        grad.f_add(&slot.param.f_mul_scalar(c.weight_decay)?)?
                    } else {
                        grad
                    };
                    // The buffer starts at 0, so the first step sets it to the gradient.
                    let _ = slot.m.f_mul_scalar_(c.momentum)?;
                    let _ = slot.m.f_add_(&grad)?;
                    let _ = slot.param.f_sub_(&slot.m.f_mul_scalar(lr)?)?;
                }
            }
        }
        Ok(())
    }

    /// Saves the moments as safetensors (`m.<name>`, `v.<name>`) to `path`; the step count is
    /// the caller's to save (it is in the training state).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.slots.len());
        for (name, slot) in &self.slots {
            named.push((format!("m.{name}"), slot.m.f_to_device(tch::Device::Cpu)?));
            named.push((format!("v.{name}"), slot.v.f_to_device(tch::Device::Cpu)?));
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Restores the moments saved by [`Optimizer::save`] and the step count `steps_taken`.
    pub fn load(&mut self, path: &Path, steps_taken: u64) -> Result<(), TrainError> {
        let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        let _guard = tch::no_grad_guard();
        for (name, slot) in self.slots.iter_mut() {
            for (prefix, state) in [("m", &mut slot.m), ("v", &mut slot.v)] {
                let key = format!("{prefix}.{name}");
                let value = saved.get(&key).ok_or_else(|| TrainError::RunFolder {
                    path: path.to_path_buf(),
                    reason: format!("optimizer state lacks {key}"),
                })?;
                if value.size() != state.size() {
                    return Err(TrainError::RunFolder {
                        path: path.to_path_buf(),
                        reason: format!(
                            "optimizer state {key} has shape {:?}, the model needs {:?}",
                            value.size(),
                            state.size()
                        ),
                    });
                }
                state.f_copy_(value)?;
            }
        }
        self.step = steps_taken;
        Ok(())
    }
}

/// Scales `grads` in place so that their joint L2 norm is at most `max_norm` (when given);
/// returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &BTreeMap<String, Tensor>,
    max_norm: Option<f64>,
) -> Result<f64, TrainError> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    let norms: Vec<Tensor> = grads
        .values()
        .map(|g| g.f_to_kind(Kind::Float).and_then(|g| g.f_norm()))
        .collect::<Result<_, _>>()?;
    let total = f64::try_from(Tensor::f_stack(&norms, 0)?.f_norm()?)?;
    if let Some(max_norm) = max_norm
        && total.is_finite()
        && total > max_norm
    {
        let scale = max_norm / (total + 1e-6);
        let _guard = tch::no_grad_guard();
        for g in grads.values() {
            let _ = g.shallow_clone().f_mul_scalar_(scale)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn warmup_then_cosine() {
        let config = ScheduleConfig {
            warmup_epochs: 1.0,
            min_lr_factor: 0.1,
            ..ScheduleConfig::default()
        };
        let s = LrSchedule::new(&config, 1.0, 4, 12);
        assert_eq!(s.warmup_steps(), 4);
        close(s.lr_at(0), 0.25);
        close(s.lr_at(3), 1.0);
        close(s.lr_at(4), 1.0);
        close(s.lr_at(11), 0.1);
        // Half-way through the 8 decay steps (progress 3.5 / 7 = 0.5): the mean.
        let mid = 0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 3.0 / 7.0).cos());
        close(s.lr_at(7), mid);
        assert!((4..11).all(|k| s.lr_at(k + 1) <= s.lr_at(k)));
        let poly = LrSchedule::new(
            &ScheduleConfig {
                decay: DecayKind::Poly,
                poly_power: 1.0,
                warmup_epochs: 0.0,
                min_lr_factor: 0.0,
            },
            2.0,
            5,
            5,
        );
        close(poly.lr_at(0), 2.0);
        close(poly.lr_at(2), 1.0);
        close(poly.lr_at(4), 0.0);
    }

    fn scalar_param(value: f64) -> (BTreeMap<String, Tensor>, Tensor) {
        let p = Tensor::from_slice(&[value as f32]).set_requires_grad(true);
        (BTreeMap::from([("p".to_owned(), p.shallow_clone())]), p)
    }

    #[test]
    fn adamw_first_steps_match_hand_values() {
        let config = OptimizerConfig {
            weight_decay: 0.0,
            ..OptimizerConfig::default()
        };
        let (params, p) = scalar_param(1.0);
        let mut opt = Optimizer::new(config, params).unwrap();
        // Step 1: m̂ = g, v̂ = g² → update lr · g / (|g| + eps) ≈ lr · sign(g).
        let grads = BTreeMap::from([("p".to_owned(), Tensor::from_slice(&[0.5f32]))]);
        opt.step(0.1, &grads).unwrap();
        let v1 = f64::try_from(&p.squeeze()).unwrap();
        close((v1 * 1e6).round() / 1e6, 0.9);
        // Step 2 with g = −0.5: m = 0.9·0.05 − 0.05 = −0.005, m̂ = −0.005/0.19;
        // v = 0.999·0.00025 + 0.00025 = … same magnitude, v̂ = 0.25 → update = lr·m̂/0.5.
        let grads = BTreeMap::from([("p".to_owned(), Tensor::from_slice(&[-0.5f32]))]);
        opt.step(0.1, &grads).unwrap();
        let m_hat = (0.9 * 0.05 - 0.05) / (1.0 - 0.81);
        let v = 0.999 * 0.001 * 0.25 + 0.001 * 0.25;
        let v_hat = v / (1.0 - 0.999f64.powi(2));
        let want = v1 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        let got = f64::try_from(&p.squeeze()).unwrap();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert_eq!(opt.steps_taken(), 2);
    }

    #[test]
    fn sgd_momentum_matches_hand_values() {
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.5,
            weight_decay: 0.0,
            ..OptimizerConfig::default()
        };
        let (params, p) = scalar_param(1.0);
        let mut opt = Optimizer::new(config, params).unwrap();
        let g = BTreeMap::from([("p".to_owned(), Tensor::from_slice(&[1.0f32]))]);
        opt.step(0.1, &g).unwrap(); // buf 1 → p 0.9
        opt.step(0.1, &g).unwrap(); // buf 1.5 → p 0.75
        let got = f64::try_from(&p.squeeze()).unwrap();
        assert!((got - 0.75).abs() < 1e-6, "{got}");
    }

    #[test]
    fn state_round_trips_and_clipping_scales() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let (params, _) = scalar_param(1.0);
        let mut a = Optimizer::new(OptimizerConfig::default(), params).unwrap();
        let g = BTreeMap::from([("p".to_owned(), Tensor::from_slice(&[0.3f32]))]);
        a.step(0.01, &g).unwrap();
        a.save(&path).unwrap();
        let (params_b, _) = scalar_param(1.0);
        let mut b = Optimizer::new(OptimizerConfig::default(), params_b).unwrap();
        b.load(&path, a.steps_taken()).unwrap();
        assert_eq!(b.steps_taken(), 1);
        assert!(a.slots["p"].m.equal(&b.slots["p"].m));
        assert!(a.slots["p"].v.equal(&b.slots["p"].v));
        let grads = BTreeMap::from([
            ("a".to_owned(), Tensor::from_slice(&[3.0f32])),
            ("b".to_owned(), Tensor::from_slice(&[4.0f32])),
        ]);
        let norm = clip_grad_norm(&grads, Some(1.0)).unwrap();
        close(norm, 5.0);
        let after = clip_grad_norm(&grads, None).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }
}
