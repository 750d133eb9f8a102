//! Image series as DICOM files: CT Image Storage or Secondary Capture instances, one per
//! slice (and per time point of a dynamic series), with patient/study attributes, geometry,
//! rescale and new UIDs; and a phantom study ([`strokeseg_phantom::PhantomCase`]) as the
//! series a CT console sends (plain CT, CBF, CBV, MTT, Tmax maps, optionally the raw
//! dynamic CTP series: the phantom's indicator-dilution series,
//! [`strokeseg_phantom::DynamicSeries::ctp`], so a study sent without its maps goes through
//! the perfusion computation end to end).
//!
//! Every file is written through [`strokeseg_io::atomic`]. Memory: one instance at a time.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use strokeseg_phantom::PhantomCase;
use strokeseg_shared::modality::Modality;

use crate::attr::{Object, put_ds, put_is, put_monochrome_pixel_module, put_str, put_strs};
use crate::geometry::VolumeGeometry;
use crate::{DicomError, UidRoot, sanitize};

/// The character set everything written here declares (UTF-8).
pub const SPECIFIC_CHARACTER_SET: &str = "ISO_IR 192";
/// Manufacturer written into generated objects.
pub const MANUFACTURER: &str = "strokeseg";

/// Patient and study attributes, copied into every series of the study.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StudyAttributes {
    /// Patient's Name (PN, `Family^Given`).
    pub patient_name: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's Birth Date (`YYYYMMDD` or empty).
    pub patient_birth_date: String,
    /// Patient's Sex (`M`, `F`, `O` or empty).
    pub patient_sex: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Study Date (`YYYYMMDD`).
    pub study_date: String,
    /// Study Time (`HHMMSS`).
    pub study_time: String,
    /// Study ID.
    pub study_id: String,
    /// Accession Number.
    pub accession_number: String,
    /// Study Description.
    pub study_description: String,
    /// Referring Physician's Name.
    pub referring_physician: String,
    /// Frame of Reference UID shared by the study's series.
    pub frame_of_reference_uid: String,
}

impl StudyAttributes {
    /// Reads them from an instance of the study (Frame of Reference included when present).
    pub fn from_object(obj: &Object) -> StudyAttributes {
        let s = |tag| crate::attr::opt_str(obj, tag).unwrap_or_default();
        StudyAttributes {
            patient_name: s(tags::PATIENT_NAME),
            patient_id: s(tags::PATIENT_ID),
            patient_birth_date: s(tags::PATIENT_BIRTH_DATE),
            patient_sex: s(tags::PATIENT_SEX),
            study_uid: s(tags::STUDY_INSTANCE_UID),
            study_date: s(tags::STUDY_DATE),
            study_time: s(tags::STUDY_TIME),
            study_id: s(tags::STUDY_ID),
            accession_number: s(tags::ACCESSION_NUMBER),
            study_description: s(tags::STUDY_DESCRIPTION),
            referring_physician: s(tags::REFERRING_PHYSICIAN_NAME),
            frame_of_reference_uid: s(tags::FRAME_OF_REFERENCE_UID),
        }
    }

    /// Puts the Patient, General Study and SOP Common character set attributes.
    pub fn put_into(&self, obj: &mut Object) {
        put_str(
            obj,
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            SPECIFIC_CHARACTER_SET,
        );
        put_str(obj, tags::PATIENT_NAME, VR::PN, &self.patient_name);
        put_str(obj, tags::PATIENT_ID, VR::LO, &self.patient_id);
        put_str(
            obj,
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            &self.patient_birth_date,
        );
        put_str(obj, tags::PATIENT_SEX, VR::CS, &self.patient_sex);
        put_str(obj, tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
        put_str(obj, tags::STUDY_DATE, VR::DA, &self.study_date);
        put_str(obj, tags::STUDY_TIME, VR::TM, &self.study_time);
        put_str(obj, tags::STUDY_ID, VR::SH, &self.study_id);
        put_str(obj, tags::ACCESSION_NUMBER, VR::SH, &self.accession_number);
        put_str(
            obj,
            tags::STUDY_DESCRIPTION,
            VR::LO,
            &self.study_description,
        );
        put_str(
            obj,
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            &self.referring_physician,
        );
    }
}

/// The storage class of an image series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageClass {
    /// CT Image Storage (`1.2.840.10008.5.1.4.1.1.2`).
    Ct,
    /// Secondary Capture Image Storage (`1.2.840.10008.5.1.4.1.1.7`), as some consoles
    /// export maps.
    SecondaryCapture,
    /// Enhanced CT Image Storage (`1.2.840.10008.5.1.4.1.1.2.1`): the whole series (every
    /// slice of every time point) as one multi-frame instance, geometry, rescale and time
    /// point in the functional groups.
    EnhancedCt,
}

