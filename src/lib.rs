//! mrfsynth: neural texture synthesis and style transfer with CNNMRF and Gram priors over VGG19.
//!
//! The data path, one module each: image in/out ([`image_io`]) -> VGG19 features ([`vgg`], with
//! [`assets::weights`]) -> losses ([`prior`], matching in [`matcher`]) -> optimiser ([`optim`]) ->
//! pyramid ([`synth`]) -> output.

pub mod assets;
pub mod atomic;
pub mod color;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod image_io;
pub mod matcher;
pub mod metrics;
pub mod optim;
pub mod prior;
pub mod report;
pub mod synth;
pub mod vgg;
