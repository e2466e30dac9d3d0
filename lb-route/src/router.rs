//! The compiled, indexed router.
//!
//! Each route is split into alternatives (see [`crate::condition::alternatives`]); each
//! alternative is filed under its index key:
//!
//! ```text
//! exact host ──► hash map ──► path trie ──► candidates ──► residual checks
//! host pattern (`<x>.example.com`) ──► short list, each with its own path trie
//! no host / HostRegexp ──► one "any host" path trie
//! no Path/PathPrefix ──► a per-host list checked after the trie
//! ```
//!
//! A lookup visits the request host's group, then host-pattern groups and the any-host group
//! only when they hold something that could outrank what was already found. Candidate lists
//! are kept sorted best first, so a list is abandoned at its first entry that cannot win.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::ast::Expr;
use crate::captures::Captures;
use crate::condition::{Alternative, Cond, Ctx, HostKey, PathKey, alternatives, score};
use crate::error::ParseError;
use crate::pattern::{Pattern, Piece};
use crate::request::{RequestView, strip_port};
use crate::trie::{Anchor, Node};

/// Index of an alternative in the router's slab.
type EntryId = u32;

/// A literal path as a hash-map key: paths up to this many bytes are stored inline, so a
/// lookup compares them without chasing a pointer.
type PathBytes = SmallVec<[u8; 48]>;

/// Hosts longer than this are lowercased on the heap instead of the stack (DNS names are at
/// most 253 bytes, so only garbage pays).
const HOST_BUF: usize = 256;

/// Routes requests to values by route expressions, with deterministic priority.
///
/// Routes are added and removed by id; two routes with the same expression are two routes.
/// See the [crate documentation](crate) for the language and the priority rules.
///
/// ```
/// use lb_route::Router;
/// let mut router = Router::new();
/// router.insert("api", 0, r#"Host("example.com") && PathPrefix("/api")"#, "api").unwrap();
/// router.insert("user", 0, r#"Host("example.com") && Path("/api/users/<int:id>")"#, "user").unwrap();
/// let req = http::Request::get("http://example.com/api/users/7").body(()).unwrap();
/// let m = router.route(&req).unwrap();
/// assert_eq!((m.id, *m.value), ("user", "user")); // the longer literal path wins
/// assert_eq!(m.captures.get("id"), Some("7"));
/// ```
#[derive(Debug, Clone)]
pub struct Router<T> {
    ids: FxHashMap<Arc<str>, usize>,
    routes: Vec<Option<Route<T>>>,
    infos: Vec<Option<Arc<RouteInfo>>>,
    free_routes: Vec<usize>,
    alts: Vec<Option<Arc<Entry>>>,
    free_alts: Vec<EntryId>,
    /// Keyed by the lowercased literal host.
    exact_hosts: FxHashMap<Arc<str>, Arc<Group>>,
    host_patterns: Vec<(Pattern, Arc<Group>)>,
    any_host: Arc<Group>,
}

/// The result of a successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// `'r` is the router's borrow and `'q` the request's, so the matched value can outlive the
/// request (captures borrow from both, hence `'q`).
pub struct Match<'r, 'q, T> {
    /// The id of the route that matched.
    pub id: &'r str,
    /// The value stored with it.
    pub value: &'r T,
    /// Values of its `<name>` placeholders.
    pub captures: Captures<'q>,
}

/// The part of a route a lookup reads, kept small so that the table stays in cache.
#[derive(Debug, Clone)]
struct Route<T> {
    id: Arc<str>,
    value: T,
}

/// The part of a route only inserts, removes and inspection read (same slot as `Route`).
#[derive(Debug, Clone)]
struct RouteInfo {
    priority: i32,
    expr: Expr,
    alts: Vec<EntryId>,
}

#[derive(Debug, Clone)]
struct Entry {
    route: usize,
    score: u64,
    /// Position among its route's alternatives: the first alternative written supplies the
    /// captures when several alternatives of one route match with the same score.
    ordinal: u32,
    alt: Alternative,
}

