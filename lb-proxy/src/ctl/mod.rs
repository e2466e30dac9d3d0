//! `lbctl`, the command-line client (SPEC section 5), as a library so that a custom proxy
//! binary ships a client that knows its own middleware types:
//!
//! ```no_run
//! // src/bin/myctl.rs of a custom proxy crate
//! fn main() -> std::process::ExitCode {
//!     let types = lb_middleware::Types::builtin(); // .with(MyType)
//!     lb_proxy::ctl::main(types)
//! }
//! ```
//!
//! The commands talk to a running lbproxy's admin API ([`client`]): `status` and `config`
//! ([`status`]), `backend | server | frontend | host | listener` with
//! `ls | show | upsert | rm` ([`objects`]), `<middleware-type> upsert | rm | ls | show`
//! generated from the types' options ([`middleware`]) and the live `top` ([`top`]).
//! `validate FILE` works offline ([`validate`]) and `register` talks to the registry
//! directly ([`register`]). Output is aligned tables and `Key: value` lines, or the API's
//! JSON with `--json` ([`output`]).
//!
//! Exit codes: 0 success; 1 the API answered an error, an object or the configuration is
//! invalid; 2 usage error; 3 the API cannot be reached ([`client::Failure`]).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use lb_middleware::Types;

pub mod client;
pub mod middleware;
pub mod objects;
pub mod output;
pub mod register;
pub mod status;
pub mod top;
pub mod validate;

use client::{ApiClient, DEFAULT_API, Failure};

const ABOUT: &str = "The lb command-line client: reads and changes a running lbproxy's \
configuration through its admin API, shows a live top, validates configuration files offline";

const AFTER_HELP: &str = "Exit codes:
  0  success
  1  the API answered an error (its message and HTTP status go to stderr), an object was
     invalid (nothing was written), `validate` found errors, or `config` shows errors in
     the applied configuration
  2  usage error: unknown command or flag, missing or malformed value
  3  the admin API cannot be reached (connection refused, no answer in time)

Environment:
  LBCTL_API    the admin API when --api is not given (default http://127.0.0.1:8182)
  LBCTL_TOKEN  the API token when --token is not given

Examples:
  lbctl status
  lbctl config
  lbctl --api http://10.0.0.2:8182 --token s3cret frontend ls
  lbctl backend upsert --id b1 --balancer p2c-ewma
  lbctl server upsert -b b1 --id s1 --url http://10.0.0.1:8080
  lbctl frontend upsert --id f1 -b b1 --route 'PathPrefix(\"/\")' --wait
  lbctl ratelimit upsert -f f1 --id rl1 --requests 100 --period 1 --burst 20
  lbctl frontend show --id f1 --json
  lbctl top --refresh 2 --limit 10
  lbctl validate lb.toml
  etcdctl get --prefix /vulcand > dump.txt && lbctl validate dump.txt --strict";

/// The command line's fixed part; the middleware commands are added at run time.
#[derive(Debug, Parser)]
#[command(name = "lbctl", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, anywhere on the line.
#[derive(Clone, Debug, Args)]
struct Global {
    /// The admin API of lbproxy [env: LBCTL_API] [default: http://127.0.0.1:8182]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    api: Option<String>,
    /// The admin API token (lbproxy --api-token) [env: LBCTL_TOKEN]
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        help_heading = "Global options"
    )]
    token: Option<String>,
    /// Machine output: the API's JSON as it comes (one JSON line per frame for top)
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show whether the proxy serves a configuration, its revision and the registry's state.
    #[command(
        after_help = "Exit code 1 while the proxy is still starting (no configuration \
        applied yet).\n\nExamples:\n  lbctl status\n  until lbctl status >/dev/null; do sleep 1; done"
    )]
    Status,
    /// Show the applied configuration: revision, registry, object counts and the errors of
    /// bad objects (each naming its key).
    #[command(
        after_help = "Exit code 1 when the applied configuration has errors (warnings \
        alone: 0).\n\nExamples:\n  lbctl config\n  lbctl config --json"
    )]
    Config,
    /// A live view of frontends and servers: requests per second, in flight, 5xx share,
    /// network errors, latency, breaker and health state.
    #[command(
        after_help = "Rates and latencies are measured between two polls, so the \
        first frame appears after one --refresh interval.\n\nExamples:\n  lbctl top\n  \
        lbctl top --refresh 2 --limit 10 -b b1\n  lbctl top --once\n  lbctl top --json --iterations 5"
    )]
    Top(top::TopArgs),
    /// Check a configuration file or an etcd dump offline, with exactly the errors the
    /// proxy would report.
    #[command(
        after_help = "Exit code 1 when an object is rejected or the file cannot be \
        read; warnings alone exit 0.\n\nExamples:\n  lbctl validate lb.toml\n  \
        lbctl validate --strict lb.json\n  etcdctl get --prefix /vulcand > dump.txt && lbctl validate dump.txt\n  \
        etcdctl get --prefix /vulcand -w json | lbctl validate --format etcd-json -\n  \
        lbctl validate dump.txt --prefix /vulcand --json"
    )]
    Validate(validate::ValidateArgs),
    /// Backends: groups of servers and how to reach them.
    #[command(subcommand)]
    Backend(objects::BackendCommand),
    /// Servers of backends.
    #[command(subcommand)]
    Server(objects::ServerCommand),
    /// Frontends: routes and the backend they send requests to.
    #[command(subcommand)]
    Frontend(objects::FrontendCommand),
    /// Hosts: TLS certificates by SNI name.
    #[command(subcommand)]
    Host(objects::HostCommand),
    /// Listeners from the registry.
    #[command(subcommand)]
    Listener(objects::ListenerCommand),
    /// Keep a server registered in the registry under a TTL while its health URL answers
    /// 2xx; remove it on exit (SIGTERM/SIGINT).
    ///
    /// The entry is `backends/<BACKEND>/servers/<ID>` = {"URL": URL}, refreshed every third
    /// of the TTL without a new revision. If lbctl dies, the TTL runs out and the server
    /// disappears. It talks to the registry, not to the admin API.
    #[command(after_help = "Examples:\n  \
        lbctl register --registry etcd://127.0.0.1:2379/vulcand --backend b1 --id web-1 \\\n      \
        --url http://10.0.0.5:8080 --ttl 5s --health http://10.0.0.5:8080/health\n  \
        lbctl register --registry consul-catalog://127.0.0.1:8500?tag=rest --backend hello.v1 \\\n      \
        --id hello-1 --url http://10.0.0.6:9000 --ttl 10s")]
    Register(register::RegisterArgs),
}

