//! Training a generator with the engine's priors as the loss.
//!
//! Each step makes a batch of crops (from seeded noise, or from random crops of the photos for
//! a style transfer network), takes the loss and its gradient at the pixels with our own VGG
//! forward and input-gradient pass (exactly what the optimisation-based `texture` minimises),
//! and hands that gradient to candle's autograd as the seed of the generator's backward pass:
//! the surrogate `sum(image * dL/dimage)` has the generator's weight gradients as its own.
//! Adam updates the weights.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::generator::{self, Architecture, GeneratorKind, Padding};
use super::model::{sample_checksum, Model, ModelInfo};
use crate::error::fail;
use crate::image_io::{resize, RgbImageF32};
use crate::optim::Control;
use crate::prior::tv::tv_loss_and_grad;
use crate::prior::{ContentLoss, FeatureLoss};
use crate::synth::{Level, Params, PriorKind, Task};
use crate::vgg::{LayerId, Vgg19};
use crate::{Error, Result};

/// How to train. The prior's own settings (layers, weights, patch sizes) are in `params`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TrainOptions {
    pub architecture: Architecture,
    pub params: Params,
    pub steps: usize,
    /// Side of the square crops the generator makes while training.
    pub crop: u32,
    /// Crops per step. Two or more turn the diversity term on.
    pub batch: usize,
    /// Adam's step size on the generator's weights, at the first step.
    pub learning_rate: f64,
    /// The step size at the last step, as a fraction of `learning_rate`: it falls along a
    /// half cosine over `steps` (1: constant).
    pub learning_rate_end: f64,
    /// Diversity (Ulyanov et al. 2017): `-w * loss * log(mean squared feature distance)`
    /// between the batch's crops at `diversity_layer`, relative to the prior's loss so that the
    /// weight means the same for every prior. 0: off.
    pub diversity: f64,
    #[serde(serialize_with = "layer_name")]
    pub diversity_layer: LayerId,
    /// Scales the loss is taken at: 1 is the crop alone; each more adds the crop averaged down
    /// by another factor of 2, scored against the sample scaled alike (as the optimisation's
    /// pyramid sees it), so the loss sees layouts larger than the network's view at full size.
    pub loss_levels: usize,
    /// Save a checkpoint (weights and optimiser state) every this many steps (0: never).
    pub checkpoint_every: usize,
    #[serde(skip)]
    pub checkpoint: Option<PathBuf>,
    pub seed: u64,
}

fn layer_name<S: serde::Serializer>(l: &LayerId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(l.name())
}

impl TrainOptions {
    /// Texture training defaults: Gram prior (no matching: the cheapest loss per step), 256 px
    /// crops in pairs, Adam 1e-2, 450 steps (about 10 minutes on 2 CPU cores). In the same ten
    /// minutes, 256 px crops beat 1000 steps on 128 px crops on every benchmark texture (gravel
    /// SWD 778 against 1,142-1,575, ihc 1,619 against 3,272, brick 1,556 against 1,800): the
    /// generator must see regions and layouts larger than 128 px to learn them.
    pub fn texture() -> Self {
        let params = Params {
            prior: PriorKind::Gram,
            ..Params::default()
        };
        TrainOptions {
            architecture: Architecture::texture(),
            params,
            steps: 450,
            crop: 256,
            batch: 2,
            learning_rate: 1e-2,
            learning_rate_end: 1.0,
            diversity: 0.05,
            diversity_layer: "relu4_1".parse().expect("a layer"),
            loss_levels: 1,
            checkpoint_every: 100,
            checkpoint: None,
            seed: 0,
        }
    }

