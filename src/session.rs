//! The library's front door: builders for the four jobs the command line does, in the style of
//! Embark's texture-synthesis (`Session::builder()`).
//!
//! ```no_run
//! use mrfsynth::{Silent, Synth};
//!
//! # fn main() -> mrfsynth::Result<()> {
//! let sample = image::open("sample.png").expect("an image");
//! let texture = Synth::texture(&sample)
//!     .size(512, 512)
//!     .seed(7)
//!     .build()?
//!     .run(&mut Silent)?;
//! texture.image().save("texture.png").expect("written");
//! # Ok(())
//! # }
//! ```
//!
//! A [`Network`] (the VGG19 weights on a device) loads on `build()` unless one is given with
//! [`SynthBuilder::network`]; share one `Arc<Network>` across jobs to load it once.

use std::path::PathBuf;
use std::sync::Arc;

use crate::assets::weights::{self, VggWeights};
use crate::device::DeviceSpec;
use crate::error::{fail, Result};
use crate::image_io::{self, RgbImageF32};
use crate::metrics::{self, Metrics, MetricsOptions};
use crate::synth::{self, Init, Observer, Params, Preset, PriorKind, SynthResult, Task};
use crate::vgg::{Pooling, Precision, Vgg19};

/// Long side of an output whose size is not given, px (CNNMRF's default).
pub const DEFAULT_LONG_SIDE: u32 = 384;

/// Largest output side a builder accepts, px.
pub const MAX_SIDE: u32 = 16384;

/// Every side of an output between 1 and [`MAX_SIDE`] px.
pub(crate) fn check_output_size(w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        fail!(
            Settings,
            "output size {w}x{h}: each side must be between 1 and {MAX_SIDE} px"
        );
    }
    Ok(())
}

impl From<&image::RgbImage> for RgbImageF32 {
    fn from(img: &image::RgbImage) -> Self {
        let (w, h) = img.dimensions();
        let n = w as usize * h as usize;
        let mut data = vec![0.0f32; 3 * n];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * n + i] = p.0[c] as f32;
            }
        }
        RgbImageF32::new(w, h, data)
    }
}

impl From<image::RgbImage> for RgbImageF32 {
    fn from(img: image::RgbImage) -> Self {
        RgbImageF32::from(&img)
    }
}

/// Any colour type; alpha is dropped (composite over a background first if it matters).
impl From<&image::DynamicImage> for RgbImageF32 {
    fn from(img: &image::DynamicImage) -> Self {
        RgbImageF32::from(&img.to_rgb8())
    }
}

impl From<image::DynamicImage> for RgbImageF32 {
    fn from(img: image::DynamicImage) -> Self {
        RgbImageF32::from(&img.to_rgb8())
    }
}

/// VGG19 with its weights, on one device: the expensive part of every job, loaded once.
pub struct Network {
    vgg: Vgg19,
    weights: VggWeights,
}

impl Network {
    /// The cached Caffe VGG19 (fetched on first use), on `auto` (a GPU where the build has CUDA
    /// and one answers, else the CPU), max pooling, f32.
    pub fn load() -> Result<Arc<Network>> {
        Network::builder().load()
    }

    pub fn builder() -> NetworkBuilder {
        NetworkBuilder::default()
    }

    pub fn vgg(&self) -> &Vgg19 {
        &self.vgg
    }

    pub fn weights(&self) -> &VggWeights {
        &self.weights
    }
}

/// Where the weights come from and where the network runs.
#[derive(Debug, Clone, Default)]
pub struct NetworkBuilder {
    weights: Option<PathBuf>,
    device: DeviceSpec,
    pooling: Option<Pooling>,
    precision: Precision,
}

impl NetworkBuilder {
    /// A safetensors weights file instead of the cache (or `MRFSYNTH_WEIGHTS`).
    pub fn weights(mut self, path: impl Into<PathBuf>) -> Self {
        self.weights = Some(path.into());
        self
    }

    pub fn device(mut self, device: DeviceSpec) -> Self {
        self.device = device;
        self
    }

    pub fn pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = Some(pooling);
        self
    }

    /// Number format of the convolutions (bf16 needs AVX-512 BF16 on the CPU; else f32).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    pub fn load(self) -> Result<Arc<Network>> {
        let device = self.device.open()?;
        let weights = weights::load(self.weights.as_deref(), true)?;
        let vgg = Vgg19::new(&weights, self.pooling.unwrap_or(Pooling::Max), &device)?
            .with_precision(self.precision);
        Ok(Arc::new(Network { vgg, weights }))
    }
}

