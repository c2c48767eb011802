/* traffic_moe.h: classify network flows inside your own monitor.
 *
 * Link the static library built by `cargo build --release`
 * (target/release/libtraffic_moe.a) and the system libraries it needs:
 *   cc app.c -Iinclude target/release/libtraffic_moe.a \
 *      -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 * (see examples/c/classify_pcap.c).
 *
 * Use: tmoe_open() a classifier fine-tuned by `tmoe finetune`, tmoe_feed()
 * every frame you capture (any order of flows, timestamps non-decreasing),
 * and tmoe_poll() the flows that have ended (FIN both ways or RST, idle
 * timeout, reached by a later frame or by tmoe_advance() on a quiet link,
 * or tmoe_flush() at the end; or, with TMOE_EARLY_VERDICTS, those
 * that hold the first K packets the model reads). A flow gets the same class as
 * `tmoe classify` gives it in a capture file. Flows with fewer packets than
 * the training dataset's minimum are counted, not classified.
 *
 * Memory is bounded (tmoe_set_limits): at most max_flows open flows (a new
 * flow beyond it ends the least recently active one early: flows_evicted)
 * and max_pending ended flows awaiting tmoe_poll (beyond it the newest ended
 * flow is dropped: flows_dropped). Flow keys are hashed with a per-process
 * random key, so senders cannot craft colliding flows.
 *
 * Errors: functions returning a pointer give NULL, those returning a signed
 * number give -1, and the unsigned tmoe_class_count and tmoe_pending give 0
 * (a NULL handle); tmoe_last_error() says why: the last failure of the
 * calling thread, so read it on the thread whose call failed. No function
 * aborts the process, and a handle that fails (a model call, a bad argument)
 * leaves the other handles working.
 *
 * Memory of the process: on glibc, opening a CPU classifier tunes malloc
 * once for the whole process (mallopt: no mmap for large blocks, trim
 * threshold 1 GiB), so the model's activation buffers are reused between
 * batches instead of mapped and faulted in again each time; freed memory
 * stays with the process rather than going back to the system.
 *
 * Threads: by default the model runs inside tmoe_poll, on your thread.
 * With TMOE_BACKGROUND it runs on a thread of its own: tmoe_feed and
 * tmoe_poll never wait for it (poll returns the verdicts ready so far),
 * and reading your capture overlaps the model.
 *
 * Handles and threads:
 * - Different handles are independent: open several (one per capture
 *   interface, say, on any devices) and use each from its own thread at the
 *   same time; tmoe_open and tmoe_close of different handles may also run
 *   at the same time. Each flow gets the verdict it gets when its handle is
 *   used alone. On the CPU they share the library's worker threads (one
 *   pool, as many as cores or RAYON_NUM_THREADS, started by the first model
 *   call and kept for the life of the process), so models running at once
 *   share the cores rather than multiplying the threads.
 * - One handle is used by one thread at a time, and by no two at once:
 *   no call on a handle may overlap another call on the same handle, the
 *   ones taking a const pointer included (tmoe_pending, tmoe_get_stats,
 *   tmoe_class_count, tmoe_class_name: the counters and the pending flows
 *   are those tmoe_feed changes). A monitor that reads the counters from
 *   another thread holds its own lock around both. Between calls the handle may move: opened on one thread,
 *   fed on another, closed on a third, with your own synchronisation (a
 *   mutex, a queue, a join) ordering the calls; on "cuda" every call binds
 *   the library's context on the thread that makes it.
 * - tmoe_close comes after every other call on the handle has returned,
 *   and no call follows it. With TMOE_BACKGROUND it waits for the model
 *   thread to finish the batch it is classifying (a model call cannot be
 *   interrupted), drops the batch queued behind it unclassified, then
 *   joins that thread; verdicts not yet polled and flows not yet
 *   classified are dropped. A
 *   closed handle leaves no thread, file descriptor or heap memory behind
 *   (beyond the worker pool above and, on "cuda", the library's context and
 *   kernels, loaded once per process), however often handles are opened
 *   and closed.
 *
 * Versions: TMOE_API_VERSION changes with any signature, struct layout or
 * flag here; check tmoe_api_version() == TMOE_API_VERSION at start-up.
 * 2: tmoe_open takes `device`; tmoe_stats gained flows_evicted,
 *    flows_dropped and flows_open (48 -> 72 bytes); tmoe_set_limits.
 * 3: TMOE_BACKGROUND.
 * 4: tmoe_advance.
 */
