//! The C API (`include/traffic_moe.h`): a network monitor links the static
//! library, opens a fine-tuned classifier, feeds it frames as it sees them and
//! polls classified flows. A thin layer over [`crate::infer::stream`] (or,
//! with `TMOE_BACKGROUND`, [`crate::infer::background`]): every
//! entry point checks its pointers, catches panics, and reports failures
//! through `tmoe_last_error()` (per thread) instead of unwinding into C.
//!
//! Threads (the header's "Handles and threads"): handles share no state but
//! the process's (rayon's pool, the malloc tuning's `Once`, the cached rope
//! tables behind a mutex, the shared CUDA executor), so each may run on its
//! own thread; one handle takes one call at a time and may move between
//! threads between calls. [`TmoeClassifier`] is not `Send` in Rust's eyes
//! (the GPU engine keeps its buffers in `Rc`s), but every clone of those
//! lives inside the handle and moves with it, and the CUDA executor binds
//! its context on the calling thread at every call.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::{Device, Precision};
use crate::eval::predict::Loaded;
use crate::infer::background::BackgroundStream;
use crate::infer::classifier::{Classifier, VocabSource};
use crate::infer::runner::MAX_WAIT;
use crate::infer::stream::{FlowStream, StreamLimits, StreamStats, Verdict};
use crate::traffic::capture::decode::SkipReason;

/// The opaque handle C holds (`tmoe_classifier*`).
pub struct TmoeClassifier {
    stream: Stream,
    /// What `tmoe_set_limits` last set (its 0 keeps a value).
    limits: StreamLimits,
    class_names: Vec<CString>,
}

/// The model on the caller's thread (classified in `tmoe_poll`), or on a
/// thread of its own (`TMOE_BACKGROUND`).
enum Stream {
    Caller(Box<FlowStream>),
    Background(Box<BackgroundStream>),
}

impl Stream {
    fn feed(&mut self, ts: u64, link: u32, data: &[u8], len: u32) -> Result<(), SkipReason> {
        match self {
            Stream::Caller(s) => s.feed(ts, link, data, len),
            Stream::Background(s) => s.feed(ts, link, data, len),
        }
    }

    fn set_limits(&mut self, limits: StreamLimits) -> anyhow::Result<()> {
        match self {
            Stream::Caller(s) => s.set_limits(limits),
            Stream::Background(s) => s.set_limits(limits),
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Stream::Caller(s) => {
                s.flush();
                Ok(())
            }
            Stream::Background(s) => s.flush(),
        }
    }

    fn advance(&mut self, now_ns: u64) -> anyhow::Result<()> {
        match self {
            Stream::Caller(s) => {
                s.advance(now_ns);
                Ok(())
            }
            Stream::Background(s) => s.advance(now_ns),
        }
    }

    fn pending(&self) -> usize {
        match self {
            Stream::Caller(s) => s.pending(),
            Stream::Background(s) => s.pending(),
        }
    }

    fn poll(&mut self, max: usize) -> anyhow::Result<Vec<Verdict>> {
        match self {
            Stream::Caller(s) => s.classify_pending(max),
            Stream::Background(s) => s.poll(max),
        }
    }

    fn stats(&self) -> StreamStats {
        match self {
            Stream::Caller(s) => s.stats(),
            Stream::Background(s) => s.stats(),
        }
    }
}

/// One classified flow; layout fixed by the header (72 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TmoeVerdict {
    pub proto: u8,
    /// 4 or 6; IPv4 addresses use the first 4 bytes of the address arrays.
    pub ip_version: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub pad: [u8; 2],
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub packets: u64,
    pub class_id: u32,
    pub probability: f32,
}

/// Counters since `tmoe_open` (header: `tmoe_stats`).
pub type TmoeStats = StreamStats;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // `try_with`: a call from a thread-local destructor (the thread is
    // ending) loses the message instead of panicking outside `guarded`.
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = c;
        }
    });
}

/// Whether a classifier on "cuda" was opened in this process: only then do
/// the entry points save and restore the host thread's CUDA context (one
/// atomic load for a host that never asks for the GPU).
static CUDA_OPENED: AtomicBool = AtomicBool::new(false);

