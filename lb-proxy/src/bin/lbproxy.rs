//! `lbproxy`: the reference proxy (SPEC section 5) with the built-in middleware types.

/// With the default `mimalloc` feature, lbproxy allocates through mimalloc (see
/// lb-proxy's Cargo.toml for why).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lb_proxy::cli::main(lb_middleware::Types::builtin())
}
