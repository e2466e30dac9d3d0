//! The proxy's own answers: SPEC section 8's status codes with short JSON bodies.

use http::{Response, StatusCode};

use crate::body::Body;

/// Why the proxy answered a request itself instead of relaying a server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// No frontend's route matches (404).
    NoRoute,
    /// The backend has no usable server (503).
    NoServer,
    /// Connecting to the server failed, or the connection broke before an answer (502).
    BadGateway,
    /// The server did not answer within the backend's `Read` timeout (504).
    GatewayTimeout,
    /// The request body is larger than the frontend's `MaxBodyBytes` (413).
    BodyTooLarge,
    /// The request is malformed (400).
    BadRequest,
}

impl ProxyError {
    /// The status code SPEC section 8 assigns.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadGateway => StatusCode::BAD_GATEWAY,
            ProxyError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    /// The short message of the JSON body.
    pub fn message(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route matches the request",
            ProxyError::NoServer => "the backend has no usable server",
            ProxyError::BadGateway => "the server could not be reached",
            ProxyError::GatewayTimeout => "the server did not answer in time",
            ProxyError::BodyTooLarge => "the request body is too large",
            ProxyError::BadRequest => "malformed request",
        }
    }

    /// The response: the status and `{"error":"<message>"}`.
    pub fn response(self) -> Response<Body> {
        json_error(self.status(), self.message())
    }
}

pub use lb_middleware::json_error;
