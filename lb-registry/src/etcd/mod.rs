//! The `etcd://` backend: the tree in etcd v3 (gRPC), under a key prefix, as vulcand keeps
//! it. Behind the `etcd` feature.
//!
//! # URL
//!
//! ```text
//! etcd://HOST:PORT[,HOST:PORT...]/PREFIX[?flat=SPEC&flat=SPEC...]
//! etcd://HOST:PORT[,HOST:PORT...]/?prefix=KEY[&flat=SPEC...]
//! ```
//!
//! - **Endpoints** are plain `http://HOST:PORT` (port 2379 if omitted; IPv6 as `[::1]:2379`);
//!   requests are balanced over them. TLS and etcd authentication are not supported yet.
//! - **The prefix is the URL's path, leading slash included**, since that is what vulcand's
//!   documentation writes (`etcdctl put /vulcand/backends/b1/backend ...`):
//!   `etcd://10.0.0.1:2379/vulcand` holds the keys that start with `/vulcand/`. The registry
//!   always lists and watches `PREFIX + "/"`, so `/vulcand` never picks up `/vulcand2/...`.
//!   A trailing slash is ignored (`/vulcand/` is `/vulcand`).
//! - **Keys without a leading slash** (vulcand's v3 engine with its default `-etcdKey=vulcand`
//!   stores `vulcand/...`): give the prefix as a parameter instead of the path,
//!   `etcd://10.0.0.1:2379/?prefix=vulcand`. It is taken literally, so `?prefix=/vulcand`
//!   is the same as the path form. A URL without a prefix is an error rather than a guess.
//! - **`flat=`** adds a [flat prefix](crate::flat) (`flat=/test=apache`,
//!   `flat=/varnish/backends/*`): the keys under `PATH + "/"` (taken literally, as the
//!   prefix is) are listed and watched too and appear in the tree as servers
//!   (`backends/apache/servers/apache-8001`). Flat keys are read-only through the
//!   [`Registry`] trait: writes always go under the main prefix. Prefixes must not contain
//!   one another. A flat server whose tree key is also written under the main prefix is
//!   listed once, with the main prefix's value.
//! - Parameter values may be percent-encoded (`%2F`, `%3D`); [`describe`](Registry::describe)
//!   is the URL as given.
//!
//! Tree keys are relative and without a leading slash: `backends/b1/backend` is the etcd key
//! `/vulcand/backends/b1/backend`.
//!
//! # Revisions, list and watch
//!
//! Revisions are etcd's store revisions. [`list`](Registry::list) ranges the main prefix,
//! then each flat prefix at the revision of the first answer (pages of
//! [`LIST_PAGE`] keys, all at that revision), so the listing is one consistent state.
//!
//! [`watch`](Registry::watch) opens **one** etcd watcher from the given revision + 1, on the
//! smallest key range that covers every prefix, and keeps only the keys under them: one
//! watcher is what makes the stream totally ordered (etcd orders events per watcher; several
//! watchers on one stream may interleave out of revision order while catching up, and etcd
//! 3.4's progress notifications cannot be used to reorder them). Without flat prefixes the
//! range is exactly `PREFIX/`; with flat prefixes, the keys between them are received and
//! dropped, so keep the prefixes close (e.g. `/lb/vulcand` and `/lb/servers`) if busy
//! unrelated keys sort between them. Events carry their values (no key is read again) and
//! are emitted as one [`WatchEvent::Changes`] per etcd revision, in order.
//!
//! Answers are read whatever their size (up to [`MAX_MESSAGE_BYTES`], as etcd's Go client),
//! so one large value never stops the listing or the watch: judging a value is the
//! configuration's job, which reports it by key.
//!
//! The watch runs until the [`Watch`] or the registry is dropped:
//!
//! - **Compaction** (the start revision is gone): a [`WatchEvent::Reset`] with a fresh
//!   listing, then the watch continues after it.
//! - **Any error** (etcd unreachable, the connection broken, a canceled watch, no answer to
//!   a progress request for [`HEARTBEAT_TIMEOUT`]): a [`WatchEvent::Error`], then retries
//!   with exponential backoff (50 ms doubling to 2 s, forever), each failed attempt another
//!   `Error`; once etcd answers, a `Reset` with a fresh listing (not a replay), and changes
//!   from there.
//! - While idle, the watch asks etcd for a progress notification every
//!   [`HEARTBEAT_INTERVAL`]; the answers prove the stream is alive.
//!
//! # Writes and TTLs
//!
//! Writes go to `PREFIX/KEY`; each returns the revision etcd assigned. Deletes of a missing
//! key or prefix are [`RegistryError::NotFound`] (etcd reports how many keys it deleted).
//! [`put_if`](Registry::put_if) is one transaction comparing the key's `mod_revision`
//! ([`Precondition::Revision`]) or its version with 0 ([`Precondition::Absent`]); when it
//! fails, the same transaction reads the key so the [`RegistryError::Conflict`] names the
//! revision found.
//!
//! A TTL is an etcd lease: a put with a TTL grants one lease of the TTL rounded up to whole
//! seconds (at least 1 s) and attaches the key to it; when it runs out etcd deletes the key
//! and watchers see a [`Change::Delete`](crate::Change::Delete). The registry remembers which lease it attached to
//! each key: writing the key again (with a new TTL, or without one, which makes it
//! permanent) or deleting it revokes the old lease in the background.
//! [`refresh`](Registry::refresh) reads the key's lease from etcd and sends one lease
//! keep-alive: no new revision. It works on keys written by another process too, and is
//! [`RegistryError::NotFound`] when the key or its lease is gone. Writes of one registry run
//! one at a time, so the key-to-lease bookkeeping always matches etcd.
//!
//! # Failures
//!
//! Nothing here panics or exits when etcd is unreachable: every call fails within
//! [`REQUEST_TIMEOUT`] with a [`RegistryError::Backend`] naming the registry's URL and the
//! operation. Connections are made lazily, so [`EtcdRegistry::open`] succeeds while etcd is
//! down.

