//! Configuration of a balancer: the strategy (SPEC section 4, `Settings.Balancer.Type`), the
//! hash key, sticky sessions, slow start, `MaxConnsPerServer`, passive ejection, peak-EWMA
//! tuning and what to do when every server is down.
//!
//! Decoding these from a backend's JSON is not done here (a later issue adds serde); the
//! string forms the SPEC fixes are available through [`FromStr`] and [`fmt::Display`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

// === Strategy ===

/// How a balancer chooses a server: the SPEC's `Settings.Balancer.Type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// `"roundrobin"`: each server in turn, ignoring weights.
    #[default]
    RoundRobin,
    /// `"wrr"`: nginx's smooth weighted round robin.
    WeightedRoundRobin,
    /// `"leastrequest"`: power of two choices over in-flight requests, weight-aware.
    LeastRequest,
    /// `"p2c-ewma"`: power of two choices over peak-EWMA latency times in-flight requests.
    PeakEwma,
    /// `"random"`: weighted random.
    Random,
    /// `"hash"`: consistent hashing of the request key (implemented with Maglev).
    Hash,
    /// `"maglev"`: consistent hashing of the request key with a Maglev table.
    Maglev,
}

impl Strategy {
    /// Every strategy, in SPEC order.
    pub const ALL: [Strategy; 7] = [
        Strategy::RoundRobin,
        Strategy::WeightedRoundRobin,
        Strategy::LeastRequest,
        Strategy::PeakEwma,
        Strategy::Random,
        Strategy::Hash,
        Strategy::Maglev,
    ];

    /// The SPEC's name for this strategy (`"roundrobin"`, `"wrr"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "roundrobin",
            Strategy::WeightedRoundRobin => "wrr",
            Strategy::LeastRequest => "leastrequest",
            Strategy::PeakEwma => "p2c-ewma",
            Strategy::Random => "random",
            Strategy::Hash => "hash",
            Strategy::Maglev => "maglev",
        }
    }

    /// Whether the strategy places requests by their key (`"hash"`, `"maglev"`).
    pub const fn is_hashing(self) -> bool {
        matches!(self, Strategy::Hash | Strategy::Maglev)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = ParseConfigError;

    /// Parses the SPEC's names exactly (case-sensitive, like every other SPEC name).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| ParseConfigError::new("balancer type", s, STRATEGY_EXPECTED))
    }
}

const STRATEGY_EXPECTED: &str =
    "one of roundrobin, wrr, leastrequest, p2c-ewma, random, hash, maglev";

// === HashKey ===

/// Which part of a request a hashing balancer hashes: the SPEC's `Settings.Balancer.Key`.
///
/// lb-core only names the key; the data path extracts it from the request and passes its
/// hash (see [`hash_key`](super::hash_key)) in the pick context.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashKey {
    /// `"client.ip"`: the client's address.
    ClientIp,
    /// `"request.header.<Name>"`: the value of a request header.
    Header(String),
    /// `"request.cookie.<Name>"`: the value of a request cookie.
    Cookie(String),
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("client.ip"),
            HashKey::Header(name) => write!(f, "request.header.{name}"),
            HashKey::Cookie(name) => write!(f, "request.cookie.{name}"),
        }
    }
}

impl FromStr for HashKey {
    type Err = ParseConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "client.ip, request.header.<Name> or request.cookie.<Name>";
        let named = |name: &str| -> Result<String, ParseConfigError> {
            if name.is_empty() {
                Err(ParseConfigError::new("balancer key", s, EXPECTED))
            } else {
                Ok(name.to_owned())
            }
        };
        if s == "client.ip" {
            Ok(HashKey::ClientIp)
        } else if let Some(name) = s.strip_prefix("request.header.") {
            named(name).map(HashKey::Header)
        } else if let Some(name) = s.strip_prefix("request.cookie.") {
            named(name).map(HashKey::Cookie)
        } else {
            Err(ParseConfigError::new("balancer key", s, EXPECTED))
        }
    }
}

// === StickyConfig ===

/// Sticky sessions by cookie: the SPEC's `Settings.Balancer.Sticky`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StickyConfig {
    /// The cookie's name (`Sticky.Cookie`). Its value is chosen by the balancer: the 16 hex
    /// digits of the server id's stable hash, never the server's URL.
    pub cookie: String,
}

impl StickyConfig {
    /// Sticky sessions carried by the cookie `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            cookie: name.into(),
        }
    }
}

// === EwmaConfig ===

