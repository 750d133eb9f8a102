//! `strokeseg-dicom`: a development DICOM node (phantom series writer for now).
use anyhow::Result;
fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("out"));
    let case = strokeseg_phantom::generate_case(
        13,
        0,
        &strokeseg_phantom::DatasetOptions {
            min_slices: 2,
            max_slices: 2,
            ..Default::default()
        },
    )?;
    strokeseg_dicom::write::write_phantom_study(&case, &out, &Default::default())?;
    Ok(())
}
