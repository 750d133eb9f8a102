//! Head anatomy from a real brain template: the ICBM 2009a nonlinear symmetric grey- and
//! white-matter probability maps (MNI space, 1 mm; Fonov et al. 2011, NeuroImage 54:313),
//! as the `nilearn` package ships them, deformed per patient.
//!
//! # The template
//!
//! [`BrainTemplate::load`] reads `GM_FILE` and `WM_FILE` from a folder (`cargo xtask
//! setup-templates` puts them into `.cache/templates/icbm152_2009a`). From them it derives,
//! once per process:
//! - the brain, `P(GM) + P(WM) > ½`;
//! - the *envelope*: the brain closed with a [`CLOSING_RADIUS_MM`] ball (sulci and the
//!   interhemispheric fissure filled), i.e. the pial surface hull;
//! - the signed distance to the envelope's surface, mm (negative inside), from exact
//!   Euclidean distance transforms (Felzenszwalb & Huttenlocher 2012, ToC 8:415).
//!
//! # One patient ([`TemplateHead`])
//!
//! A head point `p` (head coordinates, see [`super::anatomy`]) maps to the template point
//! `q = c + S⁻¹ (w(p) + d(p))`: `d` a smooth random displacement (elastic deformation, 1.5–4
//! mm, wavelengths 35–90 mm), `w` a radial expansion about the ventricles (up to 30 % with
//! atrophy: stroke patients are old), `S` a per-axis scale (head size and shape, 0.9–1.08,
//! shrunk to fit the field of view) and `c` the template's brain centre. At `q`:
//! - outside the envelope, shells at the patient's distances: subarachnoid CSF (1–3.5 mm,
//!   wider with atrophy), skull with diploe (4.5–7 mm, ±15 % smooth variation), scalp, air;
//! - inside, `P(GM) + P(WM)` below a threshold that rises with atrophy (0.5–0.7: widened
//!   sulci and ventricles) is CSF, with sparse vessels in the subarachnoid space;
//!   otherwise grey or white matter by the larger probability; grey matter deeper than
//!   [`DEEP_GREY_DEPTH_MM`] is deep grey (basal ganglia, thalami); the posterior fossa is
//!   cerebellum and brainstem; periventricular white matter gets patchy leukoaraiosis.
//!
//! Hemisphere is the sign of the template's `x` (the template is symmetric). Arterial
//! territories follow the usual atlas layout in MNI coordinates (Tatu et al. 1998,
//! Neurology 50:1699) with randomly wandering borders: posterior fossa → vertebrobasilar;
//! thalamus → PCA, basal ganglia → MCA; occipital and inferior temporal → PCA; a medial and
//! parasagittal strip → ACA; the rest → MCA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use strokeseg_io::{IoError, NiftiVolumeReader, sha256_hex};
use strokeseg_shared::rng::Rng;

use super::anatomy::{AnatomySample, Hemisphere, Territory, Tissue, cell_chance};
use super::field::SmoothField;

/// Grey-matter probability map (uint8, 0–255), as `nilearn` 0.14 ships it.
pub const GM_FILE: &str = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz";
/// White-matter probability map (uint8, 0–255).
pub const WM_FILE: &str = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz";
/// SHA-256 of [`GM_FILE`] and [`WM_FILE`] in `nilearn` 0.14.1: the phantom is a pure
/// function of the seed only for these bytes, so other files are refused.
pub const TEMPLATE_SHA256: [(&str, &str); 2] = [
    (
        GM_FILE,
        "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
    ),
    (
        WM_FILE,
        "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
    ),
];

/// Where `cargo xtask setup-templates` installs the template, relative to the workspace root
/// (the trainer's default, relative to its working folder).
pub const TEMPLATE_DIR: &str = ".cache/templates/icbm152_2009a";

/// Environment variable naming the template folder when no `--template-dir` is given.
pub const TEMPLATE_DIR_ENV: &str = "STROKESEG_TEMPLATE_DIR";

