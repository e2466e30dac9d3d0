//! In-flight counts that a pick takes and gives back without a locked instruction.
//!
//! Every pick takes a server's in-flight slot and every completion gives it back. With one
//! atomic counter both are locked read-modify-writes (`lock xadd`), which cost 10–14 ns each
//! on the 2-core reference VM (perf of `examples/pick_loop`). An [`InFlight`] is a shared
//! cell plus [`WRITERS`] *writer cells*, each written by one thread only, so a thread that
//! owns a writer cell counts with a plain load and store. The count is the wrapping sum of
//! the cells. A request picked on one thread and finished on another adds on the first
//! thread's cell and subtracts on the second's: single cells drift, the sum stays exact.
//!
//! Writer cells go to the first [`WRITERS`] threads that take a slot (in lbproxy, its first
//! workers) and come back when such a thread exits. Any other thread counts on the shared
//! cell with atomic read-modify-writes, as every thread did before. The cells sit in the
//! server's hot cache line with its health and EWMA, so a pick still touches one line per
//! server. Readers sum four relaxed loads; more writer cells would make the two reads of a
//! least-request or peak-EWMA pick cost more than the locked instructions they save.
//!
//! **Limits stay exact.** A slot taken against a limit (`MaxConnsPerServer`) is taken with a
//! compare-and-swap on the shared cell that checks the whole sum, and given back on the
//! shared cell. While every pick of a server is limited, the writer cells only shrink
//! (requests picked before the limit was configured finishing), so a sum read before the
//! swap can only overstate the count at the moment the swap succeeds: the limit is never
//! exceeded. Just after a configuration change adds a limit, requests still being picked by
//! the previous, unlimited balancer can take the count past it, as they would with a single
//! counter.
//!
//! A reader may see a slot given back on one thread before it sees that slot taken on
//! another (relaxed loads of different cells are not ordered): the sum then reads one low,
//! and a sum below zero reads as zero.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

/// Threads that count with plain stores; the rest use the shared cell.
pub(crate) const WRITERS: usize = 3;

/// A count of requests in flight: see the [module documentation](self).
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct InFlight {
    /// Counted with atomic read-modify-writes: by threads without a writer cell, and by
    /// limited slots.
    shared: AtomicU32,
    /// Cell `i` is written only by the thread holding writer index `i`.
    cells: [AtomicU32; WRITERS],
}

impl InFlight {
    pub(crate) const fn new() -> Self {
        Self {
            shared: AtomicU32::new(0),
            cells: [const { AtomicU32::new(0) }; WRITERS],
        }
    }

