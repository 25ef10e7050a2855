//! mrfsynth: neural texture synthesis and style transfer with CNNMRF, guided correspondence and
//! Gram priors over VGG19.
//!
//! Start at [`Synth`]: a builder for each job the command line does (a texture, a style
//! transfer, a comparison of priors, metrics), with `image` crate images in and out.
//!
//! ```no_run
//! use mrfsynth::{PriorKind, Silent, Synth};
//!
//! # fn main() -> mrfsynth::Result<()> {
//! let sample = image::open("pebbles.jpg").expect("an image");
//! let texture = Synth::texture(&sample)
//!     .size(512, 384)
//!     .prior(PriorKind::Mrf)
//!     .seed(1)
//!     .build()? // checks settings and sizes, plans memory, loads VGG19 (cached after the first run)
//!     .run(&mut Silent)?;
//! texture.save("texture.png")?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are one [`Error`] type whose [`ErrorKind`] says whose fault a failure was.
//!
//! The data path, one module each: image in and out ([`image_io`]) -> VGG19 features ([`vgg`],
//! weights from [`assets::weights`]) -> losses (the priors: MRF, guided correspondence, Gram,
//! content, TV) and patch matching -> optimiser (L-BFGS, Adam) -> pyramid and run loop
//! ([`synth`]) -> output; [`metrics`] scores the result and [`report`] writes comparisons.

#![deny(unsafe_op_in_unsafe_fn)]

/// Declares a module of the engine's internals: public (and hidden from the docs) under the
/// `internals` feature, which the crate's own tests and benchmarks turn on through its
/// dev-dependency on itself; crate-private otherwise, so that the library's public surface is
/// what `lib.rs` re-exports and the documented modules.
macro_rules! internal_mod {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    )*};
}

pub mod assets;
pub mod atomic;
pub mod cpu;
#[cfg(feature = "cuda")]
internal_mod!(cuda);
pub mod device;
pub mod error;
pub mod feedforward;
pub mod image_io;
pub mod metrics;
pub mod report;
pub mod session;
pub mod synth;
pub mod vgg;

internal_mod!(color, matcher, optim, prior);

pub use error::{Error, ErrorKind, Result};
pub use session::{Network, Synth, Synthesis};
pub use synth::{Observer, Params, Preset, PriorKind, Silent};
