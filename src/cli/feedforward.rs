//! `train`, `generate` and `stylize`: the feed-forward commands over `mrfsynth::feedforward`.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use mrfsynth::feedforward::{self, Model, ModelInfo, TrainData, TrainOptions};
use mrfsynth::image_io::{self, RgbImageF32};
use mrfsynth::synth::{Params, Preset, PriorKind, GRAM_CONTENT_WEIGHT};
use mrfsynth::vgg::{Pooling, Precision};

use super::args::{GenerateArgs, StylizeArgs, TrainArgs};
use super::progress::Progress;
use super::{
    check_output, device, exit, failure, image_files, layers, load_image, load_network, parse_size,
    sidecar_path, CliError, IMAGE_EXTS,
};

/// The training options the flags ask for, over the defaults of the kind of model (for a
/// texture, fitted to the sample: [`TrainOptions::texture_for`]) or, resuming, over the
/// checkpoint's own settings.
fn options(
    a: &TrainArgs,
    style: &RgbImageF32,
    resume: Option<&ModelInfo>,
) -> Result<TrainOptions, CliError> {
    let stylize = a.content_dir.is_some();
    let mut o = match resume {
        Some(info) => TrainOptions::resuming(info)?,
        None if stylize => TrainOptions::stylize(),
        None => TrainOptions::texture_for(style, a.style_scale.unwrap_or(1.0)),
    };
    let mut params = match (resume, &a.prior) {
        (Some(_), None) => o.params.clone(),
        (_, prior) => {
            let prior: PriorKind = match prior {
                Some(p) => p
                    .parse()
                    .map_err(|e: String| CliError::usage(format!("--prior: {e}")))?,
                None => PriorKind::Gram,
            };
            let mut params = Params::preset_for(Preset::Default, prior);
            if prior == PriorKind::Gram {
                params.content_weight = GRAM_CONTENT_WEIGHT;
            }
            params
        }
    };
    if let Some(w) = a.content_weight {
        params.content_weight = w;
    }
    if let Some(w) = a.style_weight {
        params.gram_weight = w;
    }
    if let Some(l) = &a.gram_layers {
        params.gram_layers = layers(l, "--gram-layers")?;
    }
    if let Some(w) = a.mrf_weight {
        params.mrf_weight = w;
    }
    if let Some(w) = a.tv_weight {
        params.tv_weight = w;
    }
    if let Some(s) = a.style_scale {
        params.style_scale = s;
    }
    if let Some(seed) = a.seed {
        o.seed = seed;
    }
    params.seed = o.seed;
    params.validate()?;
    o.params = params;
    if let Some(v) = a.steps {
        o.steps = v;
    }
    if let Some(v) = a.crop {
        o.crop = v;
    }
    if let Some(v) = a.batch {
        o.batch = v;
    }
    if let Some(v) = a.learning_rate {
        o.learning_rate = v;
    }
    if let Some(v) = a.learning_rate_end {
        o.learning_rate_end = v;
    }
    if let Some(v) = a.diversity {
        if stylize && v > 0.0 {
            return Err(CliError::usage(
                "--diversity applies to texture generators only",
            ));
        }
        o.diversity = v;
    }
    if let Some(v) = a.channels {
        o.architecture.channels = v;
    }
    if let Some(v) = a.blocks {
        o.architecture.residual_blocks = v;
    }
    if let Some(v) = a.upsamplings {
        o.architecture.upsamplings = v;
    }
    if let Some(v) = a.scale_noise {
        if stylize && v > 0 {
            return Err(CliError::usage(
                "--scale-noise applies to texture generators only",
            ));
        }
        o.architecture.scale_noise_channels = v;
    }
    if let Some(v) = a.layout_noise {
        if stylize && v > 0 {
            return Err(CliError::usage(
                "--layout-noise applies to texture generators only",
            ));
        }
        o.architecture.layout_noise = v;
        o.architecture.layout_scale = if v == 0 {
            0
        } else if o.architecture.layout_scale == 0 {
            16
        } else {
            o.architecture.layout_scale
        };
    }
    if let Some(v) = a.layout_scale {
        if o.architecture.layout_noise == 0 {
            return Err(CliError::usage(
                "--layout-scale needs layout noise (--layout-noise N; on by default unless the sample is periodic)",
            ));
        }
        o.architecture.layout_scale = v;
    }
    if let Some(v) = &a.dilations {
        // All ones is the plain generator: store it as such.
        o.architecture.dilations = if v.iter().all(|d| *d == 1) {
            Vec::new()
        } else {
            v.clone()
        };
    }
    if let Some(v) = a.loss_levels {
        o.loss_levels = v;
    }
    if let Some(v) = &a.waves {
        if stylize && v == "auto" {
            return Err(CliError::usage(
                "--waves applies to texture generators only",
            ));
        }
        if v == "off" {
            o.architecture.waves.clear();
        }
    }
    if let Some(v) = a.checkpoint_every {
        o.checkpoint_every = v;
    }
    o.checkpoint = Some(a.output.clone());
    o.validate()?;
    Ok(o)
}

/// Every image file of a folder, sorted by name.
fn load_photos(dir: &Path, progress: &Progress) -> Result<Vec<RgbImageF32>, CliError> {
    let paths = image_files(dir, "--content-dir")?;
    progress.say(&format!("{} photos from {}", paths.len(), dir.display()));
    paths
        .iter()
        .map(|p| load_image(p, "--content-dir"))
        .collect()
}