mod layout;
mod options;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, PutOptions,
    Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::OnceCell;

use crate::error::RegistryError;
use crate::flat::FlatPrefix;
use crate::registry::{
    BoxFuture, Listing, Precondition, Registry, Versioned, WatchEvent, check_key, check_prefix,
};
use crate::watch::Watch;

use layout::{Layout, range_end};
use options::Options;

/// The longest any single request to etcd may take before it fails with
/// [`RegistryError::Backend`] (a watch is not a single request: see the module doc).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle watch asks etcd for a progress notification.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The HTTP/2 keep-alive ping interval while requests or watches are open: finds a dead
/// connection under an idle watch. Not shorter: etcd's server answers clients that ping more
/// often than every 5 s (`--grpc-keepalive-min-time`) by closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a watch may hear nothing (not even the answer to a progress request) before it
/// is considered broken and reconnected.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);

/// How many keys one range request of [`list`](Registry::list) asks for, so a large tree
/// comes in answers of moderate size rather than one huge message.
pub const LIST_PAGE: i64 = 500;

/// The largest gRPC message this registry accepts from etcd: Go's clientv3 default
/// (`MaxCallRecvMsgSize`, 2 GiB), so that whatever etcd stores (values up to its
/// `--max-request-bytes`, a page of [`LIST_PAGE`] of them) can be read, as `etcdctl` and
/// vulcand read it. tonic's default of 4 MiB made one large value (or a page of a few
/// hundred 10 kB ones) fail every listing and every watch, so the registry could never
/// resynchronise again; what is too large for a configuration object is for the
/// configuration to reject, by key.
pub const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// etcd's largest lease TTL, in seconds (`MaxLeaseTTL`).
const MAX_LEASE_SECONDS: u64 = 9_000_000_000;

/// How many times `list` starts over when its revision is compacted between two pages.
const LIST_ATTEMPTS: usize = 3;

/// A registry in etcd v3: see the [module documentation](self) for the URL, the prefix
/// rule, flat prefixes, the watch and TTLs.
///
/// ```no_run
/// use lb_registry::{EtcdRegistry, Registry};
///
/// # async fn example() -> Result<(), lb_registry::RegistryError> {
/// // The keys under /vulcand/, plus confd-style servers under /test/.
/// let registry = EtcdRegistry::open("etcd://127.0.0.1:2379/vulcand?flat=/test=apache")?;
/// let listing = registry.list().await?;
/// let mut watch = registry.watch(listing.revision).await?;
/// while let Some(event) = watch.next().await {
///     println!("{event:?}");
/// }
/// # Ok(())
/// # }
/// ```
pub struct EtcdRegistry {
    shared: Arc<Shared>,
    /// Dropped with the registry: the watch tasks see the channel close and end their
    /// streams, so a dropped registry does not leave watches running.
    alive: tokio::sync::watch::Sender<()>,
    /// Serialises writes, so that the key → lease map always describes etcd's state.
    writes: tokio::sync::Mutex<()>,
}

