//! The per-epoch metrics log (`metrics.csv`, `metrics.json`) and the per-step log
//! (`steps.csv`) of a run folder.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use strokeseg_io::atomic::{write_atomically, write_json_atomically};

use crate::error::TrainError;

/// Held-out results of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValRecord {
    /// Slice-weighted mean loss on the held-out slices.
    pub loss: f64,
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
    /// Seconds spent evaluating.
    pub eval_time_s: f64,
}

/// One epoch of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Optimiser steps taken by the end of the epoch.
    pub global_step: u64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean gradient norm (before clipping).
    pub grad_norm: f64,
    /// Training slices processed (augmented samples, including oversampled repeats).
    pub train_slices: u64,
    /// Seconds spent in training steps (data, augmentation, forward, backward, update).
    pub train_time_s: f64,
    /// Training throughput, slices per second.
    pub slices_per_s: f64,
    /// Held-out results, when validated this epoch.
    pub val: Option<ValRecord>,
}

const CSV_HEADER: &str = "epoch,global_step,train_loss,lr,grad_norm,train_slices,train_time_s,slices_per_s,val_loss,val_dice,val_dice_lesion_cases,val_precision,val_recall,val_abs_volume_difference_ml,eval_time_s";

/// Writes the records as `metrics.csv` (empty cells where there was no validation) and
/// `metrics.json` (an array of [`EpochRecord`]).
pub fn write_metrics(
    csv_path: &Path,
    json_path: &Path,
    records: &[EpochRecord],
) -> Result<(), TrainError> {
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for r in records {
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let val = r.val;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.global_step,
            r.train_loss,
            r.lr,
            r.grad_norm,
            r.train_slices,
            r.train_time_s,
            r.slices_per_s,
            opt(val.map(|v| v.loss)),
            opt(val.map(|v| v.dice)),
            opt(val.and_then(|v| v.dice_lesion_cases)),
            opt(val.map(|v| v.precision)),
            opt(val.map(|v| v.recall)),
            opt(val.map(|v| v.abs_volume_difference_ml)),
            opt(val.map(|v| v.eval_time_s)),
        ));
    }
    write_atomically(csv_path, csv.as_bytes())?;
    Ok(write_json_atomically(json_path, &records)?)
}

/// Header of `steps.csv`. Values are written with Rust's shortest round-trip formatting, so
/// two runs' step logs compare bit for bit.
pub const STEPS_HEADER: &str = "step,epoch,batch,loss,lr,grad_norm";

/// Appends one line per optimiser step to `steps.csv`.
#[derive(Debug)]
pub struct StepLog {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl StepLog {
    /// Opens `path` for appending. Lines of steps `≥ keep_below_step` left by an earlier
    /// process that stopped after its last checkpoint are dropped first; a missing file is
    /// created with the header.
    pub fn open(path: &Path, keep_below_step: u64) -> Result<StepLog, TrainError> {
        let mut text = String::from(STEPS_HEADER);
        text.push('\n');
        if let Ok(old) = std::fs::read_to_string(path) {
            for line in old.lines().skip(1) {
                let step = line.split(',').next().and_then(|s| s.parse::<u64>().ok());
                if step.is_some_and(|s| s < keep_below_step) {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        write_atomically(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| TrainError::file(path, e))?;
        Ok(StepLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends the line of step `step` (0-based).
    pub fn append(
        &mut self,
        step: u64,
        epoch: u32,
        batch: usize,
        loss: f64,
        lr: f64,
        grad_norm: f64,
    ) -> Result<(), TrainError> {
        writeln!(self.file, "{step},{epoch},{batch},{loss},{lr},{grad_norm}")
            .map_err(|e| TrainError::file(&self.path, e))
    }
}
