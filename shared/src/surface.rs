//! Surface distances between two 3D binary masks, as the ISLES 2018 evaluator reports them:
//! Hausdorff distance (maximum and 95th percentile) and average symmetric surface distance
//! (ASSD), in millimetres on anisotropic grids, from an exact Euclidean distance transform.
//!
//! # Definitions
//!
//! Masks are `u8` volumes `[nx, ny, nz]`, x fastest, then y, then z (the NIfTI order); any
//! nonzero value is foreground (as in [`crate::metrics`]). Voxel `(x, y, z)` has its centre at
//! `(x·sx, y·sy, z·sz)` mm for `spacing_mm = [sx, sy, sz]`.
//!
//! - The **surface** `∂A` of a mask `A` is its foreground voxels that have at least one
//!   6-connected neighbour that is background or outside the volume (the border of
//!   `A` minus its 6-neighbourhood erosion with a background border, as `medpy` computes it).
//! - `d(a, ∂B)` is the Euclidean distance in mm from the centre of voxel `a` to the nearest
//!   centre of a voxel of `∂B`.
//! - **Hausdorff distance** `HD = max( max_{a∈∂A} d(a, ∂B), max_{b∈∂B} d(b, ∂A) )`.
//! - **HD95** `= max( P95_{a∈∂A} d(a, ∂B), P95_{b∈∂B} d(b, ∂A) )`, each percentile with linear
//!   interpolation between order statistics (NumPy's default, `medpy.metric.hd95`).
//! - **ASSD** `= ( mean_{a∈∂A} d(a, ∂B) + mean_{b∈∂B} d(b, ∂A) ) / 2` (`medpy.metric.assd`:
//!   the mean of the two directed averages, not the pooled mean over both surfaces).
//!
//! # Empty masks
//!
//! | prediction | truth     | HD, HD95, ASSD                          |
//! |------------|-----------|-----------------------------------------|
//! | empty      | empty     | `Some(0.0)` (perfect agreement)         |
//! | empty      | non-empty | `None`: infinite (no surface to reach)  |
//! | non-empty  | empty     | `None`: infinite                        |
//!
//! The ISLES evaluator reports the one-empty case as an infinite distance; here it is
//! `None` in Rust and `null` in JSON (with [`SurfaceDistances::is_infinite`] to ask), so
//! that no `inf` leaks into means and no JSON writer has to encode a non-finite float.
//!
//! # Algorithm and memory
//!
//! Both distance fields are exact squared Euclidean distance transforms, computed
//! separably along x, y and z with the lower-envelope-of-parabolas algorithm of Felzenszwalb
//! and Huttenlocher (2012, Theory of Computing 8:415), weighted by the squared spacing of
//! each axis: `O(n)` per transform. They are computed only inside the bounding box of the
//! union of the two masks, which is exact (every surface voxel, hence every nearest
//! neighbour and every query, lies in that box). Memory: 10 bytes per voxel of that box
//! plus 8 bytes per surface voxel, besides the caller's masks.

use alloc::vec;
use alloc::vec::Vec;

/// Why surface distances could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SurfaceError {
    /// A mask does not hold `nx · ny · nz` voxels.
    #[error("{mask} mask holds {got} voxels, dims {dims:?} need {expected}")]
    LengthMismatch {
        /// Which mask (`prediction` or `truth`).
        mask: &'static str,
        /// The grid dims `[nx, ny, nz]`.
        dims: [usize; 3],
        /// `nx · ny · nz`.
        expected: usize,
        /// Voxels in the mask.
        got: usize,
    },
    /// `nx · ny · nz` does not fit in `usize`.
    #[error("dims {dims:?} hold more voxels than can be addressed")]
    TooManyVoxels {
        /// The grid dims `[nx, ny, nz]`.
        dims: [usize; 3],
    },
    /// A voxel spacing is zero, negative, infinite or NaN.
    #[error("voxel spacing must be finite and positive, got {spacing_mm:?} mm")]
    InvalidSpacing {
        /// The rejected spacing `[sx, sy, sz]` in mm.
        spacing_mm: [f32; 3],
    },
}

