//! `lbproxy`: the reference proxy (SPEC section 5) with the built-in middleware types.

fn main() -> std::process::ExitCode {
    lb_proxy::cli::main(lb_middleware::Types::builtin())
}
