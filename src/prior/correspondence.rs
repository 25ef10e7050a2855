//! The guided correspondence prior (Zhou et al., CVPR 2023), without guidance channels: a
//! contextual soft assignment of every synthesis patch to the sample's patches.
//!
//! Per layer, with queries q_i (k x k patches of the image being made) and sample patches p_j,
//! both centred on the mean sample patch mu:
//!
//! - distance `d_ij = (1 - cos(q_i - mu, p_j - mu)) / 2`, plus an occurrence penalty
//!   `lambda * n_j / omega`, where n_j counts the queries whose nearest patch is j and
//!   omega = N / M is the count a uniform use would give (a patch used more than its share
//!   costs more, so one region of the sample cannot take over the output);
//! - relative distance `d_ij / min_j d_ij`, affinity `exp((1 - d_ij / min_j d_ij) / h)`,
//!   normalised over j; the loss of a query is `-log` of its largest normalised affinity.
//!
//! Unlike CNNMRF's hard nearest neighbour, every near match pulls on a query, weighted by how
//! much closer the best one is: a query between two good matches is not snapped to either.
//! The loss is summed over queries (scaled up when only a random subset is drawn), so that its
//! balance with the total-variation term does not change with the image size.

use candle_core::{DType, Result, Tensor};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::mrf::MrfStats;
use super::patches::{fold_grid, fold_overhang, unfold_grid, wrap_pad, Grid};
use super::{LayerLoss, LayerPrior};
use crate::vgg::LayerId;

/// Floor of the smallest distance in the relative distance: a query that equals a sample patch
/// (d = 0) would otherwise divide by zero. In cosine terms, 1 - 2e-5.
const MIN_DISTANCE: f32 = 1e-5;

/// How the soft assignment is computed (shared by every layer).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Assignment {
    /// Bandwidth h of the affinities (the paper's 0.5).
    pub bandwidth: f32,
    /// Occurrence penalty weight lambda (the paper's 0.05; 0 turns it off).
    pub occurrence: f32,
    /// Only the k nearest sample patches of a query share its assignment (0: all of them).
    pub top_k: usize,
}

impl Default for Assignment {
    fn default() -> Self {
        Assignment {
            bandwidth: 0.5,
            occurrence: 0.05,
            top_k: 0,
        }
    }
}

pub struct CorrespondenceLayer {
    pub layer: LayerId,
    pub weight: f64,
    pub patch: usize,
    pub stride: usize,
    /// Patch grids also take the last row and column of starts, so that no border row goes
    /// without a gradient (and keeps its start's noise).
    pub full_grid: bool,
    pub assignment: Assignment,
    /// Most queries drawn (at random, anew at each evaluation) per layer; 0: all of them.
    pub max_queries: usize,
    /// The image being made wraps around (seamless tiles): patches cross its edges.
    pub wrap: bool,
    /// Mean sample patch [1, D].
    mean: Tensor,
    /// Centred, unit sample patches [M, D] and their transpose.
    unit: Tensor,
    unit_t: Tensor,
    /// `unit` on the host, for the sparse product of a top-k assignment on the CPU.
    unit_host: Option<Vec<f32>>,
    rng: ChaCha8Rng,
    pub last: MrfStats,
}

impl CorrespondenceLayer {
    /// `bank` [M, D]: the sample's raw patches at this layer.
    pub fn new(
        layer: LayerId,
        bank: &Tensor,
        weight: f64,
        patch: usize,
        stride: usize,
        assignment: Assignment,
        seed: u64,
    ) -> Result<Self> {
        let bank = bank.to_dtype(DType::F32)?;
        let mean = bank.mean_keepdim(0)?;
        let unit = unit_rows(&bank.broadcast_sub(&mean)?)?.0;
        Ok(Self {
            layer,
            weight,
            patch,
            stride,
            full_grid: false,
            assignment,
            max_queries: 0,
            wrap: false,
            mean,
            unit_t: unit.t()?.contiguous()?,
            unit_host: None,
            unit,
            rng: ChaCha8Rng::seed_from_u64(seed ^ (layer.index() as u64).wrapping_mul(0x9E37)),
            last: MrfStats::default(),
        })
    }

    pub fn bank_size(&self) -> usize {
        self.unit.dim(0).unwrap_or(0)
    }

