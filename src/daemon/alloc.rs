//! The allocator setting of a long-running process.
//!
//! glibc gives each thread that meets contention its own malloc arena (up to
//! eight per core) and rarely returns an arena's freed pages. A daemon whose
//! captures, uploads and jobs hop between tokio's worker and blocking threads
//! touches many arenas, so its resident memory crept up by about 1.4 MiB/s
//! under `scripts/bench-rpo.sh` (28 → 114 MiB in a minute) although the
//! captures' buffers are bounded; with two arenas it stays near 50–70 MiB.
//! One-shot commands keep glibc's default: they exit before it matters and
//! a backup's threads gain from less lock contention.

/// Arenas a daemon uses unless `MALLOC_ARENA_MAX` says otherwise.
pub const DAEMON_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`DAEMON_ARENAS`]; call before the runtime's
/// threads start. The operator's `MALLOC_ARENA_MAX`, if set, wins. Returns
/// the cap set, or `None` where nothing was changed.
pub fn limit_arenas() -> Option<i32> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    set_arena_max(DAEMON_ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(n: i32) -> Option<i32> {
    // SAFETY: mallopt only changes a malloc tunable; it is called before
    // other threads exist, and glibc serialises it against allocations anyway.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) } == 1;
    ok.then_some(n)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) -> Option<i32> {
    // musl and the other platforms' allocators have no per-thread arenas to cap.
    None
}