/// Starts a job: a texture, a style transfer, a comparison of priors, or metrics.
pub struct Synth;

impl Synth {
    /// A texture like `sample`, from scratch (the sample keeps its scale).
    pub fn texture(sample: impl Into<RgbImageF32>) -> SynthBuilder {
        SynthBuilder::new(vec![(sample.into(), 1.0)], None)
    }

    /// `content` painted in the style of `style`.
    pub fn transfer(
        content: impl Into<RgbImageF32>,
        style: impl Into<RgbImageF32>,
    ) -> SynthBuilder {
        SynthBuilder::new(vec![(style.into(), 1.0)], Some(content.into()))
    }

    /// The MRF and Gram priors side by side under one pyramid, optimiser, seed and budget,
    /// each scored with [`metrics`].
    pub fn compare(sample: impl Into<RgbImageF32>) -> CompareBuilder {
        CompareBuilder {
            job: SynthBuilder::new(vec![(sample.into(), 1.0)], None),
        }
    }

    /// Metrics of `image` against `style`: SWD, Gram distance, copy score and more.
    pub fn metrics(image: impl Into<RgbImageF32>, style: impl Into<RgbImageF32>) -> MetricsBuilder {
        MetricsBuilder {
            image: image.into(),
            style: style.into(),
            content: None,
            options: MetricsOptions::default(),
            network: None,
        }
    }
}

type Edit = Box<dyn FnOnce(&mut Params)>;

/// Settings of a texture or transfer. Unset values come from the preset, and then from the
/// prior (the guided correspondence prior brings its paper's patch settings).
pub struct SynthBuilder {
    styles: Vec<(RgbImageF32, f64)>,
    content: Option<RgbImageF32>,
    preset: Preset,
    /// None: the preset's default for the task ([`Preset::default_prior`]).
    prior: Option<PriorKind>,
    size: Option<(u32, u32)>,
    long_side: Option<u32>,
    guides: Option<synth::Guides>,
    edits: Vec<Edit>,
    network: Option<Arc<Network>>,
    network_builder: NetworkBuilder,
}

impl SynthBuilder {
    fn new(styles: Vec<(RgbImageF32, f64)>, content: Option<RgbImageF32>) -> Self {
        SynthBuilder {
            styles,
            content,
            preset: Preset::Default,
            prior: None,
            size: None,
            long_side: None,
            guides: None,
            edits: Vec::new(),
            network: None,
            network_builder: NetworkBuilder::default(),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Params) + 'static) -> Self {
        self.edits.push(Box::new(f));
        self
    }

