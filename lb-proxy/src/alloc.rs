//! The allocator the `lbproxy` binary installs (feature `mimalloc`, on by default).
//!
//! mimalloc through its plain entry points: the `mimalloc` crate's `GlobalAlloc` calls
//! `mi_malloc_aligned` for every allocation, whose checks cost several times the plain
//! `mi_malloc` fast path, and allocations over 1 KiB (read buffers, boxed futures) take its
//! generic aligned path. Every mimalloc block is at least word aligned (block sizes are
//! multiples of the word size), so layouts with an alignment up to the word size use
//! `mi_malloc`, `mi_zalloc` and `mi_realloc`; larger alignments keep the aligned calls.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: lb_proxy::alloc::MiMalloc = lb_proxy::alloc::MiMalloc;
//!
//! let v = vec![1u64, 2, 3];
//! assert_eq!(v.iter().sum::<u64>(), 6);
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc as the global allocator, plain calls for word-aligned layouts.
pub struct MiMalloc;

/// Every mimalloc block is aligned to at least this.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: every call forwards to mimalloc, which returns blocks of at least the requested
// size aligned to at least the word size (plain calls, used only when the layout asks for no
// more) or to the requested alignment (aligned calls), and frees any block it returned.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls with a size and a power-of-two alignment.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract).
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each alignment from 1 to 4 KiB, at sizes around the small-block limits, comes back
    /// aligned, usable, and survives a grow and a shrink.
    #[test]
    fn blocks_are_aligned_for_every_layout() {
        let alloc = MiMalloc;
        for align in (0..13).map(|shift| 1usize << shift) {
            for size in [1, 7, 8, 9, 24, 100, 1024, 1025, 8192, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed with its layout.
                unsafe {
                    let p = alloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let q = alloc.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "grown: size {size} align {align}");
                    assert_eq!(*q.add(size - 1), 0xab);
                    let grown = Layout::from_size_align(size * 3, align).unwrap();
                    let r = alloc.realloc(q, grown, size.div_ceil(2));
                    assert_eq!(r as usize % align, 0, "shrunk: size {size} align {align}");
                    alloc.dealloc(r, Layout::from_size_align(size.div_ceil(2), align).unwrap());
                    let z = alloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    alloc.dealloc(z, layout);
                }
            }
        }
    }
}
