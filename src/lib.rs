//! mrfsynth: neural texture synthesis and style transfer with CNNMRF and Gram priors over VGG19.
//!
//! The data path, one module each: image in/out ([`image_io`]) -> VGG19 features ([`vgg`], with
//! [`weights`]) -> losses ([`prior`], matching in [`matcher`]) -> optimiser ([`optim`]) ->
//! pyramid ([`synth`]) -> output.

pub mod atomic;
pub mod bf16_gemm;
pub mod block_cache;
pub mod color;
mod cpu_ops;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod image_io;
pub mod matcher;
pub mod metrics;
pub mod optim;
pub mod pip_fetch;
pub mod prior;
pub mod report;
pub mod samples;
pub mod simd;
pub mod synth;
pub mod vgg;
pub mod weights;
