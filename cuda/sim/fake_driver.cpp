// A fake CUDA driver (libcuda.so) whose kernels run in the SIMT simulator, so
// that the GPU executor's host code (src/backend/gpu/cuda.rs: cudarc's calls,
// the stream, pinned staging, events, the shared-memory attribute) runs in
// `cargo test` on a machine without a GPU.
//
// It is strict where a GPU is: work queued on a stream runs only when the host
// waits for it (a synchronous copy, a stream, event or context synchronize, a
// free), as late as the API allows, so that a host that reuses a pinned
// buffer, or reads a result, before its copy or kernel ran gets stale bytes;
// launches are refused as a GPU refuses them (block and grid limits, a block
// above the kernel's __launch_bounds__, static and dynamic shared memory
// together above 48 KiB without the function attribute, the static figure
// being ptxas's from build.rs); copies must lie
// inside one allocation; calls need a current context; new device memory is
// garbage (0xA5), never zeroed; a kernel error (a race, an out-of-bounds
// access the simulator caught) is sticky, as a GPU fault is.
// TMOE_FAKE_CUDA_FAIL=<kernel> makes that kernel fail when it runs (an
// injected fault), so that tests can check what the host does after a fault
// no correct kernel would cause: every later call fails, as on a GPU.
//
// Dry mode (TMOE_FAKE_CUDA_DRY=1): nothing is executed or copied, device
// memory is reserved but never touched (it reads as zeros), and the device
// has an H200's 143,771 MiB: a run at the real shapes (`tmoe bench model
// --device cuda --config base --batch 64`) checks every launch against the
// limits above, and the memory the run needs, in seconds on a laptop.
//
// Loaded by the process before cudarc looks for libcuda (its soname is
// libcuda.so, so cudarc's dlopen finds this one), which then hands it the
// simulator's entry points with tmoe_fake_driver_install. Counters of every
// call let tests check what the host does per step (no allocation per op, one
// upload per batch, one read of the loss).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <sys/mman.h>
#include <vector>

