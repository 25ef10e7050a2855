//! The synthesis loop: for each pyramid level, build the priors at that scale, optimise the
//! pixels, upsample the result into the next level.

pub mod augment;
pub mod init;
pub mod memory;
pub mod objective;
pub mod params;
pub mod pyramid;
pub mod style;
pub mod tiles;

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde::Serialize;

use crate::image_io::{resize, RgbImageF32};
use crate::matcher::{self, ApproxMatcher, ApproxOptions, ExactMatcher, PatchMatcher};
use crate::optim::{Adam, Control, Lbfgs, LineSearch, OptimResult, Optimizer, StepInfo};
use crate::prior::correspondence::{Assignment, CorrespondenceLayer, CorrespondencePrior};
use crate::prior::gram::GramPrior;
use crate::prior::mrf::{MrfLayer, MrfPrior, MrfStats};
use crate::prior::{ContentLoss, FeatureLoss};
use crate::vgg::{LayerId, Vgg19};

pub use init::Init;
pub use objective::{Objective, Timing};
pub use params::{
    BankPrecision, Guides, MatcherKind, MrfGradient, OptimizerKind, Params, Preset, PriorKind,
    GRAM_CONTENT_WEIGHT,
};
pub use pyramid::Level;

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
    /// Optimised in this many overlapping tiles (1: in one piece); the counts and losses below
    /// add up over the tiles.
    pub tiles: usize,
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
    /// Textures: the copy score of the output against the (first) sample, as `metrics` computes
    /// it (mean best NCC of 3 x 3 crops of 64 px; 1 = a verbatim copy). None for samples over
    /// 2048 x 2048 px.
    pub copy_score: Option<f64>,
    pub seconds: f64,
    /// The estimate the run was admitted with, bytes.
    pub estimated_peak_bytes: u64,
    /// Where it ran: `cpu` or `cuda:N`.
    pub device: String,
    /// Number format of the network's convolutions ("f32" or "bf16").
    pub precision: &'static str,
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
        if params.prior.uses_patches() {
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
    if !params.prior.uses_patches() {
        return Ok(());
    }
    let mrf_deepest = *params.mrf_layers.iter().max().expect("validated non-empty");
    for s in styles {
        let patches = params
            .mrf_layers
            .iter()
            .map(|&l| {
                style::patch_count(s.width, s.height, l, params.patch_size, params.style_stride)
            })
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

/// How the patch priors cut the sample's patches.
fn bank_cut(params: &Params) -> style::BankCut {
    style::BankCut {
        patch: params.patch_size,
        stride: params.style_stride,
        full_grid: params.full_grid,
        mirror: params.mirror_style,
    }
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
                bank_cut(params),
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
                // The occurrence penalty needs the tensor matcher's penalised search (any device).
                MatcherKind::Exact if params.occurrence > 0.0 => {
                    let m = ExactMatcher::new(&bank, params.match_budget)?;
                    Box::new(match &row_weights {
                        Some(w) => m.with_row_weights(w)?,
                        None => m,
                    })
                }
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
            l.full_grid = params.full_grid;
            l.gradient = params.mrf_gradient;
            l.occurrence = params.occurrence;
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
    if params.prior == PriorKind::Correspondence {
        let variants: Vec<RgbImageF32> = level_styles
            .iter()
            .flat_map(|s| augment::variants(s, params.rotations, params.scales))
            .collect();
        let (banks, _) = style::guided_mrf_banks(
            vgg,
            &variants,
            None,
            0.0,
            &params.mrf_layers,
            bank_cut(params),
        )?;
        let assignment = Assignment {
            bandwidth: params.gc_bandwidth,
            occurrence: params.occurrence,
            top_k: params.gc_top_k,
        };
        let mut layers = Vec::new();
        for (layer, bank) in params.mrf_layers.iter().zip(&banks) {
            style_patches.push(bank.dim(0)?);
            let mut l = CorrespondenceLayer::new(
                *layer,
                bank,
                params.mrf_weight,
                params.patch_size,
                params.stride,
                assignment,
                params.seed,
            )?;
            l.max_queries = params.gc_max_queries;
            l.full_grid = params.full_grid;
            layers.push(l);
        }
        priors.push(Box::new(CorrespondencePrior { layers }));
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
    /// Per level: optimised in tiles of this many px, or in one piece.
    pub tile_sizes: Vec<Option<u32>>,
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
    let mrf_layers: &[LayerId] = if params.prior.uses_patches() {
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
        if params.prior.uses_patches() {
            params.patch_size
        } else {
            1
        },
        params.style_stride,
        params.min_style_patches,
        &mut notes,
    );
    let levels = if params.tileable {
        tile_friendly(levels, &mut notes)
    } else {
        levels
    };
    let can_tile = matches!(task, Task::Texture) && !params.tileable && params.guides.is_none();
    if params.tile.is_some() && !can_tile {
        bail!("--tile works for textures made without --tileable or guide maps");
    }
    let (estimated_peak_bytes, tile_sizes) =
        check_memory(params, &levels, &styles, deepest, can_tile, &mut notes)?;
    Ok(Plan {
        styles,
        levels,
        tile_sizes,
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
        tile_sizes,
        notes,
        estimated_peak_bytes,
        ..
    } = plan(styles, blend, &task, params)?;
    // Blocks the allocator keeps for reuse live in the headroom under the limit.
    if let Some(limit) = params.max_memory.or_else(memory::available_bytes) {
        crate::block_cache::set_budget(limit.saturating_sub(estimated_peak_bytes));
    }
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
        vgg.input_mean_rgb(),
        first.width,
        first.height,
        params.seed,
    )?;
    let mut reports = Vec::new();
    let mut interrupted = false;
    for (li, level) in levels.iter().enumerate() {
        let level_start = Instant::now();
        let level_params = Params {
            iterations: params.level_iterations(li + 1 == levels.len()),
            ..params.clone()
        };
        let params = &level_params;
        if (image.width, image.height) != (level.width, level.height) {
            image = resize(&image, level.width, level.height);
        }
        let (priors, style_patches) = level_priors(vgg, &styles, blend, &task, level, params)?;
        let setup_seconds = level_start.elapsed().as_secs_f64();
        let (w, h) = (level.width, level.height);
        // The level's tiles and their overlap, when it is made in tiles.
        let tiling = tile_sizes[li].map(|t| {
            let overlap = tiles::overlap_for(t);
            (tiles::grid(w, h, t, overlap), overlap)
        });
        let planned_tiles = tiling.as_ref().map_or(1, |(grid, _)| grid.len());
        observer.level_start(li, levels.len(), level, params.iterations * planned_tiles);

        let mut priors = priors;
        if params.tileable {
            for p in priors.iter_mut() {
                p.set_wrap(true);
            }
        }
        let mut stop_requested = false;
        let (outcome, tile_count) = match tiling {
            None => {
                let mut on_step = |info: &StepInfo, x: &[f32]| {
                    let c = observer.step(li, info, x, w, h);
                    stop_requested |= c == Control::Stop;
                    c
                };
                let mut o = optimise(
                    vgg,
                    priors,
                    params,
                    std::mem::take(&mut image),
                    &mut on_step,
                )
                .with_context(|| format!("optimising level {w}x{h}"))?;
                image = std::mem::take(&mut o.image);
                (o, 1)
            }
            Some((grid, overlap)) => {
                let mut priors = priors;
                let mut done: Option<Optimised<'_>> = None;
                for (ti, r) in grid.iter().enumerate() {
                    // Progress counts the level's iterations across all its tiles.
                    let mut on_step = |info: &StepInfo, x: &[f32]| {
                        let whole = StepInfo {
                            iteration: ti * params.iterations + info.iteration,
                            ..*info
                        };
                        let c = observer.step(li, &whole, x, r.width, r.height);
                        stop_requested |= c == Control::Stop;
                        c
                    };
                    let mut o =
                        optimise(vgg, priors, params, tiles::crop(&image, *r), &mut on_step)
                            .with_context(|| {
                                format!(
                                    "optimising tile {} of {} at level {w}x{h}",
                                    ti + 1,
                                    grid.len()
                                )
                            })?;
                    tiles::blend_into(&mut image, &o.image, *r, overlap);
                    priors = std::mem::take(&mut o.priors);
                    done = Some(match done {
                        None => o,
                        Some(before) => before.then(o),
                    });
                    if stop_requested {
                        break;
                    }
                }
                (done.expect("a level has at least one tile"), grid.len())
            }
        };
        // Keep the pixels displayable: the next level and the output start from here.
        image.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));
        let Optimised {
            result,
            timing,
            last_terms,
            mrf,
            ..
        } = outcome;

        let report = LevelReport {
            width: w,
            height: h,
            tiles: tile_count,
            style_width: (smallest.0 as f32 * level.style_factor).round() as u32,
            style_height: (smallest.1 as f32 * level.style_factor).round() as u32,
            style_patches,
            iterations: result.iterations,
            evaluations: result.evaluations,
            seconds: level_start.elapsed().as_secs_f64(),
            setup_seconds,
            timing,
            losses: result.losses,
            final_loss: result.loss,
            final_terms: last_terms,
            mrf,
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
    // Patch priors can regrow the sample itself (its corners anchor the layout): measure it,
    // and say so when a texture copies more than it makes.
    // Its FFTs hold three spectra of the sample's padded size: skipped for huge samples.
    let copy_score = (matches!(task, Task::Texture)
        && styles[0].pixel_count() <= COPY_MAX_SAMPLE_PIXELS)
        .then(|| crate::metrics::copy::copy_score(&image, &styles[0], COPY_CROP, COPY_GRID).score);
    let mut notes = notes;
    if let Some(c) = copy_score.filter(|&c| c > COPY_WARNING) {
        let n = format!(
            "the output copies regions of the sample (copy score {c:.2} > {COPY_WARNING}): try --init noise, another --seed or a larger --size"
        );
        observer.note(&n);
        notes.push(n);
    }
    Ok(SynthResult {
        image,
        copy_score,
        levels: reports,
        interrupted,
        notes,
        seconds: started.elapsed().as_secs_f64(),
        device: crate::device::name(vgg.device()),
        precision: vgg.precision().name(),
        estimated_peak_bytes,
    })
}

/// Copy score above which a texture run warns that it regrew the sample.
const COPY_WARNING: f64 = 0.5;
/// Crop side and grid of that copy score (the `metrics` defaults).
const COPY_CROP: u32 = 64;
const COPY_GRID: usize = 3;
/// Largest sample (pixels) whose copy score a run computes: about 200 MB of spectra.
const COPY_MAX_SAMPLE_PIXELS: usize = 2048 * 2048;

/// Smallest tile the memory check picks: below it the overlaps dominate.
const MIN_TILE: u32 = 256;

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

/// Estimated peak of the whole run (its largest level), and the tile size of each level (None:
/// in one piece). Levels that do not fit the limit are tiled where `can_tile`; a run that does
/// not fit even so is refused with the output size that would.
fn check_memory(
    params: &Params,
    levels: &[Level],
    styles: &[RgbImageF32],
    deepest: LayerId,
    can_tile: bool,
    notes: &mut Vec<String>,
) -> anyhow::Result<(u64, Vec<Option<u32>>)> {
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
    let limit = params.max_memory.or_else(memory::available_bytes);
    // A level in tiles of `t` px: one tile's evaluation plus the level's whole image (the
    // image, its blend target and the resampling buffers).
    let tiled_need = |l: &Level, t: u32| -> u64 {
        let f = l.style_factor;
        let (lw, lh) = ((sw as f32 * f) as u32, (sh as f32 * f) as u32);
        let (tw, th) = (t.min(l.width), t.min(l.height));
        memory::level_peak_bytes(params, tw, th, lw, lh, variants, deepest)
            + 4 * 3 * 4 * l.width as u64 * l.height as u64
    };
    let mut tiles = Vec::with_capacity(levels.len());
    let mut need = 0u64;
    for l in levels {
        let whole = tiled_need(l, l.width.max(l.height));
        let forced = params.tile.filter(|&t| l.width > t || l.height > t);
        let tile = match (forced, limit) {
            (Some(t), _) => Some(t),
            (None, Some(limit)) if whole > limit && can_tile => {
                // The largest aligned tile that fits, no smaller than MIN_TILE.
                let mut t = (l.width.max(l.height) / tiles::TILE_ALIGN) * tiles::TILE_ALIGN;
                while t > MIN_TILE && tiled_need(l, t) > limit {
                    t = (t * 3 / 4) / tiles::TILE_ALIGN * tiles::TILE_ALIGN;
                }
                let t = t.max(MIN_TILE);
                (tiled_need(l, t) <= limit).then_some(t)
            }
            _ => None,
        };
        if let Some(t) = tile {
            let count = tiles::grid(l.width, l.height, t, tiles::overlap_for(t)).len();
            notes.push(format!(
                "level {}x{} is optimised in {count} overlapping tiles of {t} px (overlap {} px), sharing one patch bank",
                l.width,
                l.height,
                tiles::overlap_for(t)
            ));
        }
        need = need.max(tile.map_or(whole, |t| tiled_need(l, t)));
        tiles.push(tile);
    }
    let Some(limit) = limit else {
        return Ok((need, tiles));
    };
    if need <= limit {
        return Ok((need, tiles));
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

/// One optimisation of an image (a level, or a tile of one) under the level's priors, which it
/// hands back for the next tile.
struct Optimised<'a> {
    image: RgbImageF32,
    /// The optimiser's account (its `x` is moved into `image`).
    result: OptimResult,
    priors: Vec<Box<dyn FeatureLoss + 'a>>,
    timing: Timing,
    last_terms: std::collections::BTreeMap<String, f64>,
    mrf: Vec<MrfStats>,
}

impl Optimised<'_> {
    /// The account of this optimisation followed by `next` (a later tile of the same level).
    fn then(mut self, next: Self) -> Self {
        let (a, b) = (&mut self.result, next.result);
        a.iterations += b.iterations;
        a.evaluations += b.evaluations;
        a.losses.extend(b.losses);
        a.loss = b.loss;
        a.stopped_early |= b.stopped_early;
        a.reason = b.reason;
        let (t, u) = (&mut self.timing, next.timing);
        t.evaluations += u.evaluations;
        t.forward_s += u.forward_s;
        t.priors_s += u.priors_s;
        t.backward_s += u.backward_s;
        self.last_terms = next.last_terms;
        self.mrf = next.mrf;
        self
    }
}

fn optimizer_for(params: &Params, pixels: u64) -> Box<dyn Optimizer> {
    match params.optimizer {
        OptimizerKind::Lbfgs => Box::new(Lbfgs {
            history: memory::lbfgs_history(params.history, pixels),
            max_iter: params.iterations,
            max_evals: params.iterations * 5 / 4,
            line_search: if params.line_search {
                LineSearch::StrongWolfe
            } else {
                LineSearch::None
            },
            first_step: params.first_step_px,
            ..Lbfgs::default()
        }),
        OptimizerKind::Adam => Box::new(Adam {
            max_iter: params.iterations,
            lr: params.learning_rate,
            ..Adam::default()
        }),
    }
}

fn optimise<'a>(
    vgg: &'a Vgg19,
    priors: Vec<Box<dyn FeatureLoss + 'a>>,
    params: &Params,
    image: RgbImageF32,
    on_step: &mut dyn FnMut(&StepInfo, &[f32]) -> Control,
) -> anyhow::Result<Optimised<'a>> {
    let (w, h) = (image.width, image.height);
    let mut objective = Objective::new(vgg, priors, params.tv_weight, w as usize, h as usize);
    objective.wrap = params.tileable;
    let mut optimizer = optimizer_for(params, w as u64 * h as u64);
    let mut result = optimizer.minimize(image.data, &mut objective, on_step)?;
    let image = RgbImageF32::new(w, h, std::mem::take(&mut result.x));
    let mrf = mrf_stats(&objective);
    Ok(Optimised {
        image,
        result,
        timing: objective.timing,
        last_terms: objective.last_terms,
        mrf,
        priors: objective.priors,
    })
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
