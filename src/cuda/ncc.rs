//! Nearest normalised patch on the GPU: bank normalisation and the fused score-and-argmax
//! kernel, which never holds the N x M score matrix.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape,
};

use super::{contiguous_range, int, ncc_function};

/// Queries per block and bank rows per tile in kernels/ncc_argmax.cu.
const TILE: usize = 128;
/// Enough blocks to fill an H100/H200 a few times over; the bank is split across grid.y to get there.
const TARGET_BLOCKS: usize = 512;

fn kernel_suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => candle_core::bail!("patch bank of dtype {other:?}: use f32, f16 or bf16"),
    }
}

/// F32 [M, D] -> rows of unit L2 norm, stored as `dtype` (f32, f16 or bf16).
pub struct NormalizeRows(pub DType);

impl CustomOp1 for NormalizeRows {
    fn name(&self) -> &'static str {
        "mrfsynth-normalize-rows"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("normalize-rows kernel: CUDA devices only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (rows, d) = l.shape().dims2()?;
        let dev = s.device().clone();
        let x = s
            .as_cuda_slice::<f32>()?
            .slice(contiguous_range(l, "normalize-rows")?);
        let storage = match self.0 {
            DType::F32 => normalize_into::<f32>(&dev, &x, rows, d, "normalize_rows_f32")?,
            DType::F16 => normalize_into::<half::f16>(&dev, &x, rows, d, "normalize_rows_f16")?,
            DType::BF16 => normalize_into::<half::bf16>(&dev, &x, rows, d, "normalize_rows_bf16")?,
            other => candle_core::bail!("normalize-rows: no {other:?} output"),
        };
        Ok((storage, Shape::from((rows, d))))
    }
}

fn normalize_into<T: CudaDType + DeviceRepr>(
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    rows: usize,
    d: usize,
    kernel: &str,
) -> Result<CudaStorage> {
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<T>(rows * d)? };
    if rows > 0 {
        let func = ncc_function(dev, kernel)?;
        let (r, dd) = (int(rows, "bank rows")?, int(d, "patch length")?);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(x).arg(&out).arg(&r).arg(&dd);
        // SAFETY: argument types and counts match the kernel's signature.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// (queries F32 [N, D], normalised bank [M, D] in f32/f16/bf16) -> U32 [2, N]: row 0 the best
/// bank index of each query, row 1 the cosine score's f32 bits.
pub struct NccBest;

impl CustomOp2 for NccBest {
    fn name(&self) -> &'static str {
        "mrfsynth-ncc-best"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("ncc-best kernel: CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        qs: &CudaStorage,
        ql: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, d) = ql.shape().dims2()?;
        let (m, bd) = bl.shape().dims2()?;
        if d != bd {
            candle_core::bail!("ncc-best: queries have {d} values per patch, the bank {bd}");
        }
        if m == 0 {
            candle_core::bail!("ncc-best: empty patch bank");
        }
        // The finishing kernels run one warp per query and number their threads in 32 bits.
        if n > (u32::MAX / 32) as usize {
            candle_core::bail!("ncc-best: {n} queries, more than one call takes");
        }
        let dev = qs.device().clone();
        let q = qs
            .as_cuda_slice::<f32>()?
            .slice(contiguous_range(ql, "ncc-best queries")?);
        let best = dev.alloc_zeros::<u64>(n.max(1))?;
        // SAFETY: the finishing kernel writes all 2n values.
        let out = unsafe { dev.alloc::<u32>(2 * n.max(1))? };
        if n > 0 {
            let range = contiguous_range(bl, "ncc-best bank")?;
            let (ni, di) = (int(n, "queries")?, int(d, "patch length")?);
            let stream = dev.cuda_stream();
            let per_warp = LaunchConfig {
                grid_dim: ((n * 32).div_ceil(256) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let search = BestSearch {
                dev: &dev,
                q: &q,
                bank: bs,
                range,
                best: &best,
                n,
                m,
                d,
            };
            if bs.dtype() == DType::F32 {
                // f32 on the CUDA cores; the scores are divided by the query norms at the end.
                search.launch::<f32>("ncc_best_f32", None)?;
                let func = ncc_function(&dev, "ncc_finish_all")?;
                let mut b = stream.launch_builder(&func);
                b.arg(&q).arg(&best).arg(&out).arg(&ni).arg(&di);
                // SAFETY: argument types and counts match the kernel's signature.
                unsafe { b.launch(per_warp) }.w()?;
            } else {
                // Half banks on the tensor cores, with queries scaled to unit norm on the way in.
                // SAFETY: the kernel writes all n values.
                let inv = unsafe { dev.alloc::<f32>(n)? };
                let func = ncc_function(&dev, "query_inv_norms")?;
                let mut b = stream.launch_builder(&func);
                b.arg(&q).arg(&inv).arg(&ni).arg(&di);
                // SAFETY: argument types and counts match the kernel's signature.
                unsafe { b.launch(per_warp) }.w()?;
                let inv = Some(inv.slice(..));
                let kernel = format!("ncc_best_tc_{}", kernel_suffix(bs.dtype())?);
                match bs.dtype() {
                    DType::F16 => search.launch::<half::f16>(&kernel, inv.as_ref())?,
                    DType::BF16 => search.launch::<half::bf16>(&kernel, inv.as_ref())?,
                    _ => unreachable!("kernel_suffix accepted the dtype"),
                }
                let func = ncc_function(&dev, "ncc_finish_cosine")?;
                let mut b = stream.launch_builder(&func);
                b.arg(&best).arg(&out).arg(&ni);
                // SAFETY: argument types and counts match the kernel's signature.
                unsafe { b.launch(super::elementwise_config(n)) }.w()?;
            }
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((2, n))))
    }
}

/// One launch of a best-match kernel over a (query, bank) pair: the arguments every variant shares.
struct BestSearch<'a> {
    dev: &'a CudaDevice,
    q: &'a CudaView<'a, f32>,
    bank: &'a CudaStorage,
    range: std::ops::Range<usize>,
    best: &'a CudaSlice<u64>,
    n: usize,
    m: usize,
    d: usize,
}

impl BestSearch<'_> {
    /// Launches `kernel` with the bank read as `T`; the tensor-core kernels also take the
    /// queries' inverse norms.
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        kernel: &str,
        inv_norm: Option<&CudaView<'_, f32>>,
    ) -> Result<()> {
        let BestSearch {
            dev,
            q,
            bank,
            best,
            n,
            m,
            d,
            ..
        } = *self;
        let bank = bank.as_cuda_slice::<T>()?.slice(self.range.clone());
        let func = ncc_function(dev, kernel)?;
        let query_blocks = n.div_ceil(TILE);
        let bank_tiles = m.div_ceil(TILE);
        let split = TARGET_BLOCKS.div_ceil(query_blocks).clamp(1, bank_tiles);
        let cfg = LaunchConfig {
            grid_dim: (query_blocks as u32, split as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (ni, mi, di) = (
            int(n, "queries")?,
            int(m, "bank rows")?,
            int(d, "patch length")?,
        );
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(q);
        if let Some(inv) = inv_norm {
            b.arg(inv);
        }
        b.arg(&bank).arg(best).arg(&ni).arg(&mi).arg(&di);
        // SAFETY: argument types and counts match the kernel's signature.
        unsafe { b.launch(cfg) }.w()?;
        Ok(())
    }
}
