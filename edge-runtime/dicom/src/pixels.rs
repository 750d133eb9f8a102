//! Where an instance's pixel data lies in its file, and one frame at a time read from there.
//!
//! One streaming pass over the data set (dicom-parser's lazy reader: every value skipped,
//! none loaded) finds the Pixel Data value's offset and length, or, encapsulated, each
//! fragment's; a frame is then read by offset (native samples) or decoded from its fragment
//! (RLE Lossless, [`crate::rle`]). A Deflated Explicit VR Little Endian instance, whose data
//! set cannot be read by offset, is inflated once into a temporary file (in the folder the
//! caller names, so on disk beside the output rather than in a memory-backed `/tmp`).
//!
//! Memory: one frame, whatever the number of frames of the instance (an Enhanced CT dynamic
//! series of a whole study is one instance of hundreds of megabytes).

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use dicom_dictionary_std::tags;
use dicom_dictionary_std::uids::{
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS,
};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::{DynStatefulDecoder, StatefulDecode};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::DicomError;
use crate::read::InstanceHeader;

/// Where the top-level Pixel Data value lies, in bytes from the start of the file read (the
/// instance, or its inflated data set).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// Native samples: `length` bytes from `offset`.
    Native { offset: u64, length: u64 },
    /// Encapsulated: each fragment after the Basic Offset Table, `(offset, length)`.
    Fragments(Vec<(u64, u32)>),
}

/// A reader that counts the bytes it delivered (dicom-parser's skip advances its position
/// by the length asked for, even where the file ends first).
struct Counting<R> {
    inner: R,
    bytes: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }
}

fn parse_error(path: &Path, reason: impl std::fmt::Display) -> DicomError {
    DicomError::Parse {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Opens `path`, reads its file meta (128-byte preamble or none) and returns the reader at
/// the start of the data set, the transfer syntax UID and the data set's file offset.
fn open_data_set(path: &Path) -> Result<(BufReader<File>, String, u64), DicomError> {
    let file = File::open(path).map_err(|e| DicomError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut head = [0u8; 132];
    let got =
        strokeseg_io::read_up_to(&mut reader, &mut head).map_err(|e| DicomError::io(path, e))?;
    let start = if got == 132 && &head[128..132] == b"DICM" {
        128
    } else if got >= 4 && &head[..4] == b"DICM" {
        0
    } else {
        return Err(parse_error(
            path,
            "no DICM prefix (not a DICOM Part 10 file)",
        ));
    };
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|e| DicomError::io(path, e))?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut reader)
        .map_err(|e| parse_error(path, format!("file meta: {e}")))?;
    let offset = reader
        .stream_position()
        .map_err(|e| DicomError::io(path, e))?;
    Ok((reader, meta.transfer_syntax().to_owned(), offset))
}

/// Walks the data set read from `source` (transfer syntax `ts_uid`, starting at byte
/// `position` of the file) to its end, skipping every value, and returns where the
/// top-level Pixel Data lies. A value or fragment that the file ends before is an error.
fn walk(source: impl Read, ts_uid: &str, position: u64, path: &Path) -> Result<Layout, DicomError> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| parse_error(path, format!("unknown transfer syntax {ts_uid}")))?;
    let delivered = Rc::new(Cell::new(0u64));
    let source = Counting {
        inner: source,
        bytes: Rc::clone(&delivered),
    };
    let decoder =
        DynStatefulDecoder::new_with_ts(source, ts, position).map_err(|e| parse_error(path, e))?;
    let mut reader = LazyDataSetReader::new(decoder);
    // Open sequences, innermost last: `true` for an encapsulated Pixel Data.
    let mut open: Vec<bool> = Vec::new();
    let mut fragments: Option<Vec<(u64, u32)>> = None;
    let mut offset_table_seen = false;
    let mut layout = None;
    let mut end = position;
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| parse_error(path, e))?;
        match token {
            LazyDataToken::SequenceStart { .. } => open.push(false),
            LazyDataToken::PixelSequenceStart => {
                if open.is_empty() {
                    fragments = Some(Vec::new());
                    offset_table_seen = false;
                }
                open.push(true);
            }
            LazyDataToken::SequenceEnd => {
                if open.pop() == Some(true)
                    && open.is_empty()
                    && let Some(f) = fragments.take()
                {
                    layout = Some(Layout::Fragments(f));
                }
            }
            LazyDataToken::LazyValue { header, decoder } => {
                let at = decoder.position();
                if open.is_empty() && header.tag == tags::PIXEL_DATA {
                    layout = Some(Layout::Native {
                        offset: at,
                        length: u64::from(header.len.0),
                    });
                }
                decoder
                    .skip_bytes(header.len.0)
                    .map_err(|e| parse_error(path, e))?;
                end = at + u64::from(header.len.0);
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                let at = decoder.position();
                if open == [true] {
                    if offset_table_seen {
                        if let Some(f) = fragments.as_mut() {
                            f.push((at, len));
                        }
                    } else {
                        offset_table_seen = true;
                    }
                }
                decoder.skip_bytes(len).map_err(|e| parse_error(path, e))?;
                end = at + u64::from(len);
            }
            _ => {}
        }
    }
    let read = position + delivered.get();
    if read < end {
        return Err(parse_error(
            path,
            format!("truncated: a value ends at byte {end} of the data set, the file holds {read}"),
        ));
    }
    layout.ok_or_else(|| DicomError::BadAttribute {
        path: path.to_path_buf(),
        attribute: "PixelData",
        reason: "missing".into(),
    })
}

