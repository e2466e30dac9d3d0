//! Sticky sessions by cookie.

mod common;

use std::time::{Duration, Instant};

use common::build_equal;
use lb_core::balance::{
    Balancer, BalancerConfig, CookieValue, Outcome, PickContext, ServerSpec, StateStore, Strategy,
    TriedSet, hash_key,
};

const SERVERS: [&str; 3] = ["http://10.0.0.1:8080", "srv-b", "srv-c"];

fn build(strategy: Strategy, store: &StateStore, now: Instant) -> Balancer {
    let config = BalancerConfig::new(strategy).with_sticky_cookie("lb");
    build_equal(&config, &SERVERS, store, now)
}

#[test]
fn first_pick_sets_a_cookie_that_is_the_hex_hash_of_the_server_id() {
    let now = Instant::now();
    let store = StateStore::new();
    let b = build(Strategy::RoundRobin, &store, now);
    let pick = b.pick(&PickContext::new(now)).unwrap();
    let cookie = pick.set_cookie().expect("a cookie to set");
    assert_eq!(
        cookie.as_str(),
        format!("{:016x}", hash_key(pick.server_id().as_bytes()))
    );
    assert_eq!(cookie, pick.server().cookie_value());
    // Never the server's address.
    assert!(!cookie.as_str().contains("10.0.0.1"));
    assert!(!pick.is_sticky_hit());
}

#[test]
fn a_cookie_naming_a_usable_server_sends_every_request_there() {
    let now = Instant::now();
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let b = build(strategy, &store, now);
        let target = b.server("srv-c").unwrap().cookie_value();
        for key in 0..50u64 {
            let ctx = PickContext::new(now)
                .with_key(key)
                .with_sticky_cookie(target.as_str());
            let pick = b.pick(&ctx).unwrap();
            assert_eq!(pick.server_id(), "srv-c", "{strategy}");
            assert!(pick.is_sticky_hit());
            assert_eq!(pick.set_cookie(), None, "no need to set it again");
        }
    }
}

#[test]
fn a_cookie_for_a_down_server_is_ignored_and_replaced() {
    let now = Instant::now();
    let store = StateStore::new();
    let b = build(Strategy::RoundRobin, &store, now);
    let down = b.server("srv-b").unwrap();
    let cookie = down.cookie_value();
    down.set_healthy(false, now);
    for _ in 0..10 {
        let pick = b
            .pick(&PickContext::new(now).with_sticky_cookie(cookie.as_str()))
            .unwrap();
        assert_ne!(pick.server_id(), "srv-b");
        assert!(!pick.is_sticky_hit());
        assert_eq!(pick.set_cookie(), Some(pick.server().cookie_value()));
    }
}

#[test]
fn a_cookie_for_an_ejected_or_full_or_tried_server_is_ignored() {
    let now = Instant::now();
    let store = StateStore::new();
    let specs = [ServerSpec::new("a", 1, 0), ServerSpec::new("b", 1, 1)];
    let config = BalancerConfig::new(Strategy::RoundRobin)
        .with_sticky_cookie("lb")
        .with_max_conns_per_server(1);
    let b = Balancer::build("backend", &specs, &config, &store, now).unwrap();
    let a = b.server("a").unwrap().cookie_value();

    // Tried.
    let mut tried = TriedSet::new();
    tried.insert(a.key());
    let ctx = PickContext::new(now)
        .with_sticky_cookie(a.as_str())
        .with_tried(&tried);
    assert_eq!(b.pick(&ctx).unwrap().server_id(), "b");

    // At its connection limit.
    let held = b
        .pick(&PickContext::new(now).with_sticky_cookie(a.as_str()))
        .unwrap();
    assert!(held.is_sticky_hit());
    let other = b
        .pick(&PickContext::new(now).with_sticky_cookie(a.as_str()))
        .unwrap();
    assert_eq!(other.server_id(), "b");
    assert!(other.set_cookie().is_some());
    drop((held, other));

    // Ejected (two servers, 50 %: one may go).
    let mut config = config.clone();
    config.ejection.consecutive_failures = 1;
    let b = Balancer::build("backend", &specs, &config, &store, now).unwrap();
    let pick = b
        .pick(&PickContext::new(now).with_sticky_cookie(a.as_str()))
        .unwrap();
    assert!(pick.complete(Outcome::ConnectFailure, now).is_some());
    let pick = b
        .pick(&PickContext::new(now).with_sticky_cookie(a.as_str()))
        .unwrap();
    assert_eq!(pick.server_id(), "b");
}

