//! Ctrl-C / SIGTERM during a run: the best image so far is written whole, its sidecar says
//! `"interrupted": true`, the exit code is 130. A second signal exits at once, leaving no
//! partial file.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(style: &Path, out: &Path) -> Child {
    common::mrfsynth()
        .args([
            "texture",
            "--levels",
            "1",
            "--iterations",
            "5000",
            "--size",
            "96",
            "--style",
        ])
        .arg(style)
        .arg("-o")
        .arg(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits until the run has finished a few iterations (its log line shows up).
fn wait_until_iterating(child: &mut Child) {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let start = Instant::now();
    while let Some(Ok(line)) = lines.next() {
        if line.contains("iter 10/") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "run did not start iterating"
        );
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
}

fn no_temp_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".mrfsynth-")
    })
}

#[test]
fn first_signal_saves_the_best_image_and_exits_130() {
    let styles = tempfile::tempdir().unwrap();
    let style = common::fetched_image_at("ihc", 256, styles.path());
    for sig in ["-INT", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.png");
        let mut child = start(&style, &out);
        wait_until_iterating(&mut child);
        signal(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{sig}");
        let img = image::open(&out).unwrap();
        assert_eq!((img.width(), img.height()), (96, 96));
        let side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
        assert_eq!(side["interrupted"], true, "{sig}");
        assert!(no_temp_files(dir.path()));
    }
}

#[test]
fn second_signal_exits_at_once_without_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let style = common::fetched_image_at("ihc", 256, dir.path());
    let out = dir.path().join("out.png");
    let mut child = start(&style, &out);
    wait_until_iterating(&mut child);
    signal(&child, "-INT");
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    // Either nothing was written, or what was written is whole.
    if out.exists() {
        image::open(&out).expect("a complete image");
    }
    assert!(no_temp_files(dir.path()));
}
