//! Cutting feature maps into k x k patches and putting patch gradients back.
//!
//! Written with plain tensor ops (narrow, pad, reshape) so it runs on any candle device.
//! A patch vector is laid out channel-major: element `c * k*k + ky * k + kx`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub use super::grid::{positions, Grid};
use crate::cpu::ops::contiguous_f32;

impl Grid {
    /// Row of each patch in the stride-1 grid of a map `w` wide.
    fn dense_rows(&self, w: usize, k: usize) -> Vec<u32> {
        let pw1 = positions(w, k, 1);
        (0..self.len())
            .map(|n| {
                let (y, x) = self.corner(n);
                (y * pw1 + x) as u32
            })
            .collect()
    }

    /// How many patches cover each position of an `h` x `w` map [h*w].
    pub fn coverage(&self, h: usize, w: usize, k: usize) -> Vec<f32> {
        let mut cnt = vec![0f32; h * w];
        for &y in &self.ys {
            for &x in &self.xs {
                for ky in 0..k {
                    for v in &mut cnt[(y + ky) * w + x..][..k] {
                        *v += 1.0;
                    }
                }
            }
        }
        cnt
    }
}

/// Every `stride`-th element of dim `dim`, starting at 0, `count` of them.
fn subsample(x: &Tensor, dim: usize, stride: usize, count: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, 0, count);
    }
    let len = x.dim(dim)?;
    let need = count * stride;
    let x = if len < need {
        x.pad_with_zeros(dim, 0, need - len)?
    } else {
        x.narrow(dim, 0, need)?
    };
    let mut shape = x.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, stride);
    x.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Inverse of `subsample`: places `x` at every `stride`-th position of a dim of length `len`.
fn upsample_zeros(x: &Tensor, dim: usize, stride: usize, len: usize) -> Result<Tensor> {
    let count = x.dim(dim)?;
    let spread = if stride == 1 {
        x.clone()
    } else {
        let x = x
            .unsqueeze(dim + 1)?
            .pad_with_zeros(dim + 1, 0, stride - 1)?;
        let mut shape = x.dims().to_vec();
        shape.remove(dim + 1);
        shape[dim] = count * stride;
        x.reshape(shape)?
    };
    let have = spread.dim(dim)?;
    if have >= len {
        spread.narrow(dim, 0, len)
    } else {
        spread.pad_with_zeros(dim, 0, len - have)
    }
}

/// `x` [C, H, W] -> patches [N, C*k*k], N = positions(H) * positions(W), row-major positions.
pub fn unfold(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let (_, h, w) = x.dims3()?;
    let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
    if ph == 0 || pw == 0 {
        candle_core::bail!("feature map {h}x{w} is smaller than a {k}x{k} patch");
    }
    if x.device().is_cpu() {
        let grid = Grid::new(h, w, k, stride, false);
        return x.contiguous()?.apply_op1_no_bwd(&CpuUnfold { k, grid });
    }
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        return x
            .contiguous()?
            .apply_op1_no_bwd(&crate::cuda::patches::Unfold { k, stride });
    }
    unfold_generic(x, k, stride)
}

fn unfold_generic(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let (c, h, w) = x.dims3()?;
    let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
    let mut taps = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            let v = x.narrow(1, ky, h - ky)?.narrow(2, kx, w - kx)?;
            let v = subsample(&v, 1, stride, ph)?;
            let v = subsample(&v, 2, stride, pw)?;
            taps.push(v.reshape((c, ph * pw))?);
        }
    }
    // [C, k*k, N] -> [N, C*k*k]
    Tensor::stack(&taps, 1)?
        .reshape((c * k * k, ph * pw))?
        .t()?
        .contiguous()
}

/// Patches at the starts of `grid` [grid.len(), C*k*k], on any device.
pub fn unfold_grid(x: &Tensor, k: usize, stride: usize, grid: &Grid) -> Result<Tensor> {
    let (_, h, w) = x.dims3()?;
    if grid.is_strided(h, w, k, stride) {
        return unfold(x, k, stride);
    }
    if grid.is_empty() || !grid.fits(h, w, k) {
        candle_core::bail!("feature map {h}x{w} does not fit the {k}x{k} patch grid");
    }
    if x.device().is_cpu() {
        return x.contiguous()?.apply_op1_no_bwd(&CpuUnfold {
            k,
            grid: grid.clone(),
        });
    }
    // Elsewhere: every stride-1 patch, then the grid's rows.
    let rows = Tensor::from_vec(grid.dense_rows(w, k), grid.len(), x.device())?;
    unfold(x, k, 1)?.index_select(&rows, 0)
}

