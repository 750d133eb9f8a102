//! Segmentation losses on logits `[N, K, H, W]` and integer labels `[N, H, W]` (values in
//! `0..K`): weighted cross-entropy, generalized Dice (Sudre et al. 2017), their hybrid, plain
//! cross-entropy and soft Dice + cross-entropy, selectable for ablation.
//!
//! # Definitions (p = softmax(logits) over K classes, r = one-hot labels, n over pixels)
//!
//! - **Weighted CE**: `Σ_n w_{y_n} · (−log p_{y_n,n}) / Σ_n w_{y_n}` (PyTorch's weighted mean:
//!   the overall scale of the weights cancels, only their ratios matter).
//! - **Class weights** (from the training set's label frequencies `f_c = n_c / Σ_k n_k`, see
//!   [`class_weights_from_counts`]): `w_c = f_c^(−power) · K / Σ_k f_k^(−power)` (mean 1).
//!   `power = 1` is inverse frequency, `0.5` (the default) its square root, `0` uniform. A
//!   class absent from the training set gets the largest finite weight.
//! - **GDL**: `1 − 2 · Σ_l w_l Σ_n r_ln p_ln / Σ_l w_l Σ_n (r_ln + p_ln)` with
//!   `w_l = 1 / (Σ_n r_ln)²`: the weights multiply each class's intersection and union and are
//!   summed over classes *before* the one division.
//!   - *Empty class* (`Σ_n r_ln = 0`, e.g. lesion on an all-background batch): its weight
//!     would be infinite; it gets the largest finite weight among the classes present, so
//!     predicted lesion there is penalised like a miss of the rarest present class.
//!   - *Scale*: the weights are divided by their maximum (`w_l = (min_k R_k / R_l)²` over the
//!     present classes; empty classes get 1). GDL is invariant to a common factor, and this
//!     keeps the sums in f32 range (raw weights reach 1e-11 on a batch).
//!   - *Epsilon*: none in the ratio. The denominator is `≥ w_min · N > 0` for any batch with
//!     pixels; it is clamped at `1e-12` only so that an empty batch gives 0 rather than NaN.
//!   - *Reduction*: [`GdlReduction::Batch`] (default) sums over all pixels of the batch
//!     (n runs over N·H·W), so a lesion-free slice in a batch with lesion does not get its
//!     own infinite weight; [`GdlReduction::PerSample`] computes it per slice and averages.
//! - **Soft Dice (lesion)**: `1 − (2 Σ r₁p₁ + s) / (Σ r₁ + Σ p₁ + s)` with `s = 1`, over the
//!   batch; on an all-background batch it is `1 − 1 / (Σ p₁ + 1)`, which pushes p₁ to 0.
//! - **Hybrid**: `λ_ce · weighted CE + λ_gdl · GDL`; **CE**: unweighted CE; **GDL**: GDL
//!   alone; **DiceCE**: unweighted CE + soft Dice (lesion).

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// λ_ce · weighted CE + λ_gdl · generalized Dice (the paper's loss).
    Hybrid,
    /// Plain (unweighted) cross-entropy.
    Ce,
    /// Generalized Dice loss alone.
    Gdl,
    /// Unweighted CE + soft Dice of the lesion class.
    #[value(name = "dicece")]
    #[serde(rename = "dicece")]
    DiceCe,
}

impl LossKind {
    /// The CLI / JSON name.
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Hybrid => "hybrid",
            LossKind::Ce => "ce",
            LossKind::Gdl => "gdl",
            LossKind::DiceCe => "dicece",
        }
    }
}

/// How the generalized Dice sums run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GdlReduction {
    /// Over all pixels of the batch (one set of class weights per batch).
    #[default]
    Batch,
    /// Per slice, then the mean over the batch.
    PerSample,
}

/// The loss and its weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Which loss.
    pub kind: LossKind,
    /// Weight of the weighted CE term in the hybrid loss.
    pub lambda_ce: f64,
    /// Weight of the GDL term in the hybrid loss.
    pub lambda_gdl: f64,
    /// Exponent of the inverse class frequency in the CE class weights (0 = uniform).
    pub ce_weight_power: f64,
    /// GDL reduction.
    pub gdl_reduction: GdlReduction,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: LossKind::Hybrid,
            lambda_ce: 1.0,
            lambda_gdl: 1.0,
            ce_weight_power: 0.5,
            gdl_reduction: GdlReduction::Batch,
        }
    }
}

