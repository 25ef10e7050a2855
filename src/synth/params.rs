//! Every knob of a run, with CNNMRF's defaults, and how they are checked.

use crate::error::fail;
use serde::Serialize;

use crate::image_io::{Resample, RgbImageF32};
use crate::vgg::LayerId;

use super::Init;
pub use crate::prior::mrf::MrfGradient;

/// Which image prior drives the synthesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PriorKind {
    #[serde(rename = "mrf")]
    Mrf,
    #[serde(rename = "gram")]
    Gram,
    #[serde(rename = "mrf+gram")]
    MrfGram,
    /// The guided correspondence loss (Zhou et al. 2023): soft assignment with an occurrence
    /// penalty, over the patch settings of the MRF prior.
    #[serde(rename = "gc")]
    Correspondence,
}

impl PriorKind {
    /// CNNMRF's hard nearest-neighbour prior.
    pub fn uses_mrf(self) -> bool {
        matches!(self, PriorKind::Mrf | PriorKind::MrfGram)
    }
    /// A prior over patches of the sample's features (MRF or guided correspondence): the patch
    /// layers, size and strides apply.
    pub fn uses_patches(self) -> bool {
        self.uses_mrf() || self == PriorKind::Correspondence
    }
    pub fn uses_gram(self) -> bool {
        matches!(self, PriorKind::Gram | PriorKind::MrfGram)
    }
    pub fn name(self) -> &'static str {
        match self {
            PriorKind::Mrf => "mrf",
            PriorKind::Gram => "gram",
            PriorKind::MrfGram => "mrf+gram",
            PriorKind::Correspondence => "gc",
        }
    }
}

impl std::str::FromStr for PriorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mrf" => Ok(PriorKind::Mrf),
            "gram" => Ok(PriorKind::Gram),
            "mrf+gram" | "gram+mrf" => Ok(PriorKind::MrfGram),
            "gc" => Ok(PriorKind::Correspondence),
            _ => Err(format!(
                "unknown prior '{s}' (expected mrf, gram, mrf+gram or gc)"
            )),
        }
    }
}

/// Colour-coded region maps (after neural-doodle): one per style image, and one for the output.
#[derive(Debug, Clone)]
pub struct Guides {
    pub style_maps: Vec<RgbImageF32>,
    pub target_map: RgbImageF32,
    /// Weight of the map channels relative to the features' RMS at each layer.
    pub weight: f32,
}

/// Storage of the style patch bank for matching on a GPU: f16 and bf16 halve its memory and
/// run the products on the tensor cores (indices equal f32's for 99.7-100% of real queries,
/// measured on an H200); the CPU matchers always use f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BankPrecision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl BankPrecision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            BankPrecision::F32 => candle_core::DType::F32,
            BankPrecision::F16 => candle_core::DType::F16,
            BankPrecision::Bf16 => candle_core::DType::BF16,
        }
    }
}

impl std::str::FromStr for BankPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(BankPrecision::F32),
            "f16" => Ok(BankPrecision::F16),
            "bf16" => Ok(BankPrecision::Bf16),
            _ => Err(format!(
                "unknown bank precision '{s}' (expected f32, f16 or bf16)"
            )),
        }
    }
}

/// How style patches are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatcherKind {
    /// Approx for banks of at least 4096 patches on the CPU without blend weights, exact
    /// otherwise.
    Auto,
    /// Exact normalised cross-correlation (chunked GEMM).
    Exact,
    /// PCA projection, candidate scan, exact re-rank (recall@1 >= 0.95 measured), f16 bank.
    Approx,
}

impl std::str::FromStr for MatcherKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(MatcherKind::Auto),
            "exact" => Ok(MatcherKind::Exact),
            "approx" => Ok(MatcherKind::Approx),
            _ => Err(format!(
                "unknown matcher '{s}' (expected auto, exact or approx)"
            )),
        }
    }
}

/// Weight per layer of the guided correspondence prior: its loss per patch is O(1), so it
/// needs a far larger weight than CNNMRF's squared feature distances to stand against TV.
pub const GC_WEIGHT: f64 = 1.0;