#ifndef TRAFFIC_MOE_H
#define TRAFFIC_MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_API_VERSION 4

typedef struct tmoe_classifier tmoe_classifier;

/* One classified flow. */
typedef struct tmoe_verdict {
  uint8_t proto;        /* 6 = TCP, 17 = UDP */
  uint8_t ip_version;   /* 4 or 6; IPv4 addresses fill the first 4 bytes */
  uint16_t src_port;    /* the initiator: sender of the flow's first packet */
  uint16_t dst_port;
  uint8_t pad[2];
  uint8_t src_ip[16];   /* network byte order */
  uint8_t dst_ip[16];
  uint64_t first_ts_ns; /* timestamps as fed to tmoe_feed */
  uint64_t last_ts_ns;
  uint64_t packets;     /* every packet of the flow, not only those the model reads */
  uint32_t class_id;    /* tmoe_class_name(h, class_id) */
  float probability;    /* the model's probability for class_id */
} tmoe_verdict;

/* Counters since tmoe_open. Every flow is counted once, when it ends (or,
 * with TMOE_EARLY_VERDICTS, at its K-th packet), in flows_finished or
 * flows_too_short. At any time
 *   flows_finished = flows_classified + flows_dropped + tmoe_pending(h),
 * flows_evicted is an end reason within finished + too_short, and after
 * tmoe_flush flows_open is 0 and finished + too_short is every flow seen. */
typedef struct tmoe_stats {
  uint64_t frames;
  uint64_t packets;          /* frames that were TCP/UDP over IP */
  uint64_t skipped_frames;   /* the others (ARP, ICMP, malformed, ...) */
  uint64_t flows_finished;   /* reached the packet minimum */
  uint64_t flows_too_short;  /* ended with fewer packets: not classified */
  uint64_t flows_classified;
  uint64_t flows_evicted;    /* ended early: max_flows flows were open */
  uint64_t flows_dropped;    /* finished, not classified: max_pending were
                                waiting, or the tmoe_poll that took it failed */
  uint64_t flows_open;       /* open now (a level, not a counter) */
} tmoe_stats;

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(tmoe_verdict) == 72, "tmoe_verdict layout");
_Static_assert(sizeof(tmoe_stats) == 72, "tmoe_stats layout");
#endif

/* The API version the library implements (TMOE_API_VERSION of its header). */
uint32_t tmoe_api_version(void);

/* Library version, e.g. "0.1.0". */
const char* tmoe_version(void);

/* Why the last failing call on this thread failed ("" if none). The string
 * belongs to the library and stays valid until this thread's next failing
 * call: copy it to keep it. */
const char* tmoe_last_error(void);

/* Opens a classifier: `checkpoint` is the classifier.safetensors written by
 * `tmoe finetune`; give `dataset_dir` (the dataset it was trained on: the
 * vocabulary, packet minimum and flow idle timeout come from it) or else
 * `vocab_file` (its vocab.txt; minimum 3 packets, idle timeout 120 s);
 * given both, the dataset's is used and `vocab_file` is not read.
 * Paths and `device` are NUL-terminated UTF-8 (a path that is not UTF-8,
 * or empty, is refused with an error naming the argument).
 * `device` is the engine: "cpu" (or NULL; f32), "cpu-bf16" (bf16 weights,
 * f32 accumulation: about 1.6x faster where `vdpbf16ps` runs at full rate,
 * as on AMD Zen 4, slower on Intel Xeons where it runs at half the f32 rate;
 * probabilities differ in the third digit), "cuda" (a library built with
 * --features cuda, on a machine with an NVIDIA GPU; each call binds the
 * library's CUDA context on the calling thread and makes the thread's own
 * context, if any, current again before it returns) or "sim" (the GPU
 * engine on the CPU simulator: slow, for checks). `min_packets` > 0 overrides the packet minimum. `flags`: 0, or
 * TMOE_EARLY_VERDICTS to classify a flow as soon as it holds the first K
 * packets the model reads (same class and probability as at its end, but
 * without waiting for FIN/RST or the idle timeout; `packets` and
 * `last_ts_ns` of such a verdict are those seen so far), and/or
 * TMOE_BACKGROUND to run the model on a thread of its own (flows go to it
 * in batches of 64 on the CPU, on a GPU 65,536 tokens' worth (1,024 flows
 * of a 64-token model, fewer for longer ones), or sooner once the oldest
 * ready flow has waited 20 ms). A vocabulary other than the checkpoint's is
 * refused. NULL on failure. */
