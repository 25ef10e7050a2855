//! The run loop: for each level, build its priors, optimise the pixels (whole or in tiles) and
//! carry the result up to the next level.

use std::time::Instant;

use crate::error::Context;
use candle_core::Tensor;

use super::params::AUTO_OCCURRENCE;
use super::plan::{plan, Plan};
use super::priors::level_priors;
use super::{
    init, memory, tiles, LevelReport, Objective, Observer, OptimizerKind, Params, PriorKind,
    SynthResult, Task, Timing,
};
use crate::image_io::{resize, resize_planar, RgbImageF32};
use crate::optim::{Adam, Control, Lbfgs, LineSearch, OptimResult, Optimizer, StepInfo};
use crate::prior::mrf::MrfStats;
use crate::prior::FeatureLoss;
use crate::vgg::{LayerId, Vgg19};

/// Runs the pyramid. `styles` are at their native sizes, `blend` weighs them (Gram targets);
/// `params.width/height` is the output size.
pub fn run(
    vgg: &Vgg19,
    styles: &[RgbImageF32],
    blend: &[f64],
    task: Task<'_>,
    params: &Params,
    observer: &mut dyn Observer,
) -> crate::Result<SynthResult> {
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
    // A sample larger than the output: spread the matches over all of it.
    let auto_penalised;
    let mut auto_note = None;
    let params = if auto_occurrence_applies(styles, &task, params) {
        auto_penalised = Params {
            occurrence: AUTO_OCCURRENCE,
            ..params.clone()
        };
        auto_note = Some(format!(
            "the sample is larger than the output: occurrence penalty {AUTO_OCCURRENCE} on, so \
             that the texture draws on all of the sample (--occurrence 0 turns it off)"
        ));
        &auto_penalised
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
        crate::cpu::block_cache::set_budget(limit.saturating_sub(estimated_peak_bytes));
    }
    let smallest = styles
        .iter()
        .map(|s| (s.width, s.height))
        .min_by_key(|(w, h)| w * h)
        .expect("planned: non-empty");
    let notes: Vec<String> = auto_note.into_iter().chain(notes).collect();
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
            gram_weight: params.level_gram_weight(li + 1 == levels.len()),
            ..params.clone()
        };
        let params = &level_params;
        if (image.width, image.height) != (level.width, level.height) {
            // Plane by plane: a tiled level's image is the largest buffer of the run.
            image = resize_planar(&image, level.width, level.height, params.resample);
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
                    // Only the level's image keeps the pixels (the account keeps no tile).
                    o.image = RgbImageF32::default();
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
        image = resize_planar(&image, finest.width, finest.height, params.resample);
    }
    if let (true, Task::Transfer { content }) = (params.original_colors, &task) {
        image = crate::color::keep_luminance(&image, &resize(content, image.width, image.height));
    }
    // Patch priors can regrow the sample itself: the network's zero padding marks the borders
    // of both images, so the output's borders match the sample's and anchor its layout, much
    // the same for every seed and start (circular padding, --tileable, has no borders).
    // Measure it, and say so when a texture copies more than it makes.
    // Its FFTs hold three spectra of the sample's padded size: skipped for huge samples.
    let copy_score = (matches!(task, Task::Texture)
        && styles[0].pixel_count() <= COPY_MAX_SAMPLE_PIXELS)
        .then(|| crate::metrics::copy::copy_score(&image, &styles[0], COPY_CROP, COPY_GRID).score);
    let mut notes = notes;
    if let Some(c) = copy_score.filter(|&c| c > COPY_WARNING) {
        let n = format!(
            "the output copies regions of the sample (copy score {c:.2} > {COPY_WARNING}): the sample's borders anchor its layout, and another seed or start moves it little; --tileable lays out a new one per seed"
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
pub(super) const COPY_MAX_SAMPLE_PIXELS: usize = 2048 * 2048;

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

/// Whether `auto_occurrence` turns the penalty on: a plain MRF texture from one sample (at the
/// scale the run uses) with more pixels than the output, under either matcher. Guide maps and
/// blend weights decide where matches come from themselves, so the rule leaves them alone.
fn auto_occurrence_applies(styles: &[RgbImageF32], task: &Task<'_>, params: &Params) -> bool {
    let output = params.width as u64 * params.height as u64;
    let scale = (params.style_scale as f64).powi(2);
    params.auto_occurrence
        && params.occurrence == 0.0
        && params.prior == PriorKind::Mrf
        && params.guides.is_none()
        && matches!(task, Task::Texture)
        && matches!(styles, [s] if (s.width as u64 * s.height as u64) as f64 * scale > output as f64)
}

fn optimizer_for(params: &Params, pixels: u64) -> Box<dyn Optimizer> {
    match params.optimizer {
        // `Lbfgs::new` sizes the evaluation budget so that even 1 iteration gets its step.
        OptimizerKind::Lbfgs => Box::new(Lbfgs {
            history: memory::lbfgs_history(params.history, pixels),
            line_search: if params.line_search {
                LineSearch::StrongWolfe
            } else {
                LineSearch::None
            },
            first_step: params.first_step_px,
            ..Lbfgs::new(params.iterations)
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
) -> crate::Result<Optimised<'a>> {
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

/// Runs the network once on an image for the named layers (the `features` command).
pub fn features(
    vgg: &Vgg19,
    image: &RgbImageF32,
    layers: &[LayerId],
) -> crate::Result<Vec<(LayerId, Tensor)>> {
    let input = vgg.preprocess(&image.to_tensor(vgg.device())?)?;
    let fwd = vgg.forward(&input, layers, false)?;
    Ok(layers
        .iter()
        .map(|l| (*l, fwd.features[l].clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Guides;
    use crate::synth::MatcherKind;

    fn grey(side: u32) -> RgbImageF32 {
        RgbImageF32::new(side, side, vec![128.0; (3 * side * side) as usize])
    }

    /// The penalty comes on for one plain sample larger than the output, and for nothing else.
    #[test]
    fn the_automatic_penalty_needs_one_larger_sample_and_plain_matching() {
        let mut p = Params::default();
        (p.width, p.height) = (64, 64);
        let applies =
            |styles: &[RgbImageF32], p: &Params| auto_occurrence_applies(styles, &Task::Texture, p);
        assert!(applies(&[grey(96)], &p));
        let approx = Params {
            matcher: MatcherKind::Approx,
            ..p.clone()
        };
        assert!(applies(&[grey(96)], &approx), "either matcher");
        assert!(!applies(&[grey(64)], &p), "same size");
        assert!(!applies(&[grey(96), grey(96)], &p), "blended samples");
        let content = grey(64);
        assert!(!auto_occurrence_applies(
            &[grey(96)],
            &Task::Transfer { content: &content },
            &p
        ));
        for edit in [
            (|p: &mut Params| p.auto_occurrence = false) as fn(&mut Params),
            |p| p.occurrence = 0.1,
            |p| p.style_scale = 0.5,
            |p| p.prior = PriorKind::Gram,
            |p| {
                p.guides = Some(Guides {
                    style_maps: vec![grey(96)],
                    target_map: grey(64),
                    weight: 2.0,
                })
            },
        ] {
            let mut q = p.clone();
            edit(&mut q);
            assert!(!applies(&[grey(96)], &q), "{q:?}");
        }
    }
}