/// neural-style's content weight, used when the Gram prior runs alone.
pub const GRAM_CONTENT_WEIGHT: f64 = 5.0;

/// Gram layers by default: neural-style's relu1_1..relu5_1.
pub const DEFAULT_GRAM_LAYERS: &str = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1";

/// Gram layers of the `mrf+gram` prior: those the MRF prior's pass computes anyway (up to
/// relu4_1), so the Gram term adds no depth to the network.
pub const MRF_GRAM_LAYERS: &str = "relu1_1,relu2_1,relu3_1,relu4_1";

/// Gram weight per layer of the `mrf+gram` prior, beside the MRF term's 1e-4: chosen on the
/// benchmark samples among 30, 100, 300 and 1000 (README, Quality).
pub const MRF_GRAM_WEIGHT: f64 = 3e2;

/// Content layer by default (CNNMRF's and neural-style's).
pub const DEFAULT_CONTENT_LAYER: &str = "relu4_2";

/// Weight of guide maps in the matching by default (1: as much as the features).
pub const DEFAULT_MAP_WEIGHT: f32 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Lbfgs,
    Adam,
}

/// A named set of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Our defaults: the original CNNMRF code's choices, which the quality benchmark measured
    /// best, with Lanczos3 resampling and, for a texture, Gram statistics beside the MRF term
    /// ([`Preset::default_prior`]; see the README); the sample keeps its native scale.
    #[default]
    Default,
    /// The original CNNMRF code's choices (chuanli11/CNNMRF): flat mean-grey start, L-BFGS with
    /// history 25, no line search and step 1 (Torch's first step), averaged target maps, grids
    /// with the last row and column, no mirror padding, every pyramid level kept.
    Cnnmrf,
    /// The default with 20 iterations at the finest level instead of 100, where they cost the
    /// most: the 384 px job in 0.4x the default's time on 2 cores, at a mean SWD about 14%
    /// higher on the quality benchmark (see the README).
    Fast,
}

impl Preset {
    /// The prior a run gets when none is named. A texture from samples alone (`plain_texture`)
    /// gets MRF with Gram statistics, which the quality benchmark chose: the Gram term keeps
    /// the sample's proportions of regions and colours, which nearest-neighbour matching alone
    /// loses (README, Quality). Transfers and guided textures, whose layout the content or
    /// the maps decide, and the `cnnmrf` preset keep the original's plain MRF.
    pub fn default_prior(self, plain_texture: bool) -> PriorKind {
        match self {
            _ if !plain_texture => PriorKind::Mrf,
            Preset::Cnnmrf => PriorKind::Mrf,
            Preset::Default | Preset::Fast => PriorKind::MrfGram,
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Preset::Default),
            "cnnmrf" => Ok(Preset::Cnnmrf),
            "fast" => Ok(Preset::Fast),
            _ => Err(format!(
                "unknown preset '{s}' (expected default, cnnmrf or fast)"
            )),
        }
    }
}

