//! What the client tells people and scripts: a progress bar on a terminal, one line per action
//! with `-v`, nothing but errors with `--quiet`, one JSON object per line with `--json`.
//!
//! Results go to stdout, progress and warnings to stderr; a bar is drawn only when stderr is a
//! terminal, so output piped to a file is never full of redraws.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Verbose,
    Quiet,
    Json,
}

pub struct Reporter {
    mode: Mode,
    bar: Mutex<Option<ProgressBar>>,
    files_total: AtomicU64,
    files_done: AtomicU64,
}

impl Reporter {
    pub fn new(mode: Mode) -> Reporter {
        Reporter { mode, bar: Mutex::new(None), files_total: AtomicU64::new(0), files_done: AtomicU64::new(0) }
    }

    /// Starts a bar for `files` files of `bytes` bytes in all (a terminal in normal mode only).
    pub fn start(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.files_done.store(0, Ordering::Relaxed);
        if self.mode != Mode::Normal || !std::io::stderr().is_terminal() || files == 0 {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("files 0/{files}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap() = Some(bar);
    }

    pub fn bytes(&self, n: u64) {
        if let Some(b) = &*self.bar.lock().unwrap() {
            b.inc(n);
        }
    }

    pub fn file_done(&self) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &*self.bar.lock().unwrap() {
            b.set_message(format!("files {done}/{}", self.files_total.load(Ordering::Relaxed)));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }

    /// One action on one path (`upload`, `download`, `rename`, `conflict`...).
    pub fn action(&self, verb: &str, path: &str, detail: &str) {
        match self.mode {
            Mode::Verbose => println!("{verb:<9} {path}{}{detail}", if detail.is_empty() { "" } else { "  " }),
            Mode::Json => println!("{}", json!({"event": verb, "path": path, "detail": detail})),
            Mode::Normal | Mode::Quiet => {}
        }
    }

    pub fn warn(&self, msg: &str) {
        match self.mode {
            Mode::Json => eprintln!("{}", json!({"warning": msg})),
            Mode::Quiet => {}
            _ => self.above_bar(&format!("warning: {msg}")),
        }
    }

    fn above_bar(&self, line: &str) {
        match &*self.bar.lock().unwrap() {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// The command's outcome: `human` as text, `data` as the JSON document.
    pub fn result(&self, human: &str, data: Value) {
        self.finish();
        match self.mode {
            Mode::Json => println!("{data}"),
            Mode::Quiet => {}
            Mode::Normal | Mode::Verbose => {
                if !human.is_empty() {
                    println!("{human}")
                }
            }
        }
    }
}

/// Bytes for people: `1.5 MiB`.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
