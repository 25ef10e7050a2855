//! The synthesis loop: for each pyramid level, build the priors at that scale, optimise the
//! pixels, upsample the result into the next level.

pub mod augment;
pub mod init;
pub mod memory;
pub mod objective;
pub mod params;
pub mod pyramid;
pub mod style;

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde::Serialize;

use crate::image_io::{resize, RgbImageF32};
use crate::matcher::{self, ApproxMatcher, ApproxOptions, PatchMatcher};
use crate::optim::{Adam, Control, Lbfgs, Optimizer, StepInfo};
use crate::prior::gram::GramPrior;
use crate::prior::mrf::{MrfLayer, MrfPrior, MrfStats};
use crate::prior::{ContentLoss, FeatureLoss};
use crate::vgg::{LayerId, Vgg19};

pub use init::Init;
pub use objective::{Objective, Timing};
pub use params::{
    BankPrecision, Guides, MatcherKind, OptimizerKind, Params, PriorKind, GRAM_CONTENT_WEIGHT,
};
pub use pyramid::Level;

/// Largest pixel change (0..255 units) of the optimiser's first step at each level.
const FIRST_STEP_PX: f32 = 4.0;

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
    /// The estimate the run was admitted with, bytes.
    pub estimated_peak_bytes: u64,
    /// Where it ran: `cpu` or `cuda:N`.
    pub device: String,
}

/// A texture (no content) or a style transfer onto a content image.
pub enum Task<'a> {
    Texture,
    Transfer { content: &'a RgbImageF32 },
}

/// Style images at the scale the run uses: a texture's sample keeps its own scale (times
/// --style-scale); a transfer's style is sized to the output's long side.
fn scaled_styles(styles: &[RgbImageF32], task: &Task<'_>, params: &Params) -> Vec<RgbImageF32> {
    styles
        .iter()
        .map(|s| match task {
            Task::Texture => augment::scaled(s, params.style_scale),
            Task::Transfer { .. } => {
                let long =
                    (params.width.max(params.height) as f32 * params.style_scale).round() as u32;
                crate::image_io::scale_to_long_side(s, long.max(1))
            }
        })
        .collect()
}

/// Refuses sizes that cannot work, with the size that would; notes sizes that work badly.
fn check_sizes(
    styles: &[RgbImageF32],
    params: &Params,
    deepest: LayerId,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let min_out = min_side(
        deepest,
        if params.prior.uses_mrf() {
            params.patch_size
        } else {
            1
        },
    );
    if params.width.min(params.height) < min_out {
        bail!(
            "the output {}x{} is too small: {} needs at least {} px on each side",
            params.width,
            params.height,
            deepest,
            min_out
        );
    }
    if !params.prior.uses_mrf() {
        return Ok(());
    }
    let mrf_deepest = *params.mrf_layers.iter().max().expect("validated non-empty");
    for s in styles {
        let patches = params
            .mrf_layers
            .iter()
            .map(|&l| style::patch_count(s.width, s.height, l, params.patch_size, params.stride))
            .min()
            .unwrap_or(0);
        let need = min_side(mrf_deepest, params.patch_size);
        if patches == 0 {
            bail!(
                "the style image ({}x{} px after scaling) is too small: {} needs at least {need} px on each side",
                s.width,
                s.height,
                mrf_deepest
            );
        }
        if patches < pyramid::MIN_STYLE_PATCHES {
            notes.push(format!(
                "the style image gives only {patches} patches at {mrf_deepest}; expect a repetitive layout (a sample of at least {} px per side works better)",
                need * 3
            ));
        }
    }
    Ok(())
}

/// A level's priors, and the style patch count of each MRF layer.
type LevelPriors<'a> = (Vec<Box<dyn FeatureLoss + 'a>>, Vec<usize>);

/// Per bank row, its style's blend weight relative to the largest, or None when all styles
/// weigh the same: several exemplars' `blend` weights bias the MRF matching toward the heavier.
fn match_bias(
    blend: &[f64],
    ends: &[usize],
    device: &candle_core::Device,
) -> candle_core::Result<Option<Tensor>> {
    let top = blend.iter().cloned().fold(0.0, f64::max);
    if blend.len() < 2 || blend.iter().all(|&b| b == top) {
        return Ok(None);
    }
    let mut w = Vec::with_capacity(ends.last().copied().unwrap_or(0));
    let mut start = 0;
    for (&end, &b) in ends.iter().zip(blend) {
        w.extend(std::iter::repeat_n((b / top) as f32, end - start));
        start = end;
    }
    Tensor::from_vec(w, ends.last().copied().unwrap_or(0), device).map(Some)
}

