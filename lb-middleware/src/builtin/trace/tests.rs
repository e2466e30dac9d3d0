use std::net::UdpSocket;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame};

use serde_json::{Value, json};
use tower_layer::Layer;

use super::*;
use crate::body::BoxError;
use crate::types::Types;

fn ctx() -> BuildContext<'static> {
    BuildContext {
        frontend_id: "f1",
        middleware_id: "m1",
    }
}

/// A tracer whose queue the test holds instead of a writer thread.
fn queued(req: &[&str], resp: &[&str], capacity: usize) -> (HttpLayer, Receiver<Record>) {
    let config = TraceConfig {
        req_headers: req.iter().map(|s| s.to_string()).collect(),
        resp_headers: resp.iter().map(|s| s.to_string()).collect(),
        addr: "stdout".into(),
    };
    let (req_headers, resp_headers, _) = config.parse().unwrap();
    let (tx, rx) = sync_channel(capacity);
    let tracer = Tracer {
        req_headers,
        resp_headers,
        tx,
        stats: Arc::new(Stats::new("test".into())),
    };
    (layer(Arc::new(tracer)), rx)
}

fn json_of(record: &Record) -> Value {
    let mut out = Vec::new();
    record.write_json(&mut out, "f1", "m1");
    serde_json::from_slice(&out).unwrap()
}

fn app() -> HttpService {
    HttpService::from_fn(|_req| async {
        http::Response::builder()
            .status(201)
            .header("content-type", "text/plain")
            .header("x-secret", "no")
            .body(body::full("hello"))
            .unwrap()
    })
}

fn request(uri: &str, headers: &[(&str, &str)], tls: bool) -> Request {
    let mut req = http::Request::builder().method("POST").uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut req = req.body(body::full("abc")).unwrap();
    req.extensions_mut().insert(ConnInfo {
        client: "[2001:db8::5]:4000".parse().unwrap(),
        local: "[::1]:443".parse().unwrap(),
        tls,
    });
    req
}

#[tokio::test]
async fn one_record_per_request_when_the_body_ends() {
    let (layer, rx) = queued(&["X-Id", "Authorization"], &["Content-Type"], 8);
    let service = layer.layer(app());
    let req = request(
        "/a?b=1",
        &[
            ("host", "example.com"),
            ("x-id", "1"),
            ("x-id", "2"),
            ("content-length", "3"),
        ],
        true,
    );
    let response = service.oneshot(req).await;
    assert!(rx.try_recv().is_err(), "logged before the body ended");
    assert_eq!(body::collect_string(response).await, "hello");
    let mut record = json_of(&rx.try_recv().unwrap());
    let roundtrip = record["response"]["roundtrip"].take();
    assert!(roundtrip.as_f64().unwrap() >= 0.0);
    let time = record["time"].take();
    assert_eq!(
        time.as_str().unwrap().len(),
        "2024-05-01T12:00:00.123Z".len()
    );
    assert_eq!(
        record,
        json!({
            "time": null,
            "frontend": "f1",
            "middleware": "m1",
            "request": {
                "method": "POST", "url": "/a?b=1", "host": "example.com",
                "client": "2001:db8::5", "body_bytes": 3,
                "headers": {"X-Id": ["1", "2"]}, "tls": {},
            },
            "response": {
                "code": 201, "roundtrip": null, "body_bytes": 5,
                "headers": {"Content-Type": ["text/plain"]},
            },
        })
    );

    // Plain HTTP, no headers to log: no tls, no headers keys.
    let response = service.oneshot(request("/", &[], false)).await;
    drop(body::to_bytes(response.into_body()).await.unwrap());
    let record = json_of(&rx.try_recv().unwrap());
    assert!(record["request"].get("tls").is_none(), "{record}");
    assert!(record["request"].get("headers").is_none(), "{record}");
    assert!(record["response"].get("aborted").is_none(), "{record}");
}