/// Radius of the closing that turns the brain into its envelope (smooth like the inner
/// table of the skull: sulci, fissures and cisterns filled), mm.
pub const CLOSING_RADIUS_MM: f64 = 15.0;
/// Grey matter deeper than this below the envelope is deep grey (basal ganglia, thalami), mm.
pub const DEEP_GREY_DEPTH_MM: f64 = 20.0;
/// The template's brain centre (near the foramen of Monro), MNI mm: head coordinates' origin.
const CENTRE_MNI_MM: [f64; 3] = [0.0, -17.0, 4.0];
/// Half of the template brain's anterior–posterior extent about [`CENTRE_MNI_MM`], mm.
const BRAIN_SEMI_AP_MM: f64 = 88.0;
/// Centre of the ventricular system (lateral ventricle bodies), MNI mm.
const VENTRICLE_CENTRE_MNI_MM: [f64; 3] = [0.0, -10.0, 14.0];
/// Reach of the ventricular expansion (gaussian σ), mm.
const VENTRICLE_REACH_MM: f64 = 22.0;

/// The template volumes and the derived envelope distance, on the template's 1 mm grid.
#[derive(Debug)]
pub struct BrainTemplate {
    dims: [usize; 3],
    /// World (MNI) position of voxel (0, 0, 0), mm.
    origin_mm: [f64; 3],
    /// Isotropic voxel size, mm.
    spacing_mm: f64,
    gm: Vec<u8>,
    wm: Vec<u8>,
    /// Signed distance to the envelope surface, mm (negative inside).
    envelope_mm: Vec<f32>,
}

/// What the template says at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TemplatePoint {
    gm: f64,
    wm: f64,
    envelope_mm: f64,
}

impl BrainTemplate {
    /// Reads the template from `dir`, checks the files' hashes and grids, and derives the
    /// envelope. Errors name the file and the problem.
    pub fn load(dir: &Path) -> Result<BrainTemplate, IoError> {
        for (name, sha) in TEMPLATE_SHA256 {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| IoError::Dataset {
                path: path.clone(),
                reason: format!(
                    "cannot read the brain template ({e}); `cargo xtask setup-templates` \
                     installs it into {TEMPLATE_DIR}"
                ),
            })?;
            let got = sha256_hex(&bytes);
            if got != sha {
                return Err(IoError::Dataset {
                    path,
                    reason: format!(
                        "not the ICBM 2009a template nilearn 0.14.1 ships (SHA-256 {got}, \
                         expected {sha}); run `cargo xtask setup-templates`"
                    ),
                });
            }
        }
        let (gm, dims, affine) = read_u8(&dir.join(GM_FILE))?;
        let (wm, wm_dims, wm_affine) = read_u8(&dir.join(WM_FILE))?;
        if wm_dims != dims || wm_affine != affine {
            return Err(IoError::Dataset {
                path: dir.join(WM_FILE),
                reason: format!("grid {wm_dims:?} differs from {GM_FILE}'s {dims:?}"),
            });
        }
        let spacing_mm = affine[0][0];
        let diagonal = (0..3).all(|r| {
            (0..3).all(|c| (r == c) == (affine[r][c] != 0.0))
                && (affine[r][r] - spacing_mm).abs() < 1e-6
        });
        if !diagonal || spacing_mm <= 0.0 {
            return Err(IoError::Dataset {
                path: dir.join(GM_FILE),
                reason: format!("expected an isotropic RAS grid, got the affine {affine:?}"),
            });
        }
        let brain: Vec<bool> = gm
            .iter()
            .zip(&wm)
            .map(|(&g, &w)| u16::from(g) + u16::from(w) > 127)
            .collect();
        let envelope_mm = envelope_distance_mm(&brain, dims, spacing_mm, CLOSING_RADIUS_MM);
        Ok(BrainTemplate {
            dims,
            origin_mm: [affine[0][3], affine[1][3], affine[2][3]],
            spacing_mm,
            gm,
            wm,
            envelope_mm,
        })
    }

    /// The template of `dir`, loaded once per process and shared.
    pub fn cached(dir: &Path) -> Result<Arc<BrainTemplate>, IoError> {
        type Loaded = Vec<(PathBuf, Arc<BrainTemplate>)>;
        static CACHE: OnceLock<Mutex<Loaded>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
        let mut entries = cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, t)) = entries.iter().find(|(d, _)| d == dir) {
            return Ok(Arc::clone(t));
        }
        let template = Arc::new(BrainTemplate::load(dir)?);
        entries.push((dir.to_path_buf(), Arc::clone(&template)));
        Ok(template)
    }

    /// Trilinear interpolation at the MNI point `q`; outside the grid: no brain, far out.
    fn at(&self, q: [f64; 3]) -> TemplatePoint {
        let far = TemplatePoint {
            gm: 0.0,
            wm: 0.0,
            envelope_mm: 1e3,
        };
        let mut base = [0usize; 3];
        let mut frac = [0.0f64; 3];
        for a in 0..3 {
            let u = (q[a] - self.origin_mm[a]) / self.spacing_mm;
            if !(u >= 0.0 && u < (self.dims[a] - 1) as f64) {
                return far;
            }
            let f = libm::floor(u);
            base[a] = f as usize;
            frac[a] = u - f;
        }
        let [nx, ny, _] = self.dims;
        let mut out = TemplatePoint {
            gm: 0.0,
            wm: 0.0,
            envelope_mm: 0.0,
        };
        for corner in 0..8 {
            let o = [corner & 1, (corner >> 1) & 1, (corner >> 2) & 1];
            let w: f64 = (0..3)
                .map(|a| if o[a] == 1 { frac[a] } else { 1.0 - frac[a] })
                .product();
            if w == 0.0 {
                continue;
            }
            let v = (base[2] + o[2]) * nx * ny + (base[1] + o[1]) * nx + base[0] + o[0];
            out.gm += w * f64::from(self.gm[v]) / 255.0;
            out.wm += w * f64::from(self.wm[v]) / 255.0;
            out.envelope_mm += w * f64::from(self.envelope_mm[v]);
        }
        out
    }
}

