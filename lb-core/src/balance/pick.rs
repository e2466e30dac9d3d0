//! What a pick takes ([`PickContext`]) and what it gives back ([`Pick`], [`OwnedPick`]).
//!
//! A pick holds one in-flight slot on its server from the moment it is made until it is
//! completed or dropped, so least-request, peak-EWMA, bounded-load hashing and
//! `MaxConnsPerServer` all see it. [`Pick`] borrows the balancer and costs nothing to hand
//! out; [`Pick::into_owned`] turns it into an [`OwnedPick`] (one `Arc` clone) for a request
//! future that must be `'static`.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::balancer::Member;
use super::server_state::{Outcome, ServerState};
use super::stable_hash::hash_key;
use super::sticky::CookieValue;
use super::tried::TriedSet;

// === impl PickContext ===

/// The per-request input of [`Balancer::pick`](super::Balancer::pick): the current time and
/// the request's key, sticky cookie and tried servers.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    pub(crate) now: Instant,
    pub(crate) key: Option<u64>,
    pub(crate) cookie: Option<&'a str>,
    pub(crate) tried: Option<&'a TriedSet>,
}

impl<'a> PickContext<'a> {
    /// A context at time `now`, with no key, no cookie and nothing tried. `now` comes from
    /// the caller's clock: the balancer never reads one.
    pub const fn new(now: Instant) -> Self {
        Self {
            now,
            key: None,
            cookie: None,
            tried: None,
        }
    }

    /// The request key's hash, for `"hash"` / `"maglev"` (see [`hash_key`]). Without a key a
    /// hashing balancer spreads requests at random.
    pub const fn with_key(mut self, hash: u64) -> Self {
        self.key = Some(hash);
        self
    }

    /// Hashes the request key's bytes with [`hash_key`] (no allocation).
    pub const fn with_key_bytes(mut self, bytes: &[u8]) -> Self {
        self.key = Some(hash_key(bytes));
        self
    }

    /// The value of the request's sticky cookie, as the client sent it.
    pub const fn with_sticky_cookie(mut self, value: &'a str) -> Self {
        self.cookie = Some(value);
        self
    }

    /// Servers this request has already tried: a retry pick never returns one of them.
    pub const fn with_tried(mut self, tried: &'a TriedSet) -> Self {
        self.tried = Some(tried);
        self
    }

    /// The time of the pick.
    pub const fn now(&self) -> Instant {
        self.now
    }
}

// === flags ===

pub(crate) const FAIL_OPEN: u8 = 1;
pub(crate) const STICKY_HIT: u8 = 1 << 1;
pub(crate) const SET_COOKIE: u8 = 1 << 2;
/// The pick is counted in the backend's in-flight total (bounded-load hashing).
pub(crate) const COUNTED: u8 = 1 << 3;
/// The server's slot was taken against `MaxConnsPerServer`.
pub(crate) const LIMITED: u8 = 1 << 4;

fn finish(
    state: &ServerState,
    flags: u8,
    started: Instant,
    outcome: Outcome,
    now: Instant,
) -> Option<Instant> {
    let ejected = state.observe(outcome, Some(now.saturating_duration_since(started)), now);
    release(state, flags);
    ejected
}

#[inline]
fn release(state: &ServerState, flags: u8) {
    state.release(flags & LIMITED != 0);
    if flags & COUNTED != 0 {
        state.backend.in_flight.0.give_back();
    }
}

fn set_cookie(state: &ServerState, flags: u8) -> Option<CookieValue> {
    (flags & SET_COOKIE != 0).then(|| state.cookie_value())
}

// === impl Pick ===

/// A server chosen for one request, holding one in-flight slot on it until completed or
/// dropped. Dropping it without [`Pick::complete`] releases the slot and records nothing.
#[must_use = "dropping a pick at once releases its in-flight slot; keep it for the request"]
pub struct Pick<'a> {
    member: &'a Member,
    started: Instant,
    flags: u8,
    armed: bool,
}

impl<'a> Pick<'a> {
    #[inline]
    pub(crate) fn new(member: &'a Member, started: Instant, flags: u8) -> Self {
        Self {
            member,
            started,
            flags,
            armed: true,
        }
    }

    /// The caller's opaque index for the server, as given in its
    /// [`ServerSpec`](super::ServerSpec).
    #[inline]
    pub fn index(&self) -> usize {
        self.member.index
    }