/// Surface-distance metrics of a prediction against a ground truth; see the
/// [module documentation](self) for the definitions.
///
/// Each distance is `None` exactly when one mask is empty and the other is not (the
/// distance is infinite); both empty gives `Some(0.0)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SurfaceDistances {
    /// Hausdorff distance (maximum symmetric surface distance), mm; `None`: infinite.
    pub hausdorff_mm: Option<f64>,
    /// 95th-percentile Hausdorff distance, mm; `None`: infinite.
    pub hausdorff95_mm: Option<f64>,
    /// Average symmetric surface distance, mm; `None`: infinite.
    pub assd_mm: Option<f64>,
    /// Surface voxels of the prediction.
    pub pred_surface_voxels: u64,
    /// Surface voxels of the ground truth.
    pub truth_surface_voxels: u64,
}

impl SurfaceDistances {
    /// Both masks empty: every distance is `0.0`.
    pub const BOTH_EMPTY: SurfaceDistances = SurfaceDistances {
        hausdorff_mm: Some(0.0),
        hausdorff95_mm: Some(0.0),
        assd_mm: Some(0.0),
        pred_surface_voxels: 0,
        truth_surface_voxels: 0,
    };

    /// Whether the distances are infinite (exactly one mask is empty).
    pub fn is_infinite(&self) -> bool {
        self.hausdorff_mm.is_none()
    }
}

/// Hausdorff distance, HD95 and ASSD (mm) between `pred` and `truth`, two masks of
/// `dims = [nx, ny, nz]` voxels (x fastest; nonzero is foreground) with voxel spacing
/// `spacing_mm = [sx, sy, sz]` (finite, > 0).
///
/// Runs in time linear in the bounding box of the two masks; see the
/// [module documentation](self) for the definitions, the empty-mask conventions and memory.
pub fn surface_distances(
    pred: &[u8],
    truth: &[u8],
    dims: [usize; 3],
    spacing_mm: [f32; 3],
) -> Result<SurfaceDistances, SurfaceError> {
    check_inputs(pred, truth, dims, spacing_mm)?;
    let boxes = (BoundingBox::of(pred, dims), BoundingBox::of(truth, dims));
    let bbox = match boxes {
        (None, None) => return Ok(SurfaceDistances::BOTH_EMPTY),
        (Some(a), None) | (None, Some(a)) => {
            let (pred_surface, truth_surface) = if boxes.0.is_some() {
                (count_surface(pred, dims, &a), 0)
            } else {
                (0, count_surface(truth, dims, &a))
            };
            return Ok(SurfaceDistances {
                hausdorff_mm: None,
                hausdorff95_mm: None,
                assd_mm: None,
                pred_surface_voxels: pred_surface,
                truth_surface_voxels: truth_surface,
            });
        }
        (Some(a), Some(b)) => a.union(&b),
    };

    let spacing = spacing_mm.map(f64::from);
    let pred_surface = surface_in_box(pred, dims, &bbox);
    let truth_surface = surface_in_box(truth, dims, &bbox);
    let mut field = vec![0f64; bbox.n_voxels()];
    let mut scratch = LineScratch::new(bbox.size.iter().copied().max().unwrap_or(0));

    squared_edt(&truth_surface, bbox.size, spacing, &mut field, &mut scratch);
    let mut pred_to_truth = distances_at(&pred_surface, &field);
    squared_edt(&pred_surface, bbox.size, spacing, &mut field, &mut scratch);
    let mut truth_to_pred = distances_at(&truth_surface, &field);

    let hausdorff = max_of(&pred_to_truth).max(max_of(&truth_to_pred));
    let assd = 0.5 * (mean_of(&pred_to_truth) + mean_of(&truth_to_pred));
    let hd95 = percentile_linear(&mut pred_to_truth, 95.0)
        .max(percentile_linear(&mut truth_to_pred, 95.0));
    Ok(SurfaceDistances {
        hausdorff_mm: Some(hausdorff),
        hausdorff95_mm: Some(hd95),
        assd_mm: Some(assd),
        pred_surface_voxels: pred_to_truth.len() as u64,
        truth_surface_voxels: truth_to_pred.len() as u64,
    })
}

