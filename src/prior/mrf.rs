//! The MRF prior (Li & Wand 2016): every synthesis patch is pulled toward its nearest style patch.
//!
//! Per layer, with queries Q_n (k x k patches of the image being made, at `stride`) and the style
//! bank P, the match j(n) maximises the cosine between Q_n and P_j (re-matched at every
//! evaluation), and the energy is
//!
//!   E = w / (2c) * sum_n |Q_n - P_j(n)|^2,   c = (k / stride)^2,
//!
//! whose gradient is w/c times the sum of (Q_n - P_j(n)) over the patches covering a position.
//! Dividing by the mean coverage c gives CNNMRF's gradient scale (it averages over overlaps).

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};

use super::patches::{fold, fold_wrapped, residual_fold, unfold, unfold_wrapped};
use super::{feature, sum_sq_f64, FeatureLoss, Term};
use crate::matcher::PatchMatcher;
use crate::vgg::LayerId;

/// How the last evaluation matched, for progress and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MrfStats {
    pub mean_score: f32,
    pub distinct_used: usize,
    pub bank_size: usize,
    /// With several style images: the share of matches drawn from each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub share_per_style: Vec<f32>,
}

pub struct MrfLayer {
    pub layer: LayerId,
    pub weight: f64,
    pub patch: usize,
    pub stride: usize,
    /// The image being made wraps around (seamless tiles): patches cross its edges.
    pub wrap: bool,
    /// Guide channels of the image being made at this layer ([3, H, W], scaled as the bank's).
    pub guide: Option<Tensor>,
    /// End offsets in the bank of each style image's patches (several exemplars).
    pub style_ends: Vec<usize>,
    /// Raw style patches [M, C*k*k]: the targets.
    bank: Tensor,
    matcher: Box<dyn PatchMatcher>,
    pub last: MrfStats,
}

impl MrfLayer {
    pub fn new(
        layer: LayerId,
        bank: Tensor,
        matcher: Box<dyn PatchMatcher>,
        weight: f64,
        patch: usize,
        stride: usize,
    ) -> Self {
        Self {
            layer,
            weight,
            patch,
            stride,
            wrap: false,
            style_ends: Vec::new(),
            guide: None,
            bank,
            matcher,
            last: MrfStats::default(),
        }
    }

    pub fn bank_size(&self) -> usize {
        self.matcher.len()
    }

    /// Energy and gradient for features `f` [1, C, H, W].
    pub fn loss_and_grad(&mut self, f: &Tensor) -> Result<(f64, Tensor)> {
        let (_, c, h, w) = f.dims4()?;
        let f = f.squeeze(0)?;
        let f = match &self.guide {
            Some(g) => Tensor::cat(&[&f, g], 0)?,
            None => f,
        };
        let channels = f.dim(0)?;
        let queries = if self.wrap {
            unfold_wrapped(&f, self.patch, self.stride)?
        } else {
            unfold(&f, self.patch, self.stride)?
        };
        let matches = self.matcher.best(&queries)?;
        let coverage = (self.patch as f64 / self.stride as f64).powi(2);
        let scale = self.weight / coverage;
        let (grad, sum_sq) = match residual_fold(
            &f,
            &self.bank,
            &matches.index,
            self.patch,
            self.stride,
            self.wrap,
            scale,
        )? {
            Some(r) => r,
            None => {
                let targets = self.bank.index_select(&matches.index, 0)?;
                let diff = (queries - targets)?;
                let fold_fn = if self.wrap { fold_wrapped } else { fold };
                let grad = fold_fn(
                    &diff.affine(scale, 0.0)?,
                    channels,
                    h,
                    w,
                    self.patch,
                    self.stride,
                )?;
                (grad, sum_sq_f64(&diff)?)
            }
        };
        let loss = 0.5 * scale * sum_sq;
        // Guide channels are constants: only the features' part of the gradient flows back.
        let grad = if channels > c {
            grad.narrow(0, 0, c)?
        } else {
            grad
        };

        let mut used: Vec<u32> = matches.index.to_vec1()?;
        used.sort_unstable();
        let share_per_style = if self.style_ends.len() > 1 {
            let n = used.len().max(1) as f32;
            let mut start = 0;
            self.style_ends
                .iter()
                .map(|&end| {
                    let count = used
                        .iter()
                        .filter(|&&i| (start..end).contains(&(i as usize)))
                        .count();
                    start = end;
                    count as f32 / n
                })
                .collect()
        } else {
            Vec::new()
        };
        used.dedup();
        self.last = MrfStats {
            mean_score: matches.score.iter().sum::<f32>() / matches.score.len().max(1) as f32,
            distinct_used: used.len(),
            bank_size: self.matcher.len(),
            share_per_style,
        };
        Ok((loss, grad.unsqueeze(0)?))
    }
}

