//! The acute ischaemic lesion of one patient: a hypoperfused region (Tmax > 6 s) in one
//! arterial territory of one hemisphere, containing an ischaemic core, and the follow-up
//! DWI lesion that serves as ground truth (the core with realistic disagreement).
//!
//! Shapes are irregular ellipsoids in head coordinates: a point is inside when
//! `‖M (p − c)‖ < 1 + a · f(p)` with a random linear map `M`, a smooth random field `f`
//! and roughness `a`. Everything is clipped to the territory and hemisphere and to brain
//! parenchyma (CSF and vessels never infarct).

use super::anatomy::{AnatomySample, Hemisphere, Territory};
use super::field::SmoothField;
use super::perfusion::{Haemo, Physiology};
use strokeseg_shared::rng::Rng;

/// Tmax threshold of critically hypoperfused tissue, s (DEFUSE 3; Albers 2018).
pub const PENUMBRA_TMAX_S: f64 = 6.0;
/// Relative CBF below which tissue counts as ischaemic core (rCBF < 30 %; Campbell 2011).
pub const CORE_RELATIVE_CBF: f64 = 0.30;

/// An irregular ellipsoid.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    centre_mm: [f64; 3],
    /// Rows map `p − c` to unit-sphere coordinates.
    inv_axes: [[f64; 3]; 3],
    roughness: f64,
    field: SmoothField,
}

impl Blob {
    pub(crate) fn random(
        rng: &mut Rng,
        centre_mm: [f64; 3],
        radius_mm: f64,
        roughness: f64,
        wavelength_mm: (f64, f64),
    ) -> Blob {
        // Random orthonormal frame (Gram–Schmidt on two random vectors) and axis ratios.
        let a = rng.unit_vector();
        let mut b = rng.unit_vector();
        let dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
        b = [b[0] - dot * a[0], b[1] - dot * a[1], b[2] - dot * a[2]];
        let nb = libm::sqrt(b[0] * b[0] + b[1] * b[1] + b[2] * b[2]).max(1e-9);
        b = b.map(|v| v / nb);
        let c = [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ];
        let r1 = rng.uniform(0.75, 1.3);
        let r2 = rng.uniform(0.75, 1.3);
        // Keep the volume of a sphere of `radius_mm`.
        let r3 = 1.0 / (r1 * r2);
        let radii = [r1, r2, r3].map(|r| r * radius_mm);
        let inv_axes = [
            a.map(|v| v / radii[0]),
            b.map(|v| v / radii[1]),
            c.map(|v| v / radii[2]),
        ];
        Blob {
            centre_mm,
            inv_axes,
            roughness,
            field: SmoothField::new(rng, 7, wavelength_mm),
        }
    }

    /// Normalised radius: < 1 inside.
    pub(crate) fn q(&self, p: [f64; 3]) -> f64 {
        let d = [
            p[0] - self.centre_mm[0],
            p[1] - self.centre_mm[1],
            p[2] - self.centre_mm[2],
        ];
        let u: f64 = self
            .inv_axes
            .iter()
            .map(|row| {
                let v = row[0] * d[0] + row[1] * d[1] + row[2] * d[2];
                v * v
            })
            .sum();
        let boundary = (1.0 + self.roughness * self.field.at(p).clamp(-2.5, 2.5)).max(0.3);
        libm::sqrt(u) / boundary
    }

    /// A cheap bound that spares evaluating the field far away: `true` only for points
    /// with `q > q_max` (the longest semi-axis is at most 1/0.75² times the radius and
    /// the boundary moves out by at most `1 + 2.5 · roughness`).
    pub(crate) fn surely_beyond(&self, p: [f64; 3], q_max: f64, radius_mm: f64) -> bool {
        let d2: f64 = (0..3)
            .map(|i| (p[i] - self.centre_mm[i]) * (p[i] - self.centre_mm[i]))
            .sum();
        let reach = q_max * radius_mm * (1.0 / 0.5625) * (1.0 + 2.5 * self.roughness);
        d2 > reach * reach
    }
}

/// A sphere added to or cut from the DWI lesion.
#[derive(Debug, Clone, Copy)]
struct Sphere {
    centre_mm: [f64; 3],
    radius_mm: f64,
}

impl Sphere {
    fn contains(&self, p: [f64; 3]) -> bool {
        let d2: f64 = (0..3)
            .map(|i| (p[i] - self.centre_mm[i]) * (p[i] - self.centre_mm[i]))
            .sum();
        d2 < self.radius_mm * self.radius_mm
    }
}

