//! The file backend on real files: initial load, good and bad edits, rename-replace edits,
//! startup errors. Every wait is for an event, with a generous timeout; nothing asserts how
//! long anything took.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_registry::{FileRegistry, Listing, Registry, RegistryError, Watch, WatchEvent};

const WAIT: Duration = Duration::from_secs(10);

/// A TOML document with backend `b1` and servers `s1..=n`.
fn doc(servers: usize) -> String {
    let mut text = String::from("[backends.b1]\n");
    for i in 1..=servers {
        text.push_str(&format!(
            "servers.s{i} = {{ URL = \"http://127.0.0.1:{}\" }}\n",
            9000 + i
        ));
    }
    text
}

/// Not TOML: the table header on line 2 is never closed.
const BAD: &str = "[backends.b1]\n[frontends.f1\nBackendId = \"b1\"\n";

fn keys(listing: &Listing) -> Vec<&str> {
    listing.entries.iter().map(|kv| kv.key.as_str()).collect()
}

fn server_keys(n: usize) -> Vec<String> {
    let mut keys = vec!["backends/b1/backend".to_owned()];
    keys.extend((1..=n).map(|i| format!("backends/b1/servers/s{i}")));
    keys
}

/// A fresh directory with `lb.toml` holding `text`.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("lb-registry-test")
        .tempdir()
        .unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Replaces the file the way many editors save: write a temporary file, rename it over.
fn rename_replace(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Lets the registry's first look at the file (right after open, to catch edits made while it
/// started) pass, so the edit that follows is seen through a file-system event. On a slow
/// machine the edit may still land in the first look; the test then passes without proving
/// as much, never fails.
async fn let_startup_settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("no watch event within the timeout")
        .expect("the watch ended")
}

async fn next_reset(watch: &mut Watch) -> Listing {
    match next(watch).await {
        WatchEvent::Reset(listing) => listing,
        other => panic!("expected Reset, got {other:?}"),
    }
}

async fn next_error(watch: &mut Watch) -> RegistryError {
    match next(watch).await {
        WatchEvent::Error(error) => error,
        other => panic!("expected Error, got {other:?}"),
    }
}

#[tokio::test]
async fn initial_load_lists_the_file_at_revision_1() {
    let (_dir, path) = config_file(&doc(2));
    let registry = FileRegistry::open(&path).unwrap();
    let listing = registry.list().await.unwrap();
    assert_eq!(listing.revision, 1);
    assert_eq!(keys(&listing), server_keys(2));
    assert_eq!(registry.describe(), format!("file://{}", path.display()));
}

#[tokio::test]
async fn json_files_load_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.json");
    std::fs::write(&path, r#"{"listeners": {"l1": {"Protocol": "http"}}}"#).unwrap();
    let registry = FileRegistry::open(&path).unwrap();
    assert_eq!(keys(&registry.list().await.unwrap()), ["listeners/l1"]);
}

#[tokio::test]
async fn good_edit_sends_a_reset_with_the_new_entries() {
    let (_dir, path) = config_file(&doc(1));
    let registry = FileRegistry::open(&path).unwrap();
    let mut watch = registry.watch(1).await.unwrap();
    let_startup_settle().await;

    std::fs::write(&path, doc(3)).unwrap();

    let listing = next_reset(&mut watch).await;
    assert_eq!(listing.revision, 2);
    assert_eq!(keys(&listing), server_keys(3));
    assert_eq!(registry.list().await.unwrap(), listing);
}

#[tokio::test]
async fn bad_edit_sends_an_error_naming_the_file_and_keeps_the_last_good_tree() {
    let (_dir, path) = config_file(&doc(2));
    let registry = FileRegistry::open(&path).unwrap();
    let good = registry.list().await.unwrap();
    let mut watch = registry.watch(good.revision).await.unwrap();

    std::fs::write(&path, BAD).unwrap();

    let error = next_error(&mut watch).await;
    assert!(
        matches!(&error, RegistryError::Parse { path: p, .. } if *p == path),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("line 2"),
        "the message names the position: {message}"
    );
    assert_eq!(registry.list().await.unwrap(), good);

    // Fixing the file recovers, with the next revision.
    std::fs::write(&path, doc(1)).unwrap();
    let listing = next_reset(&mut watch).await;
    assert_eq!(
        (listing.revision, keys(&listing)),
        (2, server_keys(1).iter().map(String::as_str).collect())
    );
}

#[tokio::test]
async fn rename_replace_edits_are_seen() {
    let (_dir, path) = config_file(&doc(1));
    let registry = FileRegistry::open(&path).unwrap();
    let mut watch = registry.watch(1).await.unwrap();
    let_startup_settle().await;

    rename_replace(&path, &doc(2));
    assert_eq!(keys(&next_reset(&mut watch).await), server_keys(2));

    // The new file is watched as well as the first one was.
    rename_replace(&path, &doc(4));
    let listing = next_reset(&mut watch).await;
    assert_eq!(
        (listing.revision, keys(&listing)),
        (3, server_keys(4).iter().map(String::as_str).collect())
    );
}