/// What every command needs: where the API is and how to print.
#[derive(Clone, Debug)]
pub struct Context {
    api: String,
    token: Option<String>,
    /// `--json`: print the API's JSON as is.
    pub json: bool,
}

impl Context {
    /// A context for the API at `api` (with `token`), printing JSON when `json`.
    pub fn new(api: impl Into<String>, token: Option<String>, json: bool) -> Self {
        Self {
            api: api.into(),
            token,
            json,
        }
    }

    /// A client of the API (commands that work offline never make one, so a bad `--api`
    /// does not stop them).
    pub fn client(&self) -> Result<ApiClient, Failure> {
        ApiClient::new(&self.api, self.token.clone())
    }
}

/// The whole command line, with one command per middleware type of `types` (a type named
/// like a fixed command is left out).
pub fn command(types: &Types) -> clap::Command {
    let mut cmd = Cli::command();
    let fixed: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in types.names() {
        if name == "help" || fixed.iter().any(|f| f == name) {
            continue;
        }
        cmd = cmd.subcommand(middleware::command(
            name,
            types.options(name).unwrap_or(&[]),
        ));
    }
    cmd
}

/// Runs lbctl with the process's arguments and the middleware types `types`; returns the
/// exit code (see the module docs).
pub fn main(types: Types) -> ExitCode {
    main_from(std::env::args_os(), types)
}

/// [`main`] with the arguments `args` (the first is the program name).
pub fn main_from<I, T>(args: I, types: Types) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match command(&types).try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(error) => {
            // --help and --version are "errors" that exit 0; usage errors exit 2.
            let _ = error.print();
            return ExitCode::from(error.exit_code().clamp(0, 255) as u8);
        }
    };
    let global = match Global::from_arg_matches(&matches) {
        Ok(global) => global,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(2);
        }
    };
    let ctx = Context::new(
        global
            .api
            .or_else(|| std::env::var("LBCTL_API").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_API.to_owned()),
        global
            .token
            .or_else(|| std::env::var("LBCTL_TOKEN").ok().filter(|s| !s.is_empty())),
        global.json,
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lbctl: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // A middleware type's command, generated at run time.
    if let Some((name, sub)) = matches.subcommand()
        && let Some(name) = types.names().find(|n| *n == name)
        && Cli::command().find_subcommand(name).is_none()
    {
        return finish(runtime.block_on(middleware::run(&ctx, &types, name, sub)));
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Register(args) => return runtime.block_on(register::run(args)),
        Command::Validate(args) => validate::run(&args, &types, ctx.json),
        Command::Status => runtime.block_on(status::status(&ctx)),
        Command::Config => runtime.block_on(status::config(&ctx)),
        Command::Top(args) => runtime.block_on(top::run(&ctx, &args)),
        Command::Backend(command) => runtime.block_on(objects::backend(&ctx, command)),
        Command::Server(command) => runtime.block_on(objects::server(&ctx, command)),
        Command::Frontend(command) => runtime.block_on(objects::frontend(&ctx, command)),
        Command::Host(command) => runtime.block_on(objects::host(&ctx, command)),
        Command::Listener(command) => runtime.block_on(objects::listener(&ctx, command)),
    };
    finish(result)
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent_with_every_builtin_type() {
        command(&Types::builtin()).debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let matches = command(&Types::builtin())
            .try_get_matches_from(["lbctl", "frontend", "ls", "--json", "--api", "h:1"])
            .unwrap();
        let global = Global::from_arg_matches(&matches).unwrap();
        assert!(global.json);
        assert_eq!(global.api.as_deref(), Some("h:1"));
        let matches = command(&Types::builtin())
            .try_get_matches_from([
                "lbctl",
                "--token",
                "t",
                "ratelimit",
                "rm",
                "-f",
                "f1",
                "--id",
                "r",
            ])
            .unwrap();
        assert_eq!(
            Global::from_arg_matches(&matches).unwrap().token.as_deref(),
            Some("t")
        );
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(cmd: &mut clap::Command, path: String, missing: &mut Vec<String>) {
            if cmd.get_name() == "help" {
                return;
            }
            let help = cmd.render_long_help().to_string();
            if !help.contains("Examples:") {
                missing.push(path.clone());
            }
            for sub in cmd.get_subcommands_mut() {
                let name = sub.get_name().to_owned();
                walk(sub, format!("{path} {name}"), missing);
            }
        }
        let mut cmd = command(&Types::builtin());
        cmd.build();
        let mut missing = Vec::new();
        walk(&mut cmd, "lbctl".to_owned(), &mut missing);
        assert!(missing.is_empty(), "no examples in: {missing:?}");
    }
}
