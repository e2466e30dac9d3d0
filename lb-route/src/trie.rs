//! A radix trie of path patterns, the index inside each host.
//!
//! Literal text is stored compressed on edges (a node's `label`); placeholders are their own
//! children. Each node lists the entries whose pattern ends there, split into exact (`Path`)
//! and prefix (`PathPrefix`) entries. Lookup walks the request path once, following the one
//! literal child that starts with the next byte and every placeholder child that can match,
//! and hands each list of candidate entries to a visitor. The walk allocates nothing; it
//! recurses once per placeholder or literal edge on the way, never once per route.

use smallvec::SmallVec;

use crate::captures::Captures;
use crate::pattern::{ParamKind, Piece};
use crate::swar::starts_with;

/// A node's label, inline when short: the walk compares it without another cache miss.
type Label = SmallVec<[u8; 16]>;

/// How an entry's pattern must relate to the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The pattern matches the whole path.
    Exact,
    /// The pattern matches a segment-aware prefix of the path.
    Prefix,
    /// The pattern is any byte prefix of the path (the literal prefix of an anchored regexp,
    /// which is checked afterwards).
    Raw,
}

#[derive(Debug, Clone)]
pub(crate) struct Node<E> {
    /// Literal bytes consumed on entering this node (empty for the root and param nodes).
    label: Label,
    /// First byte of each literal child's label, in the same order as `children`. The walk
    /// scans this (inline up to 16 children) instead of every child's label, so it
    /// dereferences only the child it takes.
    first: SmallVec<[u8; 16]>,
    /// Literal children; their labels start with distinct bytes.
    children: Vec<Node<E>>,
    params: Vec<ParamChild<E>>,
    /// Entries ending here, best first (the router's order).
    exact: Vec<E>,
    prefix: Vec<E>,
    raw: Vec<E>,
}

#[derive(Debug, Clone)]
struct ParamChild<E> {
    kind: ParamKind,
    name: Box<str>,
    node: Node<E>,
}

impl<E> Default for Node<E> {
    fn default() -> Self {
        Self {
            label: Label::new(),
            first: SmallVec::new(),
            children: Vec::new(),
            params: Vec::new(),
            exact: Vec::new(),
            prefix: Vec::new(),
            raw: Vec::new(),
        }
    }
}

// === impl Node ===