/// Adjoint of [`unfold_grid`], on any device.
pub fn fold_grid(
    patches: &Tensor,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    grid: &Grid,
) -> Result<Tensor> {
    if grid.is_strided(h, w, k, stride) {
        return fold(patches, c, h, w, k, stride);
    }
    if grid.is_empty() || !grid.fits(h, w, k) || patches.dims() != [grid.len(), c * k * k] {
        candle_core::bail!(
            "fold: patches {:?} do not fit the {k}x{k} grid of a {c}x{h}x{w} map",
            patches.dims()
        );
    }
    if patches.device().is_cpu() {
        return patches.contiguous()?.apply_op1_no_bwd(&CpuFold {
            c,
            h,
            w,
            k,
            grid: grid.clone(),
        });
    }
    // Elsewhere: scatter into the stride-1 grid, then fold that.
    let rows = Tensor::from_vec(grid.dense_rows(w, k), grid.len(), patches.device())?;
    let dense = Tensor::zeros(
        (positions(h, k, 1) * positions(w, k, 1), c * k * k),
        patches.dtype(),
        patches.device(),
    )?
    .index_add(&rows, &patches.contiguous()?, 0)?;
    fold(&dense, c, h, w, k, 1)
}

/// Adjoint of `unfold`: sums patch values [N, C*k*k] back onto a [C, H, W] map.
pub fn fold(
    patches: &Tensor,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
) -> Result<Tensor> {
    let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
    if patches.dims() != [ph * pw, c * k * k] {
        candle_core::bail!(
            "fold: patches {:?} do not fit a {c}x{h}x{w} map",
            patches.dims()
        );
    }
    if patches.device().is_cpu() {
        return patches.contiguous()?.apply_op1_no_bwd(&CpuFold {
            c,
            h,
            w,
            k,
            grid: Grid::new(h, w, k, stride, false),
        });
    }
    #[cfg(feature = "cuda")]
    if patches.device().is_cuda() {
        return patches
            .contiguous()?
            .apply_op1_no_bwd(&crate::cuda::patches::Fold { c, h, w, k, stride });
    }
    fold_generic(patches, c, h, w, k, stride)
}

fn fold_generic(
    patches: &Tensor,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
) -> Result<Tensor> {
    let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
    let per_tap = patches.t()?.contiguous()?.reshape((c, k * k, ph, pw))?;
    let mut out: Option<Tensor> = None;
    for ky in 0..k {
        for kx in 0..k {
            let v = per_tap.narrow(1, ky * k + kx, 1)?.squeeze(1)?;
            let v = upsample_zeros(&v, 1, stride, h - ky)?;
            let v = upsample_zeros(&v, 2, stride, w - kx)?;
            let v = v.pad_with_zeros(1, ky, 0)?.pad_with_zeros(2, kx, 0)?;
            out = Some(match out {
                Some(o) => (o + v)?,
                None => v,
            });
        }
    }
    Ok(out.expect("k >= 1"))
}

/// The map extended by its own first `n` rows and columns (circular padding at the end).
pub(crate) fn wrap_pad(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 0 {
        return Ok(x.clone());
    }
    let x = Tensor::cat(&[x.clone(), x.narrow(1, 0, n)?], 1)?;
    Tensor::cat(&[x.clone(), x.narrow(2, 0, n)?], 2)
}

/// Patches of a map that wraps around (a seamless tile): positions every `stride` over the whole
/// map, patches crossing the right and bottom edges continue on the left and top.
pub fn unfold_wrapped(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    unfold(&wrap_pad(x, k - 1)?, k, stride)
}

/// Adjoint of [`unfold_wrapped`].
pub fn fold_wrapped(
    patches: &Tensor,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
) -> Result<Tensor> {
    let big = fold(patches, c, h + k - 1, w + k - 1, k, stride)?;
    fold_overhang(&big, h, w, k)
}

/// A map of (h + k - 1) x (w + k - 1) with its last k - 1 rows and columns added back onto its
/// first ones: the adjoint of [`wrap_pad`].
pub(crate) fn fold_overhang(big: &Tensor, h: usize, w: usize, k: usize) -> Result<Tensor> {
    if k == 1 {
        return Ok(big.clone());
    }
    // Rows, then columns.
    let rows =
        (big.narrow(1, 0, h)? + big.narrow(1, h, k - 1)?.pad_with_zeros(1, 0, h - (k - 1))?)?;
    rows.narrow(2, 0, w)?
        + rows
            .narrow(2, w, k - 1)?
            .pad_with_zeros(2, 0, w - (k - 1))?
}