/// What the watch tasks share with the registry.
struct Shared {
    /// The URL as given.
    url: String,
    endpoints: Vec<String>,
    layout: Layout,
    /// Connected on first use: `open` is synchronous and must work while etcd is down.
    client: OnceCell<Client>,
    /// The lease this registry attached to each key it wrote with a TTL.
    leases: Mutex<HashMap<String, i64>>,
}

/// Why a request to etcd failed: the source of [`RegistryError::Backend`].
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{operation}: {source}")]
    Etcd {
        operation: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{operation}: no answer from etcd within {timeout:?}")]
    Timeout {
        operation: String,
        timeout: Duration,
    },
    #[error("{0}")]
    Message(String),
}

impl EtcdRegistry {
    /// A registry for an `etcd://` URL (see the [module documentation](self)). Does not
    /// connect: the first request does, so this succeeds while etcd is down.
    ///
    /// Errors: [`RegistryError::InvalidUrl`] naming what is wrong with the URL.
    pub fn open(url: &str) -> Result<Self, RegistryError> {
        let Options {
            endpoints,
            prefix,
            flats,
        } = Options::parse(url)?;
        Ok(Self {
            shared: Arc::new(Shared {
                url: url.to_owned(),
                endpoints,
                layout: Layout::new(prefix, flats),
                client: OnceCell::new(),
                leases: Mutex::new(HashMap::new()),
            }),
            alive: tokio::sync::watch::Sender::new(()),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// The endpoints, as `http://HOST:PORT`.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    /// The main prefix, without its trailing slash: `/vulcand`, or `vulcand` from
    /// `?prefix=vulcand`. The tree is the etcd keys that start with this plus `/`.
    pub fn prefix(&self) -> &str {
        self.shared.layout.prefix()
    }

    /// The flat prefixes, in URL order.
    pub fn flat_prefixes(&self) -> impl Iterator<Item = &FlatPrefix> {
        self.shared.layout.flats()
    }

    async fn put_now(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Option<Precondition>,
    ) -> Result<u64, RegistryError> {
        check_key(key)?;
        let seconds = ttl.map(|ttl| lease_seconds(key, ttl)).transpose()?;
        let shared = &self.shared;
        let client = shared.client().await?;
        let etcd_key = shared.layout.etcd_key(key);
        let _writing = self.writes.lock().await;

        let lease = match seconds {
            Some(seconds) => {
                let operation = || format!("grant a {seconds} s lease for {etcd_key}");
                let granted = shared
                    .call(operation, client.lease_client().grant(seconds, None))
                    .await?;
                Some(granted.id())
            }
            None => None,
        };
        let options = lease.map(|id| PutOptions::new().with_lease(id));
        let written = match precondition {
            None => shared
                .call(
                    || format!("put {etcd_key}"),
                    kv_client(&client).put(etcd_key.as_str(), value, options),
                )
                .await
                .map(|response| revision(response.header())),
            Some(precondition) => {
                self.put_if_now(&client, key, &etcd_key, value, options, precondition)
                    .await
            }
        };
        let revision = match written {
            Ok(revision) => revision,
            Err(error) => {
                if let Some(id) = lease {
                    shared.revoke_later(&client, id);
                }
                return Err(error);
            }
        };
        let previous = {
            let mut leases = shared.leases();
            match lease {
                Some(id) => leases.insert(key.to_owned(), id),
                None => leases.remove(key),
            }
        };
        // The key is attached to the new lease (or to none): the old one holds nothing now.
        if let Some(old) = previous.filter(|old| Some(*old) != lease) {
            shared.revoke_later(&client, old);
        }
        Ok(revision)
    }

    /// The transaction of [`Registry::put_if`]: the put if the precondition holds, else a
    /// read of the key for the conflict's `found`.
    async fn put_if_now(
        &self,
        client: &Client,
        key: &str,
        etcd_key: &str,
        value: Bytes,
        options: Option<PutOptions>,
        precondition: Precondition,
    ) -> Result<u64, RegistryError> {
        let compare = match precondition {
            Precondition::Absent => vec![Compare::version(etcd_key, CompareOp::Equal, 0)],
            Precondition::Revision(expected) => {
                // A revision beyond i64 cannot exist: compare with -1, which fails.
                let expected = i64::try_from(expected).unwrap_or(-1);
                vec![
                    Compare::mod_revision(etcd_key, CompareOp::Equal, expected),
                    // A missing key has mod_revision 0: Revision(0) must not match it.
                    Compare::version(etcd_key, CompareOp::Greater, 0),
                ]
            }
        };
        let txn = Txn::new()
            .when(compare)
            .and_then([TxnOp::put(etcd_key, value, options)])
            .or_else([TxnOp::get(etcd_key, None)]);
        let response = self
            .shared
            .call(
                || format!("compare-and-put {etcd_key}"),
                kv_client(client).txn(txn),
            )
            .await?;
        if response.succeeded() {
            return Ok(revision(response.header()));
        }
        let found = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| to_u64(kv.mod_revision()))),
            _ => None,
        });
        Err(RegistryError::conflict(key, precondition, found.flatten()))
    }

    async fn delete_now(&self, key: &str, prefix: bool) -> Result<u64, RegistryError> {
        if prefix {
            check_prefix(key)?;
        } else {
            check_key(key)?;
        }
        let shared = &self.shared;
        let client = shared.client().await?;
        let etcd_key = shared.layout.etcd_key(key);
        let options = prefix.then(|| DeleteOptions::new().with_prefix());
        let _writing = self.writes.lock().await;
        let response = shared
            .call(
                || format!("delete {etcd_key}{}", if prefix { "*" } else { "" }),
                kv_client(&client).delete(etcd_key.as_str(), options),
            )
            .await?;
        if response.deleted() == 0 {
            return Err(RegistryError::NotFound {
                key: key.to_owned(),
            });
        }
        let orphans: Vec<i64> = {
            let mut leases = shared.leases();
            if prefix {
                let mut orphans = Vec::new();
                leases.retain(|k, id| {
                    let deleted = k.starts_with(key);
                    if deleted {
                        orphans.push(*id);
                    }
                    !deleted
                });
                orphans
            } else {
                leases.remove(key).into_iter().collect()
            }
        };
        for id in orphans {
            shared.revoke_later(&client, id);
        }
        Ok(revision(response.header()))
    }

    async fn refresh_now(&self, key: &str) -> Result<(), RegistryError> {
        check_key(key)?;
        let shared = &self.shared;
        let client = shared.client().await?;
        let etcd_key = shared.layout.etcd_key(key);
        let not_found = || RegistryError::NotFound {
            key: key.to_owned(),
        };
        // Ask etcd which lease holds the key rather than trusting our map: the key may have
        // been deleted, rewritten, or written by another process.
        let response = shared
            .call(
                || format!("get {etcd_key}"),
                client
                    .kv_client()
                    .get(etcd_key.as_str(), Some(GetOptions::new().with_keys_only())),
            )
            .await?;
        let lease = match response.kvs().first() {
            None => return Err(not_found()),
            Some(kv) if kv.lease() == 0 => {
                return Err(RegistryError::InvalidTtl {
                    key: key.to_owned(),
                    reason: "the key was written without a TTL".to_owned(),
                });
            }
            Some(kv) => kv.lease(),
        };
        let operation = || format!("keep lease {lease:x} of {etcd_key} alive");
        let kept = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let (_keeper, _responses) = client.lease_client().keep_alive(lease).await?;
            Ok::<_, etcd_client::Error>(())
        })
        .await;
        match kept {
            Ok(Ok(())) => Ok(()),
            // etcd answered TTL 0: the lease expired (or was revoked) just now.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                let mut leases = shared.leases();
                if leases.get(key) == Some(&lease) {
                    leases.remove(key);
                }
                Err(not_found())
            }
            Ok(Err(source)) => Err(shared.failure(Failure::Etcd {
                operation: operation(),
                source,
            })),
            Err(_elapsed) => Err(shared.failure(Failure::Timeout {
                operation: operation(),
                timeout: REQUEST_TIMEOUT,
            })),
        }
    }
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("url", &self.shared.url)
            .field("endpoints", &self.shared.endpoints)
            .field("layout", &self.shared.layout)
            .finish_non_exhaustive()
    }
}

