//! Confounders: findings on the perfusion maps that are *not* the acute infarct, so that a
//! model must learn the infarct's signature rather than "dark on CBF" or "bright on Tmax".
//! None of them enters the ground truth (OT) or the lesion zones.
//!
//! | kind | region | effect | what it fools |
//! |---|---|---|---|
//! | old infarct | 5–18 mm, parenchyma | CBF × 0.1–0.25, CBV × 0.2–0.45, Tmax unchanged, CT → 8–14 HU (encephalomalacia) | a CBF threshold |
//! | delayed arrival | 25–55 mm, one hemisphere | Tmax + 3–8 s, CBF × 0.85–1, CBV × 1–1.2 (stenosis, poor collaterals, no core) | a Tmax threshold |
//! | hyperperfusion | 8–25 mm | CBF × 1.5–2.5, CBV × 1.2–1.6, Tmax − 0.3 s (luxury perfusion, seizure) | intensity normalisation |
//! | low-flow white matter | whole patient | white-matter CBF × 0.6–0.8, CBV × 0.75–0.9 (small-vessel disease) | a relative CBF threshold |
//!
//! Streak artefacts on the maps belong to the scanner (see `render`).

use super::anatomy::AnatomySample;
use super::lesion::Blob;
use super::perfusion::Haemo;
use strokeseg_shared::rng::Rng;

/// What a confounder does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    OldInfarct {
        cbf: f64,
        cbv: f64,
        ct_hu: f64,
    },
    DelayedArrival {
        extra_tmax_s: f64,
        cbf: f64,
        cbv: f64,
    },
    Hyperperfusion {
        cbf: f64,
        cbv: f64,
    },
}

/// One confounding region.
#[derive(Debug, Clone)]
pub(crate) struct Confounder {
    kind: Kind,
    region: Blob,
    radius_mm: f64,
}

/// The confounders of one patient.
#[derive(Debug, Clone)]
pub(crate) struct Confounders {
    regions: Vec<Confounder>,
    /// White-matter CBF and CBV factors (1 without small-vessel disease).
    white_cbf: f64,
    white_cbv: f64,
}

impl Confounders {
    /// Draws each kind with probability `rate`; `point` returns a random parenchyma point
    /// (head mm) for a region centre, `None` if none was found.
    pub(crate) fn random(
        rng: &mut Rng,
        rate: f64,
        mut point: impl FnMut(&mut Rng) -> Option<[f64; 3]>,
    ) -> Confounders {
        let mut regions = Vec::new();
        if rng.chance(rate) {
            for _ in 0..1 + rng.below(3) {
                let kind = Kind::OldInfarct {
                    cbf: rng.uniform(0.1, 0.25),
                    cbv: rng.uniform(0.2, 0.45),
                    ct_hu: rng.uniform(8.0, 14.0),
                };
                if let Some(c) = point(rng) {
                    regions.push(Confounder::new(rng, kind, c, (5.0, 18.0)));
                }
            }
        }
        if rng.chance(rate) {
            let kind = Kind::DelayedArrival {
                extra_tmax_s: rng.uniform(3.0, 8.0),
                cbf: rng.uniform(0.85, 1.0),
                cbv: rng.uniform(1.0, 1.2),
            };
            if let Some(c) = point(rng) {
                regions.push(Confounder::new(rng, kind, c, (25.0, 55.0)));
            }
        }
        if rng.chance(rate * 0.5) {
            let kind = Kind::Hyperperfusion {
                cbf: rng.uniform(1.5, 2.5),
                cbv: rng.uniform(1.2, 1.6),
            };
            if let Some(c) = point(rng) {
                regions.push(Confounder::new(rng, kind, c, (8.0, 25.0)));
            }
        }
        let (white_cbf, white_cbv) = if rng.chance(rate) {
            (rng.uniform(0.6, 0.8), rng.uniform(0.75, 0.9))
        } else {
            (1.0, 1.0)
        };
        Confounders {
            regions,
            white_cbf,
            white_cbv,
        }
    }

