//! Keep freed memory for the next step. A training step frees and allocates
//! again the same large buffers (activations, saved state, gradients). glibc
//! returns blocks above its mmap threshold (128 KiB at first) and the top of
//! the heap to the kernel, so every step paid page faults and page zeroing
//! for memory it held a moment before (about 10% of a step in a profile).
//! Raising the mmap and trim thresholds lets `malloc` reuse those blocks.
//! Blocks above 32 MiB (glibc's largest threshold; the `small` dense twin's
//! FFN activations at batch 64 are 84 MB) were still mapped and unmapped on
//! every op, about 15 % of that forward in page faults: mmap is turned off
//! (`M_MMAP_MAX` 0), so they come from the heap and are reused as well.

/// Called once by the CPU tape; a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            unsafe extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            const M_MMAP_MAX: i32 = -4;
            // SAFETY: mallopt only adjusts allocator tunables; any value is accepted or rejected.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20); // glibc's largest allowed value
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_MMAP_MAX, 0);
            }
        });
    }
}
