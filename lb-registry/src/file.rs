//! The `file://PATH` backend: one TOML or JSON document in lb-core's file form, watched for
//! edits.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lb_core::file::Format;
use lb_core::kv::KeyValue;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::error::RegistryError;
use crate::registry::{BoxFuture, Listing, Precondition, Registry, Versioned, WatchEvent};
use crate::watch::Watch;

/// How long a [`FileRegistry`] waits for a burst of file-system events to settle before it
/// re-reads the file: consul-template's `wait { min, max }` quiescence.
///
/// After an event, the file is read once no new event has arrived for `min`, and never later
/// than `max` after the first event of the burst, so a directory that never goes quiet still
/// gets its file re-read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiescence {
    /// Quiet time that ends a burst. Default 100 ms: long enough for an editor's
    /// write-rename-chmod sequence, short enough to feel immediate.
    pub min: Duration,
    /// Longest wait after the first event of a burst. Default 1 s.
    pub max: Duration,
}

impl Default for Quiescence {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

/// A read-only registry backed by one configuration file.
///
/// The file is TOML or JSON by its extension (`.toml`, `.json`) in lb-core's single-document
/// form ([`lb_core::file`]).
///
/// - **Startup**: [`FileRegistry::open`] fails if the file is missing, unreadable or does not
///   parse; there is no last good tree to fall back on.
/// - **Edits**: the file's *directory* is watched (the `notify` crate: inotify, FSEvents, ...)
///   so editors that write a temporary file and rename it over the original, and Kubernetes
///   ConfigMap symlink swaps, are seen; if the file is a symlink, the directory of its
///   target (at startup) is watched too. After a burst of events settles ([`Quiescence`]) the
///   file is re-read; if its bytes did not change nothing happens. A good edit makes a new
///   revision (every successful reload adds one, starting at 1) and watchers receive a
///   [`WatchEvent::Reset`] with the whole new tree. A bad edit (parse error, the file
///   removed, an empty file) that is still bad after one more quiet period (so a file
///   caught mid-write is not reported) sends [`WatchEvent::Error`] naming the file and, for
///   parse errors, the position; the last good tree stays and [`Registry::list`] keeps
///   returning it.
/// - An **empty** file is accepted at startup (an empty tree) but treated as an error on
///   reload: a program that rewrites the file in place truncates it first, and applying that
///   moment would remove every route.
/// - **Writes**: [`put`](Registry::put) and the deletes return [`RegistryError::ReadOnly`].
/// - A watch from a revision older than the current one starts with a Reset of the current
///   tree.
///
/// The watcher runs on its own thread, so the registry needs no async runtime; dropping the
/// registry stops it and ends every [`Watch`].
pub struct FileRegistry {
    shared: Arc<Shared>,
    // Dropping it stops notify's thread, which drops the sender and so ends the reload thread.
    _watcher: RecommendedWatcher,
}

struct Shared {
    path: PathBuf,
    format: Format,
    description: String,
    state: Mutex<State>,
}

struct State {
    listing: Listing,
    /// What the last read saw (bytes or the error kind), so events that did not change the
    /// file (our own reads, `touch`, other files in the directory) cause no event.
    last_read: Result<Vec<u8>, io::ErrorKind>,
    watchers: Vec<mpsc::UnboundedSender<WatchEvent>>,
}

impl FileRegistry {
    /// Loads `path` and starts watching it, with the default [`Quiescence`].
    ///
    /// A relative path is resolved against the current directory now, so a later
    /// `chdir` does not change which file is watched.
    ///
    /// Errors: [`RegistryError::UnknownFormat`] for an extension other than `.toml` or
    /// `.json`, [`RegistryError::Io`] if the file cannot be read,
    /// [`RegistryError::Parse`] if it does not parse, [`RegistryError::Backend`] if the
    /// directory cannot be watched.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RegistryError> {
        Self::open_with(path, Quiescence::default())
    }

