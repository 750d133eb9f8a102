//! Overlap and volume metrics between a predicted and a ground-truth lesion mask, following
//! the ISLES 2018 evaluator (Dice, precision, recall, absolute volume difference).
//!
//! Masks are `u8` slices where any nonzero value is lesion and `0` is background. Counts are
//! accumulated slice by slice into a [`ConfusionCounts`], so a whole study is scored without
//! holding it in memory; counts of several studies or workers combine with
//! [`ConfusionCounts::merge`].
//!
//! # Conventions for empty masks
//!
//! Every ratio is well defined, never NaN. Each of Dice, precision, recall and specificity
//! falls back to `1.0` when the case is perfect agreement on "nothing to find" and to `0.0`
//! when one side found something the other did not:
//!
//! | prediction | truth     | Dice | precision | recall | `both_empty` |
//! |------------|-----------|------|-----------|--------|--------------|
//! | empty      | empty     | 1.0  | 1.0       | 1.0    | `true`       |
//! | empty      | non-empty | 0.0  | 0.0       | 0.0    | `false`      |
//! | non-empty  | empty     | 0.0  | 0.0       | 0.0    | `false`      |
//!
//! When neither mask is empty the textbook formulas apply (and in the one-empty rows they give
//! the same `0.0` wherever their denominator is nonzero). Callers that want to exclude
//! both-empty cases from a mean, as some evaluators do, can filter on
//! [`SegmentationMetrics::both_empty`].

/// Why a metric could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MetricsError {
    /// The prediction and the ground truth hold different numbers of voxels.
    #[error("ground truth has {got} voxels but the prediction has {expected}")]
    LengthMismatch {
        /// Voxels in the prediction.
        expected: usize,
        /// Voxels in the ground truth.
        got: usize,
    },
    /// The voxel volume is zero, negative, infinite or NaN.
    #[error("voxel volume must be finite and positive, got {voxel_volume_mm3} mm³")]
    InvalidVoxelVolume {
        /// The rejected voxel volume in mm³.
        voxel_volume_mm3: f64,
    },
}

/// Voxel counts of the binary confusion matrix between a prediction and a ground truth.
///
/// Lesion is the positive class. Counts saturate at `u64::MAX` instead of overflowing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConfusionCounts {
    /// Lesion in both prediction and truth.
    pub tp: u64,
    /// Lesion in the prediction only.
    pub fp: u64,
    /// Lesion in the truth only (`fn` is a keyword; serialized as `"fn"`).
    #[cfg_attr(feature = "serde", serde(rename = "fn"))]
    pub fn_: u64,
    /// Background in both prediction and truth.
    pub tn: u64,
}

impl ConfusionCounts {
    /// Counts of a single pair of masks; see [`ConfusionCounts::add_slice`].
    pub fn from_masks(pred: &[u8], truth: &[u8]) -> Result<Self, MetricsError> {
        let mut counts = Self::default();
        counts.add_slice(pred, truth)?;
        Ok(counts)
    }

