//! The 3D head model of one synthetic patient: scalp, skull, CSF spaces, cortex with
//! sulci, white matter, deep grey nuclei, ventricles, posterior fossa, hemispheres and
//! vascular territories, evaluated point by point in head coordinates.
//!
//! Head coordinates, in millimetres: `x` towards the patient's right, `y` anterior, `z`
//! superior (RAS), origin near the centre of the brain at the level of the basal ganglia
//! (roughly the foramen of Monro). The scanner frame differs by a rotation and a
//! translation (see [`super::scanner`]); anatomy never sees voxel indices.

use super::field::SmoothField;
use strokeseg_shared::rng::{Rng, splitmix64};

/// Tissue class of a point (or the majority class of a voxel).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum Tissue {
    /// Outside the head (−1000 HU).
    Air = 0,
    /// Scalp and soft tissue outside the skull.
    Scalp = 1,
    /// Cortical bone of the skull tables (≈ 1100–1600 HU).
    Bone = 2,
    /// Cancellous bone between the tables (≈ 500–900 HU).
    Diploe = 3,
    /// Cerebrospinal fluid: ventricles, cisterns, sulci, subarachnoid space, fissures.
    Csf = 4,
    /// Cortical grey matter.
    Grey = 5,
    /// White matter (including corpus callosum, internal capsule, brainstem).
    White = 6,
    /// Deep grey nuclei: caudate, lentiform nucleus, thalamus.
    DeepGrey = 7,
    /// Cerebellum (mixed grey and white matter at CT resolution).
    Cerebellum = 8,
    /// Large vessels: dural sinuses, arteries in the Sylvian fissure and sulci.
    Vessel = 9,
    /// Physiological calcification (pineal gland, choroid plexus).
    Calcification = 10,
}

impl Tissue {
    /// Number of classes.
    pub const COUNT: usize = 11;

    /// Every class, in code order (`ALL[t as usize] == t`).
    pub const ALL: [Tissue; Tissue::COUNT] = [
        Tissue::Air,
        Tissue::Scalp,
        Tissue::Bone,
        Tissue::Diploe,
        Tissue::Csf,
        Tissue::Grey,
        Tissue::White,
        Tissue::DeepGrey,
        Tissue::Cerebellum,
        Tissue::Vessel,
        Tissue::Calcification,
    ];

    /// The class with code `code`, if any.
    pub fn from_code(code: u8) -> Option<Tissue> {
        Tissue::ALL.get(usize::from(code)).copied()
    }

    /// Brain parenchyma: the tissue a stroke can infarct.
    pub const fn is_parenchyma(self) -> bool {
        matches!(
            self,
            Tissue::Grey | Tissue::White | Tissue::DeepGrey | Tissue::Cerebellum
        )
    }
}

/// Cerebral hemisphere (by the sign of head `x`: the midline plane `x = 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Hemisphere {
    /// Patient's left (`x < 0`).
    Left,
    /// Patient's right (`x ≥ 0`).
    Right,
}

impl Hemisphere {
    /// `left` or `right`.
    pub const fn name(self) -> &'static str {
        match self {
            Hemisphere::Left => "left",
            Hemisphere::Right => "right",
        }
    }

    /// The other hemisphere.
    pub const fn opposite(self) -> Hemisphere {
        match self {
            Hemisphere::Left => Hemisphere::Right,
            Hemisphere::Right => Hemisphere::Left,
        }
    }
}

/// Arterial territory of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Territory {
    /// Anterior cerebral artery: medial frontal and parietal lobes, parasagittal convexity.
    Aca,
    /// Middle cerebral artery: lateral convexity, insula, basal ganglia, internal capsule.
    Mca,
    /// Posterior cerebral artery: occipital lobe, inferior temporal lobe, thalamus.
    Pca,
    /// Vertebrobasilar: brainstem and cerebellum (never lesioned by the phantom).
    Posterior,
}