/// The Hausdorff distance alone (mm); `None` when exactly one mask is empty. See
/// [`surface_distances`].
pub fn hausdorff_mm(
    pred: &[u8],
    truth: &[u8],
    dims: [usize; 3],
    spacing_mm: [f32; 3],
) -> Result<Option<f64>, SurfaceError> {
    surface_distances(pred, truth, dims, spacing_mm).map(|d| d.hausdorff_mm)
}

/// The average symmetric surface distance alone (mm); `None` when exactly one mask is
/// empty. See [`surface_distances`].
pub fn assd_mm(
    pred: &[u8],
    truth: &[u8],
    dims: [usize; 3],
    spacing_mm: [f32; 3],
) -> Result<Option<f64>, SurfaceError> {
    surface_distances(pred, truth, dims, spacing_mm).map(|d| d.assd_mm)
}

/// The number of surface voxels of `mask` (see the [module documentation](self)).
pub fn surface_voxel_count(mask: &[u8], dims: [usize; 3]) -> Result<u64, SurfaceError> {
    check_mask("mask", mask, dims)?;
    Ok(match BoundingBox::of(mask, dims) {
        Some(b) => count_surface(mask, dims, &b),
        None => 0,
    })
}

fn check_mask(which: &'static str, mask: &[u8], dims: [usize; 3]) -> Result<(), SurfaceError> {
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(SurfaceError::TooManyVoxels { dims })?;
    if mask.len() != expected {
        return Err(SurfaceError::LengthMismatch {
            mask: which,
            dims,
            expected,
            got: mask.len(),
        });
    }
    Ok(())
}

fn check_inputs(
    pred: &[u8],
    truth: &[u8],
    dims: [usize; 3],
    spacing_mm: [f32; 3],
) -> Result<(), SurfaceError> {
    check_mask("prediction", pred, dims)?;
    check_mask("truth", truth, dims)?;
    if spacing_mm.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(SurfaceError::InvalidSpacing { spacing_mm });
    }
    Ok(())
}

/// A box of voxels `lo[i] .. lo[i] + size[i]` along each axis (every size ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BoundingBox {
    lo: [usize; 3],
    size: [usize; 3],
}

impl BoundingBox {
    /// The smallest box holding every foreground voxel; `None` for an empty mask.
    /// `mask.len()` is `nx · ny · nz`.
    fn of(mask: &[u8], dims: [usize; 3]) -> Option<BoundingBox> {
        let [nx, ny, _] = dims;
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        let mut any = false;
        for (row_idx, row) in mask.chunks_exact(nx.max(1)).enumerate() {
            let (Some(first), Some(last)) = (
                row.iter().position(|&v| v != 0),
                row.iter().rposition(|&v| v != 0),
            ) else {
                continue;
            };
            any = true;
            let (y, z) = (row_idx % ny.max(1), row_idx / ny.max(1));
            for (axis, (from, to)) in [(first, last), (y, y), (z, z)].into_iter().enumerate() {
                lo[axis] = lo[axis].min(from);
                hi[axis] = hi[axis].max(to);
            }
        }
        any.then(|| BoundingBox {
            lo,
            size: [0, 1, 2].map(|a| hi[a] - lo[a] + 1),
        })
    }

    fn union(&self, other: &BoundingBox) -> BoundingBox {
        let lo = [0, 1, 2].map(|a| self.lo[a].min(other.lo[a]));
        let hi = [0, 1, 2].map(|a| (self.lo[a] + self.size[a]).max(other.lo[a] + other.size[a]));
        BoundingBox {
            lo,
            size: [0, 1, 2].map(|a| hi[a] - lo[a]),
        }
    }

    fn n_voxels(&self) -> usize {
        self.size.iter().product()
    }
}