impl Registry for EtcdRegistry {
    fn describe(&self) -> &str {
        &self.shared.url
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        Box::pin(self.shared.list())
    }

    fn watch(&self, revision: u64) -> BoxFuture<'_, Result<Watch, RegistryError>> {
        Box::pin(async move {
            Ok(watch::start(
                Arc::clone(&self.shared),
                self.alive.subscribe(),
                revision,
            ))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(self.put_now(key, value, ttl, None))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(self.delete_now(key, false))
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(self.delete_now(prefix, true))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, RegistryError>> {
        Box::pin(async move {
            check_key(key)?;
            let shared = &self.shared;
            let client = shared.client().await?;
            let etcd_key = shared.layout.etcd_key(key);
            let mut response = shared
                .call(
                    || format!("get {etcd_key}"),
                    kv_client(&client).get(etcd_key.as_str(), None),
                )
                .await?;
            Ok(response.take_kvs().into_iter().next().map(|kv| {
                let revision = to_u64(kv.mod_revision());
                let (_key, value) = kv.into_key_value();
                Versioned {
                    value: Bytes::from(value),
                    revision,
                }
            }))
        })
    }

    fn put_if<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Precondition,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(self.put_now(key, value, ttl, Some(precondition)))
    }

    fn refresh<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.refresh_now(key))
    }
}

