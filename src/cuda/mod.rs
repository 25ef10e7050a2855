//! Our GPU kernels (kernels/*.cu) as candle custom ops: the matching and patch work of the MRF
//! step, so that a whole evaluation stays on the card. Only built with the `cuda` feature; the
//! CPU build never sees this module.

pub mod ncc;
pub mod patches;

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig};
use candle_core::{CudaDevice, Layout, Result};

/// The PTX that build.rs made from kernels/*.cu, one constant per file.
mod ptx {
    include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));
}

/// A kernel of kernels/ncc_argmax.cu (the module is loaded once per device).
pub(crate) fn ncc_function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, "mrfsynth_ncc_argmax", ptx::NCC_ARGMAX)?
        .into_cuda_function())
}

/// A kernel of kernels/patches.cu.
pub(crate) fn patches_function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, "mrfsynth_patches", ptx::PATCHES)?
        .into_cuda_function())
}

/// Grid-stride launch over `total` elements.
pub(crate) fn elementwise_config(total: usize) -> LaunchConfig {
    let threads = 256u32;
    let blocks = total.div_ceil(threads as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The contiguous element range of a layout, or an error naming the op.
pub(crate) fn contiguous_range(l: &Layout, op: &str) -> Result<std::ops::Range<usize>> {
    l.contiguous_offsets()
        .map(|(a, b)| a..b)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input must be contiguous")))
}

/// `usize` to the kernels' `int`, refusing what would overflow.
pub(crate) fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        candle_core::Error::Msg(format!("{what} = {v} is too large for the GPU kernels"))
    })
}
