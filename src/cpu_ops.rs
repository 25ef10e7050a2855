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
