//! Sweeps and job arrays: a grid of settings ([`Grid`]: each swept flag with its list of
//! values, expanded in a fixed order), the one mapping between a job array index and its
//! (setting, fold) ([`TaskPlan`]), a sweep's run folder (`sweep.json`, one ordinary
//! cross-validation folder `setting_S/` per setting) and its merge: every setting's
//! `cv_summary.json` ([`crate::cv::merge`]) and a table comparing the settings
//! (`sweep_summary.json`, `sweep_summary.md`).
//!
//! ```text
//! RUN/sweep.json            the grid and the number of folds
//! RUN/setting_0/cv.json     setting 0's cross-validation (fold_K/, cv_summary.*)
//! RUN/setting_1/…
//! RUN/sweep_summary.{json,md}
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strokeseg_io::atomic::{write_atomically, write_json_atomically};

use crate::cv::{self, CvSettings, CvSummary, MeanSd};
use crate::error::{TrainError, read_json};

/// `RUN/sweep.json`.
pub const SWEEP_FILE: &str = "sweep.json";
/// `RUN/sweep_summary.json`.
pub const SWEEP_SUMMARY_JSON: &str = "sweep_summary.json";
/// `RUN/sweep_summary.md`.
pub const SWEEP_SUMMARY_MD: &str = "sweep_summary.md";

/// One swept flag and its values, as given on the command line (`--loss hybrid,ce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    /// The flag without `--`, e.g. `loss`.
    pub flag: String,
    /// Its values, in the order given.
    pub values: Vec<String>,
}

/// The settings of a sweep: every combination of the axes' values. Setting `s` takes, on axis
/// `a`, the value at digit `a` of `s` written in the mixed radix of the axis lengths, the
/// first axis most significant: `--loss hybrid,ce --base-width 16,32` gives 0 = (hybrid, 16),
/// 1 = (hybrid, 32), 2 = (ce, 16), 3 = (ce, 32). No axes: one setting.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Grid {
    axes: Vec<Axis>,
}

impl Grid {
    /// The grid of `axes`; refuses an axis without values, a value given twice on one axis,
    /// and a flag swept twice.
    pub fn new(axes: Vec<Axis>) -> Result<Grid, TrainError> {
        for (i, axis) in axes.iter().enumerate() {
            let refuse = |reason: String| TrainError::SweepAxis {
                flag: axis.flag.clone(),
                reason,
            };
            if axis.values.is_empty() {
                return Err(refuse("no values: the grid would be empty".to_owned()));
            }
            if let Some(value) = axis
                .values
                .iter()
                .enumerate()
                .find(|(j, v)| axis.values[..*j].contains(v))
                .map(|(_, v)| v)
            {
                return Err(refuse(format!("value {value} is given twice")));
            }
            if axes[..i].iter().any(|other| other.flag == axis.flag) {
                return Err(refuse("swept twice".to_owned()));
            }
        }
        Ok(Grid { axes })
    }

    /// The axes, in order.
    pub fn axes(&self) -> &[Axis] {
        &self.axes
    }

    /// Number of settings: the product of the axis lengths (1 without axes).
    pub fn n_settings(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }

    /// The value index on each axis of setting `setting`; `None` outside `0..n_settings`.
    pub fn coords(&self, setting: usize) -> Option<Vec<usize>> {
        if setting >= self.n_settings() {
            return None;
        }
        let mut rest = setting;
        let mut coords = vec![0; self.axes.len()];
        for (slot, axis) in coords.iter_mut().zip(&self.axes).rev() {
            *slot = rest % axis.values.len();
            rest /= axis.values.len();
        }
        Some(coords)
    }

    /// `loss=ce base-width=32`: the swept values of setting `setting` (empty without axes or
    /// outside the grid).
    pub fn label(&self, setting: usize) -> String {
        let Some(coords) = self.coords(setting) else {
            return String::new();
        };
        let parts: Vec<String> = self
            .axes
            .iter()
            .zip(coords)
            .filter_map(|(axis, c)| axis.values.get(c).map(|v| format!("{}={v}", axis.flag)))
            .collect();
        parts.join(" ")
    }
}

/// One task of a job array: a fold of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// 0-based setting of the grid.
    pub setting: usize,
    /// 0-based fold.
    pub fold: u32,
}