/// Matched style patches pasted onto the map they were cut from, for a CPU map `x` [C, H, W]
/// whose patches at `grid` were matched to rows `index` [N] of `bank` [M, C*k*k]. Returns the
/// per-position sum of the pasted targets [C, H, W] and `sum_n |Q_n - P_j(n)|^2`, in one pass
/// without making the targets as a tensor. `None` off the CPU (use the tensor ops there).
pub fn paste_matches(
    x: &Tensor,
    bank: &Tensor,
    index: &Tensor,
    k: usize,
    grid: &Grid,
) -> Result<Option<(Tensor, f64)>> {
    if !x.device().is_cpu() {
        return Ok(None);
    }
    let (c, h, w) = x.dims3()?;
    let d = c * k * k;
    let index: Vec<u32> = index.to_vec1()?;
    if index.len() != grid.len() || bank.dim(1)? != d || !grid.fits(h, w, k) {
        candle_core::bail!(
            "paste: {} matches, {} grid positions and bank {:?} for a {c}x{h}x{w} map",
            index.len(),
            grid.len(),
            bank.dims()
        );
    }
    let m = bank.dim(0)?;
    if index.iter().any(|&j| j as usize >= m) {
        candle_core::bail!("paste: match index beyond the bank of {m}");
    }
    let map: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let bank = bank.contiguous()?;
    let (bank_storage, bank_layout) = bank.storage_and_layout();
    let bank = match &*bank_storage {
        candle_core::Storage::Cpu(s) => contiguous_f32(s, bank_layout, "paste")?,
        _ => candle_core::bail!("paste: the bank is not on the CPU"),
    };
    // A few channels per task: a task reads a few short runs of each matched row.
    const CHANNELS: usize = 8;
    let plane = h * w;
    let mut sums = vec![0f32; c * plane];
    let sum_sq: f64 = sums
        .par_chunks_mut(CHANNELS * plane)
        .enumerate()
        .map(|(blk, out)| {
            let c0 = blk * CHANNELS;
            let nc = out.len() / plane;
            let mut acc = 0f64;
            for (n, &j) in index.iter().enumerate() {
                let (y0, x0) = grid.corner(n);
                let target = &bank[j as usize * d + c0 * k * k..][..nc * k * k];
                let mut patch_sq = 0f32;
                for dc in 0..nc {
                    let src = &map[(c0 + dc) * plane..(c0 + dc + 1) * plane];
                    let dst = &mut out[dc * plane..(dc + 1) * plane];
                    for ky in 0..k {
                        let at = (y0 + ky) * w + x0;
                        let t = &target[(dc * k + ky) * k..][..k];
                        for ((o, &q), &p) in dst[at..at + k].iter_mut().zip(&src[at..at + k]).zip(t)
                        {
                            let r = q - p;
                            patch_sq += r * r;
                            *o += p;
                        }
                    }
                }
                acc += patch_sq as f64;
            }
            acc
        })
        .sum();
    Ok(Some((
        Tensor::from_vec(sums, (c, h, w), x.device())?,
        sum_sq,
    )))
}

struct CpuUnfold {
    k: usize,
    /// Patch starts; checked to fit the map by the caller.
    grid: Grid,
}