    /// Adds one slice (or any chunk) of voxels.
    ///
    /// `pred` and `truth` are the same voxels in the same order (for a slice, `[H, W]`
    /// row-major); nonzero is lesion. On a length mismatch nothing is added.
    pub fn add_slice(&mut self, pred: &[u8], truth: &[u8]) -> Result<(), MetricsError> {
        if pred.len() != truth.len() {
            return Err(MetricsError::LengthMismatch {
                expected: pred.len(),
                got: truth.len(),
            });
        }
        let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
        for (&p, &t) in pred.iter().zip(truth) {
            match (p != 0, t != 0) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                (false, false) => tn += 1,
            }
        }
        self.merge(Self { tp, fp, fn_, tn });
        Ok(())
    }

    /// Adds the counts of `other` (another slice, study or worker).
    pub fn merge(&mut self, other: Self) {
        self.tp = self.tp.saturating_add(other.tp);
        self.fp = self.fp.saturating_add(other.fp);
        self.fn_ = self.fn_.saturating_add(other.fn_);
        self.tn = self.tn.saturating_add(other.tn);
    }

    /// Voxels counted so far.
    pub fn total_voxels(&self) -> u64 {
        self.tp
            .saturating_add(self.fp)
            .saturating_add(self.fn_)
            .saturating_add(self.tn)
    }

    /// Lesion voxels in the prediction (`tp + fp`).
    pub fn predicted_voxels(&self) -> u64 {
        self.tp.saturating_add(self.fp)
    }

    /// Lesion voxels in the ground truth (`tp + fn`).
    pub fn true_voxels(&self) -> u64 {
        self.tp.saturating_add(self.fn_)
    }

    /// Whether neither the prediction nor the truth has any lesion voxel.
    pub fn both_empty(&self) -> bool {
        self.predicted_voxels() == 0 && self.true_voxels() == 0
    }

    /// Dice coefficient `2·tp / (2·tp + fp + fn)` in `[0, 1]`.
    ///
    /// Both masks empty: `1.0`. Exactly one empty: `0.0` (from the formula).
    pub fn dice(&self) -> f64 {
        let denominator = 2.0 * self.tp as f64 + self.fp as f64 + self.fn_ as f64;
        if denominator == 0.0 {
            1.0
        } else {
            2.0 * self.tp as f64 / denominator
        }
    }

    /// Precision (positive predictive value) `tp / (tp + fp)` in `[0, 1]`.
    ///
    /// Empty prediction: `1.0` if the truth is empty too, `0.0` otherwise.
    pub fn precision(&self) -> f64 {
        rate_or_agreement(self.tp, self.fp, self.fn_)
    }

    /// Recall (sensitivity) `tp / (tp + fn)` in `[0, 1]`.
    ///
    /// Empty truth: `1.0` if the prediction is empty too, `0.0` otherwise.
    pub fn recall(&self) -> f64 {
        rate_or_agreement(self.tp, self.fn_, self.fp)
    }

    /// Specificity `tn / (tn + fp)` in `[0, 1]`: recall of the background class.
    ///
    /// No background in the truth (every voxel is lesion): `1.0` if the prediction has no
    /// background either (`fn == 0`), `0.0` otherwise. No voxels at all: `1.0`.
    pub fn specificity(&self) -> f64 {
        rate_or_agreement(self.tn, self.fp, self.fn_)
    }

    /// All [`SegmentationMetrics`] for voxels of `voxel_volume_mm3` each.
    pub fn metrics(&self, voxel_volume_mm3: f64) -> Result<SegmentationMetrics, MetricsError> {
        SegmentationMetrics::from_counts(self, voxel_volume_mm3)
    }
}

/// `hits / (hits + misses)`; when that is `0 / 0`, `1.0` if the other side also found nothing
/// (`opposite == 0`) and `0.0` otherwise.
fn rate_or_agreement(hits: u64, misses: u64, opposite: u64) -> f64 {
    let denominator = hits.saturating_add(misses);
    if denominator == 0 {
        if opposite == 0 { 1.0 } else { 0.0 }
    } else {
        hits as f64 / denominator as f64
    }
}

/// Volume in mL (1 mL = 1000 mm³) of `n_voxels` voxels of `voxel_volume_mm3` each, in f64.
pub fn volume_ml_from_voxels(n_voxels: u64, voxel_volume_mm3: f64) -> f64 {
    n_voxels as f64 * voxel_volume_mm3 / 1000.0
}

/// Per-study (or pooled) evaluation result, ISLES 2018 style.
///
/// Ratios are in `[0, 1]` and follow the empty-mask conventions of the
/// [module documentation](self); volumes are in mL.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SegmentationMetrics {
    /// Dice coefficient, see [`ConfusionCounts::dice`].
    pub dice: f64,
    /// Precision, see [`ConfusionCounts::precision`].
    pub precision: f64,
    /// Recall (sensitivity), see [`ConfusionCounts::recall`].
    pub recall: f64,
    /// Predicted lesion volume in mL.
    pub predicted_volume_ml: f64,
    /// Ground-truth lesion volume in mL.
    pub true_volume_ml: f64,
    /// `|predicted_volume_ml − true_volume_ml|` in mL.
    pub abs_volume_difference_ml: f64,
    /// Neither mask has a lesion voxel (the ratios are then `1.0` by convention).
    pub both_empty: bool,
}