/// A uint8 volume, its dims and affine.
fn read_u8(path: &Path) -> Result<(Vec<u8>, [usize; 3], strokeseg_io::Affine), IoError> {
    let mut reader = NiftiVolumeReader::open(path)?;
    let dims = reader.dims();
    let affine = reader.info().affine;
    let nxy = dims[0] * dims[1];
    let mut plane = vec![0.0f32; nxy];
    let mut out = Vec::with_capacity(nxy * dims[2]);
    for z in 0..dims[2] {
        reader.read_slice_f32(z, &mut plane)?;
        out.extend(plane.iter().map(|&v| v.clamp(0.0, 255.0).round() as u8));
    }
    Ok((out, dims, affine))
}

/// Signed distance (mm, negative inside) to the surface of the brain closed with a ball of
/// `closing_radius_mm`.
fn envelope_distance_mm(
    brain: &[bool],
    dims: [usize; 3],
    spacing_mm: f64,
    closing_radius_mm: f64,
) -> Vec<f32> {
    let r_vox = closing_radius_mm / spacing_mm;
    let r2 = (r_vox * r_vox) as f32;
    // Dilate (distance to the brain ≤ r), then erode (distance to the outside > r).
    let to_brain = squared_edt(brain, dims);
    let outside_dilated: Vec<bool> = to_brain.iter().map(|&d| d > r2).collect();
    let to_outside = squared_edt(&outside_dilated, dims);
    let envelope: Vec<bool> = to_outside.iter().map(|&d| d > r2).collect();
    let outside: Vec<bool> = envelope.iter().map(|&e| !e).collect();
    let to_envelope = squared_edt(&envelope, dims);
    let to_exterior = squared_edt(&outside, dims);
    to_envelope
        .iter()
        .zip(&to_exterior)
        .map(|(&out, &inn)| {
            let s = spacing_mm as f32;
            if out > 0.0 {
                out.sqrt() * s
            } else {
                -(inn.sqrt() * s)
            }
        })
        .collect()
}

/// Squared Euclidean distance (voxels²) of every voxel to the nearest `true` voxel; far
/// (1e20) when there is none.
fn squared_edt(feature: &[bool], dims: [usize; 3]) -> Vec<f32> {
    const FAR: f32 = 1e20;
    let [nx, ny, nz] = dims;
    let mut d: Vec<f32> = feature.iter().map(|&f| if f { 0.0 } else { FAR }).collect();
    let longest = nx.max(ny).max(nz);
    let mut line = vec![0.0f32; longest];
    let mut out = vec![0.0f32; longest];
    let mut hull_v = vec![0usize; longest];
    let mut hull_z = vec![0.0f32; longest + 1];
    let strides = [1, nx, nx * ny];
    for axis in 0..3 {
        let n = dims[axis];
        let stride = strides[axis];
        let others: Vec<usize> = (0..nx * ny * nz)
            .filter(|&v| (v / stride) % n == 0)
            .collect();
        for start in others {
            for (k, slot) in line[..n].iter_mut().enumerate() {
                *slot = d[start + k * stride];
            }
            edt_1d(&line[..n], &mut out[..n], &mut hull_v, &mut hull_z);
            for (k, &value) in out[..n].iter().enumerate() {
                d[start + k * stride] = value;
            }
        }
    }
    d
}

