//! `lbproxy`: the reference proxy (SPEC section 5) with the built-in middleware types.

/// With the default `mimalloc` feature, lbproxy allocates through mimalloc (see
/// lb-proxy's Cargo.toml for why, and [`lb_proxy::alloc`] for how).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: lb_proxy::alloc::MiMalloc = lb_proxy::alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lb_proxy::cli::main(lb_middleware::Types::builtin())
}
