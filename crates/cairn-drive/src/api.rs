//! The HTTP contract of docs/API.md as the client speaks it: one method per call, answers as
//! typed values, refusals as typed [`ApiError`]s.
//!
//! Invariants: every request is retried only while retrying is safe (connection failures,
//! `429`, `502`–`504`: the server did nothing, or says to come back), with exponential backoff and
//! a bounded number of attempts; every other answer is final. Paths are percent-encoded per
//! segment, so a file name is never read as URL syntax.

use std::time::Duration;

use bytes::Bytes;
use cairn_chunking::{ChunkId, ChunkingParams};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Everything but RFC 3986's unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// At most this many hashes per `POST /v1/chunks/missing` (the server takes 10 000).
pub const MISSING_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the server no longer accepts this sign-in (expired, revoked or signed out): run `cairn-drive login` again"
    )]
    Unauthorized,
    #[error("over quota: {used} bytes used of the {limit} the plan allows")]
    Quota { used: u64, limit: u64 },
    #[error("the server's disk is full; try again later")]
    ServerFull,
    #[error("the remote file changed since it was last seen")]
    Precondition,
    #[error("not found")]
    NotFound,
    #[error("the server lacks {} chunks of this manifest", .0.len())]
    MissingChunks(Vec<String>),
    #[error("cannot reach {url} after {attempts} attempts ({cause}); check the network and run again: nothing the server already holds will be sent twice")]
    Network { url: String, attempts: u32, cause: String },
    #[error("the server answered {status} {code}: {message}")]
    Server { status: u16, code: String, message: String },
    #[error("the server chunks with {0}, which this client cannot reproduce; upgrade cairn-drive")]
    Chunking(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A write's condition on the remote file (RFC 9110 preconditions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The file must be at this version.
    IfMatch(String),
    /// The file must not exist.
    IfAbsent,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    pub hash: String,
    pub version: String,
    #[serde(default)]
    pub modified: String,
}

#[derive(Debug, Deserialize)]
pub struct Session {
    pub token: String,
    pub account_id: String,
    pub device_id: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Quota {
    pub plan: String,
    pub limit: u64,
    pub used: u64,
    pub available: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ChunkRef {
    pub hash: String,
    pub size: u64,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct BackupEntry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: String,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct BackupSummary {
    pub backup_id: String,
    pub device_id: String,
    #[serde(default)]
    pub label: String,
    pub created_at: String,
    pub size: u64,
    pub files: u64,
}

#[derive(Debug, Deserialize)]
pub struct BackupManifest {
    pub entries: Vec<BackupEntry>,
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retries: u32,
}

impl Api {
    /// `retries`: further attempts after a failed one (backoff 0.25 s doubling, at most 8 s).
    pub fn new(base: &str, token: Option<String>, retries: u32) -> Api {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("cairn-drive/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        Api { http, base: base.trim_end_matches('/').to_string(), token, retries }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends what `build` makes, again while the failure is one retrying can cure.
    async fn send(&self, build: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut req = build(&self.http);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let (retry_after, cause) = match req.send().await {
                Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                    let after = r
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)));
                    let status = r.status();
                    if attempt > self.retries {
                        return Err(refusal(r).await);
                    }
                    (after, format!("status {status}"))
                }
                Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_MODIFIED => return Ok(r),
                Ok(r) => return Err(refusal(r).await),
                Err(e) if e.is_builder() => {
                    return Err(ApiError::Server { status: 0, code: "bad_request".into(), message: e.to_string() })
                }
                Err(e) => (None, cause_of(&e)),
            };
            if attempt > self.retries {
                return Err(ApiError::Network { url: self.base.clone(), attempts: attempt, cause });
            }
            let backoff = Duration::from_millis(250u64 << (attempt - 1).min(5)).min(Duration::from_secs(8));
            tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
        }
    }

    async fn json<T: for<'de> Deserialize<'de>>(&self, r: Response) -> Result<T> {
        let url = r.url().to_string();
        r.json().await.map_err(|e| ApiError::Server {
            status: 200,
            code: "bad_answer".into(),
            message: format!("{url}: {e}"),
        })
    }

