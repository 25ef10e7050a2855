//! The command-line surface: subcommands, exit codes, the features command.

mod common;

use std::process::Command;

use candle_core::Device;

#[test]
fn help_lists_every_command() {
    let out = Command::new(common::bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "texture", "transfer", "compare", "metrics", "features", "weights",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
}

#[test]
fn commands_without_their_inputs_are_one_line_usage_errors() {
    for args in [vec!["compare", "-o", "x"], vec!["metrics"], vec!["texture"]] {
        let out = Command::new(common::bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn features_writes_named_layers_at_the_images_size() {
    let img = common::fetched_image("chelsea"); // 451 x 300
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("f.safetensors");
    let out = common::mrfsynth()
        .arg("features")
        .arg(&img)
        .args(["--layers", "relu1_1,relu4_2", "-o"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = candle_core::safetensors::load(&out_path, &Device::Cpu).unwrap();
    assert_eq!(t["relu1_1"].dims(), &[1, 64, 300, 451]);
    assert_eq!(t["relu4_2"].dims(), &[1, 512, 37, 56]);
    assert_eq!(t.len(), 2);
}

#[test]
fn bad_layer_name_and_bad_extension_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["features", "x.png", "--layers", "relu9_9", "-o"])
        .arg(dir.path().join("f.safetensors"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(common::bin())
        .args(["texture", "--style", "x.png", "-o"])
        .arg(dir.path().join("out.xyz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("extension"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// Without the `cuda` feature, asking for a GPU is a usage error naming the feature, not a
/// silent CPU run; `auto` runs on the CPU.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_without_the_feature_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.png");
    let o = common::mrfsynth()
        .args([
            "--quiet", "texture", "--device", "cuda", "--size", "32", "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--features cuda"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists());
}

/// `--precision bf16` runs, and the sidecar says what ran (bf16 only on a CPU with AVX-512
/// BF16).
#[test]
fn precision_is_recorded_in_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let img = common::fetched_image_at("ihc", 256, dir.path());
    let out_path = dir.path().join("t.png");
    let out = common::mrfsynth()
        .args([
            "texture",
            "--quiet",
            "--levels",
            "1",
            "--iterations",
            "2",
            "--size",
            "64",
        ])
        .args(["--precision", "bf16", "--style"])
        .arg(&img)
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_path.with_extension("json")).unwrap()).unwrap();
    let want = if mrfsynth::cpu::bf16_gemm::available() {
        "bf16"
    } else {
        "f32"
    };
    assert_eq!(sidecar["precision"], want);
}
