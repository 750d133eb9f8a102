//! Reading an Enhanced CT instance holds one frame, not the instance: while a study's raw
//! dynamic series (one multi-frame instance, about 13 MB of pixel data) is checked as the
//! Storage SCP checks it and written to its case folder, the heap's peak stays a small
//! fraction of that instance — stored natively, deflated (dcmconv +td) and RLE Lossless
//! (dcmcrle) — and the three case folders are byte for byte the same.
//!
//! The heap is measured by a counting global allocator, in a test binary of its own so that
//! no other test allocates beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The counting allocator forwards to the system allocator: the measurement needs it.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use strokeseg_dicom::RecognizerConfig;
use strokeseg_dicom::read::{DicomStudy, InstanceLimits, SeriesKind, validate_instance};
use strokeseg_dicom::write::{PhantomSeriesOptions, write_phantom_study};

/// Live heap bytes, and their peak since the last [`peak_during`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `f`'s result and the heap's peak above its level before `f`, bytes.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

#[test]
fn an_enhanced_ct_dynamic_series_is_read_one_frame_at_a_time() {
    let test = "an_enhanced_ct_dynamic_series_is_read_one_frame_at_a_time";
    let dir = tempfile::tempdir().unwrap();
    let opts = PhantomSeriesOptions {
        multi_frame: true,
        with_dynamic: true,
        ..PhantomSeriesOptions::default()
    };
    let written =
        write_phantom_study(&common::small_case(), &dir.path().join("native"), &opts).unwrap();
    let native: Vec<PathBuf> = written.files().cloned().collect();
    let mut stores = vec![("native", dir.path().join("native"))];
    if let Some(dcmconv) = common::tool("dcmconv", test) {
        common::converted(&dcmconv, &["+td"], &native, &dir.path().join("deflated"));
        stores.push(("deflated", dir.path().join("deflated")));
    }
    if let Some(dcmcrle) = common::tool("dcmcrle", test) {
        common::converted(&dcmcrle, &[], &native, &dir.path().join("rle"));
        stores.push(("rle", dir.path().join("rle")));
    }

    let mut folders = Vec::new();
    for (name, store) in &stores {
        let study = DicomStudy::from_dir(store, &RecognizerConfig::default()).unwrap();
        let dynamic = study
            .series
            .iter()
            .find(|s| matches!(s.kind, SeriesKind::Dynamic { .. }))
            .unwrap_or_else(|| panic!("{name}: no dynamic series"));
        let instance = &dynamic.instances[0];
        assert!(
            dynamic.instances.iter().all(|i| i.path == instance.path),
            "{name}: the dynamic series is not one multi-frame instance"
        );
        let pixel_bytes = instance.pixel_data_bytes() as usize;
        let frame_bytes = pixel_bytes / instance.n_frames as usize;
        assert!(
            pixel_bytes > 8 << 20,
            "{name}: {pixel_bytes} bytes of pixel data: too small to tell one frame from all"
        );
        // Bound: a quarter of the instance (≈ 25 frames of 128 KiB); the whole instance in
        // memory, as before, is four times that.
        let bound = pixel_bytes / 4;

        let (header, validate_peak) =
            peak_during(|| validate_instance(&instance.path, &InstanceLimits::default()));
        assert_eq!(header.unwrap().n_frames, instance.n_frames, "{name}");
        let case = dir.path().join(format!("case-{name}"));
        let (files, read_peak) = peak_during(|| study.write_dynamic_case_folder(&case));
        files.unwrap();
        println!(
            "{name}: instance {:.1} MiB of pixel data in {} frames of {} KiB; heap peak: \
             validating {:.2} MiB, writing the case folder {:.2} MiB (bound {:.2} MiB)",
            pixel_bytes as f64 / (1 << 20) as f64,
            instance.n_frames,
            frame_bytes >> 10,
            validate_peak as f64 / (1 << 20) as f64,
            read_peak as f64 / (1 << 20) as f64,
            bound as f64 / (1 << 20) as f64
        );
        assert!(
            validate_peak < bound,
            "{name}: validating peaked at {validate_peak} bytes"
        );
        assert!(
            read_peak < bound,
            "{name}: reading peaked at {read_peak} bytes"
        );
        // Nothing left behind by the inflated copy of a deflated instance.
        let leftovers: Vec<_> = std::fs::read_dir(&case)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("inflated"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
        folders.push((name, common::case_folder_bytes(&case)));
    }
    let (_, reference) = &folders[0];
    assert_eq!(reference.len(), 2, "CT and CT_4DPWI expected");
    for (name, folder) in &folders[1..] {
        assert!(
            folder == reference,
            "{name}: the case folder differs from the native file's"
        );
    }
}
