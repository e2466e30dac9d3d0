//! `backend`, `server`, `frontend`, `host` and `listener` with `ls | show | upsert | rm`:
//! vctl's flags turned into the object's vulcand JSON, or the JSON itself (`--data`,
//! `--file`), posted to the admin API.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Map, Value, json};

use super::Context;
use super::client::{Failure, REQUEST_TIMEOUT, path_segment};
use super::output::{self, Table, cell_at, fields, or_dash, render_fields, text_at};

// === Shared arguments ===

/// The object as JSON instead of (or under) the flags.
#[derive(Clone, Debug, Default, Args)]
pub struct RawObject {
    /// The object as JSON; flags given as well override its fields.
    #[arg(long, short = 'd', value_name = "JSON", conflicts_with = "file")]
    pub data: Option<String>,
    /// Read the object's JSON from FILE (`-` reads stdin); flags override its fields.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl RawObject {
    /// Whether JSON was given.
    pub fn given(&self) -> bool {
        self.data.is_some() || self.file.is_some()
    }

    /// The JSON object given, or an empty one.
    pub fn load(&self) -> Result<Map<String, Value>, Failure> {
        let (text, source) = match (&self.data, &self.file) {
            (Some(data), _) => (data.clone(), "--data".to_owned()),
            (None, Some(path)) if path.as_os_str() == "-" => {
                let text = std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
                (text, "stdin".to_owned())
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure::Usage(format!("--file {}: {e}", path.display())))?;
                (text, path.display().to_string())
            }
            (None, None) => return Ok(Map::new()),
        };
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(Failure::Usage(format!("{source}: expected a JSON object"))),
            Err(e) => Err(Failure::Usage(format!("{source}: invalid JSON: {e}"))),
        }
    }
}

/// `--wait`: answer once this lbproxy has applied the write.
#[derive(Clone, Debug, Default, Args)]
pub struct WaitArgs {
    /// Return only when this lbproxy has applied the change (`?wait=applied`); an upsert
    /// then also reports the errors the proxy found in the object.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait may take before the API answers 504 (default 10s).
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = go_duration)]
    pub wait_timeout: Option<String>,
}

impl WaitArgs {
    /// The query string to append to a write's path (`""` without `--wait`).
    pub fn query(&self) -> String {
        match (self.wait, &self.wait_timeout) {
            (false, _) => String::new(),
            (true, None) => "?wait=applied".to_owned(),
            (true, Some(timeout)) => format!("?wait=applied&timeout={timeout}"),
        }
    }

    /// How long the request may take: the wait plus the usual request timeout.
    pub fn request_timeout(&self) -> Duration {
        let wait = match (self.wait, &self.wait_timeout) {
            (false, _) => Duration::ZERO,
            (true, None) => Duration::from_secs(10),
            (true, Some(timeout)) => {
                lb_core::config::duration::parse_go_duration(timeout).unwrap_or_default()
            }
        };
        REQUEST_TIMEOUT + wait
    }
}

/// A clap value parser for Go durations (`5s`, `1m30s`): checks the text, keeps it as
/// written for the JSON.
pub fn go_duration(text: &str) -> Result<String, String> {
    lb_core::config::duration::parse_go_duration(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

/// Sets `path` in `object` to `value`, creating the objects on the way.
pub fn set(object: &mut Map<String, Value>, path: &[&str], value: impl Into<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = object;
    for key in parents {
        let slot = at
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            return;
        };
        at = next;
    }
    at.insert((*last).to_owned(), value.into());
}

/// Sets `path` when `value` is given.
fn set_opt<T: Into<Value>>(object: &mut Map<String, Value>, path: &[&str], value: Option<T>) {
    if let Some(value) = value {
        set(object, path, value);
    }
}

/// Fails unless `path` holds a non-empty value, naming the flag and the JSON field.
pub fn require(object: &Map<String, Value>, path: &[&str], flag: &str) -> Result<(), Failure> {
    let present = match object.get(path[0]) {
        Some(v) => {
            let mut at = v;
            let mut found = true;
            for key in &path[1..] {
                match at.get(key) {
                    Some(next) => at = next,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            found && !at.is_null() && at.as_str() != Some("")
        }
        None => false,
    };
    if present {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "{flag} is required (or {} in --data/--file)",
            path.join(".")
        )))
    }
}

// === Shared actions ===

/// POSTs `{"<wrapper>": object, "TTL": ttl}` to `collection` and reports the answer. Exits 1
/// when the proxy (with `--wait`) found errors in the object.
pub async fn upsert(
    ctx: &Context,
    collection: &str,
    wrapper: &str,
    object: Map<String, Value>,
    ttl: Option<&str>,
    wait: &WaitArgs,
) -> Result<(), Failure> {
    let mut body = Map::new();
    body.insert(wrapper.to_owned(), Value::Object(object));
    if let Some(ttl) = ttl {
        body.insert("TTL".to_owned(), Value::String(ttl.to_owned()));
    }
    let path = format!("{collection}{}", wait.query());
    let api = ctx.client()?.with_timeout(wait.request_timeout());
    let answer = api
        .call(Method::POST, &path, Some(&Value::Object(body)))
        .await?;
    let reply = answer.json(&Method::POST, &path)?;
    if ctx.json {
        output::print_json_body(&answer.body);
    } else {
        let mut line = format!(
            "upserted {} at revision {}",
            or_dash(text_at(&reply, &["Key"])),
            or_dash(text_at(&reply, &["Revision"]))
        );
        if reply.get("Applied").and_then(Value::as_bool) == Some(true) {
            line.push_str(", applied");
        }
        if let Some(ttl) = ttl {
            line.push_str(&format!(", TTL {ttl}"));
        }
        output::print(&format!("{line}\n"));
    }
    report_errors(&reply, ctx.json)
}

