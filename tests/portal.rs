//! The web portal (issue 20) against the real `cairn serve`: its headers, cookie and CSRF rule
//! over plain HTTP (reqwest), and the whole walk-through in a real browser (headless Chromium
//! driven by selenium from `tests/clients/portal_browser.py`; tools/setup installs both).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::identity::{self, PASSWORD};
use common::Server;
use serde_json::{json, Value};

/// Where the browser's screenshots go: a folder of the target directory, kept after the run.
fn screenshots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portal-screenshots")
}

/// Sign a browser in through the portal; its cookie (`name=value`) and the whole `Set-Cookie`.
async fn portal_sign_in(s: &Server, email: &str) -> (String, String) {
    let r = s
        .client
        .post(s.url("/portal/session"))
        .header("x-cairn-csrf", "anonymous")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0")
        .json(&json!({ "identifier": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    (set.split(';').next().unwrap().to_string(), set)
}

/// The CSRF token a page shows the holder of `cookie`.
async fn page_csrf(s: &Server, cookie: &str) -> String {
    let html =
        s.client.get(s.url("/portal/account")).header("cookie", cookie).send().await.unwrap().text().await.unwrap();
    let at = html.find("name=\"csrf-token\" content=\"").expect("the csrf meta") + 27;
    html[at..at + 32].to_string()
}

#[tokio::test]
async fn the_cookie_is_a_strict_httponly_session_shown_as_a_web_browser() {
    let s = Server::start();
    let email = identity::new_email();
    let phone = identity::signed_up(&s, &email).await;
    let (cookie, set) = portal_sign_in(&s, &email).await;
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    assert!(!set.contains("Secure"), "plain loopback HTTP: {set}");
    let devices = identity::get_as(&s, &phone.token, "/v1/devices").await.json::<Value>().await.unwrap();
    let web: Vec<&Value> =
        devices["devices"].as_array().unwrap().iter().filter(|d| d["name"] == "web browser").collect();
    assert_eq!(web.len(), 1, "{devices}");
    assert_eq!((web[0]["os"].as_str(), web[0]["model"].as_str()), (Some("Linux"), Some("Chrome")));

    // Pages carry the strict policy; without the cookie they send the browser to sign in.
    let r = s.client.get(s.url("/portal/files")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    for part in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain.get(s.url("/portal/files")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/portal/signin"));

    // Signing the browser's device out anywhere ends the cookie's session too.
    let web_id = web[0]["device_id"].as_str().unwrap();
    let r = s.client.delete(s.url(&format!("/v1/devices/{web_id}"))).bearer_auth(&phone.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = plain.get(s.url("/portal/account")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"), "a dead cookie is cleared");
}

#[tokio::test]
async fn state_changes_need_the_pages_csrf_token_and_the_same_origin() {
    let s = Server::start();
    let email = identity::new_email();
    let phone = identity::signed_up(&s, &email).await;
    let (cookie, _) = portal_sign_in(&s, &email).await;
    let csrf = page_csrf(&s, &cookie).await;
    let put = |headers: Vec<(&'static str, String)>| {
        let mut r = s.client.put(s.url("/portal/api/v1/files/a.txt")).header("cookie", &cookie).body("hello");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let origin = s.base.clone();
    for refused in [
        vec![],
        vec![("x-cairn-csrf", "anonymous".to_string())],
        vec![("x-cairn-csrf", "0".repeat(32))],
        vec![("x-cairn-csrf", csrf.clone()), ("origin", "http://127.0.0.1:1".to_string())],
        vec![("x-cairn-csrf", csrf.clone()), ("sec-fetch-site", "same-site".to_string())],
    ] {
        assert_eq!(common::error_code(put(refused).await.unwrap(), 403).await, "csrf_rejected");
    }
    let files = identity::get_as(&s, &phone.token, "/v1/files").await.json::<Value>().await.unwrap();
    assert_eq!(files["files"], json!([]), "nothing was written");
    let ok = put(vec![("x-cairn-csrf", csrf.clone()), ("origin", origin), ("sec-fetch-site", "same-origin".into())]);
    assert_eq!(ok.await.unwrap().status(), 201);

    // The bridge is /v1 itself: its rules and errors, with the cookie's account.
    let r = s.client.get(s.url("/portal/api/v1/files/a.txt")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-disposition"], "attachment; filename*=UTF-8''a.txt");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));
    assert_eq!(r.text().await.unwrap(), "hello");
    let r = s
        .client
        .put(s.url("/portal/api/v1/files/a.txt"))
        .header("cookie", &cookie)
        .header("x-cairn-csrf", &csrf)
        .header("if-none-match", "*")
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let q: Value = s
        .client
        .get(s.url("/portal/api/v1/quota"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["services"]["drive"], 5);
    // Only the browser's parts of /v1 pass; a bearer header sent to the bridge is not used.
    for path in ["/portal/api/v1/chunks/missing", "/portal/api/v1/sessions", "/portal/api/v1/uploads"] {
        let r = s.client.post(s.url(path)).header("cookie", &cookie).header("x-cairn-csrf", &csrf).body("{}");
        assert_eq!(r.send().await.unwrap().status(), 404, "{path}");
    }
    let r = s.client.get(s.url("/portal/api/v1/account")).bearer_auth(&phone.token).send().await.unwrap();
    assert_eq!(r.status(), 401, "the bridge speaks cookie only");

    // Signing out through the portal ends that session and clears the cookie.
    let r = s.client.post(s.url("/portal/session/end")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(common::error_code(r, 403).await, "csrf_rejected");
    let r = s
        .client
        .post(s.url("/portal/session/end"))
        .header("cookie", &cookie)
        .header("x-cairn-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let r = s.client.get(s.url("/portal/api/v1/account")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn user_supplied_names_are_escaped_in_every_page() {
    let s = Server::start();
    let email = identity::new_email();
    let phone = identity::signed_up(&s, &email).await;
    let (cookie, _) = portal_sign_in(&s, &email).await;
    let evil = "<img src=x onerror=alert(1)>";
    let put =
        s.client.put(s.url("/v1/files/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")).bearer_auth(&phone.token).body("x");
    assert_eq!(put.send().await.unwrap().status(), 201);
    for (collection, payload) in [
        ("contacts", json!({"fn": evil, "emails": [evil], "tels": [evil]})),
        ("calendar", json!({"summary": evil, "start": evil})),
        ("notes", json!({"title": evil, "text": evil})),
    ] {
        let r = s.client.put(s.url(&format!("/v1/sync/{collection}/x1"))).bearer_auth(&phone.token);
        assert_eq!(r.json(&json!({ "payload": payload })).send().await.unwrap().status(), 200);
    }
    for page in [
        "/portal/files",
        "/portal/contacts",
        "/portal/calendar",
        "/portal/notes",
        "/portal/notes/x1",
        "/portal/storage",
    ] {
        let html = s.client.get(s.url(page)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
        assert!(!html.contains("<img"), "{page} has raw markup: {html}");
        if page != "/portal/storage" {
            assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{page} lacks the escaped name");
        }
    }
}

/// The whole walk-through in Chromium: sign-up with the outbox's code, a detail changed with a
/// code, uploads and the storage bar, contacts from the sync API, a note's conflict, signing
/// out another device, a cross-origin form refused, deleting the account; screenshots of the
/// main pages at desktop and phone widths land in the target directory.
#[test]
fn a_person_walks_through_the_portal_in_a_real_browser() {
    // A small plan, so that the walk-through's upload moves the storage bar visibly.
    let s = Server::start_with(&["--plan", "small=64MiB"]);
    let shots = screenshots_dir();
    let _ = std::fs::remove_dir_all(&shots);
    let status = Command::new("python3")
        .arg("tests/clients/portal_browser.py")
        .arg(&s.base)
        .arg(&s.dir)
        .arg(&shots)
        .arg(common::ADMIN_TOKEN)
        .status()
        .expect("python3 (tools/setup installs it with selenium, chromium and chromium-driver)");
    assert!(status.success(), "the browser walk-through failed; see its output and {}", shots.display());
    for page in [
        "signin",
        "signup",
        "account",
        "contacts",
        "calendar",
        "files",
        "storage",
        "note-conflict",
        "security",
        "delete",
    ] {
        for width in ["desktop", "phone"] {
            let f = shots.join(format!("{page}-{width}.png"));
            let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "no screenshot {}", f.display());
        }
    }
}

#[tokio::test]
async fn a_backups_files_are_listed_and_downloaded_from_the_portal() {
    let s = Server::start();
    let email = identity::new_email();
    let phone = identity::signed_up(&s, &email).await;
    let (cookie, _) = portal_sign_in(&s, &email).await;
    let bytes = b"a photo, more or less".to_vec();
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let r = s.client.put(s.url(&format!("/v1/chunks/{hash}"))).bearer_auth(&phone.token).body(bytes.clone());
    assert_eq!(r.send().await.unwrap().status(), 201);
    let manifest = json!({"device_id": "pixel <8>", "label": "nightly", "entries": [{
        "path": "/sdcard/DCIM/a b.jpg", "size": bytes.len(), "mode": 0o644, "mtime": "2026-12-01T10:00:00Z",
        "chunks": [{"hash": hash, "size": bytes.len()}]}]});
    let r = s.client.post(s.url("/v1/backups")).bearer_auth(&phone.token).json(&manifest).send().await.unwrap();
    let id = common::body_of(r, 201).await["backup_id"].as_str().unwrap().to_string();

    let list =
        s.client.get(s.url("/portal/backups")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(
        list.contains("pixel &lt;8&gt;") && list.contains("nightly") && list.contains(&format!("/portal/backups/{id}"))
    );
    let one = s.client.get(s.url(&format!("/portal/backups/{id}"))).header("cookie", &cookie).send().await.unwrap();
    let html = one.text().await.unwrap();
    let link = format!("/portal/api/v1/backups/{id}/files/%2Fsdcard%2FDCIM%2Fa%20b.jpg");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    let r = s.client.get(s.url(&link)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-disposition"], "attachment; filename*=UTF-8''a%20b.jpg");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
    // Another account's backup is not found, from the page or the bridge.
    let other = identity::new_email();
    identity::signed_up(&s, &other).await;
    let (stranger, _) = portal_sign_in(&s, &other).await;
    let r = s.client.get(s.url(&format!("/portal/backups/{id}"))).header("cookie", &stranger).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s.client.get(s.url(&link)).header("cookie", &stranger).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn behind_a_proxy_the_cookie_is_secure_over_https_and_refused_over_http() {
    let (s, _cfg) = identity::start_configured("[proxy]\ntrusted = [\"127.0.0.1\", \"::1\"]\n");
    let email = identity::new_email();
    identity::signed_up(&s, &email).await;
    let sign_in = |proto: &'static str| {
        s.client
            .post(s.url("/portal/session"))
            .header("x-cairn-csrf", "anonymous")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", proto)
            .json(&json!({ "identifier": email, "password": PASSWORD }))
            .send()
    };
    let r = sign_in("https").await.unwrap();
    assert_eq!(r.status(), 201);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.ends_with("; Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert_eq!(common::error_code(sign_in("http").await.unwrap(), 403).await, "tls_required");
    // The cookie a browser holds is not read from a request the proxy says was plain HTTP.
    let page = |proto: &'static str| {
        let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        plain
            .get(s.url("/portal/account"))
            .header("cookie", cookie.clone())
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", proto)
            .send()
    };
    assert_eq!(page("https").await.unwrap().status(), 200);
    assert_eq!(page("http").await.unwrap().status(), 303);
}