impl ImageClass {
    /// The SOP Class UID.
    pub const fn sop_class_uid(self) -> &'static str {
        match self {
            ImageClass::Ct => uids::CT_IMAGE_STORAGE,
            ImageClass::SecondaryCapture => uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            ImageClass::EnhancedCt => uids::ENHANCED_CT_IMAGE_STORAGE,
        }
    }
}

/// How values are stored: `value = stored · slope + intercept`, stored as unsigned 16 bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescale {
    /// Rescale Slope.
    pub slope: f64,
    /// Rescale Intercept.
    pub intercept: f64,
}

impl Rescale {
    /// The stored value of `value` (rounded, clamped to `0..=65535`).
    pub fn stored(&self, value: f64) -> u16 {
        let s = ((value - self.intercept) / self.slope).round();
        if s.is_nan() {
            0
        } else {
            s.clamp(0.0, 65535.0) as u16
        }
    }
}

/// One series to write.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    /// Storage class.
    pub class: ImageClass,
    /// Series Instance UID.
    pub series_uid: String,
    /// Series Number.
    pub series_number: u32,
    /// Series Description (`CBF`, `Tmax`, `Head 5mm`).
    pub description: String,
    /// Image Type values (`ORIGINAL\PRIMARY\AXIAL`, `DERIVED\SECONDARY\PERFUSION\CBF`).
    pub image_type: Vec<String>,
    /// Derivation Description of derived series.
    pub derivation: Option<String>,
    /// Storage of the values.
    pub rescale: Rescale,
    /// Rescale Type (`HU`, `US` unspecified, or a unit).
    pub rescale_type: String,
    /// Time points of a dynamic series (1 otherwise).
    pub n_frames: usize,
    /// Seconds between time points of a dynamic series.
    pub frame_interval_s: f64,
}

impl SeriesSpec {
    /// The raw dynamic CTP series as a console sends it (series 2, `CTP dynamic`,
    /// `ORIGINAL\PRIMARY\AXIAL`, stored as HU + 1024): `n_frames` time points
    /// `frame_interval_s` apart.
    pub fn raw_dynamic(
        class: ImageClass,
        series_uid: String,
        n_frames: usize,
        frame_interval_s: f64,
    ) -> SeriesSpec {
        SeriesSpec {
            class,
            series_uid,
            series_number: 2,
            description: "CTP dynamic".into(),
            image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "AXIAL".into()],
            derivation: None,
            rescale: Rescale {
                slope: 1.0,
                intercept: -1024.0,
            },
            rescale_type: "HU".into(),
            n_frames,
            frame_interval_s,
        }
    }
}

/// What [`write_series`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenSeries {
    /// Series Description.
    pub description: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// The files, in (frame, slice) order.
    pub files: Vec<PathBuf>,
    /// SOP Instance UIDs of the files, same order.
    pub sop_instance_uids: Vec<String>,
}