    /// Output size in px (textures; a transfer keeps the content's aspect: use `long_side`).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = Some((width, height));
        self
    }

    /// Output long side in px, the other side from the sample's (texture) or the content's
    /// (transfer) aspect. Default [`DEFAULT_LONG_SIDE`].
    pub fn long_side(mut self, px: u32) -> Self {
        self.long_side = Some(px);
        self
    }

    pub fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// The prior (default: the preset's for the task, [`Preset::default_prior`]: `mrf+gram` for
    /// a texture, `mrf` for a transfer, a guided texture or under the `cnnmrf` preset).
    pub fn prior(mut self, prior: PriorKind) -> Self {
        self.prior = Some(prior);
        self
    }

    /// Guide maps (after neural-doodle): regions of the output draw their patches from the
    /// same-coloured regions of the samples. A guided texture defaults to the plain MRF prior.
    pub fn guides(mut self, guides: synth::Guides) -> Self {
        self.guides = Some(guides);
        self
    }

    /// Weight of the first sample (the one the job started from) against those added with
    /// [`add_style`](Self::add_style); default 1.
    pub fn style_weight(mut self, weight: f64) -> Self {
        self.styles[0].1 = weight;
        self
    }

    /// Another sample, weighted against the others (Gram targets; bias of MRF matching).
    pub fn add_style(mut self, style: impl Into<RgbImageF32>, weight: f64) -> Self {
        self.styles.push((style.into(), weight));
        self
    }

    pub fn seed(self, seed: u64) -> Self {
        self.edit(move |p| p.seed = seed)
    }

    pub fn levels(self, levels: usize) -> Self {
        self.edit(move |p| p.levels = levels)
    }

    /// Optimiser iterations per level.
    pub fn iterations(self, iterations: usize) -> Self {
        self.edit(move |p| p.iterations = iterations)
    }

    /// A seamless tile: circular padding everywhere.
    pub fn tileable(self, tileable: bool) -> Self {
        self.edit(move |p| p.tileable = tileable)
    }

    pub fn init(self, init: Init) -> Self {
        self.edit(move |p| p.init = init)
    }

    /// Transfer: weight of the content loss.
    pub fn content_weight(self, weight: f64) -> Self {
        self.edit(move |p| p.content_weight = weight)
    }

    /// Refuse (or tile) a run whose estimated peak exceeds this many bytes.
    pub fn max_memory(self, bytes: u64) -> Self {
        self.edit(move |p| p.max_memory = Some(bytes))
    }

    /// Any other setting, applied after the preset's and the prior's defaults.
    pub fn params(self, f: impl FnOnce(&mut Params) + 'static) -> Self {
        self.edit(f)
    }

    /// The network to run on (default: [`Network::load`] on `build`).
    pub fn network(mut self, network: Arc<Network>) -> Self {
        self.network = Some(network);
        self
    }

    /// Where the network runs, when it is loaded by `build`.
    pub fn device(mut self, device: DeviceSpec) -> Self {
        self.network_builder = self.network_builder.device(device);
        self
    }

    /// The settings as they will run, without loading anything.
    pub fn to_params(&mut self) -> Result<Params> {
        let (w, h) = self.output_size()?;
        let prior = self.prior.unwrap_or_else(|| {
            let plain_texture = self.content.is_none() && self.guides.is_none();
            self.preset.default_prior(plain_texture)
        });
        let mut p = Params::preset_for(self.preset, prior);
        p.width = w;
        p.height = h;
        p.guides = self.guides.take();
        if self.content.is_some() {
            p.init = Init::Content;
            if prior == PriorKind::Gram {
                p.content_weight = synth::GRAM_CONTENT_WEIGHT;
            }
        }
        for e in self.edits.drain(..) {
            e(&mut p);
        }
        p.validate()?;
        Ok(p)
    }

    fn output_size(&self) -> Result<(u32, u32)> {
        let reference = self.content.as_ref().unwrap_or(&self.styles[0].0);
        let (w, h) = match (self.size, self.long_side) {
            (Some(_), Some(_)) => fail!(Settings, "give the size or the long side, not both"),
            (Some(_), None) if self.content.is_some() => {
                fail!(
                    Settings,
                    "a transfer keeps the content's aspect: give its long side"
                )
            }
            (Some(s), None) => s,
            (None, l) => image_io::dims_for_long_side(
                reference.width,
                reference.height,
                l.unwrap_or(DEFAULT_LONG_SIDE),
            ),
        };
        check_output_size(w, h)?;
        Ok((w, h))
    }

    /// Checks the settings and the sizes, plans the run (memory included) and loads the network
    /// unless one was given. Nothing is optimised yet.
    pub fn build(mut self) -> Result<SynthSession> {
        let params = self.to_params()?;
        let images = self
            .styles
            .iter()
            .map(|(s, _)| s)
            .chain(self.content.iter());
        for s in images {
            if s.width == 0 || s.height == 0 {
                fail!(Input, "an input image is empty");
            }
        }
        let (styles, blend): (Vec<_>, Vec<_>) = self.styles.into_iter().unzip();
        let task = match &self.content {
            Some(c) => Task::Transfer { content: c },
            None => Task::Texture,
        };
        synth::plan(&styles, &blend, &task, &params)?;
        let network = match self.network {
            Some(n) => n,
            None => self.network_builder.load()?,
        };
        Ok(SynthSession {
            network,
            styles,
            blend,
            content: self.content,
            params,
        })
    }
}

/// A planned texture or transfer, ready to run.
pub struct SynthSession {
    network: Arc<Network>,
    styles: Vec<RgbImageF32>,
    blend: Vec<f64>,
    content: Option<RgbImageF32>,
    params: Params,
}

impl SynthSession {
    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn network(&self) -> &Arc<Network> {
        &self.network
    }

    /// Runs the pyramid, telling `observer` as it goes (its `step` may stop the run early: the
    /// best image so far is returned, with `report().interrupted` set).
    pub fn run(&self, observer: &mut dyn Observer) -> Result<Synthesis> {
        let task = match &self.content {
            Some(c) => Task::Transfer { content: c },
            None => Task::Texture,
        };
        let result = synth::run(
            &self.network.vgg,
            &self.styles,
            &self.blend,
            task,
            &self.params,
            observer,
        )?;
        Ok(Synthesis {
            image: result.image.to_rgb8(),
            result,
        })
    }
}

