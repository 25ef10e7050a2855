//! The command-line front end: parse, build a job, run it, report. No algorithm lives here.

pub mod args;
mod batch;
mod compare;
mod feedforward;
mod progress;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;
use mrfsynth::assets::weights::{self, VggWeights, WeightsError, WeightsSource};
use mrfsynth::device::{DeviceError, DeviceSpec};
use mrfsynth::image_io::{self, LoadLimits, RgbImageF32};
use mrfsynth::synth::{
    self, Init, OptimizerKind, Params, Preset, PriorKind, SynthResult, Task, GRAM_CONTENT_WEIGHT,
};
use mrfsynth::vgg::{LayerId, Pooling, Precision, Vgg19};
use mrfsynth::ErrorKind;

use args::{
    Cli, Command, FeaturesArgs, OptimizerArg, OutputArgs, PoolArg, SynthArgs, TextureArgs,
    TransferArgs, WeightsCommand,
};
use progress::Progress;

/// Documented exit codes.
pub mod exit {
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const BAD_INPUT: i32 = 3;
    pub const WEIGHTS: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
}

/// An error that ends the program: one line, one exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }
    fn input(message: impl Into<String>) -> Self {
        Self::new(exit::BAD_INPUT, message)
    }
}

impl From<WeightsError> for CliError {
    fn from(e: WeightsError) -> Self {
        CliError::new(exit::WEIGHTS, e.to_string())
    }
}

pub(crate) fn failure(e: impl std::fmt::Display) -> CliError {
    CliError::new(exit::FAILURE, e.to_string())
}

/// Library errors end the program with the exit code of their kind.
impl From<mrfsynth::Error> for CliError {
    fn from(e: mrfsynth::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Settings => exit::USAGE,
            ErrorKind::BadInput => exit::BAD_INPUT,
            ErrorKind::Weights => exit::WEIGHTS,
            ErrorKind::Interrupted => exit::INTERRUPTED,
            _ => exit::FAILURE,
        };
        CliError::new(code, e.one_line())
    }
}

pub fn run(cli: Cli, interrupted: Arc<AtomicBool>) -> Result<(), CliError> {
    match cli.command {
        Command::Texture(a) => texture(a, cli.weights.as_deref(), cli.quiet, interrupted),
        Command::Transfer(a) => transfer(a, cli.weights.as_deref(), cli.quiet, interrupted),
        Command::Compare(a) => compare::compare(a, cli.weights.as_deref(), cli.quiet, interrupted),
        Command::Metrics(a) => compare::metrics(a, cli.weights.as_deref()),
        Command::Features(a) => features(a, cli.weights.as_deref()),
        Command::Weights(c) => weights_cmd(c, cli.weights.as_deref()),
        Command::Batch(a) => batch::batch(a, cli.weights.as_deref(), cli.quiet, interrupted),
        Command::Train(a) => feedforward::train(a, cli.weights.as_deref(), cli.quiet, interrupted),
        Command::Generate(a) => feedforward::generate(a, cli.quiet),
        Command::Stylize(a) => feedforward::stylize(a, cli.quiet),
    }
}

pub(crate) fn device(spec: DeviceSpec) -> Result<Device, CliError> {
    spec.open().map_err(|e| match e {
        DeviceError::NoCudaSupport => CliError::usage(e.to_string()),
        DeviceError::Cuda { .. } => failure(e),
    })
}

/// The network a synthesis command asks for: its device, pooling and precision.
fn synth_network(
    a: &SynthArgs,
    weights_path: Option<&Path>,
    progress: &Progress,
) -> Result<(VggWeights, Vgg19), CliError> {
    let precision: Precision = a
        .precision
        .parse()
        .map_err(|e: String| CliError::usage(format!("--precision: {e}")))?;
    let dev = device(a.device)?;
    load_network(
        weights_path,
        pooling(a.pool),
        &dev,
        precision,
        Some(progress),
    )
}

