//! Patient-grouped folds on a phantom dataset with two-slab patients: the two-slab heuristic
//! recovers the generator's `patients.csv`, and no fold split ever separates a patient's slabs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use strokeseg_io::{Dataset, PatientGrouping};
use strokeseg_trainer::data::assign_folds;

#[test]
fn heuristic_grouping_recovers_the_phantom_patients() {
    let dir = common::dataset(12, 3);
    let csv = Dataset::discover(dir, &PatientGrouping::Csv(dir.join("patients.csv"))).unwrap();
    let heuristic = Dataset::discover(dir, &PatientGrouping::Heuristic).unwrap();
    let two_slab = csv
        .patients()
        .iter()
        .filter(|(_, cases)| cases.len() == 2)
        .count();
    assert!(
        two_slab >= 2,
        "the fixture needs two-slab patients, has {two_slab}"
    );
    // Same partition of cases (labels differ: patient_M vs the first case's name).
    let groups = |d: &Dataset| -> Vec<Vec<usize>> {
        let mut g: Vec<Vec<usize>> = d.patients().into_iter().map(|(_, c)| c).collect();
        g.sort();
        g
    };
    assert_eq!(groups(&heuristic), groups(&csv));
}

#[test]
fn folds_never_split_a_patient() {
    let dir = common::dataset(12, 3);
    let dataset = Dataset::discover(dir, &PatientGrouping::Csv(dir.join("patients.csv"))).unwrap();
    let patients: Vec<&str> = dataset.cases.iter().map(|c| c.patient.as_str()).collect();
    for n_folds in [2, 3, 4] {
        for seed in 0..5 {
            let plan = assign_folds(&patients, n_folds, seed).unwrap();
            let mut fold_of_patient: BTreeMap<&str, usize> = BTreeMap::new();
            for (case, &patient) in patients.iter().enumerate() {
                let fold = plan.fold_of_case[case];
                let first = *fold_of_patient.entry(patient).or_insert(fold);
                assert_eq!(
                    first, fold,
                    "patient {patient} split across folds {first} and {fold}"
                );
            }
            for fold in 0..n_folds {
                let val = plan.val_cases(fold).unwrap();
                let train = plan.train_cases(fold).unwrap();
                assert!(!val.is_empty(), "fold {fold} of {n_folds} is empty");
                assert_eq!(val.len() + train.len(), patients.len());
                for &v in &val {
                    assert!(
                        train.iter().all(|&t| patients[t] != patients[v]),
                        "patient {} on both sides of fold {fold}",
                        patients[v]
                    );
                }
            }
            assert_eq!(
                plan,
                assign_folds(&patients, n_folds, seed).unwrap(),
                "not deterministic"
            );
        }
    }
    let a = assign_folds(&patients, 4, 0).unwrap();
    let differs = (1..5).any(|s| assign_folds(&patients, 4, s).unwrap() != a);
    assert!(differs, "the seed does not change the folds");
}
