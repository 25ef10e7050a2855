//! The MRF prior (Li & Wand 2016): every synthesis patch is pulled toward its nearest style patch.
//!
//! Per layer, with queries Q_n (k x k patches of the image being made, on a grid at `stride`) and
//! the style bank P, the match j(n) maximises the cosine between Q_n and P_j (re-matched at every
//! evaluation). Two ways to turn the matches into a gradient ([`MrfGradient`]):
//!
//! - `Average` (CNNMRF's code, `MRFMM:updateGradInput`): the matched patches are pasted onto a
//!   target map T, averaged where they overlap, and the gradient is w (F - T) wherever a patch
//!   lies: E = w/2 |F - T|^2 with T held fixed. Every covered position is pulled with the same
//!   strength, however many patches overlap it.
//! - `Sum` (the paper's energy): E = w / (2c) * sum_n |Q_n - P_j(n)|^2, c = (k / stride)^2, whose
//!   gradient at a position is w/c times the sum of (Q_n - P_j(n)) over the patches covering it:
//!   positions covered by more patches are pulled harder (a stride-periodic weighting).

use candle_core::{Result, Tensor};

use super::patches::{fold_grid, fold_overhang, paste_matches, unfold_grid, wrap_pad, Grid};
use super::{sum_sq_f64, LayerLoss, LayerPrior};
use crate::matcher::{PatchMatcher, Spread};
use crate::vgg::LayerId;

/// How matched patches become the MRF gradient (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MrfGradient {
    /// w (F - T), T the matched patches averaged over their overlaps (CNNMRF's code).
    #[default]
    Average,
    /// The sum of (Q_n - P_j(n)) over the covering patches, divided by (k / stride)^2.
    Sum,
}

impl std::str::FromStr for MrfGradient {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "average" => Ok(MrfGradient::Average),
            "sum" => Ok(MrfGradient::Sum),
            _ => Err(format!(
                "unknown MRF gradient '{s}' (expected average or sum)"
            )),
        }
    }
}

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
    /// Patch grids also take the last row and column of starts (CNNMRF's `flag_all`).
    pub full_grid: bool,
    pub gradient: MrfGradient,
    /// Occurrence penalty (in the guided correspondence prior's distance units (1 - cos) / 2):
    /// after a first match, a bank patch chosen n times costs `occurrence * (n - omega) / omega`
    /// more where n exceeds omega = queries / bank size, its share, and the queries are matched
    /// again. 0: one plain match.
    pub occurrence: f32,
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
            full_grid: false,
            gradient: MrfGradient::Sum,
            occurrence: 0.0,
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
        let k = self.patch;
        // The map patches are cut from: a wrapped image continues across its right and bottom
        // edges, and its strided grid already covers every position.
        let map = if self.wrap {
            wrap_pad(&f, k - 1)?
        } else {
            f.clone()
        };
        let (_, hb, wb) = map.dims3()?;
        let grid = Grid::new(hb, wb, k, self.stride, self.full_grid && !self.wrap);
        let queries = unfold_grid(&map, k, self.stride, &grid)?;
        let matches = if self.occurrence > 0.0 {
            let omega = queries.dim(0)? as f32 / self.matcher.len() as f32;
            self.matcher.best_spread(
                &queries,
                Spread {
                    // Cosine units: twice the distance's.
                    per_use: 2.0 * self.occurrence / omega,
                    share: omega,
                },
            )?
        } else {
            self.matcher.best(&queries)?
        };
        let (sums, sum_sq) = match paste_matches(&map, &self.bank, &matches.index, k, &grid)? {
            Some(r) => r,
            None => {
                let targets = self.bank.index_select(&matches.index, 0)?;
                let sum_sq = sum_sq_f64(&(&queries - &targets)?)?;
                let sums = fold_grid(&targets, channels, hb, wb, k, self.stride, &grid)?;
                (sums, sum_sq)
            }
        };
        let cover = Tensor::from_vec(grid.coverage(hb, wb, k), (1, hb, wb), f.device())?;
        let (sums, cover) = if self.wrap {
            (
                fold_overhang(&sums, h, w, k)?,
                fold_overhang(&cover, h, w, k)?,
            )
        } else {
            (sums, cover)
        };
        let (loss, grad) = match self.gradient {
            MrfGradient::Sum => {
                let scale = self.weight / (k as f64 / self.stride as f64).powi(2);
                let grad = (f.broadcast_mul(&cover)? - sums)?.affine(scale, 0.0)?;
                (0.5 * scale * sum_sq, grad)
            }
            MrfGradient::Average => {
                let covered = cover.clamp(0f32, 1f32)?;
                let target = sums.broadcast_div(&cover.clamp(1f32, f32::MAX)?)?;
                let r = (f - target)?.broadcast_mul(&covered)?;
                (
                    0.5 * self.weight * sum_sq_f64(&r)?,
                    r.affine(self.weight, 0.0)?,
                )
            }
        };
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