/// Calls `visit(box_index, is_surface)` for every foreground voxel of `mask` inside `bbox`,
/// in box order. The 6-neighbours are looked up in the whole volume.
fn for_each_foreground(
    mask: &[u8],
    dims: [usize; 3],
    bbox: &BoundingBox,
    mut visit: impl FnMut(usize, bool),
) {
    let [nx, ny, nz] = dims;
    let (sx, sy) = (1, nx);
    let sz = nx * ny;
    let [bx, by, bz] = bbox.size;
    for kz in 0..bz {
        let z = bbox.lo[2] + kz;
        for ky in 0..by {
            let y = bbox.lo[1] + ky;
            let row = z * sz + y * sy;
            let box_row = (kz * by + ky) * bx;
            for kx in 0..bx {
                let x = bbox.lo[0] + kx;
                let i = row + x;
                if mask[i] == 0 {
                    continue;
                }
                let on_border =
                    x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz;
                let surface = on_border
                    || mask[i - sx] == 0
                    || mask[i + sx] == 0
                    || mask[i - sy] == 0
                    || mask[i + sy] == 0
                    || mask[i - sz] == 0
                    || mask[i + sz] == 0;
                visit(box_row + kx, surface);
            }
        }
    }
}

fn count_surface(mask: &[u8], dims: [usize; 3], bbox: &BoundingBox) -> u64 {
    let mut n = 0u64;
    for_each_foreground(mask, dims, bbox, |_, surface| n += u64::from(surface));
    n
}

/// The surface of `mask` restricted to `bbox`, one `bool` per box voxel (box order).
fn surface_in_box(mask: &[u8], dims: [usize; 3], bbox: &BoundingBox) -> Vec<bool> {
    let mut surface = vec![false; bbox.n_voxels()];
    for_each_foreground(mask, dims, bbox, |i, s| surface[i] = s);
    surface
}

/// `sqrt(field)` at every voxel where `at` is set, in voxel order.
fn distances_at(at: &[bool], squared_field: &[f64]) -> Vec<f64> {
    at.iter()
        .zip(squared_field)
        .filter(|&(&a, _)| a)
        .map(|(_, &d2)| libm::sqrt(d2))
        .collect()
}

/// Per-line buffers of the 1D transform, sized for the longest axis.
struct LineScratch {
    values: Vec<f64>,
    out: Vec<f64>,
    vertices: Vec<usize>,
    bounds: Vec<f64>,
}

impl LineScratch {
    fn new(max_len: usize) -> LineScratch {
        LineScratch {
            values: vec![0.0; max_len],
            out: vec![0.0; max_len],
            vertices: vec![0; max_len],
            bounds: vec![0.0; max_len + 1],
        }
    }
}

/// Exact squared Euclidean distance (mm²) from every voxel of a `size` box to the nearest
/// voxel where `features` is set (`f64::INFINITY` if there is none), written into `field`.
fn squared_edt(
    features: &[bool],
    size: [usize; 3],
    spacing_mm: [f64; 3],
    field: &mut [f64],
    scratch: &mut LineScratch,
) {
    for (d, &f) in field.iter_mut().zip(features) {
        *d = if f { 0.0 } else { f64::INFINITY };
    }
    let [nx, ny, _] = size;
    let strides = [1, nx, nx * ny];
    let n_voxels = field.len();
    for axis in 0..3 {
        let (len, stride) = (size[axis], strides[axis]);
        if len == 0 {
            return;
        }
        let weight = spacing_mm[axis] * spacing_mm[axis];
        // Line `l` along `axis` starts at the voxel whose coordinate along `axis` is 0:
        // `(l / stride) · stride · len + l % stride`.
        for line in 0..n_voxels / len {
            let start = (line / stride) * stride * len + line % stride;
            let values = &mut scratch.values[..len];
            for (k, v) in values.iter_mut().enumerate() {
                *v = field[start + k * stride];
            }
            lower_envelope(
                values,
                weight,
                &mut scratch.out[..len],
                &mut scratch.vertices,
                &mut scratch.bounds,
            );
            for (k, &v) in scratch.out[..len].iter().enumerate() {
                field[start + k * stride] = v;
            }
        }
    }
}

