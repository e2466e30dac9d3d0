//! One blocking-query loop: the watch behind every Consul source (a KV prefix, the service
//! list, one service's health).
//!
//! It follows the "Implementation Details" of Consul's Blocking Queries page
//! (<https://developer.hashicorp.com/consul/api-docs/features/blocking>) and
//! consul-template's `watch/view.go`:
//!
//! - each query sends the `X-Consul-Index` of the previous answer as `index`, with `wait`;
//!   an answer is not proof of a change (a timeout, an idempotent write), so the consumer
//!   compares data;
//! - **the index going backwards** (a snapshot restore, a KV list whose newest key was
//!   reaped) restarts the loop: the answer is reported with `resync` (the consumer replaces
//!   what it had), and the index is reset to 0, so the next query is a plain read;
//! - **index 0 is never used to block**: an answer of 0 (a Consul bug in older versions)
//!   continues with index 1, which is always safe, instead of a busy loop of non-blocking
//!   reads;
//! - **rate limit**: two queries of one loop start at least `min_interval` apart, whatever
//!   the answers;
//! - **errors** (a 5xx, a reset connection, a timeout) are reported, then the loop waits an
//!   exponential backoff (`retry_min` doubling up to `retry_max`, plus up to a quarter of
//!   random jitter so a fleet does not retry in step), resets the index to 0, and reports
//!   its next answer with `resync`: after an outage the consumer gets a fresh list, not a
//!   replay. It retries forever; only the consumer going away ends it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ConsulOptions;
use super::client::{ConsulClient, ConsulError, Reply};
use crate::error::RegistryError;
use std::sync::Arc;

/// What one answer of a loop says.
#[derive(Debug)]
pub(crate) struct Observation<T> {
    /// The answer's `X-Consul-Index`.
    pub index: u64,
    /// The decoded answer: the source's whole current state.
    pub data: T,
    /// Whether the consumer must treat this as a fresh start (after an error or an index
    /// going backwards), replacing what it had instead of diffing.
    pub resync: bool,
}

/// What a loop reports.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    /// An answer.
    Fresh(Observation<T>),
    /// A failed query; the loop backs off and retries.
    Failed(RegistryError),
}

/// A loop's task: aborted when dropped, so a consumer that drops its loops stops them.
#[derive(Debug)]
pub(crate) struct LoopHandle(JoinHandle<()>);

impl Drop for LoopHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a loop queries and how it reads the answers.
pub(crate) struct Query<K, D> {
    /// Tags every outcome, so one consumer can run several loops.
    pub source: K,
    /// `/v1/kv/vulcand/?recurse`, without `index` and `wait`.
    pub path: String,
    /// The index to block on first; 0 starts with a plain read.
    pub index: u64,
    /// Turns a 200 or 404 answer into the source's state.
    pub decode: D,
}

/// Starts a loop that sends its outcomes to `tx` until `tx`'s receiver is dropped (or the
/// returned handle is).
pub(crate) fn spawn<K, T, D>(
    client: Arc<ConsulClient>,
    options: ConsulOptions,
    query: Query<K, D>,
    tx: mpsc::Sender<(K, Outcome<T>)>,
) -> LoopHandle
where
    K: Clone + Send + 'static,
    T: Send + 'static,
    D: Fn(&Reply) -> Result<T, ConsulError> + Send + 'static,
{
    LoopHandle(tokio::spawn(run(client, options, query, tx)))
}

async fn run<K, T, D>(
    client: Arc<ConsulClient>,
    options: ConsulOptions,
    query: Query<K, D>,
    tx: mpsc::Sender<(K, Outcome<T>)>,
) where
    K: Clone + Send + 'static,
    T: Send + 'static,
    D: Fn(&Reply) -> Result<T, ConsulError> + Send + 'static,
{
    let Query {
        source,
        path,
        mut index,
        decode,
    } = query;
    let mut resync = false;
    let mut failures = 0u32;
    let mut jitter = Jitter::new();
    let mut last_start: Option<Instant> = None;
    loop {
        if let Some(at) = last_start {
            tokio::time::sleep_until(at + options.min_interval).await;
        }
        last_start = Some(Instant::now());
        let reply = if index == 0 {
            client.get(&path).await
        } else {
            client.blocking_get(&path, index, options.wait).await
        };
        let answer = reply.and_then(|reply| {
            let read = || {
                if reply.status != StatusCode::OK && reply.status != StatusCode::NOT_FOUND {
                    return Err(reply.unexpected());
                }
                Ok((reply.required_index()?, decode(&reply)?))
            };
            read().map_err(|e| client.error(e))
        });
        let outcome = match answer {
            Ok((new_index, data)) => {
                failures = 0;
                let went_back = new_index < index;
                let observation = Observation {
                    index: new_index,
                    data,
                    resync: resync || went_back,
                };
                resync = false;
                index = if went_back { 0 } else { new_index.max(1) };
                Outcome::Fresh(observation)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                resync = true;
                index = 0;
                Outcome::Failed(error)
            }
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        if tx.send((source.clone(), outcome)).await.is_err() {
            return;
        }
        if failed {
            let delay = backoff(&options, failures);
            tokio::time::sleep(delay + jitter.upto(delay / 4)).await;
        }
    }
}

/// `retry_min * 2^(failures - 1)`, at most `retry_max`.
fn backoff(options: &ConsulOptions, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    options
        .retry_min
        .checked_mul(factor)
        .unwrap_or(options.retry_max)
        .min(options.retry_max)
}

/// A small xorshift generator: retry jitter needs spread, not quality.
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Self {
        Self(RandomState::new().build_hasher().finish() | 1)
    }

    /// A random duration in `[0, max]`.
    pub(crate) fn upto(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { self.0 % (nanos + 1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let options = ConsulOptions {
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..ConsulOptions::default()
        };
        let delays: Vec<_> = (1..=6).map(|n| backoff(&options, n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&options, u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut jitter = Jitter::new();
        for _ in 0..1000 {
            assert!(jitter.upto(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
        assert_eq!(jitter.upto(Duration::ZERO), Duration::ZERO);
    }
}