    /// Loss and gradient for features `f` [1, C, H, W].
    pub fn loss_and_grad(&mut self, f: &Tensor) -> Result<(f64, Tensor)> {
        let (_, c, h, w) = f.dims4()?;
        let dev = f.device().clone();
        let f = f.squeeze(0)?;
        let k = self.patch;
        let map = if self.wrap {
            wrap_pad(&f, k - 1)?
        } else {
            f.clone()
        };
        let (_, hb, wb) = map.dims3()?;
        let grid = Grid::new(hb, wb, k, self.stride, self.full_grid && !self.wrap);
        let all = unfold_grid(&map, k, self.stride, &grid)?;
        let n_all = all.dim(0)?;
        let picked = if self.max_queries > 0 && n_all > self.max_queries {
            let rows: Vec<u32> = sample(&mut self.rng, n_all, self.max_queries)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            Some(Tensor::from_vec(rows, self.max_queries, &dev)?)
        } else {
            None
        };
        let queries = match &picked {
            Some(rows) => all.index_select(rows, 0)?,
            None => all,
        };
        let n = queries.dim(0)?;
        let m = self.bank_size();
        let (unit_q, norms) = unit_rows(&queries.broadcast_sub(&self.mean)?)?;
        let sim: Vec<f32> = unit_q.matmul(&self.unit_t)?.flatten_all()?.to_vec1()?;
        let soft = assign(&sim, n, m, self.assignment);

        // Sum over all queries: the drawn ones stand for the rest.
        let scale = self.weight * n_all as f64 / n as f64;
        // Back through the matrix product, then through q -> (q - mu) / |q - mu|. A top-k
        // assignment has k non-zeros per row: on the CPU, add up those rows of the bank only.
        let g_unit = if dev.is_cpu() && self.assignment.top_k > 0 && self.assignment.top_k < m {
            let unit = match &self.unit_host {
                Some(u) => u,
                None => self.unit_host.insert(self.unit.flatten_all()?.to_vec1()?),
            };
            let dim = unit.len() / m.max(1);
            let mut out = vec![0f32; n * dim];
            out.par_chunks_mut(dim)
                .zip(soft.d_sim.par_chunks(m))
                .for_each(|(o, g)| {
                    for (j, &gj) in g.iter().enumerate().filter(|(_, &v)| v != 0.0) {
                        let gj = gj * scale as f32;
                        for (o, u) in o.iter_mut().zip(&unit[j * dim..(j + 1) * dim]) {
                            *o += gj * u;
                        }
                    }
                });
            Tensor::from_vec(out, (n, dim), &dev)?
        } else {
            Tensor::from_vec(soft.d_sim, (n, m), &dev)?
                .affine(scale, 0.0)?
                .matmul(&self.unit)?
        };
        let radial = (&g_unit * &unit_q)?.sum_keepdim(1)?;
        let g_q = (g_unit - unit_q.broadcast_mul(&radial)?)?.broadcast_div(&norms)?;
        let g_all = match picked {
            Some(rows) => {
                Tensor::zeros((n_all, g_q.dim(1)?), DType::F32, &dev)?.index_add(&rows, &g_q, 0)?
            }
            None => g_q,
        };
        let channels = map.dim(0)?;
        let mut grad = fold_grid(&g_all, channels, hb, wb, k, self.stride, &grid)?;
        if self.wrap {
            grad = fold_overhang(&grad, h, w, k)?;
        }
        debug_assert_eq!(grad.dims3()?, (c, h, w));

        let mut used = soft.best;
        used.sort_unstable();
        used.dedup();
        self.last = MrfStats {
            mean_score: soft.best_sim_sum / n.max(1) as f32,
            distinct_used: used.len(),
            bank_size: m,
            share_per_style: Vec::new(),
        };
        Ok((scale * soft.loss_sum, grad.unsqueeze(0)?))
    }
}

/// Rows scaled to unit length, and their lengths [N, 1] (floored at 1e-8).
fn unit_rows(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let norms = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-8f32, f32::MAX)?;
    Ok((x.broadcast_div(&norms)?, norms))
}

