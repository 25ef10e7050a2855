//! Metrics to compare a synthesised image with its style sample (and content image).
//!
//! All of them are deterministic: the same inputs and options give the same numbers every run.
//! VGG19 features of every image are computed once, by the network at the image's own size
//! (no padding tricks, the same treatment for output and sample).
//!
//! | metric | what it computes |
//! |---|---|
//! | `swd` | Sliced Wasserstein distance (`swd.rs`) between the image's and the style's feature vectors at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (each spatial position one C-dim sample; `swd_projections` random unit directions a layer, seeded by `seed` and the layer); mean over the five layers. Lower is better. |
//! | `gram_distance` | Per layer, mean over the C x C entries of the squared difference of Gram matrices (F F^T / (C H W), as the Gram prior); **mean** over the same five layers. Lower is better. |
//! | `mrf_mean_cosine` | At relu3_1 and relu4_1: mean over the image's 3x3 feature patches (stride 2) of the cosine to the nearest style patch (exact search, as the MRF prior matches). Higher is better (1: every local structure exists in the style). |
//! | `patch_coverage` | Same layers and matches: distinct style patches used as a nearest neighbour / number of style patches. Higher means more of the sample is used; low means a few patches are repeated. |
//! | `copy_score` | `copy.rs`: mean over a `copy_grid` x `copy_grid` grid of `copy_crop`-px output crops of the best normalised cross-correlation (RGB, per-channel zero mean) with any same-sized window of the sample. 1 = verbatim (possibly shifted) copy; lower = a new arrangement. |
//! | `content_distance` | With a content image: mean squared difference of relu4_2 features (content resized to the image's size with Lanczos3 when they differ). Lower = closer to the content. |
//! | `color_histogram_distance` | `color.rs`: mean over R, G, B of the earth mover's distance between 32-bin histograms of 0..255 values, in units of the full range (0..1). Lower is better. |

internal_mod!(color, copy, fft, lattice, patches, swd);

use std::collections::BTreeMap;

use crate::error::{fail, Context};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::image_io::{resize, RgbImageF32};
use crate::prior::gram::gram_matrix;
use crate::vgg::{LayerId, Vgg19};

pub use copy::{CopyScore, CropMatch};
pub use patches::PatchStats;