/// CE class weights from per-class pixel counts: `w_c = f_c^(−power) · K / Σ_k f_k^(−power)`
/// with `f_c = n_c / Σ n`; a class with `n_c = 0` gets the largest weight of the others; all
/// zero (or a non-finite power) gives uniform weights 1.
pub fn class_weights_from_counts(counts: &[u64], power: f64) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || !power.is_finite() {
        return vec![1.0; counts.len()];
    }
    let raw: Vec<Option<f64>> = counts
        .iter()
        .map(|&n| (n > 0).then(|| (n as f64 / total as f64).powf(-power)))
        .collect();
    let max = raw.iter().flatten().copied().fold(0.0_f64, f64::max);
    let filled: Vec<f64> = raw.iter().map(|w| w.unwrap_or(max)).collect();
    let sum: f64 = filled.iter().sum();
    let k = counts.len() as f64;
    filled.iter().map(|w| w * k / sum).collect()
}

/// Weighted cross-entropy (see the module docs). `weights`: `[K]` f32 on the logits' device,
/// or `None` for the plain mean.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    weights: Option<&Tensor>,
) -> Tensor {
    let log_p = logits.log_softmax(1, Kind::Float);
    let nll = -log_p.gather(1, &target.unsqueeze(1), false).squeeze_dim(1);
    match weights {
        Some(w) => {
            let w_pix = w.index_select(0, &target.flatten(0, -1)).view_as(&nll);
            (&nll * &w_pix).sum(Kind::Float) / w_pix.sum(Kind::Float)
        }
        None => nll.mean(Kind::Float),
    }
}

/// `r` one-hot `[N, K, H, W]` f32 from labels `[N, H, W]`.
fn one_hot(target: &Tensor, n_classes: i64) -> Tensor {
    target
        .one_hot(n_classes)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
}

/// Generalized Dice loss (Sudre et al. 2017) with the rules of the module docs.
pub fn generalized_dice_loss(logits: &Tensor, target: &Tensor, reduction: GdlReduction) -> Tensor {
    let n_classes = logits.size().get(1).copied().unwrap_or(2);
    let p = logits.softmax(1, Kind::Float);
    let r = one_hot(target, n_classes);
    let dims: &[i64] = match reduction {
        GdlReduction::Batch => &[0, 2, 3],
        GdlReduction::PerSample => &[2, 3],
    };
    // [K] or [N, K]
    let r_sum = r.sum_dim_intlist(dims, false, Kind::Float);
    let intersection = (&r * &p).sum_dim_intlist(dims, false, Kind::Float);
    let union = (&r + &p).sum_dim_intlist(dims, false, Kind::Float);
    let present = r_sum.gt(0.0);
    let inf = Tensor::full_like(&r_sum, f64::INFINITY);
    let r_min = r_sum.where_self(&present, &inf).amin(-1, true);
    let ones = Tensor::ones_like(&r_sum);
    let w = (&r_min / &r_sum).square().where_self(&present, &ones);
    let numerator = (&w * intersection).sum_dim_intlist(-1, false, Kind::Float);
    let denominator = (&w * union)
        .sum_dim_intlist(-1, false, Kind::Float)
        .clamp_min(1e-12);
    (-(numerator * 2.0) / denominator + 1.0).mean(Kind::Float)
}

/// Soft Dice loss of the lesion class (index 1) over the batch, smoothing 1.
pub fn soft_dice_loss(logits: &Tensor, target: &Tensor) -> Tensor {
    let p1 = logits.softmax(1, Kind::Float).select(1, 1);
    let r1 = target.eq(1).to_kind(Kind::Float);
    let intersection = (&p1 * &r1).sum(Kind::Float);
    let dice = (intersection * 2.0 + 1.0) / (r1.sum(Kind::Float) + p1.sum(Kind::Float) + 1.0);
    -dice + 1.0
}

/// A configured loss with its class weights on the training device.
#[derive(Debug)]
pub struct Loss {
    config: LossConfig,
    class_weights: Tensor,
}