/// 1D squared distance transform: `out[p] = min_q f[q] + weight·(p − q)²` over the `q` where
/// `f[q]` is finite (`INFINITY` everywhere if there is none). `vertices` holds at least
/// `f.len()` and `bounds` at least `f.len() + 1` entries.
fn lower_envelope(
    f: &[f64],
    weight: f64,
    out: &mut [f64],
    vertices: &mut [usize],
    bounds: &mut [f64],
) {
    // Parabola `k` (rooted at `vertices[k]`) is lowest on `bounds[k] .. bounds[k + 1]`.
    let mut n_parabolas = 0usize;
    for (q, &fq) in f.iter().enumerate() {
        if !fq.is_finite() {
            continue;
        }
        let qf = q as f64;
        let mut start = f64::NEG_INFINITY;
        while n_parabolas > 0 {
            let v = vertices[n_parabolas - 1];
            let vf = v as f64;
            let s =
                ((fq + weight * qf * qf) - (f[v] + weight * vf * vf)) / (2.0 * weight * (qf - vf));
            if s <= bounds[n_parabolas - 1] {
                n_parabolas -= 1;
            } else {
                start = s;
                break;
            }
        }
        vertices[n_parabolas] = q;
        bounds[n_parabolas] = start;
        bounds[n_parabolas + 1] = f64::INFINITY;
        n_parabolas += 1;
    }
    if n_parabolas == 0 {
        out.fill(f64::INFINITY);
        return;
    }
    let mut k = 0usize;
    for (p, o) in out.iter_mut().enumerate() {
        let pf = p as f64;
        while k + 1 < n_parabolas && bounds[k + 1] < pf {
            k += 1;
        }
        let v = vertices[k];
        let d = pf - v as f64;
        *o = f[v] + weight * d * d;
    }
}

