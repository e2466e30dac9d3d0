//! The part of Go's `text/template` that vulcand's `rewrite` offered, plus regexp group
//! references in replacements.
//!
//! A template is text with actions in `{{ }}`:
//!
//! | action | value |
//! |---|---|
//! | `{{.Request.Header.Get "X-Name"}}` | the first value of the request header, or nothing |
//! | `{{.Request.Host}}` | the `Host` header (or the URI's authority), port included |
//! | `{{.Request.Method}}` | the method |
//! | `{{.Request.URL.Path}}` | the path, as received (not percent-decoded) |
//! | `{{.Request.URL.RawQuery}}` | the query string without `?` |
//! | `{{.Request.RemoteAddr}}` | the client's `ip:port` |
//! | `{{.Captures.Get "name"}}` | the route's `<name>` placeholder value, or nothing |
//!
//! Arguments are Go string literals (`"..."` with escapes, or backticks). Spaces inside the
//! braces are allowed. Any other action is an error, reported with its byte offset.
//!
//! In a replacement (not in a response body), the text between actions also takes the
//! regexp's references, as `regex` and Go's `Regexp.Expand` write them: `$1`, `${1}`,
//! `$name`, `${name}`, and `$$` for a literal `$`. A name that is not a group of the regexp
//! is the route placeholder of that name, so `Path("/users/<id>")` lets a replacement say
//! `/u/${id}`. A `$` followed by no valid reference is kept as is.
//!
//! Unlike vulcand, which expanded `$1` first and then parsed the result as a template (so a
//! request path containing `{{` could inject actions, or turn a match into a 500), the
//! template is parsed once when the middleware is built and group values are inserted
//! verbatim.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderName};
use lb_route::go_string;
use regex::{Captures, Regex};

use crate::request::{ConnInfo, RouteCaptures};
use crate::service::Request;

/// A parsed template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    Group(Group),
    Action(Action),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Group {
    Index(usize),
    Name(Box<str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Header(HeaderName),
    Host,
    Method,
    Path,
    RawQuery,
    RemoteAddr,
    Capture(Box<str>),
}

/// Why a template does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateError {
    /// Byte offset of the fault.
    pub(crate) position: usize,
    /// What is wrong.
    pub(crate) message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.position, self.message)
    }
}

const SUPPORTED: &str = "supported: .Request.Header.Get \"NAME\", .Request.Host, \
    .Request.Method, .Request.URL.Path, .Request.URL.RawQuery, .Request.RemoteAddr, \
    .Captures.Get \"NAME\"";

impl Template {
    /// Parses a replacement: actions, and references to `regex`'s groups in the text.
    pub(crate) fn replacement(src: &str, regex: &Regex) -> Result<Self, TemplateError> {
        Self::parse(src, Some(regex))
    }

    /// Parses a response body: actions only (`$` is plain text there).
    pub(crate) fn body(src: &str) -> Result<Self, TemplateError> {
        Self::parse(src, None)
    }

    fn parse(src: &str, regex: Option<&Regex>) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = 0;
        while let Some(open) = src[rest..].find("{{").map(|i| rest + i) {
            push_text(&mut parts, &src[rest..open], regex);
            let (action, end) = parse_action(src, open)?;
            parts.push(Part::Action(action));
            rest = end;
        }
        push_text(&mut parts, &src[rest..], regex);
        Ok(Self { parts })
    }

    /// Appends the template's value for `req` (and the regexp match `groups`) to `out`.
    pub(crate) fn render(&self, out: &mut String, groups: Option<&Captures<'_>>, req: &View<'_>) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Group(group) => {
                    let value = groups.and_then(|caps| match group {
                        Group::Index(i) => caps.get(*i),
                        Group::Name(name) => caps.name(name),
                    });
                    if let Some(value) = value {
                        out.push_str(value.as_str());
                    }
                }
                Part::Action(action) => req.write(action, out),
            }
        }
    }
}

