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
    // SAFETY: the caller's promise, passed on (B row-major: element (p, j) at p*ldb + j).
    unsafe { gemm_strided(m, n, k, c, ldc, a, lda, b, ldb, 1) }
}

/// As [`gemm_rowmajor`], with B's element (p, j) at `b + p * b_row + j * b_col`, so that B
/// may be a transposed view (`b_row` 1, `b_col` its row stride).
///
/// # Safety
/// As [`gemm_rowmajor`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    b_row: usize,
    b_col: usize,
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
            b_col as isize,
            b_row as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Column blocks of [`gram`]: enough to keep 16 cores busy, few enough that their c x c partial
/// products stay small beside F.
const GRAM_BLOCKS: usize = 16;

/// `scale` F F^T (c x c, row-major) of a row-major c x n matrix F. The product's sides are
/// small and its depth long (relu1_1 at 384 px: 64 x 147,456), which a GEMM that splits its
/// output into blocks cannot share between cores: here column blocks of F are multiplied in
/// parallel and their partial products added.
pub(crate) fn gram(f: &[f32], c: usize, n: usize, scale: f32) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(
        f.len(),
        c * n,
        "gram: {} values for a {c} x {n} matrix",
        f.len()
    );
    if c == 0 || n == 0 {
        return vec![0.0; c * c];
    }
    // Up to GRAM_BLOCKS blocks, whatever the number of cores, so that the partial sums (and the
    // result's bits) do not depend on the machine; below a few hundred columns a block is not
    // worth a task.
    let block = n.div_ceil(GRAM_BLOCKS).max(512).min(n);
    (0..n.div_ceil(block))
        .into_par_iter()
        .map(|i| {
            let k0 = i * block;
            let depth = block.min(n - k0);
            let mut g = vec![0f32; c * c];
            // SAFETY: the left factor is rows 0..c, columns k0..k0+depth of F (row stride n), the
            // right one its transpose (element (k, j) at j*n + k); k0 + depth <= n and F holds
            // c*n values (asserted), so both lie inside `f`. `g` holds the c x c result and is
            // a separate allocation.
            unsafe {
                gemm_strided(
                    c,
                    c,
                    depth,
                    g.as_mut_ptr(),
                    c,
                    f.as_ptr().add(k0),
                    n,
                    f.as_ptr().add(k0),
                    1,
                    n,
                )
            };
            g
        })
        .collect::<Vec<_>>()
        .into_iter()
        // Summed in block order: rayon's reductions group by how the work was split, which
        // varies from run to run, and float sums with it.
        .reduce(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })
        .map(|mut g| {
            g.iter_mut().for_each(|x| *x *= scale);
            g
        })
        .unwrap_or_else(|| vec![0.0; c * c])
}

/// `scale` D F (c x n, row-major) for a row-major c x c matrix D and c x n matrix F, slabs of
/// rows in parallel.
pub(crate) fn square_times(d: &[f32], f: &[f32], c: usize, n: usize, scale: f32) -> Vec<f32> {
    assert_eq!(
        d.len(),
        c * c,
        "square_times: {} values for a {c} x {c} matrix",
        d.len()
    );
    assert_eq!(
        f.len(),
        c * n,
        "square_times: {} values for a {c} x {n} matrix",
        f.len()
    );
    if c == 0 || n == 0 {
        return vec![0.0; c * n];
    }
    // The scale goes into D (c x c), the small factor.
    let d: Vec<f32> = d.iter().map(|x| x * scale).collect();
    let rows = c.div_ceil(rayon::current_num_threads().max(1));
    let fill = |i: usize, out: &mut [std::mem::MaybeUninit<f32>]| {
        let r0 = i * rows;
        let m = out.len() / n;
        // SAFETY: `out` is rows r0..r0+m of the c x n result (m*n values); D's rows r0..r0+m lie
        // inside `d` (c*c values, asserted) and F is `f` (c*n values). `read_dst` is false, so
        // gemm writes every value of `out` without reading it.
        unsafe {
            gemm_rowmajor(
                m,
                n,
                c,
                out.as_mut_ptr() as *mut f32,
                n,
                d.as_ptr().add(r0 * c),
                c,
                f.as_ptr(),
                n,
            )
        }
    };
    // SAFETY: `fill` writes its whole chunk (see above).
    unsafe { par_filled(c * n, rows * n, fill) }
}

/// Runs `f` on the values of a contiguous f32 tensor on the CPU; `None` for any other tensor
/// (another device or type, or a strided view), which the caller then handles with candle ops.
pub(crate) fn with_host_f32<R>(t: &candle_core::Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(CpuStorage::F32(d)), Some((start, end))) => {
            Some(f(&d[start..end]))
        }
        _ => None,
    }
}