/// The host thread's CUDA context, made current again when the returned
/// guard drops: our executor binds its own context on the calling thread.
#[cfg(feature = "cuda")]
fn keep_host_context() -> Option<crate::backend::gpu::cuda::HostContext> {
    if !CUDA_OPENED.load(Ordering::Relaxed) {
        return None;
    }
    crate::backend::gpu::cuda::HostContext::save()
}

/// Without the `cuda` feature no context of ours is ever bound.
#[cfg(not(feature = "cuda"))]
fn keep_host_context() -> Option<std::convert::Infallible> {
    None
}

/// Runs `f`, turning an error or a panic into `fail` plus the last error;
/// the host thread's CUDA context is current again afterwards.
fn guarded<T>(fail: T, f: impl FnOnce() -> anyhow::Result<T>) -> T {
    let _host = keep_host_context();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_error(&format!("{e:#}"));
            fail
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_error(&format!("internal error (panic): {what}"));
            fail
        }
    }
}

/// An optional string argument: NULL -> None.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives `'a`.
unsafe fn opt_str<'a>(p: *const c_char, what: &str) -> anyhow::Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller promises a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| anyhow::anyhow!("{what} is not valid UTF-8"))?;
    Ok(Some(s))
}

/// An optional path argument: NULL -> None; "" is refused, naming the
/// argument (the system's "No such file" would name no path at all).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn opt_path(p: *const c_char, what: &str) -> anyhow::Result<Option<PathBuf>> {
    // SAFETY: forwarded caller contract.
    let s = unsafe { opt_str(p, what) }?;
    anyhow::ensure!(
        s != Some(""),
        "{what} is an empty string (give a path, or NULL where the header allows it)"
    );
    Ok(s.map(PathBuf::from))
}

fn handle<'a>(h: *const TmoeClassifier) -> anyhow::Result<&'a TmoeClassifier> {
    // SAFETY: a non-NULL handle came from tmoe_open and was not closed (header contract).
    unsafe { h.as_ref() }.ok_or_else(|| anyhow::anyhow!("NULL classifier handle"))
}

fn handle_mut<'a>(h: *mut TmoeClassifier) -> anyhow::Result<&'a mut TmoeClassifier> {
    // SAFETY: as above, and C makes no other call on the handle meanwhile
    // (the header: one call at a time per handle, the const ones included).
    unsafe { h.as_mut() }.ok_or_else(|| anyhow::anyhow!("NULL classifier handle"))
}

fn ip_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (4, out)
        }
        IpAddr::V6(a) => (6, a.octets()),
    }
}

fn to_c(v: &Verdict) -> TmoeVerdict {
    let (ip_version, src_ip) = ip_bytes(v.initiator.ip);
    let (_, dst_ip) = ip_bytes(v.responder.ip);
    TmoeVerdict {
        proto: v.proto,
        ip_version,
        src_port: v.initiator.port,
        dst_port: v.responder.port,
        pad: [0; 2],
        src_ip,
        dst_ip,
        first_ts_ns: v.first_ts_ns,
        last_ts_ns: v.last_ts_ns,
        packets: v.packets,
        class_id: v.class_id,
        probability: v.probability,
    }
}

/// The header's `TMOE_API_VERSION`: bumped whenever a signature or a struct
/// layout of include/traffic_moe.h changes, or a flag is added. 2:
/// `tmoe_open` takes a device, `tmoe_stats` gained the eviction/drop
/// counters, `tmoe_set_limits`. 3: `TMOE_BACKGROUND`.
pub const TMOE_API_VERSION: u32 = 4;

/// The API version this library implements (a program compiled against
/// another header compares it with its `TMOE_API_VERSION`).
#[unsafe(no_mangle)]
pub extern "C" fn tmoe_api_version() -> u32 {
    TMOE_API_VERSION
}