    /// [`Self::texture`] fitted to the sample (as the priors see it, at `style_scale`):
    ///
    /// - a periodic sample (sharp peaks in its spectrum, [`super::waves`]) gets plane waves at
    ///   its periods: brick's generator went from SWD 1,556 to 449-609 with them;
    /// - any other gets layout noise (4 channels, 16 coarse px apart) and a step falling to
    ///   1/20: ihc 1,619 -> 1,344, riverstones 1,193 -> 1,110, gravel 753-778 -> 726, grass
    ///   1,216 -> 1,082. Both break brick (2,315), and the falling step costs it with waves too
    ///   (874), so a periodic sample keeps the plain generator's constant step.
    ///
    /// (README, "Periodic samples" and "Faster steps, a learning-rate decay and layout noise".)
    pub fn texture_for(sample: &RgbImageF32, style_scale: f32) -> Self {
        let mut o = Self::texture();
        let seen = crate::synth::augment::scaled(sample, style_scale);
        // Waves the coarse grid cannot sample twice a period would alias: left out.
        let shortest = o.architecture.min_wave_period();
        let waves: Vec<_> = super::waves::dominant_waves(&seen)
            .into_iter()
            .filter(|w| w.period() >= shortest)
            .collect();
        if waves.is_empty() {
            o.architecture.layout_noise = 4;
            o.architecture.layout_scale = 16;
            o.learning_rate_end = 0.05;
        } else {
            o.architecture.waves = waves;
        }
        o
    }

    /// Style transfer network defaults (Johnson et al. 2016 with neural-style's weights).
    pub fn stylize() -> Self {
        let params = Params {
            prior: PriorKind::Gram,
            content_weight: crate::synth::GRAM_CONTENT_WEIGHT,
            ..Params::default()
        };
        TrainOptions {
            architecture: Architecture::stylize(),
            params,
            steps: 1000,
            crop: 128,
            batch: 2,
            learning_rate: 1e-2,
            diversity: 0.0,
            ..Self::texture()
        }
    }

    /// The options a checkpoint was trained with, so that `--resume` continues that training
    /// (its architecture, prior and weights, crops, schedule and seed) rather than starting
    /// from today's defaults, which may differ from those the checkpoint was made under.
    /// Settings the file does not record keep the defaults of its kind.
    pub fn resuming(info: &ModelInfo) -> Result<Self> {
        let mut o = match info.architecture.kind {
            GeneratorKind::Texture => Self::texture(),
            GeneratorKind::Stylize => Self::stylize(),
        };
        o.architecture = info.architecture.clone();
        let prior: PriorKind = info
            .prior
            .parse()
            .map_err(|e: String| Error::Model(format!("the checkpoint's prior: {e}")))?;
        let t = &info.training;
        let p = t.get("params").cloned().unwrap_or_default();
        // A value the file records, else the default given.
        let real = |v: &serde_json::Value, key: &str, or: f64| {
            v.get(key).and_then(|x| x.as_f64()).unwrap_or(or)
        };
        let whole = |key: &str, or: usize| {
            t.get(key)
                .and_then(|x| x.as_u64())
                .map_or(or, |x| x as usize)
        };
        let mut params = crate::synth::Params::preset_for(crate::synth::Preset::Default, prior);
        params.content_weight = real(&p, "content_weight", params.content_weight);
        params.gram_weight = real(&p, "gram_weight", params.gram_weight);
        params.mrf_weight = real(&p, "mrf_weight", params.mrf_weight);
        params.tv_weight = real(&p, "tv_weight", params.tv_weight);
        params.style_scale = real(&p, "style_scale", params.style_scale as f64) as f32;
        let names = p.get("gram_layers").and_then(|x| x.as_array());
        if let Some(names) = names {
            let names: Vec<&str> = names.iter().filter_map(|n| n.as_str()).collect();
            params.gram_layers = LayerId::parse_list(&names.join(","))
                .map_err(|e| Error::Model(format!("the checkpoint's Gram layers: {e}")))?;
        }
        o.params = params;
        o.steps = whole("steps", o.steps);
        o.crop = whole("crop", o.crop as usize) as u32;
        o.batch = whole("batch", o.batch);
        o.learning_rate = real(t, "learning_rate", o.learning_rate);
        o.learning_rate_end = real(t, "learning_rate_end", o.learning_rate_end);
        o.diversity = real(t, "diversity", o.diversity);
        o.loss_levels = whole("loss_levels", o.loss_levels);
        o.checkpoint_every = whole("checkpoint_every", o.checkpoint_every);
        o.seed = t.get("seed").and_then(|x| x.as_u64()).unwrap_or(o.seed);
        o.params.seed = o.seed;
        Ok(o)
    }

