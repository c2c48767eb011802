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
 * --early: a verdict as soon as a flow holds the packets the model reads.
 * --background: the model on a thread of its own (TMOE_BACKGROUND).
 * --max-flows / --max-pending: tmoe_set_limits (flows open / awaiting a poll).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "traffic_moe.h"

static uint32_t rd32(const unsigned char* p, int swap) {
  uint32_t v;
  memcpy(&v, p, 4);
  return swap ? __builtin_bswap32(v) : v;
}

static void print_verdicts(tmoe_classifier* h, const char* file) {
  tmoe_verdict v[32];
  int64_t n;
  while ((n = tmoe_poll(h, v, 32)) > 0) {
    for (int64_t i = 0; i < n; i++) {
      char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
      int af = v[i].ip_version == 6 ? AF_INET6 : AF_INET;
      inet_ntop(af, v[i].src_ip, src, sizeof src);
      inet_ntop(af, v[i].dst_ip, dst, sizeof dst);
      printf("%s,%s,%s,%u,%s,%u,%llu.%09llu,%llu,%s,%.6f\n", file,
             v[i].proto == 6 ? "tcp" : "udp", src, v[i].src_port, dst, v[i].dst_port,
             (unsigned long long)(v[i].first_ts_ns / 1000000000ull),
             (unsigned long long)(v[i].first_ts_ns % 1000000000ull),
             (unsigned long long)v[i].packets, tmoe_class_name(h, v[i].class_id),
             (double)v[i].probability);
    }
  }
  if (n < 0) fprintf(stderr, "tmoe_poll: %s\n", tmoe_last_error());
}

static int usage(const char* exe) {
  fprintf(stderr,
          "usage: %s CHECKPOINT DATASET_DIR CAPTURE.pcap [--early] [--background]\n"
          "          [--device cpu|cpu-bf16|cuda|sim]\n"
          "          [--max-flows N] [--max-pending N]\n",
          exe);
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 4) return usage(argv[0]);
  int early = 0, background = 0;
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
    } else {
      return usage(argv[0]);
    }
  }
  if (tmoe_api_version() != TMOE_API_VERSION) {
    fprintf(stderr, "library API %u, header %u\n", tmoe_api_version(), TMOE_API_VERSION);
    return 1;
  }
  uint32_t flags = (early ? TMOE_EARLY_VERDICTS : 0) | (background ? TMOE_BACKGROUND : 0);
  tmoe_classifier* h = tmoe_open(argv[1], argv[2], NULL, device, 0, flags);
  if (!h) {
    fprintf(stderr, "tmoe_open: %s\n", tmoe_last_error());
    return 1;
  }
  if (tmoe_set_limits(h, max_flows, max_pending) != 0) {
    fprintf(stderr, "tmoe_set_limits: %s\n", tmoe_last_error());
    return 1;
  }
  FILE* f = fopen(argv[3], "rb");
  unsigned char gh[24], rh[16];
  if (!f) {
    fprintf(stderr, "%s: %s\n", argv[3], strerror(errno));
    return 1;
  }
  if (fread(gh, 1, 24, f) != 24) {
    fprintf(stderr, "%s: cannot read a pcap header\n", argv[3]);
    return 1;
  }
  uint32_t magic;
  memcpy(&magic, gh, 4);
  int swap = magic == 0xd4c3b2a1u || magic == 0x4d3cb2a1u;
  uint32_t m = swap ? __builtin_bswap32(magic) : magic;
  if (m != 0xa1b2c3d4u && m != 0xa1b23c4du) {
    fprintf(stderr, "%s: not a classic pcap file\n", argv[3]);
    return 1;
  }
  uint64_t frac_ns = m == 0xa1b23c4du ? 1 : 1000;
  /* The link type is the low 16 bits; the upper ones may carry FCS flags. */
  uint32_t link = rd32(gh + 20, swap) & 0xffffu;
  unsigned char* buf = malloc(1 << 18);
  printf("file,proto,src_ip,src_port,dst_ip,dst_port,first_ts,packets,class,probability\n");
  while (fread(rh, 1, 16, f) == 16) {
    uint32_t caplen = rd32(rh + 8, swap), wirelen = rd32(rh + 12, swap);
    if (caplen > (1u << 18) || fread(buf, 1, caplen, f) != caplen) {
      fprintf(stderr, "%s: truncated record\n", argv[3]);
      break;
    }
    uint64_t ts = (uint64_t)rd32(rh, swap) * 1000000000ull + rd32(rh + 4, swap) * frac_ns;
    if (tmoe_feed(h, ts, link, buf, caplen, wirelen) < 0)
      fprintf(stderr, "tmoe_feed: %s\n", tmoe_last_error());
    print_verdicts(h, argv[3]); /* flows that ended so far */
  }
  if (tmoe_flush(h) != 0) fprintf(stderr, "tmoe_flush: %s\n", tmoe_last_error());
  print_verdicts(h, argv[3]);
  tmoe_stats s;
  tmoe_get_stats(h, &s);
  fprintf(stderr,
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
