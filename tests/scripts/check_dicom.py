"""Loads the DICOM objects strokeseg's SCU delivered to dcmtk's storescp (the SEG, the SC
overlay series and the SR) with pydicom, an independent reader, and checks what a viewer
relies on; where highdicom is installed, the SEG and the SR are also read through its
object model (the SEG's volume must hold exactly the voxels set in its bit-packed frames).
Run by `cargo xtask ci dicom`: python check_dicom.py <folder>."""

import sys
from pathlib import Path

import pydicom

try:
    import highdicom
except ImportError:  # "where installable": pydicom's checks still run
    highdicom = None

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


def main(folder: str) -> int:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    seen = {SEG: 0, SC: 0, ENHANCED_SR: 0}
    checked_by_highdicom = []
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
            if highdicom is not None:
                seg = highdicom.seg.segread(path)
                assert seg.number_of_segments == 1, path
                assert seg.get_segment_description(1).segment_label == "ischemic core", path
                set_bits = sum(bin(b).count("1") for b in bytes(ds.PixelData)[: (n_bits + 7) // 8])
                voxels = int(seg.get_volume().array.sum())
                assert voxels == set_bits, f"{path}: highdicom volume {voxels}, frames {set_bits}"
                checked_by_highdicom.append(f"SEG ({voxels} voxels)")
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
            if highdicom is not None:
                sr = highdicom.sr.srread(path)
                assert type(sr).__name__ == "EnhancedSR" and len(sr.content) > 0, path
                checked_by_highdicom.append("SR")
    if not all(seen.values()):
        print(f"missing objects: {seen}")
        return 1
    print(f"pydicom {pydicom.__version__} read {len(files)} objects: {seen[SEG]} SEG, {seen[SC]} SC, {seen[ENHANCED_SR]} SR")
    if highdicom is None:
        print("highdicom SKIPPED: not installed")
    else:
        if not checked_by_highdicom:
            print("highdicom checked nothing")
            return 1
        print(f"highdicom {highdicom.__version__} read: {', '.join(checked_by_highdicom)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