/// Adds literal text, split at the regexp references it holds when `regex` is given.
fn push_text(parts: &mut Vec<Part>, text: &str, regex: Option<&Regex>) {
    let Some(regex) = regex else {
        if !text.is_empty() {
            parts.push(Part::Text(text.into()));
        }
        return;
    };
    let mut literal = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        literal.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            literal.push('$');
            rest = tail;
            continue;
        }
        let Some((name, tail)) = reference(after) else {
            literal.push('$');
            rest = after;
            continue;
        };
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal).into()));
        }
        parts.push(match name.parse::<usize>() {
            Ok(index) => Part::Group(Group::Index(index)),
            Err(_) if regex.capture_names().flatten().any(|n| n == name) => {
                Part::Group(Group::Name(name.into()))
            }
            Err(_) => Part::Action(Action::Capture(name.into())),
        });
        rest = tail;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal.into()));
    }
}

/// The reference at the start of `s` (just after a `$`), as `regex`'s expansion reads it:
/// `{anything but }}` or the longest run of `[0-9A-Za-z_]`. Returns it and what follows.
fn reference(s: &str) -> Option<(&str, &str)> {
    if let Some(braced) = s.strip_prefix('{') {
        let close = braced.find('}')?;
        let name = &braced[..close];
        return (!name.is_empty()).then(|| (name, &braced[close + 1..]));
    }
    let len = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    (len > 0).then(|| (&s[..len], &s[len..]))
}

/// Parses the action whose `{{` is at `open`; returns it and the offset after its `}}`.
fn parse_action(src: &str, open: usize) -> Result<(Action, usize), TemplateError> {
    let bytes = src.as_bytes();
    let skip_spaces = |mut i: usize| {
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let start = skip_spaces(open + 2);
    let mut i = start;
    while bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'))
    {
        i += 1;
    }
    let field = &src[start..i];
    i = skip_spaces(i);
    let argument = match bytes.get(i) {
        Some(b'"' | b'`') => {
            let (value, end) = go_string::unquote(src, i).map_err(|e| TemplateError {
                position: e.position,
                message: e.message,
            })?;
            let at = i;
            i = skip_spaces(end);
            Some((value, at))
        }
        _ => None,
    };
    if !src[i..].starts_with("}}") {
        let message = if src[i..].is_empty() {
            "unclosed action (missing `}}`)".to_owned()
        } else {
            let len = src[i..].chars().next().map_or(1, char::len_utf8);
            format!("unexpected {:?} in action; {SUPPORTED}", &src[i..i + len])
        };
        return Err(TemplateError {
            position: if src[i..].is_empty() { open } else { i },
            message,
        });
    }
    let end = i + 2;
    let unsupported = || TemplateError {
        position: open,
        message: format!("unsupported action `{}`; {SUPPORTED}", &src[open..end]),
    };
    let action = match (field, argument) {
        (".Request.Header.Get", Some((name, at))) => Action::Header(
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| TemplateError {
                position: at,
                message: format!("{name:?} is not a valid header name"),
            })?,
        ),
        (".Captures.Get", Some((name, _))) => Action::Capture(name.into()),
        (".Request.Host", None) => Action::Host,
        (".Request.Method", None) => Action::Method,
        (".Request.URL.Path", None) => Action::Path,
        (".Request.URL.RawQuery", None) => Action::RawQuery,
        (".Request.RemoteAddr", None) => Action::RemoteAddr,
        _ => return Err(unsupported()),
    };
    Ok((action, end))
}

/// What a template can read of a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    headers: &'a HeaderMap,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    query: &'a str,
    remote: Option<SocketAddr>,
    captures: Option<&'a RouteCaptures>,
}

impl<'a> View<'a> {
    /// The view of `req`.
    pub(crate) fn of(req: &'a Request) -> Self {
        Self {
            headers: req.headers(),
            method: req.method().as_str(),
            host: super::request_host(req),
            path: req.uri().path(),
            query: req.uri().query().unwrap_or(""),
            remote: ConnInfo::of(req).map(|conn| conn.client),
            captures: req.extensions().get::<RouteCaptures>(),
        }
    }

    fn write(&self, action: &Action, out: &mut String) {
        match action {
            Action::Header(name) => {
                if let Some(value) = self.headers.get(name) {
                    out.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
            }
            Action::Host => out.push_str(self.host),
            Action::Method => out.push_str(self.method),
            Action::Path => out.push_str(self.path),
            Action::RawQuery => out.push_str(self.query),
            Action::RemoteAddr => {
                if let Some(remote) = self.remote {
                    let _ = write!(out, "{remote}");
                }
            }
            Action::Capture(name) => {
                if let Some(value) = self.captures.and_then(|c| c.get(name)) {
                    out.push_str(value);
                }
            }
        }
    }
}

/// A copy of what a template can read of a request, kept while the request is forwarded
/// so that its response body can be rendered.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    headers: HeaderMap,
    method: http::Method,
    host: String,
    uri: http::Uri,
    remote: Option<SocketAddr>,
    captures: Option<RouteCaptures>,
}