/// The library version ("0.1.0"), static.
#[unsafe(no_mangle)]
pub extern "C" fn tmoe_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The last error on this thread ("" if none); valid until the next failing call.
#[unsafe(no_mangle)]
pub extern "C" fn tmoe_last_error() -> *const c_char {
    // The CString's buffer stays put until the next `set_error` on this
    // thread; once the thread's locals are gone, "".
    LAST_ERROR
        .try_with(|e| e.try_borrow().map(|c| c.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// `tmoe_open` flag: classify a flow as soon as it holds the K packets the
/// model reads, instead of when it ends.
pub const TMOE_EARLY_VERDICTS: u32 = 1;

/// `tmoe_open` flag: run the model on a thread of its own. `tmoe_feed`
/// and `tmoe_poll` never wait for it; `tmoe_flush` waits for every verdict.
pub const TMOE_BACKGROUND: u32 = 2;

/// The vocabulary `tmoe_open` was given: the dataset's, else the file.
fn vocab_source<'a>(
    data: Option<&'a std::path::Path>,
    vocab: Option<&'a std::path::Path>,
) -> anyhow::Result<VocabSource<'a>> {
    Ok(match (data, vocab) {
        (Some(d), _) => VocabSource::Dataset(d),
        (None, Some(v)) => VocabSource::VocabFile(v),
        (None, None) => anyhow::bail!("give dataset_dir or vocab_file"),
    })
}

/// Flows per model call in the background: the GPU engine wants more
/// ([`crate::infer::gpu_default_batch`] for the classifier's sequence
/// length).
fn background_batch(clf: &Classifier) -> usize {
    match clf.weights {
        Loaded::Gpu(..) => crate::infer::gpu_default_batch(clf.seq_len),
        Loaded::Cpu(..) | Loaded::CpuBf16(..) => 64,
    }
}

/// The engine named by `tmoe_open`'s `device` (NULL: the CPU in f32;
/// "cpu-bf16": the bf16 CPU engine).
fn device_named(name: Option<&str>) -> anyhow::Result<(Device, Precision)> {
    Ok(match name {
        None | Some("cpu") => (Device::Cpu, Precision::F32),
        Some("cpu-bf16") => (Device::Cpu, Precision::Bf16),
        Some("cuda") => (Device::Cuda, Precision::F32),
        Some("sim") => (Device::Sim, Precision::F32),
        Some(other) => anyhow::bail!(
            "device must be \"cpu\", \"cpu-bf16\", \"cuda\" or \"sim\", not \"{other}\""
        ),
    })
}

/// Opens a classifier: `checkpoint` (safetensors from `tmoe finetune`) and
/// either `dataset_dir` (the training dataset: vocabulary, packet minimum,
/// idle timeout) or `vocab_file`; `device` "cpu" (or NULL), "cpu-bf16",
/// "cuda" or "sim".
/// `min_packets` <= 0 keeps the default; `flags`: 0, `TMOE_EARLY_VERDICTS`,
/// `TMOE_BACKGROUND`, or both.
/// Returns NULL on failure (see `tmoe_last_error`).
///
/// # Safety
/// Each string is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_open(
    checkpoint: *const c_char,
    dataset_dir: *const c_char,
    vocab_file: *const c_char,
    device: *const c_char,
    min_packets: i32,
    flags: u32,
) -> *mut TmoeClassifier {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: forwarded caller contract.
        let (ckpt, data, vocab, device) = unsafe {
            (
                opt_path(checkpoint, "checkpoint")?,
                opt_path(dataset_dir, "dataset_dir")?,
                opt_path(vocab_file, "vocab_file")?,
                opt_str(device, "device")?,
            )
        };
        let (device, precision) = device_named(device)?;
        if device == Device::Cuda {
            CUDA_OPENED.store(true, Ordering::Relaxed);
        }
        // Saved here too: `guarded`'s guard saved nothing before the first
        // classifier on "cuda".
        let _host = keep_host_context();
        let ckpt = ckpt.ok_or_else(|| anyhow::anyhow!("checkpoint is NULL"))?;
        anyhow::ensure!(
            flags & !(TMOE_EARLY_VERDICTS | TMOE_BACKGROUND) == 0,
            "unknown flags {flags:#x} (known: TMOE_EARLY_VERDICTS = 1, TMOE_BACKGROUND = 2)"
        );
        let min = (min_packets > 0).then_some(min_packets as usize);
        let early = flags & TMOE_EARLY_VERDICTS != 0;
        let names = |classes: &[String]| -> Vec<CString> {
            classes
                .iter()
                .map(|c| CString::new(c.replace('\0', " ")).unwrap_or_default())
                .collect()
        };
        let (stream, class_names) = if flags & TMOE_BACKGROUND != 0 {
            let (ckpt, data, vocab) = (ckpt.clone(), data.clone(), vocab.clone());
            let open = move || {
                let source = vocab_source(data.as_deref(), vocab.as_deref())?;
                Classifier::open_with_precision(&ckpt, source, None, device, precision)
            };
            let limits = StreamLimits::default();
            let b = BackgroundStream::start(open, min, early, limits, background_batch, MAX_WAIT)?;
            let names = names(b.classes());
            (Stream::Background(Box::new(b)), names)
        } else {
            let source = vocab_source(data.as_deref(), vocab.as_deref())?;
            let clf = Classifier::open_with_precision(&ckpt, source, None, device, precision)?;
            let names = names(&clf.classes);
            (
                Stream::Caller(Box::new(FlowStream::new(clf, min, early))),
                names,
            )
        };
        Ok(Box::into_raw(Box::new(TmoeClassifier {
            stream,
            limits: StreamLimits::default(),
            class_names,
        })))
    })
}

