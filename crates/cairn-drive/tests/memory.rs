//! The client's memory does not grow with the file: its peak resident size putting a 160 MiB
//! file is that of putting a 16 MiB one, give or take a few chunks.
//!
//! A test binary of its own: a child's peak RSS as the kernel reports it includes the parent's
//! pages at the moment of `exec`, so the parent must stay small (no other test's buffers).

mod common;

use std::io::Write;

use common::*;

/// Writes `n` bytes of noise in 1 MiB pieces, never holding the whole.
fn write_noise(path: &std::path::Path, n: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n / (1 << 20) {
        f.write_all(&noise(1 << 20, seed + i as u64)).unwrap();
    }
    f.flush().unwrap();
}

/// Runs `put` and returns the child's peak resident bytes.
fn put_peak(d: &Device, path: &std::path::Path) -> u64 {
    let mut child = d.command(&["--quiet", "put", path.to_str().unwrap()]).spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    // Already reaped by wait4: this only tells std so (it answers ECHILD).
    let _ = child.wait();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "put failed");
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn large_file_memory_stays_flat() {
    let s = Server::start(&[]);
    let (id, _) = s.register();
    let d = Device::login(&s, &id, "desk");
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small.bin"), dir.path().join("large.bin"));
    write_noise(&small, 16 << 20, 1);
    write_noise(&large, 160 << 20, 1000);
    let p_small = put_peak(&d, &small);
    let p_large = put_peak(&d, &large);
    eprintln!("peak RSS of cairn-drive put: {p_small} bytes for 16 MiB, {p_large} bytes for 160 MiB");
    assert!(
        p_large < p_small + (8 << 20),
        "peak {p_large} bytes for 160 MiB against {p_small} for 16 MiB: memory grows with the file"
    );
    assert!(p_large < 64 << 20, "peak {p_large} bytes");
    assert_eq!(d.ls(), vec![("large.bin".to_string(), 160 << 20), ("small.bin".to_string(), 16 << 20)]);
}