    /// Like [`FileRegistry::open`], with the given debounce.
    pub fn open_with(
        path: impl AsRef<Path>,
        quiescence: Quiescence,
    ) -> Result<Self, RegistryError> {
        let path = absolute(path.as_ref())?;
        let format = Format::from_path(&path)
            .ok_or_else(|| RegistryError::UnknownFormat { path: path.clone() })?;
        let description = format!("file://{}", path.display());
        let dir = path.parent().map(Path::to_path_buf).ok_or_else(|| {
            RegistryError::io(&path, io::Error::other("the path has no directory"))
        })?;

        let bytes = std::fs::read(&path).map_err(|e| RegistryError::io(&path, e))?;
        let entries = parse(&path, format, &bytes)?;

        let (events_tx, events_rx) = std_mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the registry is being dropped.
            let _ = events_tx.send(event);
        })
        .map_err(|e| RegistryError::backend(&description, e))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| {
                RegistryError::backend(
                    &description,
                    format!("cannot watch directory {}: {e}", dir.display()),
                )
            })?;
        // A symlinked file is edited where it really lives: watch that directory too (as it
        // is now; a symlink swap in `dir` is seen through `dir` itself).
        if let Some(target_dir) = std::fs::canonicalize(&path)
            .ok()
            .and_then(|target| target.parent().map(Path::to_path_buf))
            .filter(|target_dir| std::fs::canonicalize(&dir).ok().as_ref() != Some(target_dir))
        {
            watcher
                .watch(&target_dir, RecursiveMode::NonRecursive)
                .map_err(|e| {
                    RegistryError::backend(
                        &description,
                        format!("cannot watch directory {}: {e}", target_dir.display()),
                    )
                })?;
        }

        let shared = Arc::new(Shared {
            path,
            format,
            description,
            state: Mutex::new(State {
                listing: Listing::new(1, entries),
                last_read: Ok(bytes),
                watchers: Vec::new(),
            }),
        });

        let reloader = Arc::clone(&shared);
        thread::Builder::new()
            .name("lb-registry-file".to_owned())
            .spawn(move || {
                reload_loop(&reloader, &events_rx, quiescence);
            })
            .map_err(|e| RegistryError::backend(&shared.description, e))?;

        Ok(Self {
            shared,
            _watcher: watcher,
        })
    }

    /// The watched file, made absolute.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn read_only(&self) -> RegistryError {
        RegistryError::ReadOnly {
            registry: self.shared.description.clone(),
        }
    }
}

impl fmt::Debug for FileRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRegistry")
            .field("path", &self.shared.path)
            .field("format", &self.shared.format)
            .field("revision", &self.shared.lock().listing.revision)
            .finish()
    }
}

impl Registry for FileRegistry {
    fn describe(&self) -> &str {
        &self.shared.description
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        Box::pin(async move { Ok(self.shared.lock().listing.clone()) })
    }

    fn watch(&self, revision: u64) -> BoxFuture<'_, Result<Watch, RegistryError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut state = self.shared.lock();
            if revision < state.listing.revision {
                let _ = tx.send(WatchEvent::Reset(state.listing.clone()));
            }
            state.watchers.push(tx);
            Ok(rx.into())
        })
    }

    fn put<'a>(
        &'a self,
        _key: &'a str,
        _value: Bytes,
        _ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { Err(self.read_only()) })
    }

    fn delete<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { Err(self.read_only()) })
    }

    fn delete_prefix<'a>(&'a self, _prefix: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { Err(self.read_only()) })
    }

    /// The file has no per-key revisions: a key's revision is the file's.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, RegistryError>> {
        Box::pin(async move {
            let state = self.shared.lock();
            Ok(state.listing.get(key).map(|value| Versioned {
                value: value.clone(),
                revision: state.listing.revision,
            }))
        })
    }

    fn put_if<'a>(
        &'a self,
        _key: &'a str,
        _value: Bytes,
        _ttl: Option<Duration>,
        _precondition: Precondition,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { Err(self.read_only()) })
    }

    fn refresh<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { Err(self.read_only()) })
    }
}

// === reloading ===

type NotifyEvent = notify::Result<notify::Event>;

