//! Received instances → series → a study the segmenter reads: headers (read up to the pixel
//! data), validation of the pixel module, grouping by Study/Series Instance UID,
//! recognition (perfusion map, plain CT, raw dynamic CTP series), geometry (IPP/IOP, Pixel
//! Spacing, slices sorted along the normal; tilt, uneven spacing, mixed orientations or
//! sizes refused, naming the series) and, finally, the case folder of NIfTI volumes that
//! `strokeseg_io::Study` opens like any other study: one study type for NIfTI and DICOM.
//!
//! A multi-frame (Enhanced CT) instance enters the same path as one header per frame
//! ([`InstanceHeader::frames`]: geometry, rescale and time point from the functional
//! groups), so grouping, recognition and geometry are those of single-frame images.
//!
//! Memory: one frame's pixel data at a time, whatever the series length or the number of
//! frames of an instance: pixel data is found by offset and read frame by frame
//! ([`crate::pixels`], [`SliceReader`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_dictionary_std::uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_object::OpenFileOptions;
use strokeseg_io::{CaseFiles, Dtype, NiftiWriter};
use strokeseg_shared::modality::Modality;

use crate::attr::{Object, opt_f64s, opt_str, req_f64n, req_str, req_u32, strs_upper};
use crate::geometry::{VolumeGeometry, cross, dot};
use crate::write::StudyAttributes;
use crate::{DicomError, RecognizerConfig};

/// Bounds on an instance before anything sized by it is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimits {
    /// Most rows or columns (CT: 512–1024).
    pub max_rows_columns: u32,
    /// Most frames in one instance.
    pub max_frames: u32,
    /// Largest instance file, bytes.
    pub max_file_bytes: u64,
}

impl Default for InstanceLimits {
    fn default() -> Self {
        InstanceLimits {
            max_rows_columns: 4096,
            max_frames: 4096,
            max_file_bytes: 512 << 20,
        }
    }
}

/// What a reader needs of one instance, read without its pixel data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceHeader {
    /// The file.
    pub path: PathBuf,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// Modality (`CT`, `OT`, …).
    pub modality: String,
    /// Series Description.
    pub series_description: String,
    /// Image Type values, upper case.
    pub image_type: Vec<String>,
    /// Derivation Description.
    pub derivation: String,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub columns: u32,
    /// Number of Frames (1 when absent).
    pub n_frames: u32,
    /// Samples per Pixel.
    pub samples_per_pixel: u32,
    /// Photometric Interpretation.
    pub photometric: String,
    /// Bits Allocated.
    pub bits_allocated: u32,
    /// Pixel Representation (0 unsigned, 1 signed).
    pub signed: bool,
    /// Image Position (Patient), LPS mm.
    pub position_lps: Option<[f64; 3]>,
    /// Image Orientation (Patient).
    pub orientation: Option<[f64; 6]>,
    /// Pixel Spacing `[between rows, between columns]`, mm.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// Slice Thickness, mm.
    pub slice_thickness_mm: Option<f64>,
    /// Gantry/Detector Tilt, degrees.
    pub gantry_tilt_deg: f64,
    /// Rescale Slope (1 when absent).
    pub rescale_slope: f64,
    /// Rescale Intercept (0 when absent).
    pub rescale_intercept: f64,
    /// The time point of a dynamic series: Temporal Position Index, Temporal Position
    /// Identifier, Acquisition Number, else Content or Acquisition Time (seconds of day).
    pub temporal: Option<f64>,
    /// Patient and study attributes.
    pub study: StudyAttributes,
    /// The frame (0-based) of a multi-frame (Enhanced CT) instance this header stands for,
    /// its geometry, rescale and time taken from the functional groups
    /// ([`InstanceHeader::frames`]); `None` for a single-frame image.
    pub frame: Option<u32>,
    /// Time of day (s) of a frame's Frame Acquisition DateTime (Enhanced CT).
    pub frame_time_s: Option<f64>,
}

