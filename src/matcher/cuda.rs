//! Exact NCC matching on the GPU with our fused kernel (kernels/ncc_argmax.cu): the same
//! answers as [`super::ExactMatcher`] without its N x M score blocks.

use candle_core::{DType, Result, Tensor};

use super::{Matches, PatchMatcher};
use crate::cuda::ncc::{NccBest, NormalizeRows};

pub struct CudaMatcher {
    /// Normalised bank [M, D] on the GPU, in f32, f16 or bf16.
    bank: Tensor,
    len: usize,
}

impl CudaMatcher {
    /// `bank` [M, D], raw, on a CUDA device; it is normalised and stored as `dtype`.
    pub fn new(bank: &Tensor, dtype: DType) -> Result<Self> {
        if !bank.device().is_cuda() {
            candle_core::bail!("the CUDA matcher needs its patch bank on a CUDA device");
        }
        let bank = bank
            .to_dtype(DType::F32)?
            .contiguous()?
            .apply_op1_no_bwd(&NormalizeRows(dtype))?;
        Ok(Self {
            len: bank.dim(0)?,
            bank,
        })
    }

    /// As [`super::ExactMatcher::with_row_weights`]: row j's cosine counts `weights[j]` times.
    pub fn with_row_weights(mut self, weights: &Tensor) -> Result<Self> {
        let w = weights.to_dtype(DType::F32)?.reshape((self.len, 1))?;
        let dtype = self.bank.dtype();
        self.bank = self
            .bank
            .to_dtype(DType::F32)?
            .broadcast_mul(&w)?
            .to_dtype(dtype)?;
        Ok(self)
    }

    pub fn dtype(&self) -> DType {
        self.bank.dtype()
    }
}

impl PatchMatcher for CudaMatcher {
    fn best(&self, queries: &Tensor) -> Result<Matches> {
        let q = queries.to_dtype(DType::F32)?.contiguous()?;
        let out = q.apply_op2_no_bwd(&self.bank, &NccBest)?;
        let index = out.get(0)?;
        let score = out
            .get(1)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(f32::from_bits)
            .collect();
        Ok(Matches { index, score })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn name(&self) -> &'static str {
        "cuda"
    }
}
