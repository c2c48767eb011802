/* classify_pcap.c: the C API end to end. Reads a classic pcap file frame by
 * frame (as a monitor would receive them), feeds the frames to a traffic-moe
 * classifier and prints one CSV row per flow, in the columns of
 * `tmoe classify` (so the two can be compared).
 *
 *   cargo build --release
 *   cc -O2 examples/c/classify_pcap.c -Iinclude target/release/libtraffic_moe.a \
 *      -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o classify_pcap
 *   ./classify_pcap CHECKPOINT DATASET_DIR CAPTURE.pcap [--early] [--background]
 *                   [--device cpu|cpu-bf16|cuda|sim] [--max-flows N] [--max-pending N]
 *                   [--threads N]
 * --early: a verdict as soon as a flow holds the packets the model reads.
 * --background: the model on a thread of its own (TMOE_BACKGROUND).
 * --max-flows / --max-pending: tmoe_set_limits (flows open / awaiting a poll).
 * --threads N: N handles at once, each fed the capture on a thread of its
 *   own (as a monitor runs one per capture interface); each thread reads
 *   tmoe_last_error() itself. Their outputs must be the same: one is
 *   printed, and a difference is an error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "traffic_moe.h"

static uint32_t rd32(const unsigned char* p, int swap) {
  uint32_t v;
  memcpy(&v, p, 4);
  return swap ? __builtin_bswap32(v) : v;
}

static void print_verdicts(tmoe_classifier* h, const char* file, FILE* out, FILE* err) {
  tmoe_verdict v[32];
  int64_t n;
  while ((n = tmoe_poll(h, v, 32)) > 0) {
    for (int64_t i = 0; i < n; i++) {
      char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
      int af = v[i].ip_version == 6 ? AF_INET6 : AF_INET;
      inet_ntop(af, v[i].src_ip, src, sizeof src);
      inet_ntop(af, v[i].dst_ip, dst, sizeof dst);
      fprintf(out, "%s,%s,%s,%u,%s,%u,%llu.%09llu,%llu,%s,%.6f\n", file,
             v[i].proto == 6 ? "tcp" : "udp", src, v[i].src_port, dst, v[i].dst_port,
             (unsigned long long)(v[i].first_ts_ns / 1000000000ull),
             (unsigned long long)(v[i].first_ts_ns % 1000000000ull),
             (unsigned long long)v[i].packets, tmoe_class_name(h, v[i].class_id),
             (double)v[i].probability);
    }
  }
  if (n < 0) fprintf(err, "tmoe_poll: %s\n", tmoe_last_error());
}

static int usage(const char* exe) {
  fprintf(stderr,
          "usage: %s CHECKPOINT DATASET_DIR CAPTURE.pcap [--early] [--background]\n"
          "          [--device cpu|cpu-bf16|cuda|sim]\n"
          "          [--max-flows N] [--max-pending N] [--threads N]\n",
          exe);
  return 2;
}

/* One handle's whole run over the capture: CSV rows to `out`, messages and
 * the summary to `err`. 0, or 1 on an error. */
struct job {
  const char *checkpoint, *dataset, *capture, *device;
  uint32_t flags;
  uint64_t max_flows, max_pending;
  FILE *out, *err;
  int status;
};

