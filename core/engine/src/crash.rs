//! Crash points: places inside multi-step operations (a rebuild's swap) where the tests kill
//! the process, to check that a restart finds a consistent target. Inert unless
//! `SINKD_CRASH_AT` names the point; only a test sets it.

/// Aborts the process (as `kill -9` would: no clean-up, no flush) when `SINKD_CRASH_AT`
/// equals `point`.
pub fn point(point: &str) {
    if std::env::var("SINKD_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("SINKD_CRASH_AT: crashing at {point}");
        std::process::abort();
    }
}
