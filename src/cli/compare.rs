//! `compare` (MRF and Gram side by side, with a report) and `metrics` (score one image).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;
use mrfsynth::assets::weights::VggWeights;
use mrfsynth::image_io::{self, RgbImageF32};
use mrfsynth::metrics::{self, MetricsOptions};
use mrfsynth::report::{self, RunSummary};
use mrfsynth::synth::{self, Init, PriorKind, Task};
use mrfsynth::vgg::{Pooling, Precision, Vgg19};

use super::args::{CompareArgs, MetricsArgs};
use super::progress::Progress;
use super::{
    exit, failure, image_files, load_image, load_network, load_styles, params_for_prior,
    parse_size, sidecar_json, synth_network, CliError,
};

pub fn metrics(a: MetricsArgs, weights_path: Option<&Path>) -> Result<(), CliError> {
    let (_, vgg) = load_network(
        weights_path,
        Pooling::Max,
        &Device::Cpu,
        Precision::F32,
        None,
    )?;
    let m = metrics_of(&a, &vgg)?;
    let value = serde_json::to_value(&m).map_err(failure)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&value).map_err(failure)?);
        return Ok(());
    }
    for (name, v) in report::flatten_metrics(&value) {
        println!("{name:<32} {}", report::html::fmt_num(v));
    }
    Ok(())
}

/// The metrics a `metrics` command (or a batch's metrics job) asks for, on `vgg`.
pub(super) fn metrics_of(a: &MetricsArgs, vgg: &Vgg19) -> Result<metrics::Metrics, CliError> {
    let image = load_image(&a.image, "image")?;
    let style = load_image(&a.style, "--style")?;
    let content = a
        .content
        .as_ref()
        .map(|c| load_image(c, "--content"))
        .transpose()?;
    let opts = MetricsOptions {
        seed: a.seed,
        ..MetricsOptions::default()
    };
    Ok(metrics::compute(
        vgg,
        &image,
        &style,
        content.as_ref(),
        &opts,
    )?)
}

pub fn compare(
    a: CompareArgs,
    weights_path: Option<&Path>,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
) -> Result<(), CliError> {
    if a.synth.prior.is_some() {
        return Err(CliError::usage(
            "compare runs both priors (mrf and gram): --prior does not apply",
        ));
    }
    if a.style.is_empty() && a.style_dir.is_none() {
        return Err(CliError::usage(
            "compare needs --style IMAGE or --style-dir DIR",
        ));
    }
    let parent = match a.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(CliError::input(format!(
            "output folder {} does not exist",
            parent.display()
        )));
    }
    if a.output.exists() && !a.output.is_dir() {
        return Err(CliError::input(format!(
            "{} exists and is not a folder",
            a.output.display()
        )));
    }
    let mut progress = Progress::new(quiet, interrupted.clone(), None, a.output.join("run.png"));
    let (weights, vgg) = synth_network(&a.synth, weights_path, &progress)?;
    let help = metrics::describe();

    if let Some(dir) = &a.style_dir {
        let mut rows = Vec::new();
        for file in image_files(dir, "--style-dir")? {
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            progress.say(&format!("== {}", file.display()));
            let styles = load_styles(std::slice::from_ref(&file), &progress)?;
            let runs = compare_one(
                &vgg,
                &weights,
                std::slice::from_ref(&file),
                &styles,
                None,
                &a,
                &a.output.join(&name),
                &mut progress,
            )?;
            rows.push((name, runs));
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
        }
        report::write_batch(
            &a.output,
            "mrfsynth: MRF vs Gram over a folder",
            &rows,
            help,
        )
        .map_err(|e| failure(format!("{e:#}")))?;
    } else {
        let styles = load_styles(&a.style, &progress)?;
        let content = a
            .content
            .as_ref()
            .map(|c| load_image(c, "--content"))
            .transpose()?;
        compare_one(
            &vgg,
            &weights,
            &a.style,
            &styles,
            content.as_ref(),
            &a,
            &a.output,
            &mut progress,
        )?;
    }
    if interrupted.load(Ordering::SeqCst) {
        progress.say("interrupted: the report holds what was finished");
        return Err(CliError::new(exit::INTERRUPTED, "interrupted"));
    }
    progress.say(&format!("wrote {}", a.output.join("index.html").display()));
    Ok(())
}

