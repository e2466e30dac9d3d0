//! The watch task behind [`EtcdRegistry::watch`](super::EtcdRegistry): one etcd watcher,
//! events forwarded per revision, compaction and errors turned into a fresh listing.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Failure, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, Shared};
use crate::error::RegistryError;
use crate::registry::WatchEvent;
use crate::watch::Watch;

/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// The longest pause between two attempts to reach etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How many events may wait for a slow consumer before the task stops reading etcd (etcd
/// then buffers on its side).
const CHANNEL_CAPACITY: usize = 64;

/// Starts watching what happens after `revision`; the task ends when the [`Watch`] is
/// dropped or `alive` closes (the registry was dropped).
pub(super) fn start(
    shared: Arc<Shared>,
    alive: tokio::sync::watch::Receiver<()>,
    revision: u64,
) -> Watch {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(run(shared, alive, tx, revision));
    rx.into()
}

/// How one watch session ended.
enum End {
    /// The consumer is gone: stop.
    Closed,
    /// The start revision was compacted: list again.
    Compacted(i64),
    /// Anything else went wrong: report, back off, list again.
    Failed(RegistryError),
}

async fn run(
    shared: Arc<Shared>,
    mut alive: tokio::sync::watch::Receiver<()>,
    tx: mpsc::Sender<WatchEvent>,
    revision: u64,
) {
    // Everything below runs inside this select, so dropping the registry or the Watch ends
    // the task at its next await, whatever it is doing.
    tokio::select! {
        () = watch_forever(&shared, &tx, revision) => {}
        _ = alive.changed() => {}
        () = tx.closed() => {}
    }
}

async fn watch_forever(shared: &Shared, tx: &mpsc::Sender<WatchEvent>, revision: u64) {
    let mut start = revision.saturating_add(1);
    let mut backoff = MIN_BACKOFF;
    loop {
        let began = Instant::now();
        match session(shared, tx, start).await {
            End::Closed => return,
            End::Compacted(compacted) => {
                tracing::info!(
                    registry = %shared.url,
                    start,
                    compacted,
                    "watch start revision was compacted; listing again"
                );
            }
            End::Failed(error) => {
                tracing::warn!(registry = %shared.url, %error, "watch failed; reconnecting");
                if tx.send(WatchEvent::Error(error)).await.is_err() {
                    return;
                }
                // A session that ran for a while was healthy: start the backoff afresh.
                if began.elapsed() > MAX_BACKOFF {
                    backoff = MIN_BACKOFF;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        // Resynchronise from a fresh listing rather than replaying from the last revision
        // seen: after a compaction those revisions are gone, and after an outage etcd may
        // come back with another history (restored from a backup, another member).
        loop {
            match shared.list().await {
                Ok(listing) => {
                    start = listing.revision.saturating_add(1);
                    if tx.send(WatchEvent::Reset(listing)).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(error) => {
                    if tx.send(WatchEvent::Error(error)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// One watcher from `start` until it fails, is compacted, or the consumer leaves.
async fn session(shared: &Shared, tx: &mpsc::Sender<WatchEvent>, start: u64) -> End {
    let mut stream = match open(shared, start).await {
        Ok(stream) => stream,
        Err(error) => return End::Failed(error),
    };
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return failed(shared, "etcd closed the watch stream".to_owned()),
                    Err(source) => {
                        return End::Failed(shared.failure(Failure::Etcd {
                            operation: "watch".to_owned(),
                            source,
                        }));
                    }
                };
                if let Some(end) = forward(shared, tx, &response).await {
                    return end;
                }
                // After forwarding: time spent waiting for a slow consumer is not silence
                // from etcd.
                last_heard = Instant::now();
            }
            _ = heartbeat.tick() => {
                let quiet = last_heard.elapsed();
                if quiet >= HEARTBEAT_TIMEOUT {
                    return failed(shared, format!("watch: no answer from etcd for {quiet:?}"));
                }
                if quiet >= HEARTBEAT_INTERVAL
                    && let Err(source) = stream.request_progress().await
                {
                    return End::Failed(shared.failure(Failure::Etcd {
                        operation: "watch: request progress".to_owned(),
                        source,
                    }));
                }
            }
        }
    }
}

/// Opens the watcher on the layout's range from `start`, with progress notifications.
async fn open(shared: &Shared, start: u64) -> Result<WatchStream, RegistryError> {
    let client = shared.client().await?;
    let (key, end) = shared.layout.watch_range();
    let options = WatchOptions::new()
        .with_range(end)
        .with_start_revision(i64::try_from(start).unwrap_or(i64::MAX))
        .with_progress_notify();
    shared
        .call(|| format!("watch from revision {start}"), async move {
            super::watch_client(&client).watch(key, Some(options)).await
        })
        .await
}

/// Sends the changes of one response on; `Some` when the session is over.
async fn forward(
    shared: &Shared,
    tx: &mpsc::Sender<WatchEvent>,
    response: &WatchResponse,
) -> Option<End> {
    if response.compact_revision() > 0 {
        return Some(End::Compacted(response.compact_revision()));
    }
    if response.canceled() {
        let reason = match response.cancel_reason() {
            "" => "etcd canceled the watch".to_owned(),
            reason => format!("etcd canceled the watch: {reason}"),
        };
        return Some(failed(shared, reason));
    }
    for event in super::group_by_revision(&shared.layout, response.events()) {
        if tx.send(event).await.is_err() {
            return Some(End::Closed);
        }
    }
    None
}

fn failed(shared: &Shared, message: String) -> End {
    End::Failed(shared.failure(Failure::Message(message)))
}
