//! Patch cutting (unfold) and its adjoint (fold) on the GPU, same layout as the CPU ops.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Result, Shape};

use super::{contiguous_range, elementwise_config, int, patches_function};
use crate::prior::grid::positions;

/// The patch grid of a [c, h, w] map, checked for the kernels: k and stride at least 1 (they
/// divide by the stride), patch rows of c * k * k values within `int`, and every buffer size
/// within `usize` (the kernels index with `size_t`). Returns (ph, pw, c * k * k, ph * pw *
/// c * k * k).
fn checked_grid(
    op: &str,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
) -> Result<(usize, usize, usize, usize)> {
    if k == 0 || stride == 0 {
        candle_core::bail!("{op}: patch size {k} and stride {stride} must be at least 1");
    }
    let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
    let too_large = || candle_core::Error::Msg(format!("{op}: {c}x{h}x{w} map is too large"));
    let d = c.checked_mul(k * k).ok_or_else(too_large)?;
    int(d, "patch length")?;
    let n = ph.checked_mul(pw).and_then(|n| n.checked_mul(d));
    let n = n.ok_or_else(too_large)?;
    c.checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .ok_or_else(too_large)?;
    Ok((ph, pw, d, n))
}

/// [C, H, W] -> [N, C*k*k].
pub struct Unfold {
    pub k: usize,
    pub stride: usize,
}

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "mrfsynth-unfold-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("unfold kernel: CUDA devices only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (c, h, w) = l.shape().dims3()?;
        let (k, st) = (self.k, self.stride);
        let (ph, pw, _, total) = checked_grid("unfold", c, h, w, k, st)?;
        let dev = s.device().clone();
        // c * h * w values (the layout's shape): every patch lies inside (ph and pw count the
        // starts whose patch fits).
        let x = s
            .as_cuda_slice::<f32>()?
            .slice(contiguous_range(l, "unfold")?);
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<f32>(total.max(1))? };
        let func = patches_function(&dev, "unfold_f32")?;
        let args = [c, h, w, k, st, ph, pw]
            .iter()
            .map(|&v| int(v, "unfold size"))
            .collect::<Result<Vec<i32>>>()?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(&x).arg(&out);
        for a in &args {
            b.arg(a);
        }
        // SAFETY: argument types and counts match the kernel's signature.
        unsafe { b.launch(elementwise_config(total)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((ph * pw, c * k * k)),
        ))
    }
}

/// [N, C*k*k] -> [C, H, W], summing overlaps.
pub struct Fold {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
}

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "mrfsynth-fold-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("fold kernel: CUDA devices only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let Fold { c, h, w, k, stride } = *self;
        let (ph, pw, d, _) = checked_grid("fold", c, h, w, k, stride)?;
        // The kernel reads ph * pw rows of d values: the input must hold exactly those.
        if l.shape().dims() != [ph * pw, d] {
            candle_core::bail!(
                "fold: patches {:?} do not fit a {c}x{h}x{w} map ({ph}x{pw} patches of \
                 {d} values)",
                l.shape()
            );
        }
        let total = c * h * w;
        let dev = s.device().clone();
        let p = s
            .as_cuda_slice::<f32>()?
            .slice(contiguous_range(l, "fold")?);
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<f32>(total.max(1))? };
        let func = patches_function(&dev, "fold_f32")?;
        let args = [c, h, w, k, stride, ph, pw]
            .iter()
            .map(|&v| int(v, "fold size"))
            .collect::<Result<Vec<i32>>>()?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(&p).arg(&out);
        for a in &args {
            b.arg(a);
        }
        // SAFETY: argument types and counts match the kernel's signature.
        unsafe { b.launch(elementwise_config(total)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((c, h, w)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_the_kernels_cannot_take_are_refused() {
        assert_eq!(
            checked_grid("fold", 2, 9, 10, 3, 2).unwrap(),
            (4, 4, 18, 16 * 18)
        );
        // A map smaller than a patch has no patches (and nothing to read).
        assert_eq!(checked_grid("fold", 2, 2, 10, 3, 1).unwrap().3, 0);
        for (k, stride) in [(0, 1), (3, 0)] {
            let e = checked_grid("fold", 2, 9, 10, k, stride).unwrap_err();
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
        // Patch rows past `int`, and sizes past `usize`.
        assert!(checked_grid("unfold", 1 << 28, 9, 9, 3, 1).is_err());
        assert!(checked_grid("unfold", 1, usize::MAX / 2, 4, 1, 1).is_err());
    }
}