/// Writes `spec` on `geometry` into `out_dir/<number>_<description>/`, one file per
/// (frame, slice), or one multi-frame file for [`ImageClass::EnhancedCt`] (the series in
/// memory while it is encoded); `slice(frame, k)` gives the `rows × columns` values of slice `k` at time
/// point `frame` (row-major, NIfTI x fastest), in the series' units. SOP Instance UIDs are
/// derived from the series UID, so the same inputs give the same files.
pub fn write_series(
    out_dir: &Path,
    study: &StudyAttributes,
    spec: &SeriesSpec,
    geometry: &VolumeGeometry,
    uid_root: &UidRoot,
    mut slice: impl FnMut(usize, usize) -> Vec<f64>,
) -> Result<WrittenSeries, DicomError> {
    let dir = out_dir.join(sanitize::path_component(&format!(
        "{:03}_{}",
        spec.series_number, spec.description
    )));
    std::fs::create_dir_all(&dir).map_err(|e| DicomError::io(&dir, e))?;
    let n = geometry.slice_voxels();
    if spec.class == ImageClass::EnhancedCt {
        return write_enhanced_series(&dir, study, spec, geometry, uid_root, slice);
    }
    let mut written = WrittenSeries {
        description: spec.description.clone(),
        series_uid: spec.series_uid.clone(),
        files: Vec::new(),
        sop_instance_uids: Vec::new(),
    };
    for frame in 0..spec.n_frames.max(1) {
        for k in 0..geometry.n_slices {
            let values = slice(frame, k);
            if values.len() != n {
                return Err(DicomError::Encode {
                    what: format!("{} slice {k}", spec.description),
                    reason: format!("{} values, the grid has {n}", values.len()),
                });
            }
            let sop_uid = uid_root.derive(&format!("{}/{frame}/{k}", spec.series_uid));
            let obj = image_object(study, spec, geometry, frame, k, &sop_uid, &values);
            let path = dir.join(format!("{frame:04}_{k:04}.dcm"));
            write_object(&path, obj, &format!("{} slice {k}", spec.description))?;
            written.files.push(path);
            written.sop_instance_uids.push(sop_uid);
        }
    }
    Ok(written)
}

/// Writes `obj` as a DICOM file (Explicit VR Little Endian, file meta from the object's
/// SOP Class/Instance UIDs) atomically to `path`.
pub fn write_object(path: &Path, obj: Object, what: &str) -> Result<(), DicomError> {
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| DicomError::Encode {
            what: what.into(),
            reason: e.to_string(),
        })?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| DicomError::Encode {
        what: what.into(),
        reason: e.to_string(),
    })?;
    strokeseg_io::atomic::write_atomically(path, &bytes)?;
    Ok(())
}

/// `HHMMSS.FFFFFF` of `seconds` after `base` (`HHMMSS`), wrapping at midnight.
fn time_after(base: &str, seconds: f64) -> String {
    let digits: Vec<u32> = base
        .bytes()
        .take(6)
        .map(|b| u32::from(b.wrapping_sub(b'0')) % 10)
        .collect();
    let base_s = match digits.as_slice() {
        [h1, h2, m1, m2, s1, s2] => (h1 * 10 + h2) * 3600 + (m1 * 10 + m2) * 60 + s1 * 10 + s2,
        _ => 0,
    };
    let total = (f64::from(base_s) + seconds).rem_euclid(86_400.0);
    let whole = total.floor() as u32;
    let micros = ((total - total.floor()) * 1e6).round().min(999_999.0) as u32;
    format!(
        "{:02}{:02}{:02}.{micros:06}",
        whole / 3600,
        whole / 60 % 60,
        whole % 60
    )
}

