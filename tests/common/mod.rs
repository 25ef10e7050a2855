//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mrfsynth::assets::weights::{self, VggWeights};
use mrfsynth::image_io::{load_rgb, resize, save_rgb, LoadLimits, RgbImageF32};

/// The real VGG19 weights, fetched into the user cache on first use (as the CLI does).
pub fn weights() -> &'static VggWeights {
    static W: OnceLock<VggWeights> = OnceLock::new();
    W.get_or_init(|| {
        weights::load(None, true).expect("VGG19 weights: fetch them with `mrfsynth weights fetch`")
    })
}

/// A test image the project fetches itself (see `mrfsynth::assets::samples::TEST_IMAGES`: ihc, brick,
/// grass, gravel, chelsea, astronaut, coffee), cached on first use. Panics when it cannot be
/// had: a test that needs a real image fails rather than passing without it.
pub fn fetched_image(name: &str) -> PathBuf {
    mrfsynth::assets::samples::test_image(name).unwrap_or_else(|e| {
        panic!("test image {name:?} is needed and could not be fetched or read from the cache: {e}")
    })
}

/// [`fetched_image`] loaded as RGB (the greyscale textures brick, grass and gravel have their
/// grey value in all three channels), resized to `side` x `side` where given (the textures are
/// 512 x 512).
pub fn fetched_rgb(name: &str, side: Option<u32>) -> RgbImageF32 {
    let path = fetched_image(name);
    let img = load_rgb(&path, &LoadLimits::default())
        .unwrap_or_else(|e| panic!("test image {}: {e}", path.display()));
    match side {
        Some(s) => resize(&img, s, s),
        None => img,
    }
}

/// [`fetched_image`] resized to `side` x `side` and written as `<name>_<side>.png` into `dir`,
/// for runs of the binary (a texture keeps its sample's scale, so the sample's size sets the
/// run's cost).
pub fn fetched_image_at(name: &str, side: u32, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{name}_{side}.png"));
    save_rgb(&fetched_rgb(name, Some(side)), &out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    out
}

/// The `w` x `h` part of `img` whose top-left corner is (`x0`, `y0`).
pub fn crop(img: &RgbImageF32, x0: u32, y0: u32, w: u32, h: u32) -> RgbImageF32 {
    assert!(x0 + w <= img.width && y0 + h <= img.height);
    let r = mrfsynth::synth::tiles::Rect {
        x: x0,
        y: y0,
        width: w,
        height: h,
    };
    mrfsynth::synth::tiles::crop(img, r)
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