impl LayerLoss for MrfLayer {
    const NAME: &'static str = "mrf";
    fn layer(&self) -> LayerId {
        self.layer
    }
    fn loss_and_grad(&mut self, f: &Tensor) -> Result<(f64, Tensor)> {
        MrfLayer::loss_and_grad(self, f)
    }
    fn set_wrap(&mut self, wrap: bool) {
        self.wrap = wrap;
    }
    fn stats(&self) -> MrfStats {
        self.last.clone()
    }
}

/// The MRF prior over several layers.
pub type MrfPrior = LayerPrior<MrfLayer>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::ExactMatcher;
    use crate::prior::patches::unfold;
    use candle_core::Device;

    /// With matches fixed (small steps), the closed-form gradient agrees with finite differences,
    /// for both gradient forms, on the strided and the full grid (a 7x8 map: the stride-2 grid
    /// leaves its last column uncovered, the full grid covers it), wrapped and not.
    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // Seeded values, and a synthesis map that is the style plus a little noise: every query
        // has one clear best match, which no finite-difference step flips.
        let pseudo = crate::prior::pseudo_random;
        let style = Tensor::from_vec(pseudo(4 * 9 * 9, 1), (4, 9, 9), &dev)?;
        let bank = unfold(&style, 3, 2)?;
        let layer: LayerId = "relu3_1".parse().unwrap();
        let noise = Tensor::from_vec(pseudo(4 * 7 * 8, 2), (1, 4, 7, 8), &dev)?;
        for gradient in [MrfGradient::Average, MrfGradient::Sum] {
            for (full_grid, wrap) in [(false, false), (true, false), (false, true)] {
                let make = || -> Result<MrfLayer> {
                    let mut l = MrfLayer::new(
                        layer,
                        bank.clone(),
                        Box::new(ExactMatcher::new(&bank, 1 << 20)?),
                        0.7,
                        3,
                        2,
                    );
                    l.gradient = gradient;
                    l.full_grid = full_grid;
                    l.wrap = wrap;
                    Ok(l)
                };
                let checked = check_against_differences(&make, &style, &noise)?;
                assert!(checked > 10, "{gradient:?} full {full_grid} wrap {wrap}");
            }
        }
        Ok(())
    }

    /// The occurrence penalty spreads the matches over more of the bank: on a near-flat image
    /// most patches are nearest the same few near-flat style patches; with the penalty, the
    /// over-used ones give way and more distinct patches are used.
    #[test]
    fn occurrence_penalty_uses_more_patches() -> Result<()> {
        let dev = Device::Cpu;
        let noise = |n: usize, seed: u64, amp: f32| -> Vec<f32> {
            let u = crate::prior::pseudo_random(n, seed);
            u.into_iter().map(|u| 1.0 + amp * (u - 0.5)).collect()
        };
        let style = Tensor::from_vec(noise(2 * 12 * 12, 5, 0.2), (2, 12, 12), &dev)?;
        let bank = unfold(&style, 3, 1)?;
        let layer: LayerId = "relu3_1".parse().unwrap();
        let image = Tensor::from_vec(noise(2 * 12 * 12, 6, 0.02), (1, 2, 12, 12), &dev)?;
        let distinct = |occurrence: f32| -> Result<usize> {
            let mut l = MrfLayer::new(
                layer,
                bank.clone(),
                Box::new(ExactMatcher::new(&bank, 1 << 20)?),
                1.0,
                3,
                1,
            );
            l.occurrence = occurrence;
            l.loss_and_grad(&image)?;
            Ok(l.last.distinct_used)
        };
        let (plain, spread) = (distinct(0.0)?, distinct(0.05)?);
        assert!(spread > plain + plain / 2, "{plain} -> {spread}");
        Ok(())
    }

    /// Compares the layer's gradient with central differences at every 11th value; returns how
    /// many values it checked.
    fn check_against_differences(
        make: &dyn Fn() -> Result<MrfLayer>,
        style: &Tensor,
        noise: &Tensor,
    ) -> Result<usize> {
        let dev = Device::Cpu;
        let mut mrf = make()?;
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
        // The full grid reaches the last column, which the strided grid leaves to nothing.
        let last_col = (0..4 * 7).map(|r| g[r * 8 + 7].abs()).fold(0f32, f32::max);
        assert_eq!(
            last_col > 0.0,
            mrf.full_grid || mrf.wrap,
            "last column gradient {last_col}"
        );
        Ok(checked)
    }
}