/// Both priors under the same pyramid, optimiser, seed and budget; the report in `dir`.
/// Returns each run's label and flattened metrics.
#[allow(clippy::too_many_arguments)]
fn compare_one(
    vgg: &Vgg19,
    weights: &VggWeights,
    style_paths: &[PathBuf],
    styles: &[RgbImageF32],
    content: Option<&RgbImageF32>,
    a: &CompareArgs,
    dir: &Path,
    progress: &mut Progress,
) -> Result<Vec<report::RunMetrics>, CliError> {
    let (w, h) = match (content, &a.size) {
        (Some(c), _) => image_io::dims_for_long_side(c.width, c.height, a.long_side),
        (None, Some(s)) => parse_size(s)?,
        (None, None) => image_io::dims_for_long_side(
            styles[0].width,
            styles[0].height,
            mrfsynth::session::DEFAULT_LONG_SIDE,
        ),
    };
    let blend = super::blend_weights(a.synth.style_blend.as_deref(), styles.len())?;
    let mut runs = Vec::new();
    let mut base_params = None;
    for (label, prior, content_weight) in [
        ("MRF", PriorKind::Mrf, a.content_weight),
        ("Gram", PriorKind::Gram, a.gram_content_weight),
    ] {
        let mut params = params_for_prior(&a.synth, w, h, prior)?;
        params.content_weight = content_weight;
        if content.is_some() {
            params.init = Init::Content;
        }
        params
            .validate()
            .map_err(|e| CliError::usage(format!("{e:#}")))?;
        progress.say(&format!("{label}: {w}x{h}"));
        let task = match content {
            Some(c) => Task::Transfer { content: c },
            None => Task::Texture,
        };
        let mut result = synth::run(vgg, styles, &blend, task, &params, progress)?;
        // Score the image as it is saved (8 bits), so `mrfsynth metrics` on the file agrees.
        result
            .image
            .data
            .iter_mut()
            .for_each(|v| *v = v.clamp(0.0, 255.0).round());
        let opts = MetricsOptions {
            seed: params.seed,
            ..MetricsOptions::default()
        };
        let m = metrics::compute(vgg, &result.image, &styles[0], content, &opts)?;
        let inputs =
            serde_json::json!({ "style": style_paths, "content": a.content, "style_blend": blend });
        let file = dir.join(format!("{}.png", label.to_lowercase()));
        let sidecar = sidecar_json(
            "compare",
            &file,
            a.synth.pool,
            &params,
            weights,
            inputs,
            &result,
        );
        runs.push(RunSummary {
            label: label.to_string(),
            losses: result.levels.iter().map(|l| l.losses.clone()).collect(),
            seconds: result.seconds,
            metrics: serde_json::to_value(&m).map_err(failure)?,
            image: result.image,
            sidecar,
        });
        base_params.get_or_insert(params);
        if result.interrupted {
            break;
        }
    }
    if let Some(path) = &a.model {
        runs.push(generator_run(
            vgg,
            path,
            &styles[0],
            content,
            (w, h),
            a.synth.seed,
        )?);
    }
    let mut inputs: Vec<(&str, &RgbImageF32)> = vec![("style", &styles[0])];
    if let Some(c) = content {
        inputs.push(("content", c));
    }
    let title = format!(
        "mrfsynth: MRF vs Gram, {}{}",
        style_paths[0]
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        a.content
            .as_ref()
            .and_then(|c| c.file_name())
            .map(|f| format!(" onto {}", f.to_string_lossy()))
            .unwrap_or_default()
    );
    let params = serde_json::json!({ "shared": base_params, "mrf_content_weight": a.content_weight, "gram_content_weight": a.gram_content_weight });
    report::write_comparison(dir, &title, &inputs, &runs, metrics::describe(), &params)
        .map_err(|e| failure(format!("{e:#}")))?;
    Ok(runs
        .iter()
        .map(|r| (r.label.clone(), report::flatten_metrics(&r.metrics)))
        .collect())
}

/// The comparison's column for a trained generator: its texture (or stylised content) at the
/// runs' size and seed, scored as they are.
fn generator_run(
    vgg: &Vgg19,
    path: &Path,
    style: &RgbImageF32,
    content: Option<&RgbImageF32>,
    (w, h): (u32, u32),
    seed: u64,
) -> Result<RunSummary, CliError> {
    use mrfsynth::feedforward::{sample_checksum, Model};
    let started = std::time::Instant::now();
    let model = Model::load(path, vgg.device())?;
    if model.info.sample_sha256 != sample_checksum(style) {
        return Err(CliError::input(format!(
            "--model {}: trained on another image than --style",
            path.display()
        )));
    }
    let mut image = match content {
        Some(c) => model.stylize(&image_io::resize(c, w, h))?,
        None => model.generate(w, h, seed, false)?,
    };
    let seconds = started.elapsed().as_secs_f64();
    image
        .data
        .iter_mut()
        .for_each(|v| *v = v.clamp(0.0, 255.0).round());
    let opts = MetricsOptions {
        seed,
        ..MetricsOptions::default()
    };
    let m = metrics::compute(vgg, &image, style, content, &opts)?;
    let sidecar = serde_json::json!({
        "tool": "mrfsynth",
        "version": env!("CARGO_PKG_VERSION"),
        "command": "compare",
        "model": path,
        "model_info": model.info,
        "seed": seed,
        "seconds": seconds,
    });
    Ok(RunSummary {
        label: "Generator".to_string(),
        losses: Vec::new(),
        seconds,
        metrics: serde_json::to_value(&m).map_err(failure)?,
        image,
        sidecar,
    })
}
