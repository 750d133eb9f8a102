//! Support for tests that start the real DICOM tools (this crate's and the edge's `serve`
//! tests): the tools found on PATH or reported SKIPPED, free loopback ports, and the
//! `.dcm` files a receiver wrote. Panics are the point here: a test that cannot find what
//! it needs fails loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

pub use crate::dcm_files;

/// Set to `required` (CI's `dicom` step) to make a missing tool a failure, not a skip.
pub const TOOLS_ENV: &str = "STROKESEG_DICOM_TOOLS";

/// The path of `program` when on PATH. Missing: SKIPPED is printed and `None` returned,
/// or the test fails when [`TOOLS_ENV`] is `required`.
pub fn tool(program: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var(TOOLS_ENV).is_ok_and(|v| v == "required");
        assert!(
            !required,
            "{test}: {program} not on PATH and {TOOLS_ENV}=required (apt-get install -y dcmtk dicom3tools)"
        );
        // Straight to the process's stderr: libtest captures eprintln! of passing tests.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** {test} SKIPPED: {program} not on PATH (apt-get install -y dcmtk dicom3tools, or `cargo xtask ci dicom`) ***\n"
        );
    }
    found
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
