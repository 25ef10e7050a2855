//! Exact normalised cross-correlation, GEMM-shaped and chunked.
//!
//! Scores of a chunk of queries against the whole normalised bank are one matrix product; the
//! chunk is sized so the score block never exceeds a memory budget, however large the image.

use candle_core::{DType, Result, Storage, Tensor, D};
use rayon::prelude::*;

use crate::cpu::ops::contiguous_f32;

use super::{normalize_rows, Matches, PatchMatcher, Spread};

pub struct ExactMatcher {
    /// Normalised bank, transposed: [D, M].
    bank_t: Tensor,
    len: usize,
    /// Largest score block held at once, in floats.
    budget: usize,
}

impl ExactMatcher {
    /// `bank` [M, D], raw (it is normalised here).
    pub fn new(bank: &Tensor, budget_floats: usize) -> Result<Self> {
        let len = bank.dim(0)?;
        let bank_t = normalize_rows(bank)?.t()?.contiguous()?;
        Ok(Self {
            bank_t,
            len,
            budget: budget_floats.max(len),
        })
    }
}

impl ExactMatcher {
    /// Multiplies each bank row's cosine by `weights[j]` (>= 0, [M]) when ranking, so that
    /// matches lean toward heavier rows; the reported score is the weighted one.
    pub fn with_row_weights(mut self, weights: &Tensor) -> Result<Self> {
        let w = weights.to_dtype(DType::F32)?.reshape((1, self.len))?;
        self.bank_t = self.bank_t.broadcast_mul(&w)?.contiguous()?;
        Ok(self)
    }
}

/// Most queries per task of the CPU path: enough that packing the bank (once per task) is
/// cheap next to the product, few enough that the scores stay in cache for the argmax.
const CPU_CHUNK: usize = 256;

impl ExactMatcher {
    /// The CPU path: each task multiplies a few queries by the bank and takes the argmax of
    /// their scores at once, so no score matrix is ever stored whole and every pass runs on
    /// all cores. Ties go to the lowest index, as on the GPU.
    fn best_cpu(
        &self,
        queries: &[f32],
        n: usize,
        dim: usize,
        bank_t: &[f32],
        penalty: Option<&[f32]>,
    ) -> (Vec<u32>, Vec<f32>) {
        let m = self.len;
        let mut index = vec![0u32; n];
        let mut score = vec![0f32; n];
        let threads = rayon::current_num_threads().max(1);
        // Score blocks held at once (one per core) stay within the budget.
        let cap = (self.budget / (m.max(1) * threads)).clamp(1, CPU_CHUNK);
        let chunk = n.div_ceil(2 * threads).clamp(16, CPU_CHUNK).min(cap);
        index
            .par_chunks_mut(chunk)
            .zip(score.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(t, (idx, sc))| {
                let rows = idx.len();
                let q = &queries[t * chunk * dim..][..rows * dim];
                let mut scores = vec![0f32; rows * m];
                score_block(q, dim, bank_t, m, &mut scores);
                for r in 0..rows {
                    let norm = row_norm(&q[r * dim..(r + 1) * dim]);
                    let row = &scores[r * m..(r + 1) * m];
                    let at = argmax_penalised(row, penalty, norm);
                    idx[r] = at as u32;
                    sc[r] = row[at] / norm;
                }
            });
        (index, score)
    }

    /// The CPU path of [`PatchMatcher::best_spread`] when all n x M scores fit the budget: one
    /// product, kept, ranked twice (plain, then penalised by the first ranking's use counts),
    /// which halves the cost of the two searches.
    fn best_spread_cpu(
        &self,
        queries: &[f32],
        n: usize,
        dim: usize,
        bank_t: &[f32],
        spread: Spread,
    ) -> (Vec<u32>, Vec<f32>) {
        let m = self.len;
        let threads = rayon::current_num_threads().max(1);
        let chunk = n.div_ceil(2 * threads).clamp(16, CPU_CHUNK);
        let mut scores = vec![0f32; n * m];
        scores
            .par_chunks_mut(chunk * m)
            .enumerate()
            .for_each(|(t, block)| {
                let rows = block.len() / m;
                let q = &queries[t * chunk * dim..][..rows * dim];
                score_block(q, dim, bank_t, m, block);
            });
        let norms: Vec<f32> = queries.par_chunks(dim).map(row_norm).collect();
        let rank = |penalty: Option<&[f32]>| -> Vec<u32> {
            scores
                .par_chunks(m)
                .zip(&norms)
                .map(|(row, &norm)| argmax_penalised(row, penalty, norm) as u32)
                .collect()
        };
        let penalty = spread.penalty(&rank(None), m);
        let index = rank(Some(&penalty));
        let score = index
            .iter()
            .enumerate()
            .map(|(r, &j)| scores[r * m + j as usize] / norms[r])
            .collect();
        (index, score)
    }
}

