//! The simulator reports broken kernels (cuda/sim/errors/errors.cu) as errors,
//! never hangs: barrier divergence, deadlock, masks naming absent lanes, traps,
//! unknown kernels, params of the wrong size.

mod kernel_util;
use kernel_util::{Io, launch};
use traffic_moe::backend::gpu::params::RmsNormFwdParams;
use traffic_moe::backend::gpu::{Executor, Launch};

fn expect_err(kernel: &'static str, block: u32, needle: &str) {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[0.0], &[0], 64, 1);
    let err = launch(&ex, kernel, 2, block, 0, io.params(0, 0))
        .expect_err(kernel)
        .to_string();
    assert!(
        err.contains(needle),
        "{kernel}: error {err:?} lacks {needle:?}"
    );
    assert!(
        err.contains(kernel),
        "{kernel}: error {err:?} does not name the kernel"
    );
}

#[test]
fn divergent_barrier_is_reported() {
    expect_err("simt_err_divergent_barrier", 32, "barrier divergence");
}

#[test]
fn deadlock_is_reported() {
    expect_err("simt_err_deadlock", 32, "deadlock");
}

#[test]
fn full_mask_in_partial_warp_is_reported() {
    expect_err("simt_err_partial_warp", 48, "do not exist");
}

#[test]
fn trap_is_reported() {
    expect_err("simt_err_trap", 32, "__trap");
}

#[test]
fn unknown_kernel_and_wrong_params_are_reported() {
    let ex = Executor::sim();
    let p = RmsNormFwdParams::default();
    let e = ex
        .launch(&Launch::linear("no_such_kernel", 1, 32, p))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown kernel no_such_kernel"), "{e}");
    let e = ex
        .launch(&Launch::linear("simt_barrier", 1, 32, p))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("params struct is SimTestParams"),
        "the launcher names the struct the kernel takes: {e}"
    );
    let io = Io::new(&ex, &[0.0], &[0], 1, 1);
    let e = ex
        .launch(&Launch::linear("simt_barrier", 1, 2048, io.params(0, 0)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid launch"), "{e}");
}

#[test]
fn simulator_keeps_working_after_errors() {
    // A failed block abandons its fibers; the next launch must start clean.
    expect_err("simt_err_deadlock", 32, "deadlock");
    let ex = Executor::sim();
    let io = Io::new(
        &ex,
        &(0..64).map(|i| i as f32).collect::<Vec<_>>(),
        &[0],
        64,
        1,
    );
    launch(&ex, "simt_dyn_smem", 1, 64, 256, io.params(0, 0)).unwrap();
    assert_eq!(ex.download(&io.out_f).unwrap()[0], 63.0);
}

/// A missing barrier (thread t reads the slot thread t+1 writes) reads stale
/// shared memory under one of the two thread schedules, so the tests' habit of
/// running both (`testing::executors`) catches it; with the barrier, both agree
/// with the intended result.
#[test]
fn missing_barrier_shows_under_one_schedule() {
    let n = 64usize;
    let want: Vec<f32> = (0..n).map(|t| ((t + 1) % n + 1) as f32).collect();
    // A stale read sees the simulator's poison (NaN), never what a previous,
    // correct launch left in the array.
    let run = |ex: &Executor, mode: i32| -> Vec<f32> {
        let io = Io::new(ex, &[0.0], &[0], n, 1);
        let p = io.params(0, mode);
        launch(ex, "simt_err_missing_barrier", 1, n as u32, 0, p).unwrap();
        ex.download(&io.out_f).unwrap()
    };
    let (fwd, rev) = (Executor::sim(), Executor::sim_reversed());
    assert_eq!(run(&fwd, 1), want);
    assert_eq!(run(&rev, 1), want);
    let (racy_fwd, racy_rev) = (run(&fwd, 0), run(&rev, 0));
    assert!(
        racy_fwd != want || racy_rev != want,
        "the race went unnoticed in both schedules"
    );
    assert_ne!(racy_fwd, racy_rev, "the two schedules should disagree");
}

/// Dynamic shared memory starts poisoned (NaN) in every block, so a kernel
/// that reads what it never wrote fails its comparison instead of seeing the
/// previous block's values.
#[test]
fn unwritten_dynamic_shared_memory_reads_as_nan() {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[0.0], &[0], 32, 1);
    launch(&ex, "simt_err_uninit_smem", 1, 32, 32 * 4, io.params(0, 0)).unwrap();
    assert!(ex.download(&io.out_f).unwrap().iter().all(|v| v.is_nan()));
}