/// Tuning of the peak-EWMA latency estimate used by `"p2c-ewma"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EwmaConfig {
    /// The round-trip time assumed for a server that has no sample yet. Default 30 ms.
    ///
    /// Floored at [`EwmaConfig::MIN_DEFAULT_RTT`] when the balancer is built: linkerd found
    /// that a zero or sub-millisecond seed makes a freshly resolved endpoint look free, so
    /// P2C floods it until real samples arrive (linkerd2-proxy's `MIN_DEFAULT_RTT` in
    /// `linkerd/proxy/balance`, and linkerd2 issue #9652).
    pub default_rtt: Duration,
    /// The time constant of the exponential decay: a sample's weight falls to 1/e after this
    /// long. Default 10 s (tower's and linkerd's usual choice). Zero is treated as 1 ns.
    pub decay: Duration,
}

impl EwmaConfig {
    /// The smallest seed RTT a balancer accepts (1 ms, as in linkerd).
    pub const MIN_DEFAULT_RTT: Duration = Duration::from_millis(1);
}

impl Default for EwmaConfig {
    fn default() -> Self {
        Self {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
        }
    }
}

// === EjectionConfig ===

/// Passive ejection (outlier detection) driven by request outcomes.
///
/// After `consecutive_failures` failures in a row a server is ejected for
/// `base_ejection × n`, capped at `max_ejection`, where `n` counts its recent ejections (it
/// decays by one for every `base_ejection` the server then stays in service), so a server
/// that keeps failing stays out longer each time. It returns by itself when the time is up.
/// At most `max_ejected_percent` of a backend's servers are ejected at once (rounded down,
/// so a backend of one server never ejects it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EjectionConfig {
    /// Failures in a row that eject a server. Default 5; 0 disables passive ejection.
    pub consecutive_failures: u32,
    /// Whether a 5xx answer counts as a failure. Default false: only connect failures and
    /// timeouts count, as with nginx's default `proxy_next_upstream error timeout`.
    pub count_5xx: bool,
    /// The first ejection's length. Default 10 s (nginx's `fail_timeout`). Zero is 1 ms.
    pub base_ejection: Duration,
    /// The longest an ejection lasts. Default 5 min.
    pub max_ejection: Duration,
    /// The largest share of a backend's servers ejected at the same time, in percent.
    /// Default 50; values above 100 act as 100.
    pub max_ejected_percent: u8,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            count_5xx: false,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

// === WhenAllDown ===

/// What a pick does when no server of the backend is usable because all of them are
/// unhealthy or ejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WhenAllDown {
    /// Fail open (the default): pick among all servers as if they were healthy. A health
    /// check that condemns a whole backend is more often wrong than right (Sozu #1204, the
    /// AWS Builders' Library); the pick is marked so the caller can count it.
    #[default]
    FailOpen,
    /// Return no server, so the caller answers 503.
    Refuse,
}

// === BalancerConfig ===

/// Everything a [`Balancer`](super::Balancer) is built from besides its servers.
///
/// Defaults: round robin, no hash key, no sticky cookie, no slow start, no connection limit,
/// fail open, hash balance factor 1.25, [`EwmaConfig::default`],
/// [`EjectionConfig::default`], seed 0.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BalancerConfig {
    /// The strategy (`Settings.Balancer.Type`).
    pub strategy: Strategy,
    /// The hash key (`Settings.Balancer.Key`), for the data path's benefit.
    pub key: Option<HashKey>,
    /// Sticky sessions (`Settings.Balancer.Sticky`).
    pub sticky: Option<StickyConfig>,
    /// Slow start (`Settings.SlowStart`): how long a new or recovered server takes to ramp
    /// from 10 % to 100 % of its weight. Zero disables it.
    pub slow_start: Duration,
    /// `Settings.MaxConnsPerServer`: in-flight requests per server; a server at its limit is
    /// skipped. Zero means unlimited.
    pub max_conns_per_server: u32,
    /// What happens when every server is down.
    pub when_all_down: WhenAllDown,
    /// Bounded-load factor for the hashing strategies ("Consistent Hashing with Bounded
    /// Loads", Mirrokni, Thorup, Zadimoghaddam, 2016): a server whose in-flight count would
    /// exceed `factor × average` is passed over for the next server in the table. `None`
    /// (the default, as HAProxy's and Envoy's) turns the bound off: pure consistent hashing.
    /// Values below 1 act as 1. The bound costs every pick of the backend two more
    /// in-flight updates (its total).
    pub hash_balance_factor: Option<f64>,
    /// Peak-EWMA tuning.
    pub ewma: EwmaConfig,
    /// Passive ejection.
    pub ejection: EjectionConfig,
    /// Seed of the balancer's random stream (mixed with the backend id).
    pub seed: u64,
}

