//! Nearest-patch search: a bank of style patches in, best index and score per query out.
//!
//! The MRF prior only sees this trait, so a GPU kernel or an approximate search can replace the
//! exact one without touching the optimiser.

pub mod approx;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod exact;

use candle_core::{Result, Tensor};

pub use approx::{ApproxMatcher, ApproxOptions};
#[cfg(feature = "cuda")]
pub use cuda::CudaMatcher;
pub use exact::ExactMatcher;

/// Best style patch for every query patch.
#[derive(Debug, Clone)]
pub struct Matches {
    /// Index into the bank, U32 [N], on the bank's device.
    pub index: Tensor,
    /// Normalised cross-correlation (cosine) of the query with its match, [N].
    pub score: Vec<f32>,
}

pub trait PatchMatcher: Send + Sync {
    /// `queries` [N, D]: for each row, the bank row of highest cosine similarity.
    fn best(&self, queries: &Tensor) -> Result<Matches>;
    /// As [`best`](Self::best), ranking bank row j by its cosine minus `penalty[j]` (an
    /// occurrence penalty); the reported score is the plain cosine of the chosen row.
    fn best_penalised(&self, queries: &Tensor, penalty: &[f32]) -> Result<Matches> {
        let _ = (queries, penalty);
        candle_core::bail!("the {} matcher does not take penalties", self.name())
    }
    /// Matches with an occurrence penalty: a plain search counts how often each bank row is
    /// chosen, then every query is matched again with each row's cosine lowered by its
    /// [`Spread::penalty`]. Matchers that can keep the first pass's scores override this.
    fn best_spread(&self, queries: &Tensor, spread: Spread) -> Result<Matches> {
        spread_by_two_searches(self, queries, spread)
    }
    /// Number of patches in the bank.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn name(&self) -> &'static str;
}

/// The exact matcher for the bank's device: our fused kernel on a GPU (bank stored as
/// `gpu_dtype`), chunked f32 GEMMs elsewhere; with `row_weights` [M], row j's cosine is
/// multiplied by its weight when ranking.
pub fn exact_for(
    bank: &Tensor,
    budget_floats: usize,
    gpu_dtype: candle_core::DType,
    row_weights: Option<&Tensor>,
) -> Result<Box<dyn PatchMatcher>> {
    #[cfg(feature = "cuda")]
    if bank.device().is_cuda() {
        let m = CudaMatcher::new(bank, gpu_dtype)?;
        return Ok(Box::new(match row_weights {
            Some(w) => m.with_row_weights(w)?,
            None => m,
        }));
    }
    let _ = gpu_dtype;
    let m = ExactMatcher::new(bank, budget_floats)?;
    Ok(Box::new(match row_weights {
        Some(w) => m.with_row_weights(w)?,
        None => m,
    }))
}

/// An occurrence penalty on bank rows used beyond their share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Cosine taken off a row for each use beyond its share.
    pub per_use: f32,
    /// Uses a row has for free: queries / bank rows, its share if all were used alike.
    pub share: f32,
}

impl Spread {
    /// Each of `len` bank rows' penalty, given the rows `index` chose: `per_use` times its uses
    /// beyond the share. Only excess use costs: with fewer queries than rows (share below 1) a
    /// penalty on every use would push each query off the very row it matched best.
    pub fn penalty(&self, index: &[u32], len: usize) -> Vec<f32> {
        let mut uses = vec![0u32; len];
        for &j in index {
            uses[j as usize] += 1;
        }
        uses.iter()
            .map(|&n| self.per_use * (n as f32 - self.share).max(0.0))
            .collect()
    }
}

/// [`PatchMatcher::best_spread`] as two full searches: plain, then penalised by its use counts.
fn spread_by_two_searches<M: PatchMatcher + ?Sized>(
    matcher: &M,
    queries: &Tensor,
    spread: Spread,
) -> Result<Matches> {
    let first = matcher.best(queries)?;
    let penalty = spread.penalty(&first.index.to_vec1::<u32>()?, matcher.len());
    matcher.best_penalised(queries, &penalty)
}

/// Rows scaled to unit L2 norm (zero rows stay zero).
pub fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-8f32, f32::MAX)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod spread_tests {
    use super::Spread;

    /// Only uses beyond the share cost: with fewer queries than patches (share below 1) a patch
    /// used once stays free, so no query is pushed off its own best match.
    #[test]
    fn only_excess_use_is_penalised() {
        let s = Spread {
            per_use: 0.5,
            share: 0.75,
        };
        let p = s.penalty(&[0, 2, 2, 2], 4);
        assert_eq!(p[1], 0.0);
        assert_eq!(p[3], 0.0);
        assert!((p[0] - 0.125).abs() < 1e-6, "{p:?}");
        assert!((p[2] - 1.125).abs() < 1e-6, "{p:?}");
        let wide = Spread {
            per_use: 0.5,
            share: 2.0,
        };
        assert_eq!(wide.penalty(&[0, 0, 1], 2), vec![0.0, 0.0]);
    }
}