fn image_object(
    study: &StudyAttributes,
    spec: &SeriesSpec,
    geometry: &VolumeGeometry,
    frame: usize,
    slice_idx: usize,
    sop_uid: &str,
    values: &[f64],
) -> Object {
    let mut obj = Object::new_empty();
    study.put_into(&mut obj);
    put_str(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        spec.class.sop_class_uid(),
    );
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    let image_type: Vec<&str> = spec.image_type.iter().map(String::as_str).collect();
    put_strs(&mut obj, tags::IMAGE_TYPE, VR::CS, &image_type);
    put_str(&mut obj, tags::MODALITY, VR::CS, "CT");
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
    put_str(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &spec.series_uid,
    );
    put_is(&mut obj, tags::SERIES_NUMBER, i64::from(spec.series_number));
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &spec.description,
    );
    put_is(
        &mut obj,
        tags::INSTANCE_NUMBER,
        (frame * geometry.n_slices + slice_idx + 1) as i64,
    );
    put_str(&mut obj, tags::PATIENT_POSITION, VR::CS, "HFS");
    put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
    if let Some(derivation) = &spec.derivation {
        put_str(&mut obj, tags::DERIVATION_DESCRIPTION, VR::ST, derivation);
    }
    put_str(
        &mut obj,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &study.frame_of_reference_uid,
    );
    put_str(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    put_ds(
        &mut obj,
        tags::IMAGE_POSITION_PATIENT,
        &geometry.position_lps(slice_idx),
    );
    let mut iop = geometry.row_cosines.to_vec();
    iop.extend_from_slice(&geometry.column_cosines);
    put_ds(&mut obj, tags::IMAGE_ORIENTATION_PATIENT, &iop);
    put_ds(
        &mut obj,
        tags::SLICE_THICKNESS,
        &[geometry.slice_thickness_mm],
    );
    let normal = geometry.normal();
    let position = geometry.position_lps(slice_idx);
    put_ds(
        &mut obj,
        tags::SLICE_LOCATION,
        &[crate::geometry::dot(position, normal)],
    );
    put_ds(&mut obj, tags::PIXEL_SPACING, &geometry.pixel_spacing_mm);
    put_str(&mut obj, tags::KVP, VR::DS, "");
    let acquisition_time = time_after(&study.study_time, frame as f64 * spec.frame_interval_s);
    put_is(&mut obj, tags::ACQUISITION_NUMBER, (frame + 1) as i64);
    put_str(&mut obj, tags::ACQUISITION_TIME, VR::TM, &acquisition_time);
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, &study.study_date);
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, &acquisition_time);
    if spec.n_frames > 1 {
        put_is(
            &mut obj,
            tags::TEMPORAL_POSITION_IDENTIFIER,
            (frame + 1) as i64,
        );
        put_is(
            &mut obj,
            tags::NUMBER_OF_TEMPORAL_POSITIONS,
            spec.n_frames as i64,
        );
    }
    if spec.class == ImageClass::SecondaryCapture {
        put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    }
    put_monochrome_pixel_module(&mut obj, geometry.rows as u16, geometry.columns as u16, 16);
    put_ds(&mut obj, tags::RESCALE_INTERCEPT, &[spec.rescale.intercept]);
    put_ds(&mut obj, tags::RESCALE_SLOPE, &[spec.rescale.slope]);
    put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, &spec.rescale_type);
    let stored: Vec<u16> = values.iter().map(|&v| spec.rescale.stored(v)).collect();
    obj.put(dicom_core::DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(stored.into()),
    ));
    obj
}