/// What an index list holds for each alternative: enough to rank it and, when it has no
/// residual condition, to accept it without touching the alternative itself. Keeping this
/// inline in the lists saves two cache misses per lookup on large tables.
#[derive(Debug, Clone, Copy)]
struct Cand {
    score: u64,
    alt: EntryId,
    route: u32,
    ordinal: u32,
    /// Whether residual conditions must be evaluated.
    checks: bool,
}

/// All alternatives filed under one host key, split three ways by their path key.
#[derive(Debug, Clone, Default)]
struct Group {
    /// `Path("...")` without placeholders, by path: one hash probe finds them, however many
    /// routes the host has.
    literal: FxHashMap<PathBytes, SmallVec<[Cand; 1]>>,
    /// `Path` with placeholders and `PathPrefix`.
    trie: Node<Cand>,
    /// No `Path`/`PathPrefix`: checked one by one (best first) when they could still win.
    pathless: Vec<Cand>,
    literal_scores: Scores,
    trie_scores: Scores,
    pathless_scores: Scores,
}

/// A multiset of scores with its maximum cached, which bounds what a part of a group can
/// offer; a lookup skips the part when that bound cannot beat what it already has.
#[derive(Debug, Clone, Default)]
struct Scores {
    counts: BTreeMap<u64, usize>,
    max: Option<u64>,
}

/// Which part of a group an alternative lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Literal,
    Trie,
    Pathless,
}

/// The best candidate so far during a lookup (its captures are kept beside it).
#[derive(Clone, Copy)]
struct Best {
    score: u64,
    ordinal: u32,
    route: u32,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Router ===

impl<T> Router<T> {
    /// An empty router.
    pub fn new() -> Self {
        Self {
            ids: FxHashMap::default(),
            routes: Vec::new(),
            infos: Vec::new(),
            free_routes: Vec::new(),
            alts: Vec::new(),
            free_alts: Vec::new(),
            exact_hosts: FxHashMap::default(),
            host_patterns: Vec::new(),
            any_host: Arc::default(),
        }
    }

    /// Parses `route` and adds it under `id`, replacing (and returning) the value of a route
    /// that had the same id. On a parse error the router is unchanged.
    ///
    /// `priority` is the frontend's `Priority`: higher wins before specificity is compared.
    pub fn insert(
        &mut self,
        id: impl Into<Arc<str>>,
        priority: i32,
        route: &str,
        value: T,
    ) -> Result<Option<T>, ParseError> {
        let expr = Expr::parse(route)?;
        Ok(self.insert_expr(id, priority, expr, value))
    }

    /// Adds an already parsed expression under `id`, replacing (and returning) the value of
    /// a route that had the same id.
    pub fn insert_expr(
        &mut self,
        id: impl Into<Arc<str>>,
        priority: i32,
        expr: Expr,
        value: T,
    ) -> Option<T> {
        let id = id.into();
        let old = self.remove(&id);
        let slot = match self.free_routes.pop() {
            Some(slot) => slot,
            None => {
                self.routes.push(None);
                self.infos.push(None);
                self.routes.len() - 1
            }
        };
        let cond = Cond::compile(&expr);
        self.routes[slot] = Some(Route {
            id: id.clone(),
            value,
        });
        self.ids.insert(id, slot);
        let mut alt_ids = Vec::new();
        for (ordinal, alt) in alternatives(&cond).into_iter().enumerate() {
            let entry = Entry {
                route: slot,
                score: score(priority, alt.specificity),
                ordinal: ordinal as u32,
                alt,
            };
            alt_ids.push(self.file(entry));
        }
        self.infos[slot] = Some(Arc::new(RouteInfo {
            priority,
            expr,
            alts: alt_ids,
        }));
        old
    }

    /// Removes the route `id` and returns its value.
    pub fn remove(&mut self, id: &str) -> Option<T> {
        let slot = self.ids.remove(id)?;
        let route = self.routes[slot].take()?;
        self.free_routes.push(slot);
        let info = self.infos[slot].take();
        for &alt_id in info.as_ref().map_or(&[][..], |i| &i.alts) {
            self.unfile(alt_id);
        }
        Some(route.value)
    }

