//! Feed-forward generators: gradients, training, the model file, generate and stylize.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mrfsynth::feedforward::{Architecture, Generator, Padding};
use mrfsynth::image_io::{load_rgb, LoadLimits, RgbImageF32};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn load(p: &Path) -> RgbImageF32 {
    load_rgb(p, &LoadLimits::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Training steps of the shared texture model: enough for textures that are no longer noise.
const STEPS: usize = 60;
const CROP: u32 = 64;

/// A texture model trained once on gravel (a texture without a period of its own) through the
/// command line, shared by the tests below.
fn texture_model() -> &'static (tempfile::TempDir, PathBuf) {
    static M: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let sample = common::fetched_image_at("gravel", 192, dir.path());
        let model = dir.path().join("gravel.safetensors");
        let o = run(common::mrfsynth()
            .args(["train", "--device", "cpu", "--steps", &STEPS.to_string()])
            .args([
                "--crop",
                &CROP.to_string(),
                "--channels",
                "32",
                "--blocks",
                "2",
            ])
            .args(["--checkpoint-every", "25", "--style"])
            .arg(&sample)
            .arg("-o")
            .arg(&model));
        assert!(o.status.success(), "train failed: {}", stderr(&o));
        (dir, model)
    })
}

/// The JSON sidecar `train` writes beside a model.
fn sidecar_of(model: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(model.with_extension("json")).unwrap()).unwrap()
}

/// `train` on the CPU, 64 px crops, a small generator (8 channels, one block), `steps` steps
/// and `flags`; asserts success and returns the sidecar.
fn train_small(sample: &Path, model: &Path, steps: usize, flags: &[&str]) -> serde_json::Value {
    let o = run(common::mrfsynth()
        .args(["train", "--device", "cpu", "--crop", "64"])
        .args([
            "--steps",
            &steps.to_string(),
            "--channels",
            "8",
            "--blocks",
            "1",
        ])
        .args(flags)
        .arg("--style")
        .arg(sample)
        .arg("-o")
        .arg(model));
    assert!(o.status.success(), "{flags:?}: {}", stderr(&o));
    sidecar_of(model)
}

fn generate(model: &Path, size: &str, seed: u64, out: &Path, extra: &[&str]) -> Output {
    run(common::mrfsynth()
        .arg("generate")
        .arg(model)
        .args([
            "--device",
            "cpu",
            "--size",
            size,
            "--seed",
            &seed.to_string(),
        ])
        .args(extra)
        .arg("-o")
        .arg(out))
}