#[test]
fn garbage_or_unknown_cookies_fall_back_to_the_strategy() {
    let now = Instant::now();
    let store = StateStore::new();
    let b = build(Strategy::RoundRobin, &store, now);
    for cookie in [
        "",
        "zzz",
        "0123456789abcdef",
        "http://10.0.0.1:8080",
        "ünïcödé",
    ] {
        let pick = b
            .pick(&PickContext::new(now).with_sticky_cookie(cookie))
            .unwrap();
        assert!(!pick.is_sticky_hit(), "{cookie:?}");
        assert!(pick.set_cookie().is_some());
    }
}

#[test]
fn sticky_cookie_stays_valid_across_rebuilds_and_listing_order() {
    let now = Instant::now();
    let store = StateStore::new();
    let b = build(Strategy::Random, &store, now);
    let cookie = b.server("srv-b").unwrap().cookie_value().to_string();
    let specs = [
        ServerSpec::new("srv-c", 1, 0),
        ServerSpec::new("srv-b", 1, 1),
    ];
    let config = BalancerConfig::new(Strategy::LeastRequest).with_sticky_cookie("lb");
    let rebuilt = Balancer::build("backend", &specs, &config, &store, now).unwrap();
    let pick = rebuilt
        .pick(&PickContext::new(now).with_sticky_cookie(&cookie))
        .unwrap();
    assert_eq!((pick.server_id(), pick.index()), ("srv-b", 1));
    assert_eq!(
        CookieValue::parse(&cookie),
        Some(pick.server().cookie_value())
    );
}

#[test]
fn a_sticky_session_on_a_drained_server_continues() {
    let now = Instant::now();
    let store = StateStore::new();
    let specs = [
        ServerSpec::new("draining", 0, 0),
        ServerSpec::new("live", 1, 1),
    ];
    let config = BalancerConfig::new(Strategy::RoundRobin).with_sticky_cookie("lb");
    let b = Balancer::build("backend", &specs, &config, &store, now).unwrap();
    let cookie = b.server("draining").unwrap().cookie_value();
    let pick = b
        .pick(&PickContext::new(now).with_sticky_cookie(cookie.as_str()))
        .unwrap();
    assert_eq!(pick.server_id(), "draining");
    // Without the cookie it gets nothing new.
    assert_eq!(b.pick(&PickContext::new(now)).unwrap().server_id(), "live");
}

#[test]
fn sticky_hits_are_not_throttled_by_slow_start() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::new(Strategy::Random)
        .with_sticky_cookie("lb")
        .with_slow_start(Duration::from_secs(60));
    let _boot = Balancer::build(
        "backend",
        &[ServerSpec::new("a", 1, 0)],
        &config,
        &store,
        t0,
    );
    let specs = [ServerSpec::new("a", 1, 0), ServerSpec::new("new", 1, 1)];
    let b = Balancer::build("backend", &specs, &config, &store, t0).unwrap();
    let cookie = b.server("new").unwrap().cookie_value();
    assert!(b.server("new").unwrap().ramp_started_at().is_some());
    for _ in 0..100 {
        let pick = b
            .pick(&PickContext::new(t0).with_sticky_cookie(cookie.as_str()))
            .unwrap();
        assert_eq!(pick.server_id(), "new");
    }
}