/// Layers of the SWD and Gram distances.
pub const STATS_LAYERS: [&str; 5] = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];
/// Layers of the MRF patch statistics.
pub const MRF_LAYERS: [&str; 2] = ["relu3_1", "relu4_1"];
/// Layer of the content distance.
pub const CONTENT_LAYER: &str = "relu4_2";
/// Smallest image side accepted (relu5_1 is then 2x2, relu4_1 holds one 3x3 patch).
pub const MIN_SIDE: u32 = 32;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricsOptions {
    /// Seed of the SWD's random directions (default 0).
    pub seed: u64,
    /// Random directions per layer for the SWD (default 64).
    pub swd_projections: usize,
    /// Side of the output crops of the copy score, px (default 64; 0 = a quarter of the output's
    /// shorter side, at least 8). Shrunk to fit the output and the sample.
    pub copy_crop: u32,
    /// The copy score uses `copy_grid` x `copy_grid` crops, evenly spaced corner to corner
    /// (default 3).
    pub copy_grid: usize,
    /// Patch side and stride of the MRF statistics (default 3 and 2, as the MRF prior).
    pub mrf_patch: usize,
    pub mrf_stride: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            swd_projections: 64,
            copy_crop: 64,
            copy_grid: 3,
            mrf_patch: 3,
            mrf_stride: 2,
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Metrics {
    /// Mean of `swd_per_layer` over relu1_1..relu5_1.
    pub swd: f64,
    pub swd_per_layer: BTreeMap<String, f64>,
    /// Mean of `gram_per_layer` over relu1_1..relu5_1.
    pub gram_distance: f64,
    pub gram_per_layer: BTreeMap<String, f64>,
    /// relu3_1, relu4_1 (a layer too small for one patch in either image is left out).
    pub mrf_mean_cosine: BTreeMap<String, f64>,
    pub patch_coverage: BTreeMap<String, f64>,
    /// Style patches in the bank per MRF layer.
    pub patch_bank_size: BTreeMap<String, usize>,
    /// Mean over the crops of the best NCC with the sample, 0..1 in practice (1 = verbatim copy).
    pub copy_score: f64,
    /// Largest crop NCC (the most copied region).
    pub copy_score_max: f64,
    /// Crop side actually used, px.
    pub copy_crop_side: u32,
    /// Where each crop's best match lies in the sample.
    pub copy_crops: Vec<CropMatch>,
    /// relu4_2 mean squared difference to the content, when a content image is given.
    pub content_distance: Option<f64>,
    /// Mean over R, G, B of the EMD between 32-bin histograms, 0..1.
    pub color_histogram_distance: f64,
    /// Strongest repetition of the image at a shift of 8 px or more (normalised luminance
    /// autocorrelation, 0..1), and the same for the sample: an output well above its sample is
    /// laid out as a lattice.
    pub periodicity: f64,
    pub sample_periodicity: f64,
}

/// (metric name, one-line meaning) for the CLI and the README.
pub fn describe() -> &'static [(&'static str, &'static str)] {
    &[
        ("swd", "sliced Wasserstein distance between image and style VGG19 feature distributions, mean over relu1_1..relu5_1; lower = closer texture statistics"),
        ("swd_per_layer", "the SWD at each of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1; lower is better"),
        ("gram_distance", "mean over relu1_1..relu5_1 of the mean squared difference of Gram matrices (F F^T / CHW); lower is better"),
        ("gram_per_layer", "the Gram distance at each of the five layers; lower is better"),
        ("mrf_mean_cosine", "relu3_1, relu4_1: mean cosine of the image's 3x3 feature patches to their nearest style patch; higher = every local structure exists in the style"),
        ("patch_coverage", "relu3_1, relu4_1: share of distinct style patches used as nearest neighbours; higher = more of the sample used, low = a few patches repeated"),
        ("copy_score", "mean over a 3x3 grid of output crops of the best RGB normalised cross-correlation with any sample window; 1 = verbatim copy, lower = new arrangement"),
        ("copy_score_max", "the largest crop correlation: the most copied region of the output; 1 = some crop is verbatim"),
        ("content_distance", "relu4_2 mean squared feature difference to the content image (style transfer only); lower = closer to the content"),
        ("color_histogram_distance", "mean over R,G,B of the earth mover's distance between 32-bin histograms, in units of the 0..255 range (0..1); lower is better"),
        ("periodicity", "strongest normalised autocorrelation of the luminance at a shift of 8 px or more (0..1); well above sample_periodicity = laid out as a lattice"),
        ("sample_periodicity", "the same for the sample"),
    ]
}

fn layer(name: &str) -> LayerId {
    name.parse().expect("a VGG19 layer name")
}

fn check_size(what: &str, img: &RgbImageF32) -> crate::Result<()> {
    if img.width < MIN_SIDE || img.height < MIN_SIDE {
        fail!(
            TooSmall,
            "the {what} image is {}x{}: metrics need at least {MIN_SIDE}x{MIN_SIDE} px",
            img.width,
            img.height
        );
    }
    Ok(())
}

/// Features of `img` at `taps`, each [1, C, H, W].
fn features(
    vgg: &Vgg19,
    img: &RgbImageF32,
    taps: &[LayerId],
) -> crate::Result<BTreeMap<LayerId, Tensor>> {
    let input = vgg.preprocess(&img.to_tensor(vgg.device())?)?;
    Ok(vgg.forward(&input, taps, false)?.features)
}

/// [1, C, H, W] -> (channel-major data, C, H*W).
fn as_samples(f: &Tensor) -> crate::Result<(Vec<f32>, usize, usize)> {
    let (_, c, h, w) = f.dims4()?;
    Ok((f.flatten_all()?.to_vec1::<f32>()?, c, h * w))
}

