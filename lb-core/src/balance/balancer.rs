//! The [`Balancer`]: one backend's servers, the strategy's table built from them, and the
//! pick that combines the strategy with sticky cookies, health, ejection, slow start,
//! `MaxConnsPerServer`, retries and failing open.
//!
//! A pick, in order:
//! 1. A sticky cookie naming a usable server wins (no slow-start throttling).
//! 2. Otherwise the strategy picks among *usable* servers: healthy, not ejected, below
//!    `MaxConnsPerServer`, not in the request's tried set, weight above zero.
//! 3. If it finds none and every server is down (unhealthy or ejected), and the config says
//!    [`WhenAllDown::FailOpen`], the strategy picks again ignoring health and ejection. The
//!    tried set and `MaxConnsPerServer` still hold: a connection limit is a promise to the
//!    server (nginx answers 502 and HAProxy queues rather than exceed it), and a server at
//!    its limit is not down, so limits alone never trigger failing open.
//! 4. The chosen server's in-flight slot is taken atomically against the limit; if a
//!    concurrent pick took the last slot first, the pick starts over (a few times at most).
//!
//! Every step is allocation-free and lock-free.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::config::{BalancerConfig, EwmaConfig, Strategy, WhenAllDown};
use super::least_request;
use super::maglev::Maglev;
use super::p2c::{self, Cost};
use super::pick::{COUNTED, FAIL_OPEN, LIMITED, Pick, PickContext, SET_COOKIE, STICKY_HIT};
use super::random::{ATTEMPTS, WeightedSampler};
use super::rng::{LocalRng, SharedRng, below, unit};
use super::round_robin;
use super::server_state::{ServerState, nanos_since};
use super::smooth_weighted::SmoothWeighted;
use super::stable_hash::{fmix64, hash_key, server_key};
use super::sticky::StickyIndex;
use super::store::{BackendState, StateStore};

/// How often a pick retries after losing the race for a server's last connection slot.
const ACQUIRE_ATTEMPTS: usize = 4;

// === ServerSpec ===

/// One server as a balancer is built from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerSpec<'a> {
    /// The server's id, unique within its backend. Its runtime state is keyed by it.
    pub id: &'a str,
    /// The server's weight (`Weight`, default 1 in the SPEC). Zero drains the server: it
    /// gets no new requests, except those its sticky cookie sends.
    pub weight: u32,
    /// An opaque index of the caller's (say, into its own table of connection pools),
    /// handed back by [`Pick::index`].
    pub index: usize,
}

impl<'a> ServerSpec<'a> {
    /// A server spec.
    pub const fn new(id: &'a str, weight: u32, index: usize) -> Self {
        Self { id, weight, index }
    }
}

// === BuildError ===

/// Why a balancer could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Two servers of the backend share an id.
    DuplicateServer {
        /// The backend's id.
        backend: String,
        /// The repeated server id.
        server: String,
    },
    /// More servers than a balancer indexes (2^32 - 1).
    TooManyServers {
        /// The backend's id.
        backend: String,
        /// How many servers were given.
        count: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::DuplicateServer { backend, server } => {
                write!(f, "backend {backend:?}: server id {server:?} appears twice")
            }
            BuildError::TooManyServers { backend, count } => {
                write!(
                    f,
                    "backend {backend:?}: {count} servers is more than a balancer holds"
                )
            }
        }
    }
}

impl std::error::Error for BuildError {}

// === Member ===

/// One server inside a balancer: its shared state plus the build-time facts picks read.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) state: Arc<ServerState>,
    pub(crate) key: u64,
    pub(crate) weight: u32,
    pub(crate) index: usize,
}

// === Selector ===

#[derive(Debug)]
enum Selector {
    RoundRobin,
    Smooth(SmoothWeighted),
    LeastRequest(WeightedSampler),
    PeakEwma(WeightedSampler),
    Random(WeightedSampler),
    Maglev(Maglev),
}

// === Select ===