/// Static shared arrays (TMOE_SHARED) also start poisoned in every block, in
/// both thread schedules: a read before any write is NaN as a float and
/// 0xFFFFFFFF as an index, never zero, and never what an earlier block or
/// launch of the same kernel wrote (each block writes after reading).
#[test]
fn unwritten_static_shared_memory_reads_as_poison() {
    let (grid, block) = (6usize, 64usize);
    for ex in [Executor::sim(), Executor::sim_reversed()] {
        for _launch in 0..2 {
            let io = Io::new(&ex, &[0.0], &[0], grid * block, grid * block);
            let p = io.params(0, 0);
            launch(
                &ex,
                "simt_err_uninit_static_smem",
                grid as u32,
                block as u32,
                0,
                p,
            )
            .unwrap();
            let f = ex.download(&io.out_f).unwrap();
            let u = ex.download(&io.out_u).unwrap();
            // 0xFF bytes (NaN) in index order, 0x7F bytes (3.4e38) reversed.
            let word = smem_poison(&ex);
            assert!(f.iter().all(|v| v.to_bits() == word), "float reads: {f:?}");
            assert!(u.iter().all(|&v| v == word), "index reads: {u:?}");
        }
    }
}

/// A 32-bit word of unwritten shared memory: 0xFF bytes (NaN as f32) in the
/// index-order schedule, 0x7F bytes (3.4e38) in the reversed one.
fn smem_poison(ex: &Executor) -> u32 {
    if ex.name() == "sim-reversed" {
        0x7F7F_7F7F
    } else {
        u32::MAX
    }
}

/// cp.async needs 16-byte aligned addresses on a GPU (a misaligned-address
/// fault otherwise); the simulator refuses them the same way.
#[test]
fn misaligned_cp_async_is_reported() {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[1.0; 8], &[0], 1, 1);
    let err = launch(
        &ex,
        "simt_err_cp_async_misaligned",
        1,
        32,
        64,
        io.params(0, 0),
    )
    .expect_err("misaligned cp.async")
    .to_string();
    assert!(err.contains("16-byte aligned"), "{err}");
}

/// Four distinct floats per thread slot: what a landed copy must show.
fn slots(n: usize) -> Vec<f32> {
    (0..4 * n).map(|i| i as f32 + 1.0).collect()
}

/// cp.async is asynchronous in the simulator as on a GPU: a thread that reads
/// its destination before waiting sees the old bytes (the poison), in both
/// schedules; after cp_async_wait_all it sees the copy.
#[test]
fn cp_async_lands_only_when_waited_for() {
    let n = 64usize;
    let src = slots(n);
    for ex in [Executor::sim(), Executor::sim_reversed()] {
        let run = |mode: i32| -> Vec<f32> {
            let io = Io::new(&ex, &src, &[0], 4 * n, 1);
            let p = io.params(0, mode);
            launch(
                &ex,
                "simt_err_cp_async_read_early",
                1,
                n as u32,
                16 * n as u32,
                p,
            )
            .unwrap();
            ex.download(&io.out_f).unwrap()
        };
        let poison = f32::from_bits(smem_poison(&ex));
        assert!(
            run(0).iter().all(|v| v.to_bits() == poison.to_bits()),
            "read before the wait"
        );
        assert_eq!(run(1), src, "read after the wait");
    }
}

/// wait_group<1> with two groups in flight lands the older group only, as the
/// GEMM's double-buffered pipeline relies on.
#[test]
fn cp_async_wait_group_keeps_the_newest_groups_in_flight() {
    let n = 32usize;
    let src = slots(n);
    let ex = Executor::sim();
    let io = Io::new(&ex, &src, &[0], 2 * n, 1);
    let p = io.params(0, 0);
    launch(
        &ex,
        "simt_err_cp_async_groups",
        1,
        n as u32,
        32 * n as u32,
        p,
    )
    .unwrap();
    let out = ex.download(&io.out_f).unwrap();
    for t in 0..n {
        assert_eq!(out[2 * t], src[4 * t], "thread {t}: the older group landed");
        assert!(
            out[2 * t + 1].is_nan(),
            "thread {t}: the newer group is in flight"
        );
    }
}

