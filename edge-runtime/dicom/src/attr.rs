//! Reading and writing attribute values: the one place that formats DS/IS strings, trims
//! padding and turns a missing or malformed attribute into a typed error.

use std::path::Path;

use dicom_core::header::HasLength as _;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::InMemDicomObject;

use crate::DicomError;

/// An in-memory data set (dicom-rs, standard dictionary).
pub type Object = InMemDicomObject;

/// Sets `tag` to the string `value` (VR `vr`).
pub fn put_str(obj: &mut Object, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Sets `tag` to the multi-valued string `values` (`A\B\C`).
pub fn put_strs(obj: &mut Object, tag: Tag, vr: VR, values: &[&str]) {
    let values: Vec<String> = values.iter().map(|s| (*s).to_owned()).collect();
    obj.put(DataElement::new(
        tag,
        vr,
        PrimitiveValue::Strs(values.into()),
    ));
}

/// Sets `tag` (VR US) to `values`.
pub fn put_u16(obj: &mut Object, tag: Tag, values: &[u16]) {
    obj.put(DataElement::new(
        tag,
        VR::US,
        PrimitiveValue::U16(values.to_vec().into()),
    ));
}

/// The Image Pixel module of a single-sample (MONOCHROME2), unsigned image of
/// `rows` × `columns` with `bits` bits per sample (allocated = stored, high bit `bits - 1`).
pub fn put_monochrome_pixel_module(obj: &mut Object, rows: u16, columns: u16, bits: u16) {
    put_u16(obj, dicom_dictionary_std::tags::SAMPLES_PER_PIXEL, &[1]);
    put_str(
        obj,
        dicom_dictionary_std::tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_u16(obj, dicom_dictionary_std::tags::ROWS, &[rows]);
    put_u16(obj, dicom_dictionary_std::tags::COLUMNS, &[columns]);
    put_u16(obj, dicom_dictionary_std::tags::BITS_ALLOCATED, &[bits]);
    put_u16(obj, dicom_dictionary_std::tags::BITS_STORED, &[bits]);
    put_u16(
        obj,
        dicom_dictionary_std::tags::HIGH_BIT,
        &[bits.saturating_sub(1)],
    );
    put_u16(obj, dicom_dictionary_std::tags::PIXEL_REPRESENTATION, &[0]);
}

/// Sets `tag` (VR DS) to `values`, each formatted by [`ds`].
pub fn put_ds(obj: &mut Object, tag: Tag, values: &[f64]) {
    let values: Vec<String> = values.iter().map(|v| ds(*v)).collect();
    obj.put(DataElement::new(
        tag,
        VR::DS,
        PrimitiveValue::Strs(values.into()),
    ));
}

/// Sets `tag` (VR IS) to `value`.
pub fn put_is(obj: &mut Object, tag: Tag, value: i64) {
    put_str(obj, tag, VR::IS, &value.to_string());
}

/// Sets `tag` (VR SQ) to the items `items`.
pub fn put_seq(obj: &mut Object, tag: Tag, items: Vec<Object>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A code sequence item (Code Value, Coding Scheme Designator, Code Meaning).
pub fn code(value: &str, scheme: &str, meaning: &str) -> Object {
    let mut item = Object::new_empty();
    put_str(
        &mut item,
        dicom_dictionary_std::tags::CODE_VALUE,
        VR::SH,
        value,
    );
    put_str(
        &mut item,
        dicom_dictionary_std::tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        scheme,
    );
    put_str(
        &mut item,
        dicom_dictionary_std::tags::CODE_MEANING,
        VR::LO,
        meaning,
    );
    item
}

/// `value` as a DICOM Decimal String of at most 16 characters, as exact as fits.
pub fn ds(value: f64) -> String {
    if !value.is_finite() {
        return "0".into();
    }
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    for precision in (0..=15).rev() {
        let text = format!("{value:.precision$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        };
        if text.len() <= 16 {
            return text;
        }
    }
    format!("{value:.6e}")
}

/// The trimmed string value of `tag`, `None` when absent or empty.
pub fn opt_str(obj: &Object, tag: Tag) -> Option<String> {
    let elem = obj.element_opt(tag).ok()??;
    let text = elem.to_str().ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!text.is_empty()).then(|| text.to_owned())
}

/// The values of a multi-valued string attribute (ImageType), upper-cased and trimmed.
pub fn strs_upper(obj: &Object, tag: Tag) -> Vec<String> {
    let Some(elem) = obj.element_opt(tag).ok().flatten() else {
        return Vec::new();
    };
    match elem.to_multi_str() {
        Ok(values) => values
            .iter()
            .map(|s| {
                s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_ascii_uppercase()
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The string value of a required `tag`, or a [`DicomError::BadAttribute`].
pub fn req_str(
    obj: &Object,
    tag: Tag,
    keyword: &'static str,
    path: &Path,
) -> Result<String, DicomError> {
    opt_str(obj, tag).ok_or_else(|| DicomError::BadAttribute {
        path: path.to_path_buf(),
        attribute: keyword,
        reason: "missing or empty".into(),
    })
}

/// The numeric values of `tag` (DS, IS, FD, US, …), `None` when absent; an error when
/// present but not numbers.
pub fn opt_f64s(
    obj: &Object,
    tag: Tag,
    keyword: &'static str,
    path: &Path,
) -> Result<Option<Vec<f64>>, DicomError> {
    let Some(elem) = obj.element_opt(tag).ok().flatten() else {
        return Ok(None);
    };
    if elem.is_empty() {
        return Ok(None);
    }
    let values = elem
        .to_multi_float64()
        .map_err(|e| DicomError::BadAttribute {
            path: path.to_path_buf(),
            attribute: keyword,
            reason: format!("not numeric: {e}"),
        })?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(DicomError::BadAttribute {
            path: path.to_path_buf(),
            attribute: keyword,
            reason: format!("non-finite value in {values:?}"),
        });
    }
    Ok(Some(values))
}

/// Exactly `N` numbers from a required `tag`.
pub fn req_f64n<const N: usize>(
    obj: &Object,
    tag: Tag,
    keyword: &'static str,
    path: &Path,
) -> Result<[f64; N], DicomError> {
    let values = opt_f64s(obj, tag, keyword, path)?.ok_or_else(|| DicomError::BadAttribute {
        path: path.to_path_buf(),
        attribute: keyword,
        reason: "missing".into(),
    })?;
    <[f64; N]>::try_from(values.as_slice()).map_err(|_| DicomError::BadAttribute {
        path: path.to_path_buf(),
        attribute: keyword,
        reason: format!("{} values, expected {N}: {values:?}", values.len()),
    })
}

/// One unsigned integer from a required `tag` (Rows, Columns, BitsAllocated).
pub fn req_u32(
    obj: &Object,
    tag: Tag,
    keyword: &'static str,
    path: &Path,
) -> Result<u32, DicomError> {
    let [v] = req_f64n::<1>(obj, tag, keyword, path)?;
    if v < 0.0 || v > f64::from(u32::MAX) || v.fract() != 0.0 {
        return Err(DicomError::BadAttribute {
            path: path.to_path_buf(),
            attribute: keyword,
            reason: format!("{v} is not an unsigned integer"),
        });
    }
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(1.0), "1");
        assert_eq!(ds(-1024.0), "-1024");
        assert_eq!(ds(0.5), "0.5");
        assert_eq!(ds(0.001), "0.001");
        let s = ds(std::f64::consts::PI * -1000.0);
        assert!(s.len() <= 16, "{s}");
        assert!((s.parse::<f64>().unwrap_or(0.0) + 3141.592653589793).abs() < 1e-9);
        assert!(ds(1.0 / 3.0).len() <= 16);
        assert!(ds(1e-20).len() <= 16);
    }
}
