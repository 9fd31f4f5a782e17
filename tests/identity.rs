//! The Identity table of API.md, through HTTP against the real server: codes, sign-up,
//! sessions and devices, details, passwords, activity, deletion, rate limits, isolation.

mod common;

use common::identity::*;
use common::*;
use serde_json::{json, Value};

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers().get("retry-after").expect("429 carries Retry-After").to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn sign_up_sign_in_and_read_the_account() {
    let s = Server::start();
    let email = format!("Ada.{}", new_email());
    let r = send_code(&s, &email, "register").await;
    assert_eq!(body_of(r, 202).await["expires_in"], 600);
    let line = outbox(&s.dir).pop().unwrap();
    // The outbox line of API.md, to the identifier as typed (it is compared in lower case).
    assert_eq!(line["to"], email.as_str());
    assert_eq!(line["purpose"], "register");
    let code = line["code"].as_str().unwrap().to_string();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    time::OffsetDateTime::parse(line["at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();

    let body = json!({ "identifier": email, "password": PASSWORD, "code": code, "nickname": "Ada" });
    let created = body_of(s.client.post(s.url("/v1/accounts")).json(&body).send().await.unwrap(), 201).await;
    let account_id = created["account_id"].as_str().unwrap().to_string();
    assert_eq!(account_id.len(), 32);

    let r = login_as(&s, &email.to_uppercase(), PASSWORD, "Ada's Pixel").await;
    let session = body_of(r, 201).await;
    assert_eq!(session["account_id"], account_id.as_str());
    let token = session["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    let expires = time::OffsetDateTime::parse(
        session["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_days();
    assert!((29..=30).contains(&days), "{days}");

    let me = body_of(get_as(&s, token, "/v1/account").await, 200).await;
    assert_eq!(me["account_id"], account_id.as_str());
    assert_eq!(me["identifier"], email.as_str());
    assert_eq!(me["nickname"], "Ada");
    assert_eq!(me["plan"], "free");
    for field in ["gender", "region", "locale", "recovery_email", "recovery_phone"] {
        assert!(me[field].is_null(), "{field}: {me}");
    }
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'));

    let devices = body_of(get_as(&s, token, "/v1/devices").await, 200).await;
    let list = devices["devices"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["device_id"], session["device_id"]);
    assert_eq!(
        (list[0]["name"].as_str(), list[0]["model"].as_str(), list[0]["os"].as_str()),
        (Some("Ada's Pixel"), Some("Pixel 9"), Some("Android 15"))
    );
    assert!(list[0]["last_seen"].is_string());

    let activity = body_of(get_as(&s, token, "/v1/account/activity").await, 200).await;
    let login = &activity["events"][0];
    assert_eq!(login["kind"], "login");
    assert_eq!(login["ip"], "127.0.0.1");
    assert_eq!(login["device"]["device_id"], session["device_id"]);
    assert_eq!(login["device"]["name"], "Ada's Pixel");
    assert!(login["at"].is_string());
}

#[tokio::test]
async fn phones_sign_up_in_e164_and_malformed_identifiers_are_400() {
    let s = Server::start();
    let u = signed_up(&s, "+4915112345678").await;
    let me = body_of(get_as(&s, &u.token, "/v1/account").await, 200).await;
    assert_eq!(me["identifier"], "+4915112345678");
    for bad in ["4915112345678", "+49 151 12345678", "+1234567", "+1234567890123456", "not-an-email", "a@b", ""] {
        assert_eq!(error_code(send_code(&s, bad, "register").await, 400).await, "bad_identifier", "{bad:?}");
        let body = json!({ "identifier": bad, "password": PASSWORD, "code": "123456" });
        let r = s.client.post(s.url("/v1/accounts")).json(&body).send().await.unwrap();
        assert_eq!(error_code(r, 400).await, "bad_identifier");
        assert_eq!(error_code(login_as(&s, bad, PASSWORD, "x").await, 400).await, "bad_identifier");
    }
    // Bad requests of every other kind are 400 JSON too, never 5xx.
    let r = s.client.post(s.url("/v1/accounts")).body("{not json").send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_json");
    let r = s
        .client
        .post(s.url("/v1/sessions"))
        .json(&json!({ "identifier": "+4915112345678", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_json");
    let r = s
        .client
        .post(s.url("/v1/codes"))
        .json(&json!({ "identifier": "+4915112345678", "purpose": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_purpose");
    let r = s.client.post(s.url("/v1/codes")).json(&json!({ "purpose": "register" })).send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_identifier");
    let long = "x".repeat(200);
    let r = login_as(&s, "+4915112345678", PASSWORD, &long).await;
    assert_eq!(error_code(r, 400).await, "bad_field");
}

#[tokio::test]
async fn sign_up_checks_code_then_password_then_identifier() {
    let s = Server::start();
    let email = new_email();
    let code = code_for(&s, &email, "register").await;
    let post = |body: Value| s.client.post(s.url("/v1/accounts")).json(&body).send();
    // A wrong or missing code is 403, even with a weak password.
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let r = post(json!({ "identifier": email, "password": "short", "code": wrong })).await.unwrap();
    assert_eq!(error_code(r, 403).await, "bad_code");
    let r = post(json!({ "identifier": email, "password": PASSWORD })).await.unwrap();
    assert_eq!(error_code(r, 403).await, "bad_code");
    // A weak password is 400 and does not use up the code.
    let r = post(json!({ "identifier": email, "password": "1234567", "code": code })).await.unwrap();
    assert_eq!(error_code(r, 400).await, "weak_password");
    let r = post(json!({ "identifier": email, "password": "x".repeat(129), "code": code })).await.unwrap();
    assert_eq!(error_code(r, 400).await, "weak_password");
    let r = post(json!({ "identifier": email, "password": "12345678", "code": code, "nickname": "" })).await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_field");
    let r = post(json!({ "identifier": email, "password": "p".repeat(64), "code": code })).await.unwrap();
    body_of(r, 201).await;
    // Single use.
    let r = post(json!({ "identifier": email, "password": PASSWORD, "code": code })).await.unwrap();
    assert_eq!(error_code(r, 403).await, "bad_code");
    // The identifier is taken, whatever the case of the email; a register code is still sent.
    let upper = email.to_uppercase();
    let code = code_for(&s, &upper, "register").await;
    let r = post(json!({ "identifier": upper, "password": PASSWORD, "code": code })).await.unwrap();
    assert_eq!(error_code(r, 409).await, "identifier_taken");
    // The 64-character password signs in.
    login(&s, &email, &"p".repeat(64)).await;
}

#[tokio::test]
async fn codes_expire_after_their_ttl() {
    let (s, _tmp) = start_configured("test_clock = true\n[identity]\ncode_ttl_secs = 300\n");
    let post = |id: &str, code: &str| {
        s.client
            .post(s.url("/v1/accounts"))
            .json(&json!({ "identifier": id, "password": PASSWORD, "code": code }))
            .send()
    };
    let fresh = new_email();
    let code = code_for(&s, &fresh, "register").await;
    body_of(post(&fresh, &code).await.unwrap(), 201).await;
    let (late, later) = (new_email(), new_email());
    let code = code_for(&s, &late, "register").await;
    let later_code = code_for(&s, &later, "register").await;
    s.advance_clock(299).await;
    body_of(post(&later, &later_code).await.unwrap(), 201).await;
    s.advance_clock(1).await;
    assert_eq!(error_code(post(&late, &code).await.unwrap(), 403).await, "bad_code");
}

#[tokio::test]
async fn codes_die_after_five_wrong_tries_and_are_replaced() {
    let s = Server::start();
    let post = |id: &str, code: &str| {
        s.client
            .post(s.url("/v1/accounts"))
            .json(&json!({ "identifier": id, "password": PASSWORD, "code": code }))
            .send()
    };
    let other = |c: &str| {
        if c == "999999" {
            "999998".to_string()
        } else {
            "999999".to_string()
        }
    };

    // Dead after five wrong tries, even for the right code.
    let b = new_email();
    let code = code_for(&s, &b, "register").await;
    for _ in 0..5 {
        assert_eq!(error_code(post(&b, &other(&code)).await.unwrap(), 403).await, "bad_code");
    }
    assert_eq!(error_code(post(&b, &code).await.unwrap(), 403).await, "bad_code");

    // Four wrong tries leave it alive.
    let c = new_email();
    let code = code_for(&s, &c, "register").await;
    for _ in 0..4 {
        assert_eq!(error_code(post(&c, &other(&code)).await.unwrap(), 403).await, "bad_code");
    }
    body_of(post(&c, &code).await.unwrap(), 201).await;

    // A new code replaces the older one.
    let d = new_email();
    let first = code_for(&s, &d, "register").await;
    let mut second = code_for(&s, &d, "register").await;
    while second == first {
        second = code_for(&s, &d, "register").await;
    }
    assert_eq!(error_code(post(&d, &first).await.unwrap(), 403).await, "bad_code");
    body_of(post(&d, &second).await.unwrap(), 201).await;

    // A code is bound to its purpose.
    let e = new_email();
    let reset = code_for(&s, &e, "reset_password").await;
    assert_eq!(error_code(post(&e, &reset).await.unwrap(), 403).await, "bad_code");
}

#[tokio::test]
async fn code_sends_are_limited_per_identifier_whatever_the_purpose() {
    let s = Server::start();
    let email = new_email();
    for purpose in ["register", "reset_password", "register", "reset_password", "register"] {
        assert_eq!(send_code(&s, &email, purpose).await.status(), 202);
    }
    let r = send_code(&s, &email.to_uppercase(), "reset_password").await;
    let wait = retry_after(&r);
    assert!((1..=900).contains(&wait), "{wait}");
    assert_eq!(error_code(r, 429).await, "rate_limited");
    // Another identifier is not affected; the refused send was not delivered.
    assert_eq!(send_code(&s, &new_email(), "register").await.status(), 202);
    assert_eq!(outbox(&s.dir).iter().filter(|m| m["to"] == email.as_str()).count(), 5);
    // Signed-in sends count too: a user who used up the sends cannot get a change code.
    let u = signed_in(&s).await;
    for _ in 0..4 {
        account_code(&s, &u, "change_details").await;
    }
    let r = s
        .client
        .post(s.url("/v1/codes"))
        .bearer_auth(&u.token)
        .json(&json!({ "purpose": "delete_account" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 429).await, "rate_limited");
}

#[tokio::test]
async fn code_send_limits_are_configurable_per_ip_and_window() {
    let (s, _tmp) = start_configured(
        "test_clock = true\n[identity]\ncode_sends_per_identifier = 2\ncode_sends_per_ip = 4\ncode_send_window_secs = 60\n",
    );
    let email = new_email();
    assert_eq!(send_code(&s, &email, "register").await.status(), 202);
    assert_eq!(send_code(&s, &email, "register").await.status(), 202);
    assert_eq!(send_code(&s, &email, "register").await.status(), 429);
    assert_eq!(send_code(&s, &new_email(), "register").await.status(), 202);
    assert_eq!(send_code(&s, &new_email(), "register").await.status(), 202);
    // The address has used its four sends; any identifier is refused now.
    let r = send_code(&s, &new_email(), "register").await;
    assert!((1..=60).contains(&retry_after(&r)));
    assert_eq!(error_code(r, 429).await, "rate_limited");
    s.advance_clock(59).await;
    assert_eq!(send_code(&s, &new_email(), "register").await.status(), 429, "the window has a second left");
    s.advance_clock(1).await;
    assert_eq!(send_code(&s, &email, "register").await.status(), 202);
}

#[tokio::test]
async fn failed_logins_lock_the_identifier_even_for_the_right_password() {
    let (s, _tmp) = start_configured(
        "test_clock = true\n[identity]\nfailed_logins_per_identifier = 3\nfailed_login_window_secs = 60\n",
    );
    let u = signed_in(&s).await;
    let unknown = body_of(login_as(&s, &new_email(), PASSWORD, "x").await, 401).await;
    for _ in 0..3 {
        let wrong = body_of(login_as(&s, &u.identifier, "wrong password", "x").await, 401).await;
        // One answer for an unknown identifier and a wrong password.
        assert_eq!(wrong, unknown);
    }
    let r = login_as(&s, &u.identifier, PASSWORD, "x").await;
    assert!((1..=60).contains(&retry_after(&r)));
    assert_eq!(error_code(r, 429).await, "rate_limited");
    // Other identifiers still sign in.
    let v = signed_in(&s).await;
    let activity = body_of(get_as(&s, &u.token, "/v1/account/activity").await, 200).await;
    let failed: Vec<&Value> =
        activity["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "login_failed").collect();
    assert_eq!(failed.len(), 3);
    assert!(failed[0]["device"].is_null());
    assert_eq!(failed[0]["ip"], "127.0.0.1");
    // After the window, the right password works again; not a second before.
    s.advance_clock(59).await;
    assert_eq!(login_as(&s, &u.identifier, PASSWORD, "x").await.status(), 429);
    s.advance_clock(1).await;
    login(&s, &u.identifier, PASSWORD).await;
    login(&s, &v.identifier, PASSWORD).await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_ip() {
    let (s, _tmp) = start_configured("[identity]\nfailed_logins_per_ip = 4\n");
    let u = signed_in(&s).await;
    for _ in 0..4 {
        assert_eq!(login_as(&s, &new_email(), "wrong password", "x").await.status(), 401);
    }
    let r = login_as(&s, &u.identifier, PASSWORD, "x").await;
    assert!(retry_after(&r) > 0);
    assert_eq!(error_code(r, 429).await, "rate_limited");
}

/// Statuses of `n` wrong-password sign-ins sent at once, one per identifier from `ids`.
async fn parallel_wrong_logins(s: &Server, ids: impl Iterator<Item = String>) -> Vec<u16> {
    let tries: Vec<_> = ids.map(|id| async move { login_as(s, &id, "wrong password", "x").await }).collect();
    let answers = futures::future::join_all(tries).await;
    let mut statuses = Vec::new();
    for r in answers {
        let status = r.status().as_u16();
        if status == 429 {
            assert!(retry_after(&r) > 0);
        }
        statuses.push(status);
    }
    statuses
}

/// Issue 11: 60 wrong passwords sent at once were all verified (and all answered `401`),
/// because the lockout was checked before Argon2 and counted after it. Each attempt is now
/// counted before it is verified.
#[tokio::test]
async fn parallel_wrong_logins_for_one_identifier_cost_a_try_each() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let statuses = parallel_wrong_logins(&s, std::iter::repeat_n(u.identifier.clone(), 40)).await;
    let wrong = statuses.iter().filter(|&&c| c == 401).count();
    assert!(wrong <= 5, "{wrong} of 40 parallel tries were verified: {statuses:?}");
    assert_eq!(statuses.iter().filter(|&&c| c == 429).count(), 40 - wrong, "{statuses:?}");
    // Locked: even the right password.
    assert_eq!(error_code(login_as(&s, &u.identifier, PASSWORD, "x").await, 429).await, "rate_limited");
}

#[tokio::test]
async fn parallel_wrong_logins_from_one_address_cost_a_try_each() {
    let (s, _tmp) = start_configured("[identity]\nfailed_logins_per_ip = 3\n");
    let u = signed_in(&s).await;
    let statuses = parallel_wrong_logins(&s, (0..30).map(|_| new_email())).await;
    let wrong = statuses.iter().filter(|&&c| c == 401).count();
    assert!(wrong <= 3, "{wrong} of 30 parallel tries were verified: {statuses:?}");
    assert_eq!(statuses.iter().filter(|&&c| c == 429).count(), 30 - wrong, "{statuses:?}");
    assert_eq!(error_code(login_as(&s, &u.identifier, PASSWORD, "x").await, 429).await, "rate_limited");
}

/// A sign-up attempt with `code`, answering its status.
async fn try_register(s: &Server, identifier: &str, code: &str) -> reqwest::Response {
    let body = json!({ "identifier": identifier, "password": PASSWORD, "code": code });
    s.client.post(s.url("/v1/accounts")).json(&body).send().await.unwrap()
}

/// A code that is not `code`.
fn not(code: &str) -> &'static str {
    if code == "999999" {
        "999998"
    } else {
        "999999"
    }
}

/// Issue 11: a code dies after 5 wrong tries, but a new one could be asked for at once, so an
/// identifier took 25 guesses per send window, every window, all day. Wrong codes now count
/// per identifier across codes and purposes (default 20 a day) and per address.
#[tokio::test]
async fn wrong_codes_are_limited_per_identifier_across_codes_and_per_address() {
    let (s, _tmp) = start_configured(
        "[identity]\ncode_sends_per_identifier = 50\ncode_failures_per_identifier = 7\ncode_failures_per_ip = 12\n",
    );
    let email = new_email();
    let first = code_for(&s, &email, "register").await;
    for _ in 0..5 {
        assert_eq!(error_code(try_register(&s, &email, not(&first)).await, 403).await, "bad_code");
    }
    let code = code_for(&s, &email, "register").await;
    for _ in 0..2 {
        assert_eq!(error_code(try_register(&s, &email, not(&code)).await, 403).await, "bad_code");
    }
    // Seven wrong codes: even the right one is refused now, whatever the purpose.
    let r = try_register(&s, &email, &code).await;
    assert!(retry_after(&r) > 23 * 3600, "a day's window");
    assert_eq!(error_code(r, 429).await, "rate_limited");
    let reset = code_for(&s, &email, "reset_password").await;
    let body = json!({ "identifier": email, "code": reset, "new_password": "another password" });
    let r = s.client.post(s.url("/v1/password-reset")).json(&body).send().await.unwrap();
    assert_eq!(error_code(r, 429).await, "rate_limited");

    // The address: 7 wrong so far; 5 more on other identifiers use up its 12.
    for _ in 0..5 {
        let other = new_email();
        let code = code_for(&s, &other, "register").await;
        assert_eq!(error_code(try_register(&s, &other, not(&code)).await, 403).await, "bad_code");
    }
    let fresh = new_email();
    let code = code_for(&s, &fresh, "register").await;
    assert_eq!(error_code(try_register(&s, &fresh, &code).await, 429).await, "rate_limited");
}

/// Stop `s` (gracefully) and start it again on its data directory and configuration.
fn restarted(mut s: Server, tmp: &tempfile::TempDir) -> Server {
    s.stop();
    let cfg = tmp.path().join("cairn.toml");
    Server::start_in(&tmp.path().join("data"), &["--config", cfg.to_str().unwrap()])
}

/// Issue 11: limits lived in memory only, so a restart lifted every lockout. Failed logins
/// are stored, and count again after a restart.
#[test]
fn a_login_lockout_survives_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s, tmp) = start_configured("[identity]\nfailed_logins_per_identifier = 3\n");
    let u = rt.block_on(async {
        let u = signed_in(&s).await;
        for _ in 0..3 {
            assert_eq!(login_as(&s, &u.identifier, "wrong password", "x").await.status(), 401);
        }
        assert_eq!(login_as(&s, &u.identifier, PASSWORD, "x").await.status(), 429);
        u
    });
    let s = restarted(s, &tmp);
    rt.block_on(async {
        let r = login_as(&s, &u.identifier, PASSWORD, "x").await;
        assert!((1..=900).contains(&retry_after(&r)));
        assert_eq!(error_code(r, 429).await, "rate_limited");
        // Nobody else is locked out.
        signed_in(&s).await;
    });
}

/// The same for wrong codes, at their default cap (20 a day): four codes used up, and the
/// fifth, last send of the window is refused although right, before and after a restart.
#[test]
fn a_wrong_code_cap_survives_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s, tmp) = start_configured("");
    let (email, code) = rt.block_on(async {
        let email = new_email();
        for _ in 0..4 {
            let code = code_for(&s, &email, "register").await;
            for _ in 0..5 {
                assert_eq!(try_register(&s, &email, not(&code)).await.status(), 403);
            }
        }
        let code = code_for(&s, &email, "register").await;
        assert_eq!(try_register(&s, &email, &code).await.status(), 429);
        (email, code)
    });
    let s = restarted(s, &tmp);
    rt.block_on(async {
        let r = try_register(&s, &email, &code).await;
        assert!(retry_after(&r) > 23 * 3600);
        assert_eq!(error_code(r, 429).await, "rate_limited");
        signed_in(&s).await;
    });
}

/// Issue 11: a password went to Argon2 at any length up to the 32 MiB body limit. Identity
/// bodies are limited to 64 KiB; under that, a password longer than an account can have is a
/// wrong password (counted as one) that is never hashed.
#[tokio::test]
async fn oversized_passwords_are_refused_without_hashing_them() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let huge = "p".repeat(1 << 20);
    let r = login_as(&s, &u.identifier, &huge, "x").await;
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    let r = register(&s, &new_email(), &huge).await;
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    let long = format!("{PASSWORD}{}", "p".repeat(40 << 10));
    let unknown = body_of(login_as(&s, &new_email(), PASSWORD, "x").await, 401).await;
    assert_eq!(body_of(login_as(&s, &u.identifier, &long, "x").await, 401).await, unknown);
    // It counted as a failed login.
    let activity = body_of(get_as(&s, &u.token, "/v1/account/activity").await, 200).await;
    assert_eq!(activity["events"][0]["kind"], "login_failed");
    // Setting one is 400, as before.
    let r = register(&s, &new_email(), &"p".repeat(129)).await;
    assert_eq!(error_code(r, 400).await, "weak_password");
}

#[tokio::test]
async fn devices_sign_out_and_log_out() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let tablet = login(&s, &u.identifier, PASSWORD).await;
    let laptop = login(&s, &u.identifier, PASSWORD).await;
    let list = body_of(get_as(&s, &u.token, "/v1/devices").await, 200).await;
    let ids: Vec<&str> = list["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&tablet.device_id.as_str()) && ids.contains(&laptop.device_id.as_str()));
    let current: Vec<&Value> = list["devices"].as_array().unwrap().iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device_id"], u.device_id.as_str());

    // Sign the tablet out from the phone.
    let r = s
        .client
        .delete(s.url(&format!("/v1/devices/{}", tablet.device_id)))
        .bearer_auth(&u.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(error_code(get_as(&s, &tablet.token, "/v1/account").await, 401).await, "unauthorized");
    let r = s
        .client
        .delete(s.url(&format!("/v1/devices/{}", tablet.device_id)))
        .bearer_auth(&u.token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    for junk in ["nope", "00000000000000000000000000000000"] {
        let r = s.client.delete(s.url(&format!("/v1/devices/{junk}"))).bearer_auth(&u.token).send().await.unwrap();
        assert_eq!(error_code(r, 404).await, "not_found");
    }
    let list = body_of(get_as(&s, &u.token, "/v1/devices").await, 200).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 2);

    // Deleting the current device logs out.
    let r = s
        .client
        .delete(s.url(&format!("/v1/devices/{}", laptop.device_id)))
        .bearer_auth(&laptop.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get_as(&s, &laptop.token, "/v1/account").await.status(), 401);

    // Log out.
    let r = s.client.delete(s.url("/v1/sessions/current")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get_as(&s, &u.token, "/v1/devices").await.status(), 401);
    let r = s.client.delete(s.url("/v1/sessions/current")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");

    // Missing and malformed tokens.
    assert_eq!(error_code(s.client.get(s.url("/v1/account")).send().await.unwrap(), 401).await, "unauthorized");
    for bad in ["Bearer ", "Bearer abc", "Basic dXNlcjpwYXNz", &format!("Bearer {}", "0".repeat(64))] {
        let r = s.client.get(s.url("/v1/account")).header("authorization", bad).send().await.unwrap();
        assert_eq!(error_code(r, 401).await, "unauthorized", "{bad}");
    }

    let activity =
        body_of(get_as(&s, &login(&s, &u.identifier, PASSWORD).await.token, "/v1/account/activity").await, 200).await;
    let kinds: Vec<&str> = activity["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..4], ["login", "logout", "device_signed_out", "device_signed_out"]);
}

#[test]
fn sessions_survive_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut s = Server::start();
    let u = rt.block_on(signed_in(&s));
    s.stop();
    let s = Server::start_in(&s.dir.clone(), &[]);
    rt.block_on(async {
        let me = body_of(get_as(&s, &u.token, "/v1/account").await, 200).await;
        assert_eq!(me["account_id"], u.account_id.as_str());
        let activity = body_of(get_as(&s, &u.token, "/v1/account/activity").await, 200).await;
        assert_eq!(activity["events"][0]["kind"], "login");
    });
}

#[tokio::test]
async fn sessions_expire_after_the_ttl_from_last_use() {
    let (s, _tmp) = start_configured("test_clock = true\n[identity]\nsession_ttl_secs = 3600\n");
    let u = signed_in(&s).await;
    // Each use moves the expiry: 40 minutes apart is fine although the TTL is an hour overall.
    for _ in 0..2 {
        s.advance_clock(2400).await;
        assert_eq!(get_as(&s, &u.token, "/v1/account").await.status(), 200);
    }
    s.advance_clock(3601).await;
    assert_eq!(error_code(get_as(&s, &u.token, "/v1/account").await, 401).await, "unauthorized");
    // An expired session leaves the device list.
    let again = login(&s, &u.identifier, PASSWORD).await;
    let list = body_of(get_as(&s, &again.token, "/v1/devices").await, 200).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn details_change_only_with_a_fresh_change_details_code() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let patch = |body: Value| s.client.patch(s.url("/v1/account")).bearer_auth(&u.token).json(&body).send();
    // No code, a wrong code, a code of another purpose: 403.
    assert_eq!(error_code(patch(json!({ "nickname": "Ada" })).await.unwrap(), 403).await, "bad_code");
    assert_eq!(error_code(patch(json!({ "nickname": "Ada", "code": "12345" })).await.unwrap(), 403).await, "bad_code");
    let reset = code_for(&s, &u.identifier, "reset_password").await;
    assert_eq!(error_code(patch(json!({ "nickname": "Ada", "code": reset })).await.unwrap(), 403).await, "bad_code");
    // Codes for the account need its session.
    let r = s.client.post(s.url("/v1/codes")).json(&json!({ "purpose": "change_details" })).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");

    let code = account_code(&s, &u, "change_details").await;
    // Fields out of format, or none at all, are 400 and leave the code usable.
    let r = patch(json!({ "code": code })).await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_field");
    for (field, bad) in [
        ("nickname", json!("x".repeat(65))),
        ("gender", json!("robot")),
        ("region", json!("XX")),
        ("region", json!("DEU")),
        ("locale", json!("en_US")),
        ("recovery_email", json!("not an email")),
        ("recovery_email", json!("+4915112345678")),
        ("recovery_phone", json!("0151 1234567")),
        ("nickname", json!(42)),
    ] {
        let mut body = json!({ "code": code });
        body[field] = bad;
        let r = patch(body).await.unwrap();
        assert_eq!(r.status(), 400, "{field}");
    }
    let r = patch(json!({ "code": code, "favourite_colour": "blue" })).await.unwrap();
    assert_eq!(r.status(), 400);
    let changes = json!({
        "code": code, "nickname": "Ada L.", "gender": "female", "region": "gb", "locale": "en-gb",
        "recovery_email": "Backup@Example.org", "recovery_phone": "+447700900123",
    });
    let me = body_of(patch(changes).await.unwrap(), 200).await;
    assert_eq!(me["nickname"], "Ada L.");
    assert_eq!(me["gender"], "female");
    assert_eq!(me["region"], "GB");
    assert_eq!(me["locale"], "en-GB");
    assert_eq!(me["recovery_email"], "Backup@Example.org");
    assert_eq!(me["recovery_phone"], "+447700900123");
    assert_eq!(body_of(get_as(&s, &u.token, "/v1/account").await, 200).await, me);
    // The code was spent.
    assert_eq!(error_code(patch(json!({ "code": code, "nickname": "Eve" })).await.unwrap(), 403).await, "bad_code");
    // null clears a field.
    let code = account_code(&s, &u, "change_details").await;
    let me = body_of(patch(json!({ "code": code, "recovery_phone": null, "gender": null })).await.unwrap(), 200).await;
    assert!(me["recovery_phone"].is_null() && me["gender"].is_null());
    assert_eq!(me["nickname"], "Ada L.");

    let activity = body_of(get_as(&s, &u.token, "/v1/account/activity").await, 200).await;
    let ev = &activity["events"][0];
    assert_eq!(ev["kind"], "details_changed");
    assert_eq!(ev["device"]["device_id"], u.device_id.as_str());
}

#[tokio::test]
async fn password_change_needs_current_password_and_code_and_ends_other_sessions() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let other = login(&s, &u.identifier, PASSWORD).await;
    let change = |body: Value| s.client.post(s.url("/v1/account/password")).bearer_auth(&u.token).json(&body).send();
    let code = account_code(&s, &u, "change_details").await;
    let r = change(json!({ "current_password": "wrong password", "new_password": "brand new secret", "code": code }))
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "wrong_password");
    let r = change(json!({ "current_password": PASSWORD, "new_password": "brand new secret", "code": "000000x" }))
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "bad_code");
    let r = change(json!({ "current_password": PASSWORD, "new_password": "short", "code": code })).await.unwrap();
    assert_eq!(error_code(r, 400).await, "weak_password");
    let r = change(json!({ "current_password": PASSWORD, "new_password": "brand new secret", "code": code }))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // This session stays, every other one ends.
    assert_eq!(get_as(&s, &u.token, "/v1/account").await.status(), 200);
    assert_eq!(get_as(&s, &other.token, "/v1/account").await.status(), 401);
    assert_eq!(login_as(&s, &u.identifier, PASSWORD, "x").await.status(), 401);
    login(&s, &u.identifier, "brand new secret").await;
    let activity = body_of(get_as(&s, &u.token, "/v1/account/activity").await, 200).await;
    let kinds: Vec<&str> = activity["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"password_changed"), "{kinds:?}");
}

#[tokio::test]
async fn password_reset_by_code_ends_every_session() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let other = login(&s, &u.identifier, PASSWORD).await;
    let reset = |code: &str, pw: &str| {
        s.client
            .post(s.url("/v1/password-reset"))
            .json(&json!({ "identifier": u.identifier, "code": code, "new_password": pw }))
            .send()
    };
    assert_eq!(error_code(reset("123", "a new password").await.unwrap(), 403).await, "bad_code");
    let code = code_for(&s, &u.identifier, "reset_password").await;
    assert_eq!(error_code(reset(&code, "short").await.unwrap(), 400).await, "weak_password");
    assert_eq!(reset(&code, "a new password").await.unwrap().status(), 204);
    assert_eq!(get_as(&s, &u.token, "/v1/account").await.status(), 401);
    assert_eq!(get_as(&s, &other.token, "/v1/account").await.status(), 401);
    assert_eq!(error_code(reset(&code, "yet another one").await.unwrap(), 403).await, "bad_code");
    let again = login(&s, &u.identifier, "a new password").await;
    let activity = body_of(get_as(&s, &again.token, "/v1/account/activity").await, 200).await;
    assert_eq!(activity["events"][1]["kind"], "password_reset");
    // Sends answer the same for an identifier without an account.
    let ghost = new_email();
    assert_eq!(body_of(send_code(&s, &ghost, "reset_password").await, 202).await, json!({ "expires_in": 600 }));
}

#[tokio::test]
async fn deleting_the_account_frees_the_identifier() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let other = login(&s, &u.identifier, PASSWORD).await;
    let del = |body: Value| s.client.delete(s.url("/v1/account")).bearer_auth(&u.token).json(&body).send();
    let code = account_code(&s, &u, "delete_account").await;
    assert_eq!(error_code(del(json!({ "code": code })).await.unwrap(), 400).await, "confirmation_required");
    assert_eq!(
        error_code(del(json!({ "code": code, "confirm": "delete" })).await.unwrap(), 400).await,
        "confirmation_required"
    );
    let change = account_code(&s, &u, "change_details").await;
    assert_eq!(error_code(del(json!({ "code": change, "confirm": "DELETE" })).await.unwrap(), 403).await, "bad_code");
    let r = del(json!({ "code": code, "confirm": "DELETE" })).await.unwrap();
    assert_eq!(body_of(r, 202).await["account_id"], u.account_id.as_str());
    for token in [&u.token, &other.token] {
        assert_eq!(get_as(&s, token, "/v1/account").await.status(), 401);
    }
    assert_eq!(login_as(&s, &u.identifier, PASSWORD, "x").await.status(), 401);
    // The identifier registers again, as a new account with nothing of the old one.
    let again = signed_up(&s, &u.identifier).await;
    assert_ne!(again.account_id, u.account_id);
    let activity = body_of(get_as(&s, &again.token, "/v1/account/activity").await, 200).await;
    let kinds: Vec<&str> = activity["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["login", "account_created"]);
    let devices = body_of(get_as(&s, &again.token, "/v1/devices").await, 200).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn one_accounts_token_never_reaches_another_account() {
    let s = Server::start();
    let a = signed_in(&s).await;
    let b = signed_in(&s).await;
    // B cannot sign out A's device: it does not exist for B.
    let r = s.client.delete(s.url(&format!("/v1/devices/{}", a.device_id))).bearer_auth(&b.token).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    assert_eq!(get_as(&s, &a.token, "/v1/account").await.status(), 200);
    // Each sees only its own account, devices and activity.
    let me = body_of(get_as(&s, &b.token, "/v1/account").await, 200).await;
    assert_eq!(me["account_id"], b.account_id.as_str());
    let devices = body_of(get_as(&s, &b.token, "/v1/devices").await, 200).await;
    assert!(devices["devices"].as_array().unwrap().iter().all(|d| d["device_id"] != a.device_id.as_str()));
    let activity = body_of(get_as(&s, &b.token, "/v1/account/activity").await, 200).await;
    assert!(activity["events"].as_array().unwrap().iter().all(|e| e["device"]["device_id"] != a.device_id.as_str()));
    // B's codes go to B: a change code sent by B is no use to A.
    let code = account_code(&s, &b, "change_details").await;
    let r = s
        .client
        .patch(s.url("/v1/account"))
        .bearer_auth(&a.token)
        .json(&json!({ "code": code, "nickname": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "bad_code");
    // A user's token is no admin token.
    let r = s.client.get(s.url("/admin/stats")).bearer_auth(&a.token).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let r = s.client.get(s.url("/admin/no-such-route")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

/// Every byte of the database files after a full flow: no identifier, password, token or code
/// in the clear.
#[test]
fn the_database_holds_no_plaintext_identifier_password_token_or_code() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut s = Server::start();
    let email = format!("Secret.{}", new_email());
    let phone = "+4917612345678";
    let recovery = "recovery.secret@example.net";
    let passwords = ["first secret pass", "second secret pass", "third secret pass"];
    let mut tokens = Vec::new();
    rt.block_on(async {
        let u = signed_up(&s, &email).await;
        tokens.push(u.token.clone());
        let p = signed_up(&s, phone).await;
        tokens.push(p.token.clone());
        let code = account_code(&s, &u, "change_details").await;
        let body = json!({ "code": code, "recovery_email": recovery, "recovery_phone": "+4917699999999" });
        assert_eq!(
            s.client.patch(s.url("/v1/account")).bearer_auth(&u.token).json(&body).send().await.unwrap().status(),
            200
        );
        change_password(&s, &u, passwords[0]).await;
        let code = code_for(&s, &email, "reset_password").await;
        let body = json!({ "identifier": email, "code": code, "new_password": passwords[1] });
        assert_eq!(s.client.post(s.url("/v1/password-reset")).json(&body).send().await.unwrap().status(), 204);
        let again = login(&s, &email, passwords[1]).await;
        tokens.push(again.token.clone());
        // A code that is still live when the database is read.
        send_code(&s, phone, "reset_password").await;
        change_password(&s, &p, passwords[2]).await;
    });
    s.stop();
    let codes: Vec<String> = outbox(&s.dir).iter().map(|m| m["code"].as_str().unwrap().to_string()).collect();
    assert!(codes.len() >= 6);

    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for text in [
        email.clone(),
        email.to_lowercase(),
        phone.into(),
        phone[1..].into(),
        recovery.into(),
        "+4917699999999".into(),
        PASSWORD.into(),
    ]
    .into_iter()
    .chain(passwords.iter().map(|p| p.to_string()))
    .chain(tokens.iter().cloned())
    {
        needles.push((text.clone(), text.into_bytes()));
    }
    for t in &tokens {
        needles.push((format!("raw token {t}"), hex::decode(t).unwrap()));
    }
    let mut files = 0;
    for entry in std::fs::read_dir(s.dir.join("db")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what:?} found in {}",
                path.display()
            );
        }
        // RocksDB's own text log and options are full of numbers and hold no records.
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("LOG") || name.starts_with("OPTIONS") {
            continue;
        }
        for code in &codes {
            assert!(!bytes.windows(6).any(|w| w == code.as_bytes()), "code {code} found in {}", path.display());
        }
    }
    assert!(files >= 3, "expected database files in {}", s.dir.join("db").display());
}

/// Codes nobody used and sessions nobody presents again do not stay in the database.
#[test]
fn expired_codes_and_sessions_are_swept() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut s, _tmp) = start_configured(
        "test_clock = true\n[identity]\ncode_ttl_secs = 600\nsession_ttl_secs = 3600\nsweep_interval_secs = 1\n",
    );
    rt.block_on(async {
        let u = signed_in(&s).await;
        for _ in 0..3 {
            assert_eq!(send_code(&s, &new_email(), "register").await.status(), 202);
        }
        s.advance_clock(3601).await;
        // A session in use stays.
        login(&s, &u.identifier, PASSWORD).await;
        // Three codes (and the sign-up's own, already spent) and the first session expire.
        s.wait_for_metric("cairn_swept_total{what=\"codes\"}", |n| n >= 3.0).await;
        s.wait_for_metric("cairn_swept_total{what=\"sessions\"}", |n| n >= 1.0).await;
    });
    s.stop();
    let db = cairn::store::Db::open(&s.dir.join("db")).unwrap();
    let count = |cf: &str| db.raw().iterator_cf(db.cf(cf), rocksdb::IteratorMode::Start).count();
    assert_eq!(count(cairn::store::CF_CODES), 0, "expired codes are gone");
    // One device record and one session record: the live sign-in.
    assert_eq!(count(cairn::store::CF_SESSIONS), 2, "only the live session is left");
}

/// Whatever arrives, identity answers with a 4xx JSON error, never a 5xx.
#[tokio::test]
async fn junk_requests_get_4xx_never_5xx() {
    let (s, _tmp) = start_configured(
        "[identity]\nfailed_logins_per_identifier = 1000\nfailed_logins_per_ip = 1000\ncode_sends_per_ip = 1000\n",
    );
    let u = signed_in(&s).await;
    let routes = [
        ("POST", "/v1/codes"),
        ("POST", "/v1/accounts"),
        ("POST", "/v1/sessions"),
        ("DELETE", "/v1/sessions/current"),
        ("GET", "/v1/account"),
        ("PATCH", "/v1/account"),
        ("DELETE", "/v1/account"),
        ("POST", "/v1/account/password"),
        ("POST", "/v1/password-reset"),
        ("GET", "/v1/account/activity"),
        ("GET", "/v1/devices"),
        ("DELETE", "/v1/devices/%00%ff"),
        ("DELETE", "/v1/devices/x"),
    ];
    let bodies = [
        "",
        "null",
        "[]",
        "{}",
        "\"text\"",
        "{\"identifier\": 5, \"purpose\": []}",
        "{\"identifier\": \"+4915112345678\", \"purpose\": \"change_details\"}",
        "{\"identifier\": \"\\u0000@x.de\", \"password\": \"\\ud800\", \"code\": 123456}",
        "{\"identifier\": \"a@b.cd\", \"password\": \"pppppppp\", \"device\": {\"name\": 7}}",
        "{\"code\": \"999999\", \"nickname\": {\"a\": 1}, \"confirm\": true}",
        "{\"current_password\": null, \"new_password\": \"x\", \"code\": \"1\"}",
        "\u{feff}{}",
        "{\"identifier\": \"a@b.cd\",",
    ];
    for (method, path) in routes {
        for body in bodies {
            for token in [None, Some(u.token.as_str()), Some("garbage")] {
                let mut req = s.client.request(method.parse().unwrap(), s.url(path)).body(body);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                assert!((400..500).contains(&status) || status < 300, "{method} {path} {body:?} {token:?}: {status}");
                if status >= 400 {
                    error_code(r, status).await;
                }
            }
        }
    }
    // The junk logged the user out once (a DELETE of the current session is valid without a
    // body); nothing else changed, and the server is still up.
    let again = login(&s, &u.identifier, PASSWORD).await;
    assert_eq!(get_as(&s, &again.token, "/v1/account").await.status(), 200);
}

/// Change `u`'s password from `PASSWORD` to `new`, with a fresh code, asserting the `204`.
async fn change_password(s: &Server, u: &User, new: &str) {
    let code = account_code(s, u, "change_details").await;
    let body = json!({ "current_password": PASSWORD, "new_password": new, "code": code });
    let r = s.client.post(s.url("/v1/account/password")).bearer_auth(&u.token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

/// App passwords (issue 14): made, listed and revoked by their owner; shown among the devices;
/// never a bearer token; gone with every session on a password reset.
#[tokio::test]
async fn app_passwords_are_devices_that_only_their_owner_manages_and_a_reset_ends() {
    let s = Server::start();
    let (u, other) = (signed_in(&s).await, signed_in(&s).await);
    let create =
        |u: &User, body: Value| s.client.post(s.url("/v1/app-passwords")).bearer_auth(&u.token).json(&body).send();
    let made = body_of(create(&u, json!({ "name": "rclone" })).await.unwrap(), 201).await;
    let (id, secret) = (made["id"].as_str().unwrap(), made["password"].as_str().unwrap());
    assert_eq!(secret.len(), 64);
    for bad in [json!({ "name": "" }), json!({ "name": "x".repeat(65) }), json!({ "name": "a\u{7}b" })] {
        assert_eq!(error_code(create(&u, bad).await.unwrap(), 400).await, "bad_field");
    }
    assert_eq!(error_code(create(&u, json!({ "nom": "x" })).await.unwrap(), 400).await, "bad_json");

    let listed = body_of(get_as(&s, &u.token, "/v1/app-passwords").await, 200).await;
    assert_eq!(listed["app_passwords"][0]["name"], "rclone");
    assert!(listed["app_passwords"][0].get("password").is_none(), "the secret is shown once");
    let devices = body_of(get_as(&s, &u.token, "/v1/devices").await, 200).await;
    let dev = devices["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == id).unwrap().clone();
    assert_eq!((dev["name"].as_str(), dev["app_password"].as_bool()), (Some("rclone"), Some(true)));
    let activity = body_of(get_as(&s, &u.token, "/v1/account/activity").await, 200).await;
    assert_eq!(activity["events"][0]["kind"], "app_password_created");

    // Not a bearer token; not another account's to list or revoke.
    assert_eq!(error_code(get_as(&s, secret, "/v1/account").await, 401).await, "unauthorized");
    assert!(body_of(get_as(&s, &other.token, "/v1/app-passwords").await, 200).await["app_passwords"]
        .as_array()
        .unwrap()
        .is_empty());
    let revoke =
        |u: &User, id: &str| s.client.delete(s.url(&format!("/v1/app-passwords/{id}"))).bearer_auth(&u.token).send();
    assert_eq!(revoke(&other, id).await.unwrap().status(), 404);
    // A signed-in device is not an app password to revoke here.
    assert_eq!(revoke(&u, &u.device_id).await.unwrap().status(), 404);

    // A second one, then a password reset ends both.
    body_of(create(&u, json!({ "name": "file manager" })).await.unwrap(), 201).await;
    let code = code_for(&s, &u.identifier, "reset_password").await;
    let body = json!({ "identifier": u.identifier, "code": code, "new_password": "a new password" });
    assert_eq!(s.client.post(s.url("/v1/password-reset")).json(&body).send().await.unwrap().status(), 204);
    let again = login(&s, &u.identifier, "a new password").await;
    let listed = body_of(get_as(&s, &again.token, "/v1/app-passwords").await, 200).await;
    assert!(listed["app_passwords"].as_array().unwrap().is_empty(), "{listed}");
    assert_eq!(revoke(&again, id).await.unwrap().status(), 404);
}
