//! `compare` writes a readable report whose metrics `mrfsynth metrics` reproduces; the HTML
//! opens in headless Chromium where it is installed.

mod common;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str], extra: &[&Path]) -> std::process::Output {
    let mut cmd = common::mrfsynth();
    cmd.args(args);
    for p in extra {
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

#[test]
fn report_has_everything_and_metrics_agree() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular structured texture (greyscale bricks), at 256 px to keep the runs short.
    let style = common::fetched_image_at("brick", 256, tmp.path());
    let dir = tmp.path().join("report");
    let out = common::mrfsynth()
        .args([
            "compare",
            "--quiet",
            "--size",
            "64",
            "--levels",
            "1",
            "--iterations",
            "3",
            "--style",
        ])
        .arg(&style)
        .arg("-o")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "index.html",
        "panel.png",
        "mrf.png",
        "gram.png",
        "mrf.json",
        "gram.json",
        "metrics.json",
        "loss.svg",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("panel.png") && html.contains("<table") && html.contains("<svg"));
    let panel = image::open(dir.join("panel.png")).unwrap();
    assert!(panel.width() > 3 * 64 && panel.height() > 64);

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
    for (label, file) in [("MRF", "mrf.png"), ("Gram", "gram.png")] {
        let res = run(
            &["metrics", "--json", "--style"],
            &[&style, &dir.join(file)],
        );
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let again: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
        for key in [
            "swd",
            "gram_distance",
            "copy_score",
            "color_histogram_distance",
        ] {
            let (a, b) = (
                report[label][key].as_f64().unwrap(),
                again[key].as_f64().unwrap(),
            );
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1e-12),
                "{label} {key}: report {a} vs metrics {b}"
            );
        }
    }

    // Headless Chromium, where installed, renders the page. CI installs it and sets
    // MRFSYNTH_REQUIRE_BROWSER=1: there a missing browser fails the test.
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        assert!(
            std::env::var("MRFSYNTH_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "MRFSYNTH_REQUIRE_BROWSER=1 but /usr/bin/chromium is not installed"
        );
        eprintln!("skipping the browser check: /usr/bin/chromium is not installed");
        return;
    }
    let shot = tmp.path().join("shot.png");
    let res = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            tmp.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,900")
        .arg(format!("file://{}", dir.join("index.html").display()))
        .output()
        .unwrap();
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let img = image::open(&shot).unwrap().to_rgb8();
    let non_white = img
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c < 200))
        .count();
    assert!(
        non_white > 10_000,
        "the page looks empty ({non_white} non-white pixels)"
    );
}