fn time_of_day_s(text: &str) -> Option<f64> {
    let digits = text.split('.').next()?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |i: usize| {
        digits
            .get(i..i + 2)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fraction = text
        .split_once('.')
        .and_then(|(_, f)| format!("0.{f}").parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(part(0) * 3600.0 + part(2) * 60.0 + part(4) + fraction)
}

/// The items of the sequence `tag` of `obj`, `None` when absent or not a sequence.
fn sequence_items(obj: &Object, tag: dicom_core::Tag) -> Option<&[Object]> {
    obj.element_opt(tag).ok().flatten()?.items()
}

/// `e` with "frame N: " before its reason.
fn in_frame(e: DicomError, frame: usize) -> DicomError {
    match e {
        DicomError::BadAttribute {
            path,
            attribute,
            reason,
        } => DicomError::BadAttribute {
            path,
            attribute,
            reason: format!("frame {frame}: {reason}"),
        },
        other => other,
    }
}

impl InstanceHeader {
    /// Reads the header of the DICOM file `path` (stops before the pixel data).
    pub fn read(path: &Path) -> Result<InstanceHeader, DicomError> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| DicomError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        InstanceHeader::from_object(&obj, path)
    }

    /// The header of an already parsed object.
    pub fn from_object(obj: &Object, path: &Path) -> Result<InstanceHeader, DicomError> {
        let s = |tag| opt_str(obj, tag).unwrap_or_default();
        let one = |tag, keyword| -> Result<Option<f64>, DicomError> {
            Ok(opt_f64s(obj, tag, keyword, path)?.and_then(|v| v.first().copied()))
        };
        let temporal = match one(tags::TEMPORAL_POSITION_INDEX, "TemporalPositionIndex")? {
            Some(v) => Some(v),
            None => match one(
                tags::TEMPORAL_POSITION_IDENTIFIER,
                "TemporalPositionIdentifier",
            )? {
                Some(v) => Some(v),
                None => match one(tags::ACQUISITION_NUMBER, "AcquisitionNumber")? {
                    Some(v) => Some(v),
                    None => opt_str(obj, tags::CONTENT_TIME)
                        .or_else(|| opt_str(obj, tags::ACQUISITION_TIME))
                        .and_then(|t| time_of_day_s(&t)),
                },
            },
        };
        let has = |tag| opt_str(obj, tag).is_some();
        Ok(InstanceHeader {
            path: path.to_path_buf(),
            sop_class_uid: req_str(obj, tags::SOP_CLASS_UID, "SOPClassUID", path)?,
            sop_instance_uid: req_str(obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID", path)?,
            study_uid: req_str(obj, tags::STUDY_INSTANCE_UID, "StudyInstanceUID", path)?,
            series_uid: req_str(obj, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID", path)?,
            modality: s(tags::MODALITY),
            series_description: s(tags::SERIES_DESCRIPTION),
            image_type: strs_upper(obj, tags::IMAGE_TYPE),
            derivation: s(tags::DERIVATION_DESCRIPTION),
            rows: req_u32(obj, tags::ROWS, "Rows", path)?,
            columns: req_u32(obj, tags::COLUMNS, "Columns", path)?,
            n_frames: if has(tags::NUMBER_OF_FRAMES) {
                req_u32(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames", path)?
            } else {
                1
            },
            samples_per_pixel: req_u32(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", path)?,
            photometric: s(tags::PHOTOMETRIC_INTERPRETATION).to_ascii_uppercase(),
            bits_allocated: req_u32(obj, tags::BITS_ALLOCATED, "BitsAllocated", path)?,
            signed: req_u32(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation", path)? == 1,
            position_lps: opt_f64s(
                obj,
                tags::IMAGE_POSITION_PATIENT,
                "ImagePositionPatient",
                path,
            )?
            .map(|_| {
                req_f64n::<3>(
                    obj,
                    tags::IMAGE_POSITION_PATIENT,
                    "ImagePositionPatient",
                    path,
                )
            })
            .transpose()?,
            orientation: opt_f64s(
                obj,
                tags::IMAGE_ORIENTATION_PATIENT,
                "ImageOrientationPatient",
                path,
            )?
            .map(|_| {
                req_f64n::<6>(
                    obj,
                    tags::IMAGE_ORIENTATION_PATIENT,
                    "ImageOrientationPatient",
                    path,
                )
            })
            .transpose()?,
            pixel_spacing_mm: opt_f64s(obj, tags::PIXEL_SPACING, "PixelSpacing", path)?
                .map(|_| req_f64n::<2>(obj, tags::PIXEL_SPACING, "PixelSpacing", path))
                .transpose()?,
            slice_thickness_mm: one(tags::SLICE_THICKNESS, "SliceThickness")?,
            gantry_tilt_deg: one(tags::GANTRY_DETECTOR_TILT, "GantryDetectorTilt")?.unwrap_or(0.0),
            rescale_slope: one(tags::RESCALE_SLOPE, "RescaleSlope")?.unwrap_or(1.0),
            rescale_intercept: one(tags::RESCALE_INTERCEPT, "RescaleIntercept")?.unwrap_or(0.0),
            temporal,
            study: StudyAttributes::from_object(obj),
            frame: None,
            frame_time_s: None,
        })
    }

    /// Reads the header of `path` as the images it holds: itself for a single-frame image,
    /// one header per frame for a multi-frame (Enhanced CT) instance ([`Self::frames`]).
    pub fn read_frames(path: &Path) -> Result<Vec<InstanceHeader>, DicomError> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| DicomError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        InstanceHeader::from_object(&obj, path)?.frames(&obj)
    }

    /// The images of this instance (`obj` is its data set): itself when it has no
    /// Per-frame Functional Groups Sequence; otherwise one header per frame, each as a
    /// single-frame image would be (Image Position/Orientation (Patient) from the Plane
    /// Position/Orientation Sequences, Pixel Spacing and Slice Thickness from the Pixel
    /// Measures Sequence, Rescale Slope/Intercept from the Pixel Value Transformation
    /// Sequence, each from the frame's functional group, else the shared one; Temporal
    /// Position Index and Frame Acquisition DateTime from the Frame Content Sequence).
    /// Errors name the file and the frame: a per-frame sequence whose length is not
    /// Number of Frames, a missing attribute a frame needs, frames of several orientations.
    pub fn frames(self, obj: &Object) -> Result<Vec<InstanceHeader>, DicomError> {
        let path = self.path.clone();
        let bad = |attribute: &'static str, reason: String| DicomError::BadAttribute {
            path: path.clone(),
            attribute,
            reason,
        };
        let per_frame = match sequence_items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE) {
            Some(items) => items,
            None if self.n_frames > 1 => {
                return Err(bad(
                    "PerFrameFunctionalGroupsSequence",
                    format!(
                        "missing in a multi-frame instance of {} frames",
                        self.n_frames
                    ),
                ));
            }
            None => return Ok(vec![self]),
        };
        if per_frame.len() != self.n_frames as usize {
            return Err(bad(
                "PerFrameFunctionalGroupsSequence",
                format!(
                    "{} items for NumberOfFrames {}",
                    per_frame.len(),
                    self.n_frames
                ),
            ));
        }
        let shared = sequence_items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .and_then(|items| items.first());
        let mut out = Vec::with_capacity(per_frame.len());
        let mut first_orientation: Option<[f64; 6]> = None;
        for (k, group) in per_frame.iter().enumerate() {
            let frame = k + 1;
            // The macro item `macro_tag` of this frame's functional group, else the shared.
            let item = |macro_tag| {
                [Some(group), shared]
                    .into_iter()
                    .flatten()
                    .find_map(|g| sequence_items(g, macro_tag).and_then(|i| i.first()))
            };
            let values =
                |macro_tag, tag, keyword: &'static str| -> Result<Option<Vec<f64>>, DicomError> {
                    match item(macro_tag) {
                        Some(i) => opt_f64s(i, tag, keyword, &path).map_err(|e| in_frame(e, frame)),
                        None => Ok(None),
                    }
                };
            let need = |macro_tag, macro_name: &str, tag, keyword: &'static str, n: usize| {
                let v = values(macro_tag, tag, keyword)?.ok_or_else(|| {
                    bad(
                        keyword,
                        format!(
                            "frame {frame}: missing (no {macro_name} in its or the shared functional group)"
                        ),
                    )
                })?;
                if v.len() != n {
                    return Err(bad(
                        keyword,
                        format!("frame {frame}: {} values, expected {n}: {v:?}", v.len()),
                    ));
                }
                Ok(v)
            };
            let position = need(
                tags::PLANE_POSITION_SEQUENCE,
                "Plane Position Sequence",
                tags::IMAGE_POSITION_PATIENT,
                "ImagePositionPatient",
                3,
            )?;
            let orientation = need(
                tags::PLANE_ORIENTATION_SEQUENCE,
                "Plane Orientation Sequence",
                tags::IMAGE_ORIENTATION_PATIENT,
                "ImageOrientationPatient",
                6,
            )?;
            let spacing = need(
                tags::PIXEL_MEASURES_SEQUENCE,
                "Pixel Measures Sequence",
                tags::PIXEL_SPACING,
                "PixelSpacing",
                2,
            )?;
            let orientation = [
                orientation[0],
                orientation[1],
                orientation[2],
                orientation[3],
                orientation[4],
                orientation[5],
            ];
            match first_orientation {
                None => first_orientation = Some(orientation),
                Some(o)
                    if o.iter()
                        .zip(&orientation)
                        .any(|(a, b)| (a - b).abs() > 1e-4) =>
                {
                    return Err(bad(
                        "ImageOrientationPatient",
                        format!(
                            "frame {frame}: orientation {orientation:?} differs from frame 1's {o:?} (mixed orientations in one instance)"
                        ),
                    ));
                }
                Some(_) => {}
            }
            let one = |macro_tag, tag, keyword| -> Result<Option<f64>, DicomError> {
                Ok(values(macro_tag, tag, keyword)?.and_then(|v| v.first().copied()))
            };
            let content = item(tags::FRAME_CONTENT_SEQUENCE);
            let frame_time_s = content
                .and_then(|c| opt_str(c, tags::FRAME_ACQUISITION_DATE_TIME))
                // `YYYYMMDDHHMMSS.FFFFFF&ZZXX`: the time of day, without the UTC offset.
                .and_then(|dt| {
                    dt.get(8..)
                        .and_then(|t| t.split(['+', '-']).next())
                        .and_then(time_of_day_s)
                });
            let temporal = match one(
                tags::FRAME_CONTENT_SEQUENCE,
                tags::TEMPORAL_POSITION_INDEX,
                "TemporalPositionIndex",
            )? {
                Some(v) => Some(v),
                None => frame_time_s.or(self.temporal),
            };
            let transform = tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE;
            let mut h = self.clone();
            h.frame = Some(k as u32);
            h.position_lps = Some([position[0], position[1], position[2]]);
            h.orientation = Some(orientation);
            h.pixel_spacing_mm = Some([spacing[0], spacing[1]]);
            h.slice_thickness_mm = one(
                tags::PIXEL_MEASURES_SEQUENCE,
                tags::SLICE_THICKNESS,
                "SliceThickness",
            )?
            .or(self.slice_thickness_mm);
            h.rescale_slope =
                one(transform, tags::RESCALE_SLOPE, "RescaleSlope")?.unwrap_or(self.rescale_slope);
            h.rescale_intercept = one(transform, tags::RESCALE_INTERCEPT, "RescaleIntercept")?
                .unwrap_or(self.rescale_intercept);
            if h.rescale_slope == 0.0 {
                return Err(bad("RescaleSlope", format!("frame {frame}: 0")));
            }
            h.temporal = temporal;
            h.frame_time_s = frame_time_s;
            out.push(h);
        }
        Ok(out)
    }

    /// Checks the image pixel module against `limits`: rows and columns in
    /// `1..=max_rows_columns`, Bits Allocated 8 or 16 (1 for a binary SEG), 1 or 3 samples
    /// per pixel, a finite non-zero Rescale Slope.
    pub fn check_pixel_module(&self, limits: &InstanceLimits) -> Result<(), DicomError> {
        let bad = |attribute: &'static str, reason: String| DicomError::BadAttribute {
            path: self.path.clone(),
            attribute,
            reason,
        };
        for (keyword, v) in [("Rows", self.rows), ("Columns", self.columns)] {
            if v == 0 || v > limits.max_rows_columns {
                return Err(bad(
                    keyword,
                    format!("{v}, must be 1..={}", limits.max_rows_columns),
                ));
            }
        }
        if self.n_frames == 0 || self.n_frames > limits.max_frames {
            return Err(bad(
                "NumberOfFrames",
                format!("{}, must be 1..={}", self.n_frames, limits.max_frames),
            ));
        }
        if !matches!(self.bits_allocated, 1 | 8 | 16) {
            return Err(bad(
                "BitsAllocated",
                format!("{}, must be 1, 8 or 16", self.bits_allocated),
            ));
        }
        if !matches!(self.samples_per_pixel, 1 | 3) {
            return Err(bad(
                "SamplesPerPixel",
                format!("{}, must be 1 or 3", self.samples_per_pixel),
            ));
        }
        if self.rescale_slope == 0.0 {
            return Err(bad("RescaleSlope", "0".into()));
        }
        Ok(())
    }

    /// Bytes of native pixel data the header declares.
    pub fn pixel_data_bytes(&self) -> u64 {
        let bits = u64::from(self.rows)
            * u64::from(self.columns)
            * u64::from(self.samples_per_pixel)
            * u64::from(self.n_frames)
            * u64::from(self.bits_allocated);
        bits.div_ceil(8)
    }
}

