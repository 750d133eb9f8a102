//! The per-patient 3D model (anatomy, physiology, lesion, slab geometry) and the
//! deterministic assignment of cases to patients and slabs.

use super::DatasetOptions;
use std::sync::Arc;

use super::anatomy::{Anatomy, AnatomySample, Hemisphere, Territory};
use super::confound::Confounders;
use super::lesion::{Lesion, LesionRanges};
use super::perfusion::Physiology;
use super::scanner::{MATRIX, SlabGeometry};
use super::template::{BrainTemplate, TemplateHead};
use crate::tag;
use strokeseg_io::IoError;
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

/// A patient's head: procedural, or built on the brain template.
#[derive(Debug, Clone)]
pub(crate) enum Head {
    Procedural(Box<Anatomy>),
    Template(Box<TemplateHead>),
}

impl Head {
    /// Classifies the head point `p` (mm).
    pub(crate) fn sample(&self, p: [f64; 3]) -> AnatomySample {
        match self {
            Head::Procedural(a) => a.sample(p),
            Head::Template(t) => t.sample(p),
        }
    }
}

/// The brain template of `opts`, when some patients are built on it.
pub(crate) fn template_of(opts: &DatasetOptions) -> Result<Option<Arc<BrainTemplate>>, IoError> {
    if opts.anatomy.template_fraction <= 0.0 {
        return Ok(None);
    }
    match &opts.anatomy.template_dir {
        Some(dir) => BrainTemplate::cached(dir).map(Some),
        None => Err(IoError::Dataset {
            path: std::path::PathBuf::from("<phantom options>"),
            reason: format!(
                "template_fraction {} needs a template folder (`--template-dir`; \
                 `cargo xtask setup-templates` fetches it)",
                opts.anatomy.template_fraction
            ),
        }),
    }
}

/// Everything about one patient that both of their slabs share.
#[derive(Debug, Clone)]
pub(crate) struct PatientModel {
    pub geometry: SlabGeometry,
    pub anatomy: Head,
    pub physiology: Physiology,
    /// The acute lesions (none, one, or two for a multifocal or bilateral stroke).
    pub lesions: Vec<Lesion>,
    /// Findings that are not the acute infarct (none in the classic generator).
    pub confounders: Confounders,
}

/// Territory frequencies of the lesion (MCA strokes dominate).
const TERRITORY_WEIGHTS: [(Territory, f64); 3] = [
    (Territory::Mca, 0.75),
    (Territory::Pca, 0.15),
    (Territory::Aca, 0.10),
];

impl PatientModel {
    /// The model of patient `patient_index` of dataset `seed` (`opts` already sanitized;
    /// `template` is [`template_of`] `opts`). Procedural patients do not depend on the
    /// template options.
    pub(crate) fn new(
        seed: u64,
        patient_index: usize,
        n_slabs: usize,
        opts: &DatasetOptions,
        template: Option<&Arc<BrainTemplate>>,
    ) -> PatientModel {
        let mut rng = Rng::stream(seed, &[tag::PATIENT, patient_index as u64]);
        let (geometry, head_semi_ap_mm) =
            SlabGeometry::random(&mut rng, n_slabs, (opts.min_slices, opts.max_slices));
        let on_template = Rng::stream(seed, &[tag::ANATOMY, patient_index as u64])
            .chance(opts.anatomy.template_fraction);
        let anatomy = match template {
            Some(t) if on_template => Head::Template(Box::new(TemplateHead::random(
                &mut rng,
                Arc::clone(t),
                head_semi_ap_mm,
            ))),
            _ => Head::Procedural(Box::new(Anatomy::random(&mut rng, head_semi_ap_mm))),
        };
        let physiology = Physiology::random(&mut rng);
        let realism = &opts.realism;
        let ranges = if realism.isles_lesions {
            LesionRanges::Isles { scale: 1.0 }
        } else {
            LesionRanges::Classic
        };
        let mut lesions: Vec<Lesion> = if rng.chance(opts.lesion_free_fraction) {
            None
        } else {
            place_lesion(&mut rng, &geometry, &anatomy, ranges)
        }
        .into_iter()
        .collect();
        // Everything below draws from its own stream: the classic patient stays bit-identical.
        let mut extra = Rng::stream(seed, &[tag::REALISM, patient_index as u64]);
        if let Some((first_side, first_territory)) =
            lesions.first().map(|l| (l.hemisphere, l.territory))
            && extra.chance(realism.multifocal_fraction)
        {
            // Half bilateral (embolic showers), half another territory of the same side.
            let (hemisphere, territory) = if extra.chance(0.5) {
                (first_side.opposite(), first_territory)
            } else {
                let other = if first_territory == Territory::Mca {
                    Territory::Pca
                } else {
                    Territory::Mca
                };
                (first_side, other)
            };
            let scale = extra.uniform(0.15, 0.6);
            if let Some(p) = find_point(&mut extra, &geometry, &anatomy, |a| {
                a.tissue.is_parenchyma() && a.hemisphere == hemisphere && a.territory == territory
            }) {
                lesions.push(Lesion::random(
                    &mut extra,
                    p,
                    hemisphere,
                    territory,
                    LesionRanges::Isles { scale },
                ));
            }
        }
        let confounders = Confounders::random(&mut extra, realism.confounder_rate, |r| {
            find_point(r, &geometry, &anatomy, |a| {
                a.tissue.is_parenchyma() && a.territory != Territory::Posterior
            })
        });
        PatientModel {
            geometry,
            anatomy,
            physiology,
            lesions,
            confounders,
        }
    }
}

/// Picks a hemisphere and territory and a parenchyma point of that territory inside the
/// slab coverage by rejection sampling; `None` if none is found (then the patient is
/// lesion-free).
fn place_lesion(
    rng: &mut Rng,
    geometry: &SlabGeometry,
    anatomy: &Head,
    ranges: LesionRanges,
) -> Option<Lesion> {
    let hemisphere = if rng.chance(0.5) {
        Hemisphere::Left
    } else {
        Hemisphere::Right
    };
    let weights: Vec<f64> = TERRITORY_WEIGHTS.iter().map(|(_, w)| *w).collect();
    let first_choice = TERRITORY_WEIGHTS
        .get(rng.weighted(&weights))
        .map_or(Territory::Mca, |(t, _)| *t);
    for territory in [first_choice, Territory::Mca] {
        if let Some(p) = find_point(rng, geometry, anatomy, |a| {
            a.tissue.is_parenchyma() && a.hemisphere == hemisphere && a.territory == territory
        }) {
            return Some(Lesion::random(rng, p, hemisphere, territory, ranges));
        }
    }
    None
}

/// A head point inside the slab coverage where `accept` holds, by rejection sampling (at
/// most 600 tries); `None` if none is found.
fn find_point(
    rng: &mut Rng,
    geometry: &SlabGeometry,
    anatomy: &Head,
    accept: impl Fn(&AnatomySample) -> bool,
) -> Option<[f64; 3]> {
    let (z_lo, z_hi) = geometry.coverage_z_mm();
    let half_fov = 0.5 * MATRIX as f64 * geometry.spacing_xy_mm;
    for _ in 0..600 {
        let p_scanner = [
            rng.uniform(-half_fov, half_fov),
            rng.uniform(-half_fov, half_fov),
            rng.uniform(z_lo, z_hi),
        ];
        let p = geometry.to_head(p_scanner);
        if accept(&anatomy.sample(p)) {
            return Some(p);
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