    /// The value of route `id`.
    pub fn get(&self, id: &str) -> Option<&T> {
        let slot = *self.ids.get(id)?;
        self.routes[slot].as_ref().map(|r| &r.value)
    }

    /// The parsed expression of route `id`.
    pub fn expr(&self, id: &str) -> Option<&Expr> {
        let slot = *self.ids.get(id)?;
        self.infos[slot].as_ref().map(|r| &r.expr)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there is no route.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Ids, priorities and values of all routes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, &T)> {
        self.routes
            .iter()
            .zip(&self.infos)
            .filter_map(|(r, i)| Some((&*r.as_ref()?.id, i.as_ref()?.priority, &r.as_ref()?.value)))
    }

    /// Finds the best route for `req`: highest priority, then most specific, then lowest id.
    ///
    /// Allocates nothing unless a route has more than four placeholders or a `QueryRegexp`
    /// has to percent-decode a value.
    pub fn route<'r: 'q, 'q, R: RequestView + ?Sized>(
        &'r self,
        req: &'q R,
    ) -> Option<Match<'r, 'q, T>> {
        let (best, captures) = self.find(req)?;
        let route = self.routes[best.route as usize].as_ref()?;
        Some(Match {
            id: &route.id,
            value: &route.value,
            captures,
        })
    }