/// Lesion zone of a point or voxel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum Zone {
    /// Healthy (possibly mildly oligaemic, Tmax < 6 s).
    Healthy = 0,
    /// Critically hypoperfused but salvageable: Tmax > 6 s, outside the core.
    Penumbra = 1,
    /// Ischaemic core.
    Core = 2,
}

/// The lesion of one patient.
#[derive(Debug, Clone)]
pub(crate) struct Lesion {
    /// Hemisphere of the lesion.
    pub hemisphere: Hemisphere,
    /// Territory of the lesion.
    pub territory: Territory,
    penumbra: Blob,
    penumbra_radius_mm: f64,
    core: Blob,
    core_radius_mm: f64,
    dwi: Blob,
    dwi_growth: f64,
    satellites: Vec<Sphere>,
    holes: Vec<Sphere>,
    /// Normalised radius out to which mild oligaemia (Tmax rising towards 6 s) extends.
    oligaemia_q: f64,
    /// Tmax in the centre of the hypoperfused region, s (8–14).
    tmax_peak_s: f64,
    /// Extra Tmax inside the core, s (1–6).
    core_extra_tmax_s: f64,
    /// CBF in the depth of the penumbra relative to healthy (0.45–0.75).
    penumbra_min_cbf: f64,
    /// CBV in the depth of the penumbra relative to healthy (1.0–1.3: vasodilation).
    penumbra_cbv_factor: f64,
    /// Core CBF relative to the healthy reference (0.03–0.15, so that the blurred,
    /// noisy core stays below rCBF 30 %).
    core_rcbf: f64,
    /// Core CBV relative to the healthy reference (0.3–0.6).
    core_rcbv: f64,
    /// Early ischaemic hypoattenuation of the core on CT, HU (−1 to −5).
    pub core_ct_offset_hu: f64,
}

/// Median of the ISLES-like ischaemic core volume over the whole brain (before clipping to
/// territory and slab), mL: with the slab coverage it gives a per-case OT median near ISLES
/// 2018's 15 mL.
const ISLES_CORE_MEDIAN_ML: f64 = 34.0;
/// Spread of the ISLES-like core volume, log-normal σ (ISLES 2018's per-case IQR 5.7–45 mL).
const ISLES_CORE_SIGMA_LN: f64 = 1.1;

/// Which ranges a lesion is drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LesionRanges {
    /// The classic generator: hypoperfused 20–500 mL, core 5–100 % of it, dark cores.
    Classic,
    /// ISLES-like core volumes (log-normal, median [`ISLES_CORE_MEDIAN_ML`]) scaled by
    /// `scale` (satellite lesions of a multifocal stroke are smaller), and wider
    /// physiology: core rCBF 3–30 %, rCBV 30–80 %, penumbra CBF 35–85 %, Tmax peak 7–16 s.
    Isles { scale: f64 },
}

/// What the lesion does at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LesionEffect {
    pub zone: Zone,
    /// Inside the follow-up DWI lesion (the ground truth).
    pub dwi: bool,
}