/// Mean squared difference, summed in order in f64.
fn mse(a: &Tensor, b: &Tensor) -> crate::Result<f64> {
    let a: Vec<f32> = a.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.flatten_all()?.to_vec1()?;
    if a.len() != b.len() || a.is_empty() {
        fail!(Input, "mse: {} vs {} values", a.len(), b.len());
    }
    Ok(a.iter()
        .zip(&b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64)
}

fn mean(v: &BTreeMap<String, f64>) -> f64 {
    v.values().sum::<f64>() / v.len().max(1) as f64
}

/// A style sample with its VGG19 features, computed once to score several outputs against it.
pub struct StyleReference {
    pub image: RgbImageF32,
    features: BTreeMap<LayerId, Tensor>,
}

impl StyleReference {
    pub fn new(vgg: &Vgg19, style: &RgbImageF32) -> crate::Result<Self> {
        check_size("style", style)?;
        let layers: Vec<LayerId> = STATS_LAYERS.iter().map(|n| layer(n)).collect();
        let features = features(vgg, style, &layers).context("VGG19 features of the style")?;
        Ok(Self {
            image: style.clone(),
            features,
        })
    }
}

/// All metrics of `image` against `style` (and `content` when given).
pub fn compute(
    vgg: &Vgg19,
    image: &RgbImageF32,
    style: &RgbImageF32,
    content: Option<&RgbImageF32>,
    opts: &MetricsOptions,
) -> crate::Result<Metrics> {
    check_options(opts)?;
    check_size("output", image)?;
    compute_with(vgg, image, &StyleReference::new(vgg, style)?, content, opts)
}

fn check_options(opts: &MetricsOptions) -> crate::Result<()> {
    if opts.swd_projections == 0 {
        fail!(Settings, "swd_projections must be at least 1");
    }
    if opts.mrf_patch == 0 || opts.mrf_stride == 0 {
        fail!(Settings, "mrf_patch and mrf_stride must be at least 1");
    }
    Ok(())
}

/// [`compute`] against a style whose features are already computed; the same numbers.
pub fn compute_with(
    vgg: &Vgg19,
    image: &RgbImageF32,
    reference: &StyleReference,
    content: Option<&RgbImageF32>,
    opts: &MetricsOptions,
) -> crate::Result<Metrics> {
    check_options(opts)?;
    check_size("output", image)?;
    if let Some(c) = content {
        check_size("content", c)?;
    }
    let style = &reference.image;
    let fs = &reference.features;
    let stats_layers: Vec<LayerId> = STATS_LAYERS.iter().map(|n| layer(n)).collect();
    let mrf_layers: Vec<LayerId> = MRF_LAYERS.iter().map(|n| layer(n)).collect();
    let content_layer = layer(CONTENT_LAYER);

    let mut taps = stats_layers.clone();
    if content.is_some() {
        taps.push(content_layer);
    }
    let fi = features(vgg, image, &taps).context("VGG19 features of the output")?;

    let mut swd_per_layer = BTreeMap::new();
    let mut gram_per_layer = BTreeMap::new();
    for &l in &stats_layers {
        let (a, c, na) = as_samples(&fi[&l])?;
        let (b, _, nb) = as_samples(&fs[&l])?;
        let dirs = swd::random_directions(c, opts.swd_projections, opts.seed, l.index() as u64);
        swd_per_layer.insert(
            l.name().to_string(),
            swd::sliced_wasserstein(&a, na, &b, nb, &dirs),
        );
        let g = mse(&gram_matrix(&fi[&l])?, &gram_matrix(&fs[&l])?)?;
        gram_per_layer.insert(l.name().to_string(), g);
    }

    let mut mrf_mean_cosine = BTreeMap::new();
    let mut patch_coverage = BTreeMap::new();
    let mut patch_bank_size = BTreeMap::new();
    for &l in &mrf_layers {
        if let Some(s) = patches::patch_stats(&fi[&l], &fs[&l], opts.mrf_patch, opts.mrf_stride)? {
            mrf_mean_cosine.insert(l.name().to_string(), s.mean_cosine);
            patch_coverage.insert(l.name().to_string(), s.coverage);
            patch_bank_size.insert(l.name().to_string(), s.bank_size);
        }
    }

    let copy = copy::copy_score(image, style, opts.copy_crop, opts.copy_grid);
    let copy_score_max = copy.crops.iter().map(|m| m.ncc).fold(0.0f64, f64::max);

    let content_distance = match content {
        None => None,
        Some(c) => {
            let resized;
            let c = if (c.width, c.height) == (image.width, image.height) {
                c
            } else {
                resized = resize(c, image.width, image.height);
                &resized
            };
            let fc = features(vgg, c, &[content_layer]).context("VGG19 features of the content")?;
            Some(mse(&fi[&content_layer], &fc[&content_layer])?)
        }
    };

    Ok(Metrics {
        swd: mean(&swd_per_layer),
        swd_per_layer,
        gram_distance: mean(&gram_per_layer),
        gram_per_layer,
        mrf_mean_cosine,
        patch_coverage,
        patch_bank_size,
        copy_score: copy.score,
        copy_score_max,
        copy_crop_side: copy.crop_side,
        copy_crops: copy.crops,
        content_distance,
        color_histogram_distance: color::color_histogram_distance(image, style),
        periodicity: lattice::periodicity(image),
        sample_periodicity: lattice::periodicity(style),
    })
}
