//! lb-middleware: the middleware contract of the lb workspace, the type registry a proxy
//! binary is built from, and the built-in middlewares (`auth`, `ratelimit`, `connlimit`,
//! `cbreaker`, `rewrite`, `trace`, `headers`, `stripprefix`, `ipallow`, `redirect`), each a
//! tower `Layer` configured from vulcand's JSON.
//!
//! What it is not for: talking to registries (lb-registry) or owning sockets (lb-proxy).
//!
//! Status: lands with issue 6 ("lb-middleware"). Nothing is exported yet.

#![forbid(unsafe_code)]
