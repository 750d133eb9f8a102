"""Loads the DICOM objects strokeseg's SCU delivered to dcmtk's storescp (the SEG, the SC
overlay series and the SR) with pydicom, an independent reader, and checks what a viewer
relies on. Run by `cargo xtask ci dicom`: python check_dicom.py <folder>."""

import sys
from pathlib import Path

import pydicom

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


def main(folder: str) -> int:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    seen = {SEG: 0, SC: 0, ENHANCED_SR: 0}
    for path in files:
        ds = pydicom.dcmread(path)
        uid = ds.SOPClassUID
        if uid not in seen:
            print(f"{path.name}: unexpected SOP class {uid}")
            return 1
        seen[uid] += 1
        assert ds.SpecificCharacterSet == "ISO_IR 192", path
        if uid == SEG:
            frames = int(ds.NumberOfFrames)
            n_bits = frames * ds.Rows * ds.Columns
            assert ds.BitsAllocated == 1 and len(ds.PixelData) >= n_bits // 8, path
            assert ds.SegmentSequence[0].SegmentLabel == "ischemic core", path
            assert len(ds.PerFrameFunctionalGroupsSequence) == frames, path
        elif uid == SC:
            assert ds.SamplesPerPixel == 3 and ds.PhotometricInterpretation == "RGB", path
            assert len(ds.PixelData) >= ds.Rows * ds.Columns * 3, path
            assert "NOT FOR DIAGNOSTIC USE" in ds.ImageComments, path
        else:
            items = ds.ContentSequence
            volume = [i for i in items if i.ValueType == "NUM"]
            assert volume and float(volume[0].MeasuredValueSequence[0].NumericValue) > 0, path
            texts = {i.ConceptNameCodeSequence[0].CodeValue: i.TextValue for i in items if i.ValueType == "TEXT"}
            assert "MODEL-SHA" in texts and "ALERT" in texts, texts
    if not all(seen.values()):
        print(f"missing objects: {seen}")
        return 1
    print(f"pydicom {pydicom.__version__} read {len(files)} objects: {seen[SEG]} SEG, {seen[SC]} SC, {seen[ENHANCED_SR]} SR")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