    /// `GET /v1/chunking`: the server's cutter, refused unless this client cuts the same way.
    pub async fn chunking(&self) -> Result<ChunkingParams> {
        let r = self.send(|c| c.get(self.url("/v1/chunking"))).await?;
        let v: Value = self.json(r).await?;
        check_chunking(&v)
    }

    pub async fn login(&self, identifier: &str, password: &str, device: &str) -> Result<Session> {
        let body = json!({
            "identifier": identifier,
            "password": password,
            "device": {"name": device, "model": "cairn-drive", "os": std::env::consts::OS},
        });
        let r = self.send(|c| c.post(self.url("/v1/sessions")).json(&body)).await?;
        self.json(r).await
    }

    pub async fn logout(&self) -> Result<()> {
        self.send(|c| c.delete(self.url("/v1/sessions/current"))).await.map(drop)
    }

    pub async fn quota(&self) -> Result<Quota> {
        let r = self.send(|c| c.get(self.url("/v1/quota"))).await?;
        self.json(r).await
    }

    /// Every file whose path starts with `prefix`, in path order (all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<RemoteFile>> {
        #[derive(Deserialize)]
        struct Page {
            files: Vec<RemoteFile>,
            next: Option<String>,
        }
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = vec![("prefix", prefix.to_string()), ("limit", "1000".to_string())];
            if let Some(a) = &after {
                q.push(("after", a.clone()));
            }
            let r = self.send(|c| c.get(self.url("/v1/files")).query(&q)).await?;
            let page: Page = self.json(r).await?;
            out.extend(page.files);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// The hashes of `ids` this account does not hold, asked in batches.
    pub async fn missing(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        #[derive(Deserialize)]
        struct Missing {
            missing: Vec<ChunkId>,
        }
        let mut out = Vec::new();
        for batch in ids.chunks(MISSING_BATCH) {
            let body = json!({ "chunks": batch });
            let r = self.send(|c| c.post(self.url("/v1/chunks/missing")).json(&body)).await?;
            let m: Missing = self.json(r).await?;
            out.extend(m.missing);
        }
        Ok(out)
    }

    pub async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<()> {
        let url = self.url(&format!("/v1/chunks/{id}"));
        self.send(|c| c.put(&url).body(data.clone())).await.map(drop)
    }

    /// Commits a file from chunks the account holds.
    pub async fn put_manifest(&self, path: &str, chunks: &[ChunkRef], pre: &Precondition) -> Result<RemoteFile> {
        let url = self.url(&format!("/v1/files/{}", encode_path(path)));
        let body = serde_json::to_vec(&json!({ "chunks": chunks })).expect("serializable");
        let r = self
            .send(|c| {
                let req =
                    c.put(&url).header(header::CONTENT_TYPE, "application/vnd.cairn.manifest+json").body(body.clone());
                with_precondition(req, pre)
            })
            .await?;
        self.json(r).await
    }

    /// The file's bytes as a stream, and its version.
    pub async fn get_file(&self, path: &str) -> Result<(Response, String)> {
        let url = self.url(&format!("/v1/files/{}", encode_path(path)));
        let r = self.send(|c| c.get(&url)).await?;
        let version = etag(&r);
        Ok((r, version))
    }

    pub async fn delete_file(&self, path: &str, pre: &Precondition) -> Result<()> {
        let url = self.url(&format!("/v1/files/{}", encode_path(path)));
        self.send(|c| with_precondition(c.request(Method::DELETE, &url), pre)).await.map(drop)
    }

    pub async fn create_backup(&self, device: &str, label: &str, entries: &[BackupEntry]) -> Result<BackupSummary> {
        let body = serde_json::to_vec(&json!({ "device_id": device, "label": label, "entries": entries }))
            .expect("serializable");
        let r = self
            .send(|c| {
                c.post(self.url("/v1/backups")).header(header::CONTENT_TYPE, "application/json").body(body.clone())
            })
            .await?;
        let mut v: Value = self.json(r).await?;
        v["device_id"] = json!(device);
        v["label"] = json!(label);
        serde_json::from_value(v).map_err(|e| ApiError::Server {
            status: 201,
            code: "bad_answer".into(),
            message: e.to_string(),
        })
    }