    /// The server's shared runtime state.
    #[inline]
    pub fn server(&self) -> &'a Arc<ServerState> {
        &self.member.state
    }

    /// The server's id.
    #[inline]
    pub fn server_id(&self) -> &'a str {
        self.member.state.id()
    }

    /// The server's stable key: insert it into a [`TriedSet`] before a retry.
    #[inline]
    pub fn server_key(&self) -> u64 {
        self.member.key
    }

    /// The sticky-cookie value to set on the response, when sticky sessions are on and the
    /// request's cookie did not already name this server.
    pub fn set_cookie(&self) -> Option<CookieValue> {
        set_cookie(&self.member.state, self.flags)
    }

    /// Whether the request's sticky cookie chose the server.
    pub fn is_sticky_hit(&self) -> bool {
        self.flags & STICKY_HIT != 0
    }

    /// Whether the server was picked by failing open: every server was down and
    /// [`WhenAllDown::FailOpen`](super::WhenAllDown::FailOpen) applied.
    pub fn is_fail_open(&self) -> bool {
        self.flags & FAIL_OPEN != 0
    }

    /// When the pick was made (the context's `now`).
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Ends the request with `outcome` at `now`: releases the in-flight slot, feeds the
    /// latency `now - started_at()` to peak-EWMA when the outcome carries one, and counts the
    /// outcome for passive ejection. Returns when the server's ejection ends if this outcome
    /// ejected it.
    pub fn complete(mut self, outcome: Outcome, now: Instant) -> Option<Instant> {
        self.armed = false;
        finish(&self.member.state, self.flags, self.started, outcome, now)
    }

    /// The same pick, owning an `Arc` of the server state instead of borrowing the balancer.
    pub fn into_owned(mut self) -> OwnedPick {
        self.armed = false;
        OwnedPick {
            state: Arc::clone(&self.member.state),
            index: self.member.index,
            started: self.started,
            flags: self.flags,
            armed: true,
        }
    }
}

impl Drop for Pick<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.armed {
            release(&self.member.state, self.flags);
        }
    }
}

impl fmt::Debug for Pick<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("index", &self.index())
            .field("server", &self.server_id())
            .field("sticky_hit", &self.is_sticky_hit())
            .field("fail_open", &self.is_fail_open())
            .finish_non_exhaustive()
    }
}

// === impl OwnedPick ===

/// A [`Pick`] that owns its server state, for request futures that outlive a borrow of the
/// balancer. Same accounting: the in-flight slot is held until completed or dropped.
#[must_use = "dropping a pick at once releases its in-flight slot; keep it for the request"]
pub struct OwnedPick {
    state: Arc<ServerState>,
    index: usize,
    started: Instant,
    flags: u8,
    armed: bool,
}

impl OwnedPick {
    /// The caller's opaque index for the server.
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The server's shared runtime state.
    pub fn server(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// The server's id.
    pub fn server_id(&self) -> &str {
        self.state.id()
    }

    /// The server's stable key, for a [`TriedSet`].
    #[inline]
    pub fn server_key(&self) -> u64 {
        self.state.key()
    }

    /// The sticky-cookie value to set on the response, if any (see [`Pick::set_cookie`]).
    pub fn set_cookie(&self) -> Option<CookieValue> {
        set_cookie(&self.state, self.flags)
    }

    /// Whether the request's sticky cookie chose the server.
    pub fn is_sticky_hit(&self) -> bool {
        self.flags & STICKY_HIT != 0
    }

    /// Whether the server was picked by failing open.
    pub fn is_fail_open(&self) -> bool {
        self.flags & FAIL_OPEN != 0
    }

    /// When the pick was made.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Ends the request (see [`Pick::complete`]).
    pub fn complete(mut self, outcome: Outcome, now: Instant) -> Option<Instant> {
        self.armed = false;
        finish(&self.state, self.flags, self.started, outcome, now)
    }
}

impl Drop for OwnedPick {
    #[inline]
    fn drop(&mut self) {
        if self.armed {
            release(&self.state, self.flags);
        }
    }
}

impl fmt::Debug for OwnedPick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPick")
            .field("index", &self.index)
            .field("server", &self.server_id())
            .finish_non_exhaustive()
    }
}