#[tokio::test]
async fn authorization_values_are_never_logged() {
    let (layer, rx) = queued(&["Authorization", "Proxy-Authorization"], &[], 8);
    let req = request(
        "/",
        &[
            ("authorization", "Bearer s3cret-token"),
            ("proxy-authorization", "s3cret"),
        ],
        false,
    );
    let response = layer.layer(app()).oneshot(req).await;
    drop(response);
    let mut line = Vec::new();
    rx.try_recv().unwrap().write_json(&mut line, "f1", "m1");
    let line = String::from_utf8(line).unwrap();
    assert!(!line.contains("s3cret"), "{line}");
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        record["request"]["headers"],
        json!({"Authorization": ["Bearer [REDACTED]"], "Proxy-Authorization": ["[REDACTED]"]})
    );
}

/// A body of two chunks, the second never ready.
struct Stalled(Option<Bytes>);

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.0.take() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn abandoned_responses_and_requests_are_logged_as_aborted() {
    let (layer, rx) = queued(&[], &[], 8);
    let streaming = HttpService::from_fn(|_req| async {
        http::Response::new(body::boxed_dyn(Stalled(Some(Bytes::from_static(b"1234")))))
    });
    let response = layer
        .layer(streaming)
        .oneshot(request("/s", &[], false))
        .await;
    let mut body = response.into_body();
    let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "1234");
    assert!(rx.try_recv().is_err());
    drop(body);
    let record = json_of(&rx.try_recv().unwrap());
    assert_eq!(record["response"]["code"], 200);
    assert_eq!(record["response"]["body_bytes"], 4);
    assert_eq!(record["response"]["aborted"], true);

    let never = HttpService::from_fn(|_req| std::future::pending::<Response>());
    let mut future = layer.layer(never).oneshot(request("/n", &[], false));
    assert!(futures_poll_once(&mut future).await.is_none());
    drop(future);
    let record = json_of(&rx.try_recv().unwrap());
    assert_eq!(record["request"]["url"], "/n");
    assert_eq!(record["response"]["code"], 499);
    assert_eq!(record["response"]["aborted"], true);
}

async fn futures_poll_once(future: &mut crate::ResponseFuture) -> Option<Response> {
    match std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        Poll::Ready(response) => Some(response),
        Poll::Pending => None,
    }
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_records() {
    let (layer, rx) = queued(&[], &[], 2);
    let service = layer.layer(app());
    for _ in 0..5 {
        drop(service.oneshot(request("/", &[], false)).await);
    }
    assert_eq!(rx.try_iter().count(), 2);
    let status = layer.status().unwrap();
    assert_eq!(status["dropped"], 3, "{status}");
    assert_eq!(status["written"], 0, "{status}");
}

/// The text of the next datagram on `socket`.
fn receive(socket: &UdpSocket) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = vec![0; 65536];
    let n = socket.recv(&mut buffer).expect("a syslog datagram");
    String::from_utf8(buffer[..n].to_vec()).unwrap()
}

/// Splits `<PRI>rest` and checks the `TAG[PID]: ` part, returning the priority, the text
/// before the tag and the message.
fn parse_frame(frame: &str) -> (u8, String, String) {
    let (priority, rest) = frame[1..].split_once('>').unwrap();
    let tag = format!(" {}[{}]: ", program_name(), std::process::id());
    let (head, message) = rest.split_once(&tag).expect(&tag);
    assert!(message.ends_with('\n'), "{frame:?}");
    (
        priority.parse().unwrap(),
        head.to_owned(),
        message.trim_end().to_owned(),
    )
}

async fn one_request(layer: &HttpLayer) {
    let response = layer
        .layer(app())
        .oneshot(request("/sys", &[("x-id", "7")], false))
        .await;
    drop(body::to_bytes(response.into_body()).await.unwrap());
}