/// Every knob of a run. The defaults are CNNMRF's values and choices (see [`Preset`] and the
/// README's Quality section).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Params {
    /// The preset these values started from (individual fields may have been changed since).
    pub preset: Preset,
    /// Output size (finest level). For a transfer, the content is resized to it.
    pub width: u32,
    pub height: u32,
    pub levels: usize,
    pub level_ratio: f32,
    pub iterations: usize,
    /// Iterations at the finest level, where an evaluation costs the most (None: `iterations`).
    pub finest_iterations: Option<usize>,
    pub prior: PriorKind,
    #[serde(serialize_with = "layer_names")]
    pub mrf_layers: Vec<LayerId>,
    #[serde(serialize_with = "layer_names")]
    pub gram_layers: Vec<LayerId>,
    /// Gram weight per layer (neural-style's style weight).
    pub gram_weight: f64,
    /// Gram weight on the levels before the finest (None: `gram_weight`). The coarse levels lay
    /// the texture out; a stronger pull to the sample's proportions there copies less.
    pub coarse_gram_weight: Option<f64>,
    /// Transfer: keep the content's colours (luminance-only transfer).
    pub original_colors: bool,
    /// Make a seamless tile: circular padding in the network, patches and TV across the border.
    /// Level sizes are rounded to multiples of 16 so that pooling never drops a row.
    pub tileable: bool,
    pub patch_size: usize,
    /// Stride of the synthesis patches.
    pub stride: usize,
    /// Stride at which style patches are cut (CNNMRF's `mrf_sample_stride`).
    pub style_stride: usize,
    /// Weight per layer of the patch prior (MRF or guided correspondence).
    pub mrf_weight: f64,
    /// Occurrence penalty: a sample patch used more than its share costs this much more per
    /// multiple of its share (guided correspondence; also offered to MRF matching). 0: off.
    pub occurrence: f32,
    /// With `occurrence` 0, turn the penalty on ([`AUTO_OCCURRENCE`]) for MRF textures whose
    /// sample is larger than the output: nearest-neighbour matching otherwise fills the output
    /// from one region of the sample (see README, Quality). An explicit --occurrence clears it.
    pub auto_occurrence: bool,
    /// Guided correspondence: bandwidth h, the top-k restriction (0: all patches) and the most
    /// queries drawn per layer and evaluation (0: all).
    pub gc_bandwidth: f32,
    pub gc_top_k: usize,
    pub gc_max_queries: usize,
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
    /// L-BFGS: strong-Wolfe line search, or fixed steps (CNNMRF's `mylbfgs`: step 1).
    pub line_search: bool,
    /// L-BFGS: largest pixel change of a first step (no curvature known yet); None: Torch's
    /// `min(1, 1/|g|_1)`.
    pub first_step_px: Option<f32>,
    /// Adam: step size in grey levels (0..255) per iteration.
    pub learning_rate: f32,
    /// How MRF matches become a gradient.
    pub mrf_gradient: MrfGradient,
    /// MRF patch grids also take the last row and column of starts (CNNMRF's `flag_all`).
    pub full_grid: bool,
    /// Style features computed on a mirror-padded sample (no zero-padding signature at its borders).
    pub mirror_style: bool,
    /// Filter of the pyramid's resampling: the sample scaled to each level, and each level's
    /// result scaled up to start the next.
    pub resample: Resample,
    /// Coarse pyramid levels whose style gives fewer patches than this at an MRF layer are
    /// skipped (0: keep every level).
    pub min_style_patches: usize,
    pub init: Init,
    pub seed: u64,
    /// Largest block of match scores held at once, in floats.
    pub match_budget: usize,
    pub matcher: MatcherKind,
    /// Patch bank storage for GPU matching.
    pub bank_precision: BankPrecision,
    /// Guide maps for the MRF prior (texture and transfer).
    #[serde(skip)]
    pub guides: Option<Guides>,
    /// Refuse a run whose estimated peak memory exceeds this (default: the memory available).
    pub max_memory: Option<u64>,
    /// Optimise levels larger than this many px in overlapping tiles (textures only). Without
    /// it, levels are tiled only when they would not fit the memory limit in one piece.
    pub tile: Option<u32>,
}