/// `e` as the parse error of a deflated instance, which says so ([`crate::read`]'s one
/// wording: a corrupt or truncated deflate stream surfaces as an unreadable data set).
fn deflated(e: DicomError) -> DicomError {
    match e {
        DicomError::Parse { path, reason } => crate::read::parse_error(&path, reason),
        other => other,
    }
}

/// An instance's pixel data, opened for reading frames ([`PixelData::read_frame`]).
#[derive(Debug)]
pub(crate) struct PixelData {
    /// The instance (named in errors).
    path: PathBuf,
    /// The file the layout's offsets point into: the instance, or its inflated data set.
    file: File,
    /// The transfer syntax of the pixel data (Explicit VR Little Endian once inflated).
    ts_uid: String,
    layout: Layout,
    /// The inflated copy of a deflated instance, removed on drop.
    _inflated: Option<tempfile::TempPath>,
}

impl PixelData {
    /// Opens the instance `path` and finds its pixel data; a deflated instance is first
    /// inflated into a temporary file in `scratch_dir` (the system's temporary folder when
    /// `None`).
    pub fn open(path: &Path, scratch_dir: Option<&Path>) -> Result<PixelData, DicomError> {
        let (mut reader, ts_uid, position) = open_data_set(path)?;
        if ts_uid != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
            let layout = walk(&mut reader, &ts_uid, position, path)?;
            return Ok(PixelData {
                path: path.to_path_buf(),
                file: reader.into_inner(),
                ts_uid,
                layout,
                _inflated: None,
            });
        }
        let dir = scratch_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let mut tmp = tempfile::Builder::new()
            .prefix(".strokeseg-inflated-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| DicomError::io(&dir, e))?;
        let mut inflater = flate2::read::DeflateDecoder::new(reader);
        std::io::copy(&mut inflater, tmp.as_file_mut())
            .map_err(|e| deflated(parse_error(path, format!("inflating the data set: {e}"))))?;
        let tmp_path = tmp.into_temp_path();
        let file = File::open(&tmp_path).map_err(|e| DicomError::io(&*tmp_path, e))?;
        let layout =
            walk(BufReader::new(&file), EXPLICIT_VR_LITTLE_ENDIAN, 0, path).map_err(deflated)?;
        Ok(PixelData {
            path: path.to_path_buf(),
            file,
            ts_uid: EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            layout,
            _inflated: Some(tmp_path),
        })
    }