fn pooling(p: PoolArg) -> Pooling {
    match p {
        PoolArg::Max => Pooling::Max,
        PoolArg::Avg => Pooling::Avg,
    }
}

/// The image files of a folder given with `flag`, sorted by name; none is a bad input.
pub(crate) fn image_files(dir: &Path, flag: &str) -> Result<Vec<PathBuf>, CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::new(exit::BAD_INPUT, format!("{flag} {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    IMAGE_EXTS.contains(&x.to_ascii_lowercase().as_str())
                        || x.eq_ignore_ascii_case("gif")
                })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError::new(
            exit::BAD_INPUT,
            format!("{flag} {}: no images in it", dir.display()),
        ));
    }
    Ok(files)
}

pub(crate) fn load_image(path: &Path, what: &str) -> Result<RgbImageF32, CliError> {
    image_io::load_rgb(path, &LoadLimits::default())
        .map_err(|e| CliError::input(format!("{what}: {e}")))
}

fn layers(s: &str, flag: &str) -> Result<Vec<LayerId>, CliError> {
    let l = LayerId::parse_list(s).map_err(|e| CliError::usage(format!("{flag}: {e}")))?;
    if l.is_empty() {
        return Err(CliError::usage(format!("{flag}: no layer given")));
    }
    Ok(l)
}

