//! What the phantom's integration tests share: where the brain template is.

use std::path::PathBuf;

/// `.cache/templates/icbm152_2009a` of this workspace, or `$STROKESEG_TEMPLATE_DIR`; fails
/// the test with the fix when it is missing.
pub fn template_dir() -> PathBuf {
    let dir = std::env::var_os(strokeseg_phantom::TEMPLATE_DIR_ENV).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(strokeseg_phantom::TEMPLATE_DIR)
        },
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "the brain template is missing at {}: run `cargo xtask setup-templates`",
        dir.display()
    );
    dir
}