impl CustomOp1 for CpuUnfold {
    fn name(&self) -> &'static str {
        "mrfsynth-unfold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, h, w) = l.shape().dims3()?;
        let x = contiguous_f32(s, l, "patches")?;
        let (k, grid) = (self.k, &self.grid);
        if !grid.fits(h, w, k) {
            candle_core::bail!("unfold: the patch grid does not fit a {h}x{w} map");
        }
        let d = c * k * k;
        let mut out = vec![0f32; grid.len() * d];
        out.par_chunks_mut(d).enumerate().for_each(|(n, row)| {
            let (y0, x0) = grid.corner(n);
            for ch in 0..c {
                for ky in 0..k {
                    let src = &x[(ch * h + y0 + ky) * w + x0..][..k];
                    row[(ch * k + ky) * k..][..k].copy_from_slice(src);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((grid.len(), d))))
    }
}

struct CpuFold {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    /// Patch starts; checked to fit the map by the caller.
    grid: Grid,
}

impl CustomOp1 for CpuFold {
    fn name(&self) -> &'static str {
        "mrfsynth-fold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = contiguous_f32(s, l, "patches")?;
        let CpuFold { c, h, w, k, .. } = *self;
        let grid = &self.grid;
        let d = c * k * k;
        let mut out = vec![0f32; c * h * w];
        // One channel per task: no two tasks write the same place.
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(ch, plane)| {
                for n in 0..grid.len() {
                    let (y0, x0) = grid.corner(n);
                    let src = &p[n * d + ch * k * k..][..k * k];
                    for ky in 0..k {
                        let dst = &mut plane[(y0 + ky) * w + x0..][..k];
                        for (o, &v) in dst.iter_mut().zip(&src[ky * k..(ky + 1) * k]) {
                            *o += v;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// `fold_grid` is the adjoint of `unfold_grid` (<unfold x, p> = <x, fold p>) on the strided
    /// and the full grid, and the CPU fold of a full grid equals the stride-1 scatter and fold
    /// that other devices run.
    #[test]
    fn fold_grid_is_the_adjoint_of_unfold_grid() -> Result<()> {
        let dev = Device::Cpu;
        let (c, h, w, k, s) = (3, 9, 10, 3, 2);
        let x = Tensor::randn(0f32, 1., (c, h, w), &dev)?;
        for full in [false, true] {
            let grid = Grid::new(h, w, k, s, full);
            let p = Tensor::randn(0f32, 1., (grid.len(), c * k * k), &dev)?;
            let lhs = (unfold_grid(&x, k, s, &grid)? * &p)?
                .sum_all()?
                .to_scalar::<f32>()?;
            let folded = fold_grid(&p, c, h, w, k, s, &grid)?;
            let rhs = (&x * &folded)?.sum_all()?.to_scalar::<f32>()?;
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
            let rows = Tensor::from_vec(grid.dense_rows(w, k), grid.len(), &dev)?;
            let dense = Tensor::zeros(
                (positions(h, k, 1) * positions(w, k, 1), c * k * k),
                DType::F32,
                &dev,
            )?
            .index_add(&rows, &p, 0)?;
            let generic = fold(&dense, c, h, w, k, 1)?;
            let diff = (folded - generic)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "full {full}: {diff}");
        }
        Ok(())
    }

    /// The fused paste equals the tensor ops it replaces, on the strided and the full grid, with
    /// a channel count that is not a whole number of task blocks.
    #[test]
    fn paste_matches_equals_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (c, h, w, k, s) = (11, 9, 8, 3, 2);
        let x = Tensor::rand(-1f32, 1f32, (c, h, w), &dev)?;
        let bank = Tensor::rand(-1f32, 1f32, (7, c * k * k), &dev)?;
        for full in [false, true] {
            let grid = Grid::new(h, w, k, s, full);
            assert_eq!(grid.xs.last(), Some(&if full { 5 } else { 4 }));
            let q = unfold_grid(&x, k, s, &grid)?;
            let n = q.dim(0)?;
            assert_eq!(n, grid.len());
            let index = Tensor::from_vec((0..n as u32).map(|i| (i * 5) % 7).collect(), n, &dev)?;
            let targets = bank.index_select(&index, 0)?;
            let want_sq = (&q - &targets)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            let want = fold_grid(&targets, c, h, w, k, s, &grid)?;
            let (got, sq) = paste_matches(&x, &bank, &index, k, &grid)?.unwrap();
            assert!((sq - want_sq).abs() < 1e-4 * want_sq, "{sq} vs {want_sq}");
            let err = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-5, "full {full}: {err}");
            // The any-device path (stride-1 patches, then the grid's rows) agrees with the CPU op.
            let dense = unfold(&x, k, 1)?
                .index_select(&Tensor::from_vec(grid.dense_rows(w, k), n, &dev)?, 0)?;
            assert_eq!(
                (dense - &q)?.abs()?.max_all()?.to_scalar::<f32>()?,
                0.0,
                "full {full}"
            );
            // Coverage: the full grid leaves no position out, the strided one leaves the last column.
            let cover = grid.coverage(h, w, k);
            assert_eq!(cover.contains(&0.0), !full);
        }
        Ok(())
    }

    #[test]
    fn unfold_picks_the_right_values_and_fold_is_its_adjoint() -> Result<()> {
        let (c, h, w, k, s) = (2, 7, 6, 3, 2);
        let data: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let x = Tensor::from_vec(data.clone(), (c, h, w), &Device::Cpu)?;
        let p = unfold(&x, k, s)?;
        assert_eq!(p.dims(), &[3 * 2, c * 9]);
        let pv: Vec<Vec<f32>> = p.to_vec2()?;
        // Patch at position (py=1, px=1) -> top-left (2, 2); element c=1, ky=2, kx=0.
        let row = 2 + 1;
        assert_eq!(pv[row][9 + 2 * 3], data[(h + 4) * w + 2]);
        // <unfold(x), g> == <x, fold(g)>
        let g = Tensor::rand(0f32, 1f32, p.dims(), &Device::Cpu)?;
        let lhs = (p * &g)?.sum_all()?.to_scalar::<f32>()?;
        let rhs = (x * fold(&g, c, h, w, k, s)?)?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs(), "{lhs} vs {rhs}");
        // The CPU kernels and the any-device versions agree.
        let x = Tensor::from_vec(data, (c, h, w), &Device::Cpu)?;
        let a: Vec<f32> = unfold(&x, k, s)?.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = unfold_generic(&x, k, s)?.flatten_all()?.to_vec1()?;
        assert_eq!(a, b);
        let a: Vec<f32> = fold(&g, c, h, w, k, s)?.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = fold_generic(&g, c, h, w, k, s)?.flatten_all()?.to_vec1()?;
        // Same sums in another order: equal up to rounding.
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5),
            "fold differs"
        );
        Ok(())
    }
}