/// A thread writing shared memory that another thread's cp.async is still
/// filling is a race on a GPU (the copy may land before or after the write);
/// the simulator reports it in either schedule. With the wait before the
/// barrier, the writes win and the launch succeeds.
#[test]
fn write_into_a_cp_async_in_flight_is_reported() {
    let n = 64usize;
    let src = slots(n);
    for ex in [Executor::sim(), Executor::sim_reversed()] {
        let io = Io::new(&ex, &src, &[0], 4 * n, 1);
        let err = launch(
            &ex,
            "simt_err_cp_async_race",
            1,
            n as u32,
            16 * n as u32,
            io.params(0, 0),
        )
        .expect_err("racing write")
        .to_string();
        assert!(
            err.contains("while a cp.async into it was in flight"),
            "{err}"
        );
        launch(
            &ex,
            "simt_err_cp_async_race",
            1,
            n as u32,
            16 * n as u32,
            io.params(0, 1),
        )
        .unwrap();
        assert!(ex.download(&io.out_f).unwrap().iter().all(|&v| v == 0.0));
    }
}

/// A block bigger than the kernel's `__launch_bounds__` is refused, as a GPU
/// refuses it; at the bound it runs.
#[test]
fn block_above_launch_bounds_is_reported() {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[0.0], &[0], 128, 1);
    launch(&ex, "simt_err_launch_bounds", 1, 64, 0, io.params(0, 0)).unwrap();
    let err = launch(&ex, "simt_err_launch_bounds", 1, 128, 0, io.params(0, 0))
        .expect_err("128 threads above __launch_bounds__(64)")
        .to_string();
    assert!(err.contains("above its __launch_bounds__(64)"), "{err}");
}

/// A warp that runs ahead of another by several warp-collective steps (a
/// GEMM's mma loop) and overwrites shared memory the other has yet to read: a
/// race on a GPU, where warps drift apart freely. The simulator runs each warp
/// as far as it can before the next (ascending or descending), so one of the
/// two schedules reads the overwritten value; with the barrier both are right.
#[test]
fn race_between_drifting_warps_shows_under_one_schedule() {
    let n = 64usize;
    let want: Vec<f32> = (0..n).map(|t| ((t + 32) % n + 1) as f32).collect();
    let run = |ex: &Executor, mode: i32| -> Vec<f32> {
        let io = Io::new(ex, &[0.0], &[0], n, 1);
        launch(
            ex,
            "simt_err_warp_skew_race",
            1,
            n as u32,
            0,
            io.params(0, mode),
        )
        .unwrap();
        ex.download(&io.out_f).unwrap()
    };
    let (fwd, rev) = (Executor::sim(), Executor::sim_reversed());
    assert_eq!(run(&fwd, 1), want);
    assert_eq!(run(&rev, 1), want);
    let (racy_fwd, racy_rev) = (run(&fwd, 0), run(&rev, 0));
    assert!(
        racy_fwd != want || racy_rev != want,
        "the race between warps went unnoticed in both schedules"
    );
}

/// Threads of one block waiting at different `__syncthreads()` calls are in
/// divergent code, not at one barrier.
#[test]
fn barrier_at_two_call_sites_is_reported() {
    expect_err("simt_err_barrier_sites", 64, "barrier divergence");
}

/// A shuffle whose source lane is outside its mask returns an undefined value
/// on a GPU; the simulator used to hand back the caller's own value.
#[test]
fn shuffle_from_a_lane_outside_the_mask_is_reported() {
    expect_err("simt_err_shfl_outside_mask", 32, "leaves out");
}

