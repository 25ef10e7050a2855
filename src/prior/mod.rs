//! Losses on VGG features (and on the image itself), each with its gradient.
//!
//! A prior never runs the network: it receives the features of the layers it asked for and
//! returns a loss and a gradient per layer. The objective adds them up and runs one backward
//! pass, so the optimiser and the pyramid never know which priors they drive.

pub mod content;
pub mod correspondence;
pub mod gram;
pub mod grid;
pub mod mrf;
pub mod patches;
pub mod tv;

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};

use crate::vgg::LayerId;

pub use content::ContentLoss;
pub use mrf::{MrfLayer, MrfStats};

/// One loss term's contribution at one layer.
pub struct Term {
    pub name: &'static str,
    pub layer: LayerId,
    pub loss: f64,
    /// Gradient of `loss` with respect to the layer's output, same shape as the features.
    pub grad: Tensor,
}

/// A loss over the features of some VGG layers.
pub trait FeatureLoss: Send {
    fn layers(&self) -> Vec<LayerId>;
    /// `features` holds (at least) every layer of `layers()`, each [1, C, H, W].
    fn eval(&mut self, features: &BTreeMap<LayerId, Tensor>) -> Result<Vec<Term>>;
    /// Tell a prior that the image wraps around (seamless tiles). Priors without a spatial
    /// neighbourhood ignore it.
    fn set_wrap(&mut self, _wrap: bool) {}
    /// Matching statistics of the last evaluation, for priors that match patches.
    fn mrf_stats(&self) -> Option<Vec<MrfStats>> {
        None
    }
}

/// A loss on one layer's features alone (a layer of a patch prior).
pub trait LayerLoss: Send {
    /// The term's name in the loss report.
    const NAME: &'static str;
    fn layer(&self) -> LayerId;
    /// Loss and gradient for features [1, C, H, W].
    fn loss_and_grad(&mut self, f: &Tensor) -> Result<(f64, Tensor)>;
    fn set_wrap(&mut self, wrap: bool);
    /// Matching statistics of the last evaluation.
    fn stats(&self) -> MrfStats;
}

/// A prior that is the sum of independent per-layer losses (the MRF and guided correspondence
/// priors).
pub struct LayerPrior<L> {
    pub layers: Vec<L>,
}

impl<L: LayerLoss> FeatureLoss for LayerPrior<L> {
    fn layers(&self) -> Vec<LayerId> {
        self.layers.iter().map(|l| l.layer()).collect()
    }

    fn eval(&mut self, features: &BTreeMap<LayerId, Tensor>) -> Result<Vec<Term>> {
        self.layers
            .iter_mut()
            .map(|l| {
                let (loss, grad) = l.loss_and_grad(feature(features, l.layer())?)?;
                Ok(Term {
                    name: L::NAME,
                    layer: l.layer(),
                    loss,
                    grad,
                })
            })
            .collect()
    }

    fn set_wrap(&mut self, wrap: bool) {
        self.layers.iter_mut().for_each(|l| l.set_wrap(wrap));
    }

    fn mrf_stats(&self) -> Option<Vec<MrfStats>> {
        Some(self.layers.iter().map(|l| l.stats()).collect())
    }
}

pub(crate) fn feature(features: &BTreeMap<LayerId, Tensor>, layer: LayerId) -> Result<&Tensor> {
    features
        .get(&layer)
        .ok_or_else(|| candle_core::Error::Msg(format!("features of {layer} were not computed")))
}

/// Deterministic pseudo-random values in [0, 1) for the priors' unit tests (xorshift).
#[cfg(test)]
pub(crate) fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Sum of squares accumulated in f64: energies are compared across line-search steps.
pub(crate) fn sum_sq_f64(x: &Tensor) -> Result<f64> {
    x.to_dtype(candle_core::DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()
}
