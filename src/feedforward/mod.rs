//! Feed-forward synthesis: train a generator once with the engine's priors as the loss
//! ([`train()`]), then make textures of any size, or stylise photos, in one network pass
//! ([`Model`]). After Ulyanov et al. 2016/2017 (texture networks) and Johnson et al. 2016
//! (perceptual losses).
//!
//! The data path: noise or photo -> [`generator`] -> VGG19 priors (the loss) -> Adam on the
//! generator's weights ([`train()`]) -> [`model`] file -> generate / stylize.

mod banded;
mod conv;
pub mod generator;
pub mod model;
mod norm;
mod train;
pub mod waves;

pub use banded::generation_bytes;
pub use generator::{Architecture, Generator, GeneratorKind, Padding};
pub use model::{sample_checksum, Model, ModelInfo};
pub use train::{train, TrainData, TrainObserver, TrainOptions, TrainReport, TrainStep};
