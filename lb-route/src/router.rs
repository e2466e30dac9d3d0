//! The compiled, indexed router.
//!
//! Each route is split into alternatives (see [`crate::condition::alternatives`]); each
//! alternative is filed under its index key:
//!
//! ```text
//! exact host + literal path ──► one flat (host, path) table ──► candidates ──► residual checks
//! exact host + path starting with literal text ending in `/`
//!     ──► a second flat (host, text) table, probed with the path up to each `/`
//!     ──► candidates ──► residual checks
//! exact host ──► hash map ──► path trie ──► candidates ──► residual checks
//! host pattern (`<x>.example.com`) ──► short list, each with its own path trie
//! no host / HostRegexp ──► one "any host" path trie
//! no Path/PathPrefix ──► a per-host list checked after the trie
//! ```
//!
//! A lookup probes the flat table first (one cache miss for the commonest route shape, see
//! `literal_table.rs`), then the prefix table, then visits the request host's group,
//! host-pattern groups and the any-host group, each only when it holds something that could
//! outrank what was already found: the router keeps the best score of each tier, so a
//! literal hit that beats everything outside the flat table ends the lookup. The prefix
//! table's probes have addresses known up front, where a trie walk pays one dependent
//! cache miss per level (with 10,000 routes, 5 % of them such regexps, the walks were
//! about a quarter of `route_match/indexed/10000`'s time). Candidate lists are kept sorted
//! best first, so a list is abandoned at its first entry that cannot win.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::ast::Expr;
use crate::captures::Captures;
use crate::condition::{Alternative, Cond, Ctx, HostKey, PathKey, alternatives, score};
use crate::error::ParseError;
use crate::literal_table::{self, LiteralTable};
use crate::pattern::{Pattern, Piece};
use crate::request::{RequestView, strip_port};
use crate::trie::{Anchor, Node};

/// A literal path as a hash-map key: paths up to this many bytes are stored inline, so a
/// lookup compares them without chasing a pointer.
type PathBytes = SmallVec<[u8; 48]>;

/// The alternatives filed under one key, best first. Almost always one, kept inline.
type Cands = SmallVec<[Cand; 1]>;

/// An alternative's conditions left to check once its index key matched. Shared by every
/// clone of a router; the first condition lives in the `Arc`'s own allocation.
type Residual = SmallVec<[Cond; 1]>;

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
    /// `Host("literal") && Path("/literal")` alternatives, keyed by (lowercased host, path).
    literal: LiteralTable<Cands>,
    /// The scores of every alternative outside `literal`: a literal hit that beats their
    /// maximum is the answer.
    others: Scores,
    /// Alternatives with an exact host whose path must start with literal text ending in
    /// `/` (`PathPrefix("/api/")`, `PathRegexp("^/v1/users/[0-9]+$")`), keyed by
    /// (lowercased host, that text). Such a path key holds for a path exactly when the
    /// path's text up to its `m`-th `/` is the key, `m` being the key's number of `/`, so
    /// a lookup probes this table once per such `m` in use (`prefixed_slashes`) instead of
    /// walking the host's trie, whose levels are one dependent cache miss each.
    prefixed: LiteralTable<Cands>,
    /// Bit `m` is set when some key of `prefixed` has `m` slashes; `prefixed_counts[m]`
    /// counts those keys' alternatives.
    prefixed_slashes: u64,
    prefixed_counts: [u32; 64],
    prefixed_scores: Scores,
    /// The scores of the alternatives in host groups (`others` minus `prefixed`).
    grouped: Scores,
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
    /// Where each alternative is filed, for removal.
    alts: Vec<Entry>,
}

/// Where one alternative of a route is filed.
#[derive(Debug, Clone)]
struct Entry {
    host: HostKey,
    path: PathKey,
    score: u64,
    ordinal: u32,
}

/// What an index list holds for each alternative: enough to rank it and, when it has no
/// residual condition, to accept it without reading anything else. Its residual conditions
/// are one pointer away (reaching them through a table of alternatives cost two more cache
/// misses per regexp route checked).
#[derive(Debug, Clone)]
struct Cand {
    score: u64,
    route: u32,
    /// Position among its route's alternatives: the first alternative written supplies the
    /// captures when several alternatives of one route match with the same score. With
    /// `route`, it identifies the alternative.
    ordinal: u32,
    residual: Option<Arc<Residual>>,
}

