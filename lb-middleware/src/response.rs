//! The proxy's own answers: short JSON bodies (SPEC section 8).

use http::{HeaderValue, StatusCode, header};

use crate::body;
use crate::service::Response;

/// A response with `status` and the body `{"error": message}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
