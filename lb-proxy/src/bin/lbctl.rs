//! `lbctl`: the command-line client (SPEC section 5) with the built-in middleware types.
//! The commands live in [`lb_proxy::ctl`]; `lbctl --help` lists them with examples and the
//! exit codes.

fn main() -> std::process::ExitCode {
    lb_proxy::ctl::main(lb_middleware::Types::builtin())
}