#define TMOE_EARLY_VERDICTS 1u
#define TMOE_BACKGROUND 2u
tmoe_classifier* tmoe_open(const char* checkpoint, const char* dataset_dir,
                           const char* vocab_file, const char* device,
                           int32_t min_packets, uint32_t flags);

/* Caps memory; call before the first tmoe_feed (later: -1). 0 keeps a limit
 * as it is. `max_flows`: open flows (default 1,000,000; 0.75 to 1.2 KB each
 * at K = 10); `max_pending`: ended flows awaiting tmoe_poll (default 65,536; with
 * TMOE_BACKGROUND it caps the flows waiting for the model thread and, apart
 * from them, the verdicts it made that wait for tmoe_poll).
 * 0, or -1 on error. */
int32_t tmoe_set_limits(tmoe_classifier* h, uint64_t max_flows, uint64_t max_pending);

/* Frees the classifier (NULL is fine); flows not yet polled are dropped.
 * With TMOE_BACKGROUND the batch the model thread is classifying finishes
 * first (close waits for it); the batches queued behind it are dropped
 * unclassified. */
void tmoe_close(tmoe_classifier* h);

uint32_t tmoe_class_count(const tmoe_classifier* h);
/* Class name for an id, valid while the handle lives; NULL if out of range. */
const char* tmoe_class_name(const tmoe_classifier* h, uint32_t class_id);

/* Feeds one frame captured at ts_ns (nanoseconds, any epoch) with pcap link
 * type `link_type` (1 Ethernet, 101 raw IP, 113/276 Linux cooked, 0 BSD
 * loopback, 105/127/192 Wi-Fi: 802.11, radiotap, PPI, 239 NFLOG, 10 FDDI, ...;
 * the low 16 bits are read, so a pcap file header's field may
 * be passed as it is, FCS flags and all): `caplen` bytes at `frame`,
 * `wirelen` on the wire.
 * 1: a TCP/UDP packet, added to its flow; 0: skipped (counted); -1: error. */
int32_t tmoe_feed(tmoe_classifier* h, uint64_t ts_ns, uint32_t link_type,
                  const uint8_t* frame, uint32_t caplen, uint32_t wirelen);

/* Ends the flows idle at now_ns (the clock of tmoe_feed's ts_ns) as a frame
 * stamped now_ns would, without feeding one: on a link gone quiet, call it
 * from a timer so that idle flows still get their verdicts. Frames fed
 * later must not be stamped earlier. 0, or -1 on error. */
int32_t tmoe_advance(tmoe_classifier* h, uint64_t now_ns);

/* Ends every open flow (end of input); with TMOE_BACKGROUND, also waits
 * until all of them are classified. 0, or -1 on error. */
int32_t tmoe_flush(tmoe_classifier* h);

/* Ended flows not yet classified (with TMOE_BACKGROUND: not yet
 * classified by the model thread). */
uint64_t tmoe_pending(const tmoe_classifier* h);

/* Classifies up to `max` ended flows, oldest first, into `out` (with
 * TMOE_BACKGROUND: copies up to `max` verdicts the model thread has made,
 * without waiting). Returns the number written (0 when none), or -1 on
 * error. */
int64_t tmoe_poll(tmoe_classifier* h, tmoe_verdict* out, uint64_t max);

/* Copies the counters. 0, or -1 on error. */
int32_t tmoe_get_stats(const tmoe_classifier* h, tmoe_stats* out);

#ifdef __cplusplus
}
#endif
#endif /* TRAFFIC_MOE_H */