fn max_of(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

fn mean_of(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The `q`-th percentile (0–100) of `values` with linear interpolation between the order
/// statistics at `floor` and `ceil` of `q/100 · (n − 1)` (NumPy's default); `0.0` for no
/// values. Reorders `values`.
fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let rank = q / 100.0 * (n - 1) as f64;
    let lo = (libm::floor(rank) as usize).min(n - 1);
    let frac = rank - lo as f64;
    let (_, &mut lo_value, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if frac == 0.0 || above.is_empty() {
        return lo_value;
    }
    let hi_value = above.iter().copied().fold(f64::INFINITY, f64::min);
    lo_value + (hi_value - lo_value) * frac
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        libm::fabs(a - b) <= 1e-9 * (1.0 + libm::fabs(b))
    }

    /// A `dims` volume with the box `lo .. hi` (exclusive) set.
    fn cuboid(dims: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<u8> {
        let mut m = vec![0u8; dims.iter().product()];
        for z in lo[2]..hi[2] {
            for y in lo[1]..hi[1] {
                for x in lo[0]..hi[0] {
                    m[(z * dims[1] + y) * dims[0] + x] = 1;
                }
            }
        }
        m
    }

    #[test]
    fn lower_envelope_matches_brute_force() {
        let f = [
            f64::INFINITY,
            3.0,
            f64::INFINITY,
            0.0,
            7.5,
            f64::INFINITY,
            1.0,
            0.25,
        ];
        for weight in [1.0, 0.81, 25.0] {
            let mut out = [0.0; 8];
            let (mut v, mut z) = ([0usize; 8], [0.0; 9]);
            lower_envelope(&f, weight, &mut out, &mut v, &mut z);
            for (p, &o) in out.iter().enumerate() {
                let want = f
                    .iter()
                    .enumerate()
                    .map(|(q, &fq)| fq + weight * (p as f64 - q as f64).powi(2))
                    .fold(f64::INFINITY, f64::min);
                assert!(close(o, want), "p {p} weight {weight}: {o} vs {want}");
            }
        }
    }

    #[test]
    fn lower_envelope_without_features_is_infinite() {
        let f = [f64::INFINITY; 4];
        let mut out = [0.0; 4];
        lower_envelope(&f, 1.0, &mut out, &mut [0; 4], &mut [0.0; 5]);
        assert!(out.iter().all(|o| o.is_infinite()));
    }

    #[test]
    fn percentile_is_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], 95) = 4 + 0.8 · 6 = 8.8
        let mut v = [10.0, 1.0, 4.0, 3.0, 2.0];
        assert!(close(percentile_linear(&mut v, 95.0), 8.8));
        assert_eq!(percentile_linear(&mut [5.0], 95.0), 5.0);
        assert_eq!(percentile_linear(&mut [], 95.0), 0.0);
        let mut w = [0.0, 1.0];
        assert!(close(percentile_linear(&mut w, 50.0), 0.5));
        assert_eq!(percentile_linear(&mut [3.0, 1.0, 2.0], 100.0), 3.0);
        assert_eq!(percentile_linear(&mut [3.0, 1.0, 2.0], 0.0), 1.0);
    }

    #[test]
    fn bounding_box_and_union() {
        let dims = [6, 5, 4];
        let m = cuboid(dims, [1, 2, 1], [3, 4, 2]);
        let b = BoundingBox::of(&m, dims).unwrap();
        assert_eq!(
            b,
            BoundingBox {
                lo: [1, 2, 1],
                size: [2, 2, 1]
            }
        );
        let other = BoundingBox {
            lo: [4, 0, 3],
            size: [1, 1, 1],
        };
        assert_eq!(
            b.union(&other),
            BoundingBox {
                lo: [1, 0, 1],
                size: [4, 4, 3]
            }
        );
        assert_eq!(BoundingBox::of(&[0; 120], dims), None);
    }

    #[test]
    fn surface_of_a_cube_is_its_shell() {
        let dims = [7, 7, 7];
        let m = cuboid(dims, [1, 1, 1], [6, 6, 6]);
        // 5³ − 3³ voxels on the shell.
        assert_eq!(surface_voxel_count(&m, dims).unwrap(), 125 - 27);
        // Touching the volume border counts as surface: the full volume is all surface
        // except its interior.
        let full = vec![1u8; 7 * 7 * 7];
        assert_eq!(surface_voxel_count(&full, dims).unwrap(), 343 - 125);
    }

    #[test]
    fn single_voxels_anisotropic() {
        let dims = [5, 4, 3];
        let spacing = [0.5, 2.0, 3.0];
        let a = cuboid(dims, [0, 0, 0], [1, 1, 1]);
        let b = cuboid(dims, [4, 3, 2], [5, 4, 3]);
        let d = surface_distances(&a, &b, dims, spacing).unwrap();
        let want = libm::sqrt(2.0f64.powi(2) + 6.0f64.powi(2) + 6.0f64.powi(2));
        assert!(close(d.hausdorff_mm.unwrap(), want));
        assert!(close(d.hausdorff95_mm.unwrap(), want));
        assert!(close(d.assd_mm.unwrap(), want));
        assert_eq!((d.pred_surface_voxels, d.truth_surface_voxels), (1, 1));
    }

    #[test]
    fn empty_conventions() {
        let dims = [3, 3, 3];
        let empty = [0u8; 27];
        let one = cuboid(dims, [1, 1, 1], [2, 2, 2]);
        let both = surface_distances(&empty, &empty, dims, [1.0; 3]).unwrap();
        assert_eq!(both, SurfaceDistances::BOTH_EMPTY);
        assert!(!both.is_infinite());
        for (p, t) in [(&empty[..], &one[..]), (&one[..], &empty[..])] {
            let d = surface_distances(p, t, dims, [1.0; 3]).unwrap();
            assert!(d.is_infinite());
            assert_eq!(
                (d.hausdorff_mm, d.hausdorff95_mm, d.assd_mm),
                (None, None, None)
            );
            assert_eq!(d.pred_surface_voxels + d.truth_surface_voxels, 1);
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let dims = [2, 2, 2];
        let m = [0u8; 8];
        assert_eq!(
            surface_distances(&m[..7], &m, dims, [1.0; 3]),
            Err(SurfaceError::LengthMismatch {
                mask: "prediction",
                dims,
                expected: 8,
                got: 7
            })
        );
        assert!(matches!(
            surface_distances(&m, &m[..4], dims, [1.0; 3]),
            Err(SurfaceError::LengthMismatch { mask: "truth", .. })
        ));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                surface_distances(&m, &m, dims, [1.0, bad, 1.0]),
                Err(SurfaceError::InvalidSpacing { .. })
            ));
        }
        assert_eq!(
            surface_distances(&m, &m, [usize::MAX, 2, 1], [1.0; 3]),
            Err(SurfaceError::TooManyVoxels {
                dims: [usize::MAX, 2, 1]
            })
        );
    }
}
