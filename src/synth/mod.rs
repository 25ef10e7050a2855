//! The synthesis loop: for each pyramid level, build the priors at that scale, optimise the
//! pixels, upsample the result into the next level.

pub mod augment;
pub mod init;
pub mod objective;
pub mod pyramid;
pub mod style;

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde::Serialize;

use crate::image_io::{resize, RgbImageF32};
use crate::matcher::ExactMatcher;
use crate::optim::{Adam, Control, Lbfgs, Optimizer, StepInfo};
use crate::prior::mrf::{MrfLayer, MrfPrior, MrfStats};
use crate::prior::{ContentLoss, FeatureLoss};
use crate::vgg::{LayerId, Vgg19};

pub use init::Init;
pub use objective::{Objective, Timing};
pub use pyramid::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Lbfgs,
    Adam,
}

/// Every knob of a run; the defaults are CNNMRF's.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Output size (finest level). For a transfer, the content is resized to it.
    pub width: u32,
    pub height: u32,
    pub levels: usize,
    pub level_ratio: f32,
    pub iterations: usize,
    #[serde(serialize_with = "layer_names")]
    pub mrf_layers: Vec<LayerId>,
    pub patch_size: usize,
    pub stride: usize,
    pub mrf_weight: f64,
    #[serde(serialize_with = "layer_name")]
    pub content_layer: LayerId,
    pub content_weight: f64,
    pub tv_weight: f64,
    pub rotations: u32,
    pub scales: u32,
    /// Style image scale relative to its native size (texture) or to the output (transfer).
    pub style_scale: f32,
    pub optimizer: OptimizerKind,
    pub history: usize,
    pub init: Init,
    pub seed: u64,
    /// Largest block of match scores held at once, in floats.
    pub match_budget: usize,
}

fn layer_names<S: serde::Serializer>(l: &[LayerId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(l.iter().map(|l| l.name()))
}
fn layer_name<S: serde::Serializer>(l: &LayerId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(l.name())
}

impl Default for Params {
    fn default() -> Self {
        Self {
            width: 384,
            height: 384,
            levels: 3,
            level_ratio: 0.5,
            iterations: 100,
            mrf_layers: LayerId::parse_list("relu3_1,relu4_1").expect("valid names"),
            patch_size: 3,
            stride: 2,
            mrf_weight: 1e-4,
            content_layer: "relu4_2".parse().expect("valid name"),
            content_weight: 2e1,
            tv_weight: 1e-3,
            rotations: 0,
            scales: 0,
            style_scale: 1.0,
            optimizer: OptimizerKind::Lbfgs,
            history: 100,
            init: Init::Noise,
            seed: 0,
            match_budget: 1 << 24,
        }
    }
}

impl Params {
    /// Checks values a user can get wrong; one message per problem.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.width == 0 || self.height == 0 {
            bail!(
                "output size must be positive, got {}x{}",
                self.width,
                self.height
            );
        }
        if self.levels == 0 || self.levels > 8 {
            bail!("--levels must be between 1 and 8, got {}", self.levels);
        }
        if !(self.level_ratio > 0.0 && self.level_ratio < 1.0) {
            bail!("--level-ratio must be in (0, 1), got {}", self.level_ratio);
        }
        if self.iterations == 0 {
            bail!("--iterations must be at least 1");
        }
        if self.patch_size == 0 || self.patch_size > 9 {
            bail!(
                "--patch-size must be between 1 and 9, got {}",
                self.patch_size
            );
        }
        if self.stride == 0 || self.stride > self.patch_size {
            bail!(
                "--stride must be between 1 and the patch size, got {}",
                self.stride
            );
        }
        for (name, v) in [
            ("--mrf-weight", self.mrf_weight),
            ("--content-weight", self.content_weight),
            ("--tv-weight", self.tv_weight),
        ] {
            if !v.is_finite() || v < 0.0 {
                bail!("{name} must be a finite number >= 0, got {v}");
            }
        }
        if !(self.style_scale.is_finite() && self.style_scale > 0.0 && self.style_scale <= 16.0) {
            bail!("--style-scale must be in (0, 16], got {}", self.style_scale);
        }
        if self.rotations > 12 || self.scales > 10 {
            bail!("--rotations must be <= 12 and --scales <= 10");
        }
        if self.history == 0 {
            bail!("--history must be at least 1");
        }
        if self.mrf_layers.is_empty() {
            bail!("at least one MRF layer is needed");
        }
        Ok(())
    }
}