#[tokio::test]
async fn udp_syslog_gets_go_framed_records() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let types = Types::builtin();

    let config = json!({"Addr": format!("syslog://127.0.0.1:{port}"), "ReqHeaders": ["X-Id"]});
    let layer = types.build("trace", &config, &ctx()).unwrap();
    one_request(&layer).await;
    let (priority, head, message) = parse_frame(&receive(&server));
    // vulcand's defaults: LOG_LOCAL0 | LOG_DEBUG, prefix "@cee: ".
    assert_eq!(priority, 16 * 8 + 7);
    let (time, host) = head.split_once(' ').unwrap();
    assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    assert_eq!(host, local_hostname());
    let json: Value = serde_json::from_str(message.strip_prefix("@cee: ").unwrap()).unwrap();
    assert_eq!(json["request"]["url"], "/sys");
    assert_eq!(json["request"]["headers"]["X-Id"], json!(["7"]));
    assert_eq!(json["middleware"], "m1");

    let config = json!({"Addr": format!("syslog://127.0.0.1:{port}?f=LOG_LOCAL3&sev=INFO&prefix=%40json%3A")});
    let layer = types.build("trace", &config, &ctx()).unwrap();
    one_request(&layer).await;
    let (priority, _, message) = parse_frame(&receive(&server));
    assert_eq!(priority, 19 * 8 + 6);
    assert!(message.starts_with("@json:{\"time\""), "{message}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while layer.status().unwrap()["written"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(layer.status().unwrap()["written"], 1);

    let config = json!({"Addr": format!("syslog://127.0.0.1:{port}?f=AUTH&sev=ALERT")});
    let layer = types.build("trace", &config, &ctx()).unwrap();
    one_request(&layer).await;
    assert_eq!(parse_frame(&receive(&server)).0, 4 * 8 + 1);
}

#[cfg(unix)]
#[tokio::test]
async fn unix_syslog_sockets_get_local_framing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = json!({"Addr": format!("syslog://{}?sev=NOTICE&f=DAEMON", path.display())});
    let layer = Types::builtin().build("trace", &config, &ctx()).unwrap();
    one_request(&layer).await;
    let mut buffer = vec![0; 65536];
    let n = server.recv(&mut buffer).unwrap();
    let frame = String::from_utf8(buffer[..n].to_vec()).unwrap();
    let (priority, stamp, message) = parse_frame(&frame);
    assert_eq!(priority, 3 * 8 + 5);
    // `Jan  2 15:04:05`, no host name.
    assert_eq!(stamp.len(), 15, "{stamp:?}");
    assert!(message.starts_with("@cee: {"), "{message}");
}

async fn wait_for_lines(path: &std::path::Path, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn file_sinks_append_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.log");
    std::fs::write(&path, "existing line\n").unwrap();
    let config =
        json!({"Addr": format!("file://{}", path.display()), "RespHeaders": ["Content-Type"]});
    let layer = Types::builtin().build("trace", &config, &ctx()).unwrap();
    one_request(&layer).await;
    one_request(&layer).await;
    let text = wait_for_lines(&path, 3).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "existing line");
    for line in &lines[1..] {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            record["response"]["headers"]["Content-Type"],
            json!(["text/plain"])
        );
        assert_eq!(record["frontend"], "f1");
    }
}