impl SegmentationMetrics {
    /// Metrics from accumulated counts, with voxels of `voxel_volume_mm3` each (finite, > 0).
    pub fn from_counts(
        counts: &ConfusionCounts,
        voxel_volume_mm3: f64,
    ) -> Result<Self, MetricsError> {
        if !(voxel_volume_mm3.is_finite() && voxel_volume_mm3 > 0.0) {
            return Err(MetricsError::InvalidVoxelVolume { voxel_volume_mm3 });
        }
        let predicted_volume_ml =
            volume_ml_from_voxels(counts.predicted_voxels(), voxel_volume_mm3);
        let true_volume_ml = volume_ml_from_voxels(counts.true_voxels(), voxel_volume_mm3);
        Ok(Self {
            dice: counts.dice(),
            precision: counts.precision(),
            recall: counts.recall(),
            predicted_volume_ml,
            true_volume_ml,
            abs_volume_difference_ml: libm::fabs(predicted_volume_ml - true_volume_ml),
            both_empty: counts.both_empty(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        libm::fabs(a - b) < 1e-12
    }

    // 4×4 masks, row-major. Prediction: the 2×2 block at rows 0..2, cols 0..2 plus (3, 3).
    // Truth: the 2×3 block at rows 0..2, cols 1..4.
    // tp = (0,1),(1,1) = 2; fp = (0,0),(1,0),(3,3) = 3; fn = (0,2),(0,3),(1,2),(1,3) = 4;
    // tn = 16 - 9 = 7.
    #[rustfmt::skip]
    const PRED_4X4: [u8; 16] = [
        1, 1, 0, 0,
        1, 1, 0, 0,
        0, 0, 0, 0,
        0, 0, 0, 1,
    ];
    #[rustfmt::skip]
    const TRUTH_4X4: [u8; 16] = [
        0, 1, 1, 1,
        0, 1, 1, 1,
        0, 0, 0, 0,
        0, 0, 0, 0,
    ];

    #[test]
    fn hand_computed_4x4() {
        let c = ConfusionCounts::from_masks(&PRED_4X4, &TRUTH_4X4).unwrap();
        assert_eq!(
            c,
            ConfusionCounts {
                tp: 2,
                fp: 3,
                fn_: 4,
                tn: 7
            }
        );
        assert!(close(c.dice(), 4.0 / 11.0));
        assert!(close(c.precision(), 2.0 / 5.0));
        assert!(close(c.recall(), 2.0 / 6.0));
        assert!(close(c.specificity(), 7.0 / 10.0));
        assert!(!c.both_empty());
    }

    #[test]
    fn hand_computed_volumes() {
        let c = ConfusionCounts::from_masks(&PRED_4X4, &TRUTH_4X4).unwrap();
        // 2 mm × 2 mm × 5 mm = 20 mm³ per voxel.
        let m = c.metrics(20.0).unwrap();
        assert!(close(m.predicted_volume_ml, 5.0 * 20.0 / 1000.0));
        assert!(close(m.true_volume_ml, 6.0 * 20.0 / 1000.0));
        assert!(close(m.abs_volume_difference_ml, 0.02));
        assert!(close(m.dice, 4.0 / 11.0));
        assert!(!m.both_empty);
    }

    #[test]
    fn nonzero_values_other_than_one_are_lesion() {
        let c = ConfusionCounts::from_masks(&[255, 7, 0, 0], &[1, 0, 200, 0]).unwrap();
        assert_eq!(
            c,
            ConfusionCounts {
                tp: 1,
                fp: 1,
                fn_: 1,
                tn: 1
            }
        );
    }

    #[test]
    fn identical_masks_are_perfect() {
        let c = ConfusionCounts::from_masks(&TRUTH_4X4, &TRUTH_4X4).unwrap();
        let m = c.metrics(1.0).unwrap();
        assert_eq!((m.dice, m.precision, m.recall), (1.0, 1.0, 1.0));
        assert_eq!(m.abs_volume_difference_ml, 0.0);
    }

    #[test]
    fn both_empty_is_perfect_agreement() {
        let c = ConfusionCounts::from_masks(&[0; 16], &[0; 16]).unwrap();
        assert_eq!(c.tn, 16);
        let m = c.metrics(1.0).unwrap();
        assert!(m.both_empty);
        assert_eq!((m.dice, m.precision, m.recall), (1.0, 1.0, 1.0));
        assert_eq!(c.specificity(), 1.0);
        assert_eq!((m.predicted_volume_ml, m.true_volume_ml), (0.0, 0.0));
        assert_eq!(m.abs_volume_difference_ml, 0.0);
    }

    #[test]
    fn no_voxels_at_all_counts_as_both_empty() {
        let c = ConfusionCounts::default();
        assert!(c.both_empty());
        assert_eq!(
            (c.dice(), c.precision(), c.recall(), c.specificity()),
            (1.0, 1.0, 1.0, 1.0)
        );
    }

    #[test]
    fn empty_prediction_nonempty_truth() {
        let c = ConfusionCounts::from_masks(&[0; 16], &TRUTH_4X4).unwrap();
        let m = c.metrics(1000.0).unwrap();
        assert!(!m.both_empty);
        assert_eq!(m.dice, 0.0);
        assert_eq!(m.precision, 0.0, "no predicted voxels but lesion exists");
        assert_eq!(m.recall, 0.0);
        assert_eq!(c.specificity(), 1.0);
        assert!(close(m.true_volume_ml, 6.0));
        assert!(close(m.abs_volume_difference_ml, 6.0));
    }

    #[test]
    fn nonempty_prediction_empty_truth() {
        let c = ConfusionCounts::from_masks(&PRED_4X4, &[0; 16]).unwrap();
        let m = c.metrics(1000.0).unwrap();
        assert!(!m.both_empty);
        assert_eq!(m.dice, 0.0);
        assert_eq!(m.precision, 0.0);
        assert_eq!(m.recall, 0.0, "no true voxels but lesion predicted");
        assert!(close(c.specificity(), 11.0 / 16.0));
        assert!(close(m.predicted_volume_ml, 5.0));
    }

    #[test]
    fn specificity_when_truth_is_all_lesion() {
        let all = [1u8; 4];
        assert_eq!(
            ConfusionCounts::from_masks(&all, &all)
                .unwrap()
                .specificity(),
            1.0
        );
        let c = ConfusionCounts::from_masks(&[1, 1, 0, 1], &all).unwrap();
        assert_eq!(c.specificity(), 0.0);
    }

    #[test]
    fn streaming_over_slices_equals_whole() {
        let mut streamed = ConfusionCounts::default();
        for (p, t) in PRED_4X4.chunks(4).zip(TRUTH_4X4.chunks(4)) {
            streamed.add_slice(p, t).unwrap();
        }
        assert_eq!(
            streamed,
            ConfusionCounts::from_masks(&PRED_4X4, &TRUTH_4X4).unwrap()
        );
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = ConfusionCounts::from_masks(&PRED_4X4[..8], &TRUTH_4X4[..8]).unwrap();
        let b = ConfusionCounts::from_masks(&PRED_4X4[8..], &TRUTH_4X4[8..]).unwrap();
        a.merge(b);
        assert_eq!(
            a,
            ConfusionCounts::from_masks(&PRED_4X4, &TRUTH_4X4).unwrap()
        );
        assert_eq!(a.total_voxels(), 16);
    }

    #[test]
    fn merge_saturates() {
        let mut a = ConfusionCounts {
            tp: u64::MAX,
            fp: 0,
            fn_: 0,
            tn: 0,
        };
        a.merge(ConfusionCounts {
            tp: 1,
            fp: 1,
            fn_: 0,
            tn: 0,
        });
        assert_eq!(a.tp, u64::MAX);
        assert_eq!(a.fp, 1);
    }

    #[test]
    fn length_mismatch_is_an_error_and_adds_nothing() {
        let mut c = ConfusionCounts::default();
        let err = c.add_slice(&[1; 4], &[1; 3]).unwrap_err();
        assert_eq!(
            err,
            MetricsError::LengthMismatch {
                expected: 4,
                got: 3
            }
        );
        assert_eq!(c, ConfusionCounts::default());
    }

    #[test]
    fn invalid_voxel_volume_is_an_error() {
        let c = ConfusionCounts::default();
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                c.metrics(v),
                Err(MetricsError::InvalidVoxelVolume { .. })
            ));
        }
    }
}