#[tokio::test]
async fn removed_or_emptied_file_is_an_error_and_keeps_the_last_good_tree() {
    let (_dir, path) = config_file(&doc(2));
    let registry = FileRegistry::open(&path).unwrap();
    let good = registry.list().await.unwrap();
    let mut watch = registry.watch(good.revision).await.unwrap();

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        next_error(&mut watch).await,
        RegistryError::Io { .. }
    ));
    assert_eq!(registry.list().await.unwrap(), good);

    std::fs::write(&path, "").unwrap();
    assert!(matches!(
        next_error(&mut watch).await,
        RegistryError::Io { .. }
    ));
    assert_eq!(registry.list().await.unwrap(), good);

    std::fs::write(&path, doc(3)).unwrap();
    assert_eq!(keys(&next_reset(&mut watch).await), server_keys(3));
}

#[tokio::test]
async fn rewriting_the_same_bytes_makes_no_new_revision() {
    let (_dir, path) = config_file(&doc(1));
    let registry = FileRegistry::open(&path).unwrap();
    let mut watch = registry.watch(1).await.unwrap();

    std::fs::write(&path, doc(1)).unwrap();
    // Give the rewrite its own burst when the machine is quick; when it is not, the two writes
    // merge and the assertions below hold all the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&path, doc(2)).unwrap();

    let listing = next_reset(&mut watch).await;
    assert_eq!(listing.revision, 2);
    assert_eq!(keys(&listing), server_keys(2));
}

#[tokio::test]
async fn watch_from_an_old_revision_starts_with_the_current_tree() {
    let (_dir, path) = config_file(&doc(1));
    let registry = FileRegistry::open(&path).unwrap();
    let mut first = registry.watch(1).await.unwrap();
    std::fs::write(&path, doc(2)).unwrap();
    next_reset(&mut first).await;

    let mut late = registry.watch(1).await.unwrap();
    let listing = next_reset(&mut late).await;
    assert_eq!((listing.revision, keys(&listing).len()), (2, 3));
}

#[tokio::test]
async fn missing_file_is_an_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let error = FileRegistry::open(&path).unwrap_err();
    assert!(
        matches!(&error, RegistryError::Io { path: p, .. } if *p == path),
        "{error:?}"
    );
    assert!(error.to_string().contains("absent.toml"), "{error}");
}

#[tokio::test]
async fn bad_file_at_startup_is_a_parse_error_naming_the_position() {
    let (_dir, path) = config_file(BAD);
    let error = FileRegistry::open(&path).unwrap_err();
    assert!(matches!(error, RegistryError::Parse { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("lb.toml") && message.contains("line 2"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_extension_is_an_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.yaml");
    std::fs::write(&path, "").unwrap();
    assert!(matches!(
        FileRegistry::open(&path),
        Err(RegistryError::UnknownFormat { .. })
    ));
}

#[tokio::test]
async fn writes_are_refused_as_read_only() {
    let (_dir, path) = config_file(&doc(1));
    let registry = FileRegistry::open(&path).unwrap();
    let key = "backends/b1/servers/s9";
    let errors = [
        registry.put(key, "{}".into(), None).await.unwrap_err(),
        registry.delete(key).await.unwrap_err(),
        registry.delete_prefix("backends/").await.unwrap_err(),
    ];
    for error in errors {
        assert!(matches!(error, RegistryError::ReadOnly { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}

#[tokio::test]
async fn watch_ends_when_the_registry_is_dropped() {
    let (_dir, path) = config_file(&doc(1));
    let registry = FileRegistry::open(&path).unwrap();
    let mut watch = registry.watch(1).await.unwrap();
    drop(registry);
    let end = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the watch did not end");
    assert!(end.is_none());
}

#[tokio::test]
async fn edits_to_the_target_of_a_symlinked_file_are_seen() {
    let links = tempfile::tempdir().unwrap();
    let (_real_dir, real) = config_file(&doc(1));
    let path = links.path().join("lb.toml");
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let registry = FileRegistry::open(&path).unwrap();
    let mut watch = registry.watch(1).await.unwrap();
    let_startup_settle().await;

    std::fs::write(&real, doc(2)).unwrap();
    assert_eq!(keys(&next_reset(&mut watch).await), server_keys(2));
}

#[tokio::test]
async fn kubernetes_configmap_symlink_swaps_are_seen() {
    // kubelet's layout: lb.toml -> ..data/lb.toml, ..data -> ..v1; an update writes ..v2 and
    // renames a new ..data link over the old one.
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, text: &str| {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("lb.toml"), text).unwrap();
    };
    version("..v1", &doc(1));
    std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/lb.toml", dir.path().join("lb.toml")).unwrap();
    let registry = FileRegistry::open(dir.path().join("lb.toml")).unwrap();
    let mut watch = registry.watch(1).await.unwrap();
    let_startup_settle().await;

    version("..v2", &doc(3));
    std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();

    assert_eq!(keys(&next_reset(&mut watch).await), server_keys(3));
}
