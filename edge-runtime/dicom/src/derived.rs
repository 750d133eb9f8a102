//! The objects returned to PACS, derived from a received source series: a binary DICOM
//! Segmentation of the lesion mask ("ischemic core", coded, per-frame plane positions,
//! referencing every source instance, same Frame of Reference), a Secondary Capture RGB
//! overlay series (labelled derived; "not for diagnostic use" when the model says so) and
//! an Enhanced Structured Report (lesion volume, method, model name/version/SHA-256, alert
//! decision, warnings). Patient and study attributes are copied from the source, Series and
//! SOP Instance UIDs are new, text is written as UTF-8 (`ISO_IR 192`).
//!
//! The caller supplies the mask and the overlay pixels: this module encodes, it does not
//! segment or render.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};

use crate::attr::{
    Object, code, put_ds, put_is, put_monochrome_pixel_module, put_seq, put_str, put_strs, put_u16,
};
use crate::read::{InstanceHeader, RecognisedSeries};
use crate::write::{MANUFACTURER, StudyAttributes, write_object};
use crate::{DicomError, UidRoot};

/// Who made the result: written into every derived object.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// Algorithm (model) name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// SHA-256 of the model file.
    pub model_sha256: String,
    /// Software version of the runtime.
    pub software_version: String,
    /// Whether the results must be labelled "not for diagnostic use" (the phantom-trained
    /// default model).
    pub not_for_diagnostic_use: bool,
}

/// SOP Class UID of the Segmentation ([`write_segmentation`]).
pub const SEGMENTATION_SOP_CLASS_UID: &str = uids::SEGMENTATION_STORAGE;

/// The label every derived object carries when [`Provenance::not_for_diagnostic_use`].
pub const NOT_FOR_DIAGNOSTIC_USE: &str = "NOT FOR DIAGNOSTIC USE";

/// Series numbers and UIDs of the derived series.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedOptions {
    /// Root of the new UIDs.
    pub uid_root: UidRoot,
    /// Series Number of the SEG (the SC gets +1, the SR +2).
    pub first_series_number: u32,
    /// Content Date (`YYYYMMDD`) and Time (`HHMMSS`) of the results.
    pub content_date: String,
    /// Content Time.
    pub content_time: String,
}

fn now_date_time() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let tod = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", tod / 3600, tod / 60 % 60, tod % 60),
    )
}

impl Default for DerivedOptions {
    fn default() -> Self {
        let (content_date, content_time) = now_date_time();
        DerivedOptions {
            uid_root: UidRoot::default(),
            first_series_number: 900,
            content_date,
            content_time,
        }
    }
}