impl Territory {
    /// `ACA`, `MCA`, `PCA` or `VB`.
    pub const fn name(self) -> &'static str {
        match self {
            Territory::Aca => "ACA",
            Territory::Mca => "MCA",
            Territory::Pca => "PCA",
            Territory::Posterior => "VB",
        }
    }
}

/// What the head model says about one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AnatomySample {
    /// Tissue class.
    pub tissue: Tissue,
    /// Inside the inner table of the skull (the perfusion maps' skull-stripped mask).
    pub intracranial: bool,
    /// Hemisphere.
    pub hemisphere: Hemisphere,
    /// Arterial territory (meaningful inside the skull).
    pub territory: Territory,
    /// Periventricular white-matter hypoattenuation (leukoaraiosis).
    pub leukoaraiosis: bool,
}

/// An axis-aligned ellipsoid in head coordinates.
#[derive(Debug, Clone, Copy)]
struct Ellipsoid {
    centre_mm: [f64; 3],
    semi_mm: [f64; 3],
}

impl Ellipsoid {
    fn contains(&self, p: [f64; 3]) -> bool {
        self.norm_sq(p) < 1.0
    }

    fn norm_sq(&self, p: [f64; 3]) -> f64 {
        (0..3)
            .map(|i| {
                let d = (p[i] - self.centre_mm[i]) / self.semi_mm[i];
                d * d
            })
            .sum()
    }

    fn inflated(&self, by_mm: f64) -> Ellipsoid {
        Ellipsoid {
            centre_mm: self.centre_mm,
            semi_mm: self.semi_mm.map(|s| s + by_mm),
        }
    }
}

/// Deep grey nucleus kinds (their territory differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nucleus {
    Caudate,
    Lentiform,
    Thalamus,
}

/// One low-order harmonic of the brain outline.
#[derive(Debug, Clone, Copy)]
struct Harmonic {
    order: f64,
    amp: f64,
    phase: f64,
    per_mm_z: f64,
}

