//! `auth`: HTTP Basic authentication (RFC 7617).
//!
//! vulcand's form (the `vulcand-auth` plugin), one user with a plaintext password:
//!
//! ```json
//! {"Username": "hello", "Password": "world"}
//! ```
//!
//! Ours, any number of users with bcrypt or argon2 hashes (what `htpasswd -B` or an argon2
//! tool prints), plus the realm and whether to strip the credentials before forwarding:
//!
//! ```json
//! {"Users": [{"Username": "alice", "PasswordHash": "$2b$12$..."},
//!            {"Username": "bob", "PasswordHash": "$argon2id$v=19$m=19456,t=2,p=1$...$..."}],
//!  "Realm": "staff", "RemoveHeader": true}
//! ```
//!
//! Both forms may be combined; usernames must be unique and contain no `:`.
//!
//! - A request without valid credentials gets **401** with `WWW-Authenticate: Basic
//!   realm="lb"` (the realm is `Realm`, default `lb`) and `{"error": "unauthorized"}`.
//!   (vulcand-auth answered 403, which browsers do not prompt on.)
//! - The plaintext password is compared in constant time and length: both sides are
//!   reduced to a keyed 128-bit hash (SipHash-2-4 under a random key drawn when the
//!   middleware is built) and compared with `subtle`; only that hash is kept.
//! - A hash is verified on a blocking thread (bcrypt and argon2 take tens of milliseconds
//!   by design), at most as many at once as the machine has cores, so a flood of wrong
//!   passwords cannot occupy the runtime or every blocking thread. Unknown usernames are
//!   verified against a decoy hash, so they take as long as a wrong password.
//! - Outcomes are cached per `Authorization` value, under a keyed hash of it (never the
//!   value or the password): a repeat request costs one hash and one lookup, no bcrypt.
//!   1,024 successes and 1,024 failures are remembered; a full cache forgets arbitrary old
//!   entries, which only costs one more verification.
//! - The `Authorization` header is forwarded by default, as vulcand-auth (and Traefik) did,
//!   for backends that read the user from it; set `RemoveHeader` to keep the credentials
//!   away from the backend (and its logs).
//! - Nothing here logs a header, a password or a hash.
//!
//! The layer never fails and is always ready. Its status reports the number of users,
//! hash verifications run and credentials cached.

mod cache;
mod credentials;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use smallvec::SmallVec;
use tokio::sync::Semaphore;

use self::cache::TagSet;
use self::credentials::{PasswordHash, Users};
use crate::builtin::fields::Fields;
use crate::response::json_error;
use crate::service::{HttpLayer, HttpService, Request, Response, ResponseFuture};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

/// How many verified and how many refused credentials are remembered.
const CACHE_CAPACITY: usize = 1024;

/// The realm when none is configured.
pub const DEFAULT_REALM: &str = "lb";

/// Base64 as clients send it: standard alphabet, padding optional.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::general_purpose::PAD_INDIFFERENT,
);

/// The `auth` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Auth;

/// The `auth` config. Its `Debug` form hides the password and the hashes.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Fields")]
pub struct AuthConfig {
    /// `Username`: vulcand's single user (with `Password`).
    pub username: Option<String>,
    /// `Password`: that user's password, in plaintext (vulcand's form).
    pub password: Option<String>,
    /// `Users`: users with password hashes.
    pub users: Vec<UserConfig>,
    /// `Realm`: shown by browsers in the login prompt (default `lb`).
    pub realm: String,
    /// `RemoveHeader`: strip `Authorization` before forwarding (default false).
    pub remove_header: bool,
}

/// One user of `Users`. Its `Debug` form hides the hash.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// `Username`.
    #[serde(rename = "Username")]
    pub username: String,
    /// `PasswordHash`: bcrypt (`$2a$`, `$2b$`, `$2y$`) or argon2 PHC (`$argon2id$...`).
    #[serde(rename = "PasswordHash")]
    pub password_hash: String,
}

const FIELDS: &[&str] = &["Username", "Password", "Users", "Realm", "RemoveHeader"];

impl TryFrom<Fields> for AuthConfig {
    type Error = String;