/// Opens the whole instance `path` (pixel data included) and checks that it can be used:
/// parseable to the end, required attributes present, pixel module within `limits`, pixel
/// data present and as long as the header says. What the Storage SCP runs before it
/// acknowledges an instance.
pub fn validate_instance(
    path: &Path,
    limits: &InstanceLimits,
) -> Result<InstanceHeader, DicomError> {
    let size = std::fs::metadata(path)
        .map_err(|e| DicomError::io(path, e))?
        .len();
    if size > limits.max_file_bytes {
        return Err(DicomError::BadAttribute {
            path: path.to_path_buf(),
            attribute: "PixelData",
            reason: format!(
                "file of {size} bytes, at most {} accepted",
                limits.max_file_bytes
            ),
        });
    }
    // The header up to the pixel data, then one streaming pass over the whole data set:
    // never the pixel data in memory, however many frames the instance has.
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| parse_error(path, e))?;
    let header = InstanceHeader::from_object(&obj, path)?;
    header.check_pixel_module(limits)?;
    crate::pixels::PixelData::validate(path, &header)?;
    // A multi-frame instance whose frames cannot be read is refused before it is acknowledged.
    header.clone().frames(&obj)?;
    Ok(header)
}

/// The parse error of the whole file `path`. A deflated file says so: a corrupt or truncated
/// deflate stream surfaces from the parser as an unreadable data set.
pub(crate) fn parse_error(path: &Path, e: impl std::fmt::Display) -> DicomError {
    let deflated = std::fs::File::open(path).ok().and_then(|f| {
        let mut r = std::io::BufReader::new(f);
        std::io::Read::read_exact(&mut r, &mut [0u8; 128]).ok()?;
        dicom_object::meta::FileMetaTable::from_reader(r).ok()
    });
    let reason = match deflated {
        Some(meta) if meta.transfer_syntax() == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            format!("{e} (Deflated Explicit VR Little Endian: corrupt or truncated deflate stream)")
        }
        _ => e.to_string(),
    };
    DicomError::Parse {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads the grey-level image `header` (a single-frame image or one frame of a
/// multi-frame instance) into `out` (`rows × columns` values), Rescale Slope/Intercept
/// applied. Finds the pixel data each call; [`SliceReader`] keeps a multi-frame instance
/// open between its frames.
pub fn read_slice_f32(header: &InstanceHeader, out: &mut [f32]) -> Result<(), DicomError> {
    SliceReader::default().read(header, out)
}

/// Multi-frame instances a [`SliceReader`] keeps open (a file handle and the pixel data's
/// offsets each): a dynamic series sent as one instance per slice position is read time
/// point by time point, alternating between its instances.
const OPEN_INSTANCES: usize = 64;

/// Reads images one after another ([`read_slice_f32`]), keeping multi-frame instances open:
/// an Enhanced CT instance's pixel data is found (and, deflated, inflated) once and its
/// frames are then read by offset, in any order. Memory: one frame at a time, whatever the
/// number of frames ([`crate::pixels`]).
#[derive(Debug, Default)]
pub struct SliceReader {
    /// Where a deflated instance is inflated (the system's temporary folder when `None`).
    scratch_dir: Option<PathBuf>,
    /// Open multi-frame instances, the most recently read last.
    open: Vec<(PathBuf, crate::pixels::PixelData)>,
    frame: Vec<u8>,
}

impl SliceReader {
    /// A reader that inflates deflated instances into `scratch_dir` (on disk: an Enhanced
    /// CT dynamic series inflates to hundreds of megabytes).
    pub fn new(scratch_dir: &Path) -> SliceReader {
        SliceReader {
            scratch_dir: Some(scratch_dir.to_path_buf()),
            ..SliceReader::default()
        }
    }

    /// Reads `header`'s image into `out`, as [`read_slice_f32`].
    pub fn read(&mut self, header: &InstanceHeader, out: &mut [f32]) -> Result<(), DicomError> {
        let n = header.rows as usize * header.columns as usize;
        if out.len() != n
            || header.samples_per_pixel != 1
            || !matches!(header.bits_allocated, 8 | 16)
        {
            return Err(DicomError::BadAttribute {
                path: header.path.clone(),
                attribute: "PixelData",
                reason: format!(
                    "cannot read as one grey-level slice of {} values into {} ({} samples, {} bits)",
                    n,
                    out.len(),
                    header.samples_per_pixel,
                    header.bits_allocated
                ),
            });
        }
        let mut data = match self.open.iter().position(|(p, _)| *p == header.path) {
            Some(i) => self.open.remove(i).1,
            None => {
                let data =
                    crate::pixels::PixelData::open(&header.path, self.scratch_dir.as_deref())?;
                data.check(header)?;
                data
            }
        };
        data.read_frame(header, header.frame.unwrap_or(0), &mut self.frame)?;
        convert(header, &self.frame, out);
        if header.frame.is_some() {
            if self.open.len() == OPEN_INSTANCES {
                self.open.remove(0);
            }
            self.open.push((header.path.clone(), data));
        }
        Ok(())
    }
}

/// Stored samples `bytes` (one image of `header`) → rescaled values in `out`.
fn convert(header: &InstanceHeader, bytes: &[u8], out: &mut [f32]) {
    let (slope, intercept) = (header.rescale_slope, header.rescale_intercept);
    let apply = |stored: f64| (stored * slope + intercept) as f32;
    match (header.bits_allocated, header.signed) {
        (8, false) => out
            .iter_mut()
            .zip(bytes.iter())
            .for_each(|(o, &b)| *o = apply(f64::from(b))),
        (8, true) => out
            .iter_mut()
            .zip(bytes.iter())
            .for_each(|(o, &b)| *o = apply(f64::from(b as i8))),
        (_, false) => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(o, b)| *o = apply(f64::from(u16::from_le_bytes([b[0], b[1]])))),
        (_, true) => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(o, b)| *o = apply(f64::from(i16::from_le_bytes([b[0], b[1]])))),
    }
}

