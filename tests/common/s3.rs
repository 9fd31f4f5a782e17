//! A real S3-compatible server on loopback for the tests: moto's (`python3 -m moto.server`,
//! installed by tools/setup), on a free port, with a bucket made for the test.
//!
//! `TEST_PACK_STORAGE=s3` runs every `Server` of a test binary with its packs in moto (the
//! s3 pass of tools/test): one moto per test process, each server under its own prefix.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BUCKET: &str = "cairn-test";

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_moto(port: u16) -> Child {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Killed with the test process, however that ends.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("python3 -m moto.server (tools/setup installs moto[server])");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// One plain HTTP request to moto (it does not check signatures); the status code.
fn request(port: u16, method: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

impl Moto {
    /// A moto of the test's own, with `BUCKET` in it; stopped when dropped.
    pub fn start() -> Moto {
        let port = free_port();
        let moto = Moto { child: Some(spawn_moto(port)), port };
        moto.create_bucket(BUCKET);
        moto
    }

    /// A moto another process started (a crash test's child reaching its parent's).
    pub fn attach(port: u16) -> Moto {
        Moto { child: None, port }
    }

    pub fn create_bucket(&self, name: &str) {
        let status = request(self.port, "PUT", &format!("/{name}"));
        assert!(status == 200, "creating bucket {name}: {status}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Freeze the server (SIGSTOP): connections are accepted by the kernel and never answered,
    /// the worst kind of outage for a client, which only its timeouts end.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// The objects under `prefix`, by key, with their sizes (a plain ListObjectsV2).
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET /{BUCKET}?list-type=2&prefix={prefix} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let mut out = Vec::new();
        for part in answer.split("<Contents>").skip(1) {
            let field = |name: &str| {
                let start = part.find(&format!("<{name}>")).unwrap() + name.len() + 2;
                let end = part[start..].find('<').unwrap() + start;
                part[start..end].to_string()
            };
            out.push((field("Key"), field("Size").parse().unwrap()));
        }
        assert!(!answer.contains("<IsTruncated>true"), "more than one page of objects");
        out
    }

    /// How many multipart uploads under `prefix` are begun and neither completed nor aborted.
    pub fn multipart_uploads(&self, prefix: &str) -> usize {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET /{BUCKET}?uploads&prefix={prefix} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("ListMultipartUploadsResult"), "{answer}");
        answer.matches("<Upload>").count()
    }

    /// A signed client of the bucket (moto refuses anonymous reads of objects).
    fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap()
    }

    /// Replace an object's bytes (as a disk or a provider might damage them).
    pub async fn overwrite(&self, key: &str, body: Vec<u8>) {
        use object_store::ObjectStoreExt;
        self.client().put(&key.into(), body.into()).await.unwrap();
    }

    /// An object's bytes.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        self.client().get(&key.into()).await.unwrap().bytes().await.unwrap().to_vec()
    }

    /// The environment a `cairn` process needs to keep its packs under `prefix` here. Small
    /// packs sealed after a second idle, and no disk cache, so that tests' data really goes
    /// up and is read back down.
    pub fn server_env(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("CAIRN_STORAGE_BACKEND", "s3".to_string()),
            ("CAIRN_STORAGE_BUCKET", BUCKET.to_string()),
            ("CAIRN_STORAGE_PREFIX", prefix.to_string()),
            ("CAIRN_STORAGE_ENDPOINT", self.endpoint()),
            ("CAIRN_STORAGE_ALLOW_HTTP", "true".to_string()),
            ("CAIRN_STORAGE_DISK_CACHE_SIZE", "0".to_string()),
            ("CAIRN_STORAGE_TIMEOUT_SECS", "5".to_string()),
            ("CAIRN_STORAGE_RETRY_MAX_SECS", "1".to_string()),
            ("CAIRN_PACK_TARGET_SIZE", "1MiB".to_string()),
            ("CAIRN_PACK_IDLE_SEAL_SECS", "1".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.thaw();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The prefix of a data directory's packs: one per directory, the same across restarts.
pub fn prefix_for(dir: &Path) -> String {
    let h = blake3::hash(dir.as_os_str().as_encoded_bytes());
    format!("t-{}", &h.to_hex()[..16])
}

/// The test process's shared moto, when `TEST_PACK_STORAGE=s3` asks for one. Started from a
/// thread that never ends, since moto dies with the thread that started it.
pub fn shared() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    MOTO.get_or_init(|| {
        if std::env::var("TEST_PACK_STORAGE").as_deref() != Ok("s3") {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(Moto::start()).unwrap();
            loop {
                std::thread::park();
            }
        });
        Some(rx.recv().unwrap())
    })
    .as_ref()
}

/// The engine's `[storage]` for packs under `prefix` in this moto (the same settings as
/// `server_env`).
pub fn storage(moto: &Moto, prefix: &str) -> cairn::pack::StorageConfig {
    set_credentials();
    cairn::pack::StorageConfig {
        backend: cairn::pack::Backend::S3,
        bucket: Some(BUCKET.into()),
        prefix: prefix.into(),
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        allow_http: true,
        disk_cache_size: cairn::config::ByteSize(0),
        timeout_secs: 5,
        retry_max_secs: 1,
        ..Default::default()
    }
}

/// Engines opened by a test read credentials from the process's environment, as the server
/// does; moto takes any.
fn set_credentials() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    });
}

/// Put an engine opened by a test on the shared moto when the s3 pass asks for it.
pub fn configure(cfg: &mut cairn::engine::EngineConfig) {
    if let Some(moto) = shared() {
        cfg.storage = storage(moto, &prefix_for(&cfg.data_dir));
    }
}