/// The tasks of a cross-validation or sweep: `n_settings × n_folds`, task `i` being fold
/// `i mod n_folds` of setting `i div n_folds` (the folds of one setting are consecutive).
/// [`TaskPlan::task`] and [`TaskPlan::index`] are the one mapping every job array uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlan {
    n_settings: usize,
    n_folds: u32,
}

impl TaskPlan {
    /// The plan of `n_settings` settings of `n_folds` folds each; refuses no settings and
    /// fewer than 2 folds.
    pub fn new(n_settings: usize, n_folds: u32) -> Result<TaskPlan, TrainError> {
        if n_settings == 0 {
            return Err(TrainError::config(
                "the sweep grid is empty: no setting to run",
            ));
        }
        if n_folds < 2 {
            return Err(TrainError::config(format!(
                "--folds {n_folds}: a cross-validation needs at least 2 folds"
            )));
        }
        Ok(TaskPlan {
            n_settings,
            n_folds,
        })
    }

    /// Settings.
    pub fn n_settings(&self) -> usize {
        self.n_settings
    }

    /// Folds per setting.
    pub fn n_folds(&self) -> u32 {
        self.n_folds
    }

    /// Tasks: settings × folds.
    pub fn n_tasks(&self) -> usize {
        self.n_settings * self.n_folds as usize
    }

    /// The (setting, fold) of task `index`.
    pub fn task(&self, index: usize) -> Result<Task, TrainError> {
        if index >= self.n_tasks() {
            return Err(TrainError::NoSuchTask {
                index,
                n_tasks: self.n_tasks(),
            });
        }
        let n_folds = self.n_folds as usize;
        Ok(Task {
            setting: index / n_folds,
            fold: (index % n_folds) as u32,
        })
    }

    /// The index of `task` (the inverse of [`TaskPlan::task`]); `None` outside the plan.
    pub fn index(&self, task: Task) -> Option<usize> {
        (task.setting < self.n_settings && task.fold < self.n_folds)
            .then(|| task.setting * self.n_folds as usize + task.fold as usize)
    }
}

/// `RUN/sweep.json`: the grid and the folds of a sweep; setting `S` is the cross-validation
/// in `RUN/setting_S`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepManifest {
    /// Folds of every setting.
    pub n_folds: u32,
    /// The swept flags.
    pub grid: Grid,
}

impl SweepManifest {
    /// Reads `run_dir/sweep.json`.
    pub fn load(run_dir: &Path) -> Result<SweepManifest, TrainError> {
        read_json(&run_dir.join(SWEEP_FILE))
    }

    /// The task plan of the sweep.
    pub fn plan(&self) -> Result<TaskPlan, TrainError> {
        TaskPlan::new(self.grid.n_settings(), self.n_folds)
    }
}

/// Whether `run_dir` holds a sweep (a `sweep.json`).
pub fn is_sweep(run_dir: &Path) -> bool {
    run_dir.join(SWEEP_FILE).is_file()
}

/// `RUN/setting_S`: the cross-validation folder of setting `setting`.
pub fn setting_dir(run_dir: &Path, setting: usize) -> PathBuf {
    run_dir.join(format!("setting_{setting}"))
}

/// Makes `run_dir` the sweep of `manifest` whose setting `S` has the cross-validation
/// settings `settings[S]`: writes `sweep.json` and each `setting_S/cv.json` when missing, and
/// checks them when present ([`TrainError::SettingsMismatch`]). Safe to call from concurrent
/// tasks (under [`cv::with_run_lock`]).
pub fn init_sweep(
    run_dir: &Path,
    manifest: &SweepManifest,
    settings: &[CvSettings],
) -> Result<(), TrainError> {
    let n_settings = manifest.grid.n_settings();
    if settings.len() != n_settings || settings.iter().any(|s| s.n_folds != manifest.n_folds) {
        return Err(TrainError::config(format!(
            "a sweep of {n_settings} settings of {} folds got {} cross-validation settings",
            manifest.n_folds,
            settings.len()
        )));
    }
    cv::with_run_lock(run_dir, || {
        let path = run_dir.join(SWEEP_FILE);
        if path.is_file() {
            let recorded = SweepManifest::load(run_dir)?;
            if &recorded != manifest {
                return Err(TrainError::SettingsMismatch {
                    path,
                    reason: format!(
                        "recorded grid {:?} of {} folds, asked {:?} of {} folds",
                        recorded.grid.axes, recorded.n_folds, manifest.grid.axes, manifest.n_folds
                    ),
                });
            }
        } else {
            write_json_atomically(&path, manifest)?;
        }
        Ok(())
    })?;
    for (setting, cv_settings) in settings.iter().enumerate() {
        cv::init_run(&setting_dir(run_dir, setting), cv_settings)?;
    }
    Ok(())
}