/// The Enhanced CT Image instance of `spec` (see [`write_series`]) as `dir/enhanced.dcm`:
/// frames in (time point, slice) order; Pixel Measures, Plane Orientation, Pixel Value
/// Transformation, Frame Anatomy, CT Image Frame Type and Irradiation Event Identification
/// shared; Frame Content (time point, Frame Acquisition DateTime, dimension indices) and
/// Plane Position per frame; the Multi-frame Dimension module indexes by Temporal Position
/// Index (dynamic series) and Image Position (Patient).
fn write_enhanced_series(
    dir: &Path,
    study: &StudyAttributes,
    spec: &SeriesSpec,
    geometry: &VolumeGeometry,
    uid_root: &UidRoot,
    mut slice: impl FnMut(usize, usize) -> Vec<f64>,
) -> Result<WrittenSeries, DicomError> {
    use crate::attr::put_seq;
    let item = |f: &dyn Fn(&mut Object)| {
        let mut o = Object::new_empty();
        f(&mut o);
        o
    };
    let n = geometry.slice_voxels();
    let n_times = spec.n_frames.max(1);
    let dynamic = spec.n_frames > 1;
    let n_frames = n_times * geometry.n_slices;
    let sop_uid = uid_root.derive(&format!("{}/enhanced", spec.series_uid));
    let dimension_uid = uid_root.derive(&format!("{}/dimensions", spec.series_uid));
    let mut obj = Object::new_empty();
    study.put_into(&mut obj);
    put_str(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::ENHANCED_CT_IMAGE_STORAGE,
    );
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    // The phantom's images are synthesised, not acquired: DERIVED (an ORIGINAL frame needs
    // the CT acquisition macros, tube current, exposure, reconstruction…, which would be
    // invented). Value 2 of an Enhanced CT Image Type is PRIMARY only, value 3 its
    // flavour: VOLUME, not AXIAL.
    let mut image_type: Vec<&str> = spec
        .image_type
        .iter()
        .map(|v| match v.as_str() {
            "ORIGINAL" => "DERIVED",
            "SECONDARY" => "PRIMARY",
            "AXIAL" => "VOLUME",
            other => other,
        })
        .collect();
    image_type.resize(image_type.len().max(4), "NONE");
    put_strs(&mut obj, tags::IMAGE_TYPE, VR::CS, &image_type);
    let frame_type = image_type.clone();
    put_str(&mut obj, tags::MODALITY, VR::CS, "CT");
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
    put_str(
        &mut obj,
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        "phantom writer",
    );
    put_str(&mut obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
    put_str(
        &mut obj,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    put_str(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &spec.series_uid,
    );
    put_is(&mut obj, tags::SERIES_NUMBER, i64::from(spec.series_number));
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &spec.description,
    );
    put_is(&mut obj, tags::INSTANCE_NUMBER, 1);
    put_str(&mut obj, tags::PATIENT_POSITION, VR::CS, "HFS");
    put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
    if let Some(derivation) = &spec.derivation {
        put_str(&mut obj, tags::DERIVATION_DESCRIPTION, VR::ST, derivation);
    }
    put_str(
        &mut obj,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &study.frame_of_reference_uid,
    );
    put_str(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    let start_time = time_after(&study.study_time, 0.0);
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, &study.study_date);
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, &start_time);
    put_str(
        &mut obj,
        tags::ACQUISITION_DATE_TIME,
        VR::DT,
        &format!("{}{start_time}", study.study_date),
    );
    if dynamic {
        put_fd(
            &mut obj,
            tags::ACQUISITION_DURATION,
            spec.frame_interval_s * n_times as f64,
        );
    }
    put_is(&mut obj, tags::ACQUISITION_NUMBER, 1);
    put_str(&mut obj, tags::CONTENT_QUALIFICATION, VR::CS, "PRODUCT");
    put_str(&mut obj, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME");
    put_str(&mut obj, tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME");
    put_str(
        &mut obj,
        tags::VOLUME_BASED_CALCULATION_TECHNIQUE,
        VR::CS,
        "NONE",
    );
    put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put_str(&mut obj, tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO");
    put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(&mut obj, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
    put_seq(&mut obj, tags::ACQUISITION_CONTEXT_SEQUENCE, Vec::new());
    put_seq(
        &mut obj,
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(&|o| {
            put_str(o, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid)
        })],
    );
    let mut dimensions = Vec::new();
    let dims: &[(Tag, Tag, &str)] = if dynamic {
        &[
            (
                tags::TEMPORAL_POSITION_INDEX,
                tags::FRAME_CONTENT_SEQUENCE,
                "Time point",
            ),
            (
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "Slice position",
            ),
        ]
    } else {
        &[(
            tags::IMAGE_POSITION_PATIENT,
            tags::PLANE_POSITION_SEQUENCE,
            "Slice position",
        )]
    };
    for &(pointer, group, label) in dims {
        dimensions.push(item(&|o| {
            put_str(o, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid);
            o.put(dicom_core::DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![pointer].into()),
            ));
            o.put(dicom_core::DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![group].into()),
            ));
            put_str(o, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        }));
    }
    put_seq(&mut obj, tags::DIMENSION_INDEX_SEQUENCE, dimensions);
    let mut iop = geometry.row_cosines.to_vec();
    iop.extend_from_slice(&geometry.column_cosines);
    let event_uid = uid_root.derive(&format!("{}/irradiation", spec.series_uid));
    let shared = item(&|g| {
        put_seq(
            g,
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(&|m| {
                put_ds(m, tags::PIXEL_SPACING, &geometry.pixel_spacing_mm);
                put_ds(m, tags::SLICE_THICKNESS, &[geometry.slice_thickness_mm]);
            })],
        );
        put_seq(
            g,
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(&|m| {
                put_ds(m, tags::IMAGE_ORIENTATION_PATIENT, &iop);
            })],
        );
        put_seq(
            g,
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            vec![item(&|m| {
                put_ds(m, tags::RESCALE_INTERCEPT, &[spec.rescale.intercept]);
                put_ds(m, tags::RESCALE_SLOPE, &[spec.rescale.slope]);
                put_str(m, tags::RESCALE_TYPE, VR::LO, &spec.rescale_type);
            })],
        );
        put_seq(
            g,
            tags::FRAME_ANATOMY_SEQUENCE,
            vec![item(&|m| {
                put_seq(
                    m,
                    tags::ANATOMIC_REGION_SEQUENCE,
                    vec![crate::attr::code("12738006", "SCT", "Brain")],
                );
                put_str(m, tags::FRAME_LATERALITY, VR::CS, "B");
            })],
        );
        put_seq(
            g,
            tags::CT_IMAGE_FRAME_TYPE_SEQUENCE,
            vec![item(&|m| {
                put_strs(m, tags::FRAME_TYPE, VR::CS, &frame_type);
                put_str(m, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME");
                put_str(m, tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME");
                put_str(m, tags::VOLUME_BASED_CALCULATION_TECHNIQUE, VR::CS, "NONE");
            })],
        );
        put_seq(
            g,
            tags::IRRADIATION_EVENT_IDENTIFICATION_SEQUENCE,
            vec![item(&|m| {
                put_str(m, tags::IRRADIATION_EVENT_UID, VR::UI, &event_uid);
            })],
        );
    });
    put_seq(
        &mut obj,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    );
    let mut per_frame = Vec::with_capacity(n_frames);
    let mut stored: Vec<u16> = Vec::with_capacity(n_frames * n);
    for t in 0..n_times {
        // The single-frame writer's Acquisition Time of this time point.
        let time = time_after(&study.study_time, t as f64 * spec.frame_interval_s);
        for k in 0..geometry.n_slices {
            let values = slice(t, k);
            if values.len() != n {
                return Err(DicomError::Encode {
                    what: format!(
                        "{} frame {}",
                        spec.description,
                        t * geometry.n_slices + k + 1
                    ),
                    reason: format!("{} values, the grid has {n}", values.len()),
                });
            }
            stored.extend(values.iter().map(|&v| spec.rescale.stored(v)));
            let position = geometry.position_lps(k);
            per_frame.push(item(&|g| {
                put_seq(
                    g,
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(&|c| {
                        let date_time = format!("{}{time}", study.study_date);
                        put_str(c, tags::FRAME_REFERENCE_DATE_TIME, VR::DT, &date_time);
                        put_str(c, tags::FRAME_ACQUISITION_DATE_TIME, VR::DT, &date_time);
                        if dynamic {
                            put_fd(
                                c,
                                tags::FRAME_ACQUISITION_DURATION,
                                1000.0 * spec.frame_interval_s,
                            );
                        }
                        let mut index = vec![k as u32 + 1];
                        if dynamic {
                            c.put(dicom_core::DataElement::new(
                                tags::TEMPORAL_POSITION_INDEX,
                                VR::UL,
                                PrimitiveValue::U32(vec![t as u32 + 1].into()),
                            ));
                            index.insert(0, t as u32 + 1);
                        }
                        c.put(dicom_core::DataElement::new(
                            tags::DIMENSION_INDEX_VALUES,
                            VR::UL,
                            PrimitiveValue::U32(index.into()),
                        ));
                    })],
                );
                put_seq(
                    g,
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(&|p| {
                        put_ds(p, tags::IMAGE_POSITION_PATIENT, &position);
                    })],
                );
            }));
        }
    }
    put_seq(
        &mut obj,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame,
    );
    put_is(&mut obj, tags::NUMBER_OF_FRAMES, n_frames as i64);
    put_monochrome_pixel_module(&mut obj, geometry.rows as u16, geometry.columns as u16, 16);
    obj.put(dicom_core::DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(stored.into()),
    ));
    let path = dir.join("enhanced.dcm");
    write_object(&path, obj, &format!("{} (Enhanced CT)", spec.description))?;
    Ok(WrittenSeries {
        description: spec.description.clone(),
        series_uid: spec.series_uid.clone(),
        files: vec![path],
        sop_instance_uids: vec![sop_uid],
    })
}

