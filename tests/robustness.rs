//! Concurrency, full disks and random inputs: every run ends with a valid result or one clean
//! error line, and never leaves a partial file.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};

fn texture(style: &Path, out: &Path, extra: &[&str]) -> Output {
    common::mrfsynth()
        .args([
            "texture",
            "--quiet",
            "--levels",
            "1",
            "--iterations",
            "2",
            "--style",
        ])
        .arg(style)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mrfsynth-"))
        .collect()
}

#[test]
fn two_processes_fetching_the_weights_end_with_one_good_cache() {
    let cache = tempfile::tempdir().unwrap();
    let spawn = || {
        Command::new(common::bin())
            .args(["weights", "fetch"])
            .env("XDG_CACHE_HOME", cache.path())
            .env_remove("MRFSYNTH_WEIGHTS")
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    let (sa, sb) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(sa.success() && sb.success());
    let verify = Command::new(common::bin())
        .args(["weights", "verify"])
        .env("XDG_CACHE_HOME", cache.path())
        .env_remove("MRFSYNTH_WEIGHTS")
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(leftovers(&cache.path().join("mrfsynth")).is_empty());
}

#[test]
fn two_runs_into_one_folder_do_not_disturb_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let style = common::fetched_image_at("ihc", 256, dir.path());
    // The plain MRF prior: after 3 iterations its outputs already differ by seed (measured: the
    // default's two seeds both still gave the same flat 8-bit image there).
    let run = |path: std::path::PathBuf, seed: &str| {
        common::mrfsynth()
            .args([
                "texture",
                "--quiet",
                "--prior",
                "mrf",
                "--levels",
                "1",
                "--iterations",
                "3",
                "--size",
                "64",
                "--seed",
                seed,
                "--style",
            ])
            .arg(&style)
            .arg("-o")
            .arg(path)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (
        run(dir.path().join("a.png"), "1"),
        run(dir.path().join("b.png"), "2"),
    );
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let (ia, ib) = (
        std::fs::read(dir.path().join("a.png")).unwrap(),
        std::fs::read(dir.path().join("b.png")).unwrap(),
    );
    // Each equals what the same run gives alone.
    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    assert!(run(alone.join("a.png"), "1").wait().unwrap().success());
    assert_eq!(ia, std::fs::read(alone.join("a.png")).unwrap());
    assert_ne!(ia, ib);
    for side in ["a.json", "b.json"] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(side)).unwrap()).unwrap();
        assert_eq!(v["interrupted"], false);
    }
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn a_full_disk_leaves_no_partial_file() {
    let styles = tempfile::tempdir().unwrap();
    let style = common::fetched_image_at("ihc", 256, styles.path());
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(mnt.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipping: cannot mount a small tmpfs here (needs root)");
        return;
    }
    let out = mnt.path().join("big.png");
    // A noise start: two iterations from the default flat grey compress into less than 64 KiB.
    let res = texture(&style, &out, &["--size", "256", "--init", "noise"]);
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    let listing: Vec<_> = std::fs::read_dir(mnt.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("big.png"), "{err}");
    assert!(
        listing.is_empty(),
        "files left on the full disk: {listing:?}"
    );
}

/// Random small images and random flag combinations: success with a valid image, or a clean
/// one-line error with a usage or input exit code. Seeded and bounded.
#[test]
fn random_inputs_and_flags_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let flags: [&[&str]; 10] = [
        &["--size", "48"],
        &["--size", "64x40"],
        &["--size", "0"],
        &["--levels", "2"],
        &["--stride", "1"],
        &["--patch-size", "5"],
        &["--prior", "gram"],
        &["--prior", "mrf+gram"],
        &["--tileable", "--size", "48"],
        &["--tv-weight", "NaN"],
    ];
    for case in 0..14 {
        let (w, h) = (rng.random_range(1..120u32), rng.random_range(1..120u32));
        let img = image::RgbImage::from_fn(w, h, |_, _| {
            image::Rgb([rng.random(), rng.random(), rng.random()])
        });
        let ext = ["png", "jpg", "bmp"][case % 3];
        let input = dir.path().join(format!("in{case}.{ext}"));
        img.save(&input).unwrap();
        let out = dir.path().join(format!("out{case}.png"));
        let mut args: Vec<&str> = vec!["--size", "48"];
        for _ in 0..2 {
            args.extend_from_slice(flags[rng.random_range(0..flags.len())]);
        }
        let res = texture(&input, &out, &args);
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(
            !err.contains("panicked"),
            "case {case} {w}x{h} {args:?}: {err}"
        );
        match res.status.code() {
            Some(0) => {
                image::open(&out).unwrap_or_else(|e| panic!("case {case}: output unreadable: {e}"));
            }
            Some(2) | Some(3) => {
                assert_eq!(err.trim().lines().count(), 1, "case {case} {args:?}: {err}");
                assert!(
                    !out.exists(),
                    "case {case}: output written despite the error"
                );
            }
            other => panic!("case {case} {w}x{h} {args:?}: exit {other:?}: {err}"),
        }
    }
    assert!(leftovers(dir.path()).is_empty());
}