/// A strategy's choice among the usable servers, monomorphized into the pick loop.
trait Select {
    fn select(&self, b: &Balancer, c: &mut Chooser<'_>, ctx: &PickContext<'_>) -> Option<u32>;
}

struct RoundRobin;
struct LeastRequest<'a>(&'a WeightedSampler);
struct PeakEwma<'a>(&'a WeightedSampler);

impl Select for RoundRobin {
    #[inline(always)]
    fn select(&self, b: &Balancer, c: &mut Chooser<'_>, _: &PickContext<'_>) -> Option<u32> {
        round_robin::select(&b.eligible, c)
    }
}

impl Select for &SmoothWeighted {
    #[inline(always)]
    fn select(&self, b: &Balancer, c: &mut Chooser<'_>, _: &PickContext<'_>) -> Option<u32> {
        SmoothWeighted::select(self, &b.eligible, c)
    }
}

impl Select for LeastRequest<'_> {
    #[inline(always)]
    fn select(&self, _: &Balancer, c: &mut Chooser<'_>, _: &PickContext<'_>) -> Option<u32> {
        p2c::select::<least_request::InFlight>(self.0, c)
    }
}

impl Select for PeakEwma<'_> {
    #[inline(always)]
    fn select(&self, _: &Balancer, c: &mut Chooser<'_>, _: &PickContext<'_>) -> Option<u32> {
        p2c::select::<Self>(self.0, c)
    }
}

impl Cost for PeakEwma<'_> {
    /// Whether member `x` costs less than member `y` by decayed latency times requests in
    /// flight.
    #[inline(always)]
    fn cheaper(c: &Chooser<'_>, x: u32, y: u32) -> bool {
        let b = c.b;
        let load = |m: u32| {
            let state = &c.member(m).state;
            state.ewma.load(b.default_rtt_ns, state.in_flight())
        };
        load(x).cheaper_than(load(y), b.inv_decay, || c.now_ns().saturating_add(1))
    }
}

impl Select for &WeightedSampler {
    #[inline(always)]
    fn select(&self, _: &Balancer, c: &mut Chooser<'_>, _: &PickContext<'_>) -> Option<u32> {
        self.select_one(c)
    }
}

impl Select for &Maglev {
    #[inline(always)]
    fn select(&self, b: &Balancer, c: &mut Chooser<'_>, ctx: &PickContext<'_>) -> Option<u32> {
        let key = match ctx.key {
            Some(key) => key,
            None => c.random(),
        };
        Maglev::select(self, &b.eligible, c, key, b.balance_factor)
    }
}

// === impl Balancer ===

/// A backend's load balancer: built once per server-set or configuration change, then
/// shared by every worker (`Send + Sync`, `pick(&self)`).
///
/// Build it with [`Balancer::build`]; pick with [`Balancer::pick`]; complete each pick with
/// [`Pick::complete`](super::Pick::complete) (or drop it). Per-server state lives in the
/// [`StateStore`], so the next build for the same backend carries it over.
pub struct Balancer {
    backend_id: Box<str>,
    members: Box<[Member]>,
    /// Positions of the members that take new requests (weight above zero).
    eligible: Box<[u32]>,
    selector: Selector,
    sticky: Option<StickyIndex>,
    shared: Arc<BackendState>,
    strategy: Strategy,
    /// The flags every strategy pick carries: [`SET_COOKIE`] with sticky sessions,
    /// [`COUNTED`] with bounded-load hashing.
    pick_flags: u8,
    max_conns: u32,
    slow_start_ns: u64,
    fail_open: bool,
    balance_factor: Option<f64>,
    default_rtt_ns: f64,
    /// `1 / decay` of peak-EWMA, in ns: a multiply instead of a divide per pick.
    inv_decay: f64,
}