/// ldmatrix and cp.async take shared-memory addresses where PTX says
/// `.shared` (and cp.async a global source); a block's static and dynamic
/// shared memory together stay within 227 KiB.
#[test]
fn shared_memory_operands_outside_shared_memory_are_reported() {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[1.0; 4 * 32], &[0], 4 * 32, 1);
    for (mode, smem, needle) in [
        (0, 0, "ldmatrix row address"),
        (1, 0, "cp.async destination"),
        (2, 1024, "cp.async source"),
        (3, 200 * 1024, "exceed the 227 KiB"),
    ] {
        let err = launch(&ex, "simt_err_not_shared", 1, 32, smem, io.params(0, mode))
            .expect_err("a non-shared operand")
            .to_string();
        assert!(
            err.contains(needle),
            "mode {mode}: {err:?} lacks {needle:?}"
        );
    }
    // Within bounds, the static array works.
    launch(&ex, "simt_err_not_shared", 1, 32, 1024, io.params(0, 3)).unwrap();
    assert_eq!(ex.download(&io.out_f).unwrap()[0], 1.0);
}

/// A vector load or store off its alignment faults on a GPU; the simulator
/// (UBSan's alignment check, handled by its runtime) fails the launch, in a
/// normal `cargo test` as well as under tools/sim-asan.sh.
#[test]
fn misaligned_vector_access_is_reported() {
    if traffic_moe::backend::gpu::registry::SIM_ASAN {
        return; // libubsan's own handler reports it there (tools/sim-asan.sh's demo)
    }
    let ex = Executor::sim();
    let io = Io::new(&ex, &[1.0; 16], &[0], 16, 1);
    for (mode, needle) in [
        (0, "16-byte alignment"),
        (1, "8-byte alignment"),
        (2, "4-byte alignment"),
    ] {
        let err = launch(
            &ex,
            "simt_err_misaligned_vector",
            1,
            32,
            0,
            io.params(0, mode),
        )
        .expect_err("a misaligned vector access")
        .to_string();
        assert!(
            err.contains("misaligned address") && err.contains(needle),
            "mode {mode}: {err:?} lacks {needle:?}"
        );
    }
    launch(&ex, "simt_err_misaligned_vector", 1, 32, 0, io.params(0, 3)).unwrap();
    assert_eq!(ex.download(&io.out_f).unwrap()[..2], [1.0, 2.0]);
}

/// Unwritten shared memory must not pass for a right value: the forward
/// schedule's poison (0xFF bytes) reads as the kernels' "none" index and
/// vanishes in fmaxf, so the reversed schedule poisons with 0x7F bytes, and a
/// kernel that forgot to write its "none" entries or to initialise a max
/// fails in one of the two.
#[test]
fn unwritten_shared_memory_differs_between_schedules() {
    let n = 64usize;
    let want_u: Vec<u32> = (0..n as u32)
        .map(|t| if t < 32 { t + 2 } else { 1 })
        .collect();
    let run = |ex: &Executor, mode: i32| -> (Vec<u32>, f32) {
        let io = Io::new(ex, &[0.0], &[0], 1, n);
        launch(
            ex,
            "simt_err_uninit_sentinel",
            1,
            n as u32,
            0,
            io.params(0, mode),
        )
        .unwrap();
        (
            ex.download(&io.out_u).unwrap(),
            ex.download(&io.out_f).unwrap()[0],
        )
    };
    let (fwd, rev) = (Executor::sim(), Executor::sim_reversed());
    for ex in [&fwd, &rev] {
        assert_eq!(run(ex, 1), (want_u.clone(), 31.0), "{}", ex.name());
    }
    let (racy_fwd, racy_rev) = (run(&fwd, 0), run(&rev, 0));
    assert!(
        racy_fwd.0 != want_u || racy_rev.0 != want_u,
        "unwritten \"none\" indices went unnoticed"
    );
    assert!(
        racy_fwd.1 != 31.0 || racy_rev.1 != 31.0,
        "an uninitialised max went unnoticed"
    );
}

