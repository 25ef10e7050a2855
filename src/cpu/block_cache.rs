//! A global allocator that keeps large freed blocks for the next request of the same size.
//!
//! Every evaluation allocates the same activation, padding and gradient buffers again, tens of
//! megabytes each. The system allocator returns blocks this large to the kernel on free and
//! maps fresh zeroed pages on the next request, so each evaluation paid for hundreds of
//! thousands of page faults (about a tenth of its time at 384 px). Kept blocks are handed
//! back as they are (or zeroed, for zeroed requests), up to a bounded total.
//!
//! The binary and the benchmarks install it with
//! `#[global_allocator] static ALLOC: mrfsynth::cpu::block_cache::BlockCache = BlockCache;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Smallest block kept (smaller ones stay with the system allocator's own free lists).
const MIN_BYTES: usize = 1 << 20;
/// Most bytes kept at once, unless [`set_budget`] says less: about what an evaluation at
/// 384 px frees and asks for again.
pub const MAX_CACHED_BYTES: usize = 1 << 30;

/// The current bound on kept bytes (at most [`MAX_CACHED_BYTES`]).
static BUDGET: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(MAX_CACHED_BYTES);

/// Bounds the kept bytes by `bytes` (at most [`MAX_CACHED_BYTES`]): a run sets it to its
/// headroom under the memory limit, so that kept blocks never push it over. Blocks beyond
/// the new bound are given back as the next ones are kept.
pub fn set_budget(bytes: u64) {
    let b = bytes.min(MAX_CACHED_BYTES as u64) as usize;
    BUDGET.store(b, std::sync::atomic::Ordering::Relaxed);
}
const SLOTS: usize = 128;

#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    size: usize,
    align: usize,
}

struct Cache {
    blocks: [Block; SLOTS],
    len: usize,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: [Block {
        addr: 0,
        size: 0,
        align: 0,
    }; SLOTS],
    len: 0,
    bytes: 0,
});

/// See the module documentation.
pub struct BlockCache;

impl BlockCache {
    /// A kept block of exactly this layout, if any (the most recently kept one).
    fn take(layout: Layout) -> Option<*mut u8> {
        let mut c = CACHE.lock().ok()?;
        let len = c.len;
        let at = c.blocks[..len]
            .iter()
            .rposition(|b| b.size == layout.size() && b.align == layout.align())?;
        let b = c.blocks[at];
        c.blocks.copy_within(at + 1..len, at);
        c.len -= 1;
        c.bytes -= b.size;
        Some(b.addr as *mut u8)
    }

    /// Keeps the block, first giving the oldest kept blocks back to the system while there is
    /// no room (sizes of an earlier pyramid level are not asked for again); returns whether it
    /// was kept.
    fn keep(ptr: *mut u8, layout: Layout) -> bool {
        let budget = BUDGET.load(std::sync::atomic::Ordering::Relaxed);
        if layout.size() > budget {
            return false;
        }
        let Ok(mut c) = CACHE.lock() else {
            return false;
        };
        while c.len == SLOTS || c.bytes + layout.size() > budget {
            let old = c.blocks[0];
            let len = c.len;
            c.blocks.copy_within(1..len, 0);
            c.len -= 1;
            c.bytes -= old.size;
            // SAFETY: the block came from System with this size and alignment.
            unsafe {
                System.dealloc(
                    old.addr as *mut u8,
                    Layout::from_size_align_unchecked(old.size, old.align),
                )
            };
        }
        let len = c.len;
        c.blocks[len] = Block {
            addr: ptr as usize,
            size: layout.size(),
            align: layout.align(),
        };
        c.len += 1;
        c.bytes += layout.size();
        true
    }
}

// SAFETY: every block handed out comes from `System` with the same layout it is requested
// with (size and alignment match exactly), and is owned by one caller at a time: it is either
// in the cache (behind the mutex) or with the caller.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_BYTES {
            if let Some(p) = Self::take(layout) {
                return p;
            }
        }
        // SAFETY: the caller's layout has a non-zero size (GlobalAlloc's contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_BYTES {
            if let Some(p) = Self::take(layout) {
                // SAFETY: a kept block of exactly this size, now owned by this caller alone.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                return p;
            }
        }
        // SAFETY: the caller's layout has a non-zero size (GlobalAlloc's contract).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= MIN_BYTES && Self::keep(ptr, layout) {
            return;
        }
        // SAFETY: every block this allocator hands out comes from System with the layout it
        // was asked for, and the caller gives back `ptr` with that layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < MIN_BYTES && new_size < MIN_BYTES {
            // SAFETY: the caller's contract for `realloc`, passed on; a small block came from
            // System (only blocks of MIN_BYTES and more are kept), so System may resize it.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Through alloc and dealloc, so that large blocks pass through the cache.
        // SAFETY: `realloc`'s contract: new_size is non-zero and, rounded up to the (valid)
        // alignment, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout of non-zero size.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: `ptr` holds layout.size() bytes (the caller's block) and `new` new_size,
            // distinct blocks; then `ptr` goes back with the layout it was allocated with.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_come_back_and_zeroed_ones_are_zero() {
        let a = BlockCache;
        let layout = Layout::from_size_align(3 << 20, 64).unwrap();
        // SAFETY: every layout has a non-zero size; each block is written within its size and
        // given back once, with the layout it was allocated with.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, layout.size());
            a.dealloc(p, layout);
            // The same layout gets the kept block, zeroed on request.
            let q = a.alloc_zeroed(layout);
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, layout.size())
                .iter()
                .all(|&b| b == 0));
            // Another size does not.
            let other = Layout::from_size_align(2 << 20, 64).unwrap();
            let r = a.alloc(other);
            assert_ne!(r, q);
            a.dealloc(r, other);
            a.dealloc(q, layout);
            // A full cache makes room by giving back its oldest blocks.
            let big = Layout::from_size_align(MAX_CACHED_BYTES - (1 << 20), 64).unwrap();
            let b = a.alloc(big);
            a.dealloc(b, big);
            assert!(CACHE.lock().unwrap().bytes <= MAX_CACHED_BYTES);
            assert_eq!(a.alloc(big), b, "the newest block is kept");
            a.dealloc(b, big);
            // Growing through realloc keeps the contents.
            let s = a.alloc(other);
            std::ptr::write_bytes(s, 3, other.size());
            let t = a.realloc(s, other, 4 << 20);
            assert_eq!(*t.add(other.size() - 1), 3);
            a.dealloc(t, Layout::from_size_align(4 << 20, 64).unwrap());
        }
    }
}