/// The MRF prior over several layers.
pub struct MrfPrior {
    pub layers: Vec<MrfLayer>,
}

impl FeatureLoss for MrfPrior {
    fn layers(&self) -> Vec<LayerId> {
        self.layers.iter().map(|l| l.layer).collect()
    }

    fn eval(&mut self, features: &BTreeMap<LayerId, Tensor>) -> Result<Vec<Term>> {
        self.layers
            .iter_mut()
            .map(|l| {
                let (loss, grad) = l.loss_and_grad(feature(features, l.layer)?)?;
                Ok(Term {
                    name: "mrf",
                    layer: l.layer,
                    loss,
                    grad,
                })
            })
            .collect()
    }

    fn set_wrap(&mut self, wrap: bool) {
        self.layers.iter_mut().for_each(|l| l.wrap = wrap);
    }

    fn mrf_stats(&self) -> Option<Vec<MrfStats>> {
        Some(self.layers.iter().map(|l| l.last.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::ExactMatcher;
    use candle_core::Device;

    /// With matches fixed (small steps), the closed-form gradient agrees with finite differences.
    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // Seeded values, and a synthesis map that is the style plus a little noise: every query
        // has one clear best match, which no finite-difference step flips.
        let pseudo = |n: usize, seed: u64| -> Vec<f32> {
            let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect()
        };
        let style = Tensor::from_vec(pseudo(4 * 9 * 9, 1), (4, 9, 9), &dev)?;
        let bank = unfold(&style, 3, 2)?;
        let layer: LayerId = "relu3_1".parse().unwrap();
        let make = || -> Result<MrfLayer> {
            Ok(MrfLayer::new(
                layer,
                bank.clone(),
                Box::new(ExactMatcher::new(&bank, 1 << 20)?),
                0.7,
                3,
                2,
            ))
        };
        let mut mrf = make()?;
        let noise = Tensor::from_vec(pseudo(4 * 7 * 8, 2), (1, 4, 7, 8), &dev)?;
        let x =
            (style.narrow(1, 0, 7)?.narrow(2, 0, 8)?.unsqueeze(0)? + noise.affine(0.2, -0.1)?)?;
        let (_, g) = mrf.loss_and_grad(&x)?;
        let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
        let base: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let eps = 5e-3f32;
        let mut checked = 0;
        for i in (0..base.len()).step_by(11) {
            let eval = |delta: f32| -> Result<f64> {
                let mut v = base.clone();
                v[i] += delta;
                make()?
                    .loss_and_grad(&Tensor::from_vec(v, (1, 4, 7, 8), &dev)?)
                    .map(|r| r.0)
            };
            let fd = (eval(eps)? - eval(-eps)?) / (2.0 * eps as f64);
            assert!(
                (fd - g[i] as f64).abs() < 5e-2 * (fd.abs() + 2e-2),
                "i={i}: fd {fd} vs {}",
                g[i]
            );
            checked += 1;
        }
        assert!(checked > 10);
        Ok(())
    }
}
