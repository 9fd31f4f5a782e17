//! The data directory is private: readable by the server's user only, whatever the umask.
//!
//! It holds every account's file contents (packs), the password hashes and sessions (the
//! database) and the identity key. Invariant: after `make_private`, the directory and
//! everything under it is 0700 (directories) or at most 0600 (files), and whatever this process
//! creates later is too.
//!
//! RocksDB creates its files with mode 0644 less the umask and has no option to do otherwise,
//! so the process's umask is narrowed to 077; the packs and key files also ask for 0600
//! themselves. Entries already there (a data directory made by an earlier version, or by hand)
//! lose their group and other bits, once, at start.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Narrow the umask, create `dir` if needed, and take group and other access away from it and
/// everything under it.
pub fn make_private(dir: &Path) -> io::Result<()> {
    // SAFETY: umask only swaps the process's creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    fs::create_dir_all(dir)?;
    restrict_tree(dir)
}

fn restrict_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let private = if meta.is_dir() { 0o700 } else { mode & 0o700 };
    if mode & 0o7777 != private {
        fs::set_permissions(path, fs::Permissions::from_mode(private))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            restrict_tree(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn loose_entries_are_tightened_and_new_ones_are_born_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir_all(dir.join("packs")).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("packs"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(dir.join("packs/p"), b"x").unwrap();
        fs::set_permissions(dir.join("packs/p"), fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("packs")), 0o700);
        assert_eq!(mode(&dir.join("packs/p")), 0o600);
        fs::write(dir.join("new"), b"y").unwrap();
        assert_eq!(mode(&dir.join("new")) & 0o077, 0);
    }
}