impl Balancer {
    /// Builds the balancer of backend `backend` over `servers` (in the caller's order, which
    /// is also the order ties are broken in) with `config`, attaching every server to its
    /// runtime state in `store` and making `servers` the backend's live set there. `now` is
    /// the caller's clock: it starts the slow-start ramp of servers new to the backend.
    ///
    /// Cost: O(n) plus the strategy's table: smooth WRR O(L × distinct weights) for a period
    /// of L ≤ 65 536 + n slots; Maglev O(M log M) for its M-slot table. Run it off the
    /// request path.
    pub fn build(
        backend: &str,
        servers: &[ServerSpec<'_>],
        config: &BalancerConfig,
        store: &StateStore,
        now: Instant,
    ) -> Result<Self, BuildError> {
        if u32::try_from(servers.len()).is_err() {
            return Err(BuildError::TooManyServers {
                backend: backend.to_owned(),
                count: servers.len(),
            });
        }
        let mut seen = HashSet::with_capacity(servers.len());
        for spec in servers {
            if !seen.insert(spec.id) {
                return Err(BuildError::DuplicateServer {
                    backend: backend.to_owned(),
                    server: spec.id.to_owned(),
                });
            }
        }

        let ids: Vec<(&str, u64)> = servers.iter().map(|s| (s.id, server_key(s.id))).collect();
        let seed = config.seed ^ hash_key(backend.as_bytes());
        let attached = store.attach(
            backend,
            &ids,
            now,
            seed,
            &config.ejection,
            config.ewma.decay,
        );
        let members: Box<[Member]> = servers
            .iter()
            .zip(attached.states)
            .map(|(spec, state)| Member {
                key: state.key(),
                state,
                weight: spec.weight,
                index: spec.index,
            })
            .collect();
        let eligible: Box<[u32]> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.weight > 0)
            .map(|(i, _)| i as u32)
            .collect();
        let weights: Vec<u32> = eligible
            .iter()
            .map(|&m| members[m as usize].weight)
            .collect();

        let selector = match config.strategy {
            Strategy::RoundRobin => Selector::RoundRobin,
            Strategy::WeightedRoundRobin => {
                Selector::Smooth(SmoothWeighted::new(&eligible, &weights))
            }
            Strategy::LeastRequest => {
                Selector::LeastRequest(WeightedSampler::new(&eligible, &weights))
            }
            Strategy::PeakEwma => Selector::PeakEwma(WeightedSampler::new(&eligible, &weights)),
            Strategy::Random => Selector::Random(WeightedSampler::new(&eligible, &weights)),
            Strategy::Hash | Strategy::Maglev => {
                let keys: Vec<u64> = eligible.iter().map(|&m| members[m as usize].key).collect();
                Selector::Maglev(Maglev::new(&eligible, &keys, &weights))
            }
        };
        let sticky = config
            .sticky
            .as_ref()
            .map(|_| StickyIndex::new(members.iter().map(|m| m.key)));
        let ewma = &config.ewma;
        let balance_factor = config
            .strategy
            .is_hashing()
            .then_some(config.hash_balance_factor)
            .flatten()
            .map(|f| if f.is_nan() { 1.0 } else { f.max(1.0) });
        let mut pick_flags = 0;
        if sticky.is_some() {
            pick_flags |= SET_COOKIE;
        }
        if balance_factor.is_some() {
            pick_flags |= COUNTED;
        }

        Ok(Self {
            backend_id: backend.into(),
            members,
            eligible,
            selector,
            sticky,
            shared: attached.shared,
            strategy: config.strategy,
            pick_flags,
            max_conns: config.max_conns_per_server,
            slow_start_ns: u64::try_from(config.slow_start.as_nanos()).unwrap_or(u64::MAX),
            fail_open: config.when_all_down == WhenAllDown::FailOpen,
            balance_factor,
            default_rtt_ns: ewma.default_rtt.max(EwmaConfig::MIN_DEFAULT_RTT).as_nanos() as f64,
            inv_decay: 1.0 / (ewma.decay.as_nanos() as f64).max(1.0),
        })
    }