/// The priors of one level, built at that level's scale.
fn level_priors<'a>(
    vgg: &Vgg19,
    styles: &[RgbImageF32],
    blend: &[f64],
    task: &Task<'_>,
    level: &Level,
    params: &Params,
) -> anyhow::Result<LevelPriors<'a>> {
    let level_styles: Vec<RgbImageF32> = styles
        .iter()
        .map(|s| augment::scaled(s, level.style_factor))
        .collect();
    let mut priors: Vec<Box<dyn FeatureLoss>> = Vec::new();
    let mut style_patches = Vec::new();
    if params.prior.uses_mrf() {
        // One bank per layer from every style (and its variants), remembering where each
        // style's patches end so the run can report which sample it drew from.
        let mut per_style = Vec::new();
        let mut map_scales = Vec::new();
        for (k, s) in level_styles.iter().enumerate() {
            let variants = augment::variants(s, params.rotations, params.scales);
            let maps = params.guides.as_ref().map(|g| {
                let m = resize(&g.style_maps[k], s.width, s.height);
                augment::variants(&m, params.rotations, params.scales)
            });
            let weight = params.guides.as_ref().map_or(0.0, |g| g.weight);
            let (banks, scales) = style::guided_mrf_banks(
                vgg,
                &variants,
                maps.as_deref(),
                weight,
                &params.mrf_layers,
                params.patch_size,
                params.stride,
            )?;
            per_style.push(banks);
            map_scales.push(scales);
        }
        let mut layers = Vec::new();
        for (i, layer) in params.mrf_layers.iter().enumerate() {
            let parts: Vec<&Tensor> = per_style.iter().map(|b| &b[i]).collect();
            let mut ends = Vec::new();
            let mut total = 0;
            for p in &parts {
                total += p.dim(0)?;
                ends.push(total);
            }
            let bank = Tensor::cat(&parts, 0)?;
            style_patches.push(total);
            let row_weights = match_bias(blend, &ends, bank.device())?;
            let matcher: Box<dyn PatchMatcher> = match params.matcher {
                MatcherKind::Exact => matcher::exact_for(
                    &bank,
                    params.match_budget,
                    params.bank_precision.dtype(),
                    row_weights.as_ref(),
                )?,
                MatcherKind::Approx => Box::new(ApproxMatcher::new(
                    &bank,
                    ApproxOptions {
                        f16_bank: true,
                        seed: params.seed,
                        ..ApproxOptions::default()
                    },
                )?),
            };
            let mut l = MrfLayer::new(
                *layer,
                bank,
                matcher,
                params.mrf_weight,
                params.patch_size,
                params.stride,
            );
            l.style_ends = ends;
            if let Some(g) = &params.guides {
                let d = layer.downsampling();
                let (fw, fh) = ((level.width >> d) as usize, (level.height >> d) as usize);
                l.guide = Some(style::map_channels(
                    &g.target_map,
                    fw,
                    fh,
                    map_scales[0][i],
                    vgg.device(),
                )?);
            }
            layers.push(l);
        }
        priors.push(Box::new(MrfPrior { layers }));
    }
    if params.prior.uses_gram() {
        let feats = level_styles
            .iter()
            .map(|s| {
                let input = vgg.preprocess(&s.to_tensor(vgg.device())?)?;
                Ok(vgg.forward(&input, &params.gram_layers, false)?.features)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        priors.push(Box::new(GramPrior::from_styles(
            &params.gram_layers,
            &feats,
            blend,
            params.gram_weight,
        )?));
    }
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
    Ok((priors, style_patches))
}

/// What a run will do, decided before any optimisation: the scaled styles, the levels, the
/// deepest layer, notes for the user and the memory estimate it was admitted with.
pub struct Plan {
    pub styles: Vec<RgbImageF32>,
    pub levels: Vec<Level>,
    pub deepest: LayerId,
    pub notes: Vec<String>,
    pub estimated_peak_bytes: u64,
}

/// Checks the inputs and plans the run; refuses sizes and memory that cannot work.
pub fn plan(
    styles: &[RgbImageF32],
    blend: &[f64],
    task: &Task<'_>,
    params: &Params,
) -> anyhow::Result<Plan> {
    params.validate()?;
    if styles.is_empty()
        || blend.len() != styles.len()
        || blend.iter().any(|b| !b.is_finite() || *b < 0.0)
        || blend.iter().sum::<f64>() <= 0.0
    {
        bail!("one blend weight >= 0 per style image is needed, not all zero");
    }
    let mut notes = Vec::new();
    let uneven = blend.iter().any(|&b| b != blend[0]);
    if uneven && params.prior.uses_mrf() && params.matcher == MatcherKind::Approx {
        notes.push(
            "blend weights bias exact MRF matching only; --matcher approx matches without them"
                .to_string(),
        );
    }
    let styles = scaled_styles(styles, task, params);
    let mut deepest = params.deepest_style_layer();
    if matches!(task, Task::Transfer { .. }) && params.content_weight > 0.0 {
        deepest = deepest.max(params.content_layer);
    }
    check_sizes(&styles, params, deepest, &mut notes)?;
    let smallest = styles
        .iter()
        .map(|s| (s.width, s.height))
        .min_by_key(|(w, h)| w * h)
        .expect("non-empty");
    let mrf_layers: &[LayerId] = if params.prior.uses_mrf() {
        &params.mrf_layers
    } else {
        &[]
    };
    let levels = pyramid::plan(
        (params.width, params.height),
        smallest,
        params.levels,
        params.level_ratio,
        mrf_layers,
        deepest,
        if params.prior.uses_mrf() {
            params.patch_size
        } else {
            1
        },
        params.stride,
        &mut notes,
    );
    let levels = if params.tileable {
        tile_friendly(levels, &mut notes)
    } else {
        levels
    };
    let estimated_peak_bytes = check_memory(params, &levels, &styles, deepest)?;
    Ok(Plan {
        styles,
        levels,
        deepest,
        notes,
        estimated_peak_bytes,
    })
}

/// Runs the pyramid. `styles` are at their native sizes, `blend` weighs them (Gram targets);
/// `params.width/height` is the output size.
pub fn run(
    vgg: &Vgg19,
    styles: &[RgbImageF32],
    blend: &[f64],
    task: Task<'_>,
    params: &Params,
    observer: &mut dyn Observer,
) -> anyhow::Result<SynthResult> {
    let started = Instant::now();
    // On a GPU the card's free memory is the limit, not the host's.
    let gpu_limited;
    let params = if params.max_memory.is_none() && !vgg.device().is_cpu() {
        gpu_limited = Params {
            max_memory: memory::available_bytes_on(vgg.device()),
            ..params.clone()
        };
        &gpu_limited
    } else {
        params
    };
    let Plan {
        styles,
        levels,
        notes,
        estimated_peak_bytes,
        ..
    } = plan(styles, blend, &task, params)?;
    let smallest = styles
        .iter()
        .map(|s| (s.width, s.height))
        .min_by_key(|(w, h)| w * h)
        .expect("planned: non-empty");
    for n in &notes {
        observer.note(n);
    }
    let first = levels[0];
    let mut image = init::initial_image(
        &params.init,
        &task,
        &styles[0],
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
        let (priors, style_patches) = level_priors(vgg, &styles, blend, &task, level, params)?;
        let setup_seconds = level_start.elapsed().as_secs_f64();
        observer.level_start(li, levels.len(), level, params.iterations);

        let (w, h) = (level.width, level.height);
        let mut priors = priors;
        if params.tileable {
            for p in priors.iter_mut() {
                p.set_wrap(true);
            }
        }
        let mut objective = Objective::new(
            vgg,
            priors,
            params.tv_weight,
            level.width as usize,
            level.height as usize,
        );
        objective.wrap = params.tileable;
        let mut optimizer: Box<dyn Optimizer> = match params.optimizer {
            OptimizerKind::Lbfgs => Box::new(Lbfgs {
                history: memory::lbfgs_history(params.history, w as u64 * h as u64),
                max_iter: params.iterations,
                max_evals: params.iterations * 5 / 4,
                // First step: at most a few grey levels on any pixel, whatever the image size.
                first_step: Some(FIRST_STEP_PX),
                ..Lbfgs::default()
            }),
            OptimizerKind::Adam => Box::new(Adam {
                max_iter: params.iterations,
                ..Adam::default()
            }),
        };
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
            .with_context(|| format!("optimising level {w}x{h}"))?;
        image = RgbImageF32::new(w, h, result.x);
        // Keep the pixels displayable: the next level and the output start from here.
        image.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));

        let report = LevelReport {
            width: w,
            height: h,
            style_width: (smallest.0 as f32 * level.style_factor).round() as u32,
            style_height: (smallest.1 as f32 * level.style_factor).round() as u32,
            style_patches,
            iterations: result.iterations,
            evaluations: result.evaluations,
            seconds: level_start.elapsed().as_secs_f64(),
            setup_seconds,
            timing: objective.timing,
            losses: result.losses.clone(),
            final_loss: result.loss,
            final_terms: objective.last_terms.clone(),
            mrf: mrf_stats(&objective),
        };
        observer.level_end(li, &report);
        reports.push(report);
        if stop_requested {
            interrupted = true;
            break;
        }
    }
    let finest = levels.last().expect("at least one level");
    if (image.width, image.height) != (finest.width, finest.height) {
        // Interrupted at a coarse level: still deliver the requested size.
        image = resize(&image, finest.width, finest.height);
    }
    if let (true, Task::Transfer { content }) = (params.original_colors, &task) {
        image = crate::color::keep_luminance(&image, &resize(content, image.width, image.height));
    }
    Ok(SynthResult {
        image,
        levels: reports,
        interrupted,
        notes,
        seconds: started.elapsed().as_secs_f64(),
        device: crate::device::name(vgg.device()),
        estimated_peak_bytes,
    })
}

