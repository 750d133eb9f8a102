//! Discovery of an ISLES 2018 `TRAINING/` folder: its cases, the modalities each has, and
//! which cases belong to one patient (two slabs), so folds can be grouped by patient.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::header::read_header;
use super::study::CaseFiles;
use super::{HeaderInfo, IoError, ReadLimits};
use strokeseg_shared::modality::Modality;

/// How cases are assigned to patients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientGrouping {
    /// Every case is its own patient.
    OnePerCase,
    /// Consecutive cases that look like two slabs of one acquisition are one patient (see
    /// [`Dataset::discover`]).
    Heuristic,
    /// A CSV file with a `case,patient` header: the case folder name and any patient label.
    /// Cases missing from the file are an error.
    Csv(PathBuf),
}

/// One case of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetCase {
    /// Folder name, e.g. `case_12`.
    pub name: String,
    /// The number in the folder name (12), used for ordering.
    pub number: u64,
    /// Its image files.
    pub files: CaseFiles,
    /// The validated header of its reference image (CT if present, else the first found).
    pub reference: HeaderInfo,
    /// The patient label the case belongs to.
    pub patient: String,
}

/// The cases of a dataset folder, ordered by case number.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The dataset folder.
    pub root: PathBuf,
    /// The cases.
    pub cases: Vec<DatasetCase>,
}

fn case_number(name: &str) -> Option<u64> {
    name.strip_prefix("case_")?.parse().ok()
}

impl Dataset {
    /// Finds the `case_N` folders under `root` (or under `root/TRAINING` if that exists),
    /// reads one header per case (nothing else), and groups cases into patients.
    ///
    /// The two-slab heuristic joins case N+1 to case N's patient when both have the same
    /// in-plane size and spacing, the same slice thickness, the same in-plane position
    /// (affine x/y translation within 1 mm) and z ranges that touch or overlap by less
    /// than one slab. ISLES does not publish the grouping; pass a CSV when you know it.
    pub fn discover(root: &Path, grouping: &PatientGrouping) -> Result<Dataset, IoError> {
        let root = if root.join("TRAINING").is_dir() {
            root.join("TRAINING")
        } else {
            root.to_path_buf()
        };
        let entries = std::fs::read_dir(&root).map_err(|e| IoError::io(&root, e))?;
        let mut found: Vec<(u64, String, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| IoError::io(&root, e))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let (Some(n), true) = (case_number(name), path.is_dir()) {
                found.push((n, name.to_owned(), path));
            }
        }
        if found.is_empty() {
            return Err(IoError::Dataset {
                path: root,
                reason: "no case_N folders found".into(),
            });
        }
        found.sort();
        let limits = ReadLimits::default();
        let mut cases = Vec::with_capacity(found.len());
        for (number, name, dir) in found {
            let files = CaseFiles::discover(&dir)?;
            let ref_path = match files.files.get(&Modality::Ct) {
                Some(p) => p.clone(),
                None => match files.files.iter().find(|(m, _)| **m != Modality::Pwi) {
                    Some((_, p)) => p.clone(),
                    None => {
                        return Err(IoError::Dataset {
                            path: dir,
                            reason: "case folder holds no NIfTI images".into(),
                        });
                    }
                },
            };
            let (_, reference) = read_header(&ref_path, &limits)?;
            cases.push(DatasetCase {
                patient: name.clone(),
                name,
                number,
                files,
                reference,
            });
        }
        match grouping {
            PatientGrouping::OnePerCase => {}
            PatientGrouping::Heuristic => group_two_slabs(&mut cases),
            PatientGrouping::Csv(csv) => apply_csv(&mut cases, csv)?,
        }
        Ok(Dataset { root, cases })
    }

    /// The distinct patients, in order of first appearance, with the indices of their cases.
    pub fn patients(&self) -> Vec<(String, Vec<usize>)> {
        let mut order: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, c) in self.cases.iter().enumerate() {
            match order.iter_mut().find(|(p, _)| *p == c.patient) {
                Some((_, idx)) => idx.push(i),
                None => order.push((c.patient.clone(), vec![i])),
            }
        }
        order
    }
}

/// Whether `b` looks like the slab after (or before) `a` of the same acquisition.
fn looks_like_second_slab(a: &HeaderInfo, b: &HeaderInfo) -> bool {
    let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * x.abs().max(y.abs());
    if a.nx() != b.nx() || a.ny() != b.ny() {
        return false;
    }
    if !(0..3).all(|i| close(a.spacing_mm[i], b.spacing_mm[i])) {
        return false;
    }
    let same_xy = (0..2).all(|row| (a.affine[row][3] - b.affine[row][3]).abs() <= 1.0);
    if !same_xy {
        return false;
    }
    // z extent of each slab along the world z axis (slices are axial).
    let extent = |h: &HeaderInfo| {
        let z0 = h.affine[2][3];
        let z1 = z0 + h.affine[2][2] * (h.nz() as f64 - 1.0);
        (z0.min(z1), z0.max(z1))
    };
    let (a0, a1) = extent(a);
    let (b0, b1) = extent(b);
    let thickness = f64::from(a.spacing_mm[2]);
    let gap = (b0 - a1).max(a0 - b1); // negative when they overlap
    let slab = (a1 - a0).min(b1 - b0) + thickness;
    gap <= 1.5 * thickness && -gap < slab
}

fn group_two_slabs(cases: &mut [DatasetCase]) {
    let mut i = 1;
    while i < cases.len() {
        let (prev, next) = cases.split_at_mut(i);
        let (a, b) = (&prev[i - 1], &mut next[0]);
        let consecutive = b.number == a.number + 1;
        // Only pairs: a patient has at most two slabs, and the first of a pair starts it.
        let a_is_single = a.patient == a.name;
        if consecutive && a_is_single && looks_like_second_slab(&a.reference, &b.reference) {
            b.patient = a.patient.clone();
            i += 2;
        } else {
            i += 1;
        }
    }
}

fn apply_csv(cases: &mut [DatasetCase], csv: &Path) -> Result<(), IoError> {
    let text = std::fs::read_to_string(csv).map_err(|e| IoError::io(csv, e))?;
    let bad = |reason: String| IoError::Dataset {
        path: csv.to_path_buf(),
        reason,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim().eq_ignore_ascii_case("case,patient") => {}
        Some((_, h)) => return Err(bad(format!("header is {h:?}, expected \"case,patient\""))),
        None => return Err(bad("empty file".into())),
    }
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (line_no, line) in lines {
        let Some((case, patient)) = line.split_once(',') else {
            return Err(bad(format!(
                "line {}: expected \"case,patient\"",
                line_no + 1
            )));
        };
        let (case, patient) = (case.trim(), patient.trim());
        if case.is_empty() || patient.is_empty() {
            return Err(bad(format!("line {}: empty field", line_no + 1)));
        }
        if map.insert(case.to_owned(), patient.to_owned()).is_some() {
            return Err(bad(format!(
                "line {}: case {case} listed twice",
                line_no + 1
            )));
        }
    }
    for c in cases.iter_mut() {
        match map.get(&c.name) {
            Some(p) => c.patient = p.clone(),
            None => return Err(bad(format!("case {} is not listed", c.name))),
        }
    }
    Ok(())
}