fn layer_names<S: serde::Serializer>(l: &[LayerId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(l.iter().map(|l| l.name()))
}
fn layer_name<S: serde::Serializer>(l: &LayerId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(l.name())
}

/// The occurrence penalty `auto_occurrence` turns on (the guided correspondence paper's weight).
pub const AUTO_OCCURRENCE: f32 = 0.05;

impl Default for Params {
    fn default() -> Self {
        Self {
            preset: Preset::Default,
            width: 384,
            height: 384,
            levels: 3,
            level_ratio: 0.5,
            iterations: 100,
            finest_iterations: None,
            prior: PriorKind::Mrf,
            gram_layers: LayerId::parse_list(DEFAULT_GRAM_LAYERS).expect("valid names"),
            gram_weight: 1e2,
            coarse_gram_weight: None,
            original_colors: false,
            tileable: false,
            mrf_layers: LayerId::parse_list("relu3_1,relu4_1").expect("valid names"),
            patch_size: 3,
            stride: 2,
            style_stride: 2,
            mrf_weight: 1e-4,
            occurrence: 0.0,
            auto_occurrence: true,
            gc_bandwidth: 0.5,
            gc_top_k: 0,
            gc_max_queries: 1024,
            content_layer: DEFAULT_CONTENT_LAYER.parse().expect("valid name"),
            content_weight: 2e1,
            tv_weight: 1e-3,
            rotations: 0,
            scales: 0,
            style_scale: 1.0,
            optimizer: OptimizerKind::Lbfgs,
            history: 25,
            line_search: false,
            first_step_px: None,
            learning_rate: 1.0,
            mrf_gradient: MrfGradient::Average,
            full_grid: true,
            mirror_style: false,
            min_style_patches: 0,
            resample: Resample::Lanczos3,
            init: Init::Mean,
            seed: 0,
            match_budget: 1 << 24,
            matcher: MatcherKind::Auto,
            bank_precision: BankPrecision::F32,
            tile: None,
            guides: None,
            max_memory: None,
        }
    }
}

impl Params {
    /// The defaults of a preset.
    pub fn preset(preset: Preset) -> Params {
        match preset {
            Preset::Default => Params::default(),
            // The original's choices. The default shares all but one (the benchmark chose them):
            // the original resamples bilinearly, where Lanczos3 scored better on the mean of
            // the benchmark samples (README, Quality).
            Preset::Cnnmrf => Params {
                preset,
                resample: Resample::Bilinear,
                auto_occurrence: false,
                matcher: MatcherKind::Exact,
                ..Params::default()
            },
            Preset::Fast => Params {
                preset,
                finest_iterations: Some(20),
                ..Params::default()
            },
        }
    }

    /// The defaults of a preset for `prior`: `mrf+gram` reads its Gram statistics from
    /// [`MRF_GRAM_LAYERS`] at [`MRF_GRAM_WEIGHT`]; the guided correspondence prior brings its paper's patch settings
    /// (7x7 patches at stride 3 on relu2_1, relu3_1 and relu4_1, occurrence penalty 0.05), its
    /// optimisation (Adam from noise, no TV) and its own weight.
    pub fn preset_for(preset: Preset, prior: PriorKind) -> Params {
        let base = Params {
            prior,
            ..Params::preset(preset)
        };
        if prior == PriorKind::MrfGram {
            return Params {
                gram_layers: LayerId::parse_list(MRF_GRAM_LAYERS).expect("valid names"),
                gram_weight: MRF_GRAM_WEIGHT,
                ..base
            };
        }
        if prior != PriorKind::Correspondence {
            return base;
        }
        Params {
            mrf_layers: LayerId::parse_list("relu2_1,relu3_1,relu4_1").expect("valid names"),
            patch_size: 7,
            stride: 3,
            style_stride: 3,
            mrf_weight: GC_WEIGHT,
            occurrence: 0.05,
            // The paper's optimisation: Adam from noise, no TV term.
            optimizer: OptimizerKind::Adam,
            init: Init::Noise,
            tv_weight: 0.0,
            ..base
        }
    }

    /// Checks values a user can get wrong; one message per problem.
    pub fn validate(&self) -> crate::Result<()> {
        if let Some(t) = self.tile {
            if t < 128 || t % super::tiles::TILE_ALIGN != 0 {
                fail!(
                    Settings,
                    "--tile {t}: tiles must be at least 128 px and a multiple of 16"
                );
            }
        }
        if self.width == 0 || self.height == 0 {
            fail!(
                Settings,
                "output size must be positive, got {}x{}",
                self.width,
                self.height
            );
        }
        if self.levels == 0 || self.levels > 8 {
            fail!(
                Settings,
                "--levels must be between 1 and 8, got {}",
                self.levels
            );
        }
        if !(self.level_ratio > 0.0 && self.level_ratio < 1.0) {
            fail!(
                Settings,
                "--level-ratio must be in (0, 1), got {}",
                self.level_ratio
            );
        }
        for (name, n) in [
            ("--iterations", self.iterations),
            ("--finest-iterations", self.finest_iterations.unwrap_or(1)),
        ] {
            if n == 0 || n > 100_000 {
                fail!(Settings, "{name} must be between 1 and 100000, got {n}");
            }
        }
        if self.patch_size == 0 || self.patch_size > 9 {
            fail!(
                Settings,
                "--patch-size must be between 1 and 9, got {}",
                self.patch_size
            );
        }
        for (name, v) in [
            ("--stride", self.stride),
            ("--style-stride", self.style_stride),
        ] {
            if v == 0 || v > self.patch_size {
                fail!(
                    Settings,
                    "{name} must be between 1 and the patch size, got {v}"
                );
            }
        }
        for (name, v) in [
            ("--mrf-weight", self.mrf_weight),
            ("--content-weight", self.content_weight),
            ("--tv-weight", self.tv_weight),
        ] {
            if !v.is_finite() || v < 0.0 {
                fail!(Settings, "{name} must be a finite number >= 0, got {v}");
            }
        }
        if !(self.style_scale.is_finite() && self.style_scale > 0.0 && self.style_scale <= 16.0) {
            fail!(
                Settings,
                "--style-scale must be in (0, 16], got {}",
                self.style_scale
            );
        }
        if self.rotations > 12 || self.scales > 10 {
            fail!(Settings, "--rotations must be <= 12 and --scales <= 10");
        }
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 255.0)
        {
            fail!(
                Settings,
                "--learning-rate must be in (0, 255], got {}",
                self.learning_rate
            );
        }
        if self.history == 0 || self.history > 1000 {
            fail!(
                Settings,
                "--history must be between 1 and 1000, got {}",
                self.history
            );
        }
        if !(self.occurrence.is_finite() && self.occurrence >= 0.0) {
            fail!(
                Settings,
                "--occurrence must be a finite number >= 0, got {}",
                self.occurrence
            );
        }
        if !(self.gc_bandwidth.is_finite() && self.gc_bandwidth > 0.0) {
            fail!(
                Settings,
                "--gc-bandwidth must be a finite number > 0, got {}",
                self.gc_bandwidth
            );
        }
        if self.prior.uses_patches() && self.mrf_layers.is_empty() {
            fail!(Settings, "at least one MRF layer is needed");
        }
        if self.prior.uses_gram() && self.gram_layers.is_empty() {
            fail!(Settings, "at least one Gram layer is needed");
        }
        for (name, w) in [
            ("--style-weight", Some(self.gram_weight)),
            ("--coarse-style-weight", self.coarse_gram_weight),
        ] {
            if let Some(w) = w.filter(|w| !w.is_finite() || *w < 0.0) {
                fail!(Settings, "{name} must be a finite number >= 0, got {w}");
            }
        }
        Ok(())
    }

    /// Gram weight of a level.
    pub fn level_gram_weight(&self, finest: bool) -> f64 {
        match self.coarse_gram_weight {
            Some(w) if !finest => w,
            _ => self.gram_weight,
        }
    }

    /// Iterations of a level.
    pub fn level_iterations(&self, finest: bool) -> usize {
        match self.finest_iterations {
            Some(n) if finest => n,
            _ => self.iterations,
        }
    }

    /// The deepest layer any style prior reads.
    pub fn deepest_style_layer(&self) -> LayerId {
        let mrf = self
            .prior
            .uses_patches()
            .then(|| self.mrf_layers.iter().max())
            .flatten();
        let gram = self
            .prior
            .uses_gram()
            .then(|| self.gram_layers.iter().max())
            .flatten();
        *mrf.into_iter()
            .chain(gram)
            .max()
            .expect("validated: some style layer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_gram_weight_applies_before_the_finest_level_only() {
        let mut p = Params::default();
        assert_eq!(
            (p.level_gram_weight(false), p.level_gram_weight(true)),
            (1e2, 1e2)
        );
        p.coarse_gram_weight = Some(3e3);
        assert_eq!(
            (p.level_gram_weight(false), p.level_gram_weight(true)),
            (3e3, 1e2)
        );
        p.coarse_gram_weight = Some(f64::NAN);
        assert!(p.validate().is_err());
    }
}