/// What the caller wants to hear about while a run goes on. Every method has a default.
pub trait Observer {
    fn note(&mut self, _msg: &str) {}
    fn level_start(&mut self, _index: usize, _count: usize, _level: &Level, _iterations: usize) {}
    /// After each optimiser iteration, with the current image (planar RGB). Return Stop to end
    /// the run early (the best image so far is kept).
    fn step(
        &mut self,
        _level: usize,
        _info: &StepInfo,
        _image: &[f32],
        _width: u32,
        _height: u32,
    ) -> Control {
        Control::Continue
    }
    fn level_end(&mut self, _index: usize, _report: &LevelReport) {}
}

/// Observes nothing.
pub struct Silent;
impl Observer for Silent {}

#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    pub width: u32,
    pub height: u32,
    pub style_width: u32,
    pub style_height: u32,
    pub style_patches: Vec<usize>,
    pub iterations: usize,
    pub evaluations: usize,
    pub seconds: f64,
    pub setup_seconds: f64,
    pub timing: Timing,
    pub losses: Vec<f32>,
    pub final_loss: f32,
    pub final_terms: std::collections::BTreeMap<String, f64>,
    pub mrf: Vec<MrfStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SynthResult {
    #[serde(skip)]
    pub image: RgbImageF32,
    pub levels: Vec<LevelReport>,
    pub interrupted: bool,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// A texture (no content) or a style transfer onto a content image.
pub enum Task<'a> {
    Texture,
    Transfer { content: &'a RgbImageF32 },
}

/// Runs the pyramid. `style` is at its native size; `params.width/height` is the output size.
pub fn run(
    vgg: &Vgg19,
    style: &RgbImageF32,
    task: Task<'_>,
    params: &Params,
    observer: &mut dyn Observer,
) -> anyhow::Result<SynthResult> {
    params.validate()?;
    let started = Instant::now();
    let mut notes = Vec::new();
    // Texture: the sample keeps its own scale. Transfer: the style matches the output's size.
    let style = match task {
        Task::Texture => augment::scaled(style, params.style_scale),
        Task::Transfer { .. } => {
            let long = (params.width.max(params.height) as f32 * params.style_scale).round() as u32;
            crate::image_io::scale_to_long_side(style, long.max(1))
        }
    };
    let mut deepest = *params.mrf_layers.iter().max().expect("validated non-empty");
    if matches!(task, Task::Transfer { .. }) {
        deepest = deepest.max(params.content_layer);
    }
    let levels = pyramid::plan(
        (params.width, params.height),
        (style.width, style.height),
        params.levels,
        params.level_ratio,
        &params.mrf_layers,
        deepest,
        params.patch_size,
        params.stride,
        &mut notes,
    );
    for n in &notes {
        observer.note(n);
    }
    let first = levels[0];
    let finest_patches = params
        .mrf_layers
        .iter()
        .map(|&l| {
            style::patch_count(
                style.width,
                style.height,
                l,
                params.patch_size,
                params.stride,
            )
        })
        .min()
        .unwrap_or(0);
    if finest_patches == 0 {
        bail!(
            "the style image ({}x{} px after --style-scale) is too small: {} needs at least {} px on each side",
            style.width,
            style.height,
            deepest,
            min_side(deepest, params.patch_size)
        );
    }
    if finest_patches < pyramid::MIN_STYLE_PATCHES {
        let msg = format!(
            "the style image gives only {finest_patches} patches at its deepest MRF layer; expect a repetitive layout (a sample of at least {} px per side works better)",
            min_side(deepest, params.patch_size) * 2
        );
        observer.note(&msg);
        notes.push(msg);
    }
    if patch_side(params.width.min(params.height), deepest) < params.patch_size {
        bail!(
            "the output {}x{} is too small: {} needs at least {} px on each side",
            params.width,
            params.height,
            deepest,
            min_side(deepest, params.patch_size)
        );
    }

    let mut image = init::initial_image(
        &params.init,
        &task,
        &style,
        first.width,
        first.height,
        params.seed,
    )?;
    let mut reports = Vec::new();
    let mut interrupted = false;
    for (li, level) in levels.iter().enumerate() {
        let level_start = Instant::now();
        if (image.width, image.height) != (level.width, level.height) {
            image = resize(&image, level.width, level.height);
        }
        let level_style = augment::scaled(&style, level.style_factor);
        let variants = augment::variants(&level_style, params.rotations, params.scales);
        let banks = style::mrf_banks(
            vgg,
            &variants,
            &params.mrf_layers,
            params.patch_size,
            params.stride,
        )?;
        let style_patches: Vec<usize> = banks
            .iter()
            .map(|b| b.dim(0))
            .collect::<candle_core::Result<_>>()?;
        let mut mrf_layers = Vec::new();
        for (layer, bank) in params.mrf_layers.iter().zip(banks) {
            let matcher = ExactMatcher::new(&bank, params.match_budget)?;
            mrf_layers.push(MrfLayer::new(
                *layer,
                bank,
                Box::new(matcher),
                params.mrf_weight,
                params.patch_size,
                params.stride,
            ));
        }
        let mut priors: Vec<Box<dyn FeatureLoss>> = vec![Box::new(MrfPrior { layers: mrf_layers })];
        if let Task::Transfer { content } = task {
            if params.content_weight > 0.0 {
                let c = resize(content, level.width, level.height);
                let input = vgg.preprocess(&c.to_tensor(vgg.device())?)?;
                let target = vgg
                    .forward(&input, &[params.content_layer], false)?
                    .features[&params.content_layer]
                    .clone();
                priors.push(Box::new(ContentLoss::new(
                    params.content_layer,
                    target,
                    params.content_weight,
                )));
            }
        }
        let setup_seconds = level_start.elapsed().as_secs_f64();
        observer.level_start(li, levels.len(), level, params.iterations);

        let mut objective = Objective::new(
            vgg,
            priors,
            params.tv_weight,
            level.width as usize,
            level.height as usize,
        );
        let mut optimizer: Box<dyn Optimizer> = match params.optimizer {
            OptimizerKind::Lbfgs => Box::new(Lbfgs {
                history: params.history,
                max_iter: params.iterations,
                max_evals: params.iterations * 5 / 4,
                ..Lbfgs::default()
            }),
            OptimizerKind::Adam => Box::new(Adam {
                max_iter: params.iterations,
                ..Adam::default()
            }),
        };
        let (w, h) = (level.width, level.height);
        let mut stop_requested = false;
        let mut on_step = |info: &StepInfo, x: &[f32]| {
            let c = observer.step(li, info, x, w, h);
            if c == Control::Stop {
                stop_requested = true;
            }
            c
        };
        let result = optimizer
            .minimize(
                std::mem::take(&mut image.data),
                &mut objective,
                &mut on_step,
            )
            .with_context(|| format!("optimising level {}x{}", w, h))?;
        image = RgbImageF32::new(w, h, result.x);
        // Keep the pixels displayable: the next level and the output start from here.
        image.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));

        let mrf_stats = mrf_stats(&objective);
        let report = LevelReport {
            width: w,
            height: h,
            style_width: level_style.width,
            style_height: level_style.height,
            style_patches,
            iterations: result.iterations,
            evaluations: result.evaluations,
            seconds: level_start.elapsed().as_secs_f64(),
            setup_seconds,
            timing: objective.timing,
            losses: result.losses.clone(),
            final_loss: result.loss,
            final_terms: objective.last_terms.clone(),
            mrf: mrf_stats,
        };
        observer.level_end(li, &report);
        reports.push(report);
        if stop_requested {
            interrupted = true;
            break;
        }
    }
    if (image.width, image.height) != (params.width, params.height) {
        // Interrupted at a coarse level: still deliver the requested size.
        image = resize(&image, params.width, params.height);
    }
    Ok(SynthResult {
        image,
        levels: reports,
        interrupted,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn mrf_stats(objective: &Objective<'_>) -> Vec<MrfStats> {
    // The MRF prior is the first; its layers carry the last matching statistics.
    objective
        .priors
        .first()
        .and_then(|p| p.mrf_stats())
        .unwrap_or_default()
}

/// Side of a layer's feature map for an image side of `px`.
fn patch_side(px: u32, layer: LayerId) -> usize {
    (px >> layer.downsampling()) as usize
}

/// Smallest image side giving one patch of `patch` at `layer`.
pub fn min_side(layer: LayerId, patch: usize) -> u32 {
    (patch as u32) << layer.downsampling()
}

/// Runs the network once on an image for the named layers (the `features` command).
pub fn features(
    vgg: &Vgg19,
    image: &RgbImageF32,
    layers: &[LayerId],
) -> anyhow::Result<Vec<(LayerId, Tensor)>> {
    let input = vgg.preprocess(&image.to_tensor(vgg.device())?)?;
    let fwd = vgg.forward(&input, layers, false)?;
    Ok(layers
        .iter()
        .map(|l| (*l, fwd.features[l].clone()))
        .collect())
}