impl Lesion {
    /// A random lesion centred at `centre_mm` (a parenchyma point of `territory` in
    /// `hemisphere`).
    pub(crate) fn random(
        rng: &mut Rng,
        centre_mm: [f64; 3],
        hemisphere: Hemisphere,
        territory: Territory,
        ranges: LesionRanges,
    ) -> Lesion {
        let radius_of = |ml: f64| libm::cbrt(3.0 * ml * 1000.0 / (4.0 * core::f64::consts::PI));
        let (penumbra_radius_mm, core_radius_mm) = match ranges {
            LesionRanges::Classic => {
                // Hypoperfused volume 20–500 mL (before clipping to the territory and the slab).
                let penumbra_ml = rng.log_uniform(20.0, 500.0);
                let penumbra_radius_mm = radius_of(penumbra_ml);
                // Core as a fraction of the hypoperfused volume (mismatch ratio 1 to 20).
                let core_fraction = rng.log_uniform(0.05, 1.0);
                (
                    penumbra_radius_mm,
                    penumbra_radius_mm * libm::cbrt(core_fraction),
                )
            }
            LesionRanges::Isles { scale } => {
                let core_ml =
                    (ISLES_CORE_MEDIAN_ML * scale * libm::exp(ISLES_CORE_SIGMA_LN * rng.normal()))
                        .clamp(0.5, 400.0);
                // Mismatch ratio 1 to 10; the hypoperfused region stays below 700 mL.
                let penumbra_ml = (core_ml / rng.log_uniform(0.1, 1.0))
                    .min(700.0)
                    .max(core_ml);
                (radius_of(penumbra_ml), radius_of(core_ml))
            }
        };
        let room = penumbra_radius_mm - core_radius_mm;
        let dir = rng.unit_vector();
        let off = rng.uniform(0.0, 0.5) * room;
        let core_centre = [
            centre_mm[0] + dir[0] * off,
            centre_mm[1] + dir[1] * off,
            centre_mm[2] + dir[2] * off,
        ];
        let penumbra = Blob::random(rng, centre_mm, penumbra_radius_mm, 0.25, (25.0, 60.0));
        let core = Blob::random(rng, core_centre, core_radius_mm, 0.2, (12.0, 35.0));
        // DWI: the core's shape with its own boundary perturbation and growth/shrinkage.
        let mut dwi = core.clone();
        dwi.field = SmoothField::new(rng, 7, (10.0, 30.0));
        dwi.roughness = rng.uniform(0.15, 0.35);
        let dwi_growth = if rng.chance(0.1) {
            rng.uniform(0.6, 0.9) // early reperfusion: the core was overestimated
        } else {
            rng.uniform(0.9, 1.5) // infarct growth into the penumbra
        };
        let mut satellites = Vec::new();
        for _ in 0..rng.weighted(&[0.55, 0.3, 0.15]) {
            let d = rng.unit_vector();
            let r = rng.uniform(0.5, 1.0) * penumbra_radius_mm;
            satellites.push(Sphere {
                centre_mm: [
                    centre_mm[0] + d[0] * r,
                    centre_mm[1] + d[1] * r,
                    centre_mm[2] + d[2] * r,
                ],
                radius_mm: rng.uniform(2.5, 7.0),
            });
        }
        let mut holes = Vec::new();
        if rng.chance(0.3) {
            let d = rng.unit_vector();
            let r = rng.uniform(0.4, 1.0) * core_radius_mm;
            holes.push(Sphere {
                centre_mm: [
                    core_centre[0] + d[0] * r,
                    core_centre[1] + d[1] * r,
                    core_centre[2] + d[2] * r,
                ],
                radius_mm: rng.uniform(0.2, 0.45) * core_radius_mm,
            });
        }
        let classic = ranges == LesionRanges::Classic;
        let (tmax_peak, core_extra, pen_cbf, pen_cbv, core_rcbf, core_rcbv) = if classic {
            (
                (8.0, 14.0),
                (1.0, 6.0),
                (0.45, 0.75),
                (1.0, 1.3),
                (0.03, 0.15),
                (0.3, 0.6),
            )
        } else {
            (
                (7.0, 16.0),
                (0.0, 6.0),
                (0.35, 0.85),
                (0.9, 1.35),
                (0.03, 0.30),
                (0.3, 0.8),
            )
        };
        Lesion {
            hemisphere,
            territory,
            penumbra,
            penumbra_radius_mm,
            core,
            core_radius_mm,
            dwi,
            dwi_growth,
            satellites,
            holes,
            oligaemia_q: rng.uniform(1.2, 1.5),
            tmax_peak_s: rng.uniform(tmax_peak.0, tmax_peak.1),
            core_extra_tmax_s: rng.uniform(core_extra.0, core_extra.1),
            penumbra_min_cbf: rng.uniform(pen_cbf.0, pen_cbf.1),
            penumbra_cbv_factor: rng.uniform(pen_cbv.0, pen_cbv.1),
            core_rcbf: rng.uniform(core_rcbf.0, core_rcbf.1),
            core_rcbv: rng.uniform(core_rcbv.0, core_rcbv.1),
            core_ct_offset_hu: rng.uniform(-5.0, -1.0),
        }
    }

    /// The zone and DWI membership at `p`, given the anatomy there.
    pub(crate) fn effect(&self, p: [f64; 3], a: &AnatomySample) -> (LesionEffect, f64, f64) {
        let none = (
            LesionEffect {
                zone: Zone::Healthy,
                dwi: false,
            },
            f64::INFINITY,
            f64::INFINITY,
        );
        if !a.intracranial || a.hemisphere != self.hemisphere || a.territory != self.territory {
            return none;
        }
        if self
            .penumbra
            .surely_beyond(p, self.oligaemia_q, self.penumbra_radius_mm)
        {
            return none;
        }
        let q_pen = self.penumbra.q(p);
        if q_pen >= self.oligaemia_q {
            return none;
        }
        let parenchyma = a.tissue.is_parenchyma();
        let q_core = if q_pen < 1.0 && !self.core.surely_beyond(p, 1.0, self.core_radius_mm) {
            self.core.q(p)
        } else {
            f64::INFINITY
        };
        let zone = if q_pen >= 1.0 {
            Zone::Healthy
        } else if q_core < 1.0 && parenchyma {
            Zone::Core
        } else {
            Zone::Penumbra
        };
        let dwi = parenchyma && {
            let in_main = !self
                .dwi
                .surely_beyond(p, self.dwi_growth, self.core_radius_mm)
                && self.dwi.q(p) < self.dwi_growth;
            (in_main || self.satellites.iter().any(|s| s.contains(p)))
                && !self.holes.iter().any(|h| h.contains(p))
        };
        (LesionEffect { zone, dwi }, q_pen, q_core)
    }

