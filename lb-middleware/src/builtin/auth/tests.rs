use base64::Engine as _;
use serde_json::{Value, json};
use tower_layer::Layer;

use super::credentials::tests::{argon2_hash, bcrypt_hash};
use super::*;
use crate::body;
use crate::types::Types;

fn layer(config: Value) -> HttpLayer {
    let ctx = BuildContext {
        frontend_id: "f1",
        middleware_id: "auth",
    };
    Types::builtin().build("auth", &config, &ctx).unwrap()
}

/// An app that answers with the `Authorization` header it received.
fn service(layer: &HttpLayer) -> HttpService {
    layer.layer(HttpService::from_fn(|req| async move {
        let seen = req
            .headers()
            .get(header::AUTHORIZATION)
            .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
        Response::new(body::full(seen))
    }))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn call(svc: &HttpService, authorization: Option<&str>) -> Response {
    let mut req = http::Request::builder().uri("/");
    if let Some(value) = authorization {
        req = req.header(header::AUTHORIZATION, value);
    }
    svc.oneshot(req.body(body::empty()).unwrap()).await
}

async fn code(svc: &HttpService, authorization: Option<&str>) -> u16 {
    call(svc, authorization).await.status().as_u16()
}

fn verifications(layer: &HttpLayer) -> u64 {
    layer.status().unwrap()["Verifications"].as_u64().unwrap()
}

#[tokio::test]
async fn vulcands_plaintext_user_passes_and_others_get_401_with_a_challenge() {
    let layer = layer(json!({"Username": "hello", "Password": "wo:rld"}));
    let svc = service(&layer);
    let good = basic("hello", "wo:rld");
    let response = call(&svc, Some(&good)).await;
    assert_eq!(response.status(), 200);
    // Forwarded by default, as vulcand-auth did.
    assert_eq!(body::collect_string(response).await, good);
    // The scheme is case-insensitive and padding optional.
    let lower = good.replacen("Basic", "basic", 1);
    assert_eq!(code(&svc, Some(&lower)).await, 200);

    let refused = call(&svc, Some(&basic("hello", "wo:rl"))).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], r#"Basic realm="lb""#);
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert_eq!(
        body::collect_string(refused).await,
        r#"{"error":"unauthorized"}"#
    );
    for bad in [
        None,
        Some("Bearer abc"),
        Some("Basic"),
        Some("Basic !!!"),
        Some(basic("Hello", "wo:rld").as_str()),
        Some(basic("hello", "wo:rld ").as_str()),
    ] {
        let response = call(&svc, bad).await;
        assert_eq!(response.status(), 401, "{bad:?}");
        assert!(response.headers().contains_key("www-authenticate"));
    }
    // No hash, no verification thread.
    assert_eq!(verifications(&layer), 0);

    // Credentials longer than the stack buffer decode too.
    let long = "p".repeat(300);
    let layer = self::layer(json!({"Username": "hello", "Password": long}));
    let svc = service(&layer);
    assert_eq!(code(&svc, Some(&basic("hello", &long))).await, 200);
    assert_eq!(code(&svc, Some(&basic("hello", &long[1..]))).await, 401);
}

#[tokio::test]
async fn bcrypt_and_argon2_users_pass_with_their_passwords() {
    let layer = layer(json!({"Users": [
        {"Username": "a", "PasswordHash": bcrypt_hash("pa", bcrypt::Version::TwoA)},
        {"Username": "b", "PasswordHash": bcrypt_hash("pb", bcrypt::Version::TwoB)},
        {"Username": "y", "PasswordHash": bcrypt_hash("py", bcrypt::Version::TwoY)},
        {"Username": "z", "PasswordHash": argon2_hash("pz")},
    ]}));
    let svc = service(&layer);
    for (user, password) in [("a", "pa"), ("b", "pb"), ("y", "py"), ("z", "pz")] {
        assert_eq!(
            code(&svc, Some(&basic(user, password))).await,
            200,
            "{user}"
        );
        assert_eq!(code(&svc, Some(&basic(user, "wrong"))).await, 401, "{user}");
    }
    // A password of another user, and an unknown user, fail too.
    assert_eq!(code(&svc, Some(&basic("a", "pb"))).await, 401);
    assert_eq!(code(&svc, Some(&basic("nobody", "pa"))).await, 401);
    assert_eq!(layer.status().unwrap()["Users"], 4);
}