/// One-dimensional squared distance transform of the sampled function `f` (lower envelope
/// of parabolas).
fn edt_1d(f: &[f32], out: &mut [f32], v: &mut [usize], z: &mut [f32]) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    let intersect = |q: usize, p: usize| -> f32 {
        let (qf, pf) = (q as f32, p as f32);
        ((f[q] + qf * qf) - (f[p] + pf * pf)) / (2.0 * qf - 2.0 * pf)
    };
    for q in 1..n {
        let mut s = intersect(q, v[k]);
        // z[0] is −∞, so k never underflows.
        while s <= z[k] {
            k -= 1;
            s = intersect(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f32::INFINITY;
    }
    k = 0;
    for (q, slot) in out.iter_mut().enumerate() {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let d = q as f32 - v[k] as f32;
        *slot = d * d + f[v[k]];
    }
}

/// One patient's head built on the template.
#[derive(Debug, Clone)]
pub(crate) struct TemplateHead {
    template: Arc<BrainTemplate>,
    /// Per-axis scale from template to head (head size and shape).
    scale: [f64; 3],
    /// Elastic displacement, one smooth field per axis, and its amplitude, mm.
    displacement: [SmoothField; 3],
    displacement_mm: f64,
    /// Relative radial expansion at the ventricle centre (0–0.3).
    ventricle_expansion: f64,
    /// Brain threshold on `P(GM) + P(WM)` (0.5–0.7, rising with atrophy).
    brain_threshold: f64,
    subarachnoid_mm: f64,
    skull_mm: f64,
    skull_field: SmoothField,
    scalp_mm: f64,
    leukoaraiosis_grade: f64,
    leukoaraiosis_field: SmoothField,
    aca_border: SmoothField,
    pca_border: SmoothField,
    vessel_hash_seed: u64,
}

impl TemplateHead {
    /// A random patient on `template`, small enough that the head's anterior–posterior
    /// half-length stays within `max_outer_semi_ap_mm`.
    pub(crate) fn random(
        rng: &mut Rng,
        template: Arc<BrainTemplate>,
        max_outer_semi_ap_mm: f64,
    ) -> TemplateHead {
        let atrophy = rng.uniform(0.0, 1.0) * rng.uniform(0.0, 1.0);
        let subarachnoid_mm = rng.uniform(1.0, 2.0) + 1.5 * atrophy;
        let skull_mm = rng.uniform(4.5, 7.0);
        let scalp_mm = rng.uniform(3.5, 6.5);
        let size = rng.uniform(0.92, 1.06);
        let mut scale = [
            size * rng.uniform(0.95, 1.05),
            size * rng.uniform(0.95, 1.05),
            size * rng.uniform(0.95, 1.05),
        ];
        let shell_mm = subarachnoid_mm + 1.3 * skull_mm + scalp_mm;
        let fit = ((max_outer_semi_ap_mm - shell_mm) / (BRAIN_SEMI_AP_MM * scale[1])).min(1.0);
        if fit < 1.0 {
            scale = scale.map(|s| s * fit);
        }
        let displacement = [
            SmoothField::new(rng, 6, (35.0, 90.0)),
            SmoothField::new(rng, 6, (35.0, 90.0)),
            SmoothField::new(rng, 6, (35.0, 90.0)),
        ];
        TemplateHead {
            template,
            scale,
            displacement,
            displacement_mm: rng.uniform(1.5, 4.0),
            ventricle_expansion: 0.3 * atrophy + rng.uniform(0.0, 0.05),
            brain_threshold: 0.5 + 0.2 * atrophy,
            subarachnoid_mm,
            skull_mm,
            skull_field: SmoothField::new(rng, 6, (40.0, 120.0)),
            scalp_mm,
            leukoaraiosis_grade: atrophy * rng.uniform(0.5, 1.0),
            leukoaraiosis_field: SmoothField::new(rng, 8, (8.0, 25.0)),
            aca_border: SmoothField::new(rng, 4, (30.0, 70.0)),
            pca_border: SmoothField::new(rng, 4, (30.0, 70.0)),
            vessel_hash_seed: rng.next_u64(),
        }
    }

    /// The template (MNI) point of the head point `p`.
    fn to_template(&self, p: [f64; 3]) -> [f64; 3] {
        let a = self.displacement_mm;
        let d = [
            p[0] + a * self.displacement[0].at(p),
            p[1] + a * self.displacement[1].at(p),
            p[2] + a * self.displacement[2].at(p),
        ];
        let mut q = [0.0; 3];
        for axis in 0..3 {
            q[axis] = CENTRE_MNI_MM[axis] + d[axis] / self.scale[axis];
        }
        // Ventricles enlarged by pulling template samples towards their centre.
        let c = VENTRICLE_CENTRE_MNI_MM;
        let r2: f64 = (0..3).map(|k| (q[k] - c[k]) * (q[k] - c[k])).sum();
        let pull = 1.0
            / (1.0
                + self.ventricle_expansion
                    * libm::exp(-r2 / (2.0 * VENTRICLE_REACH_MM * VENTRICLE_REACH_MM)));
        [0, 1, 2].map(|k| c[k] + (q[k] - c[k]) * pull)
    }

    /// Classifies the head point `p` (mm).
    pub(crate) fn sample(&self, p: [f64; 3]) -> AnatomySample {
        let outside_at = |tissue, x: f64| AnatomySample {
            tissue,
            intracranial: false,
            hemisphere: if x >= 0.0 {
                Hemisphere::Right
            } else {
                Hemisphere::Left
            },
            territory: Territory::Mca,
            leukoaraiosis: false,
        };
        // Quick reject without the deformation fields: the displacement moves a point by at
        // most 3 × 2.5 σ, the ventricular pull only draws points inwards.
        let rigid: [f64; 3] = [0, 1, 2].map(|k| CENTRE_MNI_MM[k] + p[k] / self.scale[k]);
        let slack_mm = 7.5 * self.displacement_mm + 2.0;
        let head_mm = self.subarachnoid_mm + 1.6 * self.skull_mm + self.scalp_mm;
        if self.template.at(rigid).envelope_mm * self.scale[1] > head_mm + slack_mm {
            return outside_at(Tissue::Air, rigid[0]);
        }
        let q = self.to_template(p);
        let t = self.template.at(q);
        let hemisphere = if q[0] >= 0.0 {
            Hemisphere::Right
        } else {
            Hemisphere::Left
        };
        let outside = |tissue| outside_at(tissue, q[0]);
        // Distances out of the envelope, in head millimetres (the scale is near 1).
        let out_mm = t.envelope_mm * self.scale[1];
        if out_mm > self.subarachnoid_mm {
            let skull_mm = self.skull_mm * (1.0 + 0.15 * self.skull_field.at(p).clamp(-2.0, 2.0));
            let into_skull = out_mm - self.subarachnoid_mm;
            if into_skull <= skull_mm {
                let frac = into_skull / skull_mm;
                let tissue = if (0.3..0.7).contains(&frac) && skull_mm > 5.0 {
                    Tissue::Diploe
                } else {
                    Tissue::Bone
                };
                return outside(tissue);
            }
            if into_skull <= skull_mm + self.scalp_mm {
                return outside(Tissue::Scalp);
            }
            return outside(Tissue::Air);
        }
        let posterior = is_posterior_fossa(q);
        let brain = t.gm + t.wm;
        let depth_mm = -t.envelope_mm;
        let (tissue, leukoaraiosis) = if brain < self.brain_threshold {
            let vessel = depth_mm < 6.0
                && cell_chance(
                    self.vessel_hash_seed,
                    libm::floor(q[0] / 3.0) as i64,
                    libm::floor(q[1] / 3.0) as i64,
                    libm::floor(q[2] / 3.0) as i64,
                    0.05,
                );
            (if vessel { Tissue::Vessel } else { Tissue::Csf }, false)
        } else if posterior {
            let brainstem = q[0].abs() < 14.0 && (-42.0..-12.0).contains(&q[1]);
            (
                if brainstem {
                    Tissue::White
                } else {
                    Tissue::Cerebellum
                },
                false,
            )
        } else if t.gm >= t.wm {
            if depth_mm > DEEP_GREY_DEPTH_MM {
                (Tissue::DeepGrey, false)
            } else {
                (Tissue::Grey, false)
            }
        } else {
            let leuko = self.leukoaraiosis_grade > 0.05
                && depth_mm > 18.0
                && self.leukoaraiosis_field.at(p) > 1.2 - 2.0 * self.leukoaraiosis_grade;
            (Tissue::White, leuko)
        };
        AnatomySample {
            tissue,
            intracranial: true,
            hemisphere,
            territory: self.territory(q, tissue, posterior, p),
            leukoaraiosis,
        }
    }

    /// The arterial territory at the template point `q` (head point `p` for the borders).
    fn territory(&self, q: [f64; 3], tissue: Tissue, posterior: bool, p: [f64; 3]) -> Territory {
        if posterior {
            return Territory::Posterior;
        }
        let [x, y, z] = q;
        if tissue == Tissue::DeepGrey {
            return if y < -12.0 {
                Territory::Pca
            } else {
                Territory::Mca
            };
        }
        // Occipital lobe, and the inferior temporal lobe further forward below z = 0.
        let pca_front = -64.0 + 0.9 * (-z).clamp(0.0, 30.0) + 6.0 * self.pca_border.at(p);
        if y < pca_front {
            return Territory::Pca;
        }
        // Medial surface and a parasagittal strip widening towards the vertex.
        let aca_width = 11.0 + 0.28 * z.max(0.0) + 4.0 * self.aca_border.at(p);
        if z > -8.0 && y > -58.0 && x.abs() < aca_width {
            return Territory::Aca;
        }
        Territory::Mca
    }
}

/// Cerebellum and brainstem below the tentorium (MNI mm).
fn is_posterior_fossa(q: [f64; 3]) -> bool {
    let [x, y, z] = q;
    let cerebellum = y < -38.0 && z < -15.0 - 0.08 * (y + 38.0);
    let brainstem = x.abs() < 14.0 && (-42.0..-12.0).contains(&y) && z < -10.0;
    cerebellum || brainstem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dimensional_distance_transform_is_exact() {
        let f: Vec<f32> = [1e20, 1e20, 0.0, 1e20, 1e20, 1e20, 0.0, 1e20]
            .iter()
            .map(|&v| v as f32)
            .collect();
        let mut out = vec![0.0; f.len()];
        let mut v = vec![0; f.len()];
        let mut z = vec![0.0; f.len() + 1];
        edt_1d(&f, &mut out, &mut v, &mut z);
        assert_eq!(out, vec![4.0, 1.0, 0.0, 1.0, 4.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn three_dimensional_distance_transform_matches_brute_force() {
        let dims = [9, 7, 5];
        let n = dims[0] * dims[1] * dims[2];
        let mut rng = Rng::new(3);
        let feature: Vec<bool> = (0..n).map(|_| rng.chance(0.05)).collect();
        let d = squared_edt(&feature, dims);
        let coords = |v: usize| {
            [
                (v % dims[0]) as f32,
                ((v / dims[0]) % dims[1]) as f32,
                (v / (dims[0] * dims[1])) as f32,
            ]
        };
        for (v, &got) in d.iter().enumerate() {
            let c = coords(v);
            let brute = (0..n)
                .filter(|&u| feature[u])
                .map(|u| {
                    let o = coords(u);
                    (0..3).map(|a| (c[a] - o[a]) * (c[a] - o[a])).sum::<f32>()
                })
                .fold(1e20f32, f32::min);
            assert_eq!(got, brute, "voxel {v}");
        }
    }

    #[test]
    fn closing_fills_a_slit_and_distance_is_signed() {
        // A 20 × 20 × 20 cube with a 2-voxel slit: the envelope fills the slit.
        let dims = [40, 40, 40];
        let mut brain = vec![false; 40 * 40 * 40];
        for z in 10..30 {
            for y in 10..30 {
                for x in 10..30 {
                    if !(19..21).contains(&x) || y < 14 {
                        brain[z * 1600 + y * 40 + x] = true;
                    }
                }
            }
        }
        let d = envelope_distance_mm(&brain, dims, 1.0, 5.0);
        let at = |x: usize, y: usize, z: usize| d[z * 1600 + y * 40 + x];
        assert!(at(19, 25, 20) < 0.0, "the slit is inside the envelope");
        assert!(at(20, 20, 20) < -8.0, "the centre is deep inside");
        assert!(
            (at(35, 20, 20) - 6.0).abs() < 1.01,
            "5–6 mm outside the face"
        );
    }
}