/// One row of the sweep table: a setting's cross-validation figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingRow {
    /// 0-based setting.
    pub setting: usize,
    /// Its swept values, e.g. `loss=ce base-width=32`.
    pub label: String,
    /// Its folder, relative to the sweep folder.
    pub dir: String,
    /// Held-out Dice across folds.
    pub dice: MeanSd,
    /// Precision across folds.
    pub precision: MeanSd,
    /// Recall across folds.
    pub recall: MeanSd,
    /// Absolute volume difference across folds, mL.
    pub abs_volume_difference_ml: MeanSd,
    /// HD95 across the folds that have one, mm.
    pub hausdorff95_mm: Option<MeanSd>,
    /// Mean Dice over every held-out case pooled.
    pub pooled_dice: f64,
}

impl SettingRow {
    fn of(setting: usize, label: String, dir: String, s: &CvSummary) -> SettingRow {
        SettingRow {
            setting,
            label,
            dir,
            dice: s.dice,
            precision: s.precision,
            recall: s.recall,
            abs_volume_difference_ml: s.abs_volume_difference_ml,
            hausdorff95_mm: s.hausdorff95_mm,
            pooled_dice: s.pooled.dice,
        }
    }
}

/// `RUN/sweep_summary.json`: every setting's cross-validation, side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// Folds of every setting.
    pub n_folds: u32,
    /// The swept flags.
    pub axes: Vec<Axis>,
    /// One row per setting, in setting order.
    pub settings: Vec<SettingRow>,
}

/// Merges every setting of the sweep in `run_dir` ([`cv::merge`] writes each
/// `setting_S/cv_summary.*`) and writes `sweep_summary.json` and `sweep_summary.md`. When a
/// setting cannot be merged, [`TrainError::SweepNotReady`] names each such setting with its
/// missing, unfinished or corrupt folds, and no sweep summary is written.
pub fn merge_sweep(run_dir: &Path) -> Result<SweepSummary, TrainError> {
    let manifest = SweepManifest::load(run_dir)?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for setting in 0..manifest.grid.n_settings() {
        let dir = setting_dir(run_dir, setting);
        let label = manifest.grid.label(setting);
        match cv::merge(&dir) {
            Ok(summary) => rows.push(SettingRow::of(
                setting,
                label,
                format!("setting_{setting}"),
                &summary,
            )),
            Err(e) => failures.push(format!("setting {setting} ({label}): {e}")),
        }
    }
    if !failures.is_empty() {
        return Err(TrainError::SweepNotReady {
            run_dir: run_dir.to_path_buf(),
            failures,
        });
    }
    let summary = SweepSummary {
        n_folds: manifest.n_folds,
        axes: manifest.grid.axes().to_vec(),
        settings: rows,
    };
    write_json_atomically(&run_dir.join(SWEEP_SUMMARY_JSON), &summary)?;
    write_atomically(
        &run_dir.join(SWEEP_SUMMARY_MD),
        markdown(&summary).as_bytes(),
    )?;
    Ok(summary)
}