/// What a series is for the segmenter.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesKind {
    /// A perfusion map (CBF, CBV, MTT or Tmax).
    Map(Modality),
    /// The plain (non-contrast) CT.
    PlainCt,
    /// A raw dynamic CTP series: `n_frames` time points at each of the slice positions.
    Dynamic {
        /// Time points per slice position.
        n_frames: usize,
    },
    /// Not used, with the reason (colour rendering, another modality, …).
    Ignored(String),
}

/// One series, recognised, its instances sorted (dynamic: time point by time point, each
/// sorted along the normal) and its grid checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognisedSeries {
    /// Series Instance UID.
    pub series_uid: String,
    /// Series Description.
    pub description: String,
    /// What it is.
    pub kind: SeriesKind,
    /// The grid (of one time point); `None` for ignored series.
    pub geometry: Option<VolumeGeometry>,
    /// The instances in reading order.
    pub instances: Vec<InstanceHeader>,
}

fn series_error(first: &InstanceHeader, reason: String) -> DicomError {
    DicomError::Series {
        series_uid: first.series_uid.clone(),
        description: first.series_description.clone(),
        reason,
    }
}

/// Upper-case alphanumeric tokens of `text` (`"Tmax (s)"` → `["TMAX", "S"]`).
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_uppercase)
        .collect()
}