    pub fn validate(&self) -> Result<()> {
        self.architecture.validate().map_err(Error::Settings)?;
        let g = self.architecture.granule() as u32;
        if self.crop < 64 || self.crop > 1024 || !self.crop.is_multiple_of(g) {
            fail!(
                Settings,
                "--crop must be 64 to 1024 px and a multiple of {g}, got {}",
                self.crop
            );
        }
        if self.steps == 0 || self.steps > 10_000_000 {
            fail!(
                Settings,
                "--steps must be 1 to 10000000, got {}",
                self.steps
            );
        }
        if self.batch == 0 || self.batch > 64 {
            fail!(Settings, "--batch must be 1 to 64, got {}", self.batch);
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            fail!(
                Settings,
                "--learning-rate must be in (0, 1), got {}",
                self.learning_rate
            );
        }
        if !(self.learning_rate_end > 0.0 && self.learning_rate_end <= 1.0) {
            fail!(
                Settings,
                "--learning-rate-end must be in (0, 1], got {}",
                self.learning_rate_end
            );
        }
        if !(self.diversity >= 0.0 && self.diversity.is_finite()) {
            fail!(Settings, "--diversity must be >= 0, got {}", self.diversity);
        }
        // The coarsest loss level must be whole blocks of the crop and at least 32 px (relu4_1
        // 4 x 4).
        let coarsest = 1u32 << self.loss_levels.saturating_sub(1).min(31);
        if self.loss_levels == 0
            || self.loss_levels > 4
            || self.crop / coarsest < 32
            || !self.crop.is_multiple_of(coarsest)
        {
            fail!(
                Settings,
                "--loss-levels must be 1 to 4 with the crop / 2^(levels - 1) at least 32 px, got {} for {} px crops",
                self.loss_levels,
                self.crop
            );
        }
        Ok(())
    }
}

/// One training step, for progress reports.
#[derive(Debug, Clone, Copy)]
pub struct TrainStep {
    /// 1-based, counting steps of earlier (resumed) runs.
    pub step: usize,
    pub steps: usize,
    /// The prior's loss (plus content and TV), averaged over the batch and summed over the loss
    /// levels; no diversity term.
    pub loss: f64,
    pub seconds: f64,
}

/// What the caller hears while training.
pub trait TrainObserver {
    fn note(&mut self, _msg: &str) {}
    /// After each step. Return Stop to end training now (the model so far is returned).
    fn step(&mut self, _info: &TrainStep) -> Control {
        Control::Continue
    }
    /// After each checkpoint was written.
    fn checkpoint(&mut self, _step: usize, _path: &std::path::Path) {}
}

impl TrainObserver for crate::synth::Silent {}

/// The loss curve and where the time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainReport {
    /// Loss per step of this run.
    pub losses: Vec<f64>,
    /// Steps taken before this run (resumed from a checkpoint).
    pub resumed_at: usize,
    pub steps: usize,
    pub seconds: f64,
    /// Seconds in the generator's forward and backward passes, the VGG losses, and Adam.
    pub generator_s: f64,
    pub loss_s: f64,
    pub adam_s: f64,
    pub interrupted: bool,
    pub device: String,
}

/// What to train on.
pub enum TrainData<'a> {
    /// A texture generator for this sample.
    Texture { sample: &'a RgbImageF32 },
    /// A style transfer network for this painting, trained on crops of these photos.
    Stylize {
        style: &'a RgbImageF32,
        photos: &'a [RgbImageF32],
    },
}

impl TrainData<'_> {
    fn style(&self) -> &RgbImageF32 {
        match self {
            TrainData::Texture { sample } => sample,
            TrainData::Stylize { style, .. } => style,
        }
    }
}

