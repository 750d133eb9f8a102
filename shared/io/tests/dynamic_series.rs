//! The dynamic series reader and the perfusion computation on small synthetic series written
//! here: ISLES layouts, frame timing, gzip spooling, and every bad-input refusal naming the
//! file (too few frames, flat curves, truncated bolus, frame jumps, NaN, bad frame times,
//! another grid than the CT).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use strokeseg_io::{
    Dtype, DynamicLayout, DynamicOptions, DynamicSeries, FrameInterval, GridTolerance, IoError,
    NiftiWriter, new_header, read_header,
};
use strokeseg_shared::CoreError;
use strokeseg_shared::perfusion::PerfusionConfig;
use strokeseg_shared::perfusion::aif::PerfusionWarning;

const NX: usize = 32;
const NZ: usize = 2;

fn gamma(t: f32, t0: f32, alpha: f32, beta: f32) -> f32 {
    let x = (t - t0) / (alpha * beta);
    if x <= 0.0 {
        0.0
    } else {
        (alpha * (x.ln() + 1.0 - x)).exp()
    }
}

/// A small study: tissue everywhere (40 HU), an artery column at x = 3 (40 % partial
/// volume), a sinus column at x = 28, a skull ring of 1200 HU; deterministic noise.
fn study_value(x: usize, y: usize, t: f32, bolus_t0: f32) -> f32 {
    let artery = |t: f32| 350.0 * gamma(t, bolus_t0, 3.0, 1.5);
    let sinus = |t: f32| 350.0 * 0.75 * gamma(t, bolus_t0 + 4.0, 3.0, 2.0);
    let noise = (((x * 31 + y * 17) as f32 + t * 7.3).sin() * 43758.547).fract() * 4.0 - 2.0;
    if x == 0 || y == 0 || x == NX - 1 || y == NX - 1 {
        return 1200.0 + noise;
    }
    let signal = match x {
        3 => 0.4 * artery(t),
        28 => sinus(t),
        _ => 0.04 * sinus(t - 1.0),
    };
    40.0 + signal + noise
}

struct Series {
    dims: Vec<usize>,
    n_frames: usize,
    dt_s: f32,
    bolus_t0: f32,
    gzip: bool,
    /// (frame, z, x, y, value) overrides.
    poke: Vec<(usize, usize, usize, usize, f32)>,
    /// From this frame on, add this HU to the whole slab (a jump).
    jump: Option<(usize, f32)>,
    units: u8,
    pixdim_t: Option<(usize, f32)>,
}

impl Series {
    fn new(n_frames: usize) -> Series {
        Series {
            dims: vec![NX, NX, NZ, 1, n_frames],
            n_frames,
            dt_s: 1.0,
            bolus_t0: 6.0,
            gzip: false,
            poke: Vec::new(),
            jump: None,
            units: 2 | 8,
            pixdim_t: None,
        }
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!(
            "{name}.{}",
            if self.gzip { "nii.gz" } else { "nii" }
        ));
        let mut header = new_header(&self.dims, [1.0, 1.0, 5.0], [0.0; 3], Dtype::F32).unwrap();
        let t_axis = self.dims.len();
        header.pixdim[t_axis] = self.dt_s;
        header.xyzt_units = self.units;
        if let Some((axis, v)) = self.pixdim_t {
            header.pixdim[axis] = v;
        }
        let mut w = NiftiWriter::create(&path, &header, Dtype::F32).unwrap();
        let mut plane = vec![0f32; NX * NX];
        for k in 0..self.n_frames {
            for z in 0..NZ {
                for y in 0..NX {
                    for x in 0..NX {
                        let mut v = study_value(x, y, k as f32 * self.dt_s, self.bolus_t0);
                        if let Some((from, hu)) = self.jump
                            && k >= from
                        {
                            v += hu;
                        }
                        plane[y * NX + x] = v;
                    }
                }
                for &(f, pz, px, py, v) in &self.poke {
                    if f == k && pz == z {
                        plane[py * NX + px] = v;
                    }
                }
                w.write_slice_f32(&plane).unwrap();
            }
        }
        w.finish().unwrap()
    }
}