    /// Walks the instance `path` to its end and checks its pixel data against `header`
    /// ([`check_layout`]) without keeping anything: a deflated instance is inflated as a
    /// stream, an RLE instance has every frame decoded, one at a time. What the Storage SCP
    /// runs before it acknowledges an instance.
    pub fn validate(path: &Path, header: &InstanceHeader) -> Result<(), DicomError> {
        let (mut reader, ts_uid, position) = open_data_set(path)?;
        if ts_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
            let inflater = BufReader::new(flate2::read::DeflateDecoder::new(reader));
            let layout = walk(inflater, EXPLICIT_VR_LITTLE_ENDIAN, 0, path).map_err(deflated)?;
            return check_layout(&layout, EXPLICIT_VR_LITTLE_ENDIAN, header);
        }
        let layout = walk(&mut reader, &ts_uid, position, path)?;
        check_layout(&layout, &ts_uid, header)?;
        if let Layout::Fragments(_) = layout {
            let mut data = PixelData {
                path: path.to_path_buf(),
                file: reader.into_inner(),
                ts_uid,
                layout,
                _inflated: None,
            };
            let mut frame = Vec::new();
            for k in 0..header.n_frames {
                data.read_frame(header, k, &mut frame)?;
            }
        }
        Ok(())
    }

    /// Checks the pixel data against `header` ([`check_layout`]).
    pub fn check(&self, header: &InstanceHeader) -> Result<(), DicomError> {
        check_layout(&self.layout, &self.ts_uid, header)
    }

    /// Reads frame `frame` (0-based; 0 for a single-frame image) of `header`'s instance into
    /// `out` as native samples (`rows × columns × samples × bits / 8` bytes).
    pub fn read_frame(
        &mut self,
        header: &InstanceHeader,
        frame: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), DicomError> {
        let bad = |reason: String| DicomError::BadAttribute {
            path: self.path.clone(),
            attribute: "PixelData",
            reason,
        };
        let frame_bits = u64::from(header.rows)
            * u64::from(header.columns)
            * u64::from(header.samples_per_pixel)
            * u64::from(header.bits_allocated);
        let frame_bytes = frame_bits.div_ceil(8);
        if frame >= header.n_frames {
            return Err(bad(format!(
                "frame {} of an instance of {} frames",
                frame + 1,
                header.n_frames
            )));
        }
        match &self.layout {
            Layout::Native { offset, length } => {
                let start = u64::from(frame) * frame_bytes;
                if start + frame_bytes > *length {
                    return Err(bad(format!(
                        "frame {}: bytes {start}..{} beyond the {length} of the pixel data",
                        frame + 1,
                        start + frame_bytes
                    )));
                }
                let n = usize::try_from(frame_bytes)
                    .map_err(|_| bad(format!("a frame of {frame_bytes} bytes")))?;
                out.resize(n, 0);
                self.file
                    .seek(SeekFrom::Start(offset + start))
                    .and_then(|_| self.file.read_exact(out))
                    .map_err(|e| DicomError::io(&self.path, e))
            }
            Layout::Fragments(fragments) => {
                let shape = rle_shape(header)?;
                // A single frame may span several fragments; otherwise one per frame.
                let parts: &[(u64, u32)] = if header.n_frames == 1 {
                    fragments
                } else {
                    fragments
                        .get(frame as usize..=frame as usize)
                        .unwrap_or(&[])
                };
                let mut encoded = Vec::with_capacity(parts.iter().map(|p| p.1 as usize).sum());
                for &(offset, len) in parts {
                    let at = encoded.len();
                    encoded.resize(at + len as usize, 0);
                    self.file
                        .seek(SeekFrom::Start(offset))
                        .and_then(|_| self.file.read_exact(&mut encoded[at..]))
                        .map_err(|e| DicomError::io(&self.path, e))?;
                }
                out.resize(shape.frame_bytes(), 0);
                crate::rle::decode_frame(&encoded, shape, out).map_err(|e| {
                    bad(format!(
                        "corrupt RLE Lossless data: frame {}: {e}",
                        frame + 1
                    ))
                })?;
                Ok(())
            }
        }
    }
}

/// The RLE frame shape of `header`, or why it is not decoded.
fn rle_shape(header: &InstanceHeader) -> Result<crate::rle::FrameShape, DicomError> {
    if !header.bits_allocated.is_multiple_of(8) {
        return Err(DicomError::BadAttribute {
            path: header.path.clone(),
            attribute: "PixelData",
            reason: format!(
                "RLE Lossless with {} bits allocated is not decoded (8 or 16)",
                header.bits_allocated
            ),
        });
    }
    Ok(crate::rle::FrameShape {
        pixels: header.rows as usize * header.columns as usize,
        samples_per_pixel: header.samples_per_pixel as usize,
        bytes_per_sample: header.bits_allocated as usize / 8,
    })
}

/// Checks pixel data lying as `layout` in transfer syntax `ts_uid` against `header`: native
/// samples at least as long as the header declares (for a multi-frame instance, whose
/// frames are found by offset, not longer either, one pad byte aside); encapsulated only in
/// RLE Lossless, with one fragment per frame (any number for a single frame).
fn check_layout(layout: &Layout, ts_uid: &str, header: &InstanceHeader) -> Result<(), DicomError> {
    let bad = |reason: String| DicomError::BadAttribute {
        path: header.path.clone(),
        attribute: "PixelData",
        reason,
    };
    match layout {
        Layout::Native { length, .. } => {
            let needed = header.pixel_data_bytes();
            let too_long = header.n_frames > 1 && *length > needed + 1;
            if *length < needed || too_long {
                return Err(bad(format!(
                    "{length} bytes, {} rows × {} columns × {} frames (NumberOfFrames) × {} bits need {needed}",
                    header.rows, header.columns, header.n_frames, header.bits_allocated
                )));
            }
            Ok(())
        }
        Layout::Fragments(fragments) => {
            if ts_uid.trim_end_matches('\0') != RLE_LOSSLESS {
                return Err(bad(format!(
                    "encapsulated (compressed) pixel data in transfer syntax {ts_uid} is not decoded here"
                )));
            }
            rle_shape(header)?;
            let n = header.n_frames as usize;
            if fragments.is_empty() || (n > 1 && fragments.len() != n) {
                return Err(bad(format!(
                    "corrupt RLE Lossless data: {} RLE fragments for {n} frames (one fragment per frame expected)",
                    fragments.len()
                )));
            }
            Ok(())
        }
    }
}
