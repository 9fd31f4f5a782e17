//! Gauges read when `/metrics` is scraped, for the alerts an operator must act on: the data
//! directory's file system (free and total bytes: uploads stop at `min_free_bytes`) and when
//! the process started (so that "no GC for 13 hours" does not fire in a server's first hours).
//! Read at scrape time rather than kept up to date: a `statvfs` per scrape costs nothing and
//! is never stale.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

pub struct HostGauges {
    data_dir: PathBuf,
    free: IntGauge,
    size: IntGauge,
    started: IntGauge,
}

impl HostGauges {
    pub fn new(data_dir: &Path) -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let started = gauge("cairn_start_time_seconds", "When this server process started (unix seconds)");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        started.set(now as i64);
        HostGauges {
            data_dir: data_dir.to_path_buf(),
            free: gauge("cairn_data_free_bytes", "Bytes free to the server on the data directory's file system"),
            size: gauge("cairn_data_size_bytes", "Size of the data directory's file system in bytes"),
            started,
        }
    }

    /// Add the gauges to `registry`.
    pub fn register(data_dir: &Path, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(HostGauges::new(data_dir)))
    }
}

/// Free (to an unprivileged user) and total bytes of the file system holding `path`.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a local struct for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

impl Collector for HostGauges {
    fn desc(&self) -> Vec<&Desc> {
        [&self.free, &self.size, &self.started].into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some((free, size)) = disk_space(&self.data_dir) {
            self.free.set(free as i64);
            self.size.set(size as i64);
        }
        [&self.free, &self.size, &self.started].into_iter().flat_map(|g| g.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauges_describe_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let registry = prometheus::Registry::new();
        HostGauges::register(dir.path(), &registry).unwrap();
        let families = registry.gather();
        let value = |name: &str| {
            families.iter().find(|f| f.name() == name).map(|f| f.get_metric()[0].get_gauge().get_value()).unwrap()
        };
        assert!(value("cairn_data_size_bytes") > 0.0);
        assert!(value("cairn_data_free_bytes") <= value("cairn_data_size_bytes"));
        assert!(value("cairn_start_time_seconds") > 1.7e9);
    }
}
