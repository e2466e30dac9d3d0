//! Helpers shared by the balancing integration tests.

use std::time::Instant;

use lb_core::balance::{Balancer, BalancerConfig, ServerSpec, StateStore};

/// Builds backend `backend` from `ids`, every server with weight 1 and its position as index.
pub fn build_equal<S: AsRef<str>>(
    config: &BalancerConfig,
    ids: &[S],
    store: &StateStore,
    now: Instant,
) -> Balancer {
    let specs: Vec<ServerSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ServerSpec::new(id.as_ref(), 1, i))
        .collect();
    Balancer::build("backend", &specs, config, store, now).unwrap()
}