/// Whether the token phrase `pattern` occurs in `words`.
fn phrase_in(words: &[String], pattern: &str) -> bool {
    let p = tokens(pattern);
    !p.is_empty() && words.windows(p.len()).any(|w| w == p.as_slice())
}

impl RecognizerConfig {
    /// The map a series' Series Description, Image Type and Derivation Description name,
    /// if exactly one; `Err` with the names when they match several.
    fn map_of(&self, first: &InstanceHeader) -> Result<Option<Modality>, String> {
        let text = format!(
            "{} {} {}",
            first.series_description,
            first.image_type.join(" "),
            first.derivation
        );
        let words = tokens(&text);
        if self.exclude.iter().any(|p| phrase_in(&words, p)) {
            return Ok(None);
        }
        let found: Vec<Modality> = [
            (Modality::Cbf, &self.cbf),
            (Modality::Cbv, &self.cbv),
            (Modality::Mtt, &self.mtt),
            (Modality::Tmax, &self.tmax),
        ]
        .into_iter()
        .filter(|(_, patterns)| patterns.iter().any(|p| phrase_in(&words, p)))
        .map(|(m, _)| m)
        .collect();
        match found.as_slice() {
            [] => Ok(None),
            [m] => Ok(Some(*m)),
            many => Err(format!("description {text:?} names several maps: {many:?}")),
        }
    }
}

