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
    /// chosen, then every query is matched again with row j's cosine lowered by `per_use` for
    /// each of its uses. Matchers that can keep the first pass's scores override this.
    fn best_spread(&self, queries: &Tensor, per_use: f32) -> Result<Matches> {
        let first = self.best(queries)?;
        let penalty = use_penalty(&first.index.to_vec1::<u32>()?, self.len(), per_use);
        self.best_penalised(queries, &penalty)
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

/// `per_use` times the number of times each of `len` bank rows appears in `index`.
pub fn use_penalty(index: &[u32], len: usize, per_use: f32) -> Vec<f32> {
    let mut penalty = vec![0f32; len];
    for &j in index {
        penalty[j as usize] += per_use;
    }
    penalty
}

/// Rows scaled to unit L2 norm (zero rows stay zero).
pub fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-8f32, f32::MAX)?;
    x.broadcast_div(&norm)
}
