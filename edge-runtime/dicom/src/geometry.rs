//! The grid of a series of parallel slices in patient coordinates (DICOM LPS), and its
//! NIfTI (RAS) header: the one conversion between the two conventions.
//!
//! Voxel `(i, j, k)` (NIfTI order: `i` = DICOM column, fastest; `j` = DICOM row; `k` =
//! slice, sorted along the slice normal) sits at
//! `first_position_lps + i·column_spacing·row_cosines + j·row_spacing·column_cosines +
//! k·slice_spacing·normal` (PS3.3 C.7.6.2.1.1); NIfTI's RAS flips the first two axes.

use nifti::NiftiHeader;
use strokeseg_io::{Dtype, new_header};

use crate::DicomError;

/// A stack of `n_slices` parallel `rows × columns` images, evenly spaced along the normal.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeGeometry {
    /// Image columns (NIfTI `nx`).
    pub columns: usize,
    /// Image rows (NIfTI `ny`).
    pub rows: usize,
    /// Slices (NIfTI `nz`).
    pub n_slices: usize,
    /// Pixel Spacing: `[between rows, between columns]` in mm (DICOM order).
    pub pixel_spacing_mm: [f64; 2],
    /// Distance between slice centres along the normal, mm.
    pub slice_spacing_mm: f64,
    /// Slice Thickness, mm (may differ from the spacing: overlapping or gapped slices).
    pub slice_thickness_mm: f64,
    /// Image Position (Patient) of the first slice, LPS mm.
    pub first_position_lps: [f64; 3],
    /// Image Orientation (Patient): direction of a row (increasing column), LPS.
    pub row_cosines: [f64; 3],
    /// Image Orientation (Patient): direction of a column (increasing row), LPS.
    pub column_cosines: [f64; 3],
}

/// `a × b`.
pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// `a · b`.
pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

impl VolumeGeometry {
    /// The axis-aligned grid of a NIfTI image whose affine is diagonal (RAS: `+i` towards
    /// +x, `+j` along +y, `+k` along +z), as the
    /// phantom writes it: `dims = [nx, ny, nz]`, spacing x, y, z, and the RAS position of
    /// voxel (0, 0, 0).
    pub fn from_ras_axis_aligned(
        dims: [usize; 3],
        spacing_mm: [f64; 3],
        origin_ras_mm: [f64; 3],
    ) -> Self {
        VolumeGeometry {
            columns: dims[0],
            rows: dims[1],
            n_slices: dims[2],
            pixel_spacing_mm: [spacing_mm[1], spacing_mm[0]],
            slice_spacing_mm: spacing_mm[2],
            slice_thickness_mm: spacing_mm[2],
            first_position_lps: [-origin_ras_mm[0], -origin_ras_mm[1], origin_ras_mm[2]],
            // +i is +x in RAS, i.e. -x in LPS; likewise +j.
            row_cosines: [-1.0, 0.0, 0.0],
            column_cosines: [0.0, -1.0, 0.0],
        }
    }

    /// The slice normal `row × column` (unit length for orthonormal cosines).
    pub fn normal(&self) -> [f64; 3] {
        cross(self.row_cosines, self.column_cosines)
    }

    /// Image Position (Patient) of slice `k`, LPS mm.
    pub fn position_lps(&self, slice_idx: usize) -> [f64; 3] {
        let n = self.normal();
        let d = self.slice_spacing_mm * slice_idx as f64;
        [
            self.first_position_lps[0] + d * n[0],
            self.first_position_lps[1] + d * n[1],
            self.first_position_lps[2] + d * n[2],
        ]
    }

    /// Pixels per slice.
    pub fn slice_voxels(&self) -> usize {
        self.rows * self.columns
    }