impl Loss {
    /// The loss `config` with CE class weights `class_weights` (one per class) on `device`.
    pub fn new(
        config: LossConfig,
        class_weights: &[f64],
        device: Device,
    ) -> Result<Loss, tch::TchError> {
        let w: Vec<f32> = class_weights.iter().map(|&w| w as f32).collect();
        Ok(Loss {
            config,
            class_weights: Tensor::f_from_slice(&w)?.f_to_device(device)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> LossConfig {
        self.config
    }

    /// The scalar loss of `logits` `[N, K, H, W]` (any float kind; computed in f32) against
    /// `target` `[N, H, W]` (int64, values in `0..K`).
    pub fn compute(&self, logits: &Tensor, target: &Tensor) -> Tensor {
        let logits = logits.to_kind(Kind::Float);
        let c = self.config;
        match c.kind {
            LossKind::Hybrid => {
                let ce = weighted_cross_entropy(&logits, target, Some(&self.class_weights));
                let gdl = generalized_dice_loss(&logits, target, c.gdl_reduction);
                ce * c.lambda_ce + gdl * c.lambda_gdl
            }
            LossKind::Ce => weighted_cross_entropy(&logits, target, None),
            LossKind::Gdl => generalized_dice_loss(&logits, target, c.gdl_reduction),
            LossKind::DiceCe => {
                weighted_cross_entropy(&logits, target, None) + soft_dice_loss(&logits, target)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LN3: f64 = 1.098_612_288_668_109_8;

    /// One slice of 2×2 pixels. Logits (0, ln 3) → p_lesion = 0.75; (0, −ln 3) → 0.25.
    /// Labels: [[1, 0], [0, 0]]; predictions: p1 = [[0.75, 0.75], [0.25, 0.25]].
    fn example() -> (Tensor, Tensor) {
        let l1 = [LN3, LN3, -LN3, -LN3].map(|v| v as f32);
        let logits = Tensor::cat(
            &[
                Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu)),
                Tensor::from_slice(&l1).reshape([1, 1, 2, 2]),
            ],
            1,
        );
        let target = Tensor::from_slice(&[1i64, 0, 0, 0]).reshape([1, 2, 2]);
        (logits, target)
    }

    fn value(t: &Tensor) -> f64 {
        f64::try_from(t).unwrap()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn cross_entropy_matches_hand_values() {
        let (logits, target) = example();
        // nll: lesion pixel −ln 0.75; background pixels: −ln 0.25, −ln 0.75, −ln 0.75.
        let (a, b) = (-(0.75f64.ln()), -(0.25f64.ln()));
        close(
            value(&weighted_cross_entropy(&logits, &target, None)),
            (3.0 * a + b) / 4.0,
        );
        // Weights (bg 1, lesion 3): (3a + (b + 2a)) / (3 + 3).
        let w = Tensor::from_slice(&[1.0f32, 3.0]);
        close(
            value(&weighted_cross_entropy(&logits, &target, Some(&w))),
            (3.0 * a + b + 2.0 * a) / 6.0,
        );
    }

    #[test]
    fn generalized_dice_matches_hand_values() {
        let (logits, target) = example();
        // R_bg = 3, R_les = 1 → normalised w_bg = (1/3)² = 1/9, w_les = 1.
        // bg: p0 = [0.25, 0.25, 0.75, 0.75]; I_bg = 0.25 + 0.75 + 0.75 = 1.75, U_bg = 3 + 2 = 5.
        // les: I = 0.75, U = 1 + 2 = 3.
        let num = 1.75 / 9.0 + 0.75;
        let den = 5.0 / 9.0 + 3.0;
        close(
            value(&generalized_dice_loss(
                &logits,
                &target,
                GdlReduction::Batch,
            )),
            1.0 - 2.0 * num / den,
        );
        // Raw Sudre weights 1/R² give the same value (scale invariance).
        let raw = 1.0 - 2.0 * (1.75 / 9.0 + 0.75 / 1.0) / (5.0 / 9.0 + 3.0 / 1.0);
        close(
            value(&generalized_dice_loss(
                &logits,
                &target,
                GdlReduction::Batch,
            )),
            raw,
        );
    }

    #[test]
    fn all_background_slice_uses_the_largest_finite_weight() {
        let (logits, _) = example();
        let target = Tensor::zeros([1, 2, 2], (Kind::Int64, Device::Cpu));
        // Lesion class empty → weight of background (the only present class) = 1 after
        // normalisation; lesion gets the same. I_bg = 0.25 + 0.25 + 0.75 + 0.75 = 2,
        // U_bg = 4 + 2 = 6; I_les = 0, U_les = 0 + 2 = 2.
        let want = 1.0 - 2.0 * 2.0 / (6.0 + 2.0);
        let got = value(&generalized_dice_loss(
            &logits,
            &target,
            GdlReduction::Batch,
        ));
        close(got, want);
        assert!(got.is_finite());
        // Perfectly predicted background gives 0.
        let confident = Tensor::cat(
            &[
                Tensor::full([1, 1, 2, 2], 20.0, (Kind::Float, Device::Cpu)),
                Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu)),
            ],
            1,
        );
        assert!(
            value(&generalized_dice_loss(
                &confident,
                &target,
                GdlReduction::Batch
            )) < 1e-6
        );
        // Soft Dice on the same slice: 1 − 1 / (Σ p1 + 1) with Σ p1 = 2.
        close(value(&soft_dice_loss(&logits, &target)), 1.0 - 1.0 / 3.0);
        // Weighted CE with lesion weight 5 on an all-background slice = plain CE.
        let w = Tensor::from_slice(&[1.0f32, 5.0]);
        close(
            value(&weighted_cross_entropy(&logits, &target, Some(&w))),
            value(&weighted_cross_entropy(&logits, &target, None)),
        );
    }

    #[test]
    fn per_sample_reduction_averages_slices() {
        let (l, t) = example();
        let t0 = Tensor::zeros([1, 2, 2], (Kind::Int64, Device::Cpu));
        let logits = Tensor::cat(&[&l, &l], 0);
        let target = Tensor::cat(&[&t, &t0], 0);
        let a = value(&generalized_dice_loss(&l, &t, GdlReduction::Batch));
        let b = value(&generalized_dice_loss(&l, &t0, GdlReduction::Batch));
        close(
            value(&generalized_dice_loss(
                &logits,
                &target,
                GdlReduction::PerSample,
            )),
            (a + b) / 2.0,
        );
    }

    #[test]
    fn hybrid_and_dicece_combine_their_terms() {
        let (logits, target) = example();
        let config = LossConfig {
            lambda_ce: 0.5,
            lambda_gdl: 2.0,
            ..LossConfig::default()
        };
        let loss = Loss::new(config, &[1.0, 3.0], Device::Cpu).unwrap();
        let w = Tensor::from_slice(&[1.0f32, 3.0]);
        let want = 0.5 * value(&weighted_cross_entropy(&logits, &target, Some(&w)))
            + 2.0
                * value(&generalized_dice_loss(
                    &logits,
                    &target,
                    GdlReduction::Batch,
                ));
        close(value(&loss.compute(&logits, &target)), want);
        let dicece = Loss::new(
            LossConfig {
                kind: LossKind::DiceCe,
                ..config
            },
            &[1.0, 3.0],
            Device::Cpu,
        )
        .unwrap();
        // Soft Dice: I = 0.75, Σ r1 = 1, Σ p1 = 2 → 1 − (1.5 + 1) / (3 + 1).
        let want = value(&weighted_cross_entropy(&logits, &target, None)) + 1.0 - 2.5 / 4.0;
        close(value(&dicece.compute(&logits, &target)), want);
    }

    #[test]
    fn gradients_are_finite_on_an_all_background_batch() {
        let logits =
            Tensor::randn([2, 2, 8, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let target = Tensor::zeros([2, 8, 8], (Kind::Int64, Device::Cpu));
        for kind in [
            LossKind::Hybrid,
            LossKind::Ce,
            LossKind::Gdl,
            LossKind::DiceCe,
        ] {
            let loss = Loss::new(
                LossConfig {
                    kind,
                    ..LossConfig::default()
                },
                &[0.6, 2.0],
                Device::Cpu,
            )
            .unwrap();
            let value = loss.compute(&logits, &target);
            let grad = Tensor::run_backward(&[&value], &[&logits], false, false);
            let norm = f64::try_from(grad[0].norm()).unwrap();
            assert!(norm.is_finite() && norm > 0.0, "{kind:?}: {norm}");
        }
    }

    #[test]
    fn class_weights_follow_the_formula() {
        // f = (0.9, 0.1), power 1: raw (1/0.9, 10) → × 2 / (1/0.9 + 10).
        let w = class_weights_from_counts(&[900, 100], 1.0);
        let s = 1.0 / 0.9 + 10.0;
        close(w[0], (1.0 / 0.9) * 2.0 / s);
        close(w[1], 10.0 * 2.0 / s);
        // power 0.5: sqrt.
        let w = class_weights_from_counts(&[900, 100], 0.5);
        let (a, b) = ((1.0f64 / 0.9).sqrt(), 10.0f64.sqrt());
        close(w[1] / w[0], b / a);
        // Empty class: largest finite weight; all empty: uniform.
        let w = class_weights_from_counts(&[100, 0], 1.0);
        close(w[0], w[1]);
        assert_eq!(class_weights_from_counts(&[0, 0], 1.0), vec![1.0, 1.0]);
        assert_eq!(class_weights_from_counts(&[5, 95], 0.0), vec![1.0, 1.0]);
    }
}