/// The soft assignment of `n` queries over `m` sample patches, from their cosines `sim`
/// [n * m], row-major.
struct Soft {
    /// Sum over queries of -log(largest normalised affinity).
    loss_sum: f64,
    /// Gradient of `loss_sum` with respect to each cosine [n * m].
    d_sim: Vec<f32>,
    /// Each query's assigned patch (the nearest after the occurrence penalty).
    best: Vec<u32>,
    /// Sum of the cosines of those patches.
    best_sim_sum: f32,
}

fn assign(sim: &[f32], n: usize, m: usize, a: Assignment) -> Soft {
    let distance = |s: f32| ((1.0 - s) * 0.5).max(0.0);
    // Occurrences count each query's nearest patch before any penalty (as the paper does).
    let mut penalty = vec![0f32; m];
    if a.occurrence > 0.0 && m > 0 {
        let nearest: Vec<usize> = sim
            .par_chunks(m)
            .map(|row| argmax(row.iter().copied()))
            .collect();
        let omega = n as f32 / m as f32;
        for j in nearest {
            penalty[j] += a.occurrence / omega;
        }
    }
    let h = a.bandwidth;
    let mut d_sim = vec![0f32; n * m];
    let per_row: Vec<(f64, u32, f32)> = sim
        .par_chunks(m)
        .zip(d_sim.par_chunks_mut(m))
        .map(|(row, grad)| {
            let d = |j: usize| distance(row[j]) + penalty[j];
            let mut cands: Vec<u32> = (0..m as u32).collect();
            if a.top_k > 0 && a.top_k < m {
                cands.select_nth_unstable_by(a.top_k - 1, |&x, &y| {
                    d(x as usize).total_cmp(&d(y as usize))
                });
                cands.truncate(a.top_k);
            }
            let best = cands
                .iter()
                .copied()
                .min_by(|&x, &y| d(x as usize).total_cmp(&d(y as usize)))
                .unwrap_or(0) as usize;
            let denom = d(best).max(MIN_DISTANCE);
            // Affinities relative to the best one's, which is exp((1 - d*/denom)/h) <= 1.
            let logit = |j: usize| (1.0 - d(j) / denom) / h;
            let top = logit(best);
            let mut z = 0f64;
            for &j in &cands {
                z += ((logit(j as usize) - top) as f64).exp();
            }
            // dL/dd_j = -s_j / (h denom) for every candidate; the best one also moves denom.
            let mut through_denom = 0f64;
            for &j in &cands {
                let j = j as usize;
                let s = ((logit(j) - top) as f64).exp() / z;
                through_denom += s * d(j) as f64;
                grad[j] = (-s / (h * denom) as f64) as f32;
            }
            if d(best) > MIN_DISTANCE {
                grad[best] += (through_denom / (h as f64 * (denom as f64).powi(2))) as f32;
            }
            // d = (1 - sim) / 2 where positive: dd/dsim = -1/2.
            for &j in &cands {
                let j = j as usize;
                grad[j] *= if row[j] < 1.0 { -0.5 } else { 0.0 };
            }
            (z.ln(), best as u32, row[best])
        })
        .collect();
    Soft {
        loss_sum: per_row.iter().map(|r| r.0).sum(),
        best: per_row.iter().map(|r| r.1).collect(),
        best_sim_sum: per_row.iter().map(|r| r.2).sum(),
        d_sim,
    }
}

fn argmax(values: impl Iterator<Item = f32>) -> usize {
    let (mut best, mut at) = (f32::NEG_INFINITY, 0);
    for (j, v) in values.enumerate() {
        if v > best {
            (best, at) = (v, j);
        }
    }
    at
}

impl LayerLoss for CorrespondenceLayer {
    const NAME: &'static str = "gc";
    fn layer(&self) -> LayerId {
        self.layer
    }
    fn loss_and_grad(&mut self, f: &Tensor) -> Result<(f64, Tensor)> {
        CorrespondenceLayer::loss_and_grad(self, f)
    }
    fn set_wrap(&mut self, wrap: bool) {
        self.wrap = wrap;
    }
    fn stats(&self) -> MrfStats {
        self.last.clone()
    }
}