impl<E: Clone> Node<E> {
    /// True when the trie holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.prefix.is_empty()
            && self.raw.is_empty()
            && self.children.is_empty()
            && self.params.is_empty()
    }

    /// Adds `id` under `pieces`. `before(a, b)` says whether entry `a` ranks ahead of `b`;
    /// lists stay sorted by it.
    pub(crate) fn insert(
        &mut self,
        pieces: &[Piece],
        anchor: Anchor,
        id: E,
        before: &impl Fn(&E, &E) -> bool,
    ) {
        match pieces.split_first() {
            None => {
                let list = match anchor {
                    Anchor::Exact => &mut self.exact,
                    Anchor::Prefix => &mut self.prefix,
                    Anchor::Raw => &mut self.raw,
                };
                let at = list.partition_point(|e| before(e, &id));
                list.insert(at, id);
            }
            Some((Piece::Literal(lit), rest)) => {
                self.insert_literal(lit.as_bytes(), rest, anchor, id, before)
            }
            Some((Piece::Param(p), rest)) => {
                let child = match self
                    .params
                    .iter()
                    .position(|c| c.kind == p.kind && *c.name == *p.name)
                {
                    Some(i) => &mut self.params[i],
                    None => {
                        self.params.push(ParamChild {
                            kind: p.kind,
                            name: p.name.as_str().into(),
                            node: Node::default(),
                        });
                        self.params.last_mut().expect("just pushed")
                    }
                };
                child.node.insert(rest, anchor, id, before);
            }
        }
    }

    fn insert_literal(
        &mut self,
        lit: &[u8],
        rest: &[Piece],
        anchor: Anchor,
        id: E,
        before: &impl Fn(&E, &E) -> bool,
    ) {
        if lit.is_empty() {
            return self.insert(rest, anchor, id, before);
        }
        let Some(i) = self.first.iter().position(|&b| b == lit[0]) else {
            let mut child = Node {
                label: Label::from_slice(lit),
                ..Node::default()
            };
            child.insert(rest, anchor, id, before);
            self.first.push(lit[0]);
            self.children.push(child);
            return;
        };
        let child = &mut self.children[i];
        let common = child
            .label
            .iter()
            .zip(lit)
            .take_while(|(a, b)| a == b)
            .count();
        if common < child.label.len() {
            // Split: the child keeps the tail of its label under a new node for the head.
            let tail = Label::from_slice(&child.label[common..]);
            let head = Label::from_slice(&child.label[..common]);
            let mut old = std::mem::take(child);
            old.label = tail;
            *child = Node {
                label: head,
                first: SmallVec::from_slice(&[old.label[0]]),
                children: vec![old],
                ..Node::default()
            };
        }
        child.insert_literal(&lit[common..], rest, anchor, id, before);
    }

    /// Removes `id` from under `pieces`; prunes nodes left empty. Returns whether it was found.
    pub(crate) fn remove(
        &mut self,
        pieces: &[Piece],
        anchor: Anchor,
        is_it: &impl Fn(&E) -> bool,
    ) -> bool {
        match pieces.split_first() {
            None => {
                let list = match anchor {
                    Anchor::Exact => &mut self.exact,
                    Anchor::Prefix => &mut self.prefix,
                    Anchor::Raw => &mut self.raw,
                };
                let before = list.len();
                list.retain(|e| !is_it(e));
                list.len() != before
            }
            Some((Piece::Literal(lit), rest)) => {
                self.remove_literal(lit.as_bytes(), rest, anchor, is_it)
            }
            Some((Piece::Param(p), rest)) => {
                let Some(i) = self
                    .params
                    .iter()
                    .position(|c| c.kind == p.kind && *c.name == *p.name)
                else {
                    return false;
                };
                let found = self.params[i].node.remove(rest, anchor, is_it);
                if self.params[i].node.is_empty() {
                    self.params.remove(i);
                }
                found
            }
        }
    }

    fn remove_literal(
        &mut self,
        lit: &[u8],
        rest: &[Piece],
        anchor: Anchor,
        is_it: &impl Fn(&E) -> bool,
    ) -> bool {
        if lit.is_empty() {
            return self.remove(rest, anchor, is_it);
        }
        let Some(i) = self.first.iter().position(|&b| b == lit[0]) else {
            return false;
        };
        let child = &mut self.children[i];
        let Some(tail) = lit.strip_prefix(&*child.label) else {
            return false;
        };
        let found = child.remove_literal(tail, rest, anchor, is_it);
        if child.is_empty() {
            self.children.remove(i);
            self.first.remove(i);
        } else if child.exact.is_empty()
            && child.prefix.is_empty()
            && child.raw.is_empty()
            && child.params.is_empty()
            && child.children.len() == 1
        {
            // Merge a pass-through node back into its only child, undoing an old split.
            child.first.clear();
            let only = child.children.pop().expect("one child");
            let mut label = child.label.clone();
            label.extend_from_slice(&only.label);
            *child = Node { label, ..only };
        }
        found
    }

    /// Walks `path` from this (root) node and calls `visit(entries, captures)` for every
    /// list of entries whose pattern matches: exact lists when the path is fully consumed,
    /// prefix lists at segment boundaries, raw lists wherever the walk gets to. Captures pushed for the placeholders on the way
    /// are in `caps` during the call and removed afterwards.
    pub(crate) fn search<'a, V>(&'a self, path: &'a str, caps: &mut Captures<'a>, visit: &mut V)
    where
        V: FnMut(&'a [E], &mut Captures<'a>),
    {
        self.walk(path, 0, caps, visit);
    }

    fn walk<'a, V>(&'a self, path: &'a str, pos: usize, caps: &mut Captures<'a>, visit: &mut V)
    where
        V: FnMut(&'a [E], &mut Captures<'a>),
    {
        let bytes = path.as_bytes();
        let rest = &bytes[pos..];
        if !self.raw.is_empty() {
            visit(&self.raw, caps);
        }
        if rest.is_empty() {
            if !self.exact.is_empty() {
                visit(&self.exact, caps);
            }
            if !self.prefix.is_empty() {
                visit(&self.prefix, caps);
            }
        } else if !self.prefix.is_empty()
            && (rest[0] == b'/' || (pos > 0 && bytes[pos - 1] == b'/'))
        {
            visit(&self.prefix, caps);
        }
        if let Some(&first) = rest.first()
            && let Some(i) = self.first.iter().position(|&b| b == first)
        {
            let child = &self.children[i];
            if starts_with(rest, &child.label) {
                child.walk(path, pos + child.label.len(), caps, visit);
            }
        }
        for param in &self.params {
            let Some(n) = param.kind.match_len(rest, b'/') else {
                continue;
            };
            let mark = caps.len();
            // `n` ends at `/`, a non-digit, or the end: always a char boundary.
            caps.push(&param.name, &path[pos..pos + n]);
            param.node.walk(path, pos + n, caps, visit);
            caps.truncate(mark);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;

    type EntryId = u32;

    fn trie(routes: &[(&str, Anchor)]) -> Node<EntryId> {
        let mut root = Node::default();
        for (i, (p, a)) in routes.iter().enumerate() {
            let pat = Pattern::parse(p).unwrap();
            root.insert(pat.pieces(), *a, i as EntryId, &|x, y| x < y);
        }
        root
    }

    fn hits(root: &Node<EntryId>, path: &str) -> Vec<(EntryId, Vec<(String, String)>)> {
        let mut out = Vec::new();
        let mut caps = Captures::new();
        root.search(path, &mut caps, &mut |ids, caps| {
            for &id in ids {
                out.push((
                    id,
                    caps.iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ));
            }
        });
        out.sort();
        out
    }

    #[test]
    fn shared_prefixes_split_and_still_match() {
        let t = trie(&[
            ("/api/users", Anchor::Exact),
            ("/api/uploads", Anchor::Exact),
            ("/api", Anchor::Exact),
        ]);
        assert_eq!(hits(&t, "/api/users").len(), 1);
        assert_eq!(hits(&t, "/api/uploads")[0].0, 1);
        assert_eq!(hits(&t, "/api")[0].0, 2);
        assert!(hits(&t, "/api/u").is_empty());
        assert!(hits(&t, "/ap").is_empty());
    }

    #[test]
    fn literal_and_placeholder_siblings_are_both_candidates() {
        let t = trie(&[("/v1/new", Anchor::Exact), ("/v1/<id>", Anchor::Exact)]);
        let h = hits(&t, "/v1/new");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].1, vec![("id".to_string(), "new".to_string())]);
        assert_eq!(hits(&t, "/v1/7").len(), 1);
    }

    #[test]
    fn prefix_entries_fire_only_at_segment_boundaries() {
        let t = trie(&[("/api", Anchor::Prefix), ("/", Anchor::Prefix)]);
        assert_eq!(hits(&t, "/api/x").len(), 2);
        assert_eq!(hits(&t, "/api").len(), 2);
        assert_eq!(hits(&t, "/apix").len(), 1);
    }

    #[test]
    fn raw_entries_fire_mid_segment() {
        let mut root = Node::default();
        let p = Pattern::parse("/re1").unwrap();
        root.insert(p.pieces(), Anchor::Raw, 7u32, &|a, b| a < b);
        assert_eq!(hits(&root, "/re12/x").len(), 1);
        assert_eq!(hits(&root, "/re1").len(), 1);
        assert!(hits(&root, "/re").is_empty());
    }

    #[test]
    fn rest_placeholder_takes_everything() {
        let t = trie(&[("/static/<path:f>", Anchor::Exact)]);
        assert_eq!(hits(&t, "/static/a/b.css")[0].1[0].1, "a/b.css");
        assert_eq!(hits(&t, "/static/")[0].1[0].1, "");
        assert!(hits(&t, "/static").is_empty());
    }

    #[test]
    fn remove_prunes_and_merges_nodes() {
        let mut t = trie(&[
            ("/api/users", Anchor::Exact),
            ("/api/uploads", Anchor::Exact),
        ]);
        let p = Pattern::parse("/api/uploads").unwrap();
        assert!(t.remove(p.pieces(), Anchor::Exact, &|&e| e == 1));
        assert!(!t.remove(p.pieces(), Anchor::Exact, &|&e| e == 1));
        assert_eq!(t.children.len(), 1);
        assert_eq!(&*t.children[0].label, b"/api/users");
        let p = Pattern::parse("/api/users").unwrap();
        assert!(t.remove(p.pieces(), Anchor::Exact, &|&e| e == 0));
        assert!(t.is_empty());
    }

    #[test]
    fn lists_keep_the_given_order() {
        let mut root = Node::default();
        let p = Pattern::parse("/x").unwrap();
        for id in [5, 1, 3] {
            root.insert(p.pieces(), Anchor::Exact, id, &|a: &u32, b: &u32| a < b);
        }
        assert_eq!(
            hits(&root, "/x").iter().map(|h| h.0).collect::<Vec<_>>(),
            [1, 3, 5]
        );
    }
}