/// Prints `Errors` of a write's answer (`KEY: severity: message`) to stderr; fails (exit
/// 1) if any is an error rather than a warning.
fn report_errors(reply: &Value, quiet: bool) -> Result<(), Failure> {
    let errors = reply
        .get("Errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut rejected = false;
    for error in &errors {
        let severity = or_dash(text_at(error, &["Severity"]));
        rejected |= severity != "warning";
        if !quiet {
            eprintln!(
                "{}: {severity}: {}",
                text_at(error, &["Key"]),
                text_at(error, &["Message"])
            );
        }
    }
    if rejected {
        Err(Failure::Rejected(if quiet {
            "the proxy rejected the object (see Errors)".to_owned()
        } else {
            String::new()
        }))
    } else {
        Ok(())
    }
}

/// DELETEs `path` and reports the answer.
pub async fn remove(ctx: &Context, what: &str, path: &str, wait: &WaitArgs) -> Result<(), Failure> {
    let path = format!("{path}{}", wait.query());
    let api = ctx.client()?.with_timeout(wait.request_timeout());
    let answer = api.call(Method::DELETE, &path, None).await?;
    if ctx.json {
        output::print_json_body(&answer.body);
    } else {
        let reply = answer.json(&Method::DELETE, &path)?;
        output::print(&format!(
            "removed {what} at revision {}\n",
            or_dash(text_at(&reply, &["Revision"]))
        ));
    }
    Ok(())
}

/// GETs a list and prints it with `table`, or the API's JSON with `--json`.
async fn list(
    ctx: &Context,
    path: &str,
    field: &str,
    table: fn(&[Value]) -> Table,
) -> Result<(), Failure> {
    let answer = ctx.client()?.get(path).await?;
    if ctx.json {
        output::print_json_body(&answer.body);
        return Ok(());
    }
    let reply = answer.json(&Method::GET, path)?;
    let items = reply
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    output::print(&table(&items).render());
    Ok(())
}

/// GETs one object and prints its fields, or the API's JSON with `--json`. Returns the
/// object for callers that print more.
async fn show(ctx: &Context, path: &str) -> Result<Option<Value>, Failure> {
    let answer = ctx.client()?.get(path).await?;
    if ctx.json {
        output::print_json_body(&answer.body);
        return Ok(None);
    }
    let object = answer.json(&Method::GET, path)?;
    output::print(&render_fields(&fields(&object)));
    Ok(Some(object))
}

/// [`show`], then the object's children (`{path}/{segment}`, listed under `field`) as a
/// table titled `field`: a backend with its servers, a frontend with its middlewares.
async fn show_with_children(
    ctx: &Context,
    path: &str,
    segment: &str,
    field: &str,
    table: fn(&[Value]) -> Table,
) -> Result<(), Failure> {
    if show(ctx, path).await?.is_some() {
        let children = ctx
            .client()?
            .get_json(&format!("{path}/{segment}"))
            .await
            .map(|reply| array(&reply, field))
            .unwrap_or_default();
        output::print(&format!("\n{field}:\n{}", table(&children).render()));
    }
    Ok(())
}

// === Tables ===

fn frontends_table(items: &[Value]) -> Table {
    let mut table = Table::new(["ID", "BACKEND", "PRIORITY", "ROUTE"]);
    for f in items {
        let priority = text_at(f, &["Priority"]);
        table.row([
            cell_at(f, &["Id"]),
            cell_at(f, &["BackendId"]),
            if priority.is_empty() {
                "0".to_owned()
            } else {
                priority
            },
            cell_at(f, &["Route"]),
        ]);
    }
    table
}

fn backends_table(items: &[Value]) -> Table {
    let mut table = Table::new(["ID", "BALANCER", "READ", "DIAL", "HEALTH-CHECK"]);
    for b in items {
        let balancer = text_at(b, &["Settings", "Balancer", "Type"]);
        let health = match b.get("Settings").and_then(|s| s.get("HealthCheck")) {
            Some(check) if check.is_object() => {
                let path = text_at(check, &["Path"]);
                let every = text_at(check, &["Interval"]);
                format!(
                    "GET {}{}",
                    if path.is_empty() { "/" } else { &path },
                    if every.is_empty() {
                        String::new()
                    } else {
                        format!(" every {every}")
                    }
                )
            }
            _ => "-".to_owned(),
        };
        table.row([
            cell_at(b, &["Id"]),
            if balancer.is_empty() {
                "wrr".to_owned()
            } else {
                balancer
            },
            cell_at(b, &["Settings", "Timeouts", "Read"]),
            cell_at(b, &["Settings", "Timeouts", "Dial"]),
            health,
        ]);
    }
    table
}

fn servers_table(items: &[Value]) -> Table {
    let mut table = Table::new(["ID", "URL", "WEIGHT"]);
    for s in items {
        table.row(server_cells(s));
    }
    table
}

fn server_cells(s: &Value) -> [String; 3] {
    let weight = text_at(s, &["Weight"]);
    [
        cell_at(s, &["Id"]),
        cell_at(s, &["URL"]),
        if weight.is_empty() {
            "1".to_owned()
        } else {
            weight
        },
    ]
}

fn hosts_table(items: &[Value]) -> Table {
    let mut table = Table::new(["NAME", "DEFAULT", "CERTIFICATE"]);
    for h in items {
        let default = text_at(h, &["Settings", "Default"]);
        table.row([
            cell_at(h, &["Name"]),
            if default.is_empty() {
                "false".to_owned()
            } else {
                default
            },
            certificate_summary(h),
        ]);
    }
    table
}

/// `PEM, 1234 bytes` for a host's certificate, `-` without one.
fn certificate_summary(host: &Value) -> String {
    let cert = text_at(host, &["Settings", "KeyPair", "Cert"]);
    if cert.is_empty() {
        return "-".to_owned();
    }
    match serde_json::from_value::<lb_core::config::Base64Bytes>(Value::String(cert)) {
        Ok(bytes) if bytes.0.starts_with(b"-----BEGIN") => format!("PEM, {} bytes", bytes.0.len()),
        Ok(bytes) => format!("{} bytes (not PEM)", bytes.0.len()),
        Err(_) => "invalid base64".to_owned(),
    }
}

fn listeners_table(items: &[Value]) -> Table {
    let mut table = Table::new(["ID", "PROTOCOL", "NETWORK", "ADDRESS", "SCOPE"]);
    for l in items {
        let protocol = text_at(l, &["Protocol"]);
        let network = text_at(l, &["Address", "Network"]);
        table.row([
            cell_at(l, &["Id"]),
            if protocol.is_empty() {
                "http".to_owned()
            } else {
                protocol
            },
            if network.is_empty() {
                "tcp".to_owned()
            } else {
                network
            },
            cell_at(l, &["Address", "Address"]),
            cell_at(l, &["Scope"]),
        ]);
    }
    table
}

/// Middlewares of one frontend: ID, PRIORITY, TYPE and the config as JSON.
pub fn middlewares_table(items: &[Value]) -> Table {
    let mut table = Table::new(["ID", "PRIORITY", "TYPE", "CONFIG"]);
    for m in items {
        table.row([
            cell_at(m, &["Id"]),
            or_dash(text_at(m, &["Priority"])),
            cell_at(m, &["Type"]),
            m.get("Middleware")
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table
}

/// The array `field` of `value`.
fn array(value: &Value, field: &str) -> Vec<Value> {
    value
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

// === backend ===

const BACKEND_EXAMPLES: &str = "Examples:
  lbctl backend ls
  lbctl backend show --id b1
  lbctl backend upsert --id b1 --read-timeout 5s --dial-timeout 1s --balancer p2c-ewma
  lbctl backend upsert --id b1 --health-path /health --health-interval 3s --wait
  lbctl backend upsert --id b1 --data '{\"Settings\":{\"Balancer\":{\"Type\":\"hash\",\"Key\":\"client.ip\"}}}'
  lbctl backend rm --id b1";

/// `lbctl backend ...`
#[derive(Debug, Subcommand)]
#[command(after_help = BACKEND_EXAMPLES)]
pub enum BackendCommand {
    /// List the backends.
    #[command(after_help = "Examples:\n  lbctl backend ls\n  lbctl backend ls --json")]
    Ls,
    /// Show a backend and its servers.
    #[command(after_help = "Examples:\n  lbctl backend show --id b1")]
    Show {
        /// The backend's id.
        #[arg(long)]
        id: String,
    },
    /// Create or replace a backend.
    #[command(after_help = BACKEND_EXAMPLES)]
    Upsert(Box<BackendUpsert>),
    /// Remove a backend and its servers (refused while a frontend uses it).
    #[command(
        after_help = "Examples:\n  lbctl backend rm --id b1\n  lbctl backend rm --id b1 --wait"
    )]
    Rm {
        /// The backend's id.
        #[arg(long)]
        id: String,
        /// `--wait` and `--wait-timeout`.
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `lbctl backend upsert` flags (vctl's, plus our balancer and health-check settings).
#[derive(Debug, Args)]
pub struct BackendUpsert {
    /// The backend's id.
    #[arg(long)]
    id: Option<String>,
    /// Time from sending a request to the response headers (Timeouts.Read).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    read_timeout: Option<String>,
    /// Time to connect (Timeouts.Dial).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    dial_timeout: Option<String>,
    /// Time for the TLS handshake with https servers (Timeouts.TLSHandshake).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    handshake_timeout: Option<String>,
    /// TCP keep-alive period and idle-connection lifetime (KeepAlive.Period).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    keepalive_period: Option<String>,
    /// Idle connections kept per server (KeepAlive.MaxIdleConnsPerHost).
    #[arg(long, value_name = "N")]
    max_idle_conns: Option<u32>,
    /// roundrobin, wrr (default), leastrequest, p2c-ewma, random, hash or maglev.
    #[arg(long, value_name = "TYPE")]
    balancer: Option<String>,
    /// The hash key of hash and maglev: client.ip, request.header.NAME, request.cookie.NAME.
    #[arg(long, value_name = "KEY")]
    balancer_key: Option<String>,
    /// Bounded load of hash and maglev, in percent of the average (e.g. 150; 0: off, the
    /// default).
    #[arg(long, value_name = "PERCENT")]
    hash_balance_factor: Option<u32>,
    /// Sticky sessions with this cookie.
    #[arg(long, value_name = "NAME")]
    sticky_cookie: Option<String>,
    /// failopen (default) or refuse: what to do when every server is down.
    #[arg(long, value_name = "POLICY")]
    when_all_down: Option<String>,
    /// Probe each server with GET on this path (turns active health checks on).
    #[arg(long, value_name = "PATH")]
    health_path: Option<String>,
    /// Time between probes (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    health_interval: Option<String>,
    /// How long a probe may take (default 2s).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    health_timeout: Option<String>,
    /// How many recent probes count (default 8).
    #[arg(long, value_name = "N")]
    health_window: Option<u32>,
    /// How many of them must pass (default 3).
    #[arg(long, value_name = "N")]
    health_threshold: Option<u32>,
    /// Statuses that pass, e.g. 200-399 (the default) or 200,204.
    #[arg(long, value_name = "LIST")]
    health_expected_status: Option<String>,
    /// Ramp a new or recovered server up to its weight over this long.
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    slow_start: Option<String>,
    /// In-flight requests allowed per server (0: unlimited).
    #[arg(long, value_name = "N")]
    max_conns_per_server: Option<u32>,
    /// Do not verify https servers' certificates (TLS.InsecureSkipVerify).
    #[arg(long)]
    tls_skip_verify: bool,
    #[command(flatten)]
    raw: RawObject,
    #[command(flatten)]
    wait: WaitArgs,
}

impl BackendUpsert {
    /// The backend's JSON: `--data`/`--file` with the flags on top.
    pub fn object(&self) -> Result<Map<String, Value>, Failure> {
        let mut o = self.raw.load()?;
        set_opt(&mut o, &["Id"], self.id.clone());
        if !o.contains_key("Type") {
            set(&mut o, &["Type"], "http");
        }
        let s = "Settings";
        set_opt(&mut o, &[s, "Timeouts", "Read"], self.read_timeout.clone());
        set_opt(&mut o, &[s, "Timeouts", "Dial"], self.dial_timeout.clone());
        set_opt(
            &mut o,
            &[s, "Timeouts", "TLSHandshake"],
            self.handshake_timeout.clone(),
        );
        set_opt(
            &mut o,
            &[s, "KeepAlive", "Period"],
            self.keepalive_period.clone(),
        );
        set_opt(
            &mut o,
            &[s, "KeepAlive", "MaxIdleConnsPerHost"],
            self.max_idle_conns,
        );
        set_opt(&mut o, &[s, "Balancer", "Type"], self.balancer.clone());
        set_opt(&mut o, &[s, "Balancer", "Key"], self.balancer_key.clone());
        set_opt(
            &mut o,
            &[s, "Balancer", "HashBalanceFactor"],
            self.hash_balance_factor,
        );
        set_opt(
            &mut o,
            &[s, "Balancer", "Sticky", "Cookie"],
            self.sticky_cookie.clone(),
        );
        set_opt(
            &mut o,
            &[s, "Balancer", "WhenAllDown"],
            self.when_all_down.clone(),
        );
        set_opt(
            &mut o,
            &[s, "HealthCheck", "Path"],
            self.health_path.clone(),
        );
        set_opt(
            &mut o,
            &[s, "HealthCheck", "Interval"],
            self.health_interval.clone(),
        );
        set_opt(
            &mut o,
            &[s, "HealthCheck", "Timeout"],
            self.health_timeout.clone(),
        );
        set_opt(&mut o, &[s, "HealthCheck", "Window"], self.health_window);
        set_opt(
            &mut o,
            &[s, "HealthCheck", "Threshold"],
            self.health_threshold,
        );
        set_opt(
            &mut o,
            &[s, "HealthCheck", "ExpectedStatus"],
            self.health_expected_status.clone(),
        );
        set_opt(&mut o, &[s, "SlowStart"], self.slow_start.clone());
        set_opt(&mut o, &[s, "MaxConnsPerServer"], self.max_conns_per_server);
        if self.tls_skip_verify {
            set(&mut o, &[s, "TLS", "InsecureSkipVerify"], true);
        }
        require(&o, &["Id"], "--id")?;
        Ok(o)
    }
}

/// Runs `lbctl backend ...`.
pub async fn backend(ctx: &Context, command: BackendCommand) -> Result<(), Failure> {
    match command {
        BackendCommand::Ls => list(ctx, "/v2/backends", "Backends", backends_table).await,
        BackendCommand::Show { id } => {
            let path = format!("/v2/backends/{}", path_segment(&id));
            show_with_children(ctx, &path, "servers", "Servers", servers_table).await
        }
        BackendCommand::Upsert(args) => {
            let object = args.object()?;
            upsert(ctx, "/v2/backends", "Backend", object, None, &args.wait).await
        }
        BackendCommand::Rm { id, wait } => {
            let path = format!("/v2/backends/{}", path_segment(&id));
            remove(ctx, &format!("backend {id}"), &path, &wait).await
        }
    }
}

// === server ===

const SERVER_EXAMPLES: &str = "Examples:
  lbctl server ls -b b1
  lbctl server show -b b1 --id s1
  lbctl server upsert -b b1 --id s1 --url http://10.0.0.1:8080
  lbctl server upsert -b b1 --id s2 --url http://10.0.0.2:8080 --weight 3 --ttl 10s --wait
  lbctl server rm -b b1 --id s1";

/// `lbctl server ...`
#[derive(Debug, Subcommand)]
#[command(after_help = SERVER_EXAMPLES)]
pub enum ServerCommand {
    /// List the servers of a backend (of every backend without -b).
    #[command(after_help = "Examples:\n  lbctl server ls -b b1\n  lbctl server ls")]
    Ls {
        /// The backend.
        #[arg(long, short = 'b', value_name = "ID")]
        backend: Option<String>,
    },
    /// Show a server.
    #[command(after_help = "Examples:\n  lbctl server show -b b1 --id s1")]
    Show {
        /// The backend.
        #[arg(long, short = 'b', value_name = "ID")]
        backend: String,
        /// The server's id.
        #[arg(long)]
        id: String,
    },
    /// Create or replace a server of a backend.
    #[command(after_help = SERVER_EXAMPLES)]
    Upsert(Box<ServerUpsert>),
    /// Remove a server.
    #[command(after_help = "Examples:\n  lbctl server rm -b b1 --id s1 --wait")]
    Rm {
        /// The backend.
        #[arg(long, short = 'b', value_name = "ID")]
        backend: String,
        /// The server's id.
        #[arg(long)]
        id: String,
        /// `--wait` and `--wait-timeout`.
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `lbctl server upsert` flags.
#[derive(Debug, Args)]
pub struct ServerUpsert {
    /// The backend the server belongs to.
    #[arg(long, short = 'b', value_name = "ID")]
    backend: String,
    /// The server's id.
    #[arg(long)]
    id: Option<String>,
    /// http://host:port or https://host:port.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The server's weight (default 1; 0 drains it).
    #[arg(long, value_name = "N")]
    weight: Option<u32>,
    /// Remove the server when this runs out unless written again (Go duration).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    ttl: Option<String>,
    #[command(flatten)]
    raw: RawObject,
    #[command(flatten)]
    wait: WaitArgs,
}

impl ServerUpsert {
    /// The server's JSON.
    pub fn object(&self) -> Result<Map<String, Value>, Failure> {
        let mut o = self.raw.load()?;
        set_opt(&mut o, &["Id"], self.id.clone());
        set_opt(&mut o, &["URL"], self.url.clone());
        set_opt(&mut o, &["Weight"], self.weight);
        require(&o, &["Id"], "--id")?;
        require(&o, &["URL"], "--url")?;
        Ok(o)
    }
}

/// Runs `lbctl server ...`.
pub async fn server(ctx: &Context, command: ServerCommand) -> Result<(), Failure> {
    match command {
        ServerCommand::Ls {
            backend: Some(backend),
        } => {
            let path = format!("/v2/backends/{}/servers", path_segment(&backend));
            list(ctx, &path, "Servers", servers_table).await
        }
        ServerCommand::Ls { backend: None } => all_servers(ctx).await,
        ServerCommand::Show { backend, id } => {
            let path = format!(
                "/v2/backends/{}/servers/{}",
                path_segment(&backend),
                path_segment(&id)
            );
            show(ctx, &path).await.map(drop)
        }
        ServerCommand::Upsert(args) => {
            let object = args.object()?;
            let path = format!("/v2/backends/{}/servers", path_segment(&args.backend));
            upsert(
                ctx,
                &path,
                "Server",
                object,
                args.ttl.as_deref(),
                &args.wait,
            )
            .await
        }
        ServerCommand::Rm { backend, id, wait } => {
            let path = format!(
                "/v2/backends/{}/servers/{}",
                path_segment(&backend),
                path_segment(&id)
            );
            remove(ctx, &format!("server {backend}/{id}"), &path, &wait).await
        }
    }
}

/// `server ls` without `-b`: every backend's servers. With `--json`:
/// `{"Servers":[{..., "BackendId": "b1"}]}`.
async fn all_servers(ctx: &Context) -> Result<(), Failure> {
    let api = ctx.client()?;
    let backends = array(&api.get_json("/v2/backends").await?, "Backends");
    let mut table = Table::new(["BACKEND", "ID", "URL", "WEIGHT"]);
    let mut all = Vec::new();
    for backend in &backends {
        let id = text_at(backend, &["Id"]);
        let path = format!("/v2/backends/{}/servers", path_segment(&id));
        let servers = match api.get_json(&path).await {
            Ok(reply) => array(&reply, "Servers"),
            // Removed between the two requests.
            Err(Failure::Api { status, .. }) if status == http::StatusCode::NOT_FOUND => Vec::new(),
            Err(e) => return Err(e),
        };
        for mut server in servers {
            let [sid, url, weight] = server_cells(&server);
            table.row([id.clone(), sid, url, weight]);
            if let Value::Object(map) = &mut server {
                map.insert("BackendId".to_owned(), Value::String(id.clone()));
            }
            all.push(server);
        }
    }
    if ctx.json {
        output::print_json(&json!({ "Servers": all }));
    } else {
        output::print(&table.render());
    }
    Ok(())
}

// === frontend ===

const FRONTEND_EXAMPLES: &str = "Examples:
  lbctl frontend ls
  lbctl frontend show --id f1
  lbctl frontend upsert --id f1 -b b1 --route 'Host(\"example.com\") && PathPrefix(\"/api\")'
  lbctl frontend upsert --id f2 -b b1 --route 'Path(\"/\")' --priority 10 --max-body-bytes 1048576 \\
      --failover-predicate 'IsNetworkError() && Attempts() <= 2' --pass-host-header --ttl 30s --wait
  lbctl frontend upsert --file f1.json
  lbctl frontend rm --id f1";

/// `lbctl frontend ...`
#[derive(Debug, Subcommand)]
#[command(after_help = FRONTEND_EXAMPLES)]
pub enum FrontendCommand {
    /// List the frontends.
    #[command(after_help = "Examples:\n  lbctl frontend ls\n  lbctl frontend ls --json")]
    Ls,
    /// Show a frontend and its middlewares.
    #[command(after_help = "Examples:\n  lbctl frontend show --id f1")]
    Show {
        /// The frontend's id.
        #[arg(long)]
        id: String,
    },
    /// Create or replace a frontend.
    #[command(after_help = FRONTEND_EXAMPLES)]
    Upsert(Box<FrontendUpsert>),
    /// Remove a frontend and its middlewares.
    #[command(after_help = "Examples:\n  lbctl frontend rm --id f1 --wait")]
    Rm {
        /// The frontend's id.
        #[arg(long)]
        id: String,
        /// `--wait` and `--wait-timeout`.
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `lbctl frontend upsert` flags (vctl's).
#[derive(Debug, Args)]
pub struct FrontendUpsert {
    /// The frontend's id.
    #[arg(long)]
    id: Option<String>,
    /// The backend that serves its requests.
    #[arg(long, short = 'b', value_name = "ID")]
    backend: Option<String>,
    /// The route expression, e.g. 'Host("example.com") && PathPrefix("/api")'.
    #[arg(long, value_name = "EXPR")]
    route: Option<String>,
    /// Higher wins when several routes match (default 0).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Remove the frontend when this runs out unless written again (Go duration).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    ttl: Option<String>,
    /// Largest request body; larger ones get 413 (0: unlimited).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    max_body_bytes: Option<i64>,
    /// Body bytes kept in memory to retry a request on another server (0: 1 MiB).
    #[arg(long, value_name = "BYTES")]
    max_mem_body_bytes: Option<i64>,
    /// When to retry on another server, e.g. 'IsNetworkError() && Attempts() <= 2'.
    #[arg(long, value_name = "EXPR")]
    failover_predicate: Option<String>,
    /// Value of X-Forwarded-Server (vctl's --forwardHost).
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Send the client's Host header to the servers.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pass_host_header: Option<bool>,
    /// Keep incoming X-Forwarded-* headers.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    trust_forward_header: Option<bool>,
    #[command(flatten)]
    raw: RawObject,
    #[command(flatten)]
    wait: WaitArgs,
}

impl FrontendUpsert {
    /// The frontend's JSON.
    pub fn object(&self) -> Result<Map<String, Value>, Failure> {
        let mut o = self.raw.load()?;
        set_opt(&mut o, &["Id"], self.id.clone());
        if !o.contains_key("Type") {
            set(&mut o, &["Type"], "http");
        }
        set_opt(&mut o, &["BackendId"], self.backend.clone());
        set_opt(&mut o, &["Route"], self.route.clone());
        set_opt(&mut o, &["Priority"], self.priority);
        let s = "Settings";
        set_opt(&mut o, &[s, "Limits", "MaxBodyBytes"], self.max_body_bytes);
        set_opt(
            &mut o,
            &[s, "Limits", "MaxMemBodyBytes"],
            self.max_mem_body_bytes,
        );
        set_opt(
            &mut o,
            &[s, "FailoverPredicate"],
            self.failover_predicate.clone(),
        );
        set_opt(&mut o, &[s, "Hostname"], self.hostname.clone());
        set_opt(&mut o, &[s, "PassHostHeader"], self.pass_host_header);
        set_opt(
            &mut o,
            &[s, "TrustForwardHeader"],
            self.trust_forward_header,
        );
        require(&o, &["Id"], "--id")?;
        require(&o, &["BackendId"], "-b/--backend")?;
        require(&o, &["Route"], "--route")?;
        Ok(o)
    }
}

/// Runs `lbctl frontend ...`.
pub async fn frontend(ctx: &Context, command: FrontendCommand) -> Result<(), Failure> {
    match command {
        FrontendCommand::Ls => list(ctx, "/v2/frontends", "Frontends", frontends_table).await,
        FrontendCommand::Show { id } => {
            let path = format!("/v2/frontends/{}", path_segment(&id));
            show_with_children(ctx, &path, "middlewares", "Middlewares", middlewares_table).await
        }
        FrontendCommand::Upsert(args) => {
            let object = args.object()?;
            upsert(
                ctx,
                "/v2/frontends",
                "Frontend",
                object,
                args.ttl.as_deref(),
                &args.wait,
            )
            .await
        }
        FrontendCommand::Rm { id, wait } => {
            let path = format!("/v2/frontends/{}", path_segment(&id));
            remove(ctx, &format!("frontend {id}"), &path, &wait).await
        }
    }
}

// === host ===

const HOST_EXAMPLES: &str = "Examples:
  lbctl host ls
  lbctl host show --name example.com
  lbctl host upsert --name example.com --cert example.com.crt --private-key example.com.key --default
  lbctl host rm --name example.com";

/// `lbctl host ...`
#[derive(Debug, Subcommand)]
#[command(after_help = HOST_EXAMPLES)]
pub enum HostCommand {
    /// List the hosts (TLS certificates by SNI name).
    #[command(after_help = "Examples:\n  lbctl host ls")]
    Ls,
    /// Show a host (the private key is never returned).
    #[command(after_help = "Examples:\n  lbctl host show --name example.com")]
    Show {
        /// The host name.
        #[arg(long)]
        name: String,
    },
    /// Create or replace a host's certificate and key.
    #[command(after_help = HOST_EXAMPLES)]
    Upsert(Box<HostUpsert>),
    /// Remove a host.
    #[command(after_help = "Examples:\n  lbctl host rm --name example.com")]
    Rm {
        /// The host name.
        #[arg(long)]
        name: String,
        /// `--wait` and `--wait-timeout`.
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `lbctl host upsert` flags.
#[derive(Debug, Args)]
pub struct HostUpsert {
    /// The host name (the SNI name).
    #[arg(long)]
    name: Option<String>,
    /// PEM certificate chain file.
    #[arg(long, value_name = "FILE", requires = "private_key")]
    cert: Option<PathBuf>,
    /// PEM private key file.
    #[arg(long, value_name = "FILE", requires = "cert")]
    private_key: Option<PathBuf>,
    /// Serve this certificate to clients that send no SNI.
    #[arg(long)]
    default: bool,
    #[command(flatten)]
    raw: RawObject,
    #[command(flatten)]
    wait: WaitArgs,
}

impl HostUpsert {
    /// The host's JSON, with the PEM files base64-encoded as Go's `[]byte`.
    pub fn object(&self) -> Result<Map<String, Value>, Failure> {
        let mut o = self.raw.load()?;
        set_opt(&mut o, &["Name"], self.name.clone());
        if let (Some(cert), Some(key)) = (&self.cert, &self.private_key) {
            let read = |path: &PathBuf, flag: &str| {
                std::fs::read(path)
                    .map_err(|e| Failure::Usage(format!("{flag} {}: {e}", path.display())))
            };
            let pair = lb_core::config::KeyPair {
                cert: lb_core::config::Base64Bytes(read(cert, "--cert")?),
                key: lb_core::config::Base64Bytes(read(key, "--private-key")?),
            };
            let pair = serde_json::to_value(&pair)
                .map_err(|e| Failure::Usage(format!("cannot encode the key pair: {e}")))?;
            set(&mut o, &["Settings", "KeyPair"], pair);
        }
        if self.default {
            set(&mut o, &["Settings", "Default"], true);
        }
        require(&o, &["Name"], "--name")?;
        require(&o, &["Settings", "KeyPair"], "--cert and --private-key")?;
        Ok(o)
    }
}

/// Runs `lbctl host ...`.
pub async fn host(ctx: &Context, command: HostCommand) -> Result<(), Failure> {
    match command {
        HostCommand::Ls => list(ctx, "/v2/hosts", "Hosts", hosts_table).await,
        HostCommand::Show { name } => {
            let path = format!("/v2/hosts/{}", path_segment(&name));
            let answer = ctx.client()?.get(&path).await?;
            if ctx.json {
                output::print_json_body(&answer.body);
                return Ok(());
            }
            let host = answer.json(&Method::GET, &path)?;
            // A base64 blob is of no use on a terminal; say what it is instead.
            let summary = certificate_summary(&host);
            let lines: Vec<(String, String)> = fields(&host)
                .into_iter()
                .map(|(key, value)| match key.as_str() {
                    "Settings.KeyPair.Cert" => (key, summary.clone()),
                    "Settings.KeyPair.Key" => (key, "(never returned by the API)".to_owned()),
                    _ => (key, value),
                })
                .collect();
            output::print(&render_fields(&lines));
            Ok(())
        }
        HostCommand::Upsert(args) => {
            let object = args.object()?;
            upsert(ctx, "/v2/hosts", "Host", object, None, &args.wait).await
        }
        HostCommand::Rm { name, wait } => {
            let path = format!("/v2/hosts/{}", path_segment(&name));
            remove(ctx, &format!("host {name}"), &path, &wait).await
        }
    }
}

// === listener ===

const LISTENER_EXAMPLES: &str = "Examples:
  lbctl listener ls
  lbctl listener show --id public
  lbctl listener upsert --id public --proto http --addr 0.0.0.0:8080
  lbctl listener upsert --id api --proto http --addr 127.0.0.1:9090 --scope 'Host(\"api.example.com\")'
  lbctl listener rm --id public";

/// `lbctl listener ...`
#[derive(Debug, Subcommand)]
#[command(after_help = LISTENER_EXAMPLES)]
pub enum ListenerCommand {
    /// List the registry's listeners (the --listen addresses are not among them).
    #[command(after_help = "Examples:\n  lbctl listener ls")]
    Ls,
    /// Show a listener.
    #[command(after_help = "Examples:\n  lbctl listener show --id public")]
    Show {
        /// The listener's id.
        #[arg(long)]
        id: String,
    },
    /// Create or replace a listener.
    #[command(after_help = LISTENER_EXAMPLES)]
    Upsert(Box<ListenerUpsert>),
    /// Remove a listener.
    #[command(after_help = "Examples:\n  lbctl listener rm --id public")]
    Rm {
        /// The listener's id.
        #[arg(long)]
        id: String,
        /// `--wait` and `--wait-timeout`.
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `lbctl listener upsert` flags (vctl's).
#[derive(Debug, Args)]
pub struct ListenerUpsert {
    /// The listener's id.
    #[arg(long)]
    id: Option<String>,
    /// http (default) or https.
    #[arg(long, value_name = "PROTO")]
    proto: Option<String>,
    /// tcp (default) or unix.
    #[arg(long, value_name = "NET")]
    net: Option<String>,
    /// host:port (tcp) or a socket path (unix).
    #[arg(long, value_name = "ADDR")]
    addr: Option<String>,
    /// A route expression limiting which frontends it serves, e.g. 'Host("a.example.com")'.
    #[arg(long, value_name = "EXPR")]
    scope: Option<String>,
    /// PROXY_V1 to read the PROXY protocol header.
    #[arg(long, value_name = "VERSION")]
    proxy_protocol: Option<String>,
    #[command(flatten)]
    raw: RawObject,
    #[command(flatten)]
    wait: WaitArgs,
}

impl ListenerUpsert {
    /// The listener's JSON.
    pub fn object(&self) -> Result<Map<String, Value>, Failure> {
        let mut o = self.raw.load()?;
        set_opt(&mut o, &["Id"], self.id.clone());
        set_opt(&mut o, &["Protocol"], self.proto.clone());
        if self.net.is_some() || self.addr.is_some() {
            let net = self.net.clone().or_else(|| {
                let written = text_at(&Value::Object(o.clone()), &["Address", "Network"]);
                Some(if written.is_empty() {
                    "tcp".to_owned()
                } else {
                    written
                })
            });
            set_opt(&mut o, &["Address", "Network"], net);
        }
        set_opt(&mut o, &["Address", "Address"], self.addr.clone());
        set_opt(&mut o, &["Scope"], self.scope.clone());
        set_opt(&mut o, &["ProxyProtocol"], self.proxy_protocol.clone());
        require(&o, &["Id"], "--id")?;
        require(&o, &["Address", "Address"], "--addr")?;
        Ok(o)
    }
}

/// Runs `lbctl listener ...`.
pub async fn listener(ctx: &Context, command: ListenerCommand) -> Result<(), Failure> {
    match command {
        ListenerCommand::Ls => list(ctx, "/v2/listeners", "Listeners", listeners_table).await,
        ListenerCommand::Show { id } => {
            let path = format!("/v2/listeners/{}", path_segment(&id));
            show(ctx, &path).await.map(drop)
        }
        ListenerCommand::Upsert(args) => {
            let object = args.object()?;
            upsert(ctx, "/v2/listeners", "Listener", object, None, &args.wait).await
        }
        ListenerCommand::Rm { id, wait } => {
            let path = format!("/v2/listeners/{}", path_segment(&id));
            remove(ctx, &format!("listener {id}"), &path, &wait).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Group,
    }

    #[derive(Debug, Subcommand)]
    enum Group {
        #[command(subcommand)]
        Frontend(FrontendCommand),
        #[command(subcommand)]
        Backend(BackendCommand),
        #[command(subcommand)]
        Server(ServerCommand),
        #[command(subcommand)]
        Listener(ListenerCommand),
    }

    fn parse(args: &[&str]) -> Group {
        Cli::try_parse_from(std::iter::once("lbctl").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn frontend_flags_become_vulcand_json() {
        let Group::Frontend(FrontendCommand::Upsert(args)) = parse(&[
            "frontend",
            "upsert",
            "--id",
            "f1",
            "-b",
            "b1",
            "--route",
            r#"Path("/")"#,
            "--priority",
            "-2",
            "--max-body-bytes",
            "1024",
            "--failover-predicate",
            "IsNetworkError()",
            "--pass-host-header",
            "--trust-forward-header=false",
            "--ttl",
            "5s",
            "--wait",
            "--wait-timeout",
            "3s",
        ]) else {
            panic!("not a frontend upsert");
        };
        assert_eq!(
            Value::Object(args.object().unwrap()),
            json!({
                "Id": "f1", "Type": "http", "BackendId": "b1", "Route": "Path(\"/\")",
                "Priority": -2,
                "Settings": {
                    "Limits": {"MaxBodyBytes": 1024},
                    "FailoverPredicate": "IsNetworkError()",
                    "PassHostHeader": true,
                    "TrustForwardHeader": false,
                },
            })
        );
        assert_eq!(args.ttl.as_deref(), Some("5s"));
        assert_eq!(args.wait.query(), "?wait=applied&timeout=3s");
        assert_eq!(
            args.wait.request_timeout(),
            REQUEST_TIMEOUT + Duration::from_secs(3)
        );
    }

    #[test]
    fn flags_override_the_raw_json_they_are_given_with() {
        let data =
            r#"{"Id":"f1","BackendId":"old","Route":"Path(`/`)","Settings":{"Hostname":"h"}}"#;
        let Group::Frontend(FrontendCommand::Upsert(args)) =
            parse(&["frontend", "upsert", "--data", data, "-b", "b2"])
        else {
            panic!("not a frontend upsert");
        };
        let object = Value::Object(args.object().unwrap());
        assert_eq!(object["BackendId"], "b2");
        assert_eq!(object["Settings"]["Hostname"], "h");
        assert_eq!(object["Type"], "http");
    }

    #[test]
    fn missing_required_fields_are_usage_errors_naming_flag_and_field() {
        let Group::Frontend(FrontendCommand::Upsert(args)) =
            parse(&["frontend", "upsert", "--id", "f1", "-b", "b1"])
        else {
            panic!("not a frontend upsert");
        };
        let error = args.object().unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            "--route is required (or Route in --data/--file)"
        );

        let Group::Frontend(FrontendCommand::Upsert(args)) =
            parse(&["frontend", "upsert", "--data", "[1]"])
        else {
            panic!("not a frontend upsert");
        };
        assert_eq!(
            args.object().unwrap_err().to_string(),
            "--data: expected a JSON object"
        );
    }

    #[test]
    fn backend_flags_fill_settings() {
        let Group::Backend(BackendCommand::Upsert(args)) = parse(&[
            "backend",
            "upsert",
            "--id",
            "b1",
            "--read-timeout",
            "5s",
            "--dial-timeout",
            "1s",
            "--balancer",
            "hash",
            "--balancer-key",
            "client.ip",
            "--hash-balance-factor",
            "150",
            "--health-path",
            "/health",
            "--health-interval",
            "3s",
            "--health-window",
            "10",
            "--health-threshold",
            "8",
            "--max-conns-per-server",
            "100",
        ]) else {
            panic!("not a backend upsert");
        };
        assert_eq!(
            Value::Object(args.object().unwrap()),
            json!({
                "Id": "b1", "Type": "http",
                "Settings": {
                    "Timeouts": {"Read": "5s", "Dial": "1s"},
                    "Balancer": {"Type": "hash", "Key": "client.ip", "HashBalanceFactor": 150},
                    "HealthCheck": {"Path": "/health", "Interval": "3s", "Window": 10, "Threshold": 8},
                    "MaxConnsPerServer": 100,
                },
            })
        );
    }

    #[test]
    fn bad_durations_are_rejected_by_the_parser() {
        let error = Cli::try_parse_from([
            "lbctl",
            "backend",
            "upsert",
            "--id",
            "b1",
            "--read-timeout",
            "5 sec",
        ])
        .unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn server_and_listener_flags() {
        let Group::Server(ServerCommand::Upsert(args)) = parse(&[
            "server",
            "upsert",
            "-b",
            "b1",
            "--id",
            "s1",
            "--url",
            "http://127.0.0.1:1",
            "--weight",
            "3",
        ]) else {
            panic!("not a server upsert");
        };
        assert_eq!(
            Value::Object(args.object().unwrap()),
            json!({"Id": "s1", "URL": "http://127.0.0.1:1", "Weight": 3})
        );
        let Group::Listener(ListenerCommand::Upsert(args)) = parse(&[
            "listener",
            "upsert",
            "--id",
            "l1",
            "--proto",
            "http",
            "--addr",
            "127.0.0.1:8080",
            "--scope",
            "Host(`a`)",
        ]) else {
            panic!("not a listener upsert");
        };
        assert_eq!(
            Value::Object(args.object().unwrap()),
            json!({"Id": "l1", "Protocol": "http", "Scope": "Host(`a`)",
                   "Address": {"Network": "tcp", "Address": "127.0.0.1:8080"}})
        );
    }

    #[test]
    fn list_tables_show_defaults_for_absent_fields() {
        let table =
            frontends_table(&[json!({"Id": "f1", "BackendId": "b1", "Route": "Path(`/`)"})]);
        assert_eq!(
            table.render(),
            "ID  BACKEND  PRIORITY  ROUTE\nf1  b1       0         Path(`/`)\n"
        );
        let table = backends_table(&[
            json!({"Id": "b1", "Settings": {"Timeouts": {"Read": "5s"}, "HealthCheck": {"Path": "/h", "Interval": "3s"}}}),
            json!({"Id": "b2", "Settings": {"Balancer": {"Type": "maglev"}}}),
        ]);
        assert_eq!(
            table.render(),
            "ID  BALANCER  READ  DIAL  HEALTH-CHECK\n\
             b1  wrr       5s    -     GET /h every 3s\n\
             b2  maglev    -     -     -\n"
        );
        let host =
            json!({"Name": "a", "Settings": {"KeyPair": {"Cert": "LS0tLS1CRUdJTiBY", "Key": ""}}});
        assert_eq!(certificate_summary(&host), "PEM, 12 bytes");
    }

    #[test]
    fn set_creates_and_replaces_intermediate_objects() {
        let mut o = Map::new();
        o.insert("Settings".into(), json!("not an object"));
        set(&mut o, &["Settings", "Limits", "MaxBodyBytes"], 5);
        assert_eq!(
            Value::Object(o),
            json!({"Settings": {"Limits": {"MaxBodyBytes": 5}}})
        );
    }
}
