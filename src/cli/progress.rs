//! Progress rendering: an indicatif bar on a terminal, periodic log events otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gsdr::job::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// The progress reporter for this terminal.
pub fn for_terminal(quiet: bool) -> Box<dyn Progress> {
    if !quiet && std::io::stderr().is_terminal() {
        Box::new(Bar(Mutex::new(None)))
    } else {
        Box::new(Log {
            what: Mutex::new(String::new()),
            bytes: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        })
    }
}

struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, what: &str, total: Option<u64>) {
        let pb = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template"),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}")
                    .expect("valid template"),
            ),
        };
        pb.set_message(what.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        *self.0.lock().unwrap() = Some(pb);
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = &*self.0.lock().unwrap() {
            pb.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(pb) = self.0.lock().unwrap().take() {
            pb.finish_and_clear();
        }
    }
}

struct Log {
    what: Mutex<String>,
    bytes: AtomicU64,
    last: Mutex<Instant>,
}

impl Progress for Log {
    fn start(&self, what: &str, _total: Option<u64>) {
        *self.what.lock().unwrap() = what.to_string();
        self.bytes.store(0, Ordering::Relaxed);
        *self.last.lock().unwrap() = Instant::now();
    }
    fn advance(&self, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut last = self.last.lock().unwrap();
        if last.elapsed() >= Duration::from_secs(10) {
            *last = Instant::now();
            tracing::info!(event = "progress", what = %self.what.lock().unwrap(), bytes = total);
        }
    }
    fn finish(&self) {}
}
