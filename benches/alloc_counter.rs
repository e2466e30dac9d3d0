//! A global allocator that counts allocations made by the current thread.
//!
//! Tests install it with `#[global_allocator]` and wrap a hot path in [`count`] to prove it
//! performs zero heap allocations. Counting is per thread so the test harness's own threads
//! do not disturb the figure.
//!
//! ```text
//! #[global_allocator]
//! static ALLOC: lb_benches::alloc_counter::CountingAlloc = lb_benches::alloc_counter::CountingAlloc;
//! let n = lb_benches::alloc_counter::count(|| { let _ = Vec::<u8>::with_capacity(8); });
//! assert_eq!(n, 1);
//! ```

// The only unsafe code in the workspace: a `GlobalAlloc` impl must be `unsafe impl`. It
// forwards every call to the system allocator unchanged and only bumps a thread-local counter.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator plus a per-thread count of `alloc` and `realloc` calls.
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn bump() {
    // `try_with` because the allocator can be called while thread-locals are torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

/// Runs `f` and returns how many allocations this thread made meanwhile. Only meaningful
/// when [`CountingAlloc`] is the global allocator.
pub fn count(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}