/// The 3D anatomy of one patient. All lengths in millimetres.
#[derive(Debug, Clone)]
pub(crate) struct Anatomy {
    /// Brain semi-axes: left–right, anterior–posterior, superior (above z = 0).
    brain_semi_mm: [f64; 3],
    /// Brain semi-axis below z = 0 (temporal lobes, cerebellum).
    brain_semi_inferior_mm: f64,
    /// Low-order bumps of the outline (relative radius change, together < 9 %).
    outline: [Harmonic; 4],
    /// CSF between brain and inner table (1–4 mm, wider with atrophy).
    subarachnoid_mm: f64,
    /// Mean skull thickness (4.5–7 mm, varying ±40 % over the head).
    skull_mm: f64,
    /// Scalp thickness (3.5–6.5 mm).
    scalp_mm: f64,
    /// Cortical ribbon thickness (2.5–3.5 mm).
    cortex_mm: f64,
    /// Cortical folding: sulci are the zero set of this field on the brain surface,
    /// extruded inwards (curvy lines on the surface, sheets perpendicular to it).
    folds: SmoothField,
    /// Typical |∇folds| along the surface, 1/mm: `|folds| / gradient` ≈ distance (mm)
    /// to the nearest sulcus.
    fold_gradient_per_mm: f64,
    /// Modulates sulcal depth along the surface.
    fold_depth: SmoothField,
    /// Mean sulcal depth, mm.
    sulcus_depth_mm: f64,
    /// CSF width inside a sulcus (1–3 mm, wider with atrophy).
    sulcus_width_mm: f64,
    /// In-plane angle of the Sylvian fissure, [left, right].
    sylvian_theta_rad: [f64; 2],
    /// Depth of the Sylvian fissure down to the insula.
    sylvian_depth_mm: f64,
    /// Width of the Sylvian fissure.
    sylvian_width_mm: f64,
    /// z range of the Sylvian fissure.
    sylvian_z_mm: (f64, f64),
    /// Half of the anterior–posterior length of the insular cortex.
    insula_half_length_mm: f64,
    /// Half width of the interhemispheric fissure.
    fissure_half_width_mm: f64,
    /// Top of the corpus callosum: the fissure ends here.
    callosum_top_mm: f64,
    /// Half length of the corpus callosum (anterior–posterior).
    callosum_half_length_mm: f64,
    /// Superior sagittal sinus: half width at the inner table and depth below it.
    sinus_half_width_mm: f64,
    sinus_depth_mm: f64,
    /// Lateral (body, frontal, atrial, occipital, temporal horns) and third ventricles.
    ventricles: Vec<Ellipsoid>,
    /// The lateral ventricles inflated: where leukoaraiosis can be.
    periventricular: Vec<Ellipsoid>,
    /// Caudate heads, lentiform nuclei, thalami.
    nuclei: Vec<(Ellipsoid, Nucleus)>,
    /// Pineal and choroid plexus calcifications (if any).
    calcifications: Vec<Ellipsoid>,
    brainstem: Ellipsoid,
    /// Basal cisterns around the midbrain.
    cisterns: Ellipsoid,
    fourth_ventricle: Ellipsoid,
    /// Tentorium: `z = z0 − slope · y`; the cerebellum lies below it posteriorly.
    tentorium_z0_mm: f64,
    tentorium_slope: f64,
    /// Severity of periventricular white-matter disease, 0–1 (grows with atrophy).
    leukoaraiosis_grade: f64,
    /// Patchiness of leukoaraiosis.
    leukoaraiosis_field: SmoothField,
    /// Wandering of the ACA/MCA and PCA/MCA borders.
    aca_border: SmoothField,
    pca_border: SmoothField,
    /// Seed of the sparse vessel pattern in sulci and the Sylvian fissures.
    vessel_hash_seed: u64,
    /// Skull thickness variation.
    skull_field: SmoothField,
    /// Squared radius beyond which every point is air (a quick reject), mm².
    reject_radius_sq_mm2: f64,
}