/// Caps what the stream holds (0 keeps a limit as it is): `max_flows` open
/// flows (beyond it the least recently active flow ends early; `flows_evicted`)
/// and `max_pending` ended flows waiting for `tmoe_poll` (beyond it the newest
/// is dropped; `flows_dropped`). Before the first `tmoe_feed` only. Returns 0,
/// or -1 (see `tmoe_last_error`).
///
/// # Safety
/// `h` is NULL or a live handle from `tmoe_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_set_limits(
    h: *mut TmoeClassifier,
    max_flows: u64,
    max_pending: u64,
) -> i32 {
    guarded(-1, || {
        let c = handle_mut(h)?;
        let now = c.limits;
        let pick = |asked: u64, kept: usize| match asked {
            0 => kept,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let limits = StreamLimits {
            max_flows: pick(max_flows, now.max_flows),
            max_pending: pick(max_pending, now.max_pending),
        };
        c.stream.set_limits(limits)?;
        c.limits = limits;
        Ok(0)
    })
}

/// Frees a classifier (NULL is ignored). Unpolled flows are dropped; with
/// `TMOE_BACKGROUND` the batch in progress finishes and the queued ones are
/// dropped unclassified ([`BackgroundStream::close`]).
///
/// # Safety
/// `h` is NULL or a handle from `tmoe_open` not closed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_close(h: *mut TmoeClassifier) {
    // Dropping runs the engine's and the model thread's teardown: a panic
    // there must not unwind into C (it would abort the process).
    guarded((), || {
        if !h.is_null() {
            // SAFETY: the handle was made by Box::into_raw in tmoe_open.
            drop(unsafe { Box::from_raw(h) });
        }
        Ok(())
    })
}

/// Number of classes (0 on a NULL handle).
///
/// # Safety
/// `h` is NULL or a live handle from `tmoe_open` (true of every call below).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_class_count(h: *const TmoeClassifier) -> u32 {
    guarded(0, || Ok(handle(h)?.class_names.len() as u32))
}

/// Name of class `id` (NULL when out of range); valid while the handle lives.
///
/// # Safety
/// `h` is NULL or a live handle from `tmoe_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_class_name(h: *const TmoeClassifier, id: u32) -> *const c_char {
    guarded(std::ptr::null(), || {
        let names = &handle(h)?.class_names;
        let name = names.get(id as usize).ok_or_else(|| {
            anyhow::anyhow!("class id {id} out of range ({} classes)", names.len())
        })?;
        Ok(name.as_ptr())
    })
}

/// Feeds one frame: `link_type` is the pcap LINKTYPE_* of the frame (1 =
/// Ethernet, 101 = raw IP, 113/276 = Linux cooked, ...; its low 16 bits: a
/// pcap file header's field may carry FCS flags above them, as the capture
/// readers read it), `caplen` the bytes at
/// `frame`, `wirelen` its length on the wire. Returns 1 when the frame is a
/// TCP/UDP packet (added to its flow), 0 when it is skipped (not TCP/UDP over
/// IP, or malformed; counted in the stats), -1 on a bad argument.
///
/// # Safety
/// `h` is NULL or a live handle; `frame` points to `caplen` readable bytes (may be NULL when `caplen` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_feed(
    h: *mut TmoeClassifier,
    ts_ns: u64,
    link_type: u32,
    frame: *const u8,
    caplen: u32,
    wirelen: u32,
) -> i32 {
    guarded(-1, || {
        let c = handle_mut(h)?;
        anyhow::ensure!(!frame.is_null() || caplen == 0, "frame is NULL");
        let data = if caplen == 0 {
            &[][..]
        } else {
            // SAFETY: the caller promises caplen readable bytes at frame.
            unsafe { std::slice::from_raw_parts(frame, caplen as usize) }
        };
        Ok(
            match c
                .stream
                .feed(ts_ns, link_type & 0xffff, data, wirelen.max(caplen))
            {
                Ok(()) => 1,
                Err(_) => 0,
            },
        )
    })
}

