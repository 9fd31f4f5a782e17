//! Free space on the packs' file system, kept above a reserve for uploads.
//!
//! A disk that fills up to the last byte takes the database with it: RocksDB stops every
//! write (deletes and GC's included) after a failed flush until it is restarted. So uploads are
//! refused while the file system has less than `reserve` free, which leaves room for the
//! database, for deletes and for compaction to give space back. Compaction's own appends are
//! not checked: they are how the space comes back.
//!
//! `statvfs` costs about a microsecond; it is asked again after every `RECHECK_BYTES` of
//! appends, and at every append while space is low (so that space given back is seen at once).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

const RECHECK_BYTES: u64 = 8 << 20;

pub(crate) struct Space {
    dir: CString,
    reserve: u64,
    /// std Mutex: two integers, taken under the uploads' lane lock, never across I/O but the
    /// `statvfs` itself.
    state: Mutex<State>,
}

struct State {
    /// Bytes appended since the last look.
    since: u64,
    low: bool,
}

/// The file system has less than the reserve free.
#[derive(Debug, thiserror::Error)]
#[error("the data directory's file system has under {reserve} bytes free")]
pub struct Low {
    pub reserve: u64,
}

impl Space {
    pub fn new(dir: &Path, reserve: u64) -> Self {
        let dir = CString::new(dir.as_os_str().as_bytes()).unwrap_or_default();
        Space { dir, reserve, state: Mutex::new(State { since: u64::MAX, low: false }) }
    }

    /// Whether `len` more bytes may be appended.
    pub fn admit(&self, len: u64) -> Result<(), Low> {
        if self.reserve == 0 {
            return Ok(());
        }
        let mut s = self.state.lock().expect("space poisoned");
        s.since = s.since.saturating_add(len);
        if s.low || s.since >= RECHECK_BYTES {
            s.since = 0;
            // An unanswerable statvfs is not a full disk: the write itself will tell.
            s.low = free_bytes(&self.dir).is_ok_and(|free| free < self.reserve.saturating_add(len));
        }
        if s.low {
            return Err(Low { reserve: self.reserve });
        }
        Ok(())
    }
}

fn free_bytes(dir: &CString) -> io::Result<u64> {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a local struct for the kernel to fill.
    if unsafe { libc::statvfs(dir.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_none_admits() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Space::new(dir.path(), u64::MAX / 2).admit(1).is_err());
        assert!(Space::new(dir.path(), 0).admit(1 << 40).is_ok());
        let modest = Space::new(dir.path(), 1);
        for _ in 0..4 {
            assert!(modest.admit(4 << 20).is_ok());
        }
    }
}