fn ct(dir: &Path, spacing_z: f32) -> PathBuf {
    let path = dir.join("ct.nii");
    let header = new_header(&[NX, NX, NZ], [1.0, 1.0, spacing_z], [0.0; 3], Dtype::I16).unwrap();
    let mut w = NiftiWriter::create(&path, &header, Dtype::I16).unwrap();
    for _ in 0..NZ {
        w.write_slice_f32(&vec![40.0; NX * NX]).unwrap();
    }
    w.finish().unwrap()
}

fn open(path: &Path) -> Result<DynamicSeries, IoError> {
    DynamicSeries::open(path, &DynamicOptions::default())
}

fn compute(
    series: &mut DynamicSeries,
) -> Result<strokeseg_shared::perfusion::study::PerfusionSummary, IoError> {
    let config = PerfusionConfig {
        spatial_sigma_px: 1.0,
        ..PerfusionConfig::default()
    };
    series.compute_maps(&config, |_, _| Ok(()))
}

fn perfusion_source(e: &IoError) -> CoreError {
    match e {
        IoError::Perfusion { source, .. } => *source,
        other => panic!("not a perfusion error: {other}"),
    }
}

#[test]
fn layouts_timing_and_gzip_read_the_same_frames() {
    let dir = tempfile::tempdir().unwrap();
    let five = Series::new(40).write(dir.path(), "five");
    let four = Series {
        dims: vec![NX, NX, NZ, 40],
        gzip: true,
        dt_s: 1500.0,
        units: 2 | 16, // ms
        ..Series::new(40)
    }
    .write(dir.path(), "four");
    let spool = tempfile::tempdir().unwrap();
    let mut a = open(&five).unwrap();
    let mut b = DynamicSeries::open(
        &four,
        &DynamicOptions {
            spool_dir: Some(spool.path().to_path_buf()),
            ..DynamicOptions::default()
        },
    )
    .unwrap();
    assert_eq!(a.layout(), DynamicLayout::Xyz1t);
    assert_eq!(b.layout(), DynamicLayout::Xyzt);
    assert_eq!(a.grid().n_frames, 40);
    assert!((a.grid().dt_s - 1.0).abs() < 1e-6);
    assert!((b.grid().dt_s - 1.5).abs() < 1e-6, "ms → s");
    assert!(a.spooled_path().is_none());
    let spooled = b.spooled_path().unwrap().to_path_buf();
    assert!(spooled.starts_with(spool.path()) && spooled.is_file());
    let (mut fa, mut fb) = (vec![0f32; 40 * NX * NX], vec![0f32; 40 * NX * NX]);
    for z in [1, 0, 1] {
        a.read_slice_frames(z, &mut fa).unwrap();
        b.read_slice_frames(z, &mut fb).unwrap();
        // Same voxel values; the 4D file's frames are 1.5 s apart, so compare frame 0 only
        // where the bolus has not arrived.
        assert_eq!(fa[..NX * NX], fb[..NX * NX]);
    }
    drop(b);
    assert!(
        !spooled.exists(),
        "the spooled copy is removed with the series"
    );
    let explicit = DynamicSeries::open(
        &five,
        &DynamicOptions {
            frame_interval: FrameInterval::Seconds(2.0),
            ..DynamicOptions::default()
        },
    )
    .unwrap();
    assert_eq!(explicit.grid().dt_s, 2.0);
}