/// The generator's weight gradients, as training takes them (candle's autograd seeded with a
/// gradient at the pixels through the surrogate sum(image * g)), against central differences,
/// in f64, for every parameter tensor of both kinds of generator.
#[test]
fn generator_weight_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    for arch in [
        // With layout noise (on a grid 2 coarse pixels apart, to keep the sizes small).
        Architecture {
            channels: 8,
            residual_blocks: 1,
            upsamplings: 2,
            layout_noise: 2,
            layout_scale: 2,
            ..Architecture::texture()
        },
        Architecture {
            channels: 8,
            residual_blocks: 1,
            upsamplings: 1,
            ..Architecture::stylize()
        },
        // A dilated residual block (its convolutions run on interleaved grids).
        Architecture {
            channels: 8,
            residual_blocks: 1,
            upsamplings: 2,
            dilations: vec![2],
            ..Architecture::texture()
        },
    ] {
        let varmap = VarMap::new();
        let g = Generator::new(&arch, VarBuilder::from_varmap(&varmap, DType::F64, &dev)).unwrap();
        let input = match arch.kind {
            mrfsynth::feedforward::GeneratorKind::Texture => g
                .noise(40, 48, 3, false, &dev)
                .unwrap()
                .into_iter()
                .map(|t| t.to_dtype(DType::F64).unwrap())
                .collect::<Vec<_>>(),
            mrfsynth::feedforward::GeneratorKind::Stylize => {
                let v: Vec<f64> = mrfsynth::feedforward::generator::normal_noise(3 * 12 * 10, 4)
                    .iter()
                    .map(|&x| 128.0 + 50.0 * x as f64)
                    .collect();
                vec![Tensor::from_vec(v, (1, 3, 12, 10), &dev).unwrap()]
            }
        };
        let out_dims = g.forward(&input, Padding::Reflect).unwrap().dims().to_vec();
        let n: usize = out_dims.iter().product();
        let pixel_grad: Vec<f64> = mrfsynth::feedforward::generator::normal_noise(n, 9)
            .iter()
            .map(|&x| x as f64)
            .collect();
        let pixel_grad = Tensor::from_vec(pixel_grad, out_dims.as_slice(), &dev).unwrap();
        let loss = |g: &Generator| -> Tensor {
            (g.forward(&input, Padding::Reflect).unwrap() * &pixel_grad)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let mut vars: Vec<(String, candle_core::Var)> = {
            let data = varmap.data().lock().unwrap();
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        // Seeded weights: candle's initialisers draw from an unseeded generator, so a run could
        // land a ReLU input on its kink and fail by chance (CI once did).
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, (name, var)) in vars.iter().enumerate() {
            let noise =
                mrfsynth::feedforward::generator::normal_noise(var.elem_count(), 100 + k as u64);
            let fan_in = (var.elem_count() / var.dims()[0]).max(1) as f64;
            let value: Vec<f64> = noise
                .iter()
                .map(|&x| {
                    let x = x as f64;
                    if name.ends_with("norm.weight") {
                        1.0 + 0.2 * x
                    } else if var.rank() == 4 {
                        x * (2.0 / fan_in).sqrt()
                    } else {
                        0.1 * x
                    }
                })
                .collect();
            var.set(&Tensor::from_vec(value, var.shape(), &dev).unwrap())
                .unwrap();
        }
        let grads = loss(&g).backward().unwrap();
        let mut checked = 0;
        for (name, var) in &vars {
            let analytic: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            // Three entries of each tensor: first, middle, last.
            for &i in &[0, base.len() / 2, base.len() - 1] {
                let at = |delta: f64| -> f64 {
                    let mut v = base.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                        .unwrap();
                    loss(&g).to_scalar::<f64>().unwrap()
                };
                let central = |h: f64| (at(h) - at(-h)) / (2.0 * h);
                let numeric = central(1e-5);
                let finer = central(1e-6);
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap())
                    .unwrap();
                let a = analytic[i];
                let tol = 1e-4 * (1.0 + a.abs().max(numeric.abs()));
                // Two step sizes that disagree mean a ReLU kink lies within the step: the
                // difference quotient is no derivative there, so that entry proves nothing.
                if (numeric - finer).abs() > tol {
                    continue;
                }
                assert!(
                    (a - numeric).abs() <= tol,
                    "{:?} {name}[{i}]: autograd {a} vs finite differences {numeric}",
                    arch.kind
                );
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} entries checked");
    }
}