/// The sweep table in Markdown: one row per setting, the figures of its held-out folds.
pub fn markdown(summary: &SweepSummary) -> String {
    let mut md = format!(
        "# Sweep: {} settings × {} folds\n\n\
         Each setting's held-out figures (last checkpoint of each fold), mean ± sd across \
         folds; pooled: mean Dice over every held-out case. Details in each `setting_S/cv_summary.md`.\n\n\
         | setting | swept values | Dice | pooled Dice | precision | recall | abs. vol. diff. (mL) | HD95 (mm) |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|\n",
        summary.settings.len(),
        summary.n_folds
    );
    for row in &summary.settings {
        md.push_str(&format!(
            "| {} | {} | {} | {:.4} | {} | {} | {} | {} |\n",
            row.setting,
            row.label,
            row.dice.format(4),
            row.pooled_dice,
            row.precision.format(4),
            row.recall.format(4),
            row.abs_volume_difference_ml.format(2),
            row.hausdorff95_mm
                .map_or_else(|| "–".to_owned(), |m| m.format(2)),
        ));
    }
    md
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn axis(flag: &str, values: &[&str]) -> Axis {
        Axis {
            flag: flag.to_owned(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn the_grid_expands_first_axis_slowest() {
        let grid = Grid::new(vec![
            axis("loss", &["hybrid", "ce"]),
            axis("base-width", &["16", "32", "64"]),
        ])
        .unwrap();
        assert_eq!(grid.n_settings(), 6);
        let labels: Vec<String> = (0..6).map(|s| grid.label(s)).collect();
        assert_eq!(
            labels,
            [
                "loss=hybrid base-width=16",
                "loss=hybrid base-width=32",
                "loss=hybrid base-width=64",
                "loss=ce base-width=16",
                "loss=ce base-width=32",
                "loss=ce base-width=64",
            ]
        );
        assert_eq!(grid.coords(4), Some(vec![1, 1]));
        assert_eq!(grid.coords(6), None);
        // Every combination exactly once.
        let mut all: Vec<Vec<usize>> = (0..6).map(|s| grid.coords(s).unwrap()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
        // No axes: one setting, no label.
        let single = Grid::new(Vec::new()).unwrap();
        assert_eq!((single.n_settings(), single.label(0)), (1, String::new()));
        assert_eq!(single.coords(0), Some(vec![]));
    }

    #[test]
    fn a_bad_grid_is_refused() {
        let empty = Grid::new(vec![axis("loss", &[])]).unwrap_err();
        assert!(empty.to_string().contains("--loss"), "{empty}");
        assert!(empty.to_string().contains("empty"), "{empty}");
        let twice = Grid::new(vec![axis("lr", &["1e-3", "1e-3"])]).unwrap_err();
        assert!(twice.to_string().contains("1e-3 is given twice"), "{twice}");
        let swept_twice = Grid::new(vec![axis("lr", &["1"]), axis("lr", &["2"])]).unwrap_err();
        assert!(
            swept_twice.to_string().contains("swept twice"),
            "{swept_twice}"
        );
    }

    #[test]
    fn task_index_and_setting_fold_map_both_ways() {
        let plan = TaskPlan::new(3, 4).unwrap();
        assert_eq!(plan.n_tasks(), 12);
        for index in 0..plan.n_tasks() {
            let task = plan.task(index).unwrap();
            assert!(task.setting < 3 && task.fold < 4);
            assert_eq!(plan.index(task), Some(index));
        }
        assert_eq!(
            plan.task(0).unwrap(),
            Task {
                setting: 0,
                fold: 0
            }
        );
        assert_eq!(
            plan.task(5).unwrap(),
            Task {
                setting: 1,
                fold: 1
            }
        );
        assert_eq!(
            plan.task(11).unwrap(),
            Task {
                setting: 2,
                fold: 3
            }
        );
        let err = plan.task(12).unwrap_err();
        assert!(
            matches!(
                err,
                TrainError::NoSuchTask {
                    index: 12,
                    n_tasks: 12
                }
            ),
            "{err}"
        );
        assert_eq!(
            plan.index(Task {
                setting: 3,
                fold: 0
            }),
            None
        );
        assert_eq!(
            plan.index(Task {
                setting: 0,
                fold: 4
            }),
            None
        );
        assert!(TaskPlan::new(0, 4).is_err());
        assert!(TaskPlan::new(1, 1).is_err());
    }

    #[test]
    fn a_sweep_with_a_setting_not_ready_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = SweepManifest {
            n_folds: 2,
            grid: Grid::new(vec![axis("loss", &["hybrid", "ce"])]).unwrap(),
        };
        write_json_atomically(&dir.path().join(SWEEP_FILE), &manifest).unwrap();
        let err = merge_sweep(dir.path()).unwrap_err().to_string();
        assert!(err.contains("setting 0 (loss=hybrid)"), "{err}");
        assert!(err.contains("setting 1 (loss=ce)"), "{err}");
        assert!(!dir.path().join(SWEEP_SUMMARY_JSON).exists());
    }
}
