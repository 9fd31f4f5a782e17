//! Running it for real (issue 21): TLS with certificate reloads, HTTP/2 over ALPN and h2c with
//! the same timeouts as HTTP/1.1, trusted proxies naming the client, and metadata snapshots
//! restored into a new data directory. Against the real `cairn serve`; certificates are made
//! here with rcgen, none is committed.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::identity::{login, login_as, new_email, signed_in, signed_up, start_configured, PASSWORD};
use common::{body_of, error_code, noise, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

struct TestCert {
    cert_pem: String,
    key_pem: String,
}

/// A self-signed certificate for 127.0.0.1 and localhost, expiring at `not_after` (unix secs).
fn make_cert(year: i32) -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// Unix seconds of January 1st of `year`, 00:00 UTC.
fn jan1(year: i32) -> f64 {
    let d = time::Date::from_calendar_date(year, time::Month::January, 1).unwrap();
    d.midnight().assume_utc().unix_timestamp() as f64
}

fn write_pair(dir: &Path, c: &TestCert) {
    // Key first, then the certificate: a reload between the two sees a mismatch and keeps the
    // old pair, which is what a real renewal can do too.
    std::fs::write(dir.join("key.pem"), &c.key_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &c.cert_pem).unwrap();
}

/// A client that trusts only `roots`; a new connection for every request when `fresh`.
fn tls_client(roots: &[&TestCert], fresh: bool) -> reqwest::Client {
    let mut b =
        reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).timeout(Duration::from_secs(30));
    for r in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(r.cert_pem.as_bytes()).unwrap());
    }
    if fresh {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

fn tls_config(dir: &Path, reload_check_secs: u64, extra: &str) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_check_secs = {reload_check_secs}\n{extra}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

fn sighup(s: &Server) {
    unsafe {
        libc::kill(s.child.id() as i32, libc::SIGHUP);
    }
}

#[tokio::test]
async fn tls_speaks_http2_and_http1_and_takes_new_certificates_without_a_restart() {
    let certs = tempfile::tempdir().unwrap();
    let a = make_cert(2031);
    write_pair(certs.path(), &a);
    // Checks of the files are rare here: the first rotation is SIGHUP's.
    let (s, _tmp) = start_configured(&tls_config(certs.path(), 3600, ""));
    let https = s.tls_base.clone().expect("a TLS listener");
    let url = format!("{https}/healthz");

    let r = tls_client(&[&a], false).get(&url).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2), "ALPN chose HTTP/2");
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(a.cert_pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));
    assert_eq!(s.metric("cairn_tls_certificate_expiry_timestamp_seconds").await, jan1(2031));
    // Plain HTTP stays.
    assert_eq!(s.client.get(s.url("/healthz")).send().await.unwrap().status(), 200);

    // Rotation while a client keeps connecting (a new connection, so a new handshake, each
    // time): not one request fails.
    let b = make_cert(2032);
    let both = tls_client(&[&a, &b], true);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let pounder = {
        let (stop, served, url) = (stop.clone(), served.clone(), url.clone());
        tokio::spawn(async move {
            for _ in 0..20_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let r = both.get(&url).send().await.expect("a handshake during the rotation failed");
                assert_eq!(r.status(), 200);
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    write_pair(certs.path(), &b);
    sighup(&s);
    s.wait_for_metric("cairn_tls_reloads_total{result=\"ok\"}", |n| n >= 1.0).await;
    // Some handshakes after the swap too (bounded: the pounder stops itself on a failure).
    let before = served.load(Ordering::Relaxed);
    while served.load(Ordering::Relaxed) < before + 20 && !pounder.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Release);
    pounder.await.unwrap();
    assert_eq!(tls_client(&[&b], true).get(&url).send().await.unwrap().status(), 200);
    assert!(tls_client(&[&a], true).get(&url).send().await.is_err(), "the old certificate is gone");
    assert_eq!(s.metric("cairn_tls_certificate_expiry_timestamp_seconds").await, jan1(2032));

    // A bad pair (the key of another certificate) is refused and the one in use stays.
    let c = make_cert(2033);
    std::fs::write(certs.path().join("cert.pem"), &c.cert_pem).unwrap();
    sighup(&s);
    s.wait_for_metric("cairn_tls_reloads_total{result=\"failed\"}", |n| n >= 1.0).await;
    assert_eq!(tls_client(&[&b], true).get(&url).send().await.unwrap().status(), 200);
    assert_eq!(s.metric("cairn_tls_certificate_expiry_timestamp_seconds").await, jan1(2032));
}

#[tokio::test]
async fn a_changed_certificate_file_is_picked_up_by_itself() {
    let certs = tempfile::tempdir().unwrap();
    let a = make_cert(2031);
    write_pair(certs.path(), &a);
    let (s, _tmp) = start_configured(&tls_config(certs.path(), 1, ""));
    let url = format!("{}/healthz", s.tls_base.clone().unwrap());
    assert_eq!(tls_client(&[&a], true).get(&url).send().await.unwrap().status(), 200);
    let b = make_cert(2034);
    write_pair(certs.path(), &b);
    // No signal: the check of the files' metadata finds the change.
    s.wait_for_metric("cairn_tls_certificate_expiry_timestamp_seconds", |t| t == jan1(2034)).await;
    assert_eq!(tls_client(&[&b], true).get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn curl_speaks_http2_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let a = make_cert(2031);
    write_pair(certs.path(), &a);
    let (s, _tmp) = start_configured(&tls_config(certs.path(), 3600, ""));
    let url = format!("{}/healthz", s.tls_base.clone().unwrap());
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--http2", "--cacert"])
        .arg(certs.path().join("cert.pem"))
        .args(["--write-out", "\n%{http_version} %{http_code}", &url])
        .output()
        .expect("curl (tools/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().last(), Some("2 200"), "{text}");
}

/// A 16 MiB file, far past any HTTP/2 window, so that a client that does not read it makes the
/// server's body wait.
const BIG: usize = 16 << 20;

#[tokio::test]
async fn http2_streams_keep_the_timeouts_of_http1() {
    let (s, _tmp) = start_configured("[limits]\nbody_idle_secs = 1\nwrite_stall_secs = 1\n");
    let u = signed_in(&s).await;
    let h2c = reqwest::Client::builder().http2_prior_knowledge().timeout(Duration::from_secs(60)).build().unwrap();

    // h2c: HTTP/2 with prior knowledge on the plain listener.
    let r = h2c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2));

    // An upload stream that stops sending: 408 on that stream, as on HTTP/1.1.
    let first = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 1000]))]);
    let stalled = futures::StreamExt::chain(first, futures::stream::pending());
    let r = h2c
        .put(s.url("/v1/files/stalled"))
        .bearer_auth(&u.token)
        .header("content-length", "100000")
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 408).await, "request_timeout");

    // A download the client stops reading: its stream's window closes, our socket never
    // waits, and still the download's permit comes back.
    let data = noise(BIG, 21);
    let r = s.client.put(s.url("/v1/files/big")).bearer_auth(&u.token).body(data).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let held = h2c.get(s.url("/v1/files/big")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!((held.status().as_u16(), held.version()), (200, reqwest::Version::HTTP_2));
    s.wait_for_metric("cairn_transfers_in_progress{kind=\"download\"}", |n| n == 1.0).await;
    s.wait_for_metric("cairn_transfers_in_progress{kind=\"download\"}", |n| n == 0.0).await;
    assert!(held.bytes().await.is_err(), "the stalled stream's connection was closed");
    // The server is well and the file whole.
    let r = s.client.get(s.url("/v1/files/big")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), BIG);
}