/// Sets `tag` (VR FD) to `value`.
fn put_fd(obj: &mut Object, tag: Tag, value: f64) {
    obj.put(dicom_core::DataElement::new(
        tag,
        VR::FD,
        PrimitiveValue::F64(vec![value].into()),
    ));
}

/// How [`write_phantom_study`] writes a phantom case.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSeriesOptions {
    /// Storage class of the four maps (the plain and dynamic CT are CT Image, unless
    /// [`Self::multi_frame`]).
    pub maps_as: ImageClass,
    /// Every series (plain CT, maps, dynamic series) as one Enhanced CT Image instance
    /// ([`ImageClass::EnhancedCt`]), `maps_as` then unused.
    pub multi_frame: bool,
    /// Also write the raw dynamic CTP series (every time point of every slice). The case
    /// must have been generated with the indicator-dilution series
    /// ([`strokeseg_phantom::DynamicSeries::ctp`], see [`phantom_dataset_options`]): the
    /// classic series (one AIF everywhere, no arteries) is refused, since no perfusion
    /// computation finds an arterial input in it.
    pub with_dynamic: bool,
    /// Root of all UIDs.
    pub uid_root: UidRoot,
    /// Names the study: the same key gives the same UIDs (include the dataset seed).
    pub study_key: String,
}