    /// Chooses a server for one request, or `None` when there is none to choose: the backend
    /// is empty, every untried server is unusable (and failing open does not apply), or every
    /// server is at `MaxConnsPerServer`.
    ///
    /// O(1) expected for every strategy; degraded cases (most servers unusable) fall back to
    /// an O(n) scan. Never allocates, never locks.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Pick<'_>> {
        if self.eligible.is_empty() && self.sticky.is_none() {
            return None;
        }
        // One copy of the pick loop per strategy, with the strategy inlined into it: the
        // dispatch happens once, and each copy is a straight line in the common case.
        match &self.selector {
            Selector::RoundRobin => self.pick_with(ctx, RoundRobin),
            Selector::Smooth(table) => self.pick_with(ctx, table),
            Selector::LeastRequest(sampler) => self.pick_with(ctx, LeastRequest(sampler)),
            Selector::PeakEwma(sampler) => self.pick_with(ctx, PeakEwma(sampler)),
            Selector::Random(sampler) => self.pick_with(ctx, sampler),
            Selector::Maglev(table) => self.pick_with(ctx, table),
        }
    }

    /// The pick around a strategy's `select`: choose, then take the chosen server's
    /// in-flight slot. Out of line, one copy per strategy, so each gets its own registers;
    /// losing the race for a server's last slot goes to [`Balancer::pick_again`], so the
    /// common pick is a straight line with no loop to hoist values out of.
    #[inline(never)]
    fn pick_with<'b>(&'b self, ctx: &PickContext<'_>, select: impl Select) -> Option<Pick<'b>> {
        let mut chooser = Chooser::new(self, ctx);
        let (m, flags) = self.choose(&mut chooser, ctx, &select)?;
        self.acquire(m, flags, ctx)
            .or_else(|| self.pick_again(&mut chooser, ctx, &select))
    }

    /// Takes member `m`'s in-flight slot for a pick with `flags`, if it is below
    /// `MaxConnsPerServer`.
    #[inline(always)]
    fn acquire<'b>(&'b self, m: u32, flags: u8, ctx: &PickContext<'_>) -> Option<Pick<'b>> {
        let member = &self.members[m as usize];
        if !member.state.try_acquire(self.max_conns) {
            return None;
        }
        if flags & COUNTED != 0 {
            self.shared.in_flight.0.take();
        }
        let limited = if self.max_conns != 0 { LIMITED } else { 0 };
        Some(Pick::new(member, ctx.now, flags | limited))
    }

    /// Step 4's start-over: a concurrent pick took the chosen server's last slot.
    #[cold]
    #[inline(never)]
    fn pick_again<'b>(
        &'b self,
        c: &mut Chooser<'_>,
        ctx: &PickContext<'_>,
        select: &impl Select,
    ) -> Option<Pick<'b>> {
        for _ in 1..ACQUIRE_ATTEMPTS {
            let (m, flags) = self.choose(c, ctx, select)?;
            if let Some(pick) = self.acquire(m, flags, ctx) {
                return Some(pick);
            }
        }
        None
    }

    #[inline(always)]
    fn choose(
        &self,
        c: &mut Chooser<'_>,
        ctx: &PickContext<'_>,
        select: &impl Select,
    ) -> Option<(u32, u8)> {
        c.relaxed = false;
        let sticky = match (&self.sticky, ctx.cookie) {
            (Some(index), Some(cookie)) => index.find(cookie),
            _ => None,
        };
        if let Some(m) = sticky
            && c.usable(m)
        {
            return Some((m, STICKY_HIT));
        }
        if let Some(m) = select.select(self, c, ctx) {
            return Some((m, self.pick_flags));
        }
        self.choose_failing_open(c, ctx, sticky, select)
    }

    /// Step 3 of a pick, out of line: the strategy found no usable server.
    #[cold]
    #[inline(never)]
    fn choose_failing_open(
        &self,
        c: &mut Chooser<'_>,
        ctx: &PickContext<'_>,
        sticky: Option<u32>,
        select: &impl Select,
    ) -> Option<(u32, u8)> {
        if !self.fail_open || self.any_up(c) {
            return None;
        }
        c.relaxed = true;
        if let Some(m) = sticky
            && c.usable(m)
        {
            return Some((m, STICKY_HIT | FAIL_OPEN));
        }
        select
            .select(self, c, ctx)
            .map(|m| (m, self.pick_flags | FAIL_OPEN))
    }

    /// Whether any server that takes new requests is up (healthy and not ejected).
    fn any_up(&self, c: &Chooser<'_>) -> bool {
        self.eligible
            .iter()
            .any(|&m| self.members[m as usize].state.is_up(|| c.now_ns()))
    }

    /// The backend's id.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// The strategy the balancer was built with.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How many servers the balancer holds (including weight-0 ones).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the balancer holds no server (every pick returns `None`).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The servers' states, in build order.
    pub fn servers(&self) -> impl ExactSizeIterator<Item = &Arc<ServerState>> + '_ {
        self.members.iter().map(|m| &m.state)
    }

    /// The state of server `id`, if the balancer holds it.
    pub fn server(&self, id: &str) -> Option<&Arc<ServerState>> {
        self.members
            .iter()
            .find(|m| m.state.id() == id)
            .map(|m| &m.state)
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("backend", &self.backend_id)
            .field("strategy", &self.strategy)
            .field("servers", &self.members.len())
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

// === impl Chooser ===

/// One pick's view of the balancer: which servers are usable right now, the slow-start
/// coin, the rotation cursor and the random stream.
///
/// Everything a pick may not need is computed on first use: the pick's time in the
/// backend's clock (only ejections, slow-start ramps and peak-EWMA read it) and the random
/// stream (round robin and hashing rarely draw).
//
// Kept small (six words) and built from references: a pick that goes out of line (a
// skipped server, failing open) needs it in memory, and every field costs a store per pick.
pub(crate) struct Chooser<'a> {
    b: &'a Balancer,
    ctx: &'a PickContext<'a>,
    /// The pick's time in ns since the backend's epoch; `u64::MAX` until first converted.
    now_ns: Cell<u64>,
    /// Failing open: health and ejection are ignored.
    pub(crate) relaxed: bool,
    rng: Option<LocalRng>,
}

