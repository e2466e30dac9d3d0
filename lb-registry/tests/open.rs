//! `open(url)`: scheme dispatch, relative and absolute file paths, clear errors.

use std::path::{Component, Path, PathBuf};

use lb_registry::{RegistryError, open};

#[tokio::test]
async fn memory_url_opens_an_empty_writable_registry() {
    let registry = open("memory://").unwrap();
    assert_eq!(registry.describe(), "memory://");
    assert_eq!(registry.to_string(), "memory://");
    registry
        .put("listeners/l1", "{}".into(), None)
        .await
        .unwrap();
    assert_eq!(registry.list().await.unwrap().revision, 1);
    // Each URL opens its own tree.
    assert_eq!(open("MEMORY://").unwrap().list().await.unwrap().revision, 0);
}

#[test]
fn memory_url_with_an_address_is_invalid() {
    assert!(matches!(
        open("memory://x"),
        Err(RegistryError::InvalidUrl { .. })
    ));
}

fn config_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, "[listeners.l1]\nProtocol = \"http\"\n").unwrap();
    (dir, path)
}

#[tokio::test]
async fn file_url_with_an_absolute_path() {
    let (_dir, path) = config_dir();
    assert!(path.is_absolute());
    let registry = open(&format!("file://{}", path.display())).unwrap();
    assert_eq!(registry.describe(), format!("file://{}", path.display()));
    assert_eq!(registry.list().await.unwrap().entries.len(), 1);
}

/// `path` relative to the current directory, through `..` up to the root.
fn relative_to_cwd(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let mut relative = PathBuf::new();
    for _ in cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
    {
        relative.push("..");
    }
    relative.join(path.strip_prefix("/").unwrap())
}

#[tokio::test]
async fn file_url_with_a_relative_path() {
    let (_dir, path) = config_dir();
    let relative = relative_to_cwd(&path);
    assert!(relative.is_relative());
    let registry = open(&format!("file://{}", relative.display())).unwrap();
    assert_eq!(registry.list().await.unwrap().entries.len(), 1);
    // The description is absolute, so logs say which file it is.
    assert!(
        registry.describe().starts_with("file:///"),
        "{}",
        registry.describe()
    );
}

#[test]
fn file_url_errors_name_the_problem() {
    assert!(matches!(
        open("file://"),
        Err(RegistryError::InvalidUrl { .. })
    ));
    let error = open("file:///nonexistent-dir-lb-registry/lb.toml").unwrap_err();
    assert!(matches!(error, RegistryError::Io { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("/nonexistent-dir-lb-registry/lb.toml"),
        "{error}"
    );
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_urls_need_the_etcd_feature() {
    let error = open("etcd://127.0.0.1:2379/vulcand").unwrap_err();
    assert!(
        matches!(&error, RegistryError::Unsupported { scheme: s } if s == "etcd"),
        "{error:?}"
    );
    assert!(error.to_string().contains("feature"), "{error}");
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_urls_open_without_connecting() {
    // The client connects on first use, so opening works while etcd is down.
    let registry = open("etcd://127.0.0.1:1/vulcand").unwrap();
    assert_eq!(registry.describe(), "etcd://127.0.0.1:1/vulcand");
}

#[cfg(not(feature = "consul"))]
#[test]
fn consul_urls_need_the_consul_feature() {
    for (url, scheme) in [
        ("consul://127.0.0.1:8500/lb", "consul"),
        ("consul-catalog://127.0.0.1:8500?tag=rest", "consul-catalog"),
    ] {
        let error = open(url).unwrap_err();
        assert!(
            matches!(&error, RegistryError::Unsupported { scheme: s } if s == scheme),
            "{error:?}"
        );
    }
}

#[cfg(feature = "consul")]
#[test]
fn consul_urls_open_the_consul_registries_without_connecting() {
    let registry = open("consul://127.0.0.1:8500//vulcand/?flat=/test=apache").unwrap();
    assert_eq!(
        registry.describe(),
        "consul://127.0.0.1:8500/vulcand?flat=/test=apache"
    );
    let registry = open("consul-catalog://127.0.0.1?tag=web").unwrap();
    assert_eq!(
        registry.describe(),
        "consul-catalog://127.0.0.1:8500?tag=web&overrides=lb/services"
    );
    for url in [
        "consul://127.0.0.1:8500",
        "consul://127.0.0.1:8500/lb?flat=/test",
        "consul://127.0.0.1:8500/lb?bogus=1",
        "consul-catalog://127.0.0.1:8500/path",
        "consul-catalog://127.0.0.1:8500?tag=",
    ] {
        let error = open(url).unwrap_err();
        assert!(
            matches!(error, RegistryError::InvalidUrl { .. }),
            "{url}: {error:?}"
        );
        assert!(error.to_string().contains(url), "{error}");
    }
}

#[test]
fn unknown_scheme_and_missing_scheme_are_errors_naming_them() {
    let error = open("redis://127.0.0.1").unwrap_err();
    assert!(matches!(&error, RegistryError::UnknownScheme { scheme, .. } if scheme == "redis"));
    assert!(error.to_string().contains("\"redis\""), "{error}");

    let error = open("/etc/lb.toml").unwrap_err();
    assert!(
        matches!(error, RegistryError::InvalidUrl { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("/etc/lb.toml"), "{error}");
}