impl BalancerConfig {
    /// The defaults (see the type's docs) with `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            key: None,
            sticky: None,
            slow_start: Duration::ZERO,
            max_conns_per_server: 0,
            when_all_down: WhenAllDown::FailOpen,
            hash_balance_factor: None,
            ewma: EwmaConfig::default(),
            ejection: EjectionConfig::default(),
            seed: 0,
        }
    }

    /// Sets the hash key.
    pub fn with_key(mut self, key: HashKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Enables sticky sessions with the cookie `name`.
    pub fn with_sticky_cookie(mut self, name: impl Into<String>) -> Self {
        self.sticky = Some(StickyConfig::new(name));
        self
    }

    /// Sets the slow-start window.
    pub fn with_slow_start(mut self, window: Duration) -> Self {
        self.slow_start = window;
        self
    }

    /// Sets `MaxConnsPerServer` (0 = unlimited).
    pub fn with_max_conns_per_server(mut self, limit: u32) -> Self {
        self.max_conns_per_server = limit;
        self
    }

    /// Sets the all-down behaviour.
    pub fn with_when_all_down(mut self, mode: WhenAllDown) -> Self {
        self.when_all_down = mode;
        self
    }

    /// Sets the bounded-load factor of the hashing strategies (`None` = unbounded).
    pub fn with_hash_balance_factor(mut self, factor: Option<f64>) -> Self {
        self.hash_balance_factor = factor;
        self
    }

    /// Sets the peak-EWMA tuning.
    pub fn with_ewma(mut self, ewma: EwmaConfig) -> Self {
        self.ewma = ewma;
        self
    }

    /// Sets the passive-ejection policy.
    pub fn with_ejection(mut self, ejection: EjectionConfig) -> Self {
        self.ejection = ejection;
        self
    }

    /// Sets the random seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self::new(Strategy::default())
    }
}

// === ParseConfigError ===

/// A balancer setting's string form was not one the SPEC allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseConfigError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl ParseConfigError {
    fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        Self {
            what,
            value: value.to_owned(),
            expected,
        }
    }

    /// The rejected input.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for ParseConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} {:?}: expected {}",
            self.what, self.value, self.expected
        )
    }
}

impl std::error::Error for ParseConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip_through_from_str() {
        for strategy in Strategy::ALL {
            assert_eq!(strategy.as_str().parse::<Strategy>(), Ok(strategy));
            assert_eq!(strategy.to_string(), strategy.as_str());
        }
    }

    #[test]
    fn unknown_strategy_error_names_the_value_and_the_choices() {
        let err = "RoundRobin".parse::<Strategy>().unwrap_err();
        assert_eq!(err.value(), "RoundRobin");
        let msg = err.to_string();
        assert!(
            msg.contains("\"RoundRobin\"") && msg.contains("p2c-ewma"),
            "{msg}"
        );
    }

    #[test]
    fn hash_keys_parse_the_spec_forms() {
        assert_eq!("client.ip".parse(), Ok(HashKey::ClientIp));
        assert_eq!(
            "request.header.X-User".parse(),
            Ok(HashKey::Header("X-User".into()))
        );
        assert_eq!(
            "request.cookie.session".parse(),
            Ok(HashKey::Cookie("session".into()))
        );
        for bad in [
            "",
            "client",
            "request.header.",
            "request.cookie.",
            "request.query.x",
        ] {
            assert!(bad.parse::<HashKey>().is_err(), "{bad:?} parsed");
        }
        for key in ["client.ip", "request.header.X", "request.cookie.c"] {
            assert_eq!(key.parse::<HashKey>().unwrap().to_string(), key);
        }
    }

    #[test]
    fn default_config_is_fail_open_round_robin_without_limits_or_bounded_load() {
        let cfg = BalancerConfig::default();
        assert_eq!(cfg.strategy, Strategy::RoundRobin);
        assert_eq!(cfg.when_all_down, WhenAllDown::FailOpen);
        assert_eq!(cfg.max_conns_per_server, 0);
        assert_eq!(cfg.slow_start, Duration::ZERO);
        assert_eq!(
            cfg.hash_balance_factor, None,
            "bounded load is opt-in, as in HAProxy and Envoy"
        );
    }
}