/// The guided correspondence prior over several layers.
pub type CorrespondencePrior = LayerPrior<CorrespondenceLayer>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::patches::unfold;
    use candle_core::Device;

    use crate::prior::pseudo_random as pseudo;

    /// The closed-form gradient agrees with central differences (the assignment's argmins and
    /// occurrence counts are held by small steps), with and without the occurrence penalty and
    /// the top-k restriction, wrapped and not, on the strided and the full grid.
    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let style = Tensor::from_vec(pseudo(3 * 10 * 10, 1), (3, 10, 10), &dev)?;
        let bank = unfold(&style, 3, 1)?;
        let layer: LayerId = "relu3_1".parse().unwrap();
        let x = Tensor::from_vec(pseudo(3 * 8 * 9, 2), (1, 3, 8, 9), &dev)?;
        let base: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for (occurrence, top_k, wrap, full_grid) in [
            (0.0, 0, false, false),
            (0.05, 0, false, true),
            (0.05, 5, true, false),
        ] {
            let a = Assignment {
                bandwidth: 0.5,
                occurrence,
                top_k,
            };
            let make = || -> Result<CorrespondenceLayer> {
                let mut l = CorrespondenceLayer::new(layer, &bank, 0.7, 3, 2, a, 0)?;
                l.wrap = wrap;
                l.full_grid = full_grid;
                Ok(l)
            };
            let (_, g) = make()?.loss_and_grad(&x)?;
            let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
            let eps = 1e-3f32;
            let mut checked = 0;
            for i in (0..base.len()).step_by(7) {
                let eval = |delta: f32| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += delta;
                    make()?
                        .loss_and_grad(&Tensor::from_vec(v, (1, 3, 8, 9), &dev)?)
                        .map(|r| r.0)
                };
                let fd = (eval(eps)? - eval(-eps)?) / (2.0 * eps as f64);
                assert!(
                    (fd - g[i] as f64).abs() < 3e-2 * (fd.abs() + 1e-1),
                    "occ {occurrence} top {top_k} wrap {wrap} i={i}: fd {fd} vs {}",
                    g[i]
                );
                checked += 1;
            }
            assert!(checked > 20);
            assert!(g.iter().any(|v| v.abs() > 1e-3), "gradient is all but zero");
        }
        Ok(())
    }

    /// The occurrence penalty spreads the assignment: queries that all sit nearest one sample
    /// patch are, with the penalty, assigned to more distinct patches.
    #[test]
    fn occurrence_penalty_spreads_use() {
        // 6 queries, 3 patches; every query is nearest patch 0, patch 1 is almost as near.
        let row = [0.95f32, 0.94, 0.2];
        let sim: Vec<f32> = row.iter().copied().cycle().take(18).collect();
        let plain = assign(
            &sim,
            6,
            3,
            Assignment {
                occurrence: 0.0,
                ..Assignment::default()
            },
        );
        let penalised = assign(&sim, 6, 3, Assignment::default());
        assert!(plain.best.iter().all(|&b| b == 0));
        assert!(
            penalised.best.iter().all(|&b| b == 1),
            "{:?}",
            penalised.best
        );
    }

    /// Drawing a subset of queries keeps the loss an estimate of the full sum.
    #[test]
    fn drawn_queries_estimate_the_full_loss() -> Result<()> {
        let dev = Device::Cpu;
        let style = Tensor::from_vec(pseudo(3 * 12 * 12, 3), (3, 12, 12), &dev)?;
        let bank = unfold(&style, 3, 1)?;
        let layer: LayerId = "relu2_1".parse().unwrap();
        let x = Tensor::from_vec(pseudo(3 * 20 * 20, 4), (1, 3, 20, 20), &dev)?;
        let a = Assignment {
            occurrence: 0.0,
            ..Assignment::default()
        };
        let mut full = CorrespondenceLayer::new(layer, &bank, 1.0, 3, 1, a, 0)?;
        let (exact, _) = full.loss_and_grad(&x)?;
        let mut drawn = CorrespondenceLayer::new(layer, &bank, 1.0, 3, 1, a, 0)?;
        drawn.max_queries = 100;
        let mean: f64 = (0..20)
            .map(|_| drawn.loss_and_grad(&x).map(|r| r.0))
            .sum::<Result<f64>>()?
            / 20.0;
        assert!((mean / exact - 1.0).abs() < 0.05, "{mean} vs {exact}");
        Ok(())
    }
}
