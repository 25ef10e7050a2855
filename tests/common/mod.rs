//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use mrfsynth::weights::{self, VggWeights};

/// The real VGG19 weights, fetched into the user cache on first use (as the CLI does).
pub fn weights() -> &'static VggWeights {
    static W: OnceLock<VggWeights> = OnceLock::new();
    W.get_or_init(|| {
        weights::load(None, true).expect("VGG19 weights: fetch them with `mrfsynth weights fetch`")
    })
}

/// A real image from ../shared/images, or None (with a note) where that folder is absent.
pub fn shared_image(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/images")
        .join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} not found (../shared/images is absent)",
            p.display()
        );
        None
    }
}

/// The binary with the test weights (a global flag, so any subcommand may follow).
pub fn mrfsynth() -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--weights").arg(&weights().path);
    cmd
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mrfsynth"))
}
