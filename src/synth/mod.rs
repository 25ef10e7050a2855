//! Synthesis: plan the pyramid and admit the run ([`plan`]), build each level's priors
//! (`priors`), optimise the pixels level by level ([`run`]), and report to an [`Observer`].

pub mod params;
mod plan;
mod priors;
mod run;
internal_mod!(augment, init, memory, objective, pyramid, style, tiles);

use serde::Serialize;

use crate::image_io::RgbImageF32;

pub use crate::optim::{Control, StepInfo};
pub use crate::prior::mrf::MrfStats;
pub use init::Init;
pub use memory::{available_bytes, parse_bytes};
pub use objective::{Objective, Timing};
pub use params::{
    BankPrecision, Guides, MatcherKind, MrfGradient, OptimizerKind, Params, Preset, PriorKind,
    GRAM_CONTENT_WEIGHT,
};
pub use plan::{min_side, plan, Plan};
pub(crate) use priors::level_priors;
pub use pyramid::Level;
pub use run::{features, run};

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
