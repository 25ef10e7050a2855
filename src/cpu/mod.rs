//! CPU kernels shared by the data path: run-time SIMD dispatch, bf16 products, candle custom-op
//! helpers, the block-caching allocator and the pointer wrapper that parallel bands write through.

pub mod block_cache;
pub(crate) mod ops;
internal_mod!(bf16_gemm, simd);

/// Raw pointer that may cross threads: every band writes a disjoint part of the output.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only dereferenced by band workers that each write a disjoint range of
// a buffer the spawning scope keeps alive until every worker has joined.
unsafe impl Send for SendPtr {}
// SAFETY: as above; shared access never writes the same element from two threads.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method call makes closures capture the whole wrapper (which is Sync), not its field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