fn common(
    obj: &mut Object,
    study: &StudyAttributes,
    sop_class: &str,
    sop_uid: &str,
    opts: &DerivedOptions,
) {
    study.put_into(obj);
    put_str(obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(obj, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    put_str(
        obj,
        tags::INSTANCE_CREATION_DATE,
        VR::DA,
        &opts.content_date,
    );
    put_str(
        obj,
        tags::INSTANCE_CREATION_TIME,
        VR::TM,
        &opts.content_time,
    );
    put_str(obj, tags::CONTENT_DATE, VR::DA, &opts.content_date);
    put_str(obj, tags::CONTENT_TIME, VR::TM, &opts.content_time);
    put_str(obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
}

fn equipment(obj: &mut Object, p: &Provenance) {
    put_str(obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "strokeseg-edge");
    put_str(obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
    put_str(obj, tags::SOFTWARE_VERSIONS, VR::LO, &p.software_version);
}

fn source_geometry(
    source: &RecognisedSeries,
) -> Result<&crate::geometry::VolumeGeometry, DicomError> {
    source.geometry.as_ref().ok_or_else(|| DicomError::Series {
        series_uid: source.series_uid.clone(),
        description: source.description.clone(),
        reason: "no geometry to derive from".into(),
    })
}

fn source_image_item(source: &InstanceHeader) -> Object {
    let mut item = Object::new_empty();
    put_str(
        &mut item,
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        &source.sop_class_uid,
    );
    put_str(
        &mut item,
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        &source.sop_instance_uid,
    );
    if let Some(frame) = source.frame {
        // A frame of a multi-frame (Enhanced CT) source.
        put_is(
            &mut item,
            tags::REFERENCED_FRAME_NUMBER,
            i64::from(frame) + 1,
        );
    }
    put_seq(
        &mut item,
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        vec![code(
            "121322",
            "DCM",
            "Source image for image processing operation",
        )],
    );
    item
}

/// A Referenced Series Sequence naming every instance of `source` in `instances_tag`
/// (Referenced Instance Sequence in the Common Instance Reference module, Referenced SOP
/// Sequence in SR evidence).
fn referenced_series(source: &RecognisedSeries, instances_tag: Tag) -> Vec<Object> {
    let mut series = Object::new_empty();
    put_str(
        &mut series,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &source.series_uid,
    );
    // The frames of one multi-frame instance reference it once.
    let mut seen = std::collections::BTreeSet::new();
    let instances = source
        .instances
        .iter()
        .filter(|i| seen.insert(i.sop_instance_uid.as_str()))
        .map(|i| {
            let mut item = Object::new_empty();
            put_str(
                &mut item,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &i.sop_class_uid,
            );
            put_str(
                &mut item,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &i.sop_instance_uid,
            );
            item
        })
        .collect();
    put_seq(&mut series, instances_tag, instances);
    vec![series]
}

fn item_with(f: impl FnOnce(&mut Object)) -> Object {
    let mut o = Object::new_empty();
    f(&mut o);
    o
}

/// What a derived object was written as.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenObject {
    /// The file.
    pub path: PathBuf,
    /// Series Instance UID.
    pub series_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
}

/// Writes the binary Segmentation of `mask` (`[slice][row][column]`, non-zero = lesion, one
/// frame per slice of `source` in its sorted order) to `path`.
pub fn write_segmentation(
    path: &Path,
    source: &RecognisedSeries,
    study: &StudyAttributes,
    mask: &[u8],
    provenance: &Provenance,
    opts: &DerivedOptions,
) -> Result<WrittenObject, DicomError> {
    let g = source_geometry(source)?;
    let per_slice = g.slice_voxels();
    if mask.len() != per_slice * source.instances.len() || source.instances.len() != g.n_slices {
        return Err(DicomError::Encode {
            what: "SEG".into(),
            reason: format!(
                "mask of {} voxels for {} slices of {}×{}",
                mask.len(),
                source.instances.len(),
                g.rows,
                g.columns
            ),
        });
    }
    let series_uid = opts.uid_root.generate();
    let sop_uid = opts.uid_root.generate();
    let mut obj = Object::new_empty();
    common(&mut obj, study, uids::SEGMENTATION_STORAGE, &sop_uid, opts);
    equipment(&mut obj, provenance);
    put_str(&mut obj, tags::MODALITY, VR::CS, "SEG");
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_is(
        &mut obj,
        tags::SERIES_NUMBER,
        i64::from(opts.first_series_number),
    );
    let description = if provenance.not_for_diagnostic_use {
        format!("ischemic core ({NOT_FOR_DIAGNOSTIC_USE})")
    } else {
        "ischemic core".to_owned()
    };
    put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &description);
    put_str(
        &mut obj,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &study.frame_of_reference_uid,
    );
    put_str(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    put_is(&mut obj, tags::INSTANCE_NUMBER, 1);
    put_strs(&mut obj, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]);
    put_str(&mut obj, tags::CONTENT_LABEL, VR::CS, "ISCHEMIC_CORE");
    put_str(&mut obj, tags::CONTENT_DESCRIPTION, VR::LO, &description);
    put_str(&mut obj, tags::CONTENT_CREATOR_NAME, VR::PN, "");
    put_str(&mut obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    let segment = item_with(|s| {
        put_u16(s, tags::SEGMENT_NUMBER, &[1]);
        put_str(s, tags::SEGMENT_LABEL, VR::LO, "ischemic core");
        put_seq(
            s,
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            vec![code("49755003", "SCT", "Morphologically Altered Structure")],
        );
        put_seq(
            s,
            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
            vec![code("55641003", "SCT", "Infarct")],
        );
        put_seq(
            s,
            tags::ANATOMIC_REGION_SEQUENCE,
            vec![code("12738006", "SCT", "Brain")],
        );
        put_str(s, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
        put_str(
            s,
            tags::SEGMENT_ALGORITHM_NAME,
            VR::LO,
            &format!("{} {}", provenance.model_name, provenance.model_version),
        );
        put_u16(
            s,
            tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
            &[34_000, 53_000, 50_000],
        );
    });
    put_seq(&mut obj, tags::SEGMENT_SEQUENCE, vec![segment]);
    // Multi-frame dimensions: segment number, then plane position.
    let dimension_uid = opts.uid_root.generate();
    put_seq(
        &mut obj,
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item_with(|i| {
            put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid)
        })],
    );
    let at = |o: &mut Object, tag: Tag, value: Tag| {
        o.put(DataElement::new(
            tag,
            VR::AT,
            PrimitiveValue::Tags(vec![value].into()),
        ));
    };
    let dimension = |pointer: Tag, group: Tag, label: &str| {
        item_with(|i| {
            put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_uid);
            at(i, tags::DIMENSION_INDEX_POINTER, pointer);
            at(i, tags::FUNCTIONAL_GROUP_POINTER, group);
            put_str(i, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        })
    };
    put_seq(
        &mut obj,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dimension(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dimension(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );
    // Shared: pixel measures and orientation. Per frame: content, position, segment, source.
    let shared = item_with(|f| {
        put_seq(
            f,
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item_with(|m| {
                put_ds(m, tags::PIXEL_SPACING, &g.pixel_spacing_mm);
                put_ds(m, tags::SLICE_THICKNESS, &[g.slice_thickness_mm]);
                put_ds(m, tags::SPACING_BETWEEN_SLICES, &[g.slice_spacing_mm]);
            })],
        );
        let mut iop = g.row_cosines.to_vec();
        iop.extend_from_slice(&g.column_cosines);
        put_seq(
            f,
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item_with(|o| {
                put_ds(o, tags::IMAGE_ORIENTATION_PATIENT, &iop)
            })],
        );
    });
    put_seq(
        &mut obj,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    );
    let frames: Vec<Object> = source
        .instances
        .iter()
        .enumerate()
        .map(|(k, inst)| {
            item_with(|f| {
                put_seq(
                    f,
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item_with(|c| {
                        c.put(DataElement::new(
                            tags::DIMENSION_INDEX_VALUES,
                            VR::UL,
                            PrimitiveValue::U32(vec![1, k as u32 + 1].into()),
                        ));
                    })],
                );
                put_seq(
                    f,
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item_with(|p| {
                        put_ds(p, tags::IMAGE_POSITION_PATIENT, &g.position_lps(k))
                    })],
                );
                put_seq(
                    f,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item_with(|s| {
                        put_u16(s, tags::REFERENCED_SEGMENT_NUMBER, &[1])
                    })],
                );
                put_seq(
                    f,
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![item_with(|d| {
                        put_seq(
                            d,
                            tags::SOURCE_IMAGE_SEQUENCE,
                            vec![source_image_item(inst)],
                        );
                        put_seq(
                            d,
                            tags::DERIVATION_CODE_SEQUENCE,
                            vec![code("113076", "DCM", "Segmentation")],
                        );
                    })],
                );
            })
        })
        .collect();
    put_seq(&mut obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames);
    put_seq(
        &mut obj,
        tags::REFERENCED_SERIES_SEQUENCE,
        referenced_series(source, tags::REFERENCED_INSTANCE_SEQUENCE),
    );
    put_is(
        &mut obj,
        tags::NUMBER_OF_FRAMES,
        source.instances.len() as i64,
    );
    put_monochrome_pixel_module(&mut obj, g.rows as u16, g.columns as u16, 1);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(pack_bits(mask).into()),
    ));
    write_object(path, obj, "SEG")?;
    Ok(WrittenObject {
        path: path.to_path_buf(),
        series_uid,
        sop_instance_uid: sop_uid,
    })
}