    fn try_from(mut fields: Fields) -> Result<Self, String> {
        let config = Self {
            username: fields.take("Username")?,
            password: fields.take("Password")?,
            users: fields.take("Users")?.unwrap_or_default(),
            realm: fields
                .take("Realm")?
                .unwrap_or_else(|| DEFAULT_REALM.to_owned()),
            remove_header: fields.take("RemoveHeader")?.unwrap_or(false),
        };
        fields.finish(FIELDS)?;
        Ok(config)
    }
}

// Secrets stay out of `Debug`, so a config printed in a log or a panic leaks nothing.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("users", &self.users)
            .field("realm", &self.realm)
            .field("remove_header", &self.remove_header)
            .finish()
    }
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

impl AuthConfig {
    fn compile(&self) -> Result<Settings, String> {
        let mut names = HashSet::new();
        let mut check_name = |field: &str, name: &str| {
            if name.is_empty() {
                return Err(format!("{field}: must not be empty"));
            }
            if name.contains(':') || name.chars().any(char::is_control) {
                return Err(format!(
                    "{field}: {name:?} must not contain `:` or control characters"
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(format!("{field}: user {name:?} is defined twice"));
            }
            Ok(())
        };
        let plain = match (&self.username, &self.password) {
            (None, None) => None,
            (Some(_), None) => return Err("Password: missing (Username is set)".to_owned()),
            (None, Some(_)) => return Err("Username: missing (Password is set)".to_owned()),
            (Some(user), Some(password)) => {
                check_name("Username", user)?;
                if password.is_empty() {
                    return Err("Password: must not be empty".to_owned());
                }
                Some((user.as_str(), password.as_str()))
            }
        };
        let mut hashed = Vec::with_capacity(self.users.len());
        for (i, user) in self.users.iter().enumerate() {
            check_name(&format!("Users[{i}].Username"), &user.username)?;
            let hash = PasswordHash::parse(&user.password_hash)
                .map_err(|e| format!("Users[{i}].PasswordHash: {e}"))?;
            hashed.push((user.username.clone(), hash));
        }
        if plain.is_none() && hashed.is_empty() {
            return Err("Users: no user (give Username and Password, or Users)".to_owned());
        }
        if self.realm.is_empty()
            || !self
                .realm
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(format!(
                "Realm: {:?} must be printable ASCII without `\"` or `\\`",
                self.realm
            ));
        }
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", self.realm))
            .map_err(|_| format!("Realm: {:?} is not a valid header value", self.realm))?;
        Ok(Settings {
            users: Users::new(plain, hashed),
            challenge,
            remove_header: self.remove_header,
        })
    }
}

/// The config, checked and compiled.
struct Settings {
    users: Users,
    challenge: HeaderValue,
    remove_header: bool,
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "user",
        field: "Username",
        kind: OptionKind::String,
        help: "the user (vulcand's plaintext form)",
    },
    OptionSpec {
        flag: "pass",
        field: "Password",
        kind: OptionKind::String,
        help: "the user's password, in plaintext",
    },
    OptionSpec {
        flag: "realm",
        field: "Realm",
        kind: OptionKind::String,
        help: "realm of the login prompt (default lb)",
    },
    OptionSpec {
        flag: "remove-header",
        field: "RemoveHeader",
        kind: OptionKind::Bool,
        help: "strip Authorization before forwarding",
    },
];

impl MiddlewareType for Auth {
    type Config = AuthConfig;

    fn name(&self) -> &'static str {
        "auth"
    }

    fn validate(&self, config: &AuthConfig) -> Result<(), String> {
        config.compile().map(drop)
    }

    fn build(&self, config: AuthConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let state = Arc::new(State {
            settings: config.compile()?,
            verified: TagSet::new(CACHE_CAPACITY),
            refused: TagSet::new(CACHE_CAPACITY),
            verifying: Semaphore::new(cores),
            verifications: AtomicU64::new(0),
        });
        let status = Arc::clone(&state);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let state = Arc::clone(&state);
            HttpService::from_fn(move |req| State::call(&state, &next, req))
        })
        .with_status(Arc::new(move || {
            let users = &status.settings.users;
            serde_json::json!({
                "Users": users.hashed.len() + usize::from(users.plain.is_some()),
                "Verifications": status.verifications.load(Ordering::Relaxed),
                "CachedCredentials": status.verified.len(),
            })
        })))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