/// Multiple of which every level's sides are, in tileable mode: four 2x2 pools.
const TILE_MULTIPLE: u32 = 16;

/// Rounds level sizes to multiples of [`TILE_MULTIPLE`] (noting a change of the output size).
fn tile_friendly(levels: Vec<Level>, notes: &mut Vec<String>) -> Vec<Level> {
    let round = |v: u32| ((v + TILE_MULTIPLE / 2) / TILE_MULTIPLE).max(1) * TILE_MULTIPLE;
    let last = *levels.last().expect("at least one level");
    let (w, h) = (round(last.width), round(last.height));
    if (w, h) != (last.width, last.height) {
        notes.push(format!(
            "tileable: output {}x{} rounded to {w}x{h} (sides must be multiples of {TILE_MULTIPLE})",
            last.width, last.height
        ));
    }
    levels
        .into_iter()
        .map(|l| Level {
            width: round(l.width),
            height: round(l.height),
            ..l
        })
        .collect()
}

/// Estimated peak of the whole run (its largest level); refuses a run over the limit and says
/// which output size would fit.
fn check_memory(
    params: &Params,
    levels: &[Level],
    styles: &[RgbImageF32],
    deepest: LayerId,
) -> anyhow::Result<u64> {
    // Banks of several styles add up: count them as copies of the largest.
    let variants =
        ((2 * params.rotations + 1) * (2 * params.scales + 1)) as u64 * styles.len() as u64;
    let (sw, sh) = styles
        .iter()
        .map(|s| (s.width, s.height))
        .max_by_key(|(w, h)| w * h)
        .unwrap_or((1, 1));
    let estimate = |scale: f64| -> u64 {
        levels
            .iter()
            .map(|l| {
                let (w, h) = (
                    (l.width as f64 * scale) as u32,
                    (l.height as f64 * scale) as u32,
                );
                let f = l.style_factor;
                let (lw, lh) = ((sw as f32 * f) as u32, (sh as f32 * f) as u32);
                memory::level_peak_bytes(params, w.max(1), h.max(1), lw, lh, variants, deepest)
            })
            .max()
            .unwrap_or(0)
    };
    let need = estimate(1.0);
    let Some(limit) = params.max_memory.or_else(memory::available_bytes) else {
        return Ok(need);
    };
    if need <= limit {
        return Ok(need);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..30 {
        let mid = 0.5 * (lo + hi);
        if estimate(mid) <= limit {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    bail!(
        "not enough memory: the run needs about {:.1} GiB, the limit is {:.1} GiB (--max-memory or the memory available); the largest output that fits is about {}x{}",
        gib(need),
        gib(limit),
        (params.width as f64 * lo) as u32,
        (params.height as f64 * lo) as u32
    )
}

fn mrf_stats(objective: &Objective<'_>) -> Vec<MrfStats> {
    objective
        .priors
        .iter()
        .find_map(|p| p.mrf_stats())
        .unwrap_or_default()
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