impl Snapshot {
    /// Copies what templates read of `req`.
    pub(crate) fn of(req: &Request) -> Self {
        Self {
            headers: req.headers().clone(),
            method: req.method().clone(),
            host: super::request_host(req).to_owned(),
            uri: req.uri().clone(),
            remote: ConnInfo::of(req).map(|conn| conn.client),
            captures: req.extensions().get::<RouteCaptures>().cloned(),
        }
    }

    /// The view of the copy.
    pub(crate) fn view(&self) -> View<'_> {
        View {
            headers: &self.headers,
            method: self.method.as_str(),
            host: &self.host,
            path: self.uri.path(),
            query: self.uri.query().unwrap_or(""),
            remote: self.remote,
            captures: self.captures.as_ref(),
        }
    }

    /// The request's method.
    pub(crate) fn method(&self) -> &http::Method {
        &self.method
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    fn request() -> Request {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/a/b?x=1")
            .header("host", "example.com:8080")
            .header("x-header", "bar")
            .body(body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnInfo {
            client: "[2001:db8::7]:4000".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
        });
        req.extensions_mut()
            .insert(RouteCaptures(vec![("id".into(), "42".into())]));
        req
    }

    fn render(src: &str) -> String {
        let req = request();
        let mut out = String::new();
        Template::body(src)
            .unwrap()
            .render(&mut out, None, &View::of(&req));
        out
    }

    #[test]
    fn every_action_reads_the_request() {
        assert_eq!(
            render(r#"{{.Request.Header.Get "X-Header"}}|{{ .Request.Header.Get `x-none` }}|"#),
            "bar||"
        );
        assert_eq!(
            render(
                "{{.Request.Host}} {{.Request.Method}} {{.Request.URL.Path}} {{.Request.URL.RawQuery}}"
            ),
            "example.com:8080 POST /a/b x=1"
        );
        assert_eq!(
            render(r#"{{.Request.RemoteAddr}} {{.Captures.Get "id"}}{{.Captures.Get "no"}}"#),
            "[2001:db8::7]:4000 42"
        );
        assert_eq!(render("no actions, $1 stays"), "no actions, $1 stays");
    }

    #[test]
    fn replacement_references_groups_then_route_captures() {
        let regex = Regex::new(r"^/(?P<first>\w+)/(\w+)").unwrap();
        let template =
            Template::replacement("/$2/${first}/$first$$/${id}/$id.x/$9/$-/${unclosed", &regex)
                .unwrap();
        let req = request();
        let caps = regex.captures("/a/b").unwrap();
        let mut out = String::new();
        template.render(&mut out, Some(&caps), &View::of(&req));
        assert_eq!(out, "/b/a/a$/42/42.x//$-/${unclosed");
    }

    #[test]
    fn group_values_are_not_parsed_as_templates() {
        let regex = Regex::new("(.*)").unwrap();
        let template = Template::replacement("x$1", &regex).unwrap();
        let req = request();
        let caps = regex.captures("{{.Request.Method}}").unwrap();
        let mut out = String::new();
        template.render(&mut out, Some(&caps), &View::of(&req));
        assert_eq!(out, "x{{.Request.Method}}");
    }

    #[test]
    fn bad_actions_are_rejected_with_their_position() {
        for (src, position, needle) in [
            ("ab{{.Bad}}", 2, "unsupported action `{{.Bad}}`"),
            ("{{.Request.Host", 0, "unclosed action"),
            (
                r#"{{.Request.Header.Get "a b"}}"#,
                22,
                "not a valid header name",
            ),
            ("{{.Request.Header.Get}}", 0, "unsupported action"),
            (r#"{{.Request.Host "x"}}"#, 0, "unsupported action"),
            ("{{.Request.Host | x}}", 16, "unexpected \"|\""),
            (r#"{{.Request.Header.Get "\q"}}"#, 23, "unknown escape"),
        ] {
            let err = Template::body(src).unwrap_err();
            assert_eq!(err.position, position, "{src}: {err}");
            assert!(err.message.contains(needle), "{src}: {err}");
        }
    }
}
