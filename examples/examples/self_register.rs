//! A Rust service that registers itself with the load balancer while it is up: the role of
//! the seeds' watchdog scripts and of registrator, done by the service with lb-registry.
//!
//! ```text
//! cargo run -p lb-examples --example self_register                       # memory://, prints the tree
//! cargo run -p lb-examples --example self_register -- etcd://127.0.0.1:2379/vulcand
//! cargo run -p lb-examples --example self_register -- consul://127.0.0.1:8500/vulcand
//! ```
//!
//! The service binds 127.0.0.1 on a free port, registers `backends/hello/servers/<port>`
//! with a 5 s TTL that lb-registry refreshes every third of it, and deregisters on Ctrl-C.
//! If the process is killed, the TTL runs out and the proxies stop routing to it. With the
//! memory registry (the default, no external service) it shows the registered tree and
//! exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb_registry::Registry;
use lb_registry::register::{Registration, ServerRegistration};
use tokio::net::TcpListener;

/// Serves `hello from <addr>` on a free loopback port.
async fn serve() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |_req| async move {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "hello from {addr}\n"
                )))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(addr)
}

/// Registers the service at `addr` in `registry` under backend `hello`.
fn register(registry: Arc<dyn Registry>, addr: SocketAddr) -> Registration {
    let server = ServerRegistration::new(
        "hello",
        addr.port().to_string(),
        format!("http://{addr}"),
        Duration::from_secs(5),
    );
    Registration::start(registry, server)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".to_owned());
    let registry = lb_registry::open(&url)?;
    let addr = serve().await?;
    let registration = register(Arc::clone(&registry), addr);
    registration.registered().await?;
    println!("serving on http://{addr}, registered in {url}");
    if url == "memory://" {
        for entry in registry.list().await?.entries {
            println!(
                "  {} = {}",
                entry.key,
                String::from_utf8_lossy(&entry.value)
            );
        }
    } else {
        println!("Ctrl-C to deregister and stop");
        tokio::signal::ctrl_c().await?;
    }
    registration.stop().await;
    println!("deregistered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_registry::MemoryRegistry;

    #[tokio::test]
    async fn the_service_is_registered_while_up_and_removed_on_stop() {
        let registry = Arc::new(MemoryRegistry::new());
        let addr = serve().await.unwrap();
        let registration = register(registry.clone(), addr);
        registration.registered().await.unwrap();
        let key = format!("backends/hello/servers/{}", addr.port());
        let value = registry.get(&key).await.unwrap().expect("registered").value;
        assert_eq!(
            String::from_utf8(value.to_vec()).unwrap(),
            format!(r#"{{"URL":"http://{addr}"}}"#)
        );
        registration.stop().await;
        assert_eq!(registry.get(&key).await.unwrap(), None);
    }
}
