//! Patch cutting (unfold) and its adjoint (fold) on the GPU, same layout as the CPU ops.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Result, Shape};

use super::{contiguous_range, elementwise_config, int, patches_function};
use crate::prior::grid::positions;

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
        let (ph, pw) = (positions(h, k, st), positions(w, k, st));
        let total = ph * pw * c * k * k;
        let dev = s.device().clone();
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
        let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
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
