//! How the binaries tune mimalloc, their global allocator (one place, so the benchmarks run
//! with the settings `sessiontrail` runs with).

/// `mi_option_purge_delay` (mimalloc v3 header: option 15 of `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// See [`tune_mimalloc`].
const PURGE_DELAY_MS: std::ffi::c_long = 250;
/// `mi_option_allow_thp` (option 43 of `mi_option_e`).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Call first thing in `main`, before any other thread starts.
///
/// - No transparent huge pages. With them, a partly used 2 MiB page counts whole in RSS and
///   is not given back by purges: with 1,000,000 open sessions in correlate, peak RSS was
///   249-254 MiB with THP, 193 MiB without, at no cost in speed.
/// - Freed memory goes back to the OS after 250 ms (mimalloc's default is 10 ms). Memory given
///   back is faulted in and zeroed again by the kernel when reused, and with a short delay that
///   zeroing was a fifth of the CPU of the ocsf transform. Measured on the 2-core machine, THP
///   off, against a delay of 0: `stdin -> ocsf -> file` 3.7-3.8 s -> 3.2-3.3 s (peak RSS 30 ->
///   35 MiB), `stdin -> correlate` with 1,000,000 opens 3.3-3.6 s -> 2.6-2.7 s (peak RSS
///   194-197 -> 213-214 MiB), `stdin -> file` unchanged in speed (RSS 20 -> 26-28 MiB with 1,000 ms). (With THP on, a
///   delay had cost ~35 MiB on `stdin -> file`, hence the 0 used before.)
///
/// mimalloc's own variables (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ALLOW_THP`), when set, win.
pub fn tune_mimalloc() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide integer option; called before other threads start.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
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