/// One `auth` middleware: its users and what it remembers.
struct State {
    settings: Settings,
    /// Tags of `Authorization` values that passed.
    verified: TagSet,
    /// Tags of `Authorization` values that failed a hash verification.
    refused: TagSet,
    /// Bounds the hash verifications running at once.
    verifying: Semaphore,
    /// Hash verifications run (decoys included), for the status report and tests.
    verifications: AtomicU64,
}

/// What a request's credentials turned out to be.
enum Verdict {
    Pass,
    Fail,
    /// Needs a hash verification: the header's tag, the user's hash (or a decoy), whether
    /// the user exists, and the password.
    Verify {
        tag: u128,
        hash: Arc<PasswordHash>,
        known: bool,
        password: Vec<u8>,
    },
}

impl State {
    fn call(this: &Arc<Self>, next: &HttpService, mut req: Request) -> ResponseFuture {
        match this.check(&req) {
            Verdict::Pass => {
                if this.settings.remove_header {
                    req.headers_mut().remove(header::AUTHORIZATION);
                }
                next.oneshot(req)
            }
            Verdict::Fail => Box::pin(std::future::ready(this.unauthorized())),
            Verdict::Verify {
                tag,
                hash,
                known,
                password,
            } => {
                let this = Arc::clone(this);
                let next = next.clone();
                Box::pin(async move {
                    if this.verify(tag, hash, known, password).await {
                        if this.settings.remove_header {
                            req.headers_mut().remove(header::AUTHORIZATION);
                        }
                        next.oneshot(req).await
                    } else {
                        this.unauthorized()
                    }
                })
            }
        }
    }

    /// Decides what it can without a hash verification.
    fn check(&self, req: &Request) -> Verdict {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Verdict::Fail;
        };
        let users = &self.settings.users;
        // Only hashed users are worth caching: a plaintext check is as cheap as a lookup.
        let tag = if users.hashed.is_empty() {
            0
        } else {
            let tag = users.tagger.tag(value.as_bytes());
            if self.verified.contains(tag) {
                return Verdict::Pass;
            }
            if self.refused.contains(tag) {
                return Verdict::Fail;
            }
            tag
        };
        let Some(credentials) = decode_basic(value.as_bytes()) else {
            return Verdict::Fail;
        };
        if users.is_plain_user(&credentials) {
            return Verdict::Pass;
        }
        let Some(colon) = credentials.iter().position(|&b| b == b':') else {
            return Verdict::Fail;
        };
        let (user, password) = (&credentials[..colon], &credentials[colon + 1..]);
        let (hash, known) = match users.hashed.get(user) {
            Some(hash) => (Arc::clone(hash), true),
            None => match &users.decoy {
                Some(decoy) => (Arc::clone(decoy), false),
                None => return Verdict::Fail,
            },
        };
        Verdict::Verify {
            tag,
            hash,
            known,
            password: password.to_vec(),
        }
    }

    /// Verifies a password against a hash on a blocking thread and remembers the outcome
    /// (even if the request is abandoned meanwhile, so its retry is cheap).
    async fn verify(
        self: &Arc<Self>,
        tag: u128,
        hash: Arc<PasswordHash>,
        known: bool,
        password: Vec<u8>,
    ) -> bool {
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let this = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            let matches = hash.verify(&password);
            this.verifications.fetch_add(1, Ordering::Relaxed);
            let ok = known && matches;
            if ok {
                this.verified.insert(tag);
            } else {
                this.refused.insert(tag);
            }
            ok
        })
        .await;
        match outcome {
            Ok(ok) => ok,
            Err(error) => {
                tracing::error!(%error, "auth: password verification failed to run");
                false
            }
        }
    }

    /// The 401 answer with the challenge.
    fn unauthorized(&self) -> Response {
        let mut response = json_error(StatusCode::UNAUTHORIZED, "unauthorized");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.settings.challenge.clone());
        response
    }
}

/// The decoded `user:password` of a `Basic` authorization value (scheme case-insensitive),
/// on the stack when short.
fn decode_basic(value: &[u8]) -> Option<SmallVec<[u8; 96]>> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let encoded = rest.trim_ascii();
    let mut buf = [0u8; 96];
    match BASE64.decode_slice(encoded, &mut buf) {
        Ok(len) => Some(SmallVec::from_slice(&buf[..len])),
        // Too long for the buffer, or invalid (then this fails too).
        Err(_) => BASE64.decode(encoded).ok().map(SmallVec::from_vec),
    }
}

#[cfg(test)]
mod tests;