/// Ends every open flow (end of input): they become pending verdicts.
/// Returns 0, or -1 on a NULL handle.
///
/// # Safety
/// `h` is NULL or a live handle from `tmoe_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_flush(h: *mut TmoeClassifier) -> i32 {
    guarded(-1, || {
        handle_mut(h)?.stream.flush()?;
        Ok(0)
    })
}

/// Ends the flows idle at `now_ns` (the clock of `tmoe_feed`'s timestamps)
/// as a frame stamped `now_ns` would, without feeding one: they become
/// pending verdicts. For a monitor whose link has gone quiet (call it from a
/// timer); frames fed later must not be stamped earlier. Returns 0, or -1
/// on a NULL handle.
///
/// # Safety
/// `h` is NULL or a live handle from `tmoe_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_advance(h: *mut TmoeClassifier, now_ns: u64) -> i32 {
    guarded(-1, || {
        handle_mut(h)?.stream.advance(now_ns)?;
        Ok(0)
    })
}

/// Finished flows waiting to be classified by `tmoe_poll`.
///
/// # Safety
/// `h` is NULL or a live handle from `tmoe_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_pending(h: *const TmoeClassifier) -> u64 {
    guarded(0, || Ok(handle(h)?.stream.pending() as u64))
}

/// Classifies up to `max` finished flows (oldest first) into `out`; returns
/// how many were written, or -1 on failure (see `tmoe_last_error`).
///
/// # Safety
/// `h` is NULL or a live handle; `out` points to room for `max` verdicts.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_poll(h: *mut TmoeClassifier, out: *mut TmoeVerdict, max: u64) -> i64 {
    guarded(-1, || {
        let c = handle_mut(h)?;
        if max == 0 {
            return Ok(0);
        }
        anyhow::ensure!(!out.is_null(), "out is NULL");
        let verdicts = c.stream.poll(max as usize)?;
        // SAFETY: the caller promises room for max >= verdicts.len() entries.
        let dst = unsafe { std::slice::from_raw_parts_mut(out, verdicts.len()) };
        for (d, v) in dst.iter_mut().zip(&verdicts) {
            *d = to_c(v);
        }
        Ok(verdicts.len() as i64)
    })
}

/// Copies the counters into `out`; returns 0, or -1 on a NULL argument.
///
/// # Safety
/// `h` is NULL or a live handle; `out` is NULL or points to a writable `tmoe_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tmoe_get_stats(h: *const TmoeClassifier, out: *mut TmoeStats) -> i32 {
    guarded(-1, || {
        let s = handle(h)?.stream.stats();
        // SAFETY: the caller promises a writable struct when non-NULL.
        let out = unsafe { out.as_mut() }.ok_or_else(|| anyhow::anyhow!("out is NULL"))?;
        *out = s;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: tmoe_last_error returns a NUL-terminated string owned by this thread.
        unsafe { std::ffi::CStr::from_ptr(tmoe_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    /// A panic inside an entry point must not unwind into C (undefined
    /// behaviour): `guarded` returns the failure value and says why.
    #[test]
    fn a_panic_becomes_the_failure_value_and_the_last_error() {
        let r: i64 = guarded(-1, || panic!("index 7 out of range"));
        assert_eq!(r, -1);
        assert_eq!(last_error(), "internal error (panic): index 7 out of range");
        let r: i64 = guarded(-1, || panic!("{} flows", 3));
        assert_eq!(r, -1);
        assert_eq!(last_error(), "internal error (panic): 3 flows");
    }

    #[test]
    fn an_error_becomes_the_failure_value_with_its_context() {
        let r: i32 = guarded(-1, || {
            Err(anyhow::anyhow!("no such file").context("opening x.safetensors"))
        });
        assert_eq!(r, -1);
        assert_eq!(last_error(), "opening x.safetensors: no such file");
        assert_eq!(guarded(-1, || Ok(5)), 5);
    }
}
