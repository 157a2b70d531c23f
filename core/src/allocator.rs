//! How the binaries tune mimalloc, their global allocator (one place, so the benchmarks run
//! with the settings `sessiontrail` runs with).

/// `mi_option_purge_delay` (mimalloc v3 header: option 15 of `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp` (option 43 of `mi_option_e`).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Call first thing in `main`, before any other thread starts.
///
/// - Freed memory goes back to the OS at once instead of after mimalloc's default 10 ms delay:
///   events are freed on another thread than the one that parsed them, and with the delay the
///   peak RSS of `stdin -> file` was ~90 MiB instead of ~55 MiB, for no measurable speed gain.
/// - No transparent huge pages. With them, a partly used 2 MiB page counts whole in RSS and
///   is not given back by the purges above: with 1,000,000 open sessions in correlate, peak RSS
///   was 249-254 MiB with THP, 193 MiB without (and up to ~520 MiB on a run where the kernel had
///   many free huge pages), at no cost in speed.
///
/// mimalloc's own variables (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ALLOW_THP`), when set, win.
pub fn tune_mimalloc() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide integer option; called before other threads start.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // mimalloc stops asking for huge pages (`madvise`); the kernel setting `always` would
        // still give them, hence the process-wide opt-out as well.
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        #[cfg(target_os = "linux")]
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