/// `true` with probability `p` for the cell `(a, b, c)`: a 3D-consistent sparse pattern.
pub(crate) fn cell_chance(seed: u64, a: i64, b: i64, c: i64, p: f64) -> bool {
    let h = splitmix64(seed ^ splitmix64(a as u64 ^ splitmix64(b as u64 ^ splitmix64(c as u64))));
    ((h >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
}

/// Relative skull thickness variation per unit of its smooth field.
const SKULL_VARIATION: f64 = 0.15;

fn wrap_angle(a: f64) -> f64 {
    let tau = core::f64::consts::TAU;
    let mut r = a - tau * libm::floor(a / tau);
    if r > core::f64::consts::PI {
        r -= tau;
    }
    r
}

impl Anatomy {
    /// A random head. `max_outer_semi_ap_mm` bounds the anterior–posterior half-length of
    /// the whole head (scalp included) so that it fits the field of view.
    pub(crate) fn random(rng: &mut Rng, max_outer_semi_ap_mm: f64) -> Anatomy {
        // Atrophy widens ventricles, sulci, fissures and the subarachnoid space together.
        let atrophy = rng.uniform(0.0, 1.0) * rng.uniform(0.0, 1.0);
        let subarachnoid_mm = rng.uniform(1.0, 2.5) + 1.5 * atrophy;
        let skull_mm = rng.uniform(4.5, 7.0);
        let skull_max_mm = skull_mm * (1.15 + 2.5 * SKULL_VARIATION);
        let scalp_mm = rng.uniform(3.5, 6.5);
        let outline = [2.0, 3.0, 4.0, 5.0].map(|order| Harmonic {
            order,
            amp: rng.uniform(0.0, 0.022) * 3.0 / order,
            phase: rng.uniform(0.0, core::f64::consts::TAU),
            per_mm_z: rng.uniform(-0.02, 0.02),
        });
        let outline_max: f64 = outline.iter().map(|h| h.amp).sum();
        let mut ax = rng.uniform(62.0, 71.0);
        let mut ay = rng.uniform(79.0, 89.0);
        let mut az = rng.uniform(68.0, 78.0);
        let mut az_inf = rng.uniform(55.0, 64.0);
        let shell_mm = subarachnoid_mm + skull_max_mm + scalp_mm;
        // Keep the whole head (the longest axis is anterior–posterior) inside the field
        // of view, whatever the pose.
        let fit = ((max_outer_semi_ap_mm - shell_mm) / (ay * (1.0 + outline_max))).min(1.0);
        if fit < 1.0 {
            ax *= fit;
            ay *= fit;
            az *= fit;
            az_inf *= fit;
        }
        let (sx, sy, sz) = (ax / 67.0, ay / 84.0, az / 75.0);
        let scale = libm::cbrt(sx * sy * sz);
        let vent = 0.85 + 0.9 * atrophy + rng.uniform(-0.1, 0.1);

        // Zero crossings of a field with wavelength λ are about 0.87 λ apart along a line
        // (Rice): 11–19 mm, the spacing of sulci on the surface.
        let folds = SmoothField::new(rng, 12, (13.0 * scale, 22.0 * scale));
        let fold_gradient_per_mm = folds.rms_gradient_per_mm() * libm::sqrt(2.0 / 3.0);
        let fold_depth = SmoothField::new(rng, 5, (30.0, 80.0));
        let sulcus_depth_mm = rng.uniform(9.0, 14.0) * scale;
        let sylvian_tilt = rng.uniform(0.0, 0.3);
        let asym = rng.uniform(-0.08, 0.08);
        let sylvian_theta_rad = [
            core::f64::consts::PI - sylvian_tilt - asym, // left: x < 0, slightly anterior
            sylvian_tilt + asym,                         // right
        ];

        let s = |c: [f64; 3]| [c[0] * sx, c[1] * sy, c[2] * sz];
        let e = |c: [f64; 3], r: [f64; 3]| Ellipsoid {
            centre_mm: s(c),
            semi_mm: s(r),
        };
        let vx = 1.0 + 0.35 * (vent - 1.0);
        let mut ventricles = Vec::new();
        for side in [-1.0, 1.0] {
            // body, frontal horn, atrium, occipital horn, temporal horn
            ventricles.push(e(
                [side * 6.5 * vx, -3.0, 16.0],
                [3.5 * vent, 22.0, 4.5 * vent.sqrt()],
            ));
            ventricles.push(e([side * 8.0 * vx, 20.0, 10.0], [4.0 * vent, 9.0, 7.0]));
            ventricles.push(e([side * 15.0 * vx, -25.0, 10.0], [5.0 * vent, 9.0, 6.0]));
            ventricles.push(e([side * 16.0 * vx, -36.0, 8.0], [2.5 * vent, 8.0, 3.5]));
            ventricles.push(e(
                [side * 28.0, -8.0, -16.0],
                [2.0 * vent, 10.0, 2.5 * vent],
            ));
        }
        ventricles.push(e([0.0, -6.0, 0.0], [1.2 + 1.3 * vent, 12.0, 7.0]));
        let leukoaraiosis_grade = (atrophy * 1.3 + rng.uniform(-0.2, 0.2)).clamp(0.0, 1.0);
        let periventricular = ventricles
            .iter()
            .take(10)
            .map(|v| v.inflated(4.0 + 8.0 * leukoaraiosis_grade))
            .collect();

        let mut nuclei = Vec::new();
        for side in [-1.0, 1.0] {
            nuclei.push((
                e([side * 11.5, 14.0, 11.0], [5.0, 9.0, 8.0]),
                Nucleus::Caudate,
            ));
            nuclei.push((
                e([side * 21.0, 2.0, 1.0], [6.0, 13.0, 9.0]),
                Nucleus::Lentiform,
            ));
            nuclei.push((
                e([side * 9.0, -13.0, 4.0], [8.0, 12.0, 8.0]),
                Nucleus::Thalamus,
            ));
        }

        let mut calcifications = Vec::new();
        if rng.chance(0.6) {
            calcifications.push(e([0.0, -24.0, 4.0], [2.5, 3.0, 2.5]));
        }
        if rng.chance(0.5) {
            for side in [-1.0, 1.0] {
                calcifications.push(e([side * 15.0 * vx, -25.0, 9.0], [2.0, 2.5, 2.0]));
            }
        }

        let reject_radius_mm = ax.max(ay).max(az) * (1.0 + outline_max) + shell_mm + 1.0;
        Anatomy {
            brain_semi_mm: [ax, ay, az],
            brain_semi_inferior_mm: az_inf,
            outline,
            subarachnoid_mm,
            skull_mm,
            scalp_mm,
            cortex_mm: rng.uniform(2.5, 3.5),
            folds,
            fold_gradient_per_mm,
            fold_depth,
            sulcus_depth_mm,
            sulcus_width_mm: 1.0 + 2.0 * atrophy,
            sylvian_theta_rad,
            sylvian_depth_mm: rng.uniform(0.40, 0.48) * ax,
            sylvian_width_mm: 1.5 + 3.0 * atrophy,
            sylvian_z_mm: (rng.uniform(-22.0, -15.0) * sz, rng.uniform(8.0, 16.0) * sz),
            insula_half_length_mm: rng.uniform(14.0, 20.0) * sy,
            fissure_half_width_mm: 0.6 + 1.2 * atrophy,
            callosum_top_mm: rng.uniform(23.0, 27.0) * sz,
            callosum_half_length_mm: rng.uniform(0.36, 0.44) * ay,
            sinus_half_width_mm: rng.uniform(3.0, 5.0),
            sinus_depth_mm: rng.uniform(5.0, 8.0),
            ventricles,
            periventricular,
            nuclei,
            calcifications,
            brainstem: e([0.0, -12.0, -30.0], [12.0, 13.0, 24.0]),
            cisterns: e([0.0, -6.0, -18.0], [13.0, 19.0, 8.0]),
            fourth_ventricle: e([0.0, -32.0, -36.0], [5.0, 3.5, 5.0]),
            tentorium_z0_mm: -36.0 * sz,
            tentorium_slope: rng.uniform(0.15, 0.25),
            leukoaraiosis_grade,
            leukoaraiosis_field: SmoothField::new(rng, 6, (8.0, 20.0)),
            aca_border: SmoothField::new(rng, 5, (30.0, 70.0)),
            pca_border: SmoothField::new(rng, 5, (30.0, 70.0)),
            vessel_hash_seed: rng.next_u64(),
            skull_field: SmoothField::new(rng, 6, (40.0, 120.0)),
            reject_radius_sq_mm2: reject_radius_mm * reject_radius_mm,
        }
    }

    /// Classifies the point `p` (head coordinates, mm).
    pub(crate) fn sample(&self, p: [f64; 3]) -> AnatomySample {
        let [x, y, z] = p;
        let hemisphere = if x >= 0.0 {
            Hemisphere::Right
        } else {
            Hemisphere::Left
        };
        let outside = |tissue| AnatomySample {
            tissue,
            intracranial: false,
            hemisphere,
            territory: Territory::Mca,
            leukoaraiosis: false,
        };
        if x * x + y * y + z * z > self.reject_radius_sq_mm2 {
            return outside(Tissue::Air);
        }
        let theta = libm::atan2(y, x);
        let m = 1.0
            + self
                .outline
                .iter()
                .map(|h| h.amp * libm::cos(h.order * theta + h.phase + h.per_mm_z * z))
                .sum::<f64>();
        let [ax, ay, az_sup] = self.brain_semi_mm;
        let az = if z >= 0.0 {
            az_sup
        } else {
            self.brain_semi_inferior_mm
        };
        let (ax, ay, az) = (ax * m, ay * m, az * m);
        let q = |offset_mm: f64| {
            let (u, v, w) = (
                x / (ax + offset_mm),
                y / (ay + offset_mm),
                z / (az + offset_mm),
            );
            libm::sqrt(u * u + v * v + w * w)
        };
        let inner_mm = self.subarachnoid_mm;
        let r3 = libm::sqrt(x * x + y * y + z * z);
        let q_inner = q(inner_mm);
        if q_inner >= 1.0 {
            // Skull thickness varies smoothly and is larger frontally and occipitally.
            let skull_mm = self.skull_mm
                * (1.0
                    + SKULL_VARIATION * self.skull_field.at(p).clamp(-2.5, 2.5)
                    + 0.15 * (y.abs() / r3.max(1e-9)));
            if q(inner_mm + skull_mm) < 1.0 {
                // Distance out from the inner table along the ray, as a fraction of the skull.
                let frac = r3 * (1.0 - 1.0 / q_inner) / skull_mm;
                let tissue = if (0.3..0.7).contains(&frac) && skull_mm > 5.0 {
                    Tissue::Diploe
                } else {
                    Tissue::Bone
                };
                return outside(tissue);
            }
            if q(inner_mm + skull_mm + self.scalp_mm) < 1.0 {
                return outside(Tissue::Scalp);
            }
            return outside(Tissue::Air);
        }

        let (tissue, nucleus, posterior, leuko) = self.brain_tissue(p, theta, q(0.0), q_inner, r3);
        AnatomySample {
            tissue,
            intracranial: true,
            hemisphere,
            territory: self.territory(p, nucleus, posterior),
            leukoaraiosis: leuko,
        }
    }

    /// Tissue inside the inner table: returns the tissue, the deep nucleus (if any), whether
    /// the point is in the posterior fossa or brainstem, and leukoaraiosis.
    fn brain_tissue(
        &self,
        p: [f64; 3],
        theta: f64,
        q_brain: f64,
        q_inner: f64,
        r3: f64,
    ) -> (Tissue, Option<Nucleus>, bool, bool) {
        let [x, y, z] = p;
        let plain = |t| (t, None, false, false);
        // Depth below the brain surface and below the inner table, along the ray from
        // the centre (exact for a sphere, close for these ellipsoids).
        let below_inner_mm = r3 * (1.0 / q_inner - 1.0);
        let in_sinus = |below_mm: f64| {
            below_mm < self.sinus_depth_mm
                && x.abs() < self.sinus_half_width_mm * (1.0 - below_mm / self.sinus_depth_mm)
                && z > -10.0
        };
        if q_brain >= 1.0 {
            if in_sinus(below_inner_mm) {
                return plain(Tissue::Vessel);
            }
            return plain(Tissue::Csf);
        }
        let depth_mm = r3 * (1.0 / q_brain - 1.0);

        // Posterior fossa: below the tentorium, behind the brainstem.
        let z_tent = self.tentorium_z0_mm - self.tentorium_slope * y;
        let behind = y < -0.1 * self.brain_semi_mm[1];
        if behind && (z - z_tent).abs() < 0.7 {
            return (Tissue::Csf, None, true, false);
        }
        if self.brainstem.contains(p) {
            return (Tissue::White, None, true, false);
        }
        if behind && z < z_tent {
            // Fourth ventricle and the CSF film over the cerebellar surface.
            let t = if self.fourth_ventricle.contains(p) || depth_mm < 0.8 {
                Tissue::Csf
            } else {
                Tissue::Cerebellum
            };
            return (t, None, true, false);
        }
        if self.cisterns.contains(p) {
            return plain(Tissue::Csf);
        }
        if self.calcifications.iter().any(|c| c.contains(p)) {
            return plain(Tissue::Calcification);
        }
        if self.ventricles.iter().any(|v| v.contains(p)) {
            return plain(Tissue::Csf);
        }

        // Interhemispheric fissure down to the corpus callosum, with medial cortex.
        let callosal = y.abs() < self.callosum_half_length_mm && z < self.callosum_top_mm;
        if !callosal {
            if x.abs() < self.fissure_half_width_mm {
                if in_sinus(depth_mm + self.subarachnoid_mm) {
                    return plain(Tissue::Vessel);
                }
                return plain(Tissue::Csf);
            }
            if x.abs() < self.fissure_half_width_mm + self.cortex_mm {
                return plain(Tissue::Grey);
            }
        }

        let r_xy = libm::sqrt(x * x + y * y);
        // Sylvian fissure and insula.
        let side = usize::from(x >= 0.0);
        let (z_lo, z_hi) = self.sylvian_z_mm;
        if z > z_lo && z < z_hi {
            let taper = ((z - z_lo).min(z_hi - z) / 6.0).min(1.0);
            let reach_mm = self.sylvian_depth_mm * taper;
            let lateral_mm = wrap_angle(theta - self.sylvian_theta_rad[side]).abs() * r_xy;
            let half_w = 0.5 * self.sylvian_width_mm;
            if depth_mm < reach_mm {
                if lateral_mm < half_w {
                    let cell = |v: f64| libm::floor(v / 4.0) as i64;
                    if cell_chance(
                        self.vessel_hash_seed,
                        1000 + side as i64,
                        cell(z),
                        cell(depth_mm),
                        0.3,
                    ) {
                        return plain(Tissue::Vessel);
                    }
                    return plain(Tissue::Csf);
                }
                if lateral_mm < half_w + self.cortex_mm {
                    return plain(Tissue::Grey);
                }
            } else if depth_mm < reach_mm + self.cortex_mm
                && lateral_mm < self.insula_half_length_mm
            {
                return plain(Tissue::Grey);
            }
        }

        for (n, kind) in &self.nuclei {
            if n.contains(p) {
                return (Tissue::DeepGrey, Some(*kind), false, false);
            }
        }

        // Cortical sulci: near the zero set of the folding field at the surface point
        // on the ray through p (the ray meets the brain surface at p / q_brain).
        let half_w = 0.5 * self.sulcus_width_mm;
        if depth_mm < 1.8 * self.sulcus_depth_mm + self.cortex_mm {
            let surface = [x / q_brain, y / q_brain, z / q_brain];
            let lateral_mm = self.folds.at(surface).abs() / self.fold_gradient_per_mm;
            if lateral_mm < half_w + self.cortex_mm {
                let reach_mm =
                    self.sulcus_depth_mm * (1.0 + 0.35 * self.fold_depth.at(surface)).max(0.3);
                if depth_mm < reach_mm && lateral_mm < half_w {
                    let cell = |v: f64| libm::floor(v / 5.0) as i64;
                    let (cx, cy) = (cell(surface[0]), cell(surface[1]));
                    if cell_chance(
                        self.vessel_hash_seed,
                        cx * 7919 + cy,
                        cell(surface[2]),
                        cell(depth_mm),
                        0.05,
                    ) {
                        return plain(Tissue::Vessel);
                    }
                    return plain(Tissue::Csf);
                }
                if depth_mm < reach_mm + self.cortex_mm {
                    return plain(Tissue::Grey);
                }
            }
        }
        if depth_mm < self.cortex_mm {
            return plain(Tissue::Grey);
        }
        let leuko = self.leukoaraiosis_grade > 0.05
            && self.periventricular.iter().any(|v| v.contains(p))
            && self.leukoaraiosis_field.at(p) > 1.2 - 2.0 * self.leukoaraiosis_grade;
        (Tissue::White, None, false, leuko)
    }

    /// The arterial territory of an intracranial point.
    fn territory(&self, p: [f64; 3], nucleus: Option<Nucleus>, posterior: bool) -> Territory {
        if posterior {
            return Territory::Posterior;
        }
        match nucleus {
            Some(Nucleus::Thalamus) => return Territory::Pca,
            Some(Nucleus::Caudate | Nucleus::Lentiform) => return Territory::Mca,
            None => {}
        }
        let [ax, ay, az] = self.brain_semi_mm;
        let [x, y, z] = p;
        let (u, v, zn) = (x.abs() / ax, y / ay, z / az);
        let v_pca =
            -0.58 + 0.26 * ((8.0 - z) / 30.0).clamp(0.0, 1.0) + 0.06 * self.pca_border.at(p);
        if v < v_pca {
            return Territory::Pca;
        }
        let wobble = 0.05 * self.aca_border.at(p);
        let aca = if z > -6.0 {
            u < 0.25 + 0.22 * zn.clamp(0.0, 1.0) + wobble && v > -0.55 + wobble
        } else {
            u < 0.22 + wobble && v > 0.25
        };
        if aca { Territory::Aca } else { Territory::Mca }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Anatomy {
        Anatomy::random(&mut Rng::new(11), 120.0)
    }

    #[test]
    fn shells_from_outside_in() {
        let a = head();
        assert_eq!(a.sample([200.0, 0.0, 0.0]).tissue, Tissue::Air);
        // March from the right edge of the head to the centre along x at z = 35 mm.
        let mut seen = Vec::new();
        let mut x = 120.0;
        while x > 0.0 {
            let t = a.sample([x, 0.0, 35.0]).tissue;
            if seen.last() != Some(&t) {
                seen.push(t);
            }
            x -= 0.25;
        }
        let pos = |t: Tissue| seen.iter().position(|s| *s == t);
        let (scalp, bone, grey, white) = (
            pos(Tissue::Scalp),
            pos(Tissue::Bone),
            pos(Tissue::Grey),
            pos(Tissue::White),
        );
        assert!(scalp < bone && bone < grey && grey < white, "{seen:?}");
    }

    #[test]
    fn hemispheres_and_territories() {
        let a = head();
        let s = a.sample([30.0, 0.0, 0.0]);
        assert_eq!(s.hemisphere, Hemisphere::Right);
        assert_eq!(a.sample([-30.0, 0.0, 0.0]).hemisphere, Hemisphere::Left);
        // Lentiform nucleus: deep grey, MCA.
        let l = a.sample([-21.0 * a.brain_semi_mm[0] / 67.0, 2.0, 1.0]);
        assert_eq!((l.tissue, l.territory), (Tissue::DeepGrey, Territory::Mca));
        // Occipital pole: PCA. Parasagittal frontal at the vertex: ACA.
        assert_eq!(
            a.sample([10.0, -0.85 * a.brain_semi_mm[1], 20.0]).territory,
            Territory::Pca
        );
        assert_eq!(a.sample([8.0, 20.0, 50.0]).territory, Territory::Aca);
        assert_eq!(a.sample([50.0, 0.0, 25.0]).territory, Territory::Mca);
    }

    #[test]
    fn brain_contains_all_classes_at_basal_ganglia_level() {
        let a = head();
        let mut counts = [0usize; Tissue::COUNT];
        for j in 0..200 {
            for i in 0..200 {
                let p = [(i as f64 - 100.0), (j as f64 - 100.0), 5.0];
                counts[a.sample(p).tissue as usize] += 1;
            }
        }
        for t in [
            Tissue::Air,
            Tissue::Scalp,
            Tissue::Bone,
            Tissue::Csf,
            Tissue::Grey,
            Tissue::White,
            Tissue::DeepGrey,
        ] {
            assert!(counts[t as usize] > 50, "{t:?}: {counts:?}");
        }
        // White matter outweighs cortex at this level; cortex is a substantial fraction.
        let (g, w) = (
            counts[Tissue::Grey as usize],
            counts[Tissue::White as usize],
        );
        assert!(g > w / 4 && g < 3 * w, "grey {g}, white {w}");
    }
}