    /// Voxel volume, mL.
    pub fn voxel_volume_ml(&self) -> f64 {
        self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1] * self.slice_spacing_mm / 1000.0
    }

    /// The 4×4 voxel → RAS affine rows (NIfTI sform) of this grid.
    pub fn ras_affine(&self) -> [[f64; 4]; 3] {
        let flip = [-1.0, -1.0, 1.0];
        let n = self.normal();
        let mut rows = [[0.0; 4]; 3];
        for (a, row) in rows.iter_mut().enumerate() {
            *row = [
                flip[a] * self.row_cosines[a] * self.pixel_spacing_mm[1],
                flip[a] * self.column_cosines[a] * self.pixel_spacing_mm[0],
                flip[a] * n[a] * self.slice_spacing_mm,
                flip[a] * self.first_position_lps[a],
            ];
        }
        rows
    }

    /// A NIfTI-1 header of this grid for voxels of `dtype`: sform = [`Self::ras_affine`],
    /// qform the same rotation as a quaternion (both code 1, scanner).
    pub fn nifti_header(&self, dtype: Dtype) -> Result<NiftiHeader, DicomError> {
        let spacing = [
            self.pixel_spacing_mm[1] as f32,
            self.pixel_spacing_mm[0] as f32,
            self.slice_spacing_mm as f32,
        ];
        let a = self.ras_affine();
        let origin = [a[0][3] as f32, a[1][3] as f32, a[2][3] as f32];
        let mut h = new_header(
            &[self.columns, self.rows, self.n_slices],
            spacing,
            origin,
            dtype,
        )?;
        h.srow_x = a[0].map(|v| v as f32);
        h.srow_y = a[1].map(|v| v as f32);
        h.srow_z = a[2].map(|v| v as f32);
        // Rotation columns (unit vectors) of the RAS affine; a proper rotation since the
        // normal is row × column, so qfac = 1.
        let r = |row: usize, col: usize, s: f64| a[row][col] / s;
        let m = [
            [
                r(0, 0, self.pixel_spacing_mm[1]),
                r(0, 1, self.pixel_spacing_mm[0]),
                r(0, 2, self.slice_spacing_mm),
            ],
            [
                r(1, 0, self.pixel_spacing_mm[1]),
                r(1, 1, self.pixel_spacing_mm[0]),
                r(1, 2, self.slice_spacing_mm),
            ],
            [
                r(2, 0, self.pixel_spacing_mm[1]),
                r(2, 1, self.pixel_spacing_mm[0]),
                r(2, 2, self.slice_spacing_mm),
            ],
        ];
        let (b, c, d) = quaternion_bcd(m);
        h.quatern_b = b as f32;
        h.quatern_c = c as f32;
        h.quatern_d = d as f32;
        h.pixdim[0] = 1.0;
        Ok(h)
    }
}

/// The NIfTI quaternion `(b, c, d)` (with `a ≥ 0`) of the rotation matrix `m`.
fn quaternion_bcd(m: [[f64; 3]; 3]) -> (f64, f64, f64) {
    let trace = m[0][0] + m[1][1] + m[2][2];
    let (a, b, c, d);
    if trace > 0.0 {
        let s = 0.5 / (trace + 1.0).sqrt();
        a = 0.25 / s;
        b = (m[2][1] - m[1][2]) * s;
        c = (m[0][2] - m[2][0]) * s;
        d = (m[1][0] - m[0][1]) * s;
    } else if m[0][0] > m[1][1] && m[0][0] > m[2][2] {
        let s = 2.0 * (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt();
        a = (m[2][1] - m[1][2]) / s;
        b = 0.25 * s;
        c = (m[0][1] + m[1][0]) / s;
        d = (m[0][2] + m[2][0]) / s;
    } else if m[1][1] > m[2][2] {
        let s = 2.0 * (1.0 + m[1][1] - m[0][0] - m[2][2]).sqrt();
        a = (m[0][2] - m[2][0]) / s;
        b = (m[0][1] + m[1][0]) / s;
        c = 0.25 * s;
        d = (m[1][2] + m[2][1]) / s;
    } else {
        let s = 2.0 * (1.0 + m[2][2] - m[0][0] - m[1][1]).sqrt();
        a = (m[1][0] - m[0][1]) / s;
        b = (m[0][2] + m[2][0]) / s;
        c = (m[1][2] + m[2][1]) / s;
        d = 0.25 * s;
    }
    if a < 0.0 { (-b, -c, -d) } else { (b, c, d) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_grid_round_trips_to_the_phantom_affine() {
        let g = VolumeGeometry::from_ras_axis_aligned(
            [256, 200, 3],
            [0.9, 0.8, 5.0],
            [-115.0, -100.0, 20.0],
        );
        assert_eq!(g.normal(), [0.0, 0.0, 1.0]);
        assert_eq!(g.position_lps(2), [115.0, 100.0, 30.0]);
        let a = g.ras_affine();
        assert_eq!(a[0], [0.9, 0.0, 0.0, -115.0]);
        assert_eq!(a[1], [0.0, 0.8, 0.0, -100.0]);
        assert_eq!(a[2], [0.0, 0.0, 5.0, 20.0]);
        let (b, c, d) = quaternion_bcd([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!((b, c, d), (0.0, 0.0, 0.0));
    }
}