/// Recognises one series (all instances share the Series Instance UID) and checks its
/// geometry. An unusable series that is not needed is [`SeriesKind::Ignored`]; a map or
/// CT with broken geometry is an error naming the series and the reason.
pub fn recognise_series(
    mut instances: Vec<InstanceHeader>,
    config: &RecognizerConfig,
) -> Result<RecognisedSeries, DicomError> {
    let Some(first) = instances.first().cloned() else {
        return Err(DicomError::Series {
            series_uid: String::new(),
            description: String::new(),
            reason: "no instances".into(),
        });
    };
    let ignored = |reason: String, instances: Vec<InstanceHeader>| RecognisedSeries {
        series_uid: first.series_uid.clone(),
        description: first.series_description.clone(),
        kind: SeriesKind::Ignored(reason),
        geometry: None,
        instances,
    };
    if first.samples_per_pixel != 1 || !first.photometric.starts_with("MONOCHROME") {
        return Ok(ignored(
            format!("{} rendering (not grey-level values)", first.photometric),
            instances,
        ));
    }
    let map = config
        .map_of(&first)
        .map_err(|reason| series_error(&first, reason))?;
    if map.is_none() && first.modality != "CT" {
        return Ok(ignored(format!("modality {:?}", first.modality), instances));
    }
    if let Some(i) = instances
        .iter()
        .find(|i| i.n_frames > 1 && i.frame.is_none())
    {
        return Err(series_error(
            &first,
            format!(
                "{}: a multi-frame instance not split into its frames (InstanceHeader::read_frames)",
                i.path.display()
            ),
        ));
    }
    // Group by slice position along the normal: more than one instance per position
    // makes a dynamic series.
    let geometry_of = |slices: &[InstanceHeader]| stack_geometry(slices, &first);
    let orientation = first
        .orientation
        .ok_or_else(|| series_error(&first, "no Image Orientation (Patient)".into()))?;
    let normal = cross(
        [orientation[0], orientation[1], orientation[2]],
        [orientation[3], orientation[4], orientation[5]],
    );
    let mut by_position: BTreeMap<i64, Vec<InstanceHeader>> = BTreeMap::new();
    for inst in instances.drain(..) {
        let p = inst.position_lps.ok_or_else(|| {
            series_error(
                &first,
                format!("{}: no Image Position (Patient)", inst.path.display()),
            )
        })?;
        // 1 µm bins: positions of one slice agree to far better than that.
        by_position
            .entry((dot(p, normal) * 1000.0).round() as i64)
            .or_default()
            .push(inst);
    }
    let n_frames = by_position.values().map(Vec::len).max().unwrap_or(1);
    if n_frames > 1 {
        if map.is_some() {
            return Err(series_error(
                &first,
                format!("{n_frames} images at one slice position in a map series"),
            ));
        }
        if let Some((pos, list)) = by_position.iter().find(|(_, l)| l.len() != n_frames) {
            return Err(series_error(
                &first,
                format!(
                    "dynamic series with {} time points at position {:.3} mm but {n_frames} elsewhere",
                    list.len(),
                    *pos as f64 / 1000.0
                ),
            ));
        }
        let mut frames: Vec<Vec<InstanceHeader>> = vec![Vec::new(); n_frames];
        for list in by_position.values_mut() {
            if list.iter().any(|i| i.temporal.is_none()) {
                return Err(series_error(
                    &first,
                    "several images per position but no Temporal Position Index, Acquisition Number or Content/Acquisition Time".into(),
                ));
            }
            list.sort_by(|a, b| {
                a.temporal
                    .partial_cmp(&b.temporal)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            for (t, inst) in list.drain(..).enumerate() {
                frames[t].push(inst);
            }
        }
        let geometry = geometry_of(&frames[0])?;
        return Ok(RecognisedSeries {
            series_uid: first.series_uid.clone(),
            description: first.series_description.clone(),
            kind: SeriesKind::Dynamic { n_frames },
            geometry: Some(geometry),
            instances: frames.into_iter().flatten().collect(),
        });
    }
    let sorted: Vec<InstanceHeader> = by_position.into_values().flatten().collect();
    let geometry = geometry_of(&sorted)?;
    Ok(RecognisedSeries {
        series_uid: first.series_uid.clone(),
        description: first.series_description.clone(),
        kind: map.map_or(SeriesKind::PlainCt, SeriesKind::Map),
        geometry: Some(geometry),
        instances: sorted,
    })
}

/// The grid of single-frame slices already sorted along the normal (one per position).
fn stack_geometry(
    slices: &[InstanceHeader],
    first: &InstanceHeader,
) -> Result<VolumeGeometry, DicomError> {
    let err = |reason: String| series_error(first, reason);
    let orientation = first
        .orientation
        .ok_or_else(|| err("no Image Orientation (Patient)".into()))?;
    let spacing = first
        .pixel_spacing_mm
        .ok_or_else(|| err("no Pixel Spacing".into()))?;
    if spacing.iter().any(|s| *s <= 0.0) {
        return Err(err(format!("Pixel Spacing {spacing:?} must be positive")));
    }
    let row = [orientation[0], orientation[1], orientation[2]];
    let col = [orientation[3], orientation[4], orientation[5]];
    if (dot(row, row) - 1.0).abs() > 1e-3
        || (dot(col, col) - 1.0).abs() > 1e-3
        || dot(row, col).abs() > 1e-3
    {
        return Err(err(format!(
            "Image Orientation (Patient) {orientation:?} is not two orthonormal directions"
        )));
    }
    if first.gantry_tilt_deg.abs() > 1e-3 {
        return Err(err(format!(
            "gantry tilt {} degrees: tilted stacks are not resampled; reconstruct without tilt",
            first.gantry_tilt_deg
        )));
    }
    let normal = cross(row, col);
    let mut positions = Vec::with_capacity(slices.len());
    for s in slices {
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(err(format!(
                "mixed sizes: {}×{} and {}×{} ({})",
                first.rows,
                first.columns,
                s.rows,
                s.columns,
                s.path.display()
            )));
        }
        let o = s.orientation.unwrap_or([0.0; 6]);
        if o.iter()
            .zip(orientation.iter())
            .any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(err(format!(
                "mixed orientations: {orientation:?} and {o:?} ({})",
                s.path.display()
            )));
        }
        let ps = s.pixel_spacing_mm.unwrap_or([0.0; 2]);
        if ps
            .iter()
            .zip(spacing.iter())
            .any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(err(format!("mixed Pixel Spacing: {spacing:?} and {ps:?}")));
        }
        positions.push(s.position_lps.unwrap_or([0.0; 3]));
    }
    let first_position = positions[0];
    let distances: Vec<f64> = positions.iter().map(|p| dot(*p, normal)).collect();
    let slice_spacing = match distances.as_slice() {
        [_] => first.slice_thickness_mm.filter(|t| *t > 0.0).unwrap_or(1.0),
        [a, b, ..] => b - a,
        [] => return Err(err("no slices".into())),
    };
    for (k, pair) in distances.windows(2).enumerate() {
        let step = pair[1] - pair[0];
        if (step - slice_spacing).abs() > (0.01 * slice_spacing).max(0.01) {
            return Err(err(format!(
                "non-uniform slice spacing: {slice_spacing:.3} mm, then {step:.3} mm between slices {} and {}",
                k + 1,
                k + 2
            )));
        }
    }
    for (k, p) in positions.iter().enumerate() {
        // In-plane offset of the slice from the first slice's normal line: a sheared
        // stack, as a gantry tilt without the attribute gives.
        let along = distances[k] - distances[0];
        let offset: f64 = (0..3)
            .map(|a| (p[a] - first_position[a] - along * normal[a]).powi(2))
            .sum::<f64>()
            .sqrt();
        if offset > 0.01 * spacing[0].max(spacing[1]).max(1.0) {
            return Err(err(format!(
                "slice {} is shifted {offset:.3} mm in-plane from the stack's axis (gantry tilt or a sheared stack)",
                k + 1
            )));
        }
    }
    Ok(VolumeGeometry {
        columns: first.columns as usize,
        rows: first.rows as usize,
        n_slices: slices.len(),
        pixel_spacing_mm: spacing,
        slice_spacing_mm: slice_spacing,
        slice_thickness_mm: first.slice_thickness_mm.unwrap_or(slice_spacing),
        first_position_lps: first_position,
        row_cosines: row,
        column_cosines: col,
    })
}