/// Bit-packs `mask` (non-zero = 1), first pixel in the least significant bit, padded to
/// an even number of bytes (frames run on without padding, PS3.5 8.1.1).
pub fn pack_bits(mask: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; mask.len().div_ceil(8).next_multiple_of(2)];
    for (i, &v) in mask.iter().enumerate() {
        if v != 0 {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// The inverse of [`pack_bits`]: `n` values 0/1.
pub fn unpack_bits(bytes: &[u8], n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| bytes.get(i / 8).map_or(0, |b| (b >> (i % 8)) & 1))
        .collect()
}

/// Writes the overlay as a Secondary Capture series into `dir` (`SC_<k>.dcm`): one RGB
/// image per slice of `source` (`rgb` is `[slice][row][column][r, g, b]`), derived from
/// and referencing the source slice, labelled "not for diagnostic use" when the provenance
/// says so. [`OverlaySeriesWriter`] does the same one slice at a time.
pub fn write_overlay_series(
    dir: &Path,
    source: &RecognisedSeries,
    study: &StudyAttributes,
    rgb: &[u8],
    provenance: &Provenance,
    opts: &DerivedOptions,
) -> Result<Vec<WrittenObject>, DicomError> {
    let g = source_geometry(source)?;
    let per_slice = g.slice_voxels() * 3;
    if rgb.len() != per_slice * source.instances.len() {
        return Err(DicomError::Encode {
            what: "overlay".into(),
            reason: format!(
                "{} bytes of RGB for {} slices of {}×{}",
                rgb.len(),
                source.instances.len(),
                g.rows,
                g.columns
            ),
        });
    }
    let mut writer = OverlaySeriesWriter::new(dir, source, study, provenance, opts)?;
    for pixels in rgb.chunks_exact(per_slice) {
        writer.add_slice(pixels)?;
    }
    writer.finish()
}

/// The Secondary Capture overlay series written slice by slice (memory: one slice's
/// object), slice `k` of `source` in its sorted order at the `k`-th call.
#[derive(Debug)]
pub struct OverlaySeriesWriter {
    dir: PathBuf,
    source: RecognisedSeries,
    study: StudyAttributes,
    opts: DerivedOptions,
    rows: usize,
    columns: usize,
    series_uid: String,
    label: String,
    description: String,
    written: Vec<WrittenObject>,
}

impl OverlaySeriesWriter {
    /// Starts the series in `dir` (created).
    pub fn new(
        dir: &Path,
        source: &RecognisedSeries,
        study: &StudyAttributes,
        provenance: &Provenance,
        opts: &DerivedOptions,
    ) -> Result<OverlaySeriesWriter, DicomError> {
        let g = source_geometry(source)?;
        std::fs::create_dir_all(dir).map_err(|e| DicomError::io(dir, e))?;
        let label = if provenance.not_for_diagnostic_use {
            format!(
                "{NOT_FOR_DIAGNOSTIC_USE}: lesion overlay from {} {} (phantom-trained)",
                provenance.model_name, provenance.model_version
            )
        } else {
            format!(
                "lesion overlay from {} {}",
                provenance.model_name, provenance.model_version
            )
        };
        let description = if provenance.not_for_diagnostic_use {
            format!("core overlay ({NOT_FOR_DIAGNOSTIC_USE})")
        } else {
            "core overlay".into()
        };
        Ok(OverlaySeriesWriter {
            dir: dir.to_path_buf(),
            source: source.clone(),
            study: study.clone(),
            opts: opts.clone(),
            rows: g.rows,
            columns: g.columns,
            series_uid: opts.uid_root.generate(),
            label,
            description,
            written: Vec::new(),
        })
    }

    /// Writes the next slice: `pixels` is `[row][column][r, g, b]`.
    pub fn add_slice(&mut self, pixels: &[u8]) -> Result<(), DicomError> {
        let k = self.written.len();
        let inst = self
            .source
            .instances
            .get(k)
            .ok_or_else(|| DicomError::Encode {
                what: "overlay".into(),
                reason: format!(
                    "slice {k} beyond the {} of the source series",
                    self.source.instances.len()
                ),
            })?;
        if pixels.len() != self.rows * self.columns * 3 {
            return Err(DicomError::Encode {
                what: format!("overlay slice {k}"),
                reason: format!(
                    "{} bytes of RGB for {}×{}",
                    pixels.len(),
                    self.rows,
                    self.columns
                ),
            });
        }
        let opts = &self.opts;
        let sop_uid = opts.uid_root.generate();
        let mut obj = Object::new_empty();
        common(
            &mut obj,
            &self.study,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            &sop_uid,
            opts,
        );
        put_str(&mut obj, tags::MODALITY, VR::CS, "OT");
        put_str(
            &mut obj,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &self.series_uid,
        );
        put_is(
            &mut obj,
            tags::SERIES_NUMBER,
            i64::from(opts.first_series_number + 1),
        );
        put_str(
            &mut obj,
            tags::SERIES_DESCRIPTION,
            VR::LO,
            &self.description,
        );
        put_is(&mut obj, tags::INSTANCE_NUMBER, k as i64 + 1);
        put_str(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, "");
        put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
        put_strs(
            &mut obj,
            tags::IMAGE_TYPE,
            VR::CS,
            &["DERIVED", "SECONDARY"],
        );
        put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put_str(&mut obj, tags::DERIVATION_DESCRIPTION, VR::ST, &self.label);
        put_str(&mut obj, tags::IMAGE_COMMENTS, VR::LT, &self.label);
        put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        put_seq(
            &mut obj,
            tags::SOURCE_IMAGE_SEQUENCE,
            vec![source_image_item(inst)],
        );
        put_u16(&mut obj, tags::SAMPLES_PER_PIXEL, &[3]);
        put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        put_u16(&mut obj, tags::PLANAR_CONFIGURATION, &[0]);
        put_u16(&mut obj, tags::ROWS, &[self.rows as u16]);
        put_u16(&mut obj, tags::COLUMNS, &[self.columns as u16]);
        put_u16(&mut obj, tags::BITS_ALLOCATED, &[8]);
        put_u16(&mut obj, tags::BITS_STORED, &[8]);
        put_u16(&mut obj, tags::HIGH_BIT, &[7]);
        put_u16(&mut obj, tags::PIXEL_REPRESENTATION, &[0]);
        let mut bytes = pixels.to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(bytes.into()),
        ));
        let path = self.dir.join(format!("SC_{k:04}.dcm"));
        write_object(&path, obj, &format!("overlay slice {k}"))?;
        self.written.push(WrittenObject {
            path,
            series_uid: self.series_uid.clone(),
            sop_instance_uid: sop_uid,
        });
        Ok(())
    }

    /// The objects written; every slice of the source must have been added.
    pub fn finish(self) -> Result<Vec<WrittenObject>, DicomError> {
        if self.written.len() != self.source.instances.len() {
            return Err(DicomError::Encode {
                what: "overlay".into(),
                reason: format!(
                    "{} of {} slices written",
                    self.written.len(),
                    self.source.instances.len()
                ),
            });
        }
        Ok(self.written)
    }
}