impl<'a> Chooser<'a> {
    #[inline(always)]
    fn new(b: &'a Balancer, ctx: &'a PickContext<'a>) -> Self {
        Self {
            b,
            ctx,
            now_ns: Cell::new(u64::MAX),
            relaxed: false,
            rng: None,
        }
    }

    #[inline(always)]
    pub(crate) fn member(&self, m: u32) -> &'a Member {
        &self.b.members[m as usize]
    }

    /// The pick's time as nanoseconds since the backend's epoch, converted once. (A time
    /// that really is `u64::MAX` ns, 584 years, out is merely converted again.)
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        let ns = self.now_ns.get();
        if ns != u64::MAX {
            return ns;
        }
        let ns = nanos_since(self.b.shared.epoch, self.ctx.now);
        self.now_ns.set(ns);
        ns
    }

    /// The next position of the backend's rotation over `len` slots (not zero), and
    /// advances it: a relaxed load and store, no division (see [`round_robin`] for why and
    /// what it means under concurrency).
    #[inline(always)]
    pub(crate) fn next_position(&self, len: usize) -> usize {
        let cursor = &self.b.shared.cursor.0;
        let mut pos = cursor.load(Ordering::Relaxed);
        let len = len as u64;
        if pos >= len {
            pos %= len;
        }
        let next = if pos + 1 == len { 0 } else { pos + 1 };
        cursor.store(next, Ordering::Relaxed);
        pos as usize
    }

    /// The next random value of the backend's stream (see [`SharedRng`]).
    #[inline(always)]
    pub(crate) fn random(&mut self) -> u64 {
        let shared: &SharedRng = &self.b.shared.rng.0;
        let rng = self.rng.get_or_insert_with(|| shared.local());
        let value = rng.next();
        shared.advance_to(rng);
        value
    }

    /// Whether member `m` may take this request, slow start aside.
    #[inline(always)]
    pub(crate) fn usable(&self, m: u32) -> bool {
        self.usable_member(self.member(m))
    }

    /// [`Chooser::usable`] for a member already looked up.
    #[inline(always)]
    fn usable_member(&self, member: &Member) -> bool {
        let state = &member.state;
        if let Some(tried) = self.ctx.tried
            && !tried.is_empty()
            && tried.contains(member.key)
        {
            return false;
        }
        let limit = self.b.max_conns;
        if limit != 0 && state.in_flight() >= limit {
            return false;
        }
        self.relaxed || state.is_up(|| self.now_ns())
    }

    /// Member `m`'s slow-start factor now.
    #[inline(always)]
    pub(crate) fn ramp(&self, m: u32) -> f64 {
        self.ramp_member(self.member(m))
    }

    /// [`Chooser::ramp`] for a member already looked up.
    #[inline(always)]
    fn ramp_member(&self, member: &Member) -> f64 {
        member
            .state
            .ramp_when(|| self.now_ns(), self.b.slow_start_ns)
    }

    /// Whether member `m` is usable and wins its slow-start coin toss. A usable member that
    /// loses the toss is remembered in `fallback`, so a ramping server that is the only
    /// usable one is still chosen.
    #[inline(always)]
    pub(crate) fn admit(&mut self, m: u32, fallback: &mut Option<u32>) -> bool {
        // Looked up once: the atomics the checks read make the compiler reload and
        // bounds-check the member table at each lookup.
        let member = self.member(m);
        if !self.usable_member(member) {
            return false;
        }
        let ramp = self.ramp_member(member);
        if ramp >= 1.0 || unit(self.random()) < ramp {
            return true;
        }
        fallback.get_or_insert(m);
        false
    }

    /// [`Chooser::admit`] for a member already known to be usable, with a coin derived from
    /// the request key, so the same keys reach a ramping server throughout its ramp.
    #[inline(always)]
    pub(crate) fn admit_usable_keyed(&self, m: u32, key: u64, fallback: &mut Option<u32>) -> bool {
        let ramp = self.ramp(m);
        if ramp >= 1.0 || unit(fmix64(key ^ self.member(m).key)) < ramp {
            return true;
        }
        fallback.get_or_insert(m);
        false
    }

    /// The rotation strategies' probe: `slots[start]` if it can take the request;
    /// otherwise up to [`ATTEMPTS`] slots drawn at random, so a skipped server's turn goes to
    /// a random other server rather than always to its successor (which would double the
    /// successor's share); then a scan of `scan` in order.
    #[inline(always)]
    pub(crate) fn probe(&mut self, slots: &[u32], start: usize, scan: &[u32]) -> Option<u32> {
        let mut fallback = None;
        let first = slots[start];
        if self.admit(first, &mut fallback) {
            return Some(first);
        }
        self.probe_on(slots, scan, fallback)
    }

    /// The rest of [`Chooser::probe`], out of line: the common pick never gets here.
    #[cold]
    #[inline(never)]
    fn probe_on(&mut self, slots: &[u32], scan: &[u32], mut fallback: Option<u32>) -> Option<u32> {
        for _ in 0..ATTEMPTS {
            let m = slots[below(self.random(), slots.len())];
            if self.admit(m, &mut fallback) {
                return Some(m);
            }
        }
        fallback.or_else(|| {
            let from = below(self.random(), scan.len());
            self.first_usable(scan, from)
        })
    }

    /// The first usable member of `among` in rotation order from position `start`: the
    /// degraded path when sampling or probing found nothing.
    pub(crate) fn first_usable(&self, among: &[u32], start: usize) -> Option<u32> {
        let n = among.len();
        (0..n)
            .map(|step| among[(start + step) % n])
            .find(|&m| self.usable(m))
    }

    /// Requests in flight across the backend (maintained for bounded-load hashing only).
    #[inline]
    pub(crate) fn backend_in_flight(&self) -> u64 {
        u64::from(self.b.shared.in_flight.0.get())
    }
}