static int classify(const struct job* j) {
  FILE *out = j->out, *err = j->err;
  tmoe_classifier* h = tmoe_open(j->checkpoint, j->dataset, NULL, j->device, 0, j->flags);
  if (!h) {
    fprintf(err, "tmoe_open: %s\n", tmoe_last_error());
    return 1;
  }
  if (tmoe_set_limits(h, j->max_flows, j->max_pending) != 0) {
    fprintf(err, "tmoe_set_limits: %s\n", tmoe_last_error());
    tmoe_close(h);
    return 1;
  }
  FILE* f = fopen(j->capture, "rb");
  unsigned char gh[24], rh[16];
  if (!f) {
    fprintf(err, "%s: %s\n", j->capture, strerror(errno));
    tmoe_close(h);
    return 1;
  }
  if (fread(gh, 1, 24, f) != 24) {
    fprintf(err, "%s: cannot read a pcap header\n", j->capture);
    fclose(f);
    tmoe_close(h);
    return 1;
  }
  uint32_t magic;
  memcpy(&magic, gh, 4);
  int swap = magic == 0xd4c3b2a1u || magic == 0x4d3cb2a1u;
  uint32_t m = swap ? __builtin_bswap32(magic) : magic;
  if (m != 0xa1b2c3d4u && m != 0xa1b23c4du) {
    fprintf(err, "%s: not a classic pcap file\n", j->capture);
    fclose(f);
    tmoe_close(h);
    return 1;
  }
  uint64_t frac_ns = m == 0xa1b23c4du ? 1 : 1000;
  /* The link type is the low 16 bits; the upper ones may carry FCS flags. */
  uint32_t link = rd32(gh + 20, swap) & 0xffffu;
  unsigned char* buf = malloc(1 << 18);
  fprintf(out, "file,proto,src_ip,src_port,dst_ip,dst_port,first_ts,packets,class,probability\n");
  while (buf && fread(rh, 1, 16, f) == 16) {
    uint32_t caplen = rd32(rh + 8, swap), wirelen = rd32(rh + 12, swap);
    if (caplen > (1u << 18) || fread(buf, 1, caplen, f) != caplen) {
      fprintf(err, "%s: truncated record\n", j->capture);
      break;
    }
    uint64_t ts = (uint64_t)rd32(rh, swap) * 1000000000ull + rd32(rh + 4, swap) * frac_ns;
    if (tmoe_feed(h, ts, link, buf, caplen, wirelen) < 0)
      fprintf(err, "tmoe_feed: %s\n", tmoe_last_error());
    print_verdicts(h, j->capture, out, err); /* flows that ended so far */
  }
  if (tmoe_flush(h) != 0) fprintf(err, "tmoe_flush: %s\n", tmoe_last_error());
  print_verdicts(h, j->capture, out, err);
  tmoe_stats s;
  tmoe_get_stats(h, &s);
  fprintf(err,
          "%llu frames, %llu skipped, %llu flows classified, %llu too short, "
          "%llu evicted, %llu dropped\n",
          (unsigned long long)s.frames, (unsigned long long)s.skipped_frames,
          (unsigned long long)s.flows_classified, (unsigned long long)s.flows_too_short,
          (unsigned long long)s.flows_evicted, (unsigned long long)s.flows_dropped);
  free(buf);
  fclose(f);
  tmoe_close(h);
  return 0;
}

static void* classify_thread(void* arg) {
  struct job* j = arg;
  j->status = classify(j);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 4) return usage(argv[0]);
  int early = 0, background = 0;
  long threads = 1;
  const char* device = NULL;
  uint64_t max_flows = 0, max_pending = 0; /* 0: the library's defaults */
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "--early") == 0) {
      early = 1;
    } else if (strcmp(argv[i], "--background") == 0) {
      background = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--device") == 0) {
      device = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--max-flows") == 0) {
      max_flows = strtoull(argv[++i], NULL, 10);
    } else if (i + 1 < argc && strcmp(argv[i], "--max-pending") == 0) {
      max_pending = strtoull(argv[++i], NULL, 10);
    } else if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
      threads = strtol(argv[++i], NULL, 10);
      if (threads < 1 || threads > 64) return usage(argv[0]);
    } else {
      return usage(argv[0]);
    }
  }
  if (tmoe_api_version() != TMOE_API_VERSION) {
    fprintf(stderr, "library API %u, header %u\n", tmoe_api_version(), TMOE_API_VERSION);
    return 1;
  }
  struct job proto = {argv[1], argv[2], argv[3], device,
                      (early ? TMOE_EARLY_VERDICTS : 0) | (background ? TMOE_BACKGROUND : 0),
                      max_flows, max_pending, stdout, stderr, 0};
  if (threads == 1) return classify(&proto);
  /* One handle per thread, all at once, each writing to memory. */
  struct job jobs[64];
  pthread_t tids[64];
  char *outs[64], *errs[64];
  size_t out_len[64], err_len[64];
  for (long t = 0; t < threads; t++) {
    jobs[t] = proto;
    jobs[t].out = open_memstream(&outs[t], &out_len[t]);
    jobs[t].err = open_memstream(&errs[t], &err_len[t]);
    if (!jobs[t].out || !jobs[t].err || pthread_create(&tids[t], NULL, classify_thread, &jobs[t])) {
      fprintf(stderr, "starting thread %ld failed\n", t);
      return 1;
    }
  }
  int status = 0;
  for (long t = 0; t < threads; t++) {
    pthread_join(tids[t], NULL);
    fclose(jobs[t].out);
    fclose(jobs[t].err);
    status |= jobs[t].status;
    if (t > 0 && (out_len[t] != out_len[0] || memcmp(outs[t], outs[0], out_len[0]) != 0)) {
      fprintf(stderr, "thread %ld's verdicts differ from thread 0's\n", t);
      status = 1;
    }
  }
  fwrite(outs[0], 1, out_len[0], stdout);
  fwrite(errs[0], 1, err_len[0], stderr);
  for (long t = 1; t < threads; t++)
    if (jobs[t].status) fwrite(errs[t], 1, err_len[t], stderr);
  if (!status) fprintf(stderr, "%ld handles on %ld threads agree\n", threads, threads);
  for (long t = 0; t < threads; t++) {
    free(outs[t]);
    free(errs[t]);
  }
  return status;
}