    /// Modifies healthy perfusion `h` at a point with penumbra radius `q_pen` and core
    /// radius `q_core` (from [`Lesion::effect`]).
    pub(crate) fn modulate(&self, h: Haemo, q_pen: f64, q_core: f64, phys: &Physiology) -> Haemo {
        if !q_pen.is_finite() || h.cbf_ml_100g_min <= 0.0 {
            return h;
        }
        if q_pen >= 1.0 {
            // Benign oligaemia: Tmax rises towards (not past) 6 s, flow barely drops.
            let s = ((self.oligaemia_q - q_pen) / (self.oligaemia_q - 1.0)).clamp(0.0, 1.0);
            let tmax_s = h.tmax_s + (PENUMBRA_TMAX_S - 0.2 - h.tmax_s).max(0.0) * s * s;
            return Haemo {
                cbf_ml_100g_min: h.cbf_ml_100g_min * (1.0 - 0.1 * s),
                tmax_s,
                ..h
            };
        }
        // Inside: depth 0 at the edge, 1 from 60 % of the radius inwards.
        let depth = ((1.0 - q_pen) / 0.6).clamp(0.0, 1.0);
        let ramp = depth;
        let mut out = Haemo {
            cbf_ml_100g_min: h.cbf_ml_100g_min * (1.0 - (1.0 - self.penumbra_min_cbf) * depth),
            cbv_ml_100g: h.cbv_ml_100g * (1.0 + (self.penumbra_cbv_factor - 1.0) * depth),
            tmax_s: PENUMBRA_TMAX_S + 0.3 + (self.tmax_peak_s - PENUMBRA_TMAX_S - 0.3) * ramp,
        };
        if q_core < 1.0 {
            // Core: CBF and CBV fall to absolute levels tied to the healthy reference
            // over the outer 8 % of the core radius; Tmax rises further.
            let w = ((1.0 - q_core) / 0.08).clamp(0.0, 1.0);
            let core_cbf =
                (self.core_rcbf * phys.reference_cbf_ml_100g_min()).min(0.6 * h.cbf_ml_100g_min);
            let core_cbv = (self.core_rcbv * phys.reference_cbv_ml_100g()).min(0.7 * h.cbv_ml_100g);
            out.cbf_ml_100g_min += (core_cbf - out.cbf_ml_100g_min) * w;
            out.cbv_ml_100g += (core_cbv - out.cbv_ml_100g) * w;
            out.tmax_s += self.core_extra_tmax_s * w;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anatomy::Tissue;

    fn sample(tissue: Tissue) -> AnatomySample {
        AnatomySample {
            tissue,
            intracranial: true,
            hemisphere: Hemisphere::Left,
            territory: Territory::Mca,
            leukoaraiosis: false,
        }
    }

    #[test]
    fn centre_is_core_and_far_is_healthy() {
        let mut rng = Rng::new(5);
        let phys = Physiology::random(&mut rng);
        let c = [-40.0, 0.0, 10.0];
        let l = Lesion::random(
            &mut rng,
            c,
            Hemisphere::Left,
            Territory::Mca,
            LesionRanges::Classic,
        );
        let a = sample(Tissue::Grey);
        let (e, q_pen, q_core) = l.effect(l.core.centre_mm, &a);
        assert_eq!(e.zone, Zone::Core);
        let h = phys.healthy(&a, c);
        let m = l.modulate(h, q_pen, q_core, &phys);
        assert!(m.tmax_s > PENUMBRA_TMAX_S);
        assert!(m.cbf_ml_100g_min < CORE_RELATIVE_CBF * phys.reference_cbf_ml_100g_min());
        let far = [60.0, 0.0, 10.0];
        assert_eq!(l.effect(far, &a).0.zone, Zone::Healthy);
        // Wrong hemisphere or territory: untouched.
        let right = AnatomySample {
            hemisphere: Hemisphere::Right,
            ..a
        };
        assert_eq!(l.effect(l.core.centre_mm, &right).0.zone, Zone::Healthy);
        // CSF is never core.
        assert_ne!(
            l.effect(l.core.centre_mm, &sample(Tissue::Csf)).0.zone,
            Zone::Core
        );
    }
}
