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

/// The on-disk format this binary writes and reads: the layout of the data directory, the
/// database's records and the packs. Raised by a release whose data an older binary would
/// misread; the upgrade path is stop, replace the binary, start (docs/operations.md).
pub const DATA_FORMAT: u32 = 1;
/// The file under the data directory that holds the format number.
pub const FORMAT_FILE: &str = "FORMAT";

/// Refuse a data directory written by a newer binary, and stamp one that has no stamp yet (new,
/// or made before the stamp existed: format 1 by definition). An older binary started after an
/// upgrade must stop here, before it opens the database, rather than misread what it finds.
pub fn check_format(dir: &Path) -> io::Result<()> {
    let path = dir.join(FORMAT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let found: u32 = text.trim().parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a format number: {text:?}", path.display()))
            })?;
            if found > DATA_FORMAT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} was written by a newer cairn (data format {found}); this binary reads format {DATA_FORMAT} \
                         at most. Run the newer binary again, or restore a snapshot taken before the upgrade",
                        dir.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
            let mut f = fs::File::create(&tmp)?;
            io::Write::write_all(&mut f, format!("{DATA_FORMAT}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()
        }
        Err(e) => Err(e),
    }
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
    fn a_newer_format_is_refused_and_a_missing_stamp_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        check_format(tmp.path()).unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join(FORMAT_FILE)).unwrap().trim(), DATA_FORMAT.to_string());
        check_format(tmp.path()).unwrap();
        fs::write(tmp.path().join(FORMAT_FILE), format!("{}\n", DATA_FORMAT + 1)).unwrap();
        let e = check_format(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("newer cairn"), "{e}");
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