/// The newest sign-in event's address, as the activity page shows it.
async fn last_login_ip(s: &Server, token: &str) -> String {
    let r = s.client.get(s.url("/v1/account/activity")).bearer_auth(token).send().await.unwrap();
    let v = body_of(r, 200).await;
    let events = v["events"].as_array().unwrap();
    let newest = events.iter().filter(|e| e["kind"] == "login").max_by_key(|e| e["at"].as_str().unwrap().to_string());
    newest.unwrap_or_else(|| panic!("no login in {v}"))["ip"].as_str().unwrap().to_string()
}

async fn login_via(
    client: &reqwest::Client,
    s: &Server,
    who: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client.post(s.url("/v1/sessions")).json(&json!({
        "identifier": who, "password": password, "device": { "name": "via proxy", "model": "x", "os": "y" }
    }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_a_spoofed_header_changes_nothing() {
    // The proxy is 127.0.0.2; the test's own client (127.0.0.1) is an untrusted peer.
    let (s, _tmp) = start_configured("[proxy]\ntrusted = [\"127.0.0.2\"]\n[identity]\nfailed_logins_per_ip = 3\n");
    let proxy = reqwest::Client::builder().local_address("127.0.0.2".parse::<IpAddr>().unwrap()).build().unwrap();
    let u = signed_in(&s).await;

    // Through the proxy: the right-most address it did not write itself.
    let r = login_via(&proxy, &s, &u.identifier, PASSWORD, &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]).await;
    let token = body_of(r, 201).await["token"].as_str().unwrap().to_string();
    assert_eq!(last_login_ip(&s, &token).await, "198.51.100.7");
    let r =
        login_via(&proxy, &s, &u.identifier, PASSWORD, &[("forwarded", "for=\"[2001:db8::7]:443\";proto=https")]).await;
    let token = body_of(r, 201).await["token"].as_str().unwrap().to_string();
    assert_eq!(last_login_ip(&s, &token).await, "2001:db8::7");

    // From an untrusted peer the headers are ignored.
    let spoofed = [("x-forwarded-for", "198.51.100.8"), ("forwarded", "for=198.51.100.8")];
    let r = login_via(&s.client, &s, &u.identifier, PASSWORD, &spoofed).await;
    let token = body_of(r, 201).await["token"].as_str().unwrap().to_string();
    assert_eq!(last_login_ip(&s, &token).await, "127.0.0.1");

    // Rate limits count the forwarded client: one client behind the proxy locks itself out,
    // not everyone behind it.
    let v = signed_up(&s, &new_email()).await;
    let attacker = [("x-forwarded-for", "198.51.100.20")];
    for _ in 0..3 {
        let r = login_via(&proxy, &s, &v.identifier, "wrong password!", &attacker).await;
        assert_eq!(r.status(), 401);
    }
    let r = login_via(&proxy, &s, &u.identifier, PASSWORD, &attacker).await;
    assert_eq!(error_code(r, 429).await, "rate_limited");
    let r = login_via(&proxy, &s, &u.identifier, PASSWORD, &[("x-forwarded-for", "198.51.100.21")]).await;
    assert_eq!(r.status(), 201, "another client behind the same proxy signs in");
    // A spoofed header cannot put the failures on someone else: they stay with the peer.
    let w = signed_up(&s, &new_email()).await;
    for _ in 0..3 {
        let r =
            login_via(&s.client, &s, &w.identifier, "wrong password!", &[("x-forwarded-for", "198.51.100.22")]).await;
        assert_eq!(r.status(), 401);
    }
    let r = login_via(&proxy, &s, &u.identifier, PASSWORD, &[("x-forwarded-for", "198.51.100.22")]).await;
    assert_eq!(r.status(), 201);
    let r = login_as(&s, &u.identifier, PASSWORD, "phone").await;
    assert_eq!(error_code(r, 429).await, "rate_limited", "the spoofer's own address took the failures");
}

fn cairn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CAIRN_LOG", "warn")
        .output()
        .expect("run cairn")
}

#[tokio::test]
async fn a_snapshot_taken_during_uploads_restores_every_acknowledged_file() {
    let mut s = Server::start();
    let u = signed_in(&s).await;
    let work = tempfile::tempdir().unwrap();
    let snap = work.path().join("snap");

    // Uploaders that keep going before, during and after the snapshot. A file counts if its
    // 201 arrived before the snapshot was asked for.
    let asked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, u64, usize)>>> = Arc::default();
    let mut uploaders = Vec::new();
    for w in 0..4u64 {
        let (client, base, token) = (s.client.clone(), s.base.clone(), u.token.clone());
        let (asked, stop, acked) = (asked.clone(), stop.clone(), acked.clone());
        uploaders.push(tokio::spawn(async move {
            for i in 0..300u64 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (path, seed, len) = (format!("w{w}/f{i}"), w * 1000 + i, 20_000 + (i as usize % 7) * 37_000);
                let r = client
                    .put(format!("{base}/v1/files/{path}"))
                    .bearer_auth(&token)
                    .body(noise(len, seed))
                    .send()
                    .await;
                let r = r.unwrap();
                assert_eq!(r.status(), 201);
                if !asked.load(Ordering::Acquire) {
                    acked.lock().unwrap().push((path, seed, len));
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    asked.store(true, Ordering::Release);
    let (base, to) = (s.base.clone(), snap.to_str().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || cairn(&["snapshot", "--server", &base, "--to", &to, "--json"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["master_key_included"], false);
    assert!(!snap.join("master.key").exists(), "the master key stays out of snapshots");
    assert!(snap.join("identity.key").exists() && snap.join("datakeys").exists());
    stop.store(true, Ordering::Release);
    for t in uploaders {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // The admin API refuses what it cannot do, clearly.
    let post = |to: &str| s.client.post(s.url("/admin/snapshot")).bearer_auth(ADMIN_TOKEN).json(&json!({ "to": to }));
    assert_eq!(error_code(post("relative/dir").send().await.unwrap(), 400).await, "bad_request");
    assert_eq!(error_code(post(snap.to_str().unwrap()).send().await.unwrap(), 409).await, "conflict");

    // The operator's copy of the packs, taken after the snapshot while the server runs.
    let packs = work.path().join("packs");
    std::fs::create_dir(&packs).unwrap();
    for e in std::fs::read_dir(s.dir.join("packs")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_str().unwrap().ends_with(".pack") {
            std::fs::copy(e.path(), packs.join(e.file_name())).unwrap();
        }
    }
    let master = s.dir.join("master.key");

    // Without a pack the snapshot names, restore refuses and says which.
    let some_pack = manifest["packs"][0]["file"].as_str().unwrap().to_string();
    let partial = work.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    for e in std::fs::read_dir(&packs).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_str() != Some(some_pack.as_str()) {
            std::fs::copy(e.path(), partial.join(e.file_name())).unwrap();
        }
    }
    let new_dir = work.path().join("restored");
    let args = |packs: &Path| {
        vec![
            "restore-snapshot".to_string(),
            "--snapshot".into(),
            snap.to_str().unwrap().into(),
            "--packs".into(),
            packs.to_str().unwrap().into(),
            "--data-dir".into(),
            new_dir.to_str().unwrap().into(),
            "--master-key-file".into(),
            master.to_str().unwrap().into(),
        ]
    };
    let a = args(&partial);
    let out = cairn(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&some_pack), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!new_dir.join("db").exists(), "nothing was written");

    let a = args(&packs);
    let out = cairn(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("fsck: ok"), "{text}");
    s.stop();

    // The restored server: the account signs in, every acknowledged file reads back.
    let r = Server::start_in(&new_dir, &[]);
    let again = login(&r, &u.identifier, PASSWORD).await;
    assert_eq!(again.account_id, u.account_id);
    assert!(acked.len() >= 40);
    for (path, seed, len) in &acked {
        let got = r.client.get(r.url(&format!("/v1/files/{path}"))).bearer_auth(&again.token).send().await.unwrap();
        assert_eq!(got.status(), 200, "{path}");
        assert!(got.bytes().await.unwrap() == noise(*len, *seed), "{path} differs");
    }
    r.fsck_ok().await;
}

/// nginx (Debian's, installed by tools/setup) as a reverse proxy on a loopback port, in front
/// of `upstream`; killed when dropped.
struct Nginx {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_in_front_of(upstream: &str) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    // A free port: bound, then released for nginx (the window is a few microseconds).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = dir.path().display();
    let upstream = upstream.trim_start_matches("http://");
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{}}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n \
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n \
         server {{\n  listen 127.0.0.1:{port};\n  client_max_body_size 0;\n  location / {{\n   \
         proxy_pass http://{upstream};\n   proxy_http_version 1.1;\n   proxy_request_buffering off;\n   \
         proxy_buffering off;\n   proxy_set_header Host $host;\n   \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n   \
         proxy_set_header X-Forwarded-Proto $scheme;\n  }}\n }}\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let bin = if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
    let child = Command::new(bin)
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("nginx (tools/setup installs it)");
    let log = dir.path().join("error.log");
    // Owned at once, so that a failure below still kills it.
    let nginx = Nginx { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
    // Ready when it accepts connections.
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return nginx;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nginx did not start: {}", std::fs::read_to_string(log).unwrap_or_default());
}

#[tokio::test]
async fn behind_nginx_the_client_is_the_one_nginx_saw_and_big_uploads_stream_through() {
    let (s, _tmp) = start_configured("[proxy]\ntrusted = [\"127.0.0.1\"]\n");
    let nginx = nginx_in_front_of(&s.base);
    // The client comes from 127.0.0.2; nginx reaches cairn from 127.0.0.1 (trusted).
    let client = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let u = signed_in(&s).await;
    let via = |path: &str| format!("{}{path}", nginx.base);
    let login = |headers: &'static [(&'static str, &'static str)]| {
        let mut req = client.post(via("/v1/sessions")).json(&json!({
            "identifier": u.identifier, "password": PASSWORD, "device": { "name": "n", "model": "m", "os": "o" }
        }));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let r = login(&[]).await.unwrap();
    let token = body_of(r, 201).await["token"].as_str().unwrap().to_string();
    assert_eq!(last_login_ip(&s, &token).await, "127.0.0.2");
    // A header the client forged is kept by nginx in front of what it saw, and ignored.
    let r = login(&[("x-forwarded-for", "6.6.6.6")]).await.unwrap();
    let token = body_of(r, 201).await["token"].as_str().unwrap().to_string();
    assert_eq!(last_login_ip(&s, &token).await, "127.0.0.2");

    // 64 MiB up and down through the proxy, streamed (no buffering in nginx).
    let data = noise(64 << 20, 64);
    let r = client.put(via("/v1/files/big.bin")).bearer_auth(&token).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = client.get(via("/v1/files/big.bin")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == data, "the file came back whole through nginx");
}

#[test]
fn a_data_directory_of_a_newer_format_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "999\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("CAIRN_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("newer cairn (data format 999)"), "{err}");
    assert!(!dir.path().join("db").exists(), "it stopped before opening the database");
}
