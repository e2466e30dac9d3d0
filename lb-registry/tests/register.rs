//! Self-registration against the memory registry, under tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb_registry::register::{Probe, Registration, RegistrationState, ServerRegistration};
use lb_registry::{MemoryRegistry, Registry};

const KEY: &str = "backends/b1/servers/s1";

fn server() -> ServerRegistration {
    ServerRegistration::new("b1", "s1", "http://127.0.0.1:8080", Duration::from_secs(3))
}

#[tokio::test(start_paused = true)]
async fn registration_stays_alive_without_new_revisions_and_stop_removes_it() {
    let registry = Arc::new(MemoryRegistry::new());
    let registration = Registration::start(registry.clone(), server());
    registration.registered().await.unwrap();
    let written = registry.get(KEY).await.unwrap().unwrap();
    assert_eq!(&written.value[..], br#"{"URL":"http://127.0.0.1:8080"}"#);

    // Ten TTLs later it is still there, refreshed without rewriting.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(registry.get(KEY).await.unwrap(), Some(written));
    assert_eq!(registry.revision(), 1);

    registration.stop().await;
    assert_eq!(registry.get(KEY).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_registration_expires_with_its_ttl() {
    let registry = Arc::new(MemoryRegistry::new());
    let registration = Registration::start(registry.clone(), server());
    registration.registered().await.unwrap();
    drop(registration); // the process died
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(registry.get(KEY).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(registry.get(KEY).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_removes_the_server_and_a_passing_one_restores_it() {
    let registry = Arc::new(MemoryRegistry::new());
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let probe: Probe = Arc::new(move || {
        let up = flag.load(Ordering::SeqCst);
        Box::pin(async move { up })
    });
    let registration = Registration::start(registry.clone(), server().with_probe(probe));
    let mut state = registration.state();
    registration.registered().await.unwrap();

    healthy.store(false, Ordering::SeqCst);
    state
        .wait_for(|s| *s == RegistrationState::Unhealthy)
        .await
        .unwrap();
    assert_eq!(registry.get(KEY).await.unwrap(), None);

    healthy.store(true, Ordering::SeqCst);
    state
        .wait_for(|s| *s == RegistrationState::Registered)
        .await
        .unwrap();
    assert!(registry.get(KEY).await.unwrap().is_some());
    registration.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_written_again() {
    let registry = Arc::new(MemoryRegistry::new());
    let registration = Registration::start(registry.clone(), server());
    registration.registered().await.unwrap();
    // Someone deletes it (or the registry lost the lease): the next period writes it again.
    registry.delete(KEY).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(registry.get(KEY).await.unwrap().is_some());
    registration.stop().await;
}