/// Waits for file-system events, lets each burst settle, then reloads. Returns (`None`)
/// when the watcher is dropped and the event channel disconnects.
fn reload_loop(
    shared: &Shared,
    events: &std_mpsc::Receiver<NotifyEvent>,
    quiescence: Quiescence,
) -> Option<()> {
    // An edit between the first read and the start of the watch made no event, so the first
    // pass re-reads the file without waiting for one (after the usual settling time).
    let mut first_pass = true;
    loop {
        if !first_pass {
            wait_for_change(shared, events)?;
        }
        first_pass = false;
        settle(shared, events, quiescence)?;
        if shared.reload(false) == Reload::Retry {
            settle(shared, events, quiescence)?;
            shared.reload(true);
        }
    }
}

/// Blocks until an event that may have changed the file; `None` when disconnected.
fn wait_for_change(shared: &Shared, events: &std_mpsc::Receiver<NotifyEvent>) -> Option<()> {
    loop {
        if shared.is_relevant(events.recv().ok()?) {
            return Some(());
        }
    }
}

/// Returns once no relevant event came for `quiescence.min`, or `quiescence.max` after it
/// was called; `None` when disconnected.
fn settle(
    shared: &Shared,
    events: &std_mpsc::Receiver<NotifyEvent>,
    quiescence: Quiescence,
) -> Option<()> {
    let first = Instant::now();
    let mut last = first;
    loop {
        let deadline = (last + quiescence.min).min(first + quiescence.max);
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Some(());
        };
        match events.recv_timeout(left) {
            // Only events that may have changed the file restart the quiet time.
            Ok(event) => {
                if shared.is_relevant(event) {
                    last = Instant::now();
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => return Some(()),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds a whole state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `event` may have changed the file. Reads (including our own) do not; any
    /// other change in the directory does, because a rename or a symlink swap can replace
    /// the file under another name. A watcher error is passed on to watchers and causes a
    /// re-read too.
    fn is_relevant(&self, event: NotifyEvent) -> bool {
        match event {
            Ok(event) => match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            },
            Err(e) => {
                let error = RegistryError::backend(&self.description, e);
                self.lock().broadcast(WatchEvent::Error(error));
                true
            }
        }
    }

    /// Re-reads the file; on a change, installs the new tree and sends a Reset, or keeps the
    /// last good tree and sends an Error.
    ///
    /// Unless `last_try`, a read that fails is not reported but answered [`Reload::Retry`]: a
    /// file caught in the middle of an in-place rewrite (truncated, half written) is
    /// usually whole after one more quiet period, and reporting it would alarm for nothing.
    fn reload(&self, last_try: bool) -> Reload {
        let read = std::fs::read(&self.path);
        let mut state = self.lock();
        let seen = match &read {
            Ok(bytes) => Ok(bytes.clone()),
            Err(e) => Err(e.kind()),
        };
        if seen == state.last_read {
            return Reload::Done;
        }
        let parsed = match read {
            Err(e) => Err(RegistryError::io(&self.path, e)),
            Ok(bytes) if bytes.is_empty() => Err(RegistryError::io(
                &self.path,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the file is empty; keeping the last good configuration",
                ),
            )),
            Ok(bytes) => parse(&self.path, self.format, &bytes),
        };
        if parsed.is_err() && !last_try {
            return Reload::Retry;
        }
        state.last_read = seen;
        let event = match parsed {
            Ok(entries) => {
                state.listing = Listing::new(state.listing.revision + 1, entries);
                WatchEvent::Reset(state.listing.clone())
            }
            Err(e) => WatchEvent::Error(e),
        };
        state.broadcast(event);
        Reload::Done
    }
}

/// Whether a reload is finished or wants another look after the next quiet period.
#[derive(PartialEq, Eq)]
enum Reload {
    Done,
    Retry,
}

impl State {
    fn broadcast(&mut self, event: WatchEvent) {
        // A failed send means that Watch was dropped: forget it.
        self.watchers.retain(|tx| tx.send(event.clone()).is_ok());
    }
}

fn parse(path: &Path, format: Format, bytes: &[u8]) -> Result<Vec<KeyValue>, RegistryError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        RegistryError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8: {e}")),
        )
    })?;
    lb_core::file::parse(text, format).map_err(|e| RegistryError::Parse {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })
}

fn absolute(path: &Path) -> Result<PathBuf, RegistryError> {
    if path.as_os_str().is_empty() {
        return Err(RegistryError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "the path is empty"),
        ));
    }
    std::path::absolute(path).map_err(|e| RegistryError::io(path, e))
}