#[tokio::test]
async fn stdout_sinks_write_records() {
    let layer = Types::builtin()
        .build("trace", &json!({"Addr": "stdout"}), &ctx())
        .unwrap();
    one_request(&layer).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while layer.status().unwrap()["written"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = layer.status().unwrap();
    assert_eq!(
        status,
        json!({"addr": "stdout", "written": 1, "dropped": 0, "write_errors": 0})
    );
}

#[test]
fn addresses_parse_like_vulcand_plus_ours() {
    let local0_debug = Framing {
        priority: 135,
        prefix: "@cee: ".into(),
    };
    assert_eq!(Addr::parse("stdout"), Ok(Addr::Stdout));
    assert_eq!(
        Addr::parse("file:///var/log/t.log"),
        Ok(Addr::File("/var/log/t.log".into()))
    );
    assert_eq!(
        Addr::parse("syslog://logs.example.com"),
        Ok(Addr::Syslog(
            SyslogTarget::Udp("logs.example.com".into(), 514),
            local0_debug.clone()
        ))
    );
    assert_eq!(
        Addr::parse("syslog://[::1]:5514?prefix=x+y"),
        Ok(Addr::Syslog(
            SyslogTarget::Udp("::1".into(), 5514),
            Framing {
                priority: 135,
                prefix: "x y".into()
            }
        ))
    );
    assert_eq!(
        Addr::parse("syslog:///dev/log?sev=err&f=local7"),
        Ok(Addr::Syslog(
            SyslogTarget::Unix("/dev/log".into()),
            Framing {
                priority: 23 * 8 + 3,
                prefix: "@cee: ".into()
            }
        ))
    );
    assert_eq!(
        Addr::parse("syslog://"),
        Ok(Addr::Syslog(SyslogTarget::Local, local0_debug))
    );
}

#[test]
fn config_errors_name_the_field() {
    let types = Types::builtin();
    for (config, needle) in [
        (json!({}), "Addr: \"\" is not syslog://"),
        (json!({"Addr": "http://x"}), "Addr: \"http://x\" is not"),
        (
            json!({"Addr": "file://relative.log"}),
            "Addr: \"file://relative.log\" needs an absolute path",
        ),
        (json!({"Addr": "syslog://h:0"}), "Addr: \"h:0\" is not host"),
        (json!({"Addr": "syslog://h:x"}), "Addr: \"h:x\" is not host"),
        (
            json!({"Addr": "syslog://[::1"}),
            "Addr: \"[::1\" is not host",
        ),
        (
            json!({"Addr": "syslog://h?f=BAD"}),
            "Addr: unknown syslog facility f=\"BAD\"",
        ),
        (
            json!({"Addr": "syslog://h?sev=LOUD"}),
            "Addr: unknown syslog severity sev=\"LOUD\"",
        ),
        (
            json!({"Addr": "syslog://h?tag=x"}),
            "Addr: unknown syslog parameter \"tag\"",
        ),
        (
            json!({"Addr": "syslog://h?prefix=%zz"}),
            "Addr: parameter prefix: \"%zz\" is not valid",
        ),
        (json!({"Addr": 5}), "Addr: invalid type: integer"),
        (
            json!({"Addr": "stdout", "ReqHeaders": ["bad name"]}),
            "ReqHeaders: \"bad name\" is not a valid header name",
        ),
        (
            json!({"Addr": "stdout", "RespHeaders": [1]}),
            "RespHeaders: invalid type: integer",
        ),
        (
            json!({"Addr": "stdout", "Headers": []}),
            "unknown field `Headers`",
        ),
    ] {
        let err = types
            .validate_config("trace", &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{config}: {err}");
    }
    // vulcand writes null for empty lists.
    let ok = json!({"Addr": "syslog://127.0.0.1:514", "ReqHeaders": null, "RespHeaders": ["X-A"]});
    assert!(types.validate_config("trace", &ok).is_ok());
    assert_eq!(
        types
            .options("trace")
            .unwrap()
            .iter()
            .map(|o| o.field)
            .collect::<Vec<_>>(),
        ["Addr", "ReqHeaders", "RespHeaders"]
    );
}

#[test]
fn sinks_that_cannot_be_opened_fail_the_build_naming_addr() {
    let dir = tempfile::tempdir().unwrap();
    let types = Types::builtin();
    for addr in [
        format!("file://{}/missing/dir/trace.log", dir.path().display()),
        format!("syslog://{}/no.sock", dir.path().display()),
    ] {
        let err = types
            .build("trace", &json!({ "Addr": addr }), &ctx())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("Addr: cannot open {addr:?}")),
            "{err}"
        );
    }
}

#[test]
fn times_format_like_go() {
    let at = |secs: u64, millis: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
    assert_eq!(format_rfc3339(UNIX_EPOCH, false), "1970-01-01T00:00:00Z");
    assert_eq!(
        format_rfc3339(at(1_704_067_200 + 3661, 500), true),
        "2024-01-01T01:01:01.500Z"
    );
    assert_eq!(
        format_rfc3339(at(1_709_164_800, 0), false),
        "2024-02-29T00:00:00Z"
    );
    assert_eq!(
        format_rfc3339(at(951_868_800, 0), false),
        "2000-03-01T00:00:00Z"
    );
    assert_eq!(format_stamp(at(1_704_067_200 + 3661, 0)), "Jan  1 01:01:01");
    assert_eq!(format_stamp(at(1_735_603_199, 0)), "Dec 30 23:59:59");
}
