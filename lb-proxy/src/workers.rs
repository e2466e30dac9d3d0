//! Data-path worker threads: one single-threaded tokio runtime per thread, nginx's worker
//! model.
//!
//! Each worker runs its own accept loop on every listener (the same socket, duplicated) and
//! serves the connections it accepts on its own thread from start to end: the client
//! connection, the request's upstream connection and the response body are polled by
//! one thread, with no work stealing and no cross-thread wake-up per request. Upstream
//! pools keep one idle list per worker ([`crate::upstream::ServerPool`]), so a worker
//! reuses the connections it opened without contending with the others.
//!
//! The control plane (registry watches, applier, admin API, health checks) stays on the
//! runtime that started the workers.
//!
//! Why: in `benches/e2e/run.sh`-style keep-alive runs on one core, the same minimal hyper
//! proxy spent 26.9–28.5 µs of CPU per request on a multi-threaded runtime with one worker
//! and 19.7–25.7 µs on a single-threaded runtime (work-stealing queues, cross-thread
//! wake-ups and atomics that the single-threaded scheduler does without).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    /// This thread's slot in per-worker tables: 1..=N on worker N, 0 elsewhere.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// How many slots per-worker tables need: 1 (threads that are not workers) + the most
/// workers started in this process.
static SLOTS: AtomicUsize = AtomicUsize::new(1);

/// This thread's slot in per-worker tables (0 on threads that are not workers).
pub(crate) fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// How many slots a per-worker table needs now.
pub(crate) fn slot_count() -> usize {
    SLOTS.load(Ordering::Relaxed)
}

/// Running worker threads; cloning shares them. When the last clone is dropped the workers
/// stop (their runtimes, and every connection on them, are dropped).
#[derive(Clone, Debug)]
pub struct Workers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    handles: Vec<Handle>,
    stop: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Workers {
    /// Starts `count` worker threads (at least one), named `lbproxy-worker-<n>`.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = count.max(1);
        SLOTS.fetch_max(count + 1, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::with_capacity(count);
        for n in 1..=count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("lbproxy-worker-{n}"))
                .spawn(move || {
                    SLOT.with(|slot| slot.set(n));
                    runtime.block_on(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    });
                })?;
        }
        Ok(Workers {
            inner: Arc::new(Inner { handles, stop }),
        })
    }

    /// The workers' runtimes.
    pub fn handles(&self) -> &[Handle] {
        &self.inner.handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_has_its_own_slot() {
        let workers = Workers::start(2).expect("workers start");
        let mut slots: Vec<usize> = workers
            .handles()
            .iter()
            .map(|handle| {
                let (tx, rx) = std::sync::mpsc::channel();
                handle.spawn(async move { tx.send(slot()).expect("receiver alive") });
                rx.recv().expect("the worker answers")
            })
            .collect();
        slots.sort_unstable();
        assert_eq!(slots, [1, 2]);
        assert_eq!(slot(), 0, "the test thread is not a worker");
        assert!(slot_count() >= 3);
    }
}
