//! The Gram prior (Gatys et al.): match the feature correlations of the style.
//!
//! Per layer, G = F F^T / (C H W) with F the [C, H*W] feature matrix, and the loss is
//! w * mean((G - T)^2) over the C x C entries (neural-style's normalisation). Its gradient is
//! dL/dF = (2w / C^2) * 2 (G - T) F / (C H W), G and T being symmetric.

use std::collections::BTreeMap;

use candle_core::{DType, Result, Tensor};

use super::{feature, sum_sq_f64, FeatureLoss, Term};
use crate::cpu::ops::{self, with_host_f32};
use crate::vgg::LayerId;

/// Gram matrix [C, C] of features [1, C, H, W], divided by C*H*W.
pub fn gram_matrix(f: &Tensor) -> Result<Tensor> {
    let (_, c, h, w) = f.dims4()?;
    let scale = 1.0 / (c * h * w) as f64;
    if let Some(g) = with_host_f32(f, |v| ops::gram(v, c, h * w, scale as f32)) {
        return Tensor::from_vec(g, (c, c), f.device());
    }
    let m = f.reshape((c, h * w))?;
    m.matmul(&m.t()?)?.affine(scale, 0.0)
}

/// One layer's loss and gradient on the CPU, without candle's matmul (which runs these long,
/// thin products on one core): `None` where the features are not host f32 values.
fn eval_on_host(l: &GramLayer, f: &Tensor) -> Result<Option<Term>> {
    let (_, c, h, w) = f.dims4()?;
    let target: Vec<f32> = l.target.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let cc = (c * c) as f64;
    let scale = l.weight * 4.0 / (cc * (c * h * w) as f64);
    let Some((loss, grad)) = with_host_f32(f, |v| {
        let mut diff = ops::gram(v, c, h * w, 1.0 / (c * h * w) as f32);
        let mut sum_sq = 0f64;
        for (d, t) in diff.iter_mut().zip(&target) {
            *d -= t;
            sum_sq += (*d as f64) * (*d as f64);
        }
        (l.weight * sum_sq / cc, ops::square_times(&diff, v, c, h * w, scale as f32))
    }) else {
        return Ok(None);
    };
    Ok(Some(Term {
        name: "gram",
        layer: l.layer,
        loss,
        grad: Tensor::from_vec(grad, (1, c, h, w), f.device())?,
    }))
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

/// One layer's loss and gradient with candle ops, on any device.
fn eval_with_candle(l: &GramLayer, f: &Tensor) -> Result<Term> {
    let (_, c, h, w) = f.dims4()?;
    let m = f.reshape((c, h * w))?;
    let scale = 1.0 / (c * h * w) as f64;
    let diff = (m.matmul(&m.t()?)?.affine(scale, 0.0)? - &l.target)?;
    let cc = (c * c) as f64;
    let loss = l.weight * sum_sq_f64(&diff)? / cc;
    let grad = diff
        .matmul(&m)?
        .affine(l.weight * 4.0 / (cc * (c * h * w) as f64), 0.0)?
        .reshape((1, c, h, w))?;
    Ok(Term {
        name: "gram",
        layer: l.layer,
        loss,
        grad,
    })
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
                match eval_on_host(l, f)? {
                    Some(term) => Ok(term),
                    None => eval_with_candle(l, f),
                }
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

    /// The host path (column blocks in parallel, row slabs for the gradient) gives candle's
    /// figures, on shapes with several blocks and slabs of unequal size.
    #[test]
    fn host_products_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        let layer: LayerId = "relu1_1".parse().unwrap();
        for (c, h, w) in [(5, 40, 77), (3, 1, 1), (16, 64, 65)] {
            let style = Tensor::rand(0f32, 1f32, (1, c, h + 3, w), &dev)?;
            let prior =
                GramPrior::from_styles(&[layer], &[BTreeMap::from([(layer, style)])], &[1.0], 7.0)?;
            let x = Tensor::rand(0f32, 1f32, (1, c, h, w), &dev)?;
            let host = eval_on_host(&prior.layers[0], &x)?.expect("host f32 features");
            let reference = eval_with_candle(&prior.layers[0], &x)?;
            assert!(
                (host.loss - reference.loss).abs() <= 1e-4 * reference.loss.abs(),
                "{c}x{h}x{w}: loss {} vs {}",
                host.loss,
                reference.loss
            );
            let err = (&host.grad - &reference.grad)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let size = reference.grad.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err <= 1e-4 * size, "{c}x{h}x{w}: gradient off by {err} of {size}");
        }
        Ok(())
    }
}