/// Every DICOM file under `dir` (recursively; files whose name ends in `.tmp` are staging
/// files and skipped), headers read, a multi-frame instance as one header per frame
/// ([`InstanceHeader::read_frames`]). Unreadable files are returned beside, with their error.
pub fn scan_dir(dir: &Path) -> Result<(Vec<InstanceHeader>, Vec<DicomError>), DicomError> {
    let mut headers = Vec::new();
    let mut errors = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| DicomError::io(&d, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "dcm") {
                match InstanceHeader::read_frames(&path) {
                    Ok(h) => headers.extend(h),
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    Ok((headers, errors))
}

/// One study's recognised series.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomStudy {
    /// Patient and study attributes (from the first instance).
    pub attributes: StudyAttributes,
    /// The series, by Series Instance UID order.
    pub series: Vec<RecognisedSeries>,
}

impl DicomStudy {
    /// Groups `instances` (all of one study) by series and recognises each. Instances of
    /// another study, and two series recognised as the same map, are errors.
    pub fn from_instances(
        instances: Vec<InstanceHeader>,
        config: &RecognizerConfig,
    ) -> Result<DicomStudy, DicomError> {
        let Some(first) = instances.first() else {
            return Err(DicomError::StudyRefused {
                study_uid: String::new(),
                reason: "no instances".into(),
            });
        };
        let attributes = first.study.clone();
        let study_uid = first.study_uid.clone();
        let mut by_series: BTreeMap<String, Vec<InstanceHeader>> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for inst in instances {
            if inst.study_uid != study_uid {
                return Err(DicomError::StudyRefused {
                    study_uid,
                    reason: format!(
                        "{} belongs to study {}",
                        inst.path.display(),
                        inst.study_uid
                    ),
                });
            }
            if !seen.insert((inst.sop_instance_uid.clone(), inst.frame)) {
                // The same instance twice (a resend under another file name): keep one.
                continue;
            }
            by_series
                .entry(inst.series_uid.clone())
                .or_default()
                .push(inst);
        }
        let mut series = Vec::new();
        for (_, list) in by_series {
            series.push(recognise_series(list, config)?);
        }
        let study = DicomStudy { attributes, series };
        for m in [Modality::Cbf, Modality::Cbv, Modality::Mtt, Modality::Tmax] {
            let names: Vec<&str> = study
                .series
                .iter()
                .filter(|s| s.kind == SeriesKind::Map(m))
                .map(|s| s.description.as_str())
                .collect();
            if names.len() > 1 {
                return Err(DicomError::StudyRefused {
                    study_uid: study.attributes.study_uid.clone(),
                    reason: format!(
                        "{} series recognised as {}: {names:?}",
                        names.len(),
                        m.isles_tag()
                    ),
                });
            }
        }
        Ok(study)
    }

    /// Reads and recognises the study whose instances are under `dir`.
    pub fn from_dir(dir: &Path, config: &RecognizerConfig) -> Result<DicomStudy, DicomError> {
        let (headers, errors) = scan_dir(dir)?;
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        DicomStudy::from_instances(headers, config)
    }

    /// The series of kind `kind`, if any.
    pub fn find(&self, kind: &SeriesKind) -> Option<&RecognisedSeries> {
        self.series.iter().find(|s| &s.kind == kind)
    }

    /// The series the segmenter reads (maps and the plain CT); an error naming what was
    /// found when there is no perfusion map (in particular a study with only the raw
    /// dynamic series, whose maps are not computed yet).
    pub fn segmentable_series(&self) -> Result<Vec<(Modality, &RecognisedSeries)>, DicomError> {
        let mut out: Vec<(Modality, &RecognisedSeries)> = self
            .series
            .iter()
            .filter_map(|s| match s.kind {
                SeriesKind::Map(m) => Some((m, s)),
                _ => None,
            })
            .collect();
        if out.is_empty() {
            let found: Vec<String> = self
                .series
                .iter()
                .map(|s| format!("{:?} ({:?})", s.description, s.kind))
                .collect();
            let reason = if self
                .series
                .iter()
                .any(|s| matches!(s.kind, SeriesKind::Dynamic { .. }))
            {
                "only a raw dynamic CTP series: perfusion maps are not computed from it yet"
                    .to_owned()
            } else {
                "no perfusion map (CBF, CBV, MTT, Tmax) recognised".to_owned()
            };
            return Err(DicomError::StudyRefused {
                study_uid: self.attributes.study_uid.clone(),
                reason: format!("{reason}; series: {}", found.join(", ")),
            });
        }
        if let Some(ct) = self.find(&SeriesKind::PlainCt) {
            out.push((Modality::Ct, ct));
        }
        Ok(out)
    }

    /// For a study without maps but with a raw dynamic series and the plain CT: writes the
    /// CT as `CT.nii` and the dynamic series as `CT_4DPWI.nii` (float32 HU, `[x, y, z, t]`,
    /// one slice at a time, the frame interval from the first position's Acquisition (or
    /// Content) Time in `pixdim[4]`, seconds), the case from which the edge computes the
    /// maps. A refusal naming what is missing otherwise.
    pub fn write_dynamic_case_folder(&self, case_dir: &Path) -> Result<CaseFiles, DicomError> {
        let refuse = |reason: String| DicomError::StudyRefused {
            study_uid: self.attributes.study_uid.clone(),
            reason,
        };
        let dynamic = self
            .series
            .iter()
            .find(|s| matches!(s.kind, SeriesKind::Dynamic { .. }))
            .ok_or_else(|| refuse("no raw dynamic CTP series".into()))?;
        let ct = self.find(&SeriesKind::PlainCt).ok_or_else(|| {
            refuse(
                "only a raw dynamic CTP series and no plain CT: the perfusion maps are computed on the plain CT's grid"
                    .into(),
            )
        })?;
        let SeriesKind::Dynamic { n_frames } = dynamic.kind else {
            return Err(refuse("no raw dynamic CTP series".into()));
        };
        let geometry = dynamic
            .geometry
            .as_ref()
            .ok_or_else(|| DicomError::Series {
                series_uid: dynamic.series_uid.clone(),
                description: dynamic.description.clone(),
                reason: "no geometry".into(),
            })?;
        let per_frame = geometry.n_slices;
        let time_s = |inst: &InstanceHeader| -> Result<f64, DicomError> {
            if let Some(frame) = inst.frame {
                return inst.frame_time_s.ok_or_else(|| DicomError::BadAttribute {
                    path: inst.path.clone(),
                    attribute: "FrameAcquisitionDateTime",
                    reason: format!(
                        "frame {}: missing: the frame interval of the dynamic series is unknown",
                        frame + 1
                    ),
                });
            }
            let obj = OpenFileOptions::new()
                .read_until(tags::PIXEL_DATA)
                .open_file(&inst.path)
                .map_err(|e| DicomError::Parse {
                    path: inst.path.clone(),
                    reason: e.to_string(),
                })?;
            opt_str(&obj, tags::ACQUISITION_TIME)
                .or_else(|| opt_str(&obj, tags::CONTENT_TIME))
                .and_then(|t| time_of_day_s(&t))
                .ok_or_else(|| DicomError::BadAttribute {
                    path: inst.path.clone(),
                    attribute: "AcquisitionTime",
                    reason: "missing: the frame interval of the dynamic series is unknown".into(),
                })
        };
        let (first, last) = match (
            dynamic.instances.first(),
            dynamic
                .instances
                .get((n_frames.saturating_sub(1)) * per_frame),
        ) {
            (Some(f), Some(l)) if n_frames > 1 => (f, l),
            _ => return Err(refuse(format!("{n_frames} time points: too few"))),
        };
        let interval_s = (time_s(last)? - time_s(first)?) / (n_frames - 1) as f64;
        if !(interval_s.is_finite() && interval_s > 0.0) {
            return Err(DicomError::Series {
                series_uid: dynamic.series_uid.clone(),
                description: dynamic.description.clone(),
                reason: format!("frame interval {interval_s} s from the acquisition times"),
            });
        }
        std::fs::create_dir_all(case_dir).map_err(|e| DicomError::io(case_dir, e))?;
        let mut files = BTreeMap::new();
        for (modality, series, frames) in [
            (Modality::Ct, ct, 1usize),
            (Modality::Pwi, dynamic, n_frames),
        ] {
            let g = series.geometry.as_ref().ok_or_else(|| DicomError::Series {
                series_uid: series.series_uid.clone(),
                description: series.description.clone(),
                reason: "no geometry".into(),
            })?;
            let mut header = g.nifti_header(Dtype::F32)?;
            if frames > 1 {
                header.dim[0] = 4;
                header.dim[4] =
                    u16::try_from(frames).map_err(|_| refuse(format!("{frames} time points")))?;
                header.pixdim[4] = interval_s as f32;
                header.xyzt_units = 2 | 8;
            }
            let path = case_dir.join(format!("{}.nii", modality.isles_tag()));
            let mut writer = NiftiWriter::create(&path, &header, Dtype::F32)?;
            let mut slice = vec![0f32; g.slice_voxels()];
            let mut reader = SliceReader::new(case_dir);
            for inst in &series.instances {
                reader.read(inst, &mut slice)?;
                writer.write_slice_f32(&slice)?;
            }
            files.insert(modality, writer.finish()?);
        }
        Ok(CaseFiles {
            case_dir: case_dir.to_path_buf(),
            files,
        })
    }

    /// Writes the maps and the plain CT as `<ISLES tag>.nii` (float32, rescaled values,
    /// the DICOM grid as the NIfTI affine) into `case_dir`, slice by slice, and returns
    /// the case's files for `strokeseg_io::Study::open_files`.
    pub fn write_case_folder(&self, case_dir: &Path) -> Result<CaseFiles, DicomError> {
        std::fs::create_dir_all(case_dir).map_err(|e| DicomError::io(case_dir, e))?;
        let mut files = BTreeMap::new();
        for (modality, series) in self.segmentable_series()? {
            let geometry = series.geometry.as_ref().ok_or_else(|| DicomError::Series {
                series_uid: series.series_uid.clone(),
                description: series.description.clone(),
                reason: "no geometry".into(),
            })?;
            let header = geometry.nifti_header(Dtype::F32)?;
            let path = case_dir.join(format!("{}.nii", modality.isles_tag()));
            let mut writer = NiftiWriter::create(&path, &header, Dtype::F32)?;
            let mut slice = vec![0f32; geometry.slice_voxels()];
            let mut reader = SliceReader::new(case_dir);
            for inst in &series.instances {
                reader.read(inst, &mut slice)?;
                writer.write_slice_f32(&slice)?;
            }
            files.insert(modality, writer.finish()?);
        }
        Ok(CaseFiles {
            case_dir: case_dir.to_path_buf(),
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_match_whole_tokens() {
        let w = tokens("RAPID Tmax>6s (color)");
        assert!(phrase_in(&w, "TMAX"));
        assert!(phrase_in(&w, "color"));
        assert!(!phrase_in(&w, "MAX"));
        assert!(phrase_in(&tokens("Cerebral Blood Flow"), "blood flow"));
        assert_eq!(time_of_day_s("080101.5"), Some(8.0 * 3600.0 + 61.5));
    }
}