    /// The lookup itself, with one lifetime for the router and the request.
    fn find<'a, R: RequestView + ?Sized>(&'a self, req: &'a R) -> Option<(Best, Captures<'a>)> {
        let (host, has_upper) = strip_port(req.host());
        let buf;
        let heap;
        let host_lower: &str = if !has_upper {
            host
        } else if host.len() <= HOST_BUF {
            let mut b = [0u8; HOST_BUF];
            b[..host.len()].copy_from_slice(host.as_bytes());
            b[..host.len()].make_ascii_lowercase();
            buf = b;
            // Only ASCII bytes changed, so the bytes are still the UTF-8 they were.
            std::str::from_utf8(&buf[..host.len()]).unwrap_or("")
        } else {
            heap = host.to_ascii_lowercase();
            &heap
        };
        let path = match req.path() {
            "" => "/",
            p => p,
        };
        let ctx = Ctx {
            req,
            host,
            host_lower,
            path,
        };
        let mut found = Found {
            best: None,
            caps: Captures::new(),
        };
        let mut caps = Captures::new();

        if let Some(group) = self.exact_hosts.get(host_lower) {
            self.search_group(group, &ctx, &mut caps, &mut found);
        }
        for (pattern, group) in &self.host_patterns {
            if !could_win(group.max(), &found.best) {
                break; // groups are sorted best first
            }
            if pattern.matches_ignore_ascii_case(host, b'.', &mut caps) {
                self.search_group(group, &ctx, &mut caps, &mut found);
                caps.clear();
            }
        }
        if could_win(self.any_host.max(), &found.best) {
            self.search_group(&self.any_host, &ctx, &mut caps, &mut found);
        }

        Some((found.best?, found.caps))
    }

    fn search_group<'a, R: RequestView + ?Sized>(
        &'a self,
        group: &'a Group,
        ctx: &Ctx<'a, '_, R>,
        caps: &mut Captures<'a>,
        found: &mut Found<'a>,
    ) {
        if could_win(group.literal_scores.max, &found.best)
            && let Some(cands) = group.literal.get(ctx.path.as_bytes())
        {
            self.consider(cands, ctx, caps, found);
        }
        if could_win(group.trie_scores.max, &found.best) {
            let mut visit = |cands: &'a [Cand], caps: &mut Captures<'a>| {
                self.consider(cands, ctx, caps, found);
            };
            group.trie.search(ctx.path, caps, &mut visit);
        }
        if could_win(group.pathless_scores.max, &found.best) {
            self.consider(&group.pathless, ctx, caps, found);
        }
    }

    /// Checks a best-first list of candidates and records the first that beats the best.
    fn consider<'a, R: RequestView + ?Sized>(
        &'a self,
        cands: &'a [Cand],
        ctx: &Ctx<'a, '_, R>,
        caps: &mut Captures<'a>,
        found: &mut Found<'a>,
    ) {
        for cand in cands {
            if let Some(best) = &found.best
                && !self.cand_outranks(cand, best)
            {
                // The list is sorted: nothing after this entry can win either.
                return;
            }
            let mark = caps.len();
            let accepted = !cand.checks
                || self.alts[cand.alt as usize]
                    .as_ref()
                    .is_some_and(|e| e.alt.residual.iter().all(|c| c.eval(ctx, caps)));
            if accepted {
                found.best = Some(Best {
                    score: cand.score,
                    ordinal: cand.ordinal,
                    route: cand.route,
                });
                found.caps.copy_from(caps);
                caps.truncate(mark);
                return;
            }
            caps.truncate(mark);
        }
    }

    /// The lookup order: higher score, then lower route id, then the earlier alternative.
    /// Ids are only read on a score tie.
    fn cand_outranks(&self, cand: &Cand, best: &Best) -> bool {
        if cand.score != best.score {
            return cand.score > best.score;
        }
        match (self.route_id(cand.route), self.route_id(best.route)) {
            (Some(a), Some(b)) => (a, cand.ordinal) < (b, best.ordinal),
            _ => false,
        }
    }

    fn route_id(&self, slot: u32) -> Option<&str> {
        self.routes[slot as usize].as_ref().map(|r| &*r.id)
    }

    // --- filing alternatives in the index ---

    fn file(&mut self, entry: Entry) -> EntryId {
        let id = match self.free_alts.pop() {
            Some(id) => id,
            None => {
                self.alts.push(None);
                (self.alts.len() - 1) as EntryId
            }
        };
        let cand = Cand {
            score: entry.score,
            alt: id,
            route: entry.route as u32,
            ordinal: entry.ordinal,
            checks: !entry.alt.residual.is_empty(),
        };
        let (host, path) = (entry.alt.host.clone(), entry.alt.path.clone());
        self.alts[id as usize] = Some(Arc::new(entry));
        // The group leaves the router while it is edited, because `before` reads `self`.
        let mut group = self.take_group(&host);
        let before = |a: &Cand, b: &Cand| self.ranks_before(a, b);
        match (&path, part_of(&path)) {
            (PathKey::Exact(p), Part::Literal) => {
                let list = group
                    .literal
                    .entry(p.to_string().as_bytes().into())
                    .or_default();
                let at = list.partition_point(|c| before(c, &cand));
                list.insert(at, cand);
            }
            (PathKey::Exact(p), _) => group.trie.insert(p.pieces(), Anchor::Exact, cand, &before),
            (PathKey::Prefix(p), _) => group.trie.insert(p.pieces(), Anchor::Prefix, cand, &before),
            (PathKey::RegexpPrefix(lit), _) => {
                let pieces = [Piece::Literal(lit.to_string())];
                group.trie.insert(&pieces, Anchor::Raw, cand, &before)
            }
            (PathKey::Any, _) => {
                let at = group.pathless.partition_point(|c| before(c, &cand));
                group.pathless.insert(at, cand);
            }
        }
        group.scores_mut(part_of(&path)).add(cand.score);
        self.put_group(host, group);
        id
    }

    fn unfile(&mut self, id: EntryId) {
        let Some(entry) = self.alts[id as usize].take() else {
            return;
        };
        self.free_alts.push(id);
        let mut group = self.take_group(&entry.alt.host);
        let part = part_of(&entry.alt.path);
        let is_it = |c: &Cand| c.alt == id;
        match (&entry.alt.path, part) {
            (PathKey::Exact(p), Part::Literal) => {
                let key = p.to_string();
                if let Some(list) = group.literal.get_mut(key.as_bytes()) {
                    list.retain(|c| !is_it(c));
                    if list.is_empty() {
                        group.literal.remove(key.as_bytes());
                    }
                }
            }
            (PathKey::Exact(p), _) => {
                group.trie.remove(p.pieces(), Anchor::Exact, &is_it);
            }
            (PathKey::Prefix(p), _) => {
                group.trie.remove(p.pieces(), Anchor::Prefix, &is_it);
            }
            (PathKey::RegexpPrefix(lit), _) => {
                let pieces = [Piece::Literal(lit.to_string())];
                group.trie.remove(&pieces, Anchor::Raw, &is_it);
            }
            (PathKey::Any, _) => group.pathless.retain(|c| !is_it(c)),
        }
        group.scores_mut(part).remove(entry.score);
        self.put_group(entry.alt.host.clone(), group);
    }

    fn take_group(&mut self, key: &HostKey) -> Group {
        match key {
            HostKey::Exact(h) => self
                .exact_hosts
                .remove(h.to_string().as_str())
                .map(Arc::unwrap_or_clone)
                .unwrap_or_default(),
            HostKey::Pattern(p) => match self.host_patterns.iter().position(|(q, _)| q == p) {
                Some(i) => Arc::unwrap_or_clone(self.host_patterns.swap_remove(i).1),
                None => Group::default(),
            },
            HostKey::Any => Arc::unwrap_or_clone(std::mem::take(&mut self.any_host)),
        }
    }

    fn put_group(&mut self, key: HostKey, group: Group) {
        let empty = group.max().is_none();
        match key {
            HostKey::Exact(h) if !empty => {
                self.exact_hosts
                    .insert(h.to_string().into(), Arc::new(group));
            }
            HostKey::Pattern(p) if !empty => {
                self.host_patterns.push((p, Arc::new(group)));
                // Keep pattern groups best first so a lookup can stop early.
                self.host_patterns
                    .sort_by_key(|(_, g)| std::cmp::Reverse(g.max()));
            }
            HostKey::Any => self.any_host = Arc::new(group),
            _ => {}
        }
    }

    fn ranks_before(&self, a: &Cand, b: &Cand) -> bool {
        let best = Best {
            score: b.score,
            ordinal: b.ordinal,
            route: b.route,
        };
        self.cand_outranks(a, &best)
    }
}