/// Adam over the generator's variables (candle-optimisers does not build with candle 0.11).
struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: usize,
    moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl Adam {
    /// Kingma & Ba's betas and epsilon; `moments` and `step` carry on a checkpoint's.
    fn new(lr: f64, moments: BTreeMap<String, (Tensor, Tensor)>, step: usize) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step,
            moments,
        }
    }

    fn update(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &candle_core::backprop::GradStore,
    ) -> candle_core::Result<()> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (name, var) in vars {
            // Detached: a gradient carries its backward graph, and moments built from it
            // would keep every step's graph alive.
            let Some(g) = grads.get(var.as_tensor()).map(Tensor::detach) else {
                continue;
            };
            let g = &g;
            let (m, v) = match self.moments.remove(name) {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?.detach();
            let v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?.detach();
            let denom = ((&v / bc2)?.sqrt()? + self.eps)?;
            let delta = ((&m / bc1)? / denom)?.affine(self.lr, 0.0)?;
            var.set(&var.as_tensor().detach().sub(&delta)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }
}

/// The step size of (0-based) step `step`: from `learning_rate` down to `learning_rate *
/// learning_rate_end` along a half cosine, a function of the step alone, so a resumed run takes
/// the same steps.
fn learning_rate_at(opts: &TrainOptions, step: usize) -> f64 {
    let progress = step as f64 / (opts.steps.max(2) - 1) as f64;
    let fall = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
    opts.learning_rate * (opts.learning_rate_end + (1.0 - opts.learning_rate_end) * fall)
}

/// Trains a generator; with `resume`, continues that checkpoint (which must match the data and
/// options). The returned model is usable even when the observer stopped training early.
pub fn train(
    vgg: &Vgg19,
    data: &TrainData<'_>,
    opts: &TrainOptions,
    resume: Option<Model>,
    observer: &mut dyn TrainObserver,
) -> Result<(Model, TrainReport)> {
    opts.validate()?;
    let started = Instant::now();
    let device = vgg.device().clone();
    let arch = &opts.architecture;
    let want_kind = match data {
        TrainData::Texture { .. } => GeneratorKind::Texture,
        TrainData::Stylize { photos, .. } => {
            if photos.is_empty() {
                fail!(Input, "no photos to train the style transfer network on");
            }
            GeneratorKind::Stylize
        }
    };
    if arch.kind != want_kind {
        fail!(
            Settings,
            "a {:?} architecture cannot be trained on this data",
            arch.kind
        );
    }
    let crop = opts.crop as usize;

    // The style at the scale the priors see it: textures keep the sample's native scale (times
    // --style-scale); a painting is resized to the crop's size times --style-scale, as
    // `transfer` resizes it to the output.
    let style = match data {
        TrainData::Texture { sample } => {
            crate::synth::augment::scaled(sample, opts.params.style_scale)
        }
        TrainData::Stylize { style, .. } => {
            let long = (opts.crop as f32 * opts.params.style_scale).round() as u32;
            crate::image_io::scale_to_long_side(style, long.max(16))
        }
    };
    let info = ModelInfo {
        architecture: arch.clone(),
        prior: opts.params.prior.name().to_string(),
        sample_sha256: sample_checksum(data.style()),
        sample_width: data.style().width,
        sample_height: data.style().height,
        steps: 0,
        training: serde_json::to_value(opts)?,
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let (mut model, mut adam, resumed_at) = match resume {
        Some(m) => {
            check_resume(&m.info, &info)?;
            let (moments, step) = m.adam_state.clone().unwrap_or_default();
            let resumed_at = m.info.steps;
            let adam = Adam::new(opts.learning_rate, moments, step);
            let model = Model {
                info: ModelInfo {
                    steps: resumed_at,
                    ..info.clone()
                },
                ..m
            };
            (model, adam, resumed_at)
        }
        None => {
            let (generator, varmap) = generator::fresh(arch, &device, opts.seed)?;
            let model = Model {
                info: info.clone(),
                generator,
                varmap,
                adam_state: None,
            };
            let adam = Adam::new(opts.learning_rate, BTreeMap::new(), 0);
            (model, adam, 0)
        }
    };
    if resumed_at >= opts.steps {
        observer.note(&format!(
            "the checkpoint has {resumed_at} steps already; nothing to do"
        ));
    }

    // One set of priors per loss level: the crop, then halves of it against the sample halved.
    let mut priors = Vec::with_capacity(opts.loss_levels);
    for k in 0..opts.loss_levels {
        let side = opts.crop >> k;
        let level = Level {
            width: side,
            height: side,
            style_factor: 0.5f32.powi(k as i32),
        };
        let mut params = opts.params.clone();
        params.width = side;
        params.height = side;
        let (level_priors, _) = crate::synth::level_priors(
            vgg,
            std::slice::from_ref(&style),
            &[1.0],
            &Task::Texture,
            &level,
            &params,
        )?;
        priors.push(level_priors);
    }
    // Photos resized once so that their short side is the crop: each step cuts a random crop.
    let photos: Vec<RgbImageF32> = match data {
        TrainData::Texture { .. } => Vec::new(),
        TrainData::Stylize { photos, .. } => photos
            .iter()
            .map(|p| {
                let s = opts.crop as f32 / p.width.min(p.height) as f32;
                let w = ((p.width as f32 * s).round() as u32).max(opts.crop);
                let h = ((p.height as f32 * s).round() as u32).max(opts.crop);
                resize(p, w, h)
            })
            .collect(),
    };

    let vars: BTreeMap<String, Var> = {
        let data = model.varmap.data().lock().expect("var map lock");
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut report = TrainReport {
        resumed_at,
        device: crate::device::name(&device),
        ..TrainReport::default()
    };
    let mut step = resumed_at;
    while step < opts.steps {
        let t0 = Instant::now();
        // Inputs of this step, seeded by (seed, step): a resumed run sees the same sequence.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            opts.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let (input, contents) = match data {
            TrainData::Texture { .. } => {
                let noise = (0..opts.batch)
                    .map(|_| {
                        model
                            .generator
                            .noise(crop, crop, rng.random(), false, &device)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                // One batch per scale.
                let scales = (0..noise[0].len())
                    .map(|s| Tensor::cat(&noise.iter().map(|n| &n[s]).collect::<Vec<_>>(), 0))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                (scales, None)
            }
            TrainData::Stylize { .. } => {
                let crops = (0..opts.batch)
                    .map(|_| {
                        let p = &photos[rng.random_range(0..photos.len())];
                        let x = rng.random_range(0..=(p.width - opts.crop));
                        let y = rng.random_range(0..=(p.height - opts.crop));
                        p.to_tensor(&device)?
                            .narrow(2, y as usize, crop)?
                            .narrow(3, x as usize, crop)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let t = Tensor::cat(&crops, 0)?;
                (vec![t.clone()], Some(t))
            }
        };
        let out = model.generator.forward(&input, Padding::Reflect)?;
        let t1 = Instant::now();
        let (loss, grad) = loss_and_grad(vgg, &mut priors, &out, contents.as_ref(), opts)?;
        let t2 = Instant::now();
        let surrogate = (out * grad.detach())?.sum_all()?;
        let grads = surrogate.backward()?;
        let t3 = Instant::now();
        adam.lr = learning_rate_at(opts, step);
        adam.update(&vars, &grads)?;
        let t4 = Instant::now();
        if !loss.is_finite() {
            return Err(Error::Compute(candle_core::Error::Msg(format!(
                "training diverged at step {} (loss {loss})",
                step + 1
            ))));
        }
        step += 1;
        model.info.steps = step;
        report.losses.push(loss);
        report.generator_s += (t1 - t0).as_secs_f64() + (t3 - t2).as_secs_f64();
        report.loss_s += (t2 - t1).as_secs_f64();
        report.adam_s += (t4 - t3).as_secs_f64();
        let info = TrainStep {
            step,
            steps: opts.steps,
            loss,
            seconds: started.elapsed().as_secs_f64(),
        };
        let stop = observer.step(&info) == Control::Stop;
        if let Some(path) = &opts.checkpoint {
            if opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0 && step < opts.steps {
                model.save_with(path, Some((&adam.moments, adam.step)))?;
                observer.checkpoint(step, path);
            }
        }
        if stop {
            report.interrupted = true;
            break;
        }
    }
    report.steps = step;
    report.seconds = started.elapsed().as_secs_f64();
    model.adam_state = Some((adam.moments, adam.step));
    Ok((model, report))
}

/// A checkpoint continues only the training it came from.
fn check_resume(have: &ModelInfo, want: &ModelInfo) -> Result<()> {
    let mismatch = |what: &str| {
        Err(Error::Model(format!(
            "the checkpoint to resume was trained with a different {what}"
        )))
    };
    if have.architecture != want.architecture {
        return mismatch("architecture");
    }
    if have.prior != want.prior {
        return mismatch("prior");
    }
    if have.sample_sha256 != want.sample_sha256 {
        return mismatch("sample");
    }
    Ok(())
}

/// The batch's loss (averaged) and its gradient at the generated pixels [B, 3, H, W], summed
/// over the loss levels (`levels[k]` scores the images averaged down by 2^k).
fn loss_and_grad(
    vgg: &Vgg19,
    levels: &mut [Vec<Box<dyn FeatureLoss + '_>>],
    images: &Tensor,
    contents: Option<&Tensor>,
    opts: &TrainOptions,
) -> Result<(f64, Tensor)> {
    let (_, _, h, w) = images.dims4()?;
    let mut loss = 0.0;
    let mut grad: Option<Tensor> = None;
    for (k, priors) in levels.iter_mut().enumerate() {
        let (l, g) = if k == 0 {
            level_loss_and_grad(vgg, priors, images, contents, opts, true)?
        } else {
            let f = 1usize << k;
            let small = pool(&images.detach(), f)?;
            let (l, g) = level_loss_and_grad(vgg, priors, &small, None, opts, false)?;
            (l, pool_adjoint(&g, f, h, w)?)
        };
        loss += l;
        grad = Some(match grad {
            Some(prev) => (prev + g)?,
            None => g,
        });
    }
    let grad = grad.ok_or_else(|| Error::Settings("no loss levels".into()))?;
    Ok((loss, grad))
}

/// The images [B, C, H, W] averaged down by `f` (blocks of f x f; H and W multiples of f).
fn pool(images: &Tensor, f: usize) -> candle_core::Result<Tensor> {
    images.avg_pool2d(f)
}

/// The adjoint of [`pool`] back to H x W: each pixel gets 1/f^2 of its block's value, so a
/// loss's gradient at the pooled images becomes its gradient at the images.
fn pool_adjoint(grad: &Tensor, f: usize, h: usize, w: usize) -> candle_core::Result<Tensor> {
    grad.upsample_nearest2d(h, w)?
        .affine(1.0 / (f * f) as f64, 0.0)
}

/// [`loss_and_grad`] at one level. Only the full-size level (`full`) carries the content,
/// diversity and TV terms.
fn level_loss_and_grad(
    vgg: &Vgg19,
    priors: &mut [Box<dyn FeatureLoss + '_>],
    images: &Tensor,
    contents: Option<&Tensor>,
    opts: &TrainOptions,
    full: bool,
) -> Result<(f64, Tensor)> {
    let batch = images.dim(0)?;
    let params = &opts.params;
    let diversity = full && opts.diversity > 0.0 && batch > 1;
    let mut taps: Vec<LayerId> = priors.iter().flat_map(|p| p.layers()).collect();
    if diversity {
        taps.push(opts.diversity_layer);
    }
    if contents.is_some() {
        taps.push(params.content_layer);
    }
    let mut forwards = Vec::with_capacity(batch);
    let mut layer_grads = Vec::with_capacity(batch);
    let mut total = 0.0;
    for b in 0..batch {
        let img = images.narrow(0, b, 1)?.detach();
        let fwd = vgg.forward(&vgg.preprocess(&img)?, &taps, true)?;
        let mut grads: BTreeMap<LayerId, Tensor> = BTreeMap::new();
        let mut add = |layer: LayerId, g: Tensor| -> candle_core::Result<()> {
            let g = match grads.remove(&layer) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            grads.insert(layer, g);
            Ok(())
        };
        for prior in priors.iter_mut() {
            for term in prior.eval(&fwd.features)? {
                total += term.loss;
                add(term.layer, term.grad)?;
            }
        }
        if let Some(c) = contents {
            let target_in = vgg.preprocess(&c.narrow(0, b, 1)?)?;
            let target = vgg
                .forward(&target_in, &[params.content_layer], false)?
                .features[&params.content_layer]
                .clone();
            let mut content = ContentLoss::new(params.content_layer, target, params.content_weight);
            for term in content.eval(&fwd.features)? {
                total += term.loss;
                add(term.layer, term.grad)?;
            }
        }
        forwards.push(fwd);
        layer_grads.push(grads);
    }
    let mean_loss = total / batch as f64;
    if diversity {
        // -w * L * log(d), d the mean squared distance of each crop's features to the next's
        // (a ring over the batch); L is the prior's loss, held constant.
        let layer = opts.diversity_layer;
        let feats: Vec<&Tensor> = forwards.iter().map(|f| &f.features[&layer]).collect();
        for b in 0..batch {
            let other = feats[(b + 1) % batch];
            let diff = (feats[b] - other)?;
            let n = diff.elem_count() as f64;
            let d = crate::prior::sum_sq_f64(&diff)? / n;
            let scale = opts.diversity * mean_loss / (batch as f64 * (d + 1e-8));
            // d(-scale * d)/df_b = -scale * 2 diff / n; the other crop gets the opposite.
            let g = diff.affine(-2.0 * scale / n, 0.0)?;
            for (k, sign) in [(b, 1.0), ((b + 1) % batch, -1.0)] {
                let g = g.affine(sign, 0.0)?;
                let slot = layer_grads[k].remove(&layer);
                layer_grads[k].insert(
                    layer,
                    match slot {
                        Some(prev) => (prev + g)?,
                        None => g,
                    },
                );
            }
        }
    }
    let mut pixel_grads = Vec::with_capacity(batch);
    for (b, (fwd, grads)) in forwards.iter().zip(&layer_grads).enumerate() {
        let mut g = vgg.preprocess_backward(&vgg.backward(fwd, grads)?)?;
        if full && params.tv_weight > 0.0 {
            let img = images.narrow(0, b, 1)?.detach();
            let (tv, tv_grad) = tv_loss_and_grad(&img, params.tv_weight, false)?;
            total += tv;
            g = (g + tv_grad)?;
        }
        pixel_grads.push(g);
    }
    // The batch's loss is the mean over its crops, so each crop's gradient is divided by B.
    let grad = (Tensor::cat(&pixel_grads, 0)? / batch as f64)?;
    Ok((total / batch as f64, grad))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_learning_rate_falls_along_a_half_cosine_to_its_end() {
        let opts = TrainOptions {
            steps: 101,
            learning_rate: 0.01,
            learning_rate_end: 0.1,
            ..TrainOptions::texture()
        };
        let at = |s| learning_rate_at(&opts, s);
        assert!((at(0) - 0.01).abs() < 1e-12);
        assert!((at(50) - 0.0055).abs() < 1e-12, "{}", at(50));
        assert!((at(100) - 0.001).abs() < 1e-12, "{}", at(100));
        assert!((1..=100).all(|s| at(s) < at(s - 1)));
        let constant = TrainOptions {
            learning_rate_end: 1.0,
            ..opts
        };
        assert!((0..=100).all(|s| learning_rate_at(&constant, s) == 0.01));
    }

    use super::*;
    use candle_core::Device;

    fn noise(n: usize, dims: &[usize], seed: u64) -> Tensor {
        Tensor::from_vec(generator::normal_noise(n, seed), dims, &Device::Cpu).unwrap()
    }

    /// The coarse loss levels' gradients go back through the pooling by its adjoint:
    /// <pool(x), y> = <x, pool_adjoint(y)> for any x and y.
    #[test]
    fn pooling_and_its_adjoint_agree() {
        for f in [2usize, 4] {
            let (h, w) = (8 * f, 4 * f);
            let x = noise(2 * 3 * h * w, &[2, 3, h, w], 1);
            let y = noise(2 * 3 * 32, &[2, 3, 8, 4], 2);
            let px = pool(&x, f).unwrap();
            assert_eq!(px.dims(), &[2, 3, 8, 4]);
            let lhs: f32 = (px * &y).unwrap().sum_all().unwrap().to_scalar().unwrap();
            let rhs: f32 = (x * pool_adjoint(&y, f, h, w).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(
                (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
                "f = {f}: {lhs} vs {rhs}"
            );
        }
        // Block means: a block of ones and zeros pools to its share of ones.
        let x = Tensor::from_vec(vec![1f32, 0., 1., 1.], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let m: Vec<f32> = pool(&x, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(m, vec![0.75]);
    }
}
