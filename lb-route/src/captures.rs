//! Placeholder captures returned with a match.

use smallvec::SmallVec;

/// How many captures fit inline before the list spills to the heap. Routes rarely have more
/// than four placeholders, so matching them never allocates (matchit keeps three inline).
const INLINE: usize = 4;

/// The values captured by `<name>` placeholders of the route that matched, in the order they
/// were matched (host, then path, then the other matchers). Names and values borrow from the
/// router and the request, so building them costs no allocation for up to four captures.
///
/// ```
/// use lb_route::Router;
/// let mut router = Router::new();
/// router.insert("users", 0, r#"Host("<tenant>.example.com") && Path("/users/<int:id>")"#, ()).unwrap();
/// let req = http::Request::get("http://acme.example.com/users/42").body(()).unwrap();
/// let m = router.route(&req).unwrap();
/// assert_eq!(m.captures.get("tenant"), Some("acme"));
/// assert_eq!(m.captures.get("id"), Some("42"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures<'a> {
    items: SmallVec<[(&'a str, &'a str); INLINE]>,
}

impl<'a> Captures<'a> {
    /// An empty list.
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value captured under `name`.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.items.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// All `(name, value)` pairs in match order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.items.iter().copied()
    }

    /// Number of captures.
    #[inline]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing was captured.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[inline]
    pub(crate) fn push(&mut self, name: &'a str, value: &'a str) {
        self.items.push((name, value));
    }

    #[inline]
    pub(crate) fn truncate(&mut self, len: usize) {
        self.items.truncate(len);
    }

    #[inline]
    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    #[inline]
    pub(crate) fn copy_from(&mut self, other: &Self) {
        self.items.clear();
        self.items.extend_from_slice(&other.items);
    }
}