#[test]
fn training_writes_a_model_and_its_loss_curve() {
    let (_, model) = texture_model();
    let sidecar = sidecar_of(model);
    let losses: Vec<f64> = sidecar["report"]["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), STEPS);
    let head: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let tail: f64 = losses[STEPS - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        tail < 0.2 * head,
        "loss {head:.3e} -> {tail:.3e}: training did not learn"
    );
    assert_eq!(sidecar["model"]["architecture"]["kind"], "texture");
    assert_eq!(sidecar["model"]["prior"], "gram");
    assert_eq!(sidecar["model"]["steps"], STEPS);
    assert!(sidecar["report"]["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn generate_makes_any_size_deterministic_per_seed_and_different_across_seeds() {
    let (dir, model) = texture_model();
    let out = |name: &str| dir.path().join(name);
    for (name, seed) in [("a.png", 1), ("a2.png", 1), ("b.png", 2)] {
        let o = generate(model, "200x136", seed, &out(name), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (a, a2, b) = (
        load(&out("a.png")),
        load(&out("a2.png")),
        load(&out("b.png")),
    );
    assert_eq!((a.width, a.height), (200, 136));
    assert_eq!(a.data, a2.data, "the same seed must give the same texture");
    let diff = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .sum::<f32>()
        / a.data.len() as f32;
    assert!(
        diff > 5.0,
        "seeds 1 and 2 differ by only {diff} grey levels on average"
    );
    // Not noise: neighbouring pixels are correlated as in the sample, and colours are in range.
    let mean = a.data.iter().sum::<f32>() / a.data.len() as f32;
    assert!((20.0..235.0).contains(&mean), "mean {mean}");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out("a.json")).unwrap()).unwrap();
    assert_eq!(sidecar["command"], "generate");
}

/// A generator with layout noise and a decaying learning rate trains through the command line,
/// records both, and generates any size, the same per seed; `--tileable` runs with it too (its
/// seams are checked by `tileable_textures_wrap_around_seamlessly`, not here).
#[test]
fn layout_noise_and_learning_rate_decay_train_and_generate() {
    let dir = tempfile::tempdir().unwrap();
    let sample = common::fetched_image_at("gravel", 96, dir.path());
    let model = dir.path().join("layout.safetensors");
    let flags = [
        "--layout-noise",
        "2",
        "--layout-scale",
        "4",
        "--learning-rate-end",
        "0.1",
    ];
    let sidecar = train_small(&sample, &model, 3, &flags);
    let arch = &sidecar["model"]["architecture"];
    assert_eq!(
        (arch["layout_noise"].as_u64(), arch["layout_scale"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(sidecar["options"]["learning_rate_end"].as_f64(), Some(0.1));
    let out = |name: &str| dir.path().join(name);
    for (name, seed, extra) in [
        ("a.png", 1, &[][..]),
        ("a2.png", 1, &[]),
        ("t.png", 1, &["--tileable"]),
    ] {
        let o = generate(&model, "100x70", seed, &out(name), extra);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (a, a2, t) = (
        load(&out("a.png")),
        load(&out("a2.png")),
        load(&out("t.png")),
    );
    assert_eq!((a.width, a.height), (100, 70));
    assert_eq!(a.data, a2.data);
    assert_eq!((t.width, t.height), (100, 70));
}

/// The texture defaults fit the sample: brick's column period (36 px at its native 512 px, so
/// about 18 px at 256) is found and recorded as one wave along x, with a constant step and no
/// layout noise; gravel has no sharp period and gets layout noise and a falling step instead;
/// `--waves off` drops brick's wave. The generator takes the waves' inputs at any size,
/// tileable too.
#[test]
fn waves_follow_a_periodic_sample_and_skip_others() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name);
    for (name, flags, want) in [
        ("brick", &[][..], Some(18.3)),
        ("brick", &["--waves", "off"][..], None),
        ("gravel", &["--waves", "auto"][..], None),
    ] {
        let sample = common::fetched_image_at(name, 256, dir.path());
        let model = out(&format!("{name}.safetensors"));
        let sidecar = train_small(&sample, &model, 2, flags);
        let arch = &sidecar["model"]["architecture"];
        let waves = arch["waves"].as_array().cloned();
        let periodic = name == "brick";
        assert_eq!(
            (arch["layout_noise"].as_u64(), arch["layout_scale"].as_u64()),
            if periodic {
                (None, None)
            } else {
                (Some(4), Some(16))
            },
            "{name}"
        );
        let end = sidecar["options"]["learning_rate_end"].as_f64().unwrap();
        assert_eq!(end, if periodic { 1.0 } else { 0.05 }, "{name}");
        match want {
            None => assert!(waves.is_none(), "{name} {flags:?}: {waves:?}"),
            Some(period) => {
                let waves = waves.unwrap_or_else(|| panic!("{name}: no waves recorded"));
                assert_eq!(waves.len(), 1, "{waves:?}");
                let (x, y) = (
                    waves[0]["x"].as_f64().unwrap(),
                    waves[0]["y"].as_f64().unwrap(),
                );
                assert!(
                    (1.0 / x.hypot(y) - period).abs() < 1.0 && y.abs() < 0.2 * x,
                    "{name}: wave {x}, {y}"
                );
                for (file, extra) in [("w.png", &[][..]), ("wt.png", &["--tileable"])] {
                    let o = generate(&model, "100x70", 4, &out(file), extra);
                    assert!(o.status.success(), "{}", stderr(&o));
                    let img = load(&out(file));
                    assert_eq!((img.width, img.height), (100, 70));
                }
            }
        }
    }
}

/// Two seeds' textures do not copy each other, and neither copies the sample; a 4096 px texture
/// has no repetition at the period of the training crops.
#[test]
fn seeds_do_not_copy_and_large_textures_do_not_repeat_at_the_crop_period() {
    let (dir, model) = texture_model();
    let (a, b) = (dir.path().join("c1.png"), dir.path().join("c2.png"));
    for (p, seed) in [(&a, 11), (&b, 12)] {
        let o = generate(model, "384", seed, p, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (a, b) = (load(&a), load(&b));
    let sample = common::fetched_rgb("gravel", Some(192));
    let between = mrfsynth::metrics::copy::copy_score(&a, &b, 64, 3).score;
    let to_sample = mrfsynth::metrics::copy::copy_score(&a, &sample, 64, 3).score;
    assert!(between < 0.5, "two seeds copy each other: {between:.2}");
    assert!(
        to_sample < 0.5,
        "the texture copies the sample: {to_sample:.2}"
    );

    let big = dir.path().join("big.png");
    let o = generate(model, "4096", 5, &big, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let big = load(&big);
    assert_eq!((big.width, big.height), (4096, 4096));
    let c = CROP as usize;
    let shifts = [(c, 0), (0, c), (2 * c, 0), (0, 2 * c), (c, c)];
    let r = mrfsynth::metrics::lattice::autocorrelation_at(&big, &shifts);
    assert!(
        r < 0.2,
        "autocorrelation {r:.3} at a shift of the crop period"
    );
}

#[test]
fn tileable_textures_wrap_around_seamlessly() {
    let (dir, model) = texture_model();
    let out = dir.path().join("tile.png");
    let o = generate(model, "128", 3, &out, &["--tileable"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = load(&out);
    let (w, h) = (t.width as usize, t.height as usize);
    // Mean absolute step between columns x and x+1 (x = w-1 wraps to column 0).
    let step = |x: usize| -> f32 {
        let mut s = 0.0;
        for c in 0..3 {
            for y in 0..h {
                let p = &t.data[c * w * h + y * w..];
                s += (p[x] - p[(x + 1) % w]).abs();
            }
        }
        s / (3 * h) as f32
    };
    let interior = (0..w - 1).map(step).sum::<f32>() / (w - 1) as f32;
    let seam = step(w - 1);
    assert!(
        seam < 1.5 * interior,
        "seam {seam:.2} vs interior steps {interior:.2}"
    );
}

#[test]
fn resume_continues_a_checkpoint_and_refuses_a_mismatched_one() {
    let (dir, model) = texture_model();
    let copy = dir.path().join("resume.safetensors");
    std::fs::copy(model, &copy).unwrap();
    let sample = dir.path().join("gravel_192.png");
    // Only --steps: the architecture, crops, schedule and seed are the checkpoint's, not the
    // defaults (which would be a larger generator on 256 px crops).
    let o = run(common::mrfsynth()
        .args([
            "train",
            "--device",
            "cpu",
            "--steps",
            &(STEPS + 3).to_string(),
        ])
        .arg("--resume")
        .arg(&copy)
        .arg("--style")
        .arg(&sample)
        .arg("-o")
        .arg(&copy));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at step"), "{}", stderr(&o));
    let sidecar = sidecar_of(&copy);
    let first = sidecar_of(model);
    assert_eq!(sidecar["report"]["resumed_at"], STEPS);
    assert_eq!(sidecar["model"]["steps"], STEPS + 3);
    assert_eq!(sidecar["report"]["losses"].as_array().unwrap().len(), 3);
    assert_eq!(sidecar["options"]["crop"], CROP);
    for key in ["learning_rate_end", "diversity", "checkpoint_every", "seed"] {
        assert_eq!(sidecar["options"][key], first["options"][key], "{key}");
    }
    for key in ["gram_weight", "gram_layers", "tv_weight"] {
        assert_eq!(
            sidecar["options"]["params"][key], first["options"]["params"][key],
            "{key}"
        );
    }
    assert_eq!(
        sidecar["model"]["architecture"],
        first["model"]["architecture"]
    );

    // Another sample, or another architecture: refused with exit code 3, nothing written.
    let other = common::fetched_image_at("brick", 96, dir.path());
    let target = dir.path().join("never.safetensors");
    for extra in [
        vec!["--style", other.to_str().unwrap()],
        vec!["--channels", "16"],
    ] {
        let mut cmd = common::mrfsynth();
        cmd.args([
            "train", "--device", "cpu", "--steps", "99", "--crop", "64", "--blocks", "2",
        ])
        .arg("--resume")
        .arg(&copy)
        .arg("-o")
        .arg(&target);
        if extra[0] != "--style" {
            cmd.arg("--style").arg(&sample);
        } else {
            cmd.args(["--channels", "32"]);
        }
        let o = run(cmd.args(&extra));
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(stderr(&o).contains("different"), "{}", stderr(&o));
        assert!(!target.exists());
    }
}

/// A resumed run keeps the loss and schedule its checkpoint was trained with (Gram layers, TV
/// weight, falling step, seed) when the flags do not name them again.
#[test]
fn resume_keeps_the_checkpoints_loss_and_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let sample = common::fetched_image_at("gravel", 96, dir.path());
    let model = dir.path().join("g.safetensors");
    let first = train_small(
        &sample,
        &model,
        2,
        &[
            "--gram-layers",
            "relu1_1,relu2_1",
            "--tv-weight",
            "0.01",
            "--learning-rate-end",
            "0.5",
            "--seed",
            "7",
        ],
    );
    let again = train_small(&sample, &model, 3, &["--resume", model.to_str().unwrap()]);
    assert_eq!(again["report"]["resumed_at"], 2);
    assert_eq!(
        again["options"]["params"]["gram_layers"],
        serde_json::json!(["relu1_1", "relu2_1"])
    );
    for key in ["gram_layers", "tv_weight"] {
        assert_eq!(
            again["options"]["params"][key], first["options"]["params"][key],
            "{key}"
        );
    }
    assert_eq!(again["options"]["learning_rate_end"], 0.5);
    assert_eq!(again["options"]["seed"], 7);
}

/// A generation whose estimated peak memory exceeds `--max-memory` is refused before it starts:
/// one line naming what fits, exit code 3, no output; one that fits runs.
#[test]
fn generation_that_does_not_fit_is_refused_up_front() {
    let (dir, model) = texture_model();
    let out = dir.path().join("too_big.png");
    let o = generate(model, "4096", 0, &out, &["--max-memory", "1G"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("needs about") && err.contains("the largest square that fits"),
        "{err}"
    );
    assert!(!out.exists(), "an output was written");
    let o = generate(model, "256", 0, &out, &["--max-memory", "2G"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());
}

/// Truncated, foreign, corrupt and mismatched model files: one line, exit code 3, no output.
#[test]
fn bad_model_files_are_refused_with_exit_code_3() {
    let (dir, model) = texture_model();
    let bytes = std::fs::read(model).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("header_only", bytes[..64.min(bytes.len())].to_vec()),
        ("empty", Vec::new()),
        (
            "garbage",
            b"this is not a model at all, just some text".repeat(10),
        ),
        ("flipped", {
            // A corrupt header: the JSON length field says more than the file holds.
            let mut b = bytes.clone();
            b[6] ^= 0x7f;
            b
        }),
    ];
    let out = dir.path().join("bad_out.png");
    for (name, content) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&path, content).unwrap();
        let o = generate(&path, "64", 0, &out, &[]);
        assert_eq!(o.status.code(), Some(3), "{name}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{name}: {}",
            stderr(&o)
        );
        assert!(!out.exists(), "{name}: an output was written");
    }
    // A foreign safetensors file: VGG features written by `mrfsynth features`.
    let photo = common::fetched_image_at("brick", 64, dir.path());
    let foreign = dir.path().join("features.safetensors");
    let o = run(common::mrfsynth()
        .arg("features")
        .arg(&photo)
        .args(["--layers", "relu1_1", "-o"])
        .arg(&foreign));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = generate(&foreign, "64", 0, &out, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not one mrfsynth train wrote"),
        "{}",
        stderr(&o)
    );
    // A texture model given to stylize.
    let o = run(common::mrfsynth()
        .arg("stylize")
        .arg(model)
        .args(["--device", "cpu", "--content"])
        .arg(&photo)
        .arg("-o")
        .arg(&out));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!out.exists());
    // A missing file.
    let o = generate(&dir.path().join("missing.safetensors"), "64", 0, &out, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn style_transfer_networks_train_on_photos_and_stylize_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["chelsea", "coffee"] {
        common::fetched_image_at(name, 96, &photos);
    }
    let painting = common::fetched_image_at("ihc", 96, dir.path());
    let model = dir.path().join("ihc.safetensors");
    let o = run(common::mrfsynth()
        .args(["train", "--device", "cpu", "--steps", "4", "--crop", "64"])
        .args(["--channels", "16", "--blocks", "1", "--style"])
        .arg(&painting)
        .arg("--content-dir")
        .arg(&photos)
        .arg("-o")
        .arg(&model));
    assert!(o.status.success(), "{}", stderr(&o));
    let photo = common::fetched_image_at("astronaut", 90, dir.path());
    let out = dir.path().join("stylized.png");
    let o = run(common::mrfsynth()
        .arg("stylize")
        .arg(&model)
        .args(["--device", "cpu", "--content"])
        .arg(&photo)
        .arg("-o")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let img = load(&out);
    assert_eq!((img.width, img.height), (90, 90));
    // A style transfer model makes no textures.
    let o = generate(&model, "64", 0, &dir.path().join("no.png"), &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // An empty photo folder is refused before any work.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run(common::mrfsynth()
        .args(["train", "--steps", "4", "--style"])
        .arg(&painting)
        .arg("--content-dir")
        .arg(&empty)
        .arg("-o")
        .arg(dir.path().join("none.safetensors")));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// Architecture flags outside what a generator can be built from are refused up front with one
/// line and the usage exit code, before any file is written.
#[test]
fn train_refuses_architectures_and_loss_levels_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let sample = common::fetched_image_at("gravel", 96, dir.path());
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    common::fetched_image_at("coffee", 96, &photos);
    let model = dir.path().join("m.safetensors");
    for (flags, photos) in [
        (&["--upsamplings", "0"][..], None),
        (&["--upsamplings", "9"][..], None),
        (&["--scale-noise", "65"][..], None),
        (&["--scale-noise", "4"][..], Some(&photos)),
        (&["--dilations", "1,3,1"][..], None),
        (&["--dilations", "2,2"][..], None),
        (&["--dilations", "1,2,32"][..], None),
        // 64 px crops: a third level would score 16 px images.
        (&["--loss-levels", "0"][..], None),
        (&["--loss-levels", "3"][..], None),
        (&["--learning-rate-end", "0"][..], None),
        (&["--learning-rate-end", "1.5"][..], None),
        (&["--layout-noise", "4", "--layout-scale", "3"][..], None),
        // Gravel is not periodic, so layout noise is on by default: turned off, no scale.
        (&["--layout-noise", "0", "--layout-scale", "8"][..], None),
        (&["--layout-noise", "4"][..], Some(&photos)),
        (&["--waves", "auto"][..], Some(&photos)),
        (&["--waves", "yes"][..], None),
        (&["--gram-layers", "relu9_1"][..], None),
        (&["--gram-layers", ","][..], None),
        // A 32-cell layout grid makes the granule 128 px, more than the 64 px crop.
        (&["--layout-noise", "4", "--layout-scale", "32"][..], None),
    ] {
        let mut cmd = common::mrfsynth();
        cmd.args(["train", "--device", "cpu", "--steps", "2", "--crop", "64"])
            .args(flags)
            .arg("--style")
            .arg(&sample)
            .arg("-o")
            .arg(&model);
        if let Some(p) = photos {
            cmd.arg("--content-dir").arg(p);
        }
        let o = run(&mut cmd);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: {err}");
        assert!(!model.exists(), "{flags:?} wrote a model");
    }
}

/// Ctrl-C while training saves a model that works, and exits with 130.
#[test]
fn ctrl_c_saves_a_usable_model() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let sample = common::fetched_image_at("gravel", 96, dir.path());
    let model = dir.path().join("stopped.safetensors");
    let mut child = common::mrfsynth()
        .args([
            "train", "--device", "cpu", "--steps", "100000", "--crop", "64",
        ])
        .args(["--channels", "16", "--blocks", "1", "--style"])
        .arg(&sample)
        .arg("-o")
        .arg(&model)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = std::time::Instant::now();
    while let Some(Ok(line)) = lines.next() {
        if line.contains("step 10/") {
            break;
        }
        assert!(started.elapsed().as_secs() < 120, "training did not start");
    }
    std::thread::spawn(move || for _ in lines {});
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let out = dir.path().join("after.png");
    let o = generate(&model, "64", 0, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sidecar = sidecar_of(&model);
    assert_eq!(sidecar["report"]["interrupted"], true);
    assert!(sidecar["model"]["steps"].as_u64().unwrap() >= 10);
}

/// `compare --model` adds the generator as a third column, and refuses a model trained on
/// another sample.
#[test]
fn compare_takes_a_generator_column() {
    let (dir, model) = texture_model();
    let sample = dir.path().join("gravel_192.png");
    let out = dir.path().join("cmp");
    let o = run(common::mrfsynth()
        .args([
            "compare", "--device", "cpu", "--size", "64", "--levels", "1",
        ])
        .args(["--iterations", "3", "--style"])
        .arg(&sample)
        .arg("--model")
        .arg(model)
        .arg("-o")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    for label in ["MRF", "Gram", "Generator"] {
        assert!(
            metrics[label]["swd"].as_f64().unwrap() > 0.0,
            "{label}: {metrics}"
        );
    }
    assert!(out.join("generator.png").exists());
    let other = common::fetched_image_at("brick", 64, dir.path());
    let o = run(common::mrfsynth()
        .args([
            "compare", "--device", "cpu", "--size", "64", "--levels", "1",
        ])
        .args(["--iterations", "3", "--style"])
        .arg(&other)
        .arg("--model")
        .arg(model)
        .arg("-o")
        .arg(dir.path().join("cmp2")));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// Training is deterministic per seed (weights, noise and crops all come from it).
#[test]
fn the_same_seed_trains_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let sample = common::fetched_image_at("gravel", 96, dir.path());
    let mut outputs = Vec::new();
    for (name, seed) in [("a", "4"), ("b", "4"), ("c", "5")] {
        let model = dir.path().join(format!("{name}.safetensors"));
        let o = run(common::mrfsynth()
            .args(["train", "--device", "cpu", "--steps", "3", "--crop", "64"])
            .args([
                "--channels",
                "16",
                "--blocks",
                "1",
                "--seed",
                seed,
                "--style",
            ])
            .arg(&sample)
            .arg("-o")
            .arg(&model));
        assert!(o.status.success(), "{}", stderr(&o));
        let out = dir.path().join(format!("{name}.png"));
        let o = generate(&model, "96", 0, &out, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        outputs.push(load(&out).data);
    }
    assert_eq!(outputs[0], outputs[1], "seed 4 twice gave different models");
    assert_ne!(outputs[0], outputs[2], "seeds 4 and 5 gave the same model");
}

/// `--loss-levels 2` adds the crop at half size, scored against the sample at half size: the
/// first step's loss (same seed, same weights, same crops) is the one-level loss plus a
/// positive term, and the sidecar records the setting.
#[test]
fn a_second_loss_level_adds_the_half_size_loss() {
    let dir = tempfile::tempdir().unwrap();
    let sample = common::fetched_image_at("gravel", 128, dir.path());
    let mut first_losses = Vec::new();
    for levels in ["1", "2"] {
        let model = dir.path().join(format!("l{levels}.safetensors"));
        let o = run(common::mrfsynth()
            .args(["train", "--device", "cpu", "--steps", "1", "--crop", "64"])
            .args(["--channels", "16", "--blocks", "1", "--loss-levels", levels])
            .arg("--style")
            .arg(&sample)
            .arg("-o")
            .arg(&model));
        assert!(o.status.success(), "{}", stderr(&o));
        let sidecar = sidecar_of(&model);
        assert_eq!(
            sidecar["options"]["loss_levels"].as_u64(),
            Some(levels.parse().unwrap())
        );
        first_losses.push(sidecar["report"]["losses"][0].as_f64().unwrap());
    }
    let (one, two) = (first_losses[0], first_losses[1]);
    assert!(
        two > 1.05 * one,
        "two levels' first loss {two:.4e} is not the one-level loss {one:.4e} plus a half-size term"
    );
}