pub fn train(
    a: TrainArgs,
    weights_path: Option<&Path>,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
) -> Result<(), CliError> {
    check_output(&a.output, &["safetensors"])?;
    let style = load_image(&a.style, "--style")?;
    let dev = device(a.device)?;
    let resume = match &a.resume {
        Some(p) => Some(Model::load(p, &dev)?),
        None => None,
    };
    let opts = options(&a, &style, resume.as_ref().map(|m| &m.info))?;
    let mut progress = Progress::new(quiet, interrupted, None, a.output.clone());
    if let Some(m) = &resume {
        progress.say(&format!(
            "note: resuming at step {} of {} with the checkpoint's architecture and settings",
            m.info.steps, opts.steps
        ));
    } else if a.content_dir.is_none() {
        progress.say(&format!("note: {}", sample_fit(&opts.architecture)));
    }
    let photos = match &a.content_dir {
        Some(dir) => Some(load_photos(dir, &progress)?),
        None => None,
    };
    let (weights, vgg) = load_network(
        weights_path,
        Pooling::Max,
        &dev,
        Precision::F32,
        Some(&progress),
    )?;
    let data = match &photos {
        Some(photos) => TrainData::Stylize {
            style: &style,
            photos,
        },
        None => TrainData::Texture { sample: &style },
    };
    let (model, report) = feedforward::train(&vgg, &data, &opts, resume, &mut progress)?;
    model.save(&a.output)?;
    let sidecar = serde_json::json!({
        "tool": "mrfsynth",
        "version": env!("CARGO_PKG_VERSION"),
        "command": "train",
        "output": a.output,
        "inputs": { "style": a.style, "content_dir": a.content_dir, "resume": a.resume },
        "model": model.info,
        "options": opts,
        "weights": { "path": weights.path, "sha256": weights.sha256 },
        "report": report,
    });
    write_sidecar(&a.output, &sidecar)?;
    if report.interrupted {
        progress.say(&format!(
            "interrupted: saved the model after {} steps to {}",
            report.steps,
            a.output.display()
        ));
        return Err(CliError::new(exit::INTERRUPTED, "interrupted"));
    }
    progress.say(&format!(
        "wrote {} ({} steps, loss {:.4e} -> {:.4e}) in {:.1}s",
        a.output.display(),
        report.steps,
        report.losses.first().copied().unwrap_or(f64::NAN),
        report.losses.last().copied().unwrap_or(f64::NAN),
        report.seconds
    ));
    Ok(())
}

/// What the texture defaults made of the sample, for a note.
fn sample_fit(arch: &feedforward::Architecture) -> String {
    if !arch.waves.is_empty() {
        let periods: Vec<String> = arch
            .waves
            .iter()
            .map(|w| {
                let degrees = w.y.atan2(w.x).to_degrees();
                format!("{:.1} px at {degrees:.0} degrees", w.period())
            })
            .collect();
        format!("a periodic sample: plane waves at {}", periods.join(", "))
    } else if arch.layout_noise > 0 {
        "no sharp period in the sample: layout noise and a falling step (see --waves)".to_string()
    } else {
        "no waves, no layout noise".to_string()
    }
}

fn write_sidecar(output: &Path, value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(failure)?;
    let path = sidecar_path(output);
    mrfsynth::atomic::write(&path, text.as_bytes())
        .map_err(|e| failure(format!("writing {}: {e}", path.display())))
}

pub fn generate(a: GenerateArgs, quiet: bool) -> Result<(), CliError> {
    check_output(&a.output, &IMAGE_EXTS)?;
    let (w, h) = parse_size(&a.size)?;
    let started = Instant::now();
    let dev = device(a.device)?;
    let limit = super::parse_max_memory(a.max_memory.as_deref())?;
    let model = Model::load(&a.model, &dev)?;
    let img = model.generate_within(w, h, a.seed, a.tileable, limit)?;
    image_io::save_rgb(&img, &a.output).map_err(|e| failure(format!("writing the output: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let sidecar = serde_json::json!({
        "tool": "mrfsynth",
        "version": env!("CARGO_PKG_VERSION"),
        "command": "generate",
        "output": a.output,
        "inputs": { "model": a.model, "seed": a.seed, "size": [w, h], "tileable": a.tileable },
        "model": model.info,
        "seconds": seconds,
        "device": mrfsynth::device::name(&dev),
    });
    write_sidecar(&a.output, &sidecar)?;
    if !quiet {
        eprintln!("wrote {} ({w}x{h}) in {seconds:.2}s", a.output.display());
    }
    Ok(())
}

pub fn stylize(a: StylizeArgs, quiet: bool) -> Result<(), CliError> {
    check_output(&a.output, &IMAGE_EXTS)?;
    let started = Instant::now();
    let mut content = load_image(&a.content, "--content")?;
    if let Some(side) = a.long_side {
        if side == 0 || side > mrfsynth::session::MAX_SIDE {
            return Err(CliError::usage(format!(
                "--long-side must be 1 to {}, got {side}",
                mrfsynth::session::MAX_SIDE
            )));
        }
        content = image_io::scale_to_long_side(&content, side);
    }
    let dev = device(a.device)?;
    let model = Model::load(&a.model, &dev)?;
    let img = model.stylize(&content)?;
    image_io::save_rgb(&img, &a.output).map_err(|e| failure(format!("writing the output: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let sidecar = serde_json::json!({
        "tool": "mrfsynth",
        "version": env!("CARGO_PKG_VERSION"),
        "command": "stylize",
        "output": a.output,
        "inputs": { "model": a.model, "content": a.content },
        "model": model.info,
        "seconds": seconds,
        "device": mrfsynth::device::name(&dev),
    });
    write_sidecar(&a.output, &sidecar)?;
    if !quiet {
        eprintln!(
            "wrote {} ({}x{}) in {seconds:.2}s",
            a.output.display(),
            img.width,
            img.height
        );
    }
    Ok(())
}
