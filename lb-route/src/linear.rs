//! The reference router: every alternative checked one by one in priority order.
//!
//! [`LinearRouter`] defines the semantics that [`Router`](crate::Router) implements with an
//! index: same alternatives, same ranking, no index. It is the naive baseline of the
//! `route_match` benchmark and the oracle of the router's property tests. Do not use it to
//! serve traffic: a lookup costs time proportional to the number of routes.

use std::sync::Arc;

use crate::ast::Expr;
use crate::captures::Captures;
use crate::condition::{Alternative, Cond, Ctx, HostKey, PathKey, alternatives, score};
use crate::error::ParseError;
use crate::request::{RequestView, strip_port};
use crate::router::Match;

/// A router without an index, for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct LinearRouter<T> {
    routes: Vec<(Arc<str>, T)>,
    /// (score, route index, the alternative's full conjunction), best first: by score, then
    /// route id, then the order the alternatives were written in (the sort is stable).
    alts: Vec<(u64, usize, Vec<Cond>)>,
}

impl<T> Default for LinearRouter<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> LinearRouter<T> {
    /// An empty router.
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            alts: Vec::new(),
        }
    }

    /// Parses and adds a route. Ids must be unique (this router does not replace).
    pub fn insert(
        &mut self,
        id: impl Into<Arc<str>>,
        priority: i32,
        route: &str,
        value: T,
    ) -> Result<(), ParseError> {
        let cond = Cond::compile(&Expr::parse(route)?);
        let index = self.routes.len();
        self.routes.push((id.into(), value));
        for alt in alternatives(&cond) {
            self.alts
                .push((score(priority, alt.specificity), index, whole(alt)));
        }
        let routes = &self.routes;
        self.alts.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| routes[a.1].0.cmp(&routes[b.1].0))
        });
        Ok(())
    }

    /// The first alternative, in priority order, whose every condition holds.
    pub fn route<'r: 'q, 'q, R: RequestView + ?Sized>(
        &'r self,
        req: &'q R,
    ) -> Option<Match<'r, 'q, T>> {
        let (host, _) = strip_port(req.host());
        let host_lower = host.to_ascii_lowercase();
        let path = match req.path() {
            "" => "/",
            p => p,
        };
        let ctx = Ctx {
            req,
            host,
            host_lower: &host_lower,
            path,
        };
        let mut caps = Captures::new();
        for (_, index, conds) in &self.alts {
            if conds.iter().all(|c| c.eval(&ctx, &mut caps)) {
                let (id, value) = &self.routes[*index];
                return Some(Match {
                    id,
                    value,
                    captures: caps,
                });
            }
            caps.clear();
        }
        None
    }
}

/// Puts an alternative's index key back in front of its residual conditions.
fn whole(alt: Alternative) -> Vec<Cond> {
    let mut conds = Vec::with_capacity(alt.residual.len() + 2);
    match alt.host {
        HostKey::Exact(p) | HostKey::Pattern(p) => conds.push(Cond::Host(p)),
        HostKey::Any => {}
    }
    match alt.path {
        PathKey::Exact(p) => conds.push(Cond::Path(p)),
        PathKey::Prefix(p) => conds.push(Cond::PathPrefix(p)),
        // The regexp itself is in the residual conditions.
        PathKey::RegexpPrefix(_) | PathKey::Any => {}
    }
    conds.extend(alt.residual);
    conds
}