#[test]
fn a_clean_study_gives_maps_aif_and_vof() {
    let dir = tempfile::tempdir().unwrap();
    let path = Series::new(45).write(dir.path(), "pwi");
    let mut series = open(&path).unwrap();
    series
        .check_grid(
            &read_header(&ct(dir.path(), 5.0), &Default::default())
                .unwrap()
                .1,
            GridTolerance::default(),
        )
        .unwrap();
    let mut tissue = 0;
    let mut cbf_sum = 0.0;
    let summary = series
        .compute_maps(&PerfusionConfig::default(), |z, maps| {
            assert!(z < NZ);
            for (v, &m) in maps.tissue_mask.iter().enumerate() {
                let x = v % NX;
                if m != 0 {
                    assert!(
                        x != 3 && x != 28 && x != 0 && x != NX - 1,
                        "vessel or bone in tissue at x {x}"
                    );
                    tissue += 1;
                    cbf_sum += maps.cbf_ml_100g_min[v];
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(
        summary.arterial.aif_voxels.iter().all(|v| v[0] == 3),
        "{:?}",
        summary.arterial.aif_voxels
    );
    assert!(
        summary.arterial.vof_voxels.iter().all(|v| v[0] == 28),
        "{:?}",
        summary.arterial.vof_voxels
    );
    assert!(
        (summary.arterial.pv_scale - 2.5).abs() < 0.3,
        "{}",
        summary.arterial.pv_scale
    );
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    assert!(tissue > NZ * 20 * 20, "{tissue}");
    assert!(cbf_sum / tissue as f32 > 1.0);
}

#[test]
fn bad_series_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Too few frames.
    let short = Series::new(12).write(dir.path(), "short");
    let e = open(&short).unwrap_err();
    assert!(matches!(
        perfusion_source(&e),
        CoreError::TooFewFrames { n_frames: 12, .. }
    ));
    assert!(e.to_string().contains("short.nii"), "{e}");
    // A 3D image.
    let ct_path = ct(dir.path(), 5.0);
    assert!(matches!(
        open(&ct_path),
        Err(IoError::WrongDimensionality { .. })
    ));
    // No usable frame interval.
    let zero_dt = Series {
        pixdim_t: Some((5, 0.0)),
        ..Series::new(40)
    };
    let mut zero_dt = zero_dt;
    zero_dt.pixdim_t = Some((5, -1.0));
    let p = zero_dt.write(dir.path(), "nodt");
    // pixdim[5] ≤ 0 falls back to pixdim[4] (1.0 from the writer): still opens.
    assert!((open(&p).unwrap().grid().dt_s - 1.0).abs() < 1e-6);
    let huge_dt = Series {
        dt_s: 60.0,
        ..Series::new(40)
    }
    .write(dir.path(), "huge");
    assert!(matches!(
        perfusion_source(&open(&huge_dt).unwrap_err()),
        CoreError::InvalidFrameInterval { .. }
    ));
    // Frame times that do not increase.
    let ok = Series::new(40).write(dir.path(), "ok");
    let mut times: Vec<f32> = (0..40).map(|k| k as f32).collect();
    times[10] = 8.5;
    let e = DynamicSeries::open(
        &ok,
        &DynamicOptions {
            frame_interval: FrameInterval::FrameTimes(times),
            ..DynamicOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(
        perfusion_source(&e),
        CoreError::NonIncreasingFrameTimes { frame_idx: 10, .. }
    ));
    // A series on another grid than the CT.
    let series = open(&ok).unwrap();
    let other_ct = read_header(&ct(dir.path(), 4.0), &Default::default())
        .unwrap()
        .1;
    assert!(matches!(
        series.check_grid(&other_ct, GridTolerance::default()),
        Err(IoError::GridMismatch { .. })
    ));
    // NaN.
    let nan = Series {
        poke: vec![(7, 1, 10, 10, f32::NAN)],
        ..Series::new(40)
    }
    .write(dir.path(), "nan");
    let e = compute(&mut open(&nan).unwrap()).unwrap_err();
    assert!(
        matches!(
            e,
            IoError::NonFiniteVoxels {
                slice_idx: 1,
                frame_idx: 7,
                count: 1,
                ..
            }
        ),
        "{e}"
    );
    // Flat curves: no bolus.
    let flat = Series {
        bolus_t0: 1000.0,
        ..Series::new(40)
    }
    .write(dir.path(), "flat");
    let e = compute(&mut open(&flat).unwrap()).unwrap_err();
    assert!(
        matches!(perfusion_source(&e), CoreError::NoBolus { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("flat.nii"), "{e}");
    // A jump of the whole slab between two frames (motion, table shift).
    let jump = Series {
        jump: Some((25, 30.0)),
        ..Series::new(40)
    }
    .write(dir.path(), "jump");
    let e = compute(&mut open(&jump).unwrap()).unwrap_err();
    assert!(
        matches!(
            perfusion_source(&e),
            CoreError::FrameJump { frame_idx: 25, .. }
        ),
        "{e}"
    );
}

#[test]
fn a_bolus_cut_off_by_the_end_is_a_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let late = Series {
        bolus_t0: 22.0,
        ..Series::new(30)
    }
    .write(dir.path(), "late");
    let summary = compute(&mut open(&late).unwrap()).unwrap();
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| matches!(w, PerfusionWarning::BolusTruncated { .. })),
        "{:?}",
        summary.warnings
    );
}