    pub async fn backups(&self, device: Option<&str>) -> Result<Vec<BackupSummary>> {
        #[derive(Deserialize)]
        struct List {
            backups: Vec<BackupSummary>,
        }
        let q: Vec<(&str, &str)> = device.map(|d| vec![("device_id", d)]).unwrap_or_default();
        let r = self.send(|c| c.get(self.url("/v1/backups")).query(&q)).await?;
        Ok(self.json::<List>(r).await?.backups)
    }

    pub async fn backup(&self, id: &str) -> Result<BackupManifest> {
        let url = self.url(&format!("/v1/backups/{}", encode_segment(id)));
        let r = self.send(|c| c.get(&url)).await?;
        self.json(r).await
    }

    /// A `GET` of any path of the API, as a stream (backup files).
    pub async fn get_path(&self, path: &str) -> Result<Response> {
        let url = self.url(path);
        self.send(|c| c.get(&url)).await
    }
}

fn with_precondition(req: RequestBuilder, pre: &Precondition) -> RequestBuilder {
    match pre {
        Precondition::None => req,
        Precondition::IfMatch(v) => req.header(header::IF_MATCH, format!("\"{v}\"")),
        Precondition::IfAbsent => req.header(header::IF_NONE_MATCH, "*"),
    }
}

/// The version in an `ETag: "N"` header.
fn etag(r: &Response) -> String {
    r.headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default()
}

pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

fn cause_of(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Turns a final error answer into its typed refusal.
async fn refusal(r: Response) -> ApiError {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let e = &v["error"];
    let code = e["code"].as_str().unwrap_or("").to_string();
    match (status.as_u16(), code.as_str()) {
        (401, _) => ApiError::Unauthorized,
        (404, _) => ApiError::NotFound,
        (412, _) => ApiError::Precondition,
        (507, "quota_exceeded") => {
            ApiError::Quota { used: e["used"].as_u64().unwrap_or(0), limit: e["limit"].as_u64().unwrap_or(0) }
        }
        (507, _) => ApiError::ServerFull,
        (409, "missing_chunks") => ApiError::MissingChunks(
            e["missing"]
                .as_array()
                .map(|a| a.iter().filter_map(|h| h.as_str().map(String::from)).collect())
                .unwrap_or_default(),
        ),
        _ => ApiError::Server {
            status: status.as_u16(),
            code,
            message: e["message"].as_str().unwrap_or("(no message)").to_string(),
        },
    }
}

/// The server's `GET /v1/chunking` answer, accepted only if this client's cutter cuts the same
/// chunks: the same algorithm, bounds the shared cutter takes.
pub fn check_chunking(v: &Value) -> Result<ChunkingParams> {
    let algorithm = v["algorithm"].as_str().unwrap_or("(none)");
    let field = |k: &str| v[k].as_u64().and_then(|n| u32::try_from(n).ok());
    let mismatch = || ApiError::Chunking(format!("{algorithm} {v}"));
    if algorithm != cairn_chunking::ALGORITHM {
        return Err(mismatch());
    }
    let (Some(min), Some(avg), Some(max)) = (field("min"), field("avg"), field("max")) else {
        return Err(mismatch());
    };
    let p = ChunkingParams { min, avg, max };
    p.validate().map_err(|_| mismatch())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_mismatch_is_refused() {
        assert!(
            check_chunking(&json!({"algorithm": "fastcdc-2020", "min": 16384, "avg": 65536, "max": 262144})).is_ok()
        );
        assert!(check_chunking(&json!({"algorithm": "rabin", "min": 16384, "avg": 65536, "max": 262144})).is_err());
        assert!(check_chunking(&json!({"algorithm": "fastcdc-2020", "min": 10, "avg": 5, "max": 1})).is_err());
        assert!(check_chunking(&json!({"algorithm": "fastcdc-2020"})).is_err());
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("a b/ü?#/c%"), "a%20b/%C3%BC%3F%23/c%25");
    }
}
