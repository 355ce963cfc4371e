//! Crash points: places inside multi-step operations (a rebuild's swap) where the tests kill
//! the process, to check that a restart finds a consistent target. Only debug builds (the
//! ones the tests run) have them: in a release build [`point`] is empty, so no stray
//! environment variable can abort a production daemon.

/// Aborts the process (as `kill -9` would: no clean-up, no flush) when `SINKD_CRASH_AT`
/// equals `point`, in a debug build; does nothing in a release build.
#[cfg(debug_assertions)]
pub fn point(point: &str) {
    if std::env::var("SINKD_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("SINKD_CRASH_AT: crashing at {point}");
        std::process::abort();
    }
}

/// See the debug build's `point`: release builds carry no crash points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_point: &str) {}