    /// Healthy-or-lesioned perfusion `h` and CT `hu` at `p` with the confounders applied.
    pub(crate) fn apply(&self, p: [f64; 3], a: &AnatomySample, h: Haemo, hu: f64) -> (Haemo, f64) {
        let mut h = h;
        let mut hu = hu;
        if a.tissue == super::anatomy::Tissue::White && self.white_cbf != 1.0 {
            h.cbf_ml_100g_min *= self.white_cbf;
            h.cbv_ml_100g *= self.white_cbv;
        }
        if !a.tissue.is_parenchyma() {
            return (h, hu);
        }
        for c in &self.regions {
            // Delayed arrival spreads over the whole region softly; the others are sharp.
            let reach = if matches!(c.kind, Kind::DelayedArrival { .. }) {
                1.3
            } else {
                1.0
            };
            if c.region.surely_beyond(p, reach, c.radius_mm) {
                continue;
            }
            let q = c.region.q(p);
            if q >= reach {
                continue;
            }
            match c.kind {
                Kind::OldInfarct { cbf, cbv, ct_hu } => {
                    h.cbf_ml_100g_min *= cbf;
                    h.cbv_ml_100g *= cbv;
                    hu = ct_hu;
                }
                Kind::DelayedArrival {
                    extra_tmax_s,
                    cbf,
                    cbv,
                } => {
                    let w = ((reach - q) / 0.5).clamp(0.0, 1.0);
                    h.tmax_s += extra_tmax_s * w;
                    h.cbf_ml_100g_min *= 1.0 - (1.0 - cbf) * w;
                    h.cbv_ml_100g *= 1.0 + (cbv - 1.0) * w;
                }
                Kind::Hyperperfusion { cbf, cbv } => {
                    h.cbf_ml_100g_min *= cbf;
                    h.cbv_ml_100g *= cbv;
                    h.tmax_s = (h.tmax_s - 0.3).max(0.0);
                }
            }
        }
        (h, hu)
    }

    /// Number of confounding regions (for tests).
    #[cfg(test)]
    pub(crate) fn n_regions(&self) -> usize {
        self.regions.len()
    }
}

impl Confounder {
    fn new(rng: &mut Rng, kind: Kind, centre_mm: [f64; 3], radius_mm: (f64, f64)) -> Confounder {
        let radius_mm = rng.uniform(radius_mm.0, radius_mm.1);
        Confounder {
            kind,
            region: Blob::random(rng, centre_mm, radius_mm, 0.25, (10.0, 40.0)),
            radius_mm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anatomy::{Hemisphere, Territory, Tissue};

    fn grey() -> AnatomySample {
        AnatomySample {
            tissue: Tissue::Grey,
            intracranial: true,
            hemisphere: Hemisphere::Left,
            territory: Territory::Mca,
            leukoaraiosis: false,
        }
    }

    #[test]
    fn an_old_infarct_is_dark_on_cbf_with_normal_timing() {
        let mut rng = Rng::new(4);
        let c = Confounder::new(
            &mut rng,
            Kind::OldInfarct {
                cbf: 0.2,
                cbv: 0.3,
                ct_hu: 10.0,
            },
            [0.0; 3],
            (10.0, 10.0),
        );
        let set = Confounders {
            regions: vec![c],
            white_cbf: 1.0,
            white_cbv: 1.0,
        };
        let h = Haemo {
            cbf_ml_100g_min: 50.0,
            cbv_ml_100g: 4.0,
            tmax_s: 0.5,
        };
        let (inside, hu) = set.apply([0.0; 3], &grey(), h, 38.0);
        assert!((inside.cbf_ml_100g_min - 10.0).abs() < 1e-9);
        assert_eq!(inside.tmax_s, 0.5);
        assert_eq!(hu, 10.0);
        let (outside, hu) = set.apply([80.0, 0.0, 0.0], &grey(), h, 38.0);
        assert_eq!(outside, h);
        assert_eq!(hu, 38.0);
    }

    #[test]
    fn rate_zero_draws_nothing_and_rate_one_draws_every_kind() {
        let none = Confounders::random(&mut Rng::new(1), 0.0, |_| Some([0.0; 3]));
        assert_eq!(none.n_regions(), 0);
        assert_eq!(none.white_cbf, 1.0);
        let mut kinds = [false; 3];
        for seed in 0..20 {
            let all = Confounders::random(&mut Rng::new(seed), 1.0, |_| Some([0.0; 3]));
            assert!(all.white_cbf < 1.0);
            for c in &all.regions {
                kinds[match c.kind {
                    Kind::OldInfarct { .. } => 0,
                    Kind::DelayedArrival { .. } => 1,
                    Kind::Hyperperfusion { .. } => 2,
                }] = true;
            }
        }
        assert_eq!(kinds, [true; 3]);
    }
}