/// Refuses an output path we could not write, before any work is done.
pub(crate) fn check_output(path: &Path, allowed: &[&str]) -> Result<(), CliError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !allowed.contains(&ext.as_str()) {
        return Err(CliError::usage(format!(
            "output {}: unknown or missing extension (use one of: {})",
            path.display(),
            allowed.join(", ")
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(CliError::input(format!(
            "output folder {} does not exist",
            dir.display()
        )));
    }
    Ok(())
}

pub(crate) const IMAGE_EXTS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp"];

pub(crate) fn load_network(
    weights_path: Option<&Path>,
    pool: Pooling,
    device: &Device,
    precision: Precision,
    progress: Option<&Progress>,
) -> Result<(VggWeights, Vgg19), CliError> {
    if let (WeightsSource::Cache(p), Some(pr)) = (weights::resolve(weights_path), progress) {
        if !p.exists() {
            pr.say("fetching VGG19 weights into the cache (first run only)...");
        }
    }
    let w = weights::load(weights_path, true)?;
    let vgg = network_on(&w, pool, device, precision, progress)?;
    Ok((w, vgg))
}

/// VGG19 with `w` on `device`, saying so when the precision asked for is not available.
fn network_on(
    w: &VggWeights,
    pool: Pooling,
    device: &Device,
    precision: Precision,
    progress: Option<&Progress>,
) -> Result<Vgg19, CliError> {
    let vgg = Vgg19::new(w, pool, device)
        .map_err(failure)?
        .with_precision(precision);
    if let (Some(pr), true) = (progress, vgg.precision() != precision) {
        pr.say(&format!(
            "note: --precision {} needs a CPU with AVX-512 BF16; running in {}",
            precision.name(),
            vgg.precision().name()
        ));
    }
    Ok(vgg)
}

/// The settings of a run from the flags: the prior named by `--prior`, or the preset's default
/// for the task (`plain_texture`: a texture without guide maps).
fn params_from(
    a: &SynthArgs,
    width: u32,
    height: u32,
    plain_texture: bool,
) -> Result<Params, CliError> {
    let preset = preset_from(a)?;
    let prior = match a.prior.as_deref() {
        Some(p) => p
            .parse()
            .map_err(|e: String| CliError::usage(format!("--prior: {e}")))?,
        None => preset.default_prior(plain_texture),
    };
    params_for_prior(a, width, height, prior)
}

fn preset_from(a: &SynthArgs) -> Result<Preset, CliError> {
    a.preset
        .parse()
        .map_err(|e: String| CliError::usage(format!("--preset: {e}")))
}

/// The settings from the flags for a given prior (`compare` runs each of its priors so).
fn params_for_prior(
    a: &SynthArgs,
    width: u32,
    height: u32,
    prior: PriorKind,
) -> Result<Params, CliError> {
    let base = Params::preset_for(preset_from(a)?, prior);
    let choice = |flag: &str, value: &Option<String>, names: [&str; 2]| match value.as_deref() {
        None => Ok(None),
        Some(v) if v == names[0] => Ok(Some(true)),
        Some(v) if v == names[1] => Ok(Some(false)),
        Some(v) => Err(CliError::usage(format!(
            "{flag} {v}: expected {} or {}",
            names[0], names[1]
        ))),
    };
    let first_step_px = match a.first_step.as_deref() {
        None => base.first_step_px,
        Some("torch") => None,
        Some(v) => match v.parse::<f32>() {
            Ok(px) if px.is_finite() && px > 0.0 => Some(px),
            _ => {
                return Err(CliError::usage(format!(
                    "--first-step {v}: expected a number of grey levels > 0, or torch"
                )))
            }
        },
    };
    let mrf_gradient = match &a.mrf_gradient {
        None => base.mrf_gradient,
        Some(v) => v
            .parse()
            .map_err(|e: String| CliError::usage(format!("--mrf-gradient: {e}")))?,
    };
    let mut p = base.clone();
    p.prior = prior;
    p.gram_layers = match &a.gram_layers {
        Some(l) => layers(l, "--gram-layers")?,
        None => base.gram_layers.clone(),
    };
    p.gram_weight = a.style_weight.unwrap_or(base.gram_weight);
    p.coarse_gram_weight = a.coarse_style_weight.or(base.coarse_gram_weight);
    p.width = width;
    p.height = height;
    p.levels = a.levels;
    p.level_ratio = a.level_ratio;
    p.iterations = a.iterations;
    p.finest_iterations = a.finest_iterations.or(base.finest_iterations);
    p.mrf_layers = match &a.mrf_layers {
        Some(l) => layers(l, "--mrf-layers")?,
        None => base.mrf_layers.clone(),
    };
    p.patch_size = a.patch_size.unwrap_or(base.patch_size);
    p.stride = a.stride.unwrap_or(base.stride);
    p.style_stride = a.style_stride.or(a.stride).unwrap_or(base.style_stride);
    p.mrf_weight = a.mrf_weight.unwrap_or(base.mrf_weight);
    p.occurrence = a.occurrence.unwrap_or(base.occurrence);
    p.auto_occurrence = base.auto_occurrence && a.occurrence.is_none();
    p.gc_bandwidth = a.gc_bandwidth.unwrap_or(base.gc_bandwidth);
    p.gc_top_k = a.gc_top_k.unwrap_or(base.gc_top_k);
    p.gc_max_queries = a.gc_max_queries.unwrap_or(base.gc_max_queries);
    p.tv_weight = a.tv_weight.unwrap_or(base.tv_weight);
    p.rotations = a.rotations;
    p.scales = a.scales;
    p.style_scale = a.style_scale;
    p.optimizer = match a.optimizer {
        None => base.optimizer,
        Some(OptimizerArg::Lbfgs) => OptimizerKind::Lbfgs,
        Some(OptimizerArg::Adam) => OptimizerKind::Adam,
    };
    p.history = a.history.unwrap_or(base.history);
    p.learning_rate = a.learning_rate.unwrap_or(base.learning_rate);
    p.line_search =
        choice("--line-search", &a.line_search, ["wolfe", "none"])?.unwrap_or(base.line_search);
    p.first_step_px = first_step_px;
    p.mrf_gradient = mrf_gradient;
    p.full_grid =
        choice("--patch-grid", &a.patch_grid, ["full", "stride"])?.unwrap_or(base.full_grid);
    p.mirror_style = choice("--style-padding", &a.style_padding, ["mirror", "zero"])?
        .unwrap_or(base.mirror_style);
    p.min_style_patches = a.min_style_patches.unwrap_or(base.min_style_patches);
    p.resample = match &a.resample {
        None => base.resample,
        Some(v) => v
            .parse()
            .map_err(|e: String| CliError::usage(format!("--resample: {e}")))?,
    };
    p.seed = a.seed;
    p.tileable = a.tileable;
    if let Some(m) = &a.matcher {
        p.matcher = m
            .parse()
            .map_err(|e: String| CliError::usage(format!("--matcher: {e}")))?;
    }
    p.tile = a.tile;
    p.bank_precision = a
        .bank_precision
        .parse()
        .map_err(|e: String| CliError::usage(format!("--bank-precision: {e}")))?;
    p.max_memory = parse_max_memory(a.max_memory.as_deref())?;
    Ok(p)
}

/// `--max-memory` (texture runs and generation): a size such as 8G or 512M.
pub(crate) fn parse_max_memory(arg: Option<&str>) -> Result<Option<u64>, CliError> {
    arg.map(|m| {
        mrfsynth::synth::parse_bytes(m).ok_or_else(|| {
            CliError::usage(format!("--max-memory {m}: expected a size like 8G or 512M"))
        })
    })
    .transpose()
}

pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), CliError> {
    let bad = || {
        CliError::usage(format!(
            "--size {s}: expected WxH (e.g. 512x384) or one number"
        ))
    };
    let (w, h) = match s.split_once(['x', 'X']) {
        Some((w, h)) => (
            w.trim().parse::<u32>().map_err(|_| bad())?,
            h.trim().parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let n = s.trim().parse::<u32>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if w == 0 || h == 0 {
        return Err(CliError::usage(format!(
            "--size {s}: sides must be positive"
        )));
    }
    if (w as u64) * (h as u64) > 8192 * 8192 {
        return Err(CliError::usage(format!(
            "--size {s}: larger than 8192x8192 pixels"
        )));
    }
    Ok((w, h))
}

fn parse_init(s: &str, allow_content: bool) -> Result<Init, CliError> {
    match s {
        "noise" => Ok(Init::Noise),
        "mean" => Ok(Init::Mean),
        "content" if allow_content => Ok(Init::Content),
        "content" => Err(CliError::usage(
            "--init content needs a content image (use `transfer`)",
        )),
        path => Ok(Init::Image(load_image(Path::new(path), "--init")?)),
    }
}

/// Checks where a single synthesis writes, before any work, and sets up its progress display.
fn start(
    out: &OutputArgs,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
) -> Result<Progress, CliError> {
    check_output(&out.output, &IMAGE_EXTS)?;
    if out.save_every == Some(0) {
        return Err(CliError::usage("--save-every must be at least 1"));
    }
    Ok(Progress::new(
        quiet,
        interrupted,
        out.save_every,
        out.output.clone(),
    ))
}

fn texture(
    a: TextureArgs,
    weights_path: Option<&Path>,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
) -> Result<(), CliError> {
    texture_with(a, quiet, interrupted, &|s, p| {
        own_network(s, weights_path, p)
    })
}

/// Where a synthesis command gets its network: loaded for this run, or shared across a batch.
type NetworkSource<'a> =
    &'a dyn Fn(&SynthArgs, &Progress) -> Result<(Arc<VggWeights>, Arc<Vgg19>), CliError>;

/// The network of one command, loaded for it.
fn own_network(
    a: &SynthArgs,
    weights_path: Option<&Path>,
    progress: &Progress,
) -> Result<(Arc<VggWeights>, Arc<Vgg19>), CliError> {
    let (w, v) = synth_network(a, weights_path, progress)?;
    Ok((Arc::new(w), Arc::new(v)))
}

fn texture_with(
    a: TextureArgs,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
    network: NetworkSource<'_>,
) -> Result<(), CliError> {
    let mut progress = start(&a.out, quiet, interrupted)?;
    let style_paths = match a.style.as_slice() {
        [] => {
            let p = mrfsynth::assets::samples::default_sample()
                .map_err(|e| CliError::new(exit::FAILURE, e))?;
            progress.say(&format!("using the built-in sample {}", p.display()));
            vec![p]
        }
        list => list.to_vec(),
    };
    let styles = load_styles(&style_paths, &progress)?;
    let blend = blend_weights(a.synth.style_blend.as_deref(), styles.len())?;
    let (w, h) = match &a.size {
        Some(s) => parse_size(s)?,
        None => image_io::dims_for_long_side(
            styles[0].width,
            styles[0].height,
            mrfsynth::session::DEFAULT_LONG_SIDE,
        ),
    };
    let mut params = params_from(&a.synth, w, h, a.synth.style_map.is_empty())?;
    if let Some(init) = &a.init {
        params.init = parse_init(init, false)?;
    }
    params.guides = guides_from(&a.synth, styles.len())?;
    params.validate()?;
    let (weights, vgg) = network(&a.synth, &progress)?;
    let result = synth::run(&vgg, &styles, &blend, Task::Texture, &params, &mut progress)?;
    let inputs = serde_json::json!({ "style": style_paths, "style_blend": blend });
    finish(
        "texture",
        &a.out,
        a.synth.pool,
        &params,
        &weights,
        inputs,
        result,
        &progress,
    )
}

fn transfer(
    a: TransferArgs,
    weights_path: Option<&Path>,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
) -> Result<(), CliError> {
    transfer_with(a, quiet, interrupted, &|s, p| {
        own_network(s, weights_path, p)
    })
}

fn transfer_with(
    a: TransferArgs,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
    network: NetworkSource<'_>,
) -> Result<(), CliError> {
    let mut progress = start(&a.out, quiet, interrupted)?;
    let content = load_image(&a.content, "--content")?;
    warn_alpha(&progress, &content, &a.content);
    let style_paths = a.style.clone();
    let styles = load_styles(&style_paths, &progress)?;
    let blend = blend_weights(a.synth.style_blend.as_deref(), styles.len())?;
    if a.long_side == 0 || a.long_side > 8192 {
        return Err(CliError::usage(format!(
            "--long-side must be between 1 and 8192, got {}",
            a.long_side
        )));
    }
    let (w, h) = image_io::dims_for_long_side(content.width, content.height, a.long_side);
    let mut params = params_from(&a.synth, w, h, false)?;
    params.content_weight = a.content_weight.unwrap_or(match params.prior {
        PriorKind::Gram => GRAM_CONTENT_WEIGHT,
        _ => Params::default().content_weight,
    });
    params.original_colors = a.original_colors;
    params.content_layer = a
        .content_layer
        .parse()
        .map_err(|e| CliError::usage(format!("--content-layer: {e}")))?;
    params.init = parse_init(&a.init, true)?;
    params.guides = guides_from(&a.synth, styles.len())?;
    params.validate()?;
    let (weights, vgg) = network(&a.synth, &progress)?;
    let result = synth::run(
        &vgg,
        &styles,
        &blend,
        Task::Transfer { content: &content },
        &params,
        &mut progress,
    )?;
    let inputs =
        serde_json::json!({ "content": a.content, "style": style_paths, "style_blend": blend });
    finish(
        "transfer",
        &a.out,
        a.synth.pool,
        &params,
        &weights,
        inputs,
        result,
        &progress,
    )
}

/// The guide maps, checked against the style count (both or neither map flag).
fn guides_from(a: &SynthArgs, styles: usize) -> Result<Option<synth::Guides>, CliError> {
    match (&a.style_map[..], &a.target_map) {
        ([], None) => Ok(None),
        ([], Some(_)) | (_, None) => {
            Err(CliError::usage("--style-map and --target-map go together"))
        }
        (maps, Some(target)) => {
            if maps.len() != styles {
                return Err(CliError::usage(format!(
                    "--style-map has {} maps for {styles} style images",
                    maps.len()
                )));
            }
            if !(a.map_weight.is_finite() && a.map_weight >= 0.0 && a.map_weight <= 1000.0) {
                return Err(CliError::usage(format!(
                    "--map-weight must be in [0, 1000], got {}",
                    a.map_weight
                )));
            }
            Ok(Some(synth::Guides {
                style_maps: maps
                    .iter()
                    .map(|m| load_image(m, "--style-map"))
                    .collect::<Result<_, _>>()?,
                target_map: load_image(target, "--target-map")?,
                weight: a.map_weight,
            }))
        }
    }
}

fn load_styles(paths: &[PathBuf], progress: &Progress) -> Result<Vec<RgbImageF32>, CliError> {
    paths
        .iter()
        .map(|p| {
            let img = load_image(p, "--style")?;
            warn_alpha(progress, &img, p);
            Ok(img)
        })
        .collect()
}

/// One weight per style image (default: equal), each finite and >= 0, not all zero.
fn blend_weights(arg: Option<&str>, count: usize) -> Result<Vec<f64>, CliError> {
    let Some(arg) = arg else {
        return Ok(vec![1.0; count]);
    };
    let w = arg
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            CliError::usage(format!(
                "--style-blend {arg}: expected numbers like 0.7,0.3"
            ))
        })?;
    if w.len() != count {
        return Err(CliError::usage(format!(
            "--style-blend has {} weights for {count} style images",
            w.len()
        )));
    }
    if w.iter().any(|v| !v.is_finite() || *v < 0.0) || w.iter().sum::<f64>() <= 0.0 {
        return Err(CliError::usage(format!(
            "--style-blend {arg}: weights must be >= 0 and not all zero"
        )));
    }
    Ok(w)
}

fn warn_alpha(progress: &Progress, img: &RgbImageF32, path: &Path) {
    if img.had_alpha {
        progress.say(&format!(
            "warning: {}: transparency dropped (alpha ignored)",
            path.display()
        ));
    }
}

/// The sidecar's path: the output with a `.json` extension.
pub fn sidecar_path(output: &Path) -> PathBuf {
    output.with_extension("json")
}

/// Everything needed to reproduce and compare a run.
pub(crate) fn sidecar_json(
    command: &str,
    output: &Path,
    pool: PoolArg,
    params: &Params,
    weights: &VggWeights,
    inputs: serde_json::Value,
    result: &SynthResult,
) -> serde_json::Value {
    serde_json::json!({
        "tool": "mrfsynth",
        "version": env!("CARGO_PKG_VERSION"),
        "command": command,
        "output": output,
        "inputs": inputs,
        "params": params,
        "pooling": match pool { PoolArg::Max => "max", PoolArg::Avg => "avg" },
        "weights": { "path": weights.path, "sha256": weights.sha256, "preprocess": weights.preprocess.name() },
        "interrupted": result.interrupted,
        "seconds": result.seconds,
        "device": result.device,
        "precision": result.precision,
        "estimated_peak_bytes": result.estimated_peak_bytes,
        "notes": result.notes,
        "copy_score": result.copy_score,
        "levels": result.levels,
    })
}

#[allow(clippy::too_many_arguments)]
fn finish(
    command: &str,
    out: &OutputArgs,
    pool: PoolArg,
    params: &Params,
    weights: &VggWeights,
    inputs: serde_json::Value,
    result: SynthResult,
    progress: &Progress,
) -> Result<(), CliError> {
    image_io::save_rgb(&result.image, &out.output)
        .map_err(|e| failure(format!("writing the output: {e}")))?;
    let sidecar = sidecar_json(command, &out.output, pool, params, weights, inputs, &result);
    let text = serde_json::to_string_pretty(&sidecar).map_err(failure)?;
    let path = sidecar_path(&out.output);
    mrfsynth::atomic::write(&path, text.as_bytes())
        .map_err(|e| failure(format!("writing {}: {e}", path.display())))?;
    if result.interrupted {
        progress.say(&format!(
            "interrupted: wrote the best image so far to {}",
            out.output.display()
        ));
        return Err(CliError::new(exit::INTERRUPTED, "interrupted"));
    }
    progress.say(&format!(
        "wrote {} ({}x{}) and {} in {:.1}s",
        out.output.display(),
        result.image.width,
        result.image.height,
        path.display(),
        result.seconds
    ));
    Ok(())
}

fn features(a: FeaturesArgs, weights_path: Option<&Path>) -> Result<(), CliError> {
    check_output(&a.output, &["safetensors"])?;
    let layer_ids = layers(&a.layers, "--layers")?;
    let mut img = load_image(&a.image, "image")?;
    if let Some(side) = a.size {
        if side == 0 || side > 8192 {
            return Err(CliError::usage(format!(
                "--size must be between 1 and 8192, got {side}"
            )));
        }
        img = image_io::scale_to_long_side(&img, side);
    }
    let (_, vgg) = load_network(
        weights_path,
        pooling(a.pool),
        &Device::Cpu,
        Precision::F32,
        None,
    )?;
    let feats = synth::features(&vgg, &img, &layer_ids)?;
    let named: Vec<(String, candle_core::Tensor)> = feats
        .into_iter()
        .map(|(l, t)| (l.name().to_string(), t))
        .collect();
    let views: Vec<(&str, &candle_core::Tensor)> =
        named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bytes = safetensors::tensor::serialize(views, None).map_err(failure)?;
    mrfsynth::atomic::write(&a.output, &bytes)
        .map_err(|e| failure(format!("writing {}: {e}", a.output.display())))?;
    for (n, t) in &named {
        println!("{n}\t{:?}", t.dims());
    }
    Ok(())
}

fn weights_cmd(c: WeightsCommand, weights_path: Option<&Path>) -> Result<(), CliError> {
    match c {
        WeightsCommand::Fetch { force, from } => {
            let path = weights::fetch_into_cache(&weights::FetchOptions { force, from })?;
            let sha = weights::verify_checksum(&path)?;
            println!("cached {} (sha256 {sha})", path.display());
            Ok(())
        }
        WeightsCommand::Info => {
            let src = weights::resolve(weights_path);
            let (kind, path) = match &src {
                WeightsSource::Explicit(p) => ("--weights", p),
                WeightsSource::Env(p) => (weights::ENV_WEIGHTS, p),
                WeightsSource::Cache(p) => ("cache", p),
            };
            println!("source\t{kind}");
            println!("path\t{}", path.display());
            if !path.exists() {
                println!("present\tno (run `mrfsynth weights fetch`)");
                return Ok(());
            }
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            println!("present\tyes ({:.1} MB)", size as f64 / 1e6);
            let w = weights::load(weights_path, false)?;
            println!("sha256\t{}", w.sha256);
            println!("preprocess\t{}", w.preprocess.name());
            println!("layers\t{}", w.convs.len());
            Ok(())
        }
        WeightsCommand::Verify => {
            let src = weights::resolve(weights_path);
            if let WeightsSource::Cache(p) = &src {
                if !p.exists() {
                    return Err(WeightsError::NotCached(weights::cache_dir()).into());
                }
            }
            let w = weights::load_file(src.path(), matches!(src, WeightsSource::Cache(_)))?;
            println!(
                "ok\t{}\tsha256 {}\t{} convolutions\t{}",
                w.path.display(),
                w.sha256,
                w.convs.len(),
                w.preprocess.name()
            );
            Ok(())
        }
    }
}

/// Installs the Ctrl-C / SIGTERM handler: the first asks the run to stop after the current
/// iteration, the second exits at once.
pub fn install_interrupt_handler() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            mrfsynth::atomic::remove_unfinished();
            eprintln!("mrfsynth: interrupted again, exiting now");
            std::process::exit(exit::INTERRUPTED);
        }
        eprintln!("mrfsynth: interrupt: finishing the current iteration and saving (Ctrl-C again to abort)");
    });
    flag
}