#[tokio::test]
async fn a_verified_credential_is_not_verified_again() {
    let layer = layer(json!({"Users": [
        {"Username": "alice", "PasswordHash": bcrypt_hash("s3cret", bcrypt::Version::TwoB)},
    ]}));
    let svc = service(&layer);
    let good = basic("alice", "s3cret");
    assert_eq!(code(&svc, Some(&good)).await, 200);
    assert_eq!(verifications(&layer), 1);
    for _ in 0..5 {
        assert_eq!(code(&svc, Some(&good)).await, 200);
    }
    assert_eq!(
        verifications(&layer),
        1,
        "repeats are served from the cache"
    );
    assert_eq!(layer.status().unwrap()["CachedCredentials"], 1);

    // A wrong password is verified once, then refused from the cache.
    let bad = basic("alice", "guess");
    for _ in 0..3 {
        assert_eq!(code(&svc, Some(&bad)).await, 401);
    }
    assert_eq!(verifications(&layer), 2);
    // An unknown user costs a (decoy) verification like a wrong password, then is cached.
    let unknown = basic("mallory", "s3cret");
    for _ in 0..3 {
        assert_eq!(code(&svc, Some(&unknown)).await, 401);
    }
    assert_eq!(verifications(&layer), 3);
    // A rebuilt middleware (new config) starts with an empty cache and a new key.
    let rebuilt = self::layer(json!({"Users": [
        {"Username": "alice", "PasswordHash": bcrypt_hash("s3cret", bcrypt::Version::TwoB)},
    ]}));
    assert_eq!(code(&service(&rebuilt), Some(&good)).await, 200);
    assert_eq!(verifications(&rebuilt), 1);
}

#[tokio::test]
async fn remove_header_strips_the_credentials_and_realm_is_configurable() {
    let layer = layer(json!({
        "Username": "u", "Password": "p",
        "Users": [{"Username": "h", "PasswordHash": argon2_hash("ph")}],
        "Realm": "staff only", "RemoveHeader": true,
    }));
    let svc = service(&layer);
    for good in [basic("u", "p"), basic("h", "ph")] {
        let response = call(&svc, Some(&good)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(body::collect_string(response).await, "none");
    }
    let refused = call(&svc, None).await;
    assert_eq!(
        refused.headers()["www-authenticate"],
        r#"Basic realm="staff only""#
    );
}

#[test]
fn every_config_error_names_its_field() {
    let types = Types::builtin();
    let hash = bcrypt_hash("x", bcrypt::Version::TwoB);
    for (config, field) in [
        (json!({}), "Users: no user"),
        (json!({"Username": "u"}), "Password: missing"),
        (json!({"Password": "p"}), "Username: missing"),
        (
            json!({"Username": "", "Password": "p"}),
            "Username: must not be empty",
        ),
        (
            json!({"Username": "a:b", "Password": "p"}),
            "Username: \"a:b\"",
        ),
        (
            json!({"Username": "u", "Password": ""}),
            "Password: must not be empty",
        ),
        (
            json!({"Users": [{"Username": "u", "PasswordHash": "plain"}]}),
            "Users[0].PasswordHash",
        ),
        (
            json!({"Username": "u", "Password": "p", "Users": [{"Username": "u", "PasswordHash": hash}]}),
            "Users[0].Username: user \"u\" is defined twice",
        ),
        (
            json!({"Users": [{"Username": "u"}]}),
            "Users: missing field `PasswordHash`",
        ),
        (json!({"Users": {"u": "p"}}), "Users: invalid type"),
        (
            json!({"Username": "u", "Password": "p", "Realm": "a\"b"}),
            "Realm",
        ),
        (
            json!({"Username": "u", "Password": "p", "RemoveHeader": "yes"}),
            "RemoveHeader",
        ),
        (json!({"User": "u"}), "unknown field `User`"),
    ] {
        let error = types
            .validate_config("auth", &config)
            .unwrap_err()
            .to_string();
        assert!(error.contains(field), "{config}: {error}");
    }
}

#[test]
fn debug_hides_secrets() {
    let config: AuthConfig = serde_json::from_value(json!({
        "Username": "u", "Password": "hunter2",
        "Users": [{"Username": "h", "PasswordHash": "$2b$04$secretsecret"}],
    }))
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("secretsecret"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
