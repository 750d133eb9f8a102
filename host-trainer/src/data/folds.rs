//! Patient-grouped k-fold cross-validation: every case of a patient (ISLES: up to two slabs)
//! lands in the same fold, so no patient is seen in training and validation at once.
//!
//! The assignment is a pure function of the case → patient list, the number of folds and the
//! seed: patients are shuffled with the seed's [`stream::FOLDS`](crate::rng::stream::FOLDS)
//! stream, stably sorted by their number of cases (most first), and each goes to the fold that
//! holds the fewest cases so far (lowest fold index on ties). Folds therefore differ in size by
//! at most the largest patient's case count (2 for ISLES).

use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::rng::{Rng, stream};

/// Which fold each case belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldPlan {
    /// Number of folds.
    pub n_folds: usize,
    /// Fold index (0-based) of each case, in case order.
    pub fold_of_case: Vec<usize>,
}

impl FoldPlan {
    /// Case indices held out in fold `fold` (validation).
    pub fn val_cases(&self, fold: usize) -> Result<Vec<usize>, TrainError> {
        self.check(fold)?;
        Ok(self.cases_where(|f| f == fold))
    }

    /// Case indices trained on when fold `fold` is held out.
    pub fn train_cases(&self, fold: usize) -> Result<Vec<usize>, TrainError> {
        self.check(fold)?;
        Ok(self.cases_where(|f| f != fold))
    }

    fn check(&self, fold: usize) -> Result<(), TrainError> {
        if fold < self.n_folds {
            Ok(())
        } else {
            Err(TrainError::NoSuchFold {
                fold,
                n_folds: self.n_folds,
            })
        }
    }

    fn cases_where(&self, keep: impl Fn(usize) -> bool) -> Vec<usize> {
        self.fold_of_case
            .iter()
            .enumerate()
            .filter(|&(_, &f)| keep(f))
            .map(|(i, _)| i)
            .collect()
    }
}

/// Assigns the cases (given by their patient labels, in case order) to `n_folds` folds,
/// grouped by patient and deterministic in `seed`. Needs `n_folds ≥ 2` and at least as many
/// patients as folds.
pub fn assign_folds<S: AsRef<str>>(
    patient_of_case: &[S],
    n_folds: usize,
    seed: u64,
) -> Result<FoldPlan, TrainError> {
    if n_folds < 2 {
        return Err(TrainError::config(format!(
            "cross-validation needs at least 2 folds, got {n_folds}"
        )));
    }
    // Patients in order of first appearance, with their cases.
    let mut patients: Vec<(&str, Vec<usize>)> = Vec::new();
    for (case_idx, patient) in patient_of_case.iter().enumerate() {
        let patient = patient.as_ref();
        match patients.iter_mut().find(|(p, _)| *p == patient) {
            Some((_, cases)) => cases.push(case_idx),
            None => patients.push((patient, vec![case_idx])),
        }
    }
    if patients.len() < n_folds {
        return Err(TrainError::TooFewPatients {
            n_patients: patients.len(),
            n_folds,
        });
    }
    Rng::stream(seed, &[stream::FOLDS]).shuffle(&mut patients);
    patients.sort_by_key(|(_, cases)| std::cmp::Reverse(cases.len()));
    let mut fold_sizes = vec![0usize; n_folds];
    let mut fold_of_case = vec![0usize; patient_of_case.len()];
    for (_, cases) in &patients {
        let fold = fold_sizes
            .iter()
            .enumerate()
            .min_by_key(|&(f, &size)| (size, f))
            .map_or(0, |(f, _)| f);
        for &case_idx in cases {
            if let Some(slot) = fold_of_case.get_mut(case_idx) {
                *slot = fold;
            }
        }
        if let Some(size) = fold_sizes.get_mut(fold) {
            *size += cases.len();
        }
    }
    Ok(FoldPlan {
        n_folds,
        fold_of_case,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patients_stay_together_and_folds_balance() {
        let patients = ["a", "a", "b", "c", "c", "d", "e", "f", "f", "g"];
        let plan = assign_folds(&patients, 3, 11).unwrap();
        for (i, p) in patients.iter().enumerate() {
            for (j, q) in patients.iter().enumerate() {
                if p == q {
                    assert_eq!(plan.fold_of_case[i], plan.fold_of_case[j]);
                }
            }
        }
        let sizes: Vec<usize> = (0..3).map(|f| plan.val_cases(f).unwrap().len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), patients.len());
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 2);
        assert_eq!(plan, assign_folds(&patients, 3, 11).unwrap());
        let mut train = plan.train_cases(1).unwrap();
        train.extend(plan.val_cases(1).unwrap());
        train.sort_unstable();
        assert_eq!(train, (0..patients.len()).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_impossible_splits() {
        assert!(matches!(
            assign_folds(&["a", "a", "b"], 3, 0),
            Err(TrainError::TooFewPatients {
                n_patients: 2,
                n_folds: 3
            })
        ));
        assert!(assign_folds(&["a", "b"], 1, 0).is_err());
        let plan = assign_folds(&["a", "b"], 2, 0).unwrap();
        assert!(matches!(
            plan.val_cases(2),
            Err(TrainError::NoSuchFold { fold: 2, .. })
        ));
    }
}
