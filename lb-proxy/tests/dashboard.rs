//! The dashboard (`GET /dashboard` on the admin API) loaded in a real headless Chromium
//! against an in-process lbproxy: what it renders once its scripts have polled the API.
//!
//! Chromium runs the page on a virtual clock (see `lb_testkit::chromium`), so the page's
//! one-second poll fires a fixed number of times before the DOM is taken, however slow the
//! machine. Without Chromium the tests skip, or fail under CI (`LB_REQUIRE_SERVICES`).

mod harness;

use std::time::Duration;

use http::{Method, StatusCode, header};
use lb_testkit::chromium::Chromium;
use serde_json::json;

use harness::{Backend, Client, Proxy, Tree, request, unused_addr, within};

/// Virtual time the page runs for: its first poll at load, then one a second, so at least
/// two polls (a rate needs two) complete.
const BUDGET: Duration = Duration::from_millis(3500);

/// Requests sent through the frontend `f1` before the page is loaded.
const REQUESTS: usize = 7;

#[tokio::test]
async fn dashboard_renders_frontends_backends_servers_breaker_and_errors() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    let alive = Backend::named("alive").await;
    let dead = format!("http://{}", unused_addr());
    let proxy = Proxy::start().await;
    let revision = proxy
        .apply(
            Tree::new()
                .backend(
                    "b1",
                    // Window 2, threshold 1: the live server stays up through one slow probe;
                    // the dead one is down after two refused probes.
                    json!({"HealthCheck": {
                        "Path": "/health", "Interval": "100ms", "Timeout": "1s",
                        "Window": 2, "Threshold": 1,
                    }}),
                )
                .server("b1", "alive", &alive.url())
                .server("b1", "dead", &dead)
                .frontend("f1", "b1", r#"PathPrefix("/api")"#, json!({}))
                .frontend("f2", "b1", r#"PathPrefix("/static")"#, json!({}))
                .key(
                    "frontends/f1/middlewares/cb",
                    json!({"Id": "cb", "Priority": 0, "Type": "cbreaker", "Middleware": {
                        "Condition": "NetworkErrorRatio() > 0.5",
                        "Fallback": {"Type": "response", "Action": {"StatusCode": 503, "ContentType": "text/plain", "Body": "open"}},
                    }}),
                )
                .frontend("broken", "b1", "PathPrefix(", json!({})),
        )
        .await;

    // Wait (never measure) until the dead server is out of rotation, through f2, so that f1's
    // traffic below all reaches the live server and its breaker has no reason to trip.
    let mut client = proxy.client().await;
    within("traffic to settle on the live server", async {
        let mut streak = 0;
        while streak < 10 {
            let reply = client.get("app.test", "/static/x").await;
            if (reply.status, reply.text()) == (StatusCode::OK, "alive") {
                streak += 1;
            } else {
                streak = 0;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
    .await;
    for _ in 0..REQUESTS {
        let reply = client.get("app.test", "/api/users").await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "alive"));
    }

    let dom = render(&chromium, &format!("http://{}/dashboard", proxy.api())).await;
    let page = Page(&dom);
    let shown = page.body();

    assert_eq!(page.text_of("revision"), revision.to_string(), "{shown}");
    assert_eq!(page.text_of("status"), "ok", "{shown}");
    assert_eq!(page.text_of("registry"), "memory://", "{shown}");
    assert_eq!(page.text_of("registry-connected"), "connected", "{shown}");
    assert!(
        page.open_tag("error-banner").contains("hidden"),
        "a request failed:\n{shown}"
    );

    let f1 = page.row("tr", "data-frontend", "f1");
    assert_eq!(field(f1, "route"), r#"PathPrefix("/api")"#);
    assert_eq!(field(f1, "backend"), "b1");
    assert_eq!(field(f1, "total"), REQUESTS.to_string(), "{f1}");
    assert_number(&field(f1, "rate"), "/s", f1);
    assert_number(&field(f1, "p50"), " ms", f1);
    assert_number(&field(f1, "p99"), " ms", f1);
    assert!(
        f1.contains(r#"data-middleware="cb""#) && f1.contains(r#"data-state="standby""#),
        "no breaker state in {f1}"
    );
    let f2 = page.row("tr", "data-frontend", "f2");
    assert_eq!(field(f2, "route"), r#"PathPrefix("/static")"#);

    let backend = page.row("section", "data-backend", "b1");
    let live = Page(backend).row("tr", "data-server", "alive");
    assert_eq!(field(live, "url"), alive.url());
    assert_eq!(field(live, "health"), "up", "{live}");
    let down = Page(backend).row("tr", "data-server", "dead");
    assert_eq!(field(down, "url"), dead);
    assert!(field(down, "health").starts_with("down"), "{down}");

    let error = page.row("tr", "data-error-key", "frontends/broken/frontend");
    assert_eq!(field(error, "key"), "frontends/broken/frontend");
    assert_eq!(field(error, "severity"), "error");
    assert!(field(error, "message").contains("Route"), "{error}");
    assert_eq!(field(error, "kept-last-good"), "no");
    assert!(
        !dom.contains(r#"data-frontend="broken""#),
        "the broken frontend is not in force"
    );
}

#[tokio::test]
async fn dashboard_with_api_token_takes_the_token_from_its_url() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    let proxy = Proxy::start_with_api_token("s3cret").await;
    let revision = proxy
        .apply(Tree::new().backend("b1", json!({})).frontend(
            "f1",
            "b1",
            r#"PathPrefix("/")"#,
            json!({}),
        ))
        .await;
    let api = proxy.api();

    // Without the token (or with a wrong one) neither the page nor the API answers; the query
    // token is accepted for the page only.
    for path in [
        "/dashboard",
        "/dashboard?token=wrong",
        "/v2/status",
        "/v2/status?token=s3cret",
    ] {
        let reply = get(api, path, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let page = get(api, "/dashboard?token=s3cret", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let status = get(api, "/v2/status", Some("Bearer s3cret")).await;
    assert_eq!(status.status, StatusCode::OK);

    let dom = render(&chromium, &format!("http://{api}/dashboard?token=s3cret")).await;
    let page = Page(&dom);
    let shown = page.body();
    assert_eq!(page.text_of("revision"), revision.to_string(), "{shown}");
    let f1 = page.row("tr", "data-frontend", "f1");
    assert_eq!(field(f1, "route"), r#"PathPrefix("/")"#);
    assert!(
        page.open_tag("error-banner").contains("hidden"),
        "a request failed:\n{shown}"
    );
}

// === Helpers ===

/// The page at `url` as Chromium rendered it after [`BUDGET`] of virtual time.
async fn render(chromium: &Chromium, url: &str) -> String {
    chromium
        .dump_dom(url, BUDGET)
        .await
        .unwrap_or_else(|e| panic!("chromium could not render {url}: {e}"))
}

/// `GET path` on the admin API with an optional `Authorization` header.
async fn get(api: std::net::SocketAddr, path: &str, authorization: Option<&str>) -> harness::Reply {
    let mut request = request(Method::GET, "admin", path, bytes::Bytes::new());
    if let Some(value) = authorization {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            value.parse().expect("a header value"),
        );
    }
    Client::connect(api).await.send(request).await
}

/// A serialized DOM (or a piece of one). The page renders each value into its own element
/// with stable attributes, so plain string search finds them.
#[derive(Clone, Copy)]
struct Page<'a>(&'a str);

impl<'a> Page<'a> {
    /// The element `<tag attr="value" ...>...</tag>` (which must not nest a `tag`).
    fn row(self, tag: &str, attr: &str, value: &str) -> &'a str {
        let start = self
            .0
            .find(&format!(r#"<{tag} {attr}="{value}""#))
            .unwrap_or_else(|| panic!("no <{tag} {attr}={value:?}> in:\n{}", self.body()));
        let close = format!("</{tag}>");
        let end = self.0[start..]
            .find(&close)
            .unwrap_or_else(|| panic!("<{tag} {attr}={value:?}> is not closed"));
        &self.0[start..start + end + close.len()]
    }

    /// What the page shows: from `<body` to its script, for failure messages.
    fn body(self) -> &'a str {
        let start = self.0.find("<body").unwrap_or(0);
        let end = self.0[start..]
            .find("<script")
            .map_or(self.0.len(), |end| start + end);
        &self.0[start..end]
    }

    /// The opening tag of the element with `id`.
    fn open_tag(self, id: &str) -> &'a str {
        let at = self
            .0
            .find(&format!(r#" id="{id}""#))
            .unwrap_or_else(|| panic!("no #{id} in:\n{}", self.body()));
        let start = self.0[..at].rfind('<').expect("an opening tag");
        let end = at + self.0[at..].find('>').expect("the tag's end");
        &self.0[start..=end]
    }

    /// The text of the element with `id`.
    fn text_of(self, id: &str) -> String {
        let open = self.open_tag(id);
        let start = self.0.find(open).expect("the tag") + open.len();
        let end = start + self.0[start..].find("</").expect("the element's end");
        text(&self.0[start..end])
    }
}

/// The text of the `<td data-field="name">` in `row`.
fn field(row: &str, name: &str) -> String {
    let at = row
        .find(&format!(r#"data-field="{name}""#))
        .unwrap_or_else(|| panic!("no {name} cell in {row}"));
    let start = at + row[at..].find('>').expect("the cell tag's end") + 1;
    let end = start + row[start..].find("</td>").expect("the cell's end");
    text(&row[start..end])
}

/// Markup to text: tags dropped, the entities a DOM serializer writes decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// `value` is a number followed by `unit`, not the page's "–" for a missing figure.
fn assert_number(value: &str, unit: &str, context: &str) {
    let number = value
        .strip_suffix(unit)
        .unwrap_or_else(|| panic!("{value:?} does not end in {unit:?}: {context}"));
    assert!(
        number.parse::<f64>().is_ok_and(f64::is_finite),
        "{value:?} is not a number: {context}"
    );
}