impl Default for PhantomSeriesOptions {
    fn default() -> Self {
        PhantomSeriesOptions {
            maps_as: ImageClass::Ct,
            multi_frame: false,
            with_dynamic: false,
            uid_root: UidRoot::default(),
            study_key: "strokeseg-phantom".into(),
        }
    }
}

/// Dataset options for a DICOM phantom study of `n_slices` slices with a lesion and the
/// indicator-dilution dynamic series ([`strokeseg_phantom::DynamicSeries::ctp`]), as
/// [`write_phantom_study`] needs for [`PhantomSeriesOptions::with_dynamic`].
pub fn phantom_dataset_options(n_slices: usize) -> strokeseg_phantom::DatasetOptions {
    strokeseg_phantom::DatasetOptions {
        min_slices: n_slices,
        max_slices: n_slices,
        lesion_free_fraction: 0.0,
        dynamic: strokeseg_phantom::DynamicSeries::ctp(),
        ..strokeseg_phantom::DatasetOptions::default()
    }
}

/// What [`write_phantom_study`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenStudy {
    /// Patient and study attributes of every series.
    pub study: StudyAttributes,
    /// The grid of every series.
    pub geometry: VolumeGeometry,
    /// The series, plain CT first, then CBF, CBV, MTT, Tmax (then the dynamic series).
    pub series: Vec<WrittenSeries>,
}

impl WrittenStudy {
    /// Every file written.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.series.iter().flat_map(|s| s.files.iter())
    }
}

/// The DICOM description, Image Type value 4 and storage of a phantom modality:
/// CBF and CBV keep the NIfTI's stored integers (slope 1), MTT and Tmax are in ms steps.
fn phantom_map(modality: Modality) -> Option<(&'static str, Rescale, &'static str)> {
    let unit = Rescale {
        slope: 1.0,
        intercept: 0.0,
    };
    let ms = Rescale {
        slope: 0.001,
        intercept: 0.0,
    };
    match modality {
        Modality::Cbf => Some(("CBF", unit, "US")),
        Modality::Cbv => Some(("CBV", unit, "US")),
        Modality::Mtt => Some(("MTT", ms, "S")),
        Modality::Tmax => Some(("Tmax", ms, "S")),
        _ => None,
    }
}