/// `out` (rows x m) = `q` (rows x dim) times `bank_t` (dim x m), all row-major.
fn score_block(q: &[f32], dim: usize, bank_t: &[f32], m: usize, out: &mut [f32]) {
    let rows = out.len() / m.max(1);
    assert!(
        q.len() >= rows * dim && bank_t.len() >= dim * m && out.len() >= rows * m,
        "score block shapes"
    );
    // SAFETY: the assert keeps q (rows x dim), bank_t (dim x m) and out (rows x m) in bounds;
    // out is a distinct, mutable slice.
    unsafe {
        crate::cpu::ops::gemm_rowmajor(
            rows,
            m,
            dim,
            out.as_mut_ptr(),
            m,
            q.as_ptr(),
            dim,
            bank_t.as_ptr(),
            m,
        );
    }
}

/// L2 norm of a query row, kept away from zero.
fn row_norm(q: &[f32]) -> f32 {
    q.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-8)
}

/// Index of the largest score (cosine times `norm`), each lowered by `penalty[j] * norm`; ties
/// go to the lowest index.
fn argmax_penalised(row: &[f32], penalty: Option<&[f32]>, norm: f32) -> usize {
    let (mut best, mut at) = (f32::NEG_INFINITY, 0usize);
    match penalty {
        // Scores are cosines times the query's norm: so is the penalty.
        Some(p) => {
            for (j, (&v, &pj)) in row.iter().zip(p).enumerate() {
                if v - pj * norm > best {
                    (best, at) = (v - pj * norm, j);
                }
            }
        }
        None => {
            for (j, &v) in row.iter().enumerate() {
                if v > best {
                    (best, at) = (v, j);
                }
            }
        }
    }
    at
}

impl ExactMatcher {
    /// Runs `f` on the CPU slices of `queries` [N, D] and the bank, when both are on the CPU.
    fn on_cpu(
        &self,
        queries: &Tensor,
        f: impl FnOnce(&[f32], usize, usize, &[f32]) -> (Vec<u32>, Vec<f32>),
    ) -> Result<Option<Matches>> {
        if !(queries.device().is_cpu() && self.bank_t.device().is_cpu() && self.len > 0) {
            return Ok(None);
        }
        let (n, dim) = queries.dims2()?;
        let q = queries.to_dtype(DType::F32)?.contiguous()?;
        let (qs, ql) = q.storage_and_layout();
        let (bs, bl) = self.bank_t.storage_and_layout();
        let (Storage::Cpu(qs), Storage::Cpu(bs)) = (&*qs, &*bs) else {
            return Ok(None);
        };
        let (index, score) = f(
            contiguous_f32(qs, ql, "matcher")?,
            n,
            dim,
            contiguous_f32(bs, bl, "matcher")?,
        );
        let index = Tensor::from_vec(index, n, queries.device())?;
        Ok(Some(Matches { index, score }))
    }

    fn search(&self, queries: &Tensor, penalty: Option<&[f32]>) -> Result<Matches> {
        let n = queries.dim(0)?;
        if let Some(found) = self.on_cpu(queries, |q, n, dim, b| {
            self.best_cpu(q, n, dim, b, penalty)
        })? {
            return Ok(found);
        }
        // The argmax over the bank does not depend on the query's norm: divide the n best
        // scores afterwards instead of normalising the whole query matrix.
        let q = queries;
        let norms: Vec<f32> = queries
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .flatten_all()?
            .to_vec1()?;
        let chunk = (self.budget / self.len.max(1)).clamp(1, n.max(1));
        let penalty = match penalty {
            Some(p) => Some(Tensor::from_slice(p, (1, self.len), q.device())?),
            None => None,
        };
        let mut index = Vec::new();
        let mut score = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let rows = chunk.min(n - start);
            let scores = q.narrow(0, start, rows)?.matmul(&self.bank_t)?;
            let ranked = match &penalty {
                // Scores are cosines times the query's norm: so is the penalty.
                Some(p) => {
                    let nrm =
                        Tensor::from_slice(&norms[start..start + rows], (rows, 1), q.device())?;
                    (&scores - nrm.broadcast_mul(p)?)?
                }
                None => scores.clone(),
            };
            let at = ranked.argmax(D::Minus1)?;
            score.extend(
                scores
                    .gather(&at.unsqueeze(1)?, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
            index.push(at);
            start += rows;
        }
        for (s, nrm) in score.iter_mut().zip(&norms) {
            *s /= nrm.max(1e-8);
        }
        let index = Tensor::cat(&index, 0)?.to_dtype(DType::U32)?;
        Ok(Matches { index, score })
    }
}

impl PatchMatcher for ExactMatcher {
    fn best(&self, queries: &Tensor) -> Result<Matches> {
        self.search(queries, None)
    }

