//! The Gram prior (Gatys et al.): match the feature correlations of the style.
//!
//! Per layer, G = F F^T / (C H W) with F the [C, H*W] feature matrix, and the loss is
//! w * mean((G - T)^2) over the C x C entries (neural-style's normalisation). Its gradient is
//! dL/dF = (2w / C^2) * 2 (G - T) F / (C H W), G and T being symmetric.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};

use super::{feature, sum_sq_f64, FeatureLoss, Term};
use crate::vgg::LayerId;

/// Gram matrix [C, C] of features [1, C, H, W], divided by C*H*W.
pub fn gram_matrix(f: &Tensor) -> Result<Tensor> {
    let (_, c, h, w) = f.dims4()?;
    let m = f.reshape((c, h * w))?;
    m.matmul(&m.t()?)?.affine(1.0 / (c * h * w) as f64, 0.0)
}

pub struct GramLayer {
    pub layer: LayerId,
    pub target: Tensor,
    pub weight: f64,
}

pub struct GramPrior {
    pub layers: Vec<GramLayer>,
}

impl GramPrior {
    /// Targets from one or several style feature sets, blended with `blend` (normalised here).
    pub fn from_styles(
        layers: &[LayerId],
        styles: &[BTreeMap<LayerId, Tensor>],
        blend: &[f64],
        weight: f64,
    ) -> Result<Self> {
        let total: f64 = blend.iter().sum();
        let layers = layers
            .iter()
            .map(|&l| {
                let mut target: Option<Tensor> = None;
                for (feats, &b) in styles.iter().zip(blend) {
                    let g = gram_matrix(feature(feats, l)?)?.affine(b / total, 0.0)?;
                    target = Some(match target {
                        Some(t) => (t + g)?,
                        None => g,
                    });
                }
                Ok(GramLayer {
                    layer: l,
                    target: target.expect("at least one style"),
                    weight,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

impl FeatureLoss for GramPrior {
    fn layers(&self) -> Vec<LayerId> {
        self.layers.iter().map(|l| l.layer).collect()
    }

    fn eval(&mut self, features: &BTreeMap<LayerId, Tensor>) -> Result<Vec<Term>> {
        self.layers
            .iter()
            .map(|l| {
                let f = feature(features, l.layer)?;
                let (_, c, h, w) = f.dims4()?;
                let diff = (gram_matrix(f)? - &l.target)?;
                let cc = (c * c) as f64;
                let loss = l.weight * sum_sq_f64(&diff)? / cc;
                let scale = l.weight * 4.0 / (cc * (c * h * w) as f64);
                let grad = diff
                    .matmul(&f.reshape((c, h * w))?)?
                    .affine(scale, 0.0)?
                    .reshape((1, c, h, w))?;
                Ok(Term {
                    name: "gram",
                    layer: l.layer,
                    loss,
                    grad,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let layer: LayerId = "relu2_1".parse().unwrap();
        let style = Tensor::rand(0f32, 1f32, (1, 3, 5, 4), &dev)?;
        let styles = [BTreeMap::from([(layer, style)])];
        let mut prior = GramPrior::from_styles(&[layer], &styles, &[1.0], 3.0)?;
        let x = Tensor::rand(0f32, 1f32, (1, 3, 5, 4), &dev)?;
        let feats = BTreeMap::from([(layer, x.clone())]);
        let g: Vec<f32> = prior.eval(&feats)?[0].grad.flatten_all()?.to_vec1()?;
        let base: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for i in [0usize, 7, 19, 33, 59] {
            let mut at = |d: f32| -> Result<f64> {
                let mut v = base.clone();
                v[i] += d;
                let f = BTreeMap::from([(layer, Tensor::from_vec(v, (1, 3, 5, 4), &dev)?)]);
                Ok(prior.eval(&f)?[0].loss)
            };
            let fd = (at(1e-2)? - at(-1e-2)?) / 2e-2;
            assert!(
                (fd - g[i] as f64).abs() < 1e-2 * fd.abs().max(1e-3),
                "i={i}: {fd} vs {}",
                g[i]
            );
        }
        Ok(())
    }
}