/// Writes `case` into `out_dir` as the series a CT console sends: the plain CT (HU,
/// intercept −1024), the CBF, CBV, MTT and Tmax maps (derived, with their Derivation
/// Description; CBF/CBV values are the NIfTI file's stored values) and, when asked, the raw
/// dynamic series (one instance per time point and slice, Acquisition Number and Temporal
/// Position Identifier per time point; the case's indicator-dilution series, refused when
/// the case has the classic one). The geometry is the phantom NIfTI's, so a DICOM
/// study read back ([`crate::read`]) has the same affine.
pub fn write_phantom_study(
    case: &PhantomCase,
    out_dir: &Path,
    opts: &PhantomSeriesOptions,
) -> Result<WrittenStudy, DicomError> {
    if opts.with_dynamic && !case.dynamic.exact {
        return Err(DicomError::Encode {
            what: format!("the dynamic series of {}", case.case_name()),
            reason: "the case has the classic phantom series (one AIF everywhere, no arteries), \
                     in which no perfusion computation finds an arterial input: generate it \
                     with DynamicSeries::ctp() (write::phantom_dataset_options)"
                .into(),
        });
    }
    let key = format!("{}/{}", opts.study_key, case.case_name());
    let uid = |what: &str| opts.uid_root.derive(&format!("{key}/{what}"));
    let study = StudyAttributes {
        patient_name: format!("Phantom^{}", case.patient()),
        patient_id: case.patient(),
        patient_birth_date: String::new(),
        patient_sex: "O".into(),
        study_uid: uid("study"),
        study_date: "20180101".into(),
        study_time: "080000".into(),
        study_id: format!("{}", case.case_index + 1),
        accession_number: format!("PH{}", case.case_index + 1),
        study_description: "CT perfusion head (phantom)".into(),
        referring_physician: String::new(),
        frame_of_reference_uid: uid("frame-of-reference"),
    };
    let geometry =
        VolumeGeometry::from_ras_axis_aligned(case.dims, case.spacing_mm, case.origin_mm);
    let n = case.slice_voxels();
    let mut series = Vec::new();
    let (ct_class, maps_class) = if opts.multi_frame {
        (ImageClass::EnhancedCt, ImageClass::EnhancedCt)
    } else {
        (ImageClass::Ct, opts.maps_as)
    };
    let ct_spec = SeriesSpec {
        class: ct_class,
        series_uid: uid("series/ct"),
        series_number: 1,
        description: "Head 5mm".into(),
        image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "AXIAL".into()],
        derivation: None,
        rescale: Rescale {
            slope: 1.0,
            intercept: -1024.0,
        },
        rescale_type: "HU".into(),
        n_frames: 1,
        frame_interval_s: 0.0,
    };
    series.push(write_series(
        out_dir,
        &study,
        &ct_spec,
        &geometry,
        &opts.uid_root,
        |_, k| {
            case.ct_hu[k * n..(k + 1) * n]
                .iter()
                .map(|v| v.round())
                .collect()
        },
    )?);
    for (number, modality) in [Modality::Cbf, Modality::Cbv, Modality::Mtt, Modality::Tmax]
        .into_iter()
        .enumerate()
    {
        let (name, rescale, rescale_type) =
            phantom_map(modality).ok_or_else(|| DicomError::Encode {
                what: format!("{modality:?}"),
                reason: "not a perfusion map".into(),
            })?;
        let volume = case.volume(modality).unwrap_or(&[]);
        let gain = case.stored_gain(modality);
        let integer = rescale.slope == 1.0;
        let spec = SeriesSpec {
            class: maps_class,
            series_uid: uid(&format!("series/{name}")),
            series_number: 10 + number as u32,
            description: name.into(),
            image_type: vec![
                "DERIVED".into(),
                "SECONDARY".into(),
                "PERFUSION".into(),
                name.to_ascii_uppercase(),
            ],
            derivation: Some(format!(
                "{name} map by deconvolution of the dynamic CTP series (phantom)"
            )),
            rescale,
            rescale_type: rescale_type.into(),
            n_frames: 1,
            frame_interval_s: 0.0,
        };
        series.push(write_series(
            out_dir,
            &study,
            &spec,
            &geometry,
            &opts.uid_root,
            |_, k| {
                volume
                    .get(k * n..(k + 1) * n)
                    .unwrap_or(&[])
                    .iter()
                    .map(|v| if integer { (v * gain).round() } else { *v })
                    .collect()
            },
        )?);
    }
    if opts.with_dynamic {
        let pwi = case.pwi_hu();
        let n_frames = case.bolus.n_frames;
        let spec = SeriesSpec::raw_dynamic(
            ct_class,
            uid("series/dynamic"),
            n_frames,
            case.bolus.frame_interval_s,
        );
        let nz = case.n_slices();
        series.push(write_series(
            out_dir,
            &study,
            &spec,
            &geometry,
            &opts.uid_root,
            |t, k| {
                let start = (t * nz + k) * n;
                pwi.get(start..start + n)
                    .unwrap_or(&[])
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect()
            },
        )?);
    }
    Ok(WrittenStudy {
        study,
        geometry,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_add_up() {
        assert_eq!(time_after("080000", 0.0), "080000.000000");
        assert_eq!(time_after("080000", 61.5), "080101.500000");
        assert_eq!(time_after("235959", 2.0), "000001.000000");
    }

    #[test]
    fn rescale_clamps() {
        let r = Rescale {
            slope: 1.0,
            intercept: -1024.0,
        };
        assert_eq!(r.stored(-2000.0), 0);
        assert_eq!(r.stored(0.0), 1024);
        assert_eq!(r.stored(f64::NAN), 0);
        assert_eq!(r.stored(1e9), 65535);
    }
}
