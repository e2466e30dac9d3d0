//! `lbctl <middleware-type> upsert | rm | ls | show`: one subcommand per registered
//! middleware type, built at run time from [`Types::options`] (vctl's `CliFlags`), so a
//! custom proxy binary's own types get their commands too.
//!
//! Each [`OptionSpec`] becomes `--<flag>` and sets the JSON field `<field>` of the type's
//! config with its [`OptionKind`]: a string, an integer, a boolean (`--flag` or
//! `--flag=false`), a Go duration string, or a list of strings (repeat the flag or separate
//! values with commas). `--data`/`--file` give the config as JSON instead (or the whole
//! middleware object, `{"Id","Priority","Type","Middleware"}`); flags override its fields.
//! The config is checked with the type's own validation before anything is sent, so a
//! mistake is reported with the field at fault and nothing is written.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, value_parser};
use http::StatusCode;
use lb_middleware::{OptionKind, OptionSpec, Types};
use serde_json::{Map, Value, json};

use super::Context;
use super::client::{Failure, path_segment};
use super::objects::{self, RawObject, WaitArgs, go_duration};
use super::output::{self, Table, cell_at, fields, or_dash, render_fields, text_at};

/// Flags every middleware command has; an option of a type that uses one of these names is
/// left out (its field can still be set with `--data`).
const RESERVED_FLAGS: &[&str] = &[
    "frontend",
    "id",
    "priority",
    "ttl",
    "data",
    "file",
    "wait",
    "wait-timeout",
    "api",
    "token",
    "json",
    "help",
];

/// The default `Priority` of a middleware written by lbctl, as in vctl.
pub const DEFAULT_PRIORITY: i32 = 1;