/// Where a path key is filed.
fn part_of(path: &PathKey) -> Part {
    match path {
        PathKey::Exact(p) if p.is_literal() => Part::Literal,
        PathKey::Exact(_) | PathKey::Prefix(_) | PathKey::RegexpPrefix(_) => Part::Trie,
        PathKey::Any => Part::Pathless,
    }
}

// === impl Group ===

impl Group {
    fn max(&self) -> Option<u64> {
        [
            self.literal_scores.max,
            self.trie_scores.max,
            self.pathless_scores.max,
        ]
        .into_iter()
        .flatten()
        .max()
    }

    fn scores_mut(&mut self, part: Part) -> &mut Scores {
        match part {
            Part::Literal => &mut self.literal_scores,
            Part::Trie => &mut self.trie_scores,
            Part::Pathless => &mut self.pathless_scores,
        }
    }
}

// === impl Scores ===

impl Scores {
    fn add(&mut self, score: u64) {
        *self.counts.entry(score).or_default() += 1;
        self.max = self.counts.last_key_value().map(|(s, _)| *s);
    }

    fn remove(&mut self, score: u64) {
        if let Some(n) = self.counts.get_mut(&score) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&score);
            }
        }
        self.max = self.counts.last_key_value().map(|(s, _)| *s);
    }
}

/// What a lookup has found so far: the best candidate and its captures.
struct Found<'a> {
    best: Option<Best>,
    caps: Captures<'a>,
}

fn could_win(max: Option<u64>, best: &Option<Best>) -> bool {
    match (max, best) {
        (None, _) => false,
        (Some(_), None) => true,
        // Equal scores can still win on the id.
        (Some(max), Some(b)) => max >= b.score,
    }
}
