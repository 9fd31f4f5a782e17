//! Accounts for integration tests: codes read from the outbox, sign-up, sign-in, and servers
//! started with an identity configuration.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use super::Server;

pub const PASSWORD: &str = "correct horse battery";

/// A server whose configuration file holds `toml` (e.g. `[identity]` limits). The returned
/// directory holds the data directory (`data/`) and the file; keep it alive with the server.
pub fn start_configured(toml: &str) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("cairn.toml");
    std::fs::write(&cfg, toml).unwrap();
    let s = Server::start_in(&tmp.path().join("data"), &["--config", cfg.to_str().unwrap()]);
    (s, tmp)
}

/// A fresh email address, distinct within this test process.
pub fn new_email() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("user{}.{}@example.com", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn outbox(dir: &Path) -> Vec<Value> {
    match std::fs::read_to_string(dir.join("outbox.jsonl")) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The newest code sent to `to` for `purpose`.
pub fn last_code(s: &Server, to: &str, purpose: &str) -> String {
    outbox(&s.dir)
        .iter()
        .rev()
        .find(|m| m["to"] == to && m["purpose"] == purpose)
        .and_then(|m| m["code"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no {purpose} code for {to} in the outbox"))
}

pub async fn send_code(s: &Server, identifier: &str, purpose: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/codes"))
        .json(&json!({ "identifier": identifier, "purpose": purpose }))
        .send()
        .await
        .unwrap()
}

/// Ask for a code and return it.
pub async fn code_for(s: &Server, identifier: &str, purpose: &str) -> String {
    let r = send_code(s, identifier, purpose).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    last_code(s, identifier, purpose)
}

/// A signed-in user's code for `change_details` or `delete_account`.
pub async fn account_code(s: &Server, u: &User, purpose: &str) -> String {
    let r = s
        .client
        .post(s.url("/v1/codes"))
        .bearer_auth(&u.token)
        .json(&json!({ "purpose": purpose }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    last_code(s, &u.identifier, purpose)
}

pub async fn register(s: &Server, identifier: &str, password: &str) -> reqwest::Response {
    let code = code_for(s, identifier, "register").await;
    s.client
        .post(s.url("/v1/accounts"))
        .json(&json!({ "identifier": identifier, "password": password, "code": code }))
        .send()
        .await
        .unwrap()
}

pub async fn login_as(s: &Server, identifier: &str, password: &str, device: &str) -> reqwest::Response {
    let device = json!({ "name": device, "model": "Pixel 9", "os": "Android 15" });
    s.client
        .post(s.url("/v1/sessions"))
        .json(&json!({ "identifier": identifier, "password": password, "device": device }))
        .send()
        .await
        .unwrap()
}

#[derive(Clone, Debug)]
pub struct User {
    pub identifier: String,
    pub password: String,
    pub account_id: String,
    pub token: String,
    pub device_id: String,
}

/// Register `identifier` and sign in once.
pub async fn signed_up(s: &Server, identifier: &str) -> User {
    let r = register(s, identifier, PASSWORD).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let account_id = r.json::<Value>().await.unwrap()["account_id"].as_str().unwrap().to_string();
    let mut u = login(s, identifier, PASSWORD).await;
    assert_eq!(u.account_id, account_id);
    u.account_id = account_id;
    u
}

/// A new account with a fresh email, signed in.
pub async fn signed_in(s: &Server) -> User {
    signed_up(s, &new_email()).await
}

pub async fn login(s: &Server, identifier: &str, password: &str) -> User {
    let r = login_as(s, identifier, password, "test phone").await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    User {
        identifier: identifier.to_string(),
        password: password.to_string(),
        account_id: v["account_id"].as_str().unwrap().to_string(),
        token: v["token"].as_str().unwrap().to_string(),
        device_id: v["device_id"].as_str().unwrap().to_string(),
    }
}

pub async fn get_as(s: &Server, token: &str, path: &str) -> reqwest::Response {
    s.client.get(s.url(path)).bearer_auth(token).send().await.unwrap()
}

/// Delete `u`'s account the way a user does (a `delete_account` code, then the confirmation),
/// asserting the `202`.
pub async fn delete_account(s: &Server, u: &User) {
    let code = account_code(s, u, "delete_account").await;
    let r = s
        .client
        .delete(s.url("/v1/account"))
        .bearer_auth(&u.token)
        .json(&json!({ "code": code, "confirm": "DELETE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}
