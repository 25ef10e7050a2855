//! Small helpers for our CPU custom ops.

use candle_core::{CpuStorage, Layout, Result};

/// The f32 data of a contiguous CPU tensor, as a slice.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((start, end))) => Ok(&d[start..end]),
        _ => candle_core::bail!("{op}: contiguous f32 input expected"),
    }
}

/// A vector of `len` floats made chunk by chunk in parallel, without zeroing it first (the
/// zeroing pass cost as much as a light layer): `fill(i, chunk)` gets chunk i (of `chunk`
/// values; the last may be shorter) and must write every value of it.
///
/// # Safety
/// `fill` must initialise its whole chunk (every element written through `MaybeUninit::write`
/// or an equivalent) before it returns.
pub(crate) unsafe fn par_filled(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the capacity is `len`, and every chunk of the first `len` values was initialised
    // by `fill` (the caller's promise).
    unsafe { v.set_len(len) };
    v
}

/// The chunk as initialised floats.
///
/// # Safety
/// Every element must have been written.
pub(crate) unsafe fn assume_init(c: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and every element is initialised
    // (the caller's promise); the borrow is passed on.
    unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// C (m x n, row stride `ldc`) = A (m x k, row stride `lda`) B (k x n, row stride `ldb`), f32,
/// row-major, on the calling thread (callers split work over the cores themselves).
///
/// # Safety
/// The three matrices must lie inside their allocations, and C must not overlap A or B.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_rowmajor(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
) {
    // SAFETY: the caller's promise: the matrices lie in their allocations, C apart from A and
    // B (C is written, not read: `read_dst` is false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            false,
            a,
            1,
            lda as isize,
            b,
            1,
            ldb as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