    fn best_penalised(&self, queries: &Tensor, penalty: &[f32]) -> Result<Matches> {
        if penalty.len() != self.len {
            candle_core::bail!("{} penalties for a bank of {}", penalty.len(), self.len);
        }
        self.search(queries, Some(penalty))
    }

    fn best_spread(&self, queries: &Tensor, spread: Spread) -> Result<Matches> {
        let n = queries.dim(0)?;
        if n.saturating_mul(self.len) <= self.budget {
            if let Some(found) = self.on_cpu(queries, |q, n, dim, b| {
                self.best_spread_cpu(q, n, dim, b, spread)
            })? {
                return Ok(found);
            }
        }
        super::spread_by_two_searches(self, queries, spread)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn name(&self) -> &'static str {
        "exact"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finds_the_most_similar_direction_not_the_largest() -> Result<()> {
        let bank = Tensor::new(&[[10f32, 0.], [0., 1.], [1., 1.]], &Device::Cpu)?;
        let m = ExactMatcher::new(&bank, 2)?; // budget forces chunks of one query
        let q = Tensor::new(&[[0.1f32, 5.], [3., 0.2], [2., 2.1]], &Device::Cpu)?;
        let r = m.best(&q)?;
        assert_eq!(r.index.to_vec1::<u32>()?, vec![1, 0, 2]);
        assert!(r.score.iter().all(|&s| s > 0.9 && s <= 1.0 + 1e-6));
        Ok(())
    }

    /// A penalty on the best row moves the match to the next, and the score stays the plain
    /// cosine.
    #[test]
    fn penalty_tips_the_choice() -> Result<()> {
        let bank = Tensor::new(&[[1f32, 0.], [1., 0.2]], &Device::Cpu)?;
        let q = Tensor::new(&[[2f32, 0.1]], &Device::Cpu)?;
        let m = ExactMatcher::new(&bank, 16)?;
        assert_eq!(m.best(&q)?.index.to_vec1::<u32>()?, vec![0]);
        let r = m.best_penalised(&q, &[0.05, 0.0])?;
        assert_eq!(r.index.to_vec1::<u32>()?, vec![1]);
        let cos1 = (2.0 + 0.02) / (2f32.hypot(0.1) * 1f32.hypot(0.2));
        assert!((r.score[0] - cos1).abs() < 1e-5);
        assert!(m.best_penalised(&q, &[0.0]).is_err());
        Ok(())
    }

    #[test]
    fn row_weights_tip_the_choice() -> Result<()> {
        let bank = Tensor::new(&[[1f32, 0.], [1., 0.2]], &Device::Cpu)?;
        let q = Tensor::new(&[[1f32, 0.05]], &Device::Cpu)?;
        let plain = ExactMatcher::new(&bank, 16)?.best(&q)?;
        assert_eq!(plain.index.to_vec1::<u32>()?, vec![0]);
        let w = Tensor::new(&[0.9f32, 1.0], &Device::Cpu)?;
        let biased = ExactMatcher::new(&bank, 16)?
            .with_row_weights(&w)?
            .best(&q)?;
        assert_eq!(biased.index.to_vec1::<u32>()?, vec![1]);
        Ok(())
    }
    /// Keeping the scores (budget large enough) ranks exactly as two full searches do.
    #[test]
    fn spread_with_kept_scores_matches_two_searches() -> Result<()> {
        let dev = Device::Cpu;
        let noise = |n: usize, seed: u64| -> Vec<f32> {
            crate::feedforward::generator::normal_noise(n, seed)
        };
        let (n, m, d) = (300, 90, 12);
        let bank = Tensor::from_vec(noise(m * d, 1), (m, d), &dev)?;
        // Queries crowd near a few bank rows, so the plain search reuses them.
        let base = bank.narrow(0, 0, 3)?.repeat((100, 1))?;
        let q = (base + Tensor::from_vec(noise(n * d, 2), (n, d), &dev)? * 0.3)?;
        let kept = ExactMatcher::new(&bank, n * m)?;
        let chunked = ExactMatcher::new(&bank, m)?;
        let spread = Spread {
            per_use: 0.02,
            share: n as f32 / m as f32,
        };
        let a = kept.best_spread(&q, spread)?;
        let first = chunked.best(&q)?;
        let penalty = spread.penalty(&first.index.to_vec1::<u32>()?, m);
        let b = chunked.best_penalised(&q, &penalty)?;
        assert_eq!(a.index.to_vec1::<u32>()?, b.index.to_vec1::<u32>()?);
        for (x, y) in a.score.iter().zip(&b.score) {
            assert!((x - y).abs() < 1e-5);
        }
        let distinct = |v: Vec<u32>| v.into_iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct(a.index.to_vec1()?) > distinct(first.index.to_vec1()?));
        Ok(())
    }
}
