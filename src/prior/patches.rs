//! Cutting feature maps into k x k patches and putting patch gradients back.
//!
//! Written with plain tensor ops (narrow, pad, reshape) so it runs on any candle device.
//! A patch vector is laid out channel-major: element `c * k*k + ky * k + kx`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_ops::contiguous_f32;

/// Number of patch positions along a side of length `n`.
pub fn positions(n: usize, k: usize, stride: usize) -> usize {
    if n < k {
        0
    } else {
        (n - k) / stride + 1
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
        return x.contiguous()?.apply_op1_no_bwd(&CpuUnfold { k, stride });
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
        return patches
            .contiguous()?
            .apply_op1_no_bwd(&CpuFold { c, h, w, k, stride });
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
fn wrap_pad(x: &Tensor, n: usize) -> Result<Tensor> {
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
fn fold_overhang(big: &Tensor, h: usize, w: usize, k: usize) -> Result<Tensor> {
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

/// The MRF residual in one pass, for a CPU map `x` [C, H, W] whose patches (`unfold` or
/// `unfold_wrapped`) were matched to rows `index` [N] of `bank` [M, C*k*k]: returns
/// `fold(scale * (Q - P))` and `sum |Q - P|^2`, without making the targets, the difference or
/// the scaled copy as tensors of their own. `None` off the CPU (use the tensor ops there).
pub fn residual_fold(
    x: &Tensor,
    bank: &Tensor,
    index: &Tensor,
    k: usize,
    stride: usize,
    wrap: bool,
    scale: f64,
) -> Result<Option<(Tensor, f64)>> {
    if !x.device().is_cpu() {
        return Ok(None);
    }
    let (c, h, w) = x.dims3()?;
    let map = if wrap { wrap_pad(x, k - 1)? } else { x.clone() };
    let (_, hb, wb) = map.dims3()?;
    let (ph, pw) = (positions(hb, k, stride), positions(wb, k, stride));
    let d = c * k * k;
    let index: Vec<u32> = index.to_vec1()?;
    if index.len() != ph * pw || bank.dim(1)? != d {
        candle_core::bail!(
            "residual: {} matches and bank {:?} for a {c}x{hb}x{wb} map",
            index.len(),
            bank.dims()
        );
    }
    let m = bank.dim(0)?;
    if index.iter().any(|&j| j as usize >= m) {
        candle_core::bail!("residual: match index beyond the bank of {m}");
    }
    let map: Vec<f32> = map.flatten_all()?.to_vec1()?;
    let bank = bank.contiguous()?;
    let (bank_storage, bank_layout) = bank.storage_and_layout();
    let bank = match &*bank_storage {
        candle_core::Storage::Cpu(s) => contiguous_f32(s, bank_layout, "residual")?,
        _ => candle_core::bail!("residual: the bank is not on the CPU"),
    };
    // A few channels per task: a task reads a few short runs of each matched row.
    const CHANNELS: usize = 8;
    let plane = hb * wb;
    let mut grad = vec![0f32; c * plane];
    let sum_sq: f64 = grad
        .par_chunks_mut(CHANNELS * plane)
        .enumerate()
        .map(|(blk, out)| {
            let c0 = blk * CHANNELS;
            let nc = out.len() / plane;
            let mut acc = 0f64;
            for (n, &j) in index.iter().enumerate() {
                let (y0, x0) = ((n / pw) * stride, (n % pw) * stride);
                let target = &bank[j as usize * d + c0 * k * k..][..nc * k * k];
                let mut patch_sq = 0f32;
                for dc in 0..nc {
                    let src = &map[(c0 + dc) * plane..(c0 + dc + 1) * plane];
                    let dst = &mut out[dc * plane..(dc + 1) * plane];
                    for ky in 0..k {
                        let at = (y0 + ky) * wb + x0;
                        let t = &target[(dc * k + ky) * k..][..k];
                        for ((o, &q), &p) in dst[at..at + k].iter_mut().zip(&src[at..at + k]).zip(t)
                        {
                            let r = q - p;
                            patch_sq += r * r;
                            *o += scale as f32 * r;
                        }
                    }
                }
                acc += patch_sq as f64;
            }
            acc
        })
        .sum();
    let grad = Tensor::from_vec(grad, (c, hb, wb), x.device())?;
    let grad = if wrap {
        fold_overhang(&grad, h, w, k)?
    } else {
        grad
    };
    Ok(Some((grad, sum_sq)))
}

struct CpuUnfold {
    k: usize,
    stride: usize,
}

impl CustomOp1 for CpuUnfold {
    fn name(&self) -> &'static str {
        "mrfsynth-unfold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, h, w) = l.shape().dims3()?;
        let x = contiguous_f32(s, l, "patches")?;
        let (k, st) = (self.k, self.stride);
        let (ph, pw) = (positions(h, k, st), positions(w, k, st));
        let d = c * k * k;
        let mut out = vec![0f32; ph * pw * d];
        out.par_chunks_mut(d).enumerate().for_each(|(n, row)| {
            let (y0, x0) = ((n / pw) * st, (n % pw) * st);
            for ch in 0..c {
                for ky in 0..k {
                    let src = &x[(ch * h + y0 + ky) * w + x0..][..k];
                    row[(ch * k + ky) * k..][..k].copy_from_slice(src);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((ph * pw, d))))
    }
}

struct CpuFold {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
}

impl CustomOp1 for CpuFold {
    fn name(&self) -> &'static str {
        "mrfsynth-fold"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = contiguous_f32(s, l, "patches")?;
        let CpuFold { c, h, w, k, stride } = *self;
        let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
        let d = c * k * k;
        let mut out = vec![0f32; c * h * w];
        // One channel per task: no two tasks write the same place.
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(ch, plane)| {
                for n in 0..ph * pw {
                    let (y0, x0) = ((n / pw) * stride, (n % pw) * stride);
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
    use candle_core::Device;

    /// The fused residual equals the tensor ops it replaces, plain and wrapped, with a channel
    /// count that is not a whole number of task blocks.
    #[test]
    fn residual_fold_equals_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (c, h, w, k, s) = (11, 9, 8, 3, 2);
        let x = Tensor::rand(-1f32, 1f32, (c, h, w), &dev)?;
        let bank = Tensor::rand(-1f32, 1f32, (7, c * k * k), &dev)?;
        for wrap in [false, true] {
            let q = if wrap {
                unfold_wrapped(&x, k, s)?
            } else {
                unfold(&x, k, s)?
            };
            let n = q.dim(0)?;
            let index = Tensor::from_vec((0..n as u32).map(|i| (i * 5) % 7).collect(), n, &dev)?;
            let diff = (q - bank.index_select(&index, 0)?)?;
            let want_sq = diff.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            let scaled = diff.affine(0.3, 0.0)?;
            let want = if wrap {
                fold_wrapped(&scaled, c, h, w, k, s)?
            } else {
                fold(&scaled, c, h, w, k, s)?
            };
            let (got, sq) = residual_fold(&x, &bank, &index, k, s, wrap, 0.3)?.unwrap();
            assert!((sq - want_sq).abs() < 1e-4 * want_sq, "{sq} vs {want_sq}");
            let err = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-5, "wrap {wrap}: {err}");
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
        assert!((lhs - rhs).abs() < 1e-2 * lhs.abs(), "{lhs} vs {rhs}");
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