/// What the report states.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportContent {
    /// Lesion (ischemic core) volume, mL.
    pub lesion_volume_ml: f64,
    /// How the mask was made (`U-Net on CBF, CBV, MTT, Tmax`, `threshold rule`).
    pub method: String,
    /// Whether the alert was raised.
    pub alert: bool,
    /// The rule behind the alert decision (`core ≥ 70 mL`).
    pub alert_rule: String,
    /// Warnings (non-finite voxels replaced, low brain coverage, …).
    pub warnings: Vec<String>,
}

const LOCAL_SCHEME: &str = "99STRKSEG";

fn content_item(
    relationship: &str,
    value_type: &str,
    concept: Object,
    f: impl FnOnce(&mut Object),
) -> Object {
    item_with(|i| {
        put_str(i, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
        put_str(i, tags::VALUE_TYPE, VR::CS, value_type);
        put_seq(i, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept]);
        f(i);
    })
}

fn text_item(code_value: &str, meaning: &str, text: &str) -> Object {
    content_item(
        "CONTAINS",
        "TEXT",
        code(code_value, LOCAL_SCHEME, meaning),
        |i| {
            put_str(i, tags::TEXT_VALUE, VR::UT, text);
        },
    )
}

/// Writes the Enhanced SR of `content` to `path`, referencing `source` (its instances as
/// evidence) and the SEG.
pub fn write_report(
    path: &Path,
    source: &RecognisedSeries,
    study: &StudyAttributes,
    seg: &WrittenObject,
    content: &ReportContent,
    provenance: &Provenance,
    opts: &DerivedOptions,
) -> Result<WrittenObject, DicomError> {
    let series_uid = opts.uid_root.generate();
    let sop_uid = opts.uid_root.generate();
    let mut obj = Object::new_empty();
    common(&mut obj, study, uids::ENHANCED_SR_STORAGE, &sop_uid, opts);
    put_str(&mut obj, tags::MODALITY, VR::CS, "SR");
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_is(
        &mut obj,
        tags::SERIES_NUMBER,
        i64::from(opts.first_series_number + 2),
    );
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "ischemic core report",
    );
    put_seq(
        &mut obj,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );
    put_is(&mut obj, tags::INSTANCE_NUMBER, 1);
    put_str(&mut obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_str(&mut obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_seq(
        &mut obj,
        tags::PERFORMED_PROCEDURE_CODE_SEQUENCE,
        Vec::new(),
    );
    // Evidence: the source series and the SEG, in this study.
    let evidence = item_with(|s| {
        put_str(s, tags::STUDY_INSTANCE_UID, VR::UI, &study.study_uid);
        let mut series = referenced_series(source, tags::REFERENCED_SOP_SEQUENCE);
        series.push(item_with(|r| {
            put_str(r, tags::SERIES_INSTANCE_UID, VR::UI, &seg.series_uid);
            put_seq(
                r,
                tags::REFERENCED_SOP_SEQUENCE,
                vec![item_with(|i| {
                    put_str(
                        i,
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        uids::SEGMENTATION_STORAGE,
                    );
                    put_str(
                        i,
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        &seg.sop_instance_uid,
                    );
                })],
            );
        }));
        put_seq(s, tags::REFERENCED_SERIES_SEQUENCE, series);
    });
    put_seq(
        &mut obj,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence],
    );
    // Content tree.
    put_str(&mut obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    put_seq(
        &mut obj,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code("126000", "DCM", "Imaging Measurement Report")],
    );
    put_str(&mut obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut items = vec![content_item(
        "CONTAINS",
        "NUM",
        code("118565006", "SCT", "Volume"),
        |i| {
            put_seq(
                i,
                tags::MEASURED_VALUE_SEQUENCE,
                vec![item_with(|m| {
                    put_ds(m, tags::NUMERIC_VALUE, &[content.lesion_volume_ml]);
                    put_seq(
                        m,
                        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                        vec![code("ml", "UCUM", "milliliter")],
                    );
                })],
            );
        },
    )];
    items.push(text_item(
        "CORE-VOL",
        "Measured structure",
        "ischemic core (lesion mask of the SEG)",
    ));
    items.push(text_item("METHOD", "Method", &content.method));
    items.push(text_item("MODEL", "Model name", &provenance.model_name));
    items.push(text_item(
        "MODEL-VER",
        "Model version",
        &provenance.model_version,
    ));
    items.push(text_item(
        "MODEL-SHA",
        "Model SHA-256",
        &provenance.model_sha256,
    ));
    items.push(text_item(
        "ALERT",
        "Alert decision",
        &format!(
            "{} ({})",
            if content.alert { "ALERT" } else { "no alert" },
            content.alert_rule
        ),
    ));
    for w in &content.warnings {
        items.push(text_item("WARN", "Warning", w));
    }
    if provenance.not_for_diagnostic_use {
        items.push(text_item(
            "DISCLAIMER",
            "Disclaimer",
            &format!("{NOT_FOR_DIAGNOSTIC_USE}: model trained on synthetic phantoms"),
        ));
    }
    put_seq(&mut obj, tags::CONTENT_SEQUENCE, items);
    write_object(path, obj, "SR")?;
    Ok(WrittenObject {
        path: path.to_path_buf(),
        series_uid,
        sop_instance_uid: sop_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_pack_lsb_first_and_round_trip() {
        let mask = [1u8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7];
        let packed = pack_bits(&mask);
        assert_eq!(packed, vec![0b0000_0001, 0b0000_0110]);
        assert_eq!(
            unpack_bits(&packed, mask.len()),
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
        );
        let (d, t) = now_date_time();
        assert_eq!((d.len(), t.len()), (8, 6));
    }
}