namespace {

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum : CUresult {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_IMAGE = 200,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
  CUDA_ERROR_LAUNCH_FAILED = 719,
  CUDA_ERROR_NOT_SUPPORTED = 801,
};

const uint32_t FATBIN_MAGIC = 0xBA55ED50u;
const size_t DEFAULT_SMEM = 48 * 1024;     // without the attribute
const size_t MAX_OPTIN_SMEM = 227 * 1024;  // sm_90's opt-in limit
const size_t ALIGN = 256;                  // cuMemAlloc's alignment

typedef int (*LaunchFn)(const char* name, const uint32_t grid[3], const uint32_t block[3],
                        size_t smem, const void* params, size_t params_size, int reverse,
                        char* err, size_t err_len);
// static_smem: the kernel's static shared memory (ptxas's figure, from build.rs).
typedef int (*KernelInfoFn)(const char* name, size_t* params_size, unsigned* max_threads,
                            unsigned* static_smem);

struct Ctx {
  int device;
};
struct Module {
  std::vector<unsigned char> image;
};
struct Function {
  Module* module;
  std::string name;
  size_t params_size;
  unsigned max_threads;  // __launch_bounds__
  size_t static_smem;    // __shared__ variables
  // Dynamic shared memory a launch may ask for: 48 KiB less the static, as
  // on a GPU, until cuFuncSetAttribute raises it.
  size_t max_dynamic_smem;
};
struct Stream {
  bool non_blocking;
};
struct Event {
  bool timing;
  uint64_t recorded = 0;  // the marker's sequence number (0: never recorded)
  bool done = false;
  std::chrono::steady_clock::time_point at;
};

struct Op {
  enum Kind { Launch, Copy, Set, Record, Nop } kind;
  uint64_t seq;
  Stream* stream;  // nullptr: the legacy default stream
  // Launch
  std::string name;
  uint32_t grid[3], block[3];
  size_t smem;
  std::vector<unsigned char> params;
  // Copy / Set
  void* dst;
  const void* src;
  std::vector<unsigned char> staged;  // a pageable source, read at enqueue
  size_t bytes;
  unsigned char value;
  // Record
  Event* event;
};

// The counters tests read (same order as FakeCounters in fake_driver.rs).
struct Counters {
  uint64_t mem_alloc, mem_free, host_alloc, host_free;
  uint64_t htod_sync, htod_async, dtoh_sync, dtod_async, memset_sync, memset_async;
  uint64_t launches, ctx_syncs, event_syncs, stream_syncs, attr_sets, modules;
  uint64_t bytes_allocated, peak_bytes_allocated, max_queued;
  uint64_t memset_bytes;  // zeroed by cuMemsetD8 and cuMemsetD8Async
};

struct State {
  std::recursive_mutex mu;
  LaunchFn launch = nullptr;
  KernelInfoFn kernel_info = nullptr;
  bool initialised = false;
  Ctx primary{0};
  int primary_refs = 0;
  size_t total_mem = size_t(16) << 30;
  bool dry = false;  // TMOE_FAKE_CUDA_DRY=1: check launches and memory only
  std::string fail_kernel;  // TMOE_FAKE_CUDA_FAIL: this kernel faults when it runs
  std::map<uintptr_t, size_t> device;  // start -> size
  std::map<uintptr_t, size_t> pinned;
  std::deque<Op> queue;
  uint64_t next_seq = 1;
  std::string error;  // sticky: set by the first failing kernel
  Counters counters{};
};

State& st() {
  static State* s = new State;  // never destroyed: drops may run at exit
  return *s;
}

thread_local Ctx* current = nullptr;

// Every entry point but the context ones needs a current context, and fails
// once a kernel has failed (a GPU's sticky error).
#define ENTER()                                                  \
  State& S = st();                                               \
  std::lock_guard<std::recursive_mutex> lock(S.mu);              \
  if (!S.initialised) return CUDA_ERROR_NOT_INITIALIZED;         \
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;               \
  if (!S.error.empty()) return CUDA_ERROR_LAUNCH_FAILED

bool inside(const std::map<uintptr_t, size_t>& m, const void* p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = m.upper_bound(a);
  if (it == m.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

bool device_range(const State& S, CUdeviceptr p, size_t n) {
  return inside(S.device, reinterpret_cast<const void*>(p), n);
}

void fail(State& S, const std::string& what) {
  if (S.error.empty()) S.error = what;
  S.queue.clear();
  fprintf(stderr, "fake CUDA driver: %s\n", what.c_str());
}

void execute(State& S, Op& op) {
  if (S.dry && op.kind != Op::Record) return;
  switch (op.kind) {
    case Op::Launch: {
      if (op.name == S.fail_kernel) {
        fail(S, "kernel " + op.name + " failed: injected fault (TMOE_FAKE_CUDA_FAIL)");
        break;
      }
      char err[1024] = {0};
      if (S.launch(op.name.c_str(), op.grid, op.block, op.smem, op.params.data(),
                   op.params.size(), 0, err, sizeof err) != 0)
        fail(S, std::string("kernel ") + op.name + " failed: " + err);
      break;
    }
    case Op::Copy:
      memcpy(op.dst, op.staged.empty() ? op.src : op.staged.data(), op.bytes);
      break;
    case Op::Set:
      memset(op.dst, op.value, op.bytes);
      break;
    case Op::Record:
      op.event->done = true;
      op.event->at = std::chrono::steady_clock::now();
      break;
    case Op::Nop:
      break;
  }
}

// Runs queued work in order, up to and including sequence number `upto`:
// the ops `take` accepts. The others stay queued (streams are unordered with
// each other).
template <class Take>
void run_queued(State& S, uint64_t upto, Take take) {
  // The error is tested first: a failing op clears the queue, which
  // invalidates `it`.
  for (auto it = S.queue.begin(); S.error.empty() && it != S.queue.end();) {
    if (it->seq > upto) break;
    if (take(*it)) {
      Op op = std::move(*it);
      it = S.queue.erase(it);
      execute(S, op);
    } else {
      ++it;
    }
  }
}

// Every op of `stream` (all streams when `all`) up to `upto`.
void drain(State& S, bool all, Stream* stream, uint64_t upto) {
  run_queued(S, upto, [&](const Op& op) { return all || op.stream == stream; });
}

// What a synchronous call on the legacy stream waits for: the legacy stream
// and every blocking stream (a CU_STREAM_NON_BLOCKING stream is not waited).
void drain_legacy(State& S) {
  run_queued(S, UINT64_MAX,
             [](const Op& op) { return op.stream == nullptr || !op.stream->non_blocking; });
}

Stream* as_stream(void* h) {
  // 0 and CU_STREAM_LEGACY (0x1) name the legacy stream; 0x2 the per-thread one.
  const uintptr_t v = reinterpret_cast<uintptr_t>(h);
  return v <= 2 ? nullptr : static_cast<Stream*>(h);
}

void enqueue(State& S, Op&& op) {
  op.seq = S.next_seq++;
  S.queue.push_back(std::move(op));
  S.counters.max_queued = std::max<uint64_t>(S.counters.max_queued, S.queue.size());
}

CUresult sync_result(const State& S) {
  return S.error.empty() ? CUDA_SUCCESS : CUDA_ERROR_LAUNCH_FAILED;
}

}  // namespace

extern "C" {

// ---- the hooks the process installs -----------------------------------------

void tmoe_fake_driver_install(LaunchFn launch, KernelInfoFn kernel_info) {
  State& S = st();
  std::lock_guard<std::recursive_mutex> lock(S.mu);
  S.launch = launch;
  S.kernel_info = kernel_info;
}

void tmoe_fake_driver_set_total_mem(size_t bytes) {
  State& S = st();
  std::lock_guard<std::recursive_mutex> lock(S.mu);
  S.total_mem = bytes;
}

void tmoe_fake_driver_counters(Counters* out) {
  State& S = st();
  std::lock_guard<std::recursive_mutex> lock(S.mu);
  *out = S.counters;
}

// The sticky error's message (empty when none); returns its length.
size_t tmoe_fake_driver_error(char* buf, size_t len) {
  State& S = st();
  std::lock_guard<std::recursive_mutex> lock(S.mu);
  if (len) snprintf(buf, len, "%s", S.error.c_str());
  return S.error.size();
}

// ---- initialisation, devices, contexts ---------------------------------------

// CUDA 13.0's driver API, or TMOE_FAKE_CUDA_DRIVER_VERSION (e.g. 12080 for
// 12.8) to try how an older driver is refused.
CUresult cuDriverGetVersion(int* version) {
  if (!version) return CUDA_ERROR_INVALID_VALUE;
  const char* v = getenv("TMOE_FAKE_CUDA_DRIVER_VERSION");
  *version = v ? atoi(v) : 13000;
  return CUDA_SUCCESS;
}

CUresult cuInit(unsigned flags) {
  State& S = st();
  std::lock_guard<std::recursive_mutex> lock(S.mu);
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  if (!S.launch || !S.kernel_info) {
    fprintf(stderr, "fake CUDA driver: loaded without tmoe_fake_driver_install\n");
    return CUDA_ERROR_NOT_INITIALIZED;
  }
  const char* dry = getenv("TMOE_FAKE_CUDA_DRY");
  if (dry && !strcmp(dry, "1") && !S.initialised) {
    S.dry = true;
    S.total_mem = size_t(143771) << 20;  // an H200's, as nvidia-smi reports it
  }
  const char* fail_kernel = getenv("TMOE_FAKE_CUDA_FAIL");
  if (fail_kernel && !S.initialised) S.fail_kernel = fail_kernel;
  S.initialised = true;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* n) {
  if (!st().initialised) return CUDA_ERROR_NOT_INITIALIZED;
  *n = 1;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(int* dev, int ordinal) {
  if (!st().initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *dev = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, int dev) {
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  snprintf(name, len, "fake CUDA driver (SIMT simulator)");
  return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, int dev) {
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = st().total_mem;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* value, int attribute, int dev) {
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  switch (attribute) {
    case 1: *value = 1024; break;               // max threads per block
    case 8: *value = 48 * 1024; break;          // shared memory per block
    case 16: *value = 132; break;               // multiprocessors
    case 75: *value = 9; break;                 // compute capability major
    case 76: *value = 0; break;                 // minor
    case 97: *value = MAX_OPTIN_SMEM; break;    // opt-in shared memory per block
    default: *value = 0;                        // e.g. memory pools: unsupported
  }
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(Ctx** ctx, int dev) {
  State& S = st();
  std::lock_guard<std::recursive_mutex> lock(S.mu);
  if (!S.initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  S.primary_refs++;
  *ctx = &S.primary;
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
  State& S = st();
  std::lock_guard<std::recursive_mutex> lock(S.mu);
  if (dev != 0 || S.primary_refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
  S.primary_refs--;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(Ctx** ctx) {
  *ctx = current;
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(Ctx* ctx) {
  if (ctx && ctx != &st().primary) return CUDA_ERROR_INVALID_CONTEXT;
  current = ctx;
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize() {
  ENTER();
  S.counters.ctx_syncs++;
  drain(S, true, nullptr, UINT64_MAX);
  return sync_result(S);
}

CUresult cuGetErrorName(CUresult e, const char** s) {
  switch (e) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case CUDA_ERROR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
    case CUDA_ERROR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case CUDA_ERROR_NOT_READY: *s = "CUDA_ERROR_NOT_READY"; break;
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: *s = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
    default: *s = "CUDA_ERROR_UNKNOWN"; return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult e, const char** s) {
  if (e == CUDA_ERROR_LAUNCH_FAILED) {
    *s = "a kernel failed in the simulator (fake driver; see its message on stderr)";
    return CUDA_SUCCESS;
  }
  return cuGetErrorName(e, s);
}

// ---- modules and kernels ----------------------------------------------------

CUresult cuModuleLoadData(Module** module, const void* image) {
  ENTER();
  // A fatbin: magic, version (u16), header size (u16), payload size (u64).
  const unsigned char* p = static_cast<const unsigned char*>(image);
  uint32_t magic;
  uint16_t header;
  uint64_t payload;
  memcpy(&magic, p, 4);
  memcpy(&header, p + 6, 2);
  memcpy(&payload, p + 8, 8);
  if (magic != FATBIN_MAGIC || header < 16 || payload > (uint64_t(1) << 32))
    return CUDA_ERROR_INVALID_IMAGE;
  Module* m = new Module;
  m->image.assign(p, p + header + payload);  // the caller may free its copy
  S.counters.modules++;
  *module = m;
  return CUDA_SUCCESS;
}

CUresult cuModuleUnload(Module* m) {
  ENTER();
  if (!m) return CUDA_ERROR_INVALID_HANDLE;
  delete m;
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(Function** f, Module* m, const char* name) {
  ENTER();
  if (!m) return CUDA_ERROR_INVALID_HANDLE;
  // The kernel must be in this module's image (its name is in the ELF string
  // tables) and known to the simulator.
  std::string needle = std::string(1, '\0') + name + std::string(1, '\0');
  auto hit = std::search(m->image.begin(), m->image.end(), needle.begin(), needle.end());
  size_t size = 0;
  unsigned max_threads = 0, static_smem = 0;
  if (hit == m->image.end() || !S.kernel_info(name, &size, &max_threads, &static_smem))
    return CUDA_ERROR_NOT_FOUND;
  if (static_smem > DEFAULT_SMEM) return CUDA_ERROR_INVALID_IMAGE;
  // Lives as long as the process.
  *f = new Function{m, name, size, max_threads, static_smem, DEFAULT_SMEM - static_smem};
  return CUDA_SUCCESS;
}

CUresult cuFuncGetAttribute(int* value, int attribute, Function* f) {
  ENTER();
  if (!f || !value) return CUDA_ERROR_INVALID_VALUE;
  switch (attribute) {
    case 0: *value = int(f->max_threads); break;       // MAX_THREADS_PER_BLOCK
    case 1: *value = int(f->static_smem); break;       // SHARED_SIZE_BYTES
    case 8: *value = int(f->max_dynamic_smem); break;  // MAX_DYNAMIC_SHARED_SIZE_BYTES
    default: return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(Function* f, int attribute, int value) {
  ENTER();
  if (!f) return CUDA_ERROR_INVALID_HANDLE;
  S.counters.attr_sets++;
  if (attribute != 8) return CUDA_SUCCESS;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
  // Static and dynamic together within the opt-in limit, as on a GPU.
  if (value < 0 || size_t(value) + f->static_smem > MAX_OPTIN_SMEM) return CUDA_ERROR_INVALID_VALUE;
  f->max_dynamic_smem = value;
  return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned smem, void* stream, void** params,
                        void** extra) {
  ENTER();
  if (!f) return CUDA_ERROR_INVALID_HANDLE;
  const uint64_t threads = uint64_t(bx) * by * bz;
  if (threads == 0 || threads > 1024 || bx > 1024 || by > 1024 || bz > 64 || gx == 0 ||
      gy == 0 || gz == 0 || gx > 0x7fffffffu || gy > 65535 || gz > 65535)
    return CUDA_ERROR_INVALID_VALUE;
  if (smem > f->max_dynamic_smem) return CUDA_ERROR_INVALID_VALUE;
  if (threads > f->max_threads) return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
  if (!params || !params[0] || extra) return CUDA_ERROR_INVALID_VALUE;
  Op op{};
  op.kind = Op::Launch;
  op.stream = as_stream(stream);
  op.name = f->name;
  op.grid[0] = gx, op.grid[1] = gy, op.grid[2] = gz;
  op.block[0] = bx, op.block[1] = by, op.block[2] = bz;
  op.smem = smem;
  // Every kernel takes one argument, its params struct: copied now, as the
  // driver copies kernel arguments at launch.
  const unsigned char* p = static_cast<const unsigned char*>(params[0]);
  op.params.assign(p, p + f->params_size);
  S.counters.launches++;
  enqueue(S, std::move(op));
  return CUDA_SUCCESS;
}

// ---- streams and events -----------------------------------------------------

CUresult cuStreamCreate(Stream** s, unsigned flags) {
  ENTER();
  if (flags > 1) return CUDA_ERROR_INVALID_VALUE;
  *s = new Stream{flags == 1};
  return CUDA_SUCCESS;
}

CUresult cuStreamDestroy_v2(Stream* s) {
  ENTER();
  if (!as_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
  drain(S, false, s, UINT64_MAX);  // pending work still completes
  delete s;
  return sync_result(S);
}

CUresult cuStreamSynchronize(Stream* s) {
  ENTER();
  S.counters.stream_syncs++;
  if (as_stream(s))
    drain(S, false, s, UINT64_MAX);
  else
    drain_legacy(S);
  return sync_result(S);
}

CUresult cuEventCreate(Event** e, unsigned flags) {
  ENTER();
  *e = new Event{(flags & 0x2) == 0};  // CU_EVENT_DISABLE_TIMING
  return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(Event* e) {
  ENTER();
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  // A queued record of a destroyed event must not touch it.
  for (Op& op : S.queue)
    if (op.kind == Op::Record && op.event == e) op.kind = Op::Nop;
  delete e;
  return CUDA_SUCCESS;
}

CUresult cuEventRecord(Event* e, void* stream) {
  ENTER();
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  Op op{};
  op.kind = Op::Record;
  op.stream = as_stream(stream);
  op.event = e;
  e->done = false;
  e->recorded = S.next_seq;
  enqueue(S, std::move(op));
  return CUDA_SUCCESS;
}

CUresult cuEventSynchronize(Event* e) {
  ENTER();
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  S.counters.event_syncs++;
  if (e->recorded && !e->done) {
    // Run the event's stream up to its record (and only that far).
    Stream* stream = nullptr;
    for (const Op& op : S.queue)
      if (op.seq == e->recorded) stream = op.stream;
    drain(S, false, stream, e->recorded);
  }
  return sync_result(S);
}

CUresult cuEventQuery(Event* e) {
  ENTER();
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  return (!e->recorded || e->done) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

CUresult cuEventElapsedTime_v2(float* ms, Event* start, Event* end) {
  ENTER();
  if (!start || !end) return CUDA_ERROR_INVALID_HANDLE;
  if (!start->timing || !end->timing) return CUDA_ERROR_INVALID_HANDLE;
  if (!start->done || !end->done) return CUDA_ERROR_NOT_READY;
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime(float* ms, Event* start, Event* end) {
  return cuEventElapsedTime_v2(ms, start, end);
}

// ---- memory -----------------------------------------------------------------

CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
  ENTER();
  *total = S.total_mem;
  *free_bytes = S.total_mem - S.counters.bytes_allocated;
  return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  ENTER();
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  const size_t rounded = (bytes + ALIGN - 1) / ALIGN * ALIGN;
  if (S.counters.bytes_allocated + rounded > S.total_mem) return CUDA_ERROR_OUT_OF_MEMORY;
  void* m;
  if (S.dry) {
    // Reserved, never written: zero pages that cost no memory until touched.
    m = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
             -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  } else {
    m = aligned_alloc(ALIGN, rounded);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    memset(m, 0xA5, rounded);  // a GPU's fresh memory is not zeroed either
  }
  S.device[reinterpret_cast<uintptr_t>(m)] = bytes;
  S.counters.mem_alloc++;
  S.counters.bytes_allocated += rounded;
  S.counters.peak_bytes_allocated =
      std::max(S.counters.peak_bytes_allocated, S.counters.bytes_allocated);
  *p = reinterpret_cast<CUdeviceptr>(m);
  return CUDA_SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
  ENTER();
  auto it = S.device.find(uintptr_t(p));
  if (it == S.device.end()) return CUDA_ERROR_INVALID_VALUE;
  drain(S, true, nullptr, UINT64_MAX);  // cuMemFree waits for the device
  const size_t rounded = (it->second + ALIGN - 1) / ALIGN * ALIGN;
  S.counters.bytes_allocated -= rounded;
  S.counters.mem_free++;
  if (S.dry)
    munmap(reinterpret_cast<void*>(p), rounded);
  else
    free(reinterpret_cast<void*>(p));
  S.device.erase(it);
  return sync_result(S);
}

CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned flags) {
  ENTER();
  (void)flags;
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  void* m = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
  memset(m, 0x5A, bytes);
  S.pinned[reinterpret_cast<uintptr_t>(m)] = bytes;
  S.counters.host_alloc++;
  *p = m;
  return CUDA_SUCCESS;
}

CUresult cuMemFreeHost(void* p) {
  ENTER();
  auto it = S.pinned.find(reinterpret_cast<uintptr_t>(p));
  if (it == S.pinned.end()) return CUDA_ERROR_INVALID_VALUE;
  drain(S, true, nullptr, UINT64_MAX);
  S.pinned.erase(it);
  S.counters.host_free++;
  free(p);
  return sync_result(S);
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
  ENTER();
  if (!device_range(S, dst, bytes)) return CUDA_ERROR_INVALID_VALUE;
  S.counters.htod_sync++;
  drain_legacy(S);
  if (!S.error.empty()) return CUDA_ERROR_LAUNCH_FAILED;
  if (!S.dry) memcpy(reinterpret_cast<void*>(dst), src, bytes);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
  ENTER();
  if (!device_range(S, src, bytes)) return CUDA_ERROR_INVALID_VALUE;
  S.counters.dtoh_sync++;
  drain_legacy(S);
  if (!S.error.empty()) return CUDA_ERROR_LAUNCH_FAILED;
  memcpy(dst, reinterpret_cast<const void*>(src), bytes);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, void* stream) {
  ENTER();
  if (!device_range(S, dst, bytes)) return CUDA_ERROR_INVALID_VALUE;
  S.counters.htod_async++;
  Op op{};
  op.kind = Op::Copy;
  op.stream = as_stream(stream);
  op.dst = reinterpret_cast<void*>(dst);
  op.bytes = bytes;
  if (inside(S.pinned, src, bytes)) {
    op.src = src;  // read when the copy runs: the host must not touch it before
  } else {
    // A pageable source is staged before the call returns, as the driver does.
    const unsigned char* s = static_cast<const unsigned char*>(src);
    op.staged.assign(s, s + bytes);
  }
  enqueue(S, std::move(op));
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void* stream) {
  ENTER();
  if (!device_range(S, dst, bytes) || !device_range(S, src, bytes))
    return CUDA_ERROR_INVALID_VALUE;
  S.counters.dtod_async++;
  Op op{};
  op.kind = Op::Copy;
  op.stream = as_stream(stream);
  op.dst = reinterpret_cast<void*>(dst);
  op.src = reinterpret_cast<const void*>(src);
  op.bytes = bytes;
  enqueue(S, std::move(op));
  return CUDA_SUCCESS;
}

CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t bytes) {
  ENTER();
  if (!device_range(S, dst, bytes)) return CUDA_ERROR_INVALID_VALUE;
  S.counters.memset_sync++;
  S.counters.memset_bytes += bytes;
  drain_legacy(S);
  if (!S.error.empty()) return CUDA_ERROR_LAUNCH_FAILED;
  if (!S.dry) memset(reinterpret_cast<void*>(dst), value, bytes);
  return CUDA_SUCCESS;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t bytes, void* stream) {
  ENTER();
  if (!device_range(S, dst, bytes)) return CUDA_ERROR_INVALID_VALUE;
  S.counters.memset_async++;
  S.counters.memset_bytes += bytes;
  Op op{};
  op.kind = Op::Set;
  op.stream = as_stream(stream);
  op.dst = reinterpret_cast<void*>(dst);
  op.value = value;
  op.bytes = bytes;
  enqueue(S, std::move(op));
  return CUDA_SUCCESS;
}

}  // extern "C"