// === impl Shared ===

impl Shared {
    /// The client, connecting on first use. Connecting is lazy in etcd-client too (the
    /// channel dials on the first request), so this fails only on a malformed endpoint.
    async fn client(&self) -> Result<Client, RegistryError> {
        self.client
            .get_or_try_init(|| async {
                let options = ConnectOptions::new()
                    .with_connect_timeout(REQUEST_TIMEOUT)
                    // HTTP/2 pings find a dead connection while a watch is idle.
                    .with_keep_alive(KEEPALIVE_INTERVAL, REQUEST_TIMEOUT)
                    // A member cut off from the leader cancels our watch instead of
                    // silently serving a stale view.
                    .with_require_leader(true);
                Client::connect(&self.endpoints, Some(options))
                    .await
                    .map_err(|source| {
                        self.failure(Failure::Etcd {
                            operation: format!("connect to {}", self.endpoints.join(",")),
                            source,
                        })
                    })
            })
            .await
            .cloned()
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        // Never held across a panic-prone call; a poisoned map is still consistent.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failure(&self, failure: Failure) -> RegistryError {
        RegistryError::backend(self.url.clone(), failure)
    }

    /// Awaits one request with [`REQUEST_TIMEOUT`]; errors name `operation`.
    async fn call<T>(
        &self,
        operation: impl FnOnce() -> String,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(self.failure(Failure::Etcd {
                operation: operation(),
                source,
            })),
            Err(_elapsed) => Err(self.failure(Failure::Timeout {
                operation: operation(),
                timeout: REQUEST_TIMEOUT,
            })),
        }
    }

    /// Revokes a lease that no key of ours is attached to any more, without making the
    /// caller wait; if it fails the lease simply runs out.
    fn revoke_later(&self, client: &Client, id: i64) {
        let mut lease = client.lease_client();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, lease.revoke(id)).await;
        });
    }

    /// The whole tree at one revision: see the module doc.
    async fn list(&self) -> Result<Listing, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.list_once().await {
                Err(ListError::Compacted) if attempt < LIST_ATTEMPTS => continue,
                Err(ListError::Compacted) => {
                    return Err(self.failure(Failure::Message(format!(
                        "list: the revision was compacted while listing, {LIST_ATTEMPTS} times"
                    ))));
                }
                Err(ListError::Registry(error)) => return Err(error),
                Ok(listing) => return Ok(listing),
            }
        }
    }

    async fn list_once(&self) -> Result<Listing, ListError> {
        let client = self.client().await?;
        let mut kv = kv_client(&client);
        let mut revision = 0;
        let mut tree = BTreeMap::new();
        for prefix in self.layout.list_prefixes() {
            let end = range_end(prefix.as_bytes());
            let mut from = prefix.as_bytes().to_vec();
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(LIST_PAGE);
                if revision != 0 {
                    options = options.with_revision(revision);
                }
                let request = kv.get(from.clone(), Some(options));
                let mut response: GetResponse =
                    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(etcd_client::Error::GRpcStatus(status)))
                            if status.message().contains("compacted") =>
                        {
                            return Err(ListError::Compacted);
                        }
                        Ok(Err(source)) => {
                            return Err(self
                                .failure(Failure::Etcd {
                                    operation: format!("list {prefix}"),
                                    source,
                                })
                                .into());
                        }
                        Err(_elapsed) => {
                            return Err(self
                                .failure(Failure::Timeout {
                                    operation: format!("list {prefix}"),
                                    timeout: REQUEST_TIMEOUT,
                                })
                                .into());
                        }
                    };
                if revision == 0 {
                    revision = response.header().map_or(0, |h| h.revision());
                }
                let more = response.more();
                let kvs = response.take_kvs();
                if let Some(last) = kvs.last() {
                    // The next page starts right after the last key.
                    from = last.key().to_vec();
                    from.push(0);
                }
                for kv in kvs {
                    let (key, value) = kv.into_key_value();
                    if let Some(entry) = self.layout.entry(&key, Bytes::from(value)) {
                        // The main prefix is listed first and wins over a flat duplicate.
                        tree.entry(entry.key).or_insert(entry.value);
                    }
                }
                if !more {
                    break;
                }
            }
        }
        Ok(Listing {
            revision: to_u64(revision),
            entries: tree
                .into_iter()
                .map(|(key, value)| lb_core::kv::KeyValue { key, value })
                .collect(),
        })
    }
}

