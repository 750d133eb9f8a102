//! The cross-validation summary: per-fold held-out results, their mean ± sample standard
//! deviation across folds, and the mean over all held-out cases pooled, written as
//! `cv_summary.json` and a Markdown table `cv_summary.md`.
//!
//! The figures are those of each fold's *last* checkpoint (selecting the best epoch on the
//! held-out fold itself would bias them upwards); the best checkpoint's are listed beside them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{TrainError, write_atomically, write_json};
use crate::eval::{CaseEvaluation, EvalSummary};
use crate::run::Evaluation;

/// `RUN/cv.json`: the settings of a cross-validation command, for `--resume`.
pub const CV_FILE: &str = "cv.json";
/// `RUN/cv_summary.json`.
pub const CV_SUMMARY_JSON: &str = "cv_summary.json";
/// `RUN/cv_summary.md`.
pub const CV_SUMMARY_MD: &str = "cv_summary.md";

/// Mean and sample standard deviation (n − 1; 0 for a single value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub sd: f64,
}

impl MeanSd {
    /// Of `values` (0 ± 0 when empty).
    pub fn of(values: &[f64]) -> MeanSd {
        let n = values.len();
        if n == 0 {
            return MeanSd { mean: 0.0, sd: 0.0 };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        MeanSd { mean, sd }
    }
}

/// One fold's held-out results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    /// 0-based fold.
    pub fold: u32,
    /// Held-out cases.
    pub n_cases: usize,
    /// Epochs trained.
    pub epochs: u32,
    /// Last checkpoint: mean per-case Dice.
    pub dice: f64,
    /// Last checkpoint: mean per-case precision.
    pub precision: f64,
    /// Last checkpoint: mean per-case recall.
    pub recall: f64,
    /// Last checkpoint: mean per-case absolute volume difference, mL.
    pub abs_volume_difference_ml: f64,
    /// Last checkpoint: mean Dice over cases with a lesion.
    pub dice_lesion_cases: Option<f64>,
    /// Best checkpoint's epoch (1-based).
    pub best_epoch: Option<u32>,
    /// Best checkpoint: mean per-case Dice.
    pub best_dice: Option<f64>,
}

/// `RUN/cv_summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    /// Folds.
    pub n_folds: u32,
    /// Loss trained with.
    pub loss: String,
    /// Seed.
    pub seed: u64,
    /// Per fold.
    pub folds: Vec<FoldResult>,
    /// Across folds: Dice.
    pub dice: MeanSd,
    /// Across folds: precision.
    pub precision: MeanSd,
    /// Across folds: recall.
    pub recall: MeanSd,
    /// Across folds: absolute volume difference, mL.
    pub abs_volume_difference_ml: MeanSd,
    /// Over all held-out cases pooled (every case once).
    pub pooled: PooledResult,
}

/// Means over all held-out cases of all folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledResult {
    /// Cases.
    pub n_cases: usize,
    /// Mean per-case Dice.
    pub dice: f64,
    /// Mean per-case Dice over cases with a lesion.
    pub dice_lesion_cases: Option<f64>,
    /// Mean per-case precision.
    pub precision: f64,
    /// Mean per-case recall.
    pub recall: f64,
    /// Mean per-case absolute volume difference, mL.
    pub abs_volume_difference_ml: f64,
}

/// The summary of `evaluations` (fold index, its `evaluation.json`).
pub fn summarize(evaluations: &[(u32, Evaluation)], loss: &str, seed: u64) -> CvSummary {
    let mut folds = Vec::new();
    let mut pooled_cases: Vec<CaseEvaluation> = Vec::new();
    for (fold, e) in evaluations {
        let Some(last) = &e.last else { continue };
        folds.push(FoldResult {
            fold: *fold,
            n_cases: last.n_cases,
            epochs: e.epochs,
            dice: last.mean_dice,
            precision: last.mean_precision,
            recall: last.mean_recall,
            abs_volume_difference_ml: last.mean_abs_volume_difference_ml,
            dice_lesion_cases: last.mean_dice_lesion_cases,
            best_epoch: e.best_epoch,
            best_dice: e.best.as_ref().map(|b| b.mean_dice),
        });
        pooled_cases.extend(last.cases.iter().cloned());
    }
    let across =
        |f: &dyn Fn(&FoldResult) -> f64| MeanSd::of(&folds.iter().map(f).collect::<Vec<_>>());
    let pooled = EvalSummary::from_cases(pooled_cases, 0.0);
    CvSummary {
        n_folds: evaluations.len() as u32,
        loss: loss.to_owned(),
        seed,
        dice: across(&|f| f.dice),
        precision: across(&|f| f.precision),
        recall: across(&|f| f.recall),
        abs_volume_difference_ml: across(&|f| f.abs_volume_difference_ml),
        pooled: PooledResult {
            n_cases: pooled.n_cases,
            dice: pooled.mean_dice,
            dice_lesion_cases: pooled.mean_dice_lesion_cases,
            precision: pooled.mean_precision,
            recall: pooled.mean_recall,
            abs_volume_difference_ml: pooled.mean_abs_volume_difference_ml,
        },
        folds,
    }
}

/// The summary as a Markdown table.
pub fn markdown(summary: &CvSummary) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.4}"));
    let mut md = format!(
        "# Cross-validation: {} folds, loss {}, seed {}\n\n\
         Held-out cases, last checkpoint of each fold; mean per case. Dice of a lesion-free \
         case is 1 when nothing is predicted, else 0.\n\n\
         | fold | cases | epochs | Dice | Dice (lesion cases) | precision | recall | abs. vol. diff. (mL) | best epoch | best Dice |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        summary.n_folds, summary.loss, summary.seed
    );
    for f in &summary.folds {
        md.push_str(&format!(
            "| {} | {} | {} | {:.4} | {} | {:.4} | {:.4} | {:.2} | {} | {} |\n",
            f.fold,
            f.n_cases,
            f.epochs,
            f.dice,
            opt(f.dice_lesion_cases),
            f.precision,
            f.recall,
            f.abs_volume_difference_ml,
            f.best_epoch
                .map_or_else(|| "–".to_owned(), |e| e.to_string()),
            opt(f.best_dice),
        ));
    }
    md.push_str(&format!(
        "| **mean ± sd** | | | **{:.4} ± {:.4}** | | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.2} ± {:.2} | | |\n",
        summary.dice.mean,
        summary.dice.sd,
        summary.precision.mean,
        summary.precision.sd,
        summary.recall.mean,
        summary.recall.sd,
        summary.abs_volume_difference_ml.mean,
        summary.abs_volume_difference_ml.sd,
    ));
    let p = &summary.pooled;
    md.push_str(&format!(
        "| pooled | {} | | {:.4} | {} | {:.4} | {:.4} | {:.2} | | |\n",
        p.n_cases,
        p.dice,
        opt(p.dice_lesion_cases),
        p.precision,
        p.recall,
        p.abs_volume_difference_ml
    ));
    md
}

/// Writes `cv_summary.json` and `cv_summary.md` into `run_dir`.
pub fn write_summary(run_dir: &Path, summary: &CvSummary) -> Result<(), TrainError> {
    write_json(&run_dir.join(CV_SUMMARY_JSON), summary)?;
    write_atomically(&run_dir.join(CV_SUMMARY_MD), markdown(summary).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let m = MeanSd::of(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m.mean - 2.5).abs() < 1e-12);
        assert!((m.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(MeanSd::of(&[0.7]).sd, 0.0);
        assert_eq!(MeanSd::of(&[]).mean, 0.0);
    }
}
