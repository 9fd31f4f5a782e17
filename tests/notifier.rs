//! Codes delivered through real gateways on loopback: an SMTP sink (Python's aiosmtpd,
//! installed by tools/setup) and an SMS webhook served by the test itself.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use common::identity::*;
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `python3 -m aiosmtpd` writing every mail it receives into a maildir.
struct SmtpSink {
    child: Child,
    port: u16,
}

impl SmtpSink {
    fn start(maildir: &Path) -> SmtpSink {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (tools/setup installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP sink did not start (is aiosmtpd installed? run tools/setup)");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpSink { child, port }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first mail to arrive in the maildir, as text.
async fn wait_for_mail(maildir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(entries) = std::fs::read_dir(maildir.join("new")) {
            if let Some(e) = entries.flatten().next() {
                return std::fs::read_to_string(e.path()).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no mail arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code_in(text: &str) -> String {
    let at = text.find("code is ").unwrap_or_else(|| panic!("no code in {text}")) + "code is ".len();
    let code = &text[at..at + 6];
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{text}");
    code.to_string()
}

#[tokio::test]
async fn sign_up_with_the_code_from_a_real_mail() {
    let mail = tempfile::tempdir().unwrap();
    let maildir = mail.path().join("maildir");
    let sink = SmtpSink::start(&maildir);
    let (s, _tmp) = start_configured(&format!(
        "[notifier.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Cairn <no-reply@cairn.test>\"\n",
        sink.port
    ));
    let email = new_email();
    assert_eq!(send_code(&s, &email, "register").await.status(), 202);
    let text = wait_for_mail(&maildir).await;
    assert!(text.contains(&format!("To: {email}")), "{text}");
    assert!(text.contains("From: Cairn <no-reply@cairn.test>"), "{text}");
    assert!(text.contains("Subject: Your cairn sign-up code"), "{text}");
    let code = code_in(&text);
    let body = json!({ "identifier": email, "password": PASSWORD, "code": code });
    let r = s.client.post(s.url("/v1/accounts")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    login(&s, &email, PASSWORD).await;
    // Mail went to the gateway, not to the outbox.
    assert!(outbox(&s.dir).is_empty());
}

/// What the webhook received: its `Authorization` header and its JSON body.
type Received = (Option<String>, Value);

#[tokio::test]
async fn phone_codes_go_to_the_sms_webhook() {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = got.clone();
    let app = Router::new().route(
        "/sms",
        post(move |headers: HeaderMap, Json(v): Json<Value>| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").map(|h| h.to_str().unwrap().to_string());
                seen.lock().unwrap().push((auth, v));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (s, _tmp) = start_configured(&format!(
        "[notifier.webhook]\nurl = \"http://{addr}/sms\"\nbearer_token = \"sms-gateway-secret\"\n"
    ));
    let phone = "+4915123456789";
    assert_eq!(send_code(&s, phone, "register").await.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (auth, msg) = loop {
        if let Some(m) = got.lock().unwrap().first().cloned() {
            break m;
        }
        assert!(Instant::now() < deadline, "the webhook was not called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(auth.as_deref(), Some("Bearer sms-gateway-secret"));
    assert_eq!(msg["to"], phone);
    assert_eq!(msg["purpose"], "register");
    let code = msg["code"].as_str().unwrap();
    assert!(msg["text"].as_str().unwrap().contains(code));
    let u = signed_up_with(&s, phone, code).await;
    assert_eq!(u.status(), 201);
    // Email has no gateway here: it still goes to the outbox.
    let email = new_email();
    code_for(&s, &email, "register").await;
    assert_eq!(got.lock().unwrap().len(), 1);
}

async fn signed_up_with(s: &common::Server, identifier: &str, code: &str) -> reqwest::Response {
    let body = json!({ "identifier": identifier, "password": PASSWORD, "code": code });
    s.client.post(s.url("/v1/accounts")).json(&body).send().await.unwrap()
}
