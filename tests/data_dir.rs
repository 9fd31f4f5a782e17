//! The data directory is readable by the server's user only, whatever the umask it was started
//! with: packs, the database, the identity key and the outbox hold every account's data.

mod common;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::identity::*;
use common::*;

/// Every entry under `dir` (itself included) whose mode gives group or others any access.
fn loose_entries(dir: &Path) -> Vec<String> {
    let mut loose = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.permissions().mode() & 0o077 != 0 {
            loose.push(format!("{} {:o}", p.display(), meta.permissions().mode() & 0o7777));
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    loose
}

#[tokio::test]
async fn everything_under_the_data_dir_is_private_under_a_permissive_umask() {
    // The child inherits this: what it creates would be world-readable if it trusted the umask.
    unsafe {
        libc::umask(0);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A directory made by an earlier version, open to all, with a file in it.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("left-over"), b"x").unwrap();
    std::fs::set_permissions(dir.join("left-over"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut s = Server::start_in(&dir, &[]);
    let u = signed_in(&s).await;
    let body = noise(3 << 20, 7);
    let r = s.client.put(s.url("/v1/files/a/b.bin")).bearer_auth(&u.token).body(body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    s.stop();

    assert!(dir.join("packs").read_dir().unwrap().count() > 0, "a pack was written");
    assert!(dir.join("db").is_dir() && dir.join("outbox.jsonl").is_file());
    assert_eq!(loose_entries(&dir), Vec::<String>::new());
}
