//! `--preset`: the original CNNMRF's choices as one flag, and explicit flags over a preset; the
//! defaults `--prior gc` brings with it.

mod common;

use mrfsynth::assets::samples;

fn sidecar_params(args: &[&str]) -> serde_json::Value {
    sidecar(args)["params"].clone()
}

/// The sidecar of a 64 px, 2-iteration texture from the native gravel sample (512 px).
fn sidecar(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.png");
    let style = samples::test_image("gravel").expect("fetch the scikit-image gravel sample");
    let o = common::mrfsynth()
        .args([
            "--quiet",
            "texture",
            "--size",
            "64",
            "--levels",
            "1",
            "--iterations",
            "2",
        ])
        .arg("--style")
        .arg(&style)
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("json")).unwrap()).unwrap();
    side
}

fn notes_mention_occurrence(side: &serde_json::Value) -> bool {
    side["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("occurrence penalty"))
}

/// Under the plain MRF prior, a sample larger than the output turns the occurrence penalty on
/// (MRF matching otherwise fills the output from one region of the sample); an explicit
/// --occurrence, the cnnmrf preset, a sample no larger than the output and the default
/// mrf+gram prior (whose Gram term keeps the sample's proportions) leave it off.
#[test]
fn a_sample_larger_than_the_output_spreads_the_matches() {
    let side = sidecar(&["--prior", "mrf"]);
    assert!(notes_mention_occurrence(&side), "{}", side["notes"]);
    assert_eq!(side["params"]["auto_occurrence"], true);
    for args in [
        &["--prior", "mrf", "--occurrence", "0"][..],
        &["--prior", "mrf", "--preset", "cnnmrf"],
        &["--prior", "mrf", "--style-scale", "0.1"],
        &[],
    ] {
        let side = sidecar(args);
        assert!(
            !notes_mention_occurrence(&side),
            "{args:?}: {}",
            side["notes"]
        );
    }
}

#[test]
fn the_cnnmrf_preset_sets_the_originals_choices() {
    let p = sidecar_params(&["--preset", "cnnmrf"]);
    assert_eq!(p["preset"], "cnnmrf");
    assert_eq!(p["init"], "mean");
    assert_eq!(p["history"], 25);
    assert_eq!(p["line_search"], false);
    assert!(p["first_step_px"].is_null(), "{p}");
    assert_eq!(p["mrf_gradient"], "average");
    assert_eq!(p["full_grid"], true);
    assert_eq!(p["mirror_style"], false);
    assert_eq!(p["min_style_patches"], 0);
    assert_eq!(p["style_stride"], 2);
    assert_eq!(p["tv_weight"], 1e-3);
    assert_eq!(p["resample"], "bilinear");
    assert_eq!(p["auto_occurrence"], false);
    assert_eq!(p["matcher"], "exact");
    assert_eq!(p["prior"], "mrf");
    // The default differs from it in the prior (Gram statistics beside the MRF term, on the
    // layers the MRF pass computes), the resampling, the automatic occurrence penalty and the
    // approximate search of large banks only.
    let d = sidecar_params(&[]);
    assert_eq!(d["prior"], "mrf+gram");
    assert_eq!(
        d["gram_layers"],
        serde_json::json!(["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    );
    assert_eq!(d["gram_weight"], 300.0);
    assert_eq!(d["resample"], "lanczos3");
    assert_eq!(d["auto_occurrence"], true);
    assert_eq!(d["matcher"], "auto");
    let differ = [
        "preset",
        "prior",
        "gram_layers",
        "gram_weight",
        "resample",
        "auto_occurrence",
        "matcher",
    ];
    for (k, v) in p.as_object().unwrap() {
        if !differ.contains(&k.as_str()) {
            assert_eq!(&d[k], v, "{k}");
        }
    }
}

#[test]
fn the_fast_preset_cuts_the_finest_levels_iterations_to_20() {
    let p = sidecar_params(&["--preset", "fast"]);
    assert_eq!(p["preset"], "fast");
    assert_eq!(p["finest_iterations"], 20);
    assert_eq!(p["init"], "mean");
    let d = sidecar_params(&[]);
    assert!(d["finest_iterations"].is_null(), "{d}");
}

#[test]
fn the_coarse_style_weight_is_recorded_and_off_by_default() {
    let p = sidecar_params(&["--coarse-style-weight", "3000"]);
    assert_eq!(p["coarse_gram_weight"], 3000.0);
    assert_eq!(p["gram_weight"], 300.0);
    assert!(sidecar_params(&[])["coarse_gram_weight"].is_null());
}

#[test]
fn explicit_flags_override_the_preset() {
    let p = sidecar_params(&[
        "--preset",
        "cnnmrf",
        "--history",
        "7",
        "--line-search",
        "wolfe",
        "--mrf-gradient",
        "sum",
        "--patch-grid",
        "stride",
        "--style-padding",
        "mirror",
        "--init",
        "noise",
        "--style-stride",
        "1",
        "--finest-iterations",
        "1",
        "--resample",
        "lanczos3",
    ]);
    assert_eq!(p["preset"], "cnnmrf");
    assert_eq!(p["history"], 7);
    assert_eq!(p["line_search"], true);
    assert_eq!(p["mrf_gradient"], "sum");
    assert_eq!(p["full_grid"], false);
    assert_eq!(p["mirror_style"], true);
    assert_eq!(p["init"], "noise");
    assert_eq!(p["style_stride"], 1);
    assert_eq!(p["finest_iterations"], 1);
    assert_eq!(p["resample"], "lanczos3");
}

#[test]
fn the_gc_prior_brings_its_papers_settings_and_flags_override_them() {
    let p = sidecar_params(&["--prior", "gc"]);
    assert_eq!(p["prior"], "gc");
    assert_eq!(p["patch_size"], 7);
    assert_eq!(p["stride"], 3);
    assert_eq!(p["style_stride"], 3);
    assert_eq!(
        p["mrf_layers"],
        serde_json::json!(["relu2_1", "relu3_1", "relu4_1"])
    );
    assert!(
        (p["occurrence"].as_f64().unwrap() - 0.05).abs() < 1e-6,
        "{p}"
    );
    assert!(
        (p["gc_bandwidth"].as_f64().unwrap() - 0.5).abs() < 1e-6,
        "{p}"
    );
    assert_eq!(p["optimizer"], "adam");
    assert_eq!(p["init"], "noise");
    assert_eq!(p["tv_weight"], 0.0);

    let q = sidecar_params(&[
        "--prior",
        "gc",
        "--patch-size",
        "5",
        "--occurrence",
        "0",
        "--optimizer",
        "lbfgs",
        "--tv-weight",
        "1e-3",
        "--mrf-layers",
        "relu3_1",
        "--gc-top-k",
        "16",
    ]);
    assert_eq!(q["patch_size"], 5);
    assert_eq!(q["occurrence"], 0.0);
    assert_eq!(q["optimizer"], "lbfgs");
    assert_eq!(q["tv_weight"], 1e-3);
    assert_eq!(q["mrf_layers"], serde_json::json!(["relu3_1"]));
    assert_eq!(q["gc_top_k"], 16);

    // The MRF prior keeps CNNMRF's values; the occurrence penalty is offered to it as a flag.
    let m = sidecar_params(&["--prior", "mrf"]);
    assert_eq!(m["prior"], "mrf");
    assert_eq!(m["patch_size"], 3);
    assert_eq!(m["occurrence"], 0.0);
    assert_eq!(m["optimizer"], "lbfgs");
    let o = sidecar_params(&["--occurrence", "0.05"]);
    assert!(
        (o["occurrence"].as_f64().unwrap() - 0.05).abs() < 1e-6,
        "{o}"
    );
}

#[test]
fn bad_preset_values_are_one_line_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        ["--preset", "cnnmrff"],
        ["--line-search", "armijo"],
        ["--mrf-gradient", "mean"],
        ["--patch-grid", "dense"],
        ["--style-padding", "reflect"],
        ["--first-step", "-1"],
        ["--prior", "gcc"],
        ["--occurrence", "-1"],
        ["--gc-bandwidth", "0"],
        ["--learning-rate", "0"],
        ["--finest-iterations", "0"],
        ["--coarse-style-weight", "-1"],
        ["--coarse-style-weight", "inf"],
    ] {
        let o = common::mrfsynth()
            .args(["--quiet", "texture", "-o"])
            .arg(dir.path().join("x.png"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!dir.path().join("x.png").exists());
    }
}
