//! The per-patient 3D model (anatomy, physiology, lesion, slab geometry) and the
//! deterministic assignment of cases to patients and slabs.

use super::DatasetOptions;
use super::anatomy::{Anatomy, Hemisphere, Territory};
use super::lesion::Lesion;
use super::perfusion::Physiology;
use super::scanner::{MATRIX, SlabGeometry};
use crate::tag;
use strokeseg_shared::rng::Rng;

/// Number of slabs of patient `patient_index` (1 or 2).
pub(crate) fn slabs_of_patient(seed: u64, patient_index: usize, opts: &DatasetOptions) -> usize {
    let mut rng = Rng::stream(seed, &[tag::SLAB_COUNT, patient_index as u64]);
    if rng.chance(opts.two_slab_fraction) {
        2
    } else {
        1
    }
}

/// `(patient_index, slab_index, n_slabs)` of case `case_index`: patients take consecutive
/// cases, one per slab. O(case_index) hashes.
pub(crate) fn locate_case(
    seed: u64,
    case_index: usize,
    opts: &DatasetOptions,
) -> (usize, usize, usize) {
    let mut first_case = 0;
    let mut patient = 0;
    loop {
        let n = slabs_of_patient(seed, patient, opts);
        if case_index < first_case + n {
            return (patient, case_index - first_case, n);
        }
        first_case += n;
        patient += 1;
    }
}

/// Everything about one patient that both of their slabs share.
#[derive(Debug, Clone)]
pub(crate) struct PatientModel {
    pub geometry: SlabGeometry,
    pub anatomy: Anatomy,
    pub physiology: Physiology,
    pub lesion: Option<Lesion>,
}

/// Territory frequencies of the lesion (MCA strokes dominate).
const TERRITORY_WEIGHTS: [(Territory, f64); 3] = [
    (Territory::Mca, 0.75),
    (Territory::Pca, 0.15),
    (Territory::Aca, 0.10),
];

impl PatientModel {
    /// The model of patient `patient_index` of dataset `seed` (`opts` already sanitized).
    pub(crate) fn new(
        seed: u64,
        patient_index: usize,
        n_slabs: usize,
        opts: &DatasetOptions,
    ) -> PatientModel {
        let mut rng = Rng::stream(seed, &[tag::PATIENT, patient_index as u64]);
        let (geometry, head_semi_ap_mm) =
            SlabGeometry::random(&mut rng, n_slabs, (opts.min_slices, opts.max_slices));
        let anatomy = Anatomy::random(&mut rng, head_semi_ap_mm);
        let physiology = Physiology::random(&mut rng);
        let lesion = if rng.chance(opts.lesion_free_fraction) {
            None
        } else {
            place_lesion(&mut rng, &geometry, &anatomy)
        };
        PatientModel {
            geometry,
            anatomy,
            physiology,
            lesion,
        }
    }
}

/// Picks a hemisphere and territory and a parenchyma point of that territory inside the
/// slab coverage by rejection sampling; `None` if none is found (then the patient is
/// lesion-free).
fn place_lesion(rng: &mut Rng, geometry: &SlabGeometry, anatomy: &Anatomy) -> Option<Lesion> {
    let hemisphere = if rng.chance(0.5) {
        Hemisphere::Left
    } else {
        Hemisphere::Right
    };
    let weights: Vec<f64> = TERRITORY_WEIGHTS.iter().map(|(_, w)| *w).collect();
    let first_choice = TERRITORY_WEIGHTS
        .get(rng.weighted(&weights))
        .map_or(Territory::Mca, |(t, _)| *t);
    let (z_lo, z_hi) = geometry.coverage_z_mm();
    let half_fov = 0.5 * MATRIX as f64 * geometry.spacing_xy_mm;
    for territory in [first_choice, Territory::Mca] {
        for _ in 0..600 {
            let p_scanner = [
                rng.uniform(-half_fov, half_fov),
                rng.uniform(-half_fov, half_fov),
                rng.uniform(z_lo, z_hi),
            ];
            let p = geometry.to_head(p_scanner);
            let a = anatomy.sample(p);
            if a.tissue.is_parenchyma() && a.hemisphere == hemisphere && a.territory == territory {
                return Some(Lesion::random(rng, p, hemisphere, territory));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_map_to_consecutive_patient_slabs() {
        let opts = DatasetOptions::default();
        let mut prev = (0, 0, 0);
        for k in 0..40 {
            let (p, s, n) = locate_case(1, k, &opts);
            assert!(s < n && n <= 2);
            if k > 0 {
                if s == 1 {
                    assert_eq!((prev.0, prev.1), (p, 0));
                } else {
                    assert_eq!(p, prev.0 + 1);
                }
            }
            prev = (p, s, n);
        }
    }
}