    /// The count now.
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        nonnegative(
            self.shared
                .load(Ordering::Relaxed)
                .wrapping_add(self.cells_sum()),
        )
    }

    #[inline]
    fn cells_sum(&self) -> u32 {
        self.cells
            .iter()
            .fold(0u32, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }

    /// Takes a slot, with no limit.
    #[inline]
    pub(crate) fn take(&self) {
        match writer_or_claim() {
            Some(i) => bump(&self.cells[i], 1),
            None => {
                self.shared.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Gives back a slot taken with [`InFlight::take`] (on any thread).
    #[inline]
    pub(crate) fn give_back(&self) {
        match writer() {
            Some(i) => bump(&self.cells[i], u32::MAX),
            None => {
                self.shared.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes a slot if the count is below `limit`.
    pub(crate) fn take_below(&self, limit: u32) -> bool {
        let mut shared = self.shared.load(Ordering::Relaxed);
        loop {
            if nonnegative(shared.wrapping_add(self.cells_sum())) >= limit {
                return false;
            }
            match self.shared.compare_exchange_weak(
                shared,
                shared.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => shared = now,
            }
        }
    }

    /// Gives back a slot taken with [`InFlight::take_below`].
    #[inline]
    pub(crate) fn give_back_limited(&self) {
        self.shared.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A wrapping sum read as a signed count, below zero read as zero.
#[inline]
fn nonnegative(sum: u32) -> u32 {
    if sum > i32::MAX as u32 { 0 } else { sum }
}

/// Adds `delta` (wrapping) to a cell only the calling thread writes: a plain load and store.
#[inline]
fn bump(cell: &AtomicU32, delta: u32) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(delta),
        Ordering::Relaxed,
    );
}

// === writer cells ===

/// This thread's writer index, [`UNCLAIMED`] before its first take, or [`NONE`].
const UNCLAIMED: u8 = u8::MAX;
const NONE: u8 = u8::MAX - 1;

thread_local! {
    static WRITER: Cell<u8> = const { Cell::new(UNCLAIMED) };
    /// Holds the claimed index; its destructor hands it back when the thread exits.
    static CLAIM: Claim = Claim::new();
}

/// The free writer indices, one bit each.
static FREE: Mutex<u32> = Mutex::new((1 << WRITERS) - 1);

/// The calling thread's writer index, if it has one.
#[inline]
fn writer() -> Option<usize> {
    let i = WRITER.get();
    (usize::from(i) < WRITERS).then_some(usize::from(i))
}

/// The calling thread's writer index, claiming a free one on the thread's first take.
#[inline]
fn writer_or_claim() -> Option<usize> {
    let i = WRITER.get();
    if i == UNCLAIMED {
        return claim();
    }
    (usize::from(i) < WRITERS).then_some(usize::from(i))
}

#[cold]
#[inline(never)]
fn claim() -> Option<usize> {
    // Initializing `CLAIM` claims an index (or records that none was free) in `WRITER`.
    // During thread teardown `CLAIM` may be gone: count on the shared cell then.
    if CLAIM.try_with(|_| ()).is_err() {
        WRITER.set(NONE);
    }
    writer()
}

/// A claimed writer index, handed back on drop (thread exit).
struct Claim(Option<u8>);

impl Claim {
    fn new() -> Self {
        let mut free = FREE.lock().unwrap_or_else(PoisonError::into_inner);
        let index = (*free != 0).then(|| {
            let i = free.trailing_zeros();
            *free &= !(1 << i);
            i as u8
        });
        WRITER.set(index.unwrap_or(NONE));
        Self(index)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Slots this thread gives back from now on (in other thread-locals' destructors)
        // go to the shared cell; the next owner of the index continues this cell's sum.
        WRITER.set(NONE);
        if let Some(i) = self.0 {
            *FREE.lock().unwrap_or_else(PoisonError::into_inner) |= 1 << i;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn takes_and_give_backs_on_different_threads_sum_to_the_count() {
        let count = Arc::new(InFlight::new());
        // Taken on this thread, given back on others, and the reverse.
        for _ in 0..10 {
            count.take();
        }
        assert_eq!(count.get(), 10);
        std::thread::scope(|s| {
            for _ in 0..5 {
                let count = &count;
                s.spawn(move || count.give_back());
            }
        });
        assert_eq!(count.get(), 5);
        std::thread::scope(|s| {
            for _ in 0..3 {
                let count = &count;
                s.spawn(move || count.take());
            }
        });
        assert_eq!(count.get(), 8);
        for _ in 0..8 {
            count.give_back();
        }
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn more_threads_than_writer_cells_share_the_shared_cell() {
        let count = InFlight::new();
        let threads = WRITERS * 3;
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (count, tx, go_rx) = (&count, tx.clone(), &go_rx);
                s.spawn(move || {
                    for _ in 0..1000 {
                        count.take();
                    }
                    tx.send(()).unwrap();
                    // Hold this thread (and any writer cell it claimed) until all counted.
                    go_rx.lock().unwrap().recv().unwrap();
                    for _ in 0..1000 {
                        count.give_back();
                    }
                });
            }
            for _ in 0..threads {
                rx.recv().unwrap();
            }
            assert_eq!(count.get(), (threads * 1000) as u32);
            for _ in 0..threads {
                go_tx.send(()).unwrap();
            }
        });
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn a_limit_is_never_exceeded_by_concurrent_takes() {
        let count = InFlight::new();
        let limit = 3;
        std::thread::scope(|s| {
            for _ in 0..4 {
                let count = &count;
                s.spawn(move || {
                    let mut held = 0;
                    for i in 0..20_000 {
                        if count.take_below(limit) {
                            held += 1;
                            assert!(count.get() <= limit, "over the limit");
                        }
                        if held == 2 || i % 7 == 0 {
                            for _ in 0..held {
                                count.give_back_limited();
                            }
                            held = 0;
                        }
                    }
                    for _ in 0..held {
                        count.give_back_limited();
                    }
                });
            }
        });
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn a_limit_counts_slots_taken_without_one() {
        let count = InFlight::new();
        count.take();
        count.take();
        assert!(count.take_below(3));
        assert!(
            !count.take_below(3),
            "two unlimited slots and one limited fill 3"
        );
        count.give_back();
        assert!(count.take_below(3));
        assert_eq!(count.get(), 3);
    }

    #[test]
    fn a_sum_below_zero_reads_as_zero() {
        let count = InFlight::new();
        count.give_back();
        assert_eq!(count.get(), 0);
        count.take();
        assert_eq!(count.get(), 0);
        count.take();
        assert_eq!(count.get(), 1);
    }

    #[test]
    fn short_lived_threads_keep_the_count_exact() {
        let count = InFlight::new();
        // Many threads in turn, each claiming a cell and handing it back as it exits, and
        // a cell's next owner continuing its sum.
        for _ in 0..(WRITERS * 4) {
            std::thread::scope(|s| {
                s.spawn(|| count.take());
            });
        }
        assert_eq!(count.get(), (WRITERS * 4) as u32);
        for _ in 0..(WRITERS * 4) {
            std::thread::scope(|s| {
                s.spawn(|| count.give_back());
            });
        }
        assert_eq!(count.get(), 0);
    }
}
