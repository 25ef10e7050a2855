//! Files appear whole or not at all: write a temporary file in the target folder, sync, rename.
//!
//! Temporary files being written are registered, so that an abrupt exit (a second Ctrl-C) can
//! remove them first: [`remove_unfinished`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn track(path: &Path, on: bool) {
    if let Ok(mut list) = UNFINISHED.lock() {
        if on {
            list.push(path.to_path_buf());
        } else {
            list.retain(|p| p != path);
        }
    }
}

/// Deletes every temporary file still being written. For a process about to exit at once.
pub fn remove_unfinished() {
    if let Ok(list) = UNFINISHED.lock() {
        for p in list.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `bytes` to `path` atomically. On failure nothing is left behind.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

/// Like [`write()`], with the content produced by `fill` into the temporary file.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".mrfsynth-");
    // Like an ordinary file creation (the umask still applies), not tempfile's owner-only mode.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    let tmp_path = tmp.path().to_path_buf();
    track(&tmp_path, true);
    let result = (|| {
        fill(tmp.as_file_mut())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        // Make the rename itself durable; a failure here is not worth reporting.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    track(&tmp_path, false);
    result
}