/// The type's options that become flags: those whose name is not one of lbctl's own.
fn usable(options: &'static [OptionSpec]) -> impl Iterator<Item = &'static OptionSpec> {
    options
        .iter()
        .filter(|o| !RESERVED_FLAGS.contains(&o.flag) && !o.flag.is_empty())
}

/// Examples of the built-in types; other types get a generic one.
fn examples(name: &str) -> String {
    let upsert = match name {
        "ratelimit" => {
            "lbctl ratelimit upsert -f f1 --id rl1 --requests 100 --period 1 --burst 20 --variable client.ip"
        }
        "connlimit" => {
            "lbctl connlimit upsert -f f1 --id cl1 --connections 10 --variable client.ip"
        }
        "auth" => "lbctl auth upsert -f f1 --id auth1 --user admin --pass s3cret --realm ops",
        "cbreaker" => {
            "lbctl cbreaker upsert -f f1 --id cb1 --condition 'NetworkErrorRatio() > 0.5' \\\n      \
             --fallback '{\"Type\":\"response\",\"Action\":{\"StatusCode\":503}}' --fallback-duration 10s"
        }
        "rewrite" => {
            "lbctl rewrite upsert -f f1 --id rw1 --regexp '^http://([^/]+)/old/(.*)' --replacement 'http://$1/new/$2'"
        }
        "trace" => {
            "lbctl trace upsert -f f1 --id tr1 --addr stdout --req-header X-Request-Id --resp-header Content-Type"
        }
        "headers" => {
            "lbctl headers upsert -f f1 --id h1 --data '{\"SetRequest\":{\"X-Env\":\"prod\"},\"RemoveResponse\":[\"Server\"]}'"
        }
        "stripprefix" => "lbctl stripprefix upsert -f f1 --id sp1 --prefix /api",
        "ipallow" => "lbctl ipallow upsert -f f1 --id ip1 --source-range 10.0.0.0/8,192.168.0.0/16",
        "redirect" => "lbctl redirect upsert -f f1 --id r1 --scheme https --permanent",
        _ => "",
    };
    let upsert = if upsert.is_empty() {
        format!("lbctl {name} upsert -f f1 --id {name}1 --data '{{...}}'")
    } else {
        upsert.to_owned()
    };
    format!(
        "Examples:\n  {upsert}\n  lbctl {name} upsert -f f1 --id {name}1 --file {name}.json --priority 2 --ttl 30s --wait\n  \
         lbctl {name} ls -f f1\n  lbctl {name} show -f f1 --id {name}1\n  lbctl {name} rm -f f1 --id {name}1"
    )
}

fn frontend_arg(required: bool) -> Arg {
    Arg::new("frontend")
        .long("frontend")
        .short('f')
        .value_name("ID")
        .required(required)
        .help(if required {
            "The frontend the middleware belongs to"
        } else {
            "The frontend (every frontend without -f)"
        })
}

fn id_arg(required: bool) -> Arg {
    Arg::new("id")
        .long("id")
        .value_name("ID")
        .required(required)
        .help("The middleware's id")
}

/// The `lbctl <name>` command of a middleware type with `options`.
pub fn command(name: &'static str, options: &'static [OptionSpec]) -> Command {
    let examples = examples(name);
    let mut upsert = Command::new("upsert")
        .arg(frontend_arg(true))
        .arg(id_arg(false).help("The middleware's id (or Id in --data/--file)"))
        .arg(
            Arg::new("priority")
                .long("priority")
                .value_name("N")
                .allow_negative_numbers(true)
                .value_parser(value_parser!(i32))
                .help("Lower runs first, i.e. outermost (default 1)"),
        )
        .arg(
            Arg::new("ttl")
                .long("ttl")
                .value_name("DURATION")
                .value_parser(go_duration)
                .help("Remove the middleware when this runs out unless written again"),
        );
    for option in usable(options) {
        upsert = upsert.arg(option_arg(option));
    }
    // `augment_args` sets the command's about to the struct's doc, so the about comes after.
    let upsert = WaitArgs::augment_args(RawObject::augment_args(upsert))
        .about(format!(
            "Create or replace a {name} middleware of a frontend"
        ))
        .after_help(examples.clone());
    let rm = WaitArgs::augment_args(Command::new("rm").arg(frontend_arg(true)).arg(id_arg(true)))
        .about(format!("Remove a {name} middleware"))
        .after_help(format!(
            "Examples:\n  lbctl {name} rm -f f1 --id {name}1 --wait"
        ));
    let ls = Command::new("ls")
        .about(format!("List the {name} middlewares"))
        .after_help(format!(
            "Examples:\n  lbctl {name} ls -f f1\n  lbctl {name} ls"
        ))
        .arg(frontend_arg(false));
    let show = Command::new("show")
        .about(format!("Show a {name} middleware"))
        .after_help(format!("Examples:\n  lbctl {name} show -f f1 --id {name}1"))
        .arg(frontend_arg(true))
        .arg(id_arg(true));
    Command::new(name)
        .about(format!("Manage {name} middlewares of frontends"))
        .after_help(examples)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommands([upsert, rm, ls, show])
}

/// The flag of one option.
fn option_arg(option: &'static OptionSpec) -> Arg {
    let help = format!("{} [{}]", option.help, option.field);
    let arg = Arg::new(option.flag).long(option.flag).help(help);
    match option.kind {
        OptionKind::String => arg.value_name("TEXT"),
        OptionKind::Integer => arg
            .value_name("N")
            .allow_negative_numbers(true)
            .value_parser(value_parser!(i64)),
        OptionKind::Bool => arg
            .value_name("BOOL")
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_parser(value_parser!(bool)),
        OptionKind::Duration => arg.value_name("DURATION").value_parser(go_duration),
        OptionKind::StringList => arg
            .value_name("TEXT")
            .action(ArgAction::Append)
            .value_delimiter(','),
    }
}

/// Sets the config fields of the options given on the command line.
fn apply_options(
    config: &mut Map<String, Value>,
    options: &'static [OptionSpec],
    matches: &ArgMatches,
) {
    for option in usable(options) {
        let value = match option.kind {
            OptionKind::Integer => matches.get_one::<i64>(option.flag).map(|n| json!(n)),
            OptionKind::Bool => matches.get_one::<bool>(option.flag).map(|b| json!(b)),
            OptionKind::StringList => matches
                .get_many::<String>(option.flag)
                .map(|values| json!(values.collect::<Vec<_>>())),
            _ => matches.get_one::<String>(option.flag).map(|s| json!(s)),
        };
        if let Some(value) = value {
            config.insert(option.field.to_owned(), value);
        }
    }
}

/// The middleware object `lbctl <name> upsert` writes: `--data`/`--file` (the config, or
/// the whole middleware object), the flags on top, checked with the type's validation.
pub fn object(
    types: &Types,
    name: &str,
    options: &'static [OptionSpec],
    matches: &ArgMatches,
) -> Result<Map<String, Value>, Failure> {
    let raw = RawObject::from_arg_matches(matches).map_err(|e| Failure::Usage(e.to_string()))?;
    let given = raw.load()?;
    // A whole middleware object has a `Middleware` field; anything else is the config.
    let mut object = if given.contains_key("Middleware") {
        given
    } else {
        let mut object = Map::new();
        object.insert("Middleware".to_owned(), Value::Object(given));
        object
    };
    match object.get("Type").and_then(Value::as_str) {
        Some(kind) if kind != name => {
            return Err(Failure::Usage(format!(
                "the JSON says Type {kind:?}, but this is `lbctl {name}`"
            )));
        }
        _ => {
            object.insert("Type".to_owned(), Value::String(name.to_owned()));
        }
    }
    if let Some(id) = matches.get_one::<String>("id") {
        object.insert("Id".to_owned(), Value::String(id.clone()));
    }
    if let Some(priority) = matches.get_one::<i32>("priority") {
        object.insert("Priority".to_owned(), json!(priority));
    }
    object
        .entry("Priority")
        .or_insert_with(|| json!(DEFAULT_PRIORITY));
    let config = object
        .entry("Middleware")
        .or_insert_with(|| Value::Object(Map::new()));
    if config.is_null() {
        *config = Value::Object(Map::new());
    }
    let Value::Object(config) = config else {
        return Err(Failure::Usage(
            "the Middleware field must be a JSON object".to_owned(),
        ));
    };
    apply_options(config, options, matches);
    objects::require(&object, &["Id"], "--id")?;
    let id = text_at(&Value::Object(object.clone()), &["Id"]);
    if let Err(error) = types.validate_config(name, &object["Middleware"]) {
        return Err(Failure::Rejected(format!(
            "{name} middleware {id}: {error}; nothing was written"
        )));
    }
    Ok(object)
}

/// Runs `lbctl <name> ...` with the subcommand's `matches`.
pub async fn run(
    ctx: &Context,
    types: &Types,
    name: &'static str,
    matches: &ArgMatches,
) -> Result<(), Failure> {
    let options = types.options(name).unwrap_or(&[]);
    let Some((action, args)) = matches.subcommand() else {
        return Err(Failure::Usage(format!("lbctl {name}: missing subcommand")));
    };
    let frontend = args.get_one::<String>("frontend").cloned();
    let middlewares_of =
        |frontend: &str| format!("/v2/frontends/{}/middlewares", path_segment(frontend));
    match action {
        "upsert" => {
            let frontend = frontend.unwrap_or_default();
            let object = object(types, name, options, args)?;
            let ttl = args.get_one::<String>("ttl").cloned();
            let wait =
                WaitArgs::from_arg_matches(args).map_err(|e| Failure::Usage(e.to_string()))?;
            objects::upsert(
                ctx,
                &middlewares_of(&frontend),
                "Middleware",
                object,
                ttl.as_deref(),
                &wait,
            )
            .await
        }
        "rm" => {
            let frontend = frontend.unwrap_or_default();
            let id = args.get_one::<String>("id").cloned().unwrap_or_default();
            let wait =
                WaitArgs::from_arg_matches(args).map_err(|e| Failure::Usage(e.to_string()))?;
            let path = format!("{}/{}", middlewares_of(&frontend), path_segment(&id));
            objects::remove(
                ctx,
                &format!("{name} middleware {frontend}/{id}"),
                &path,
                &wait,
            )
            .await
        }
        "show" => {
            let frontend = frontend.unwrap_or_default();
            let id = args.get_one::<String>("id").cloned().unwrap_or_default();
            let path = format!("{}/{}", middlewares_of(&frontend), path_segment(&id));
            let answer = ctx.client()?.get(&path).await?;
            if ctx.json {
                output::print_json_body(&answer.body);
            } else {
                let object = answer.json(&http::Method::GET, &path)?;
                output::print(&render_fields(&fields(&object)));
            }
            Ok(())
        }
        "ls" => list(ctx, name, frontend.as_deref()).await,
        other => Err(Failure::Usage(format!(
            "lbctl {name}: unknown subcommand {other}"
        ))),
    }
}

/// `lbctl <name> ls [-f F]`: the middlewares of type `name`, of one frontend or all.
async fn list(ctx: &Context, name: &str, frontend: Option<&str>) -> Result<(), Failure> {
    let api = ctx.client()?;
    let frontends = match frontend {
        Some(frontend) => vec![frontend.to_owned()],
        None => api
            .get_json("/v2/frontends")
            .await?
            .get("Frontends")
            .and_then(Value::as_array)
            .map(|all| all.iter().map(|f| text_at(f, &["Id"])).collect())
            .unwrap_or_default(),
    };
    let mut found = Vec::new();
    for id in &frontends {
        let path = format!("/v2/frontends/{}/middlewares", path_segment(id));
        let reply = match api.get_json(&path).await {
            Ok(reply) => reply,
            // Removed between the two requests.
            Err(Failure::Api { status, .. })
                if status == StatusCode::NOT_FOUND && frontend.is_none() =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        for mut middleware in reply
            .get("Middlewares")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if text_at(&middleware, &["Type"]) != name {
                continue;
            }
            if let Value::Object(map) = &mut middleware {
                map.insert("FrontendId".to_owned(), Value::String(id.clone()));
            }
            found.push(middleware);
        }
    }
    if ctx.json {
        output::print_json(&json!({ "Middlewares": found }));
        return Ok(());
    }
    let mut table = Table::new(["FRONTEND", "ID", "PRIORITY", "CONFIG"]);
    for m in &found {
        table.row([
            cell_at(m, &["FrontendId"]),
            cell_at(m, &["Id"]),
            or_dash(text_at(m, &["Priority"])),
            m.get("Middleware")
                .map(Value::to_string)
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    output::print(&table.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(name: &'static str, args: &[&str]) -> Result<ArgMatches, clap::Error> {
        let types = Types::builtin();
        let cmd = command(name, types.options(name).unwrap());
        let matches =
            cmd.try_get_matches_from([name, "upsert"].into_iter().chain(args.iter().copied()))?;
        Ok(matches
            .subcommand_matches("upsert")
            .cloned()
            .expect("an upsert"))
    }

    fn upsert(name: &'static str, args: &[&str]) -> Result<Value, Failure> {
        let types = Types::builtin();
        let matches = matches(name, args).map_err(|e| Failure::Usage(e.to_string()))?;
        object(&types, name, types.options(name).unwrap(), &matches).map(Value::Object)
    }

    #[test]
    fn every_builtin_type_gets_a_command_that_clap_accepts() {
        let types = Types::builtin();
        for name in types.names() {
            let cmd = command(name, types.options(name).unwrap());
            cmd.clone().debug_assert();
            let help = cmd.clone().render_long_help().to_string();
            assert!(help.contains("Examples:"), "{name}: {help}");
        }
    }

    #[test]
    fn ratelimit_flags_map_to_its_fields_with_their_kinds() {
        let object = upsert(
            "ratelimit",
            &[
                "-f",
                "f1",
                "--id",
                "rl",
                "--period",
                "1",
                "--requests",
                "10",
                "--burst",
                "20",
                "--variable",
                "client.ip",
                "--ttl",
                "5s",
            ],
        )
        .unwrap();
        assert_eq!(
            object,
            json!({"Id": "rl", "Priority": 1, "Type": "ratelimit",
                   "Middleware": {"PeriodSeconds": 1, "Requests": 10, "Burst": 20, "Variable": "client.ip"}})
        );
    }

    #[test]
    fn list_bool_and_duration_options() {
        let object = upsert(
            "ipallow",
            &[
                "-f",
                "f1",
                "--id",
                "ip",
                "--source-range",
                "10.0.0.0/8,192.168.0.0/16",
                "--source-range",
                "::1/128",
                "--priority",
                "0",
            ],
        )
        .unwrap();
        assert_eq!(
            object["Middleware"]["SourceRange"],
            json!(["10.0.0.0/8", "192.168.0.0/16", "::1/128"])
        );
        assert_eq!(object["Priority"], 0);

        let object = upsert(
            "redirect",
            &["-f", "f1", "--id", "r", "--scheme", "https", "--permanent"],
        )
        .unwrap();
        assert_eq!(
            object["Middleware"],
            json!({"Scheme": "https", "Permanent": true})
        );
        let object = upsert(
            "redirect",
            &[
                "-f",
                "f1",
                "--id",
                "r",
                "--scheme",
                "https",
                "--permanent=false",
            ],
        )
        .unwrap();
        assert_eq!(object["Middleware"]["Permanent"], false);

        let object = upsert(
            "cbreaker",
            &[
                "-f",
                "f1",
                "--id",
                "cb",
                "--condition",
                "NetworkErrorRatio() > 0.5",
                "--fallback-duration",
                "1m30s",
            ],
        )
        .unwrap();
        assert_eq!(object["Middleware"]["FallbackDuration"], "1m30s");
        assert!(
            matches(
                "cbreaker",
                &["-f", "f1", "--id", "cb", "--check-period", "soon"]
            )
            .is_err()
        );
    }

    #[test]
    fn invalid_configs_are_rejected_before_sending_with_the_field_named() {
        let error =
            upsert("ratelimit", &["-f", "f1", "--id", "rl", "--requests", "-5"]).unwrap_err();
        assert_eq!(error.exit_code(), 1, "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with("ratelimit middleware rl: "),
            "{message}"
        );
        assert!(message.contains("Requests"), "{message}");

        let error = upsert(
            "headers",
            &["-f", "f1", "--id", "h", "--data", r#"{"SetRequst":{}}"#],
        )
        .unwrap_err();
        assert!(error.to_string().contains("SetRequst"), "{error}");
    }

    #[test]
    fn raw_json_is_the_config_or_the_whole_object() {
        let object = upsert(
            "headers",
            &[
                "-f",
                "f1",
                "--id",
                "h",
                "--data",
                r#"{"SetRequest":{"X-Env":"prod"}}"#,
            ],
        )
        .unwrap();
        assert_eq!(
            object["Middleware"],
            json!({"SetRequest": {"X-Env": "prod"}})
        );

        let whole = r#"{"Id":"rl9","Priority":4,"Type":"ratelimit","Middleware":{"Requests":5}}"#;
        let object = upsert("ratelimit", &["-f", "f1", "--data", whole, "--burst", "7"]).unwrap();
        assert_eq!(
            object,
            json!({"Id": "rl9", "Priority": 4, "Type": "ratelimit", "Middleware": {"Requests": 5, "Burst": 7}})
        );
        let wrong = r#"{"Id":"x","Type":"auth","Middleware":{}}"#;
        let error = upsert("ratelimit", &["-f", "f1", "--data", wrong]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let error = upsert("ratelimit", &["-f", "f1", "--requests", "1"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--id is required (or Id in --data/--file)"
        );
    }

    #[test]
    fn options_named_like_lbctls_own_flags_are_left_out() {
        static OPTIONS: &[OptionSpec] = &[
            OptionSpec {
                flag: "id",
                field: "Id",
                kind: OptionKind::String,
                help: "clash",
            },
            OptionSpec {
                flag: "key",
                field: "Key",
                kind: OptionKind::String,
                help: "the key",
            },
        ];
        let cmd = command("custom", OPTIONS);
        cmd.clone().debug_assert();
        let upsert = cmd.find_subcommand("upsert").unwrap();
        assert!(upsert.get_arguments().any(|a| a.get_id() == "key"));
        assert_eq!(
            upsert
                .get_arguments()
                .filter(|a| a.get_id() == "id")
                .count(),
            1
        );
    }
}
