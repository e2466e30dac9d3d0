//! lb-proxy: the data path of the lb workspace (listeners, routing, forwarding, retries),
//! the admin API, metrics and dashboard, and the `lbproxy` and `lbctl` binaries.
//!
//! Status: lands with issue 4 ("lb-proxy"); the binaries do not exist yet, and nothing is
//! exported. Until then the README's run command starts the lb-route example.

#![forbid(unsafe_code)]