enum ListError {
    /// The listing's revision was compacted between two pages: start over.
    Compacted,
    Registry(RegistryError),
}

impl From<RegistryError> for ListError {
    fn from(error: RegistryError) -> Self {
        ListError::Registry(error)
    }
}

// === helpers ===

/// The lease TTL for `ttl`: whole seconds, rounded up, at least 1.
fn lease_seconds(key: &str, ttl: Duration) -> Result<i64, RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidTtl {
        key: key.to_owned(),
        reason,
    };
    if ttl.is_zero() {
        return Err(invalid("the TTL must be positive".to_owned()));
    }
    let seconds = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    if seconds > MAX_LEASE_SECONDS {
        return Err(invalid(format!(
            "etcd leases last at most {MAX_LEASE_SECONDS} s; {ttl:?} is too long"
        )));
    }
    i64::try_from(seconds).map_err(|_| invalid(format!("{ttl:?} is too long")))
}

/// A KV client that accepts answers up to [`MAX_MESSAGE_BYTES`].
fn kv_client(client: &Client) -> etcd_client::KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// A watch client that accepts answers up to [`MAX_MESSAGE_BYTES`].
fn watch_client(client: &Client) -> etcd_client::WatchClient {
    client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// The revision in a response header (etcd always sends one).
fn revision(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    to_u64(header.map_or(0, |h| h.revision()))
}

/// etcd's revisions are non-negative `i64`s.
fn to_u64(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

/// The changes of one watch response, grouped by revision in order: etcd sends a revision's
/// events together and in revision order, so grouping consecutive events is enough.
fn group_by_revision(layout: &Layout, events: &[etcd_client::Event]) -> Vec<WatchEvent> {
    let mut grouped: Vec<WatchEvent> = Vec::new();
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let revision = to_u64(kv.mod_revision());
        let change = match event.event_type() {
            etcd_client::EventType::Put => layout.put(kv.key(), Bytes::copy_from_slice(kv.value())),
            etcd_client::EventType::Delete => layout.delete(kv.key()),
        };
        let Some(change) = change else { continue };
        match grouped.last_mut() {
            Some(WatchEvent::Changes {
                revision: last,
                changes,
            }) if *last == revision => changes.push(change),
            _ => grouped.push(WatchEvent::Changes {
                revision,
                changes: vec![change],
            }),
        }
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_seconds_round_up_to_whole_seconds() {
        let key = "backends/b1/servers/s1";
        assert_eq!(lease_seconds(key, Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(lease_seconds(key, Duration::from_millis(1000)).unwrap(), 1);
        assert_eq!(lease_seconds(key, Duration::from_millis(1001)).unwrap(), 2);
        assert_eq!(lease_seconds(key, Duration::from_secs(30)).unwrap(), 30);
        for bad in [Duration::ZERO, Duration::MAX] {
            assert!(matches!(
                lease_seconds(key, bad),
                Err(RegistryError::InvalidTtl { .. })
            ));
        }
    }

    #[test]
    fn open_parses_without_connecting() {
        let registry = EtcdRegistry::open("etcd://127.0.0.1:1/vulcand?flat=/test=apache").unwrap();
        assert_eq!(registry.prefix(), "/vulcand");
        assert_eq!(registry.endpoints(), ["http://127.0.0.1:1"]);
        assert_eq!(registry.flat_prefixes().count(), 1);
        assert_eq!(
            registry.describe(),
            "etcd://127.0.0.1:1/vulcand?flat=/test=apache"
        );
    }
}
