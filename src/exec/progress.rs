//! A progress line for long applies, on a terminal only: from one second in, `applying
//! 1234/3099 (create-veth)` on stderr, rewritten in place at most ten times a second and
//! wiped when the apply ends, so what is printed after it reads as if it never was.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Shows progress from now on (the CLI calls it when stderr is a terminal).
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Applies shorter than this show nothing.
const AFTER: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(100);

pub(crate) struct Progress {
    total: usize,
    started: Instant,
    shown: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        Self { total, started: Instant::now(), shown: None }
    }

    /// `done` steps are done; the next is of `kind`.
    pub(crate) fn step(&mut self, done: usize, kind: &str) {
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        if let Some(line) = self.line(done, kind, Instant::now()) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{line}");
            let _ = err.flush();
        }
    }

    /// What to draw now, if anything: nothing in the first second, then at most one line
    /// a tenth of a second.
    fn line(&mut self, done: usize, kind: &str, now: Instant) -> Option<String> {
        if now.duration_since(self.started) < AFTER
            || self.shown.is_some_and(|at| now.duration_since(at) < EVERY)
        {
            return None;
        }
        self.shown = Some(now);
        Some(format!("\r\x1b[Kapplying {done}/{} ({kind})", self.total))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_in_the_first_second_then_a_line_a_tenth_of_a_second() {
        let mut p = Progress::new(3099);
        let start = p.started;
        assert_eq!(p.line(10, "create-netns", start + Duration::from_millis(900)), None);
        let first = p.line(600, "create-veth", start + Duration::from_millis(1000));
        assert_eq!(first.as_deref(), Some("\r\x1b[Kapplying 600/3099 (create-veth)"));
        assert_eq!(p.line(700, "create-veth", start + Duration::from_millis(1050)), None);
        assert!(p.line(800, "add-address", start + Duration::from_millis(1100)).is_some());
        // Shown once: the line is wiped when the apply ends.
        assert!(p.shown.is_some());
    }
}