/// `alloc_uninit` memory is poisoned differently by the two simulator
/// executors (0xFF bytes, 0x7F bytes), as shared memory is: an output a
/// kernel forgot to write then never reads as the "none" index 0xFFFFFFFF,
/// or as a NaN that fmaxf drops, under both.
#[test]
fn unwritten_global_memory_differs_between_executors() {
    let read = |ex: &Executor| -> (Vec<u32>, Vec<f32>) {
        let u = ex.alloc_uninit::<u32>(5).unwrap();
        let f = ex.alloc_uninit::<f32>(5).unwrap();
        (ex.download(&u).unwrap(), ex.download(&f).unwrap())
    };
    let (u, f) = read(&Executor::sim());
    assert!(u.iter().all(|&v| v == u32::MAX), "{u:?}");
    assert!(f.iter().all(|v| v.is_nan()), "{f:?}");
    let (u, f) = read(&Executor::sim_reversed());
    assert!(u.iter().all(|&v| v == 0x7F7F_7F7F), "{u:?}");
    assert!(
        f.iter()
            .all(|v| v.to_bits() == 0x7F7F_7F7F && v.is_finite()),
        "{f:?}"
    );
    // The pool's reused buffers get the same poison again.
    let ex = Executor::sim_reversed().with_pool();
    let (u1, _) = read(&ex);
    let (u2, _) = read(&ex);
    assert_eq!((u1[0], u2[0]), (0x7F7F_7F7F, 0x7F7F_7F7F));
}

/// cp.async reads its global source at any time up to the wait on a GPU, so
/// a kernel that overwrites the source in between races with its own copy;
/// the simulator (which reads at issue) reports it when the copy lands.
#[test]
fn write_to_a_cp_async_source_in_flight_is_reported() {
    let n = 32usize;
    let src = slots(n);
    for ex in [Executor::sim(), Executor::sim_reversed()] {
        let mut io = Io::new(&ex, &[0.0], &[0], 4 * n, 1);
        ex.write(&mut io.out_f, &src).unwrap();
        let err = launch(
            &ex,
            "simt_err_cp_async_source_race",
            1,
            n as u32,
            16 * n as u32,
            io.params(0, 0),
        )
        .expect_err("source overwritten in flight")
        .to_string();
        assert!(
            err.contains("changed while the copy was in flight"),
            "{err}"
        );
        ex.write(&mut io.out_f, &src).unwrap();
        launch(
            &ex,
            "simt_err_cp_async_source_race",
            1,
            n as u32,
            16 * n as u32,
            io.params(0, 1),
        )
        .unwrap();
        let want: Vec<f32> = src.iter().map(|v| v + 1.0).collect();
        assert_eq!(ex.download(&io.out_f).unwrap(), want);
    }
}

/// Reading past the end of a shared array (dynamic: more than the launch's
/// bytes; static: past its size) is a launch error in every build: each
/// array ends at an inaccessible guard page (under ASan, its redzone reports
/// it instead, tools/sim-asan.sh). In bounds, the same kernel runs.
#[test]
fn shared_memory_overrun_is_reported() {
    if traffic_moe::backend::gpu::registry::SIM_ASAN {
        return; // ASan aborts the process on it (its own demonstration)
    }
    let ex = Executor::sim();
    let io = Io::new(&ex, &[0.0], &[0], 64, 1);
    for (mode, needle) in [
        (0, "past the end of dynamic shared memory (128 bytes)"),
        (1, "past the end of a static shared array (128 bytes)"),
    ] {
        let mut p = io.params(0, mode);
        p.n = 32;
        let err = launch(&ex, "simt_err_smem_overrun", 1, 32, 128, p)
            .expect_err("an overrun")
            .to_string();
        assert!(
            err.contains(needle),
            "mode {mode}: {err:?} lacks {needle:?}"
        );
        p.n = 0;
        launch(&ex, "simt_err_smem_overrun", 1, 32, 128, p).unwrap();
        assert_eq!(ex.download(&io.out_f).unwrap()[31], 1.0);
    }
}

/// A warp-level mma with lanes that exited or took another branch is an
/// error (mma.sync.aligned needs all 32 lanes), not a product of the lanes
/// that came.
#[test]
fn mma_without_the_whole_warp_is_reported() {
    let ex = Executor::sim();
    let io = Io::new(&ex, &[0.0], &[0], 32, 1);
    for mode in [0, 1] {
        let err = launch(
            &ex,
            "simt_err_mma_partial_warp",
            1,
            32,
            0,
            io.params(0, mode),
        )
        .expect_err("mma with half a warp")
        .to_string();
        assert!(err.contains("mma.sync m16n8k16"), "mode {mode}: {err}");
    }
}