/// All alternatives filed under one host key, split three ways by their path key.
#[derive(Debug, Clone, Default)]
struct Group {
    /// `Path("...")` without placeholders, by path: one hash probe finds them, however many
    /// routes the host has. Empty in exact-host groups: those alternatives are in the
    /// router's flat table.
    literal: FxHashMap<PathBytes, Cands>,
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
            literal: LiteralTable::default(),
            others: Scores::default(),
            prefixed: LiteralTable::default(),
            prefixed_slashes: 0,
            prefixed_counts: [0; 64],
            prefixed_scores: Scores::default(),
            grouped: Scores::default(),
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
        let mut entries = Vec::new();
        for (ordinal, alt) in alternatives(&cond).into_iter().enumerate() {
            let Alternative {
                host,
                path,
                residual,
                specificity,
            } = alt;
            let entry = Entry {
                host,
                path,
                score: score(priority, specificity),
                ordinal: ordinal as u32,
            };
            let cand = Cand {
                score: entry.score,
                route: slot as u32,
                ordinal: entry.ordinal,
                residual: (!residual.is_empty()).then(|| Arc::new(SmallVec::from_vec(residual))),
            };
            self.file(&entry, cand);
            entries.push(entry);
        }
        self.infos[slot] = Some(Arc::new(RouteInfo {
            priority,
            expr,
            alts: entries,
        }));
        old
    }

    /// Removes the route `id` and returns its value.
    pub fn remove(&mut self, id: &str) -> Option<T> {
        let slot = self.ids.remove(id)?;
        let route = self.routes[slot].take()?;
        self.free_routes.push(slot);
        let info = self.infos[slot].take();
        for entry in info.as_ref().map_or(&[][..], |i| &i.alts) {
            self.unfile(slot as u32, entry);
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
        let literal = self.literal.get(
            literal_table::hash(host_lower.as_bytes(), path.as_bytes()),
            host_lower.as_bytes(),
            path.as_bytes(),
        );
        // The commonest case, decided without evaluating anything: the best literal
        // candidate has no residual condition and outranks everything outside the table.
        if let Some(first) = literal.and_then(|cands| cands.first())
            && first.residual.is_none()
            && self.others.max.is_none_or(|max| first.score > max)
        {
            let best = Best {
                score: first.score,
                ordinal: first.ordinal,
                route: first.route,
            };
            return Some((best, Captures::new()));
        }

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
        if let Some(cands) = literal {
            self.consider(cands, &ctx, &mut caps, &mut found);
        }
        if !could_win(self.others.max, &found.best) {
            return Some((found.best?, found.caps));
        }
        if could_win(self.prefixed_scores.max, &found.best) {
            self.search_prefixed(&ctx, &mut caps, &mut found);
        }
        if !could_win(self.grouped.max, &found.best) {
            return Some((found.best?, found.caps));
        }

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

    /// Probes `prefixed` with the path's text up to each of its slashes whose count is in
    /// use.
    fn search_prefixed<'a, R: RequestView + ?Sized>(
        &'a self,
        ctx: &Ctx<'a, '_, R>,
        caps: &mut Captures<'a>,
        found: &mut Found<'a>,
    ) {
        let (host, path) = (ctx.host_lower.as_bytes(), ctx.path.as_bytes());
        let mut slashes = 0;
        for (i, &b) in path.iter().enumerate() {
            if b != b'/' {
                continue;
            }
            slashes += 1;
            if slashes >= 64 || self.prefixed_slashes >> slashes == 0 {
                return; // no key has this many slashes or more
            }
            if self.prefixed_slashes >> slashes & 1 == 1 {
                let key = &path[..=i];
                if let Some(cands) = self.prefixed.get(literal_table::hash(host, key), host, key) {
                    self.consider(cands, ctx, caps, found);
                }
            }
        }
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
            let accepted = match &cand.residual {
                None => true,
                Some(residual) => residual.iter().all(|c| c.eval(ctx, caps)),
            };
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

    fn file(&mut self, entry: &Entry, cand: Cand) {
        let (host, path) = (&entry.host, &entry.path);
        if let Some((h, p)) = literal_key(host, path) {
            self.file_flat(Flat::Literal, &h, &p, cand);
            return;
        }
        self.others.add(cand.score);
        if let Some((h, p, slashes)) = prefix_key(host, path) {
            self.prefixed_scores.add(cand.score);
            self.prefixed_counts[slashes] += 1;
            self.prefixed_slashes |= 1 << slashes;
            self.file_flat(Flat::Prefixed, &h, &p, cand);
            return;
        }
        self.grouped.add(cand.score);
        // The group leaves the router while it is edited, because `before` reads `self`.
        let mut group = self.take_group(host);
        let before = |a: &Cand, b: &Cand| self.ranks_before(a, b);
        let score = cand.score;
        match (path, part_of(path)) {
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
        group.scores_mut(part_of(path)).add(score);
        self.put_group(host.clone(), group);
    }

    fn unfile(&mut self, route: u32, entry: &Entry) {
        let is_it = |c: &Cand| c.route == route && c.ordinal == entry.ordinal;
        if let Some((h, p)) = literal_key(&entry.host, &entry.path) {
            unfile_flat(&mut self.literal, &h, &p, is_it);
            return;
        }
        self.others.remove(entry.score);
        if let Some((h, p, slashes)) = prefix_key(&entry.host, &entry.path) {
            unfile_flat(&mut self.prefixed, &h, &p, is_it);
            self.prefixed_scores.remove(entry.score);
            self.prefixed_counts[slashes] -= 1;
            if self.prefixed_counts[slashes] == 0 {
                self.prefixed_slashes &= !(1 << slashes);
            }
            return;
        }
        self.grouped.remove(entry.score);
        let mut group = self.take_group(&entry.host);
        let part = part_of(&entry.path);
        match (&entry.path, part) {
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
        self.put_group(entry.host.clone(), group);
    }

    /// Inserts `cand` at its rank in the list of (host, text) of one of the flat tables.
    fn file_flat(&mut self, flat: Flat, host: &str, text: &str, cand: Cand) {
        let (h, p) = (host.as_bytes(), text.as_bytes());
        let table = match flat {
            Flat::Literal => &self.literal,
            Flat::Prefixed => &self.prefixed,
        };
        let at = table
            .get(literal_table::hash(h, p), h, p)
            .map_or(0, |list| {
                list.partition_point(|c| self.ranks_before(c, &cand))
            });
        let table = match flat {
            Flat::Literal => &mut self.literal,
            Flat::Prefixed => &mut self.prefixed,
        };
        table.get_or_insert_with(h, p, Cands::new).insert(at, cand);
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

/// The (lowercased host, path) key of an alternative filed in the flat table: an exact host
/// and a literal `Path`.
fn literal_key(host: &HostKey, path: &PathKey) -> Option<(String, String)> {
    match (host, path) {
        (HostKey::Exact(h), PathKey::Exact(p)) if p.is_literal() => {
            Some((h.to_string(), p.to_string()))
        }
        _ => None,
    }
}

/// Which of the router's two flat tables.
#[derive(Clone, Copy)]
enum Flat {
    Literal,
    Prefixed,
}

/// Takes the candidates `is_it` names out of the list of (host, text) in `table`, and the
/// list when it empties.
fn unfile_flat(
    table: &mut LiteralTable<Cands>,
    host: &str,
    text: &str,
    is_it: impl Fn(&Cand) -> bool,
) {
    let (h, p) = (host.as_bytes(), text.as_bytes());
    if let Some(list) = table.get_mut(h, p) {
        list.retain(|c| !is_it(c));
        if list.is_empty() {
            table.remove(h, p);
        }
    }
}

/// The (lowercased host, literal text ending in `/`) key of an alternative filed in
/// `prefixed`, with the text's number of slashes (under 64): an exact host and a
/// `PathPrefix` or anchored `PathRegexp` whose literal text ends in `/`. Other prefixes stay
/// in the host's trie, which narrows them down to their last byte.
fn prefix_key(host: &HostKey, path: &PathKey) -> Option<(String, String, usize)> {
    let HostKey::Exact(h) = host else {
        return None;
    };
    let text = match path {
        PathKey::Prefix(p) if p.is_literal() => p.to_string(),
        PathKey::RegexpPrefix(text) => text.to_string(),
        _ => return None,
    };
    let slashes = text.bytes().filter(|&b| b == b'/').count();
    (text.ends_with('/') && slashes < 64).then(|| (h.to_string(), text, slashes))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_lists_fit_the_flat_table_slot() {
        // `literal_table` sizes its slots for a 32-byte value.
        assert_eq!(std::mem::size_of::<Cands>(), 32);
    }
}