/// What a run made: the 8-bit image and the run's account (levels, losses, timing, notes).
pub struct Synthesis {
    image: image::RgbImage,
    result: SynthResult,
}

impl Synthesis {
    pub fn image(&self) -> &image::RgbImage {
        &self.image
    }

    pub fn into_image(self) -> image::RgbImage {
        self.image
    }

    /// The run's account; its `image` holds the unrounded pixels.
    pub fn report(&self) -> &SynthResult {
        &self.result
    }

    /// Writes the image (PNG, JPEG, BMP, TIFF or WebP by extension) atomically.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        Ok(image_io::save_rgb(&self.result.image, path.as_ref())?)
    }
}

/// Settings of a comparison: the same as a texture's, applied to both priors.
pub struct CompareBuilder {
    job: SynthBuilder,
}

impl CompareBuilder {
    /// Any texture setting, for both runs (see [`SynthBuilder`]).
    pub fn with(mut self, f: impl FnOnce(SynthBuilder) -> SynthBuilder) -> Self {
        self.job = f(self.job);
        self
    }

    pub fn build(self) -> Result<CompareSession> {
        let mut job = self.job;
        let network = match job.network.take() {
            Some(n) => n,
            None => job.network_builder.clone().load()?,
        };
        let base = job.to_params()?;
        let mut sessions = Vec::new();
        let (styles, blend): (Vec<_>, Vec<_>) = job.styles.into_iter().unzip();
        for prior in [PriorKind::Mrf, PriorKind::Gram] {
            let params = Params {
                prior,
                ..base.clone()
            };
            params.validate()?;
            synth::plan(&styles, &blend, &Task::Texture, &params)?;
            sessions.push(SynthSession {
                network: network.clone(),
                styles: styles.clone(),
                blend: blend.clone(),
                content: None,
                params,
            });
        }
        Ok(CompareSession { sessions })
    }
}

/// Both runs of a comparison, planned.
pub struct CompareSession {
    sessions: Vec<SynthSession>,
}

/// One prior's run and its metrics.
pub struct ComparedRun {
    pub prior: PriorKind,
    pub synthesis: Synthesis,
    pub metrics: Metrics,
}

impl CompareSession {
    /// Runs each prior in turn and scores its 8-bit output against the sample. Stops after the
    /// run the observer interrupted.
    pub fn run(&self, observer: &mut dyn Observer) -> Result<Vec<ComparedRun>> {
        let mut out = Vec::new();
        for s in &self.sessions {
            let synthesis = s.run(observer)?;
            let scored = RgbImageF32::from(synthesis.image());
            let opts = MetricsOptions {
                seed: s.params.seed,
                ..MetricsOptions::default()
            };
            let metrics = metrics::compute(s.network.vgg(), &scored, &s.styles[0], None, &opts)?;
            let interrupted = synthesis.report().interrupted;
            out.push(ComparedRun {
                prior: s.params.prior,
                synthesis,
                metrics,
            });
            if interrupted {
                break;
            }
        }
        Ok(out)
    }
}

/// Settings of a metrics job.
pub struct MetricsBuilder {
    image: RgbImageF32,
    style: RgbImageF32,
    content: Option<RgbImageF32>,
    options: MetricsOptions,
    network: Option<Arc<Network>>,
}

impl MetricsBuilder {
    /// The content photo, for the content distance of a transfer.
    pub fn content(mut self, content: impl Into<RgbImageF32>) -> Self {
        self.content = Some(content.into());
        self
    }

    /// Seed of the SWD's random directions.
    pub fn seed(mut self, seed: u64) -> Self {
        self.options.seed = seed;
        self
    }

    pub fn options(mut self, options: MetricsOptions) -> Self {
        self.options = options;
        self
    }

    pub fn network(mut self, network: Arc<Network>) -> Self {
        self.network = Some(network);
        self
    }

    /// Computes every metric (on the CPU unless a network was given).
    pub fn compute(self) -> Result<Metrics> {
        let network = match self.network {
            Some(n) => n,
            None => Network::builder().device(DeviceSpec::Cpu).load()?,
        };
        metrics::compute(
            network.vgg(),
            &self.image,
            &self.style,
            self.content.as_ref(),
            &self.options,
        )
    }
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn the_network_may_be_shared_across_threads() {
        assert_send_sync::<super::Network>();
        assert_send_sync::<super::SynthSession>();
    }
}
