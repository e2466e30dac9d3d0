//! `custom-lbproxy`: lbproxy with the built-in middlewares plus `apikey`. It takes every
//! lbproxy flag; a frontend uses the new type with the same JSON layout as the built-ins:
//!
//! ```text
//! /vulcand/frontends/f1/middlewares/key = {"Type":"apikey","Priority":0,"Middleware":{"Header":"X-Api-Key","Keys":["k1"]}}
//! ```

fn main() -> std::process::ExitCode {
    let types = lb_middleware::Types::builtin().with(custom_proxy::ApiKey);
    lb_proxy::cli::main(types)
}
