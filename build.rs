//! Builds the CUDA side of the crate (see cuda/README.md):
//! 1. Simulator (always): cuda/sim/runtime.cpp + every cuda/*.cu compiled as C++
//!    with -DTMOE_SIM, plus one generated trampoline per kernel, into a static lib.
//! 2. GPU: when nvcc is found, every cuda/*.cu -> one fatbin per file (sm_90a,
//!    sm_80 cubins + compute_80 PTX), embedded; ptxas -v figures go to a report,
//!    and a kernel that spills fails the build unless cuda/spill-allow.txt lists it.
//!
//! No bindgen here: the Rust side of cuda/params.h is committed
//! (src/backend/gpu/params_bindings.rs) and tests/params_bindings.rs keeps it
//! fresh, so a build needs Rust and a C/C++ compiler, no libclang.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One `extern "C" __global__ void NAME(const TYPE p)` found in a source file.
struct Kernel {
    name: String,
    params: String,
    file: String,
    /// `__launch_bounds__`'s first argument as written (a literal or a macro
    /// of the kernel's file), if any: the simulator refuses bigger blocks, as
    /// a GPU does.
    max_threads: Option<String>,
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let cuda = root.join("cuda");
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "TMOE_SIM_ASAN",
        "TMOE_SKIP_NVCC",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let asan = env::var("TMOE_SIM_ASAN").is_ok_and(|v| v == "1");

    // Kernel sources: cuda/*.cu and the simulator self-tests cuda/sim/tests/*.cu
    // go to both builds (so a GPU run confirms the simulator's layouts);
    // cuda/sim/errors/*.cu (kernels that misbehave on purpose) only to the
    // simulator; cuda/sim/asan/*.cu only to ASan builds.
    let mut gpu_sources = list_cu(&cuda);
    gpu_sources.extend(list_cu(&cuda.join("sim/tests")));
    let mut sim_sources = gpu_sources.clone();
    sim_sources.extend(list_cu(&cuda.join("sim/errors")));
    if asan {
        sim_sources.extend(list_cu(&cuda.join("sim/asan")));
    }
    let mut kernels = Vec::new();
    for src in &sim_sources {
        kernels.extend(scan_kernels(src));
    }
    check_unique(&kernels);
    check_launch_bounds(&list_cu(&cuda));

    check_params_bindings(&root);
    build_simulator(&cuda, &out, &sim_sources, &kernels, asan);
    write_kernel_table(&out, &kernels, asan);
    build_fatbins(&root, &cuda, &out, &gpu_sources);
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_fake_driver(&cuda, &out);
    }
}

/// The fake CUDA driver (cuda/sim/fake_driver.cpp): a libcuda.so whose
/// kernels run in the simulator, so that the GPU executor's host code runs in
/// tests without a GPU. Its path reaches the crate as TMOE_FAKE_DRIVER.
fn build_fake_driver(cuda: &Path, out: &Path) {
    let src = cuda.join("sim/fake_driver.cpp");
    let dir = out.join("fake-driver");
    fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("libcuda.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra"])
        // The soname cudarc's dlopen("libcuda.so") matches once this is loaded.
        .arg("-Wl,-soname,libcuda.so")
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .unwrap_or_else(|e| panic!("running the C++ compiler on {}: {e}", src.display()));
    assert!(status.success(), "compiling {} failed", src.display());
    println!("cargo:rustc-env=TMOE_FAKE_DRIVER={}", lib.display());
}

fn list_cu(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cu"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A source's key, unique across cuda/: its path below cuda/ without the
/// extension, '/' replaced by '_' (`rmsnorm`, `sim_tests_warp`).
fn key(p: &Path) -> String {
    let s = p.with_extension("").to_string_lossy().into_owned();
    let rel = s
        .rsplit_once("/cuda/")
        .map_or(s.as_str(), |(_, r)| r)
        .to_string();
    rel.replace('/', "_")
}

/// Finds `extern "C" __global__ [__launch_bounds__(..)] void NAME(const TYPE p)`.
fn scan_kernels(src: &Path) -> Vec<Kernel> {
    let text = fs::read_to_string(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut found = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("extern \"C\" __global__") else {
            continue;
        };
        let bad = || {
            panic!(
                "{}:{}: kernel declarations must read `extern \"C\" __global__ void NAME(const TYPE p)` on one line",
                src.display(),
                ln + 1
            )
        };
        // Take out a `__launch_bounds__(...)` wherever it sits.
        let mut max_threads = None;
        let rest = match rest.find("__launch_bounds__(") {
            Some(i) => {
                let close = rest[i..].find(')').map_or(rest.len(), |c| i + c + 1);
                let args = &rest[i + "__launch_bounds__(".len()..close.saturating_sub(1)];
                max_threads = Some(args.split(',').next().unwrap_or("").trim().to_string());
                format!("{} {}", &rest[..i], &rest[close..])
            }
            None => rest.to_string(),
        };
        let Some(v) = rest.find("void ") else { bad() };
        let after = &rest[v + 5..];
        let Some(open) = after.find('(') else { bad() };
        let Some(close) = after.find(')') else { bad() };
        let name = after[..open].trim().to_string();
        let arg: Vec<&str> = after[open + 1..close].split_whitespace().collect();
        if name.is_empty() || arg.len() != 3 || arg[0] != "const" {
            bad();
        }
        found.push(Kernel {
            name,
            params: arg[1].to_string(),
            file: key(src),
            max_threads,
        });
    }
    found
}

/// Every product kernel declares `__launch_bounds__`: without it nvcc may use
/// up to 255 registers a thread, and a GPU refuses a block whose registers do
/// not fit (a 512-thread block at 129 or more), which neither the simulator
/// nor the fake driver would notice; with it, both refuse a bigger block.
fn check_launch_bounds(product_sources: &[PathBuf]) {
    for src in product_sources {
        for k in scan_kernels(src) {
            if k.max_threads.is_none() {
                panic!(
                    "{}: kernel `{}` has no __launch_bounds__(THREADS) (see cuda/README.md)",
                    src.display(),
                    k.name
                );
            }
        }
    }
}

fn check_unique(kernels: &[Kernel]) {
    let mut seen = BTreeMap::new();
    for k in kernels {
        if let Some(f) = seen.insert(k.name.as_str(), k.file.as_str()) {
            panic!(
                "kernel `{}` is defined in both {f}.cu and {}.cu",
                k.name, k.file
            );
        }
    }
}

/// FNV-1a (64-bit) of a file's bytes; tests/params_bindings.rs records the
/// header's in the generated file.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Warns (no libclang needed) when cuda/params.h changed since
/// src/backend/gpu/params_bindings.rs was generated from it.
fn check_params_bindings(root: &Path) {
    let bindings = root.join("src/backend/gpu/params_bindings.rs");
    println!("cargo:rerun-if-changed={}", bindings.display());
    let header = fs::read(root.join("cuda/params.h")).unwrap();
    let want = format!("{:016x}", fnv1a64(&header));
    let text = fs::read_to_string(&bindings).unwrap_or_default();
    let recorded = text
        .lines()
        .find_map(|l| l.strip_prefix("// cuda/params.h FNV-1a 64: "));
    if recorded != Some(want.as_str()) {
        println!(
            "cargo:warning=src/backend/gpu/params_bindings.rs is stale (cuda/params.h changed). \
             Refresh it: cargo run --manifest-path tools/regen-params/Cargo.toml"
        );
    }
}

fn build_simulator(cuda: &Path, out: &Path, sources: &[PathBuf], kernels: &[Kernel], asan: bool) {
    let sim_dir = out.join("sim");
    fs::create_dir_all(&sim_dir).unwrap();
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .include(cuda)
        .define("TMOE_SIM", None)
        .warnings(false)
        .extra_warnings(false)
        .flag("-Wall")
        .flag("-Wno-unused-function")
        // Kernels reinterpret uint4 <-> bf16 pairs as CUDA allows.
        .flag("-fno-strict-aliasing")
        .file(cuda.join("sim/runtime.cpp"));
    if asan {
        b.opt_level(1)
            .debug(true)
            .flag("-fsanitize=address")
            .flag("-fno-omit-frame-pointer")
            // A GPU faults on a vector access off its size's alignment
            // (uint4: 16 bytes); sim.h gives each type its CUDA alignment, and
            // buffers are 256-byte aligned as cudaMalloc's.
            .flag("-fsanitize=alignment")
            .flag("-fno-sanitize-recover=alignment");
        println!("cargo:rustc-link-lib=dylib=asan");
        println!("cargo:rustc-link-lib=dylib=ubsan");
    } else {
        // Kernels are hot loops: optimise even in debug builds.
        b.opt_level(2)
            // A GPU faults on a vector access off its size's alignment
            // (uint4: 16 bytes, float2: 8, bf16x2: 4); the checks call
            // runtime.cpp's own UBSan handler, which fails the launch (no
            // libubsan needed).
            .flag("-fsanitize=alignment")
            .flag("-fno-sanitize-recover=alignment");
    }
    // One wrapper per .cu, so that g++ sees C++ and file-local names stay
    // local; it also evaluates each kernel's launch bound where its macros live.
    for src in sources {
        let file = key(src);
        let wrapper = sim_dir.join(format!("{file}.cpp"));
        let mut text = format!("#include \"{}\"\n", src.display());
        for k in kernels.iter().filter(|k| k.file == file) {
            let bound = k.max_threads.as_deref().unwrap_or("1024");
            writeln!(
                text,
                "extern \"C\" const unsigned tmoe_sim_max_threads_{n} = ({bound});",
                n = k.name
            )
            .unwrap();
        }
        write_if_changed(&wrapper, &text);
        b.file(wrapper);
    }
    let mut tramp = String::from(
        "// generated by build.rs: one trampoline per kernel for the simulator\n#include \"common.cuh\"\n\
         namespace tmoe_sim { typedef void (*Trampoline)(const void*);\n\
         struct KernelEntry { const char* name; Trampoline fn; size_t params_size; const unsigned* max_threads; }; }\n",
    );
    for k in kernels {
        writeln!(
            tramp,
            "extern \"C\" void {n}(const {t} p);\nextern \"C\" const unsigned tmoe_sim_max_threads_{n};\nstatic void tramp_{n}(const void* p) {{ {n}(*static_cast<const {t}*>(p)); }}",
            n = k.name,
            t = k.params
        )
        .unwrap();
    }
    tramp.push_str("extern \"C\" const tmoe_sim::KernelEntry tmoe_sim_kernels[] = {\n");
    for k in kernels {
        writeln!(
            tramp,
            "  {{\"{n}\", tramp_{n}, sizeof({t}), &tmoe_sim_max_threads_{n}}},",
            n = k.name,
            t = k.params
        )
        .unwrap();
    }
    tramp.push_str("  {nullptr, nullptr, 0, nullptr}};\n");
    let tramp_path = sim_dir.join("trampolines.cpp");
    write_if_changed(&tramp_path, &tramp);
    b.file(tramp_path);
    b.compile("tmoe_sim");
}

fn write_kernel_table(out: &Path, kernels: &[Kernel], asan: bool) {
    let mut t = String::from(
        "/// Every kernel in cuda/: (name, source file stem, params struct), sorted by\n/// name (looked up by binary search on every launch).\npub const KERNELS: &[(&str, &str, &str)] = &[\n",
    );
    let mut sorted: Vec<&Kernel> = kernels.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for k in sorted {
        writeln!(t, "    ({:?}, {:?}, {:?}),", k.name, k.file, k.params).unwrap();
    }
    t.push_str("];\n");
    writeln!(t, "/// True when the simulator was built with AddressSanitizer (TMOE_SIM_ASAN=1).\npub const SIM_ASAN: bool = {asan};").unwrap();
    fs::write(out.join("kernels.rs"), t).unwrap();
}

fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap();
    }
}

// ---------------------------------------------------------------- nvcc

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = env::var(var) {
            let p = Path::new(&home).join("bin/nvcc");
            if p.exists() {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let local = root.join(".cuda-toolchain/bin/nvcc");
    let stamp = root.join(".cuda-toolchain/.installed");
    if stamp.exists() {
        println!("cargo:rerun-if-changed={}", stamp.display());
    }
    local.exists().then_some(local)
}

/// ptxas -v figures for one kernel on one architecture.
#[derive(Default, Clone)]
struct PtxasInfo {
    kernel: String,
    arch: String,
    registers: u32,
    smem: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

fn build_fatbins(root: &Path, cuda: &Path, out: &Path, sources: &[PathBuf]) {
    let feature = env::var_os("CARGO_FEATURE_CUDA").is_some();
    let skip = env::var("TMOE_SKIP_NVCC").is_ok_and(|v| v == "1");
    let nvcc = if skip { None } else { find_nvcc(root) };
    let Some(nvcc) = nvcc else {
        // TMOE_SKIP_NVCC=1 with `cuda`: a type check of the GPU code (clippy,
        // `cargo check`) on a machine without nvcc; such a build opens no
        // device ("this build embeds no kernels").
        if feature && !skip {
            panic!(
                "feature `cuda` needs nvcc, which was not found (NVCC, CUDA_HOME, PATH, .cuda-toolchain/).\n\
                 Install CUDA 13.0's compiler into the project with:\n    tools/install-cuda-toolchain.sh"
            );
        }
        println!(
            "cargo:warning=nvcc not found{}: GPU fatbins not built (simulator only). Install: tools/install-cuda-toolchain.sh",
            if skip { " (TMOE_SKIP_NVCC=1)" } else { "" }
        );
        fs::write(
            out.join("fatbins.rs"),
            "pub const FATBINS: &[(&str, &[u8])] = &[];\npub const STATIC_SMEM: &[(&str, u32)] = &[];\n",
        )
        .unwrap();
        return;
    };

    let fat_dir = out.join("fatbin");
    fs::create_dir_all(&fat_dir).unwrap();
    let jobs: usize = env::var("NUM_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .max(1);
    // Compile files in parallel, `jobs` at a time.
    let mut results: Vec<(PathBuf, Result<String, String>)> = Vec::new();
    for chunk in sources.chunks(jobs) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|src| {
                let (nvcc, cuda, src) = (nvcc.clone(), cuda.to_path_buf(), src.clone());
                let dst = fat_dir.join(format!("{}.fatbin", key(&src)));
                std::thread::spawn(move || {
                    let r = nvcc_compile(&nvcc, &cuda, &src, &dst);
                    (src, r)
                })
            })
            .collect();
        results.extend(handles.into_iter().map(|h| h.join().unwrap()));
    }

    let mut infos = Vec::new();
    let mut table = String::from("pub const FATBINS: &[(&str, &[u8])] = &[\n");
    for (src, r) in &results {
        match r {
            Ok(log) => infos.extend(parse_ptxas(log)),
            Err(e) => panic!("nvcc failed on {}:\n{e}", src.display()),
        }
        let fat = fat_dir.join(format!("{}.fatbin", key(src)));
        writeln!(
            table,
            "    ({:?}, include_bytes!({:?})),",
            key(src),
            fat.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    // Static shared memory per kernel (the most over its architectures):
    // the fake driver's answer to cuFuncGetAttribute (a GPU's comes from the
    // loaded code itself).
    let mut smem: BTreeMap<&str, u32> = BTreeMap::new();
    for i in &infos {
        let e = smem.entry(i.kernel.as_str()).or_default();
        *e = (*e).max(i.smem);
    }
    table.push_str("pub const STATIC_SMEM: &[(&str, u32)] = &[\n");
    for (k, v) in smem {
        writeln!(table, "    ({k:?}, {v}),").unwrap();
    }
    table.push_str("];\n");
    fs::write(out.join("fatbins.rs"), table).unwrap();
    report(cuda, out, &infos);
}

fn nvcc_compile(nvcc: &Path, cuda: &Path, src: &Path, dst: &Path) -> Result<String, String> {
    let output = Command::new(nvcc)
        .args(["-fatbin", "-std=c++17", "-O3", "-Xptxas", "-v"])
        .args(["-gencode", "arch=compute_90a,code=sm_90a"])
        .args(["-gencode", "arch=compute_80,code=sm_80"])
        .args(["-gencode", "arch=compute_80,code=compute_80"])
        .arg("-I")
        .arg(cuda)
        .arg("-o")
        .arg(dst)
        .arg(src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        Ok(log)
    } else {
        Err(log)
    }
}

fn parse_ptxas(log: &str) -> Vec<PtxasInfo> {
    let mut v: Vec<PtxasInfo> = Vec::new();
    let mut in_entry = false;
    let num_before = |line: &str, unit: &str| -> u32 {
        line.find(unit)
            .and_then(|i| line[..i].split([',', ':']).next_back())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            let arch = rest
                .split("for '")
                .nth(1)
                .and_then(|a| a.split('\'').next())
                .unwrap_or("")
                .to_string();
            v.push(PtxasInfo {
                kernel: name,
                arch,
                ..Default::default()
            });
            in_entry = true;
        } else if line.contains("Function properties for") && !line.contains("Compiling") {
            // Non-entry (device) functions have properties too; only count the entry's.
            in_entry = v
                .last()
                .is_some_and(|k| line.trim_end().ends_with(&k.kernel));
        } else if in_entry && line.contains("bytes stack frame") {
            let k = v.last_mut().unwrap();
            k.stack = num_before(line, "bytes stack frame");
            k.spill_stores = num_before(line, "bytes spill stores");
            k.spill_loads = num_before(line, "bytes spill loads");
        } else if in_entry && line.contains("Used ") && line.contains("registers") {
            let k = v.last_mut().unwrap();
            k.registers = line
                .split("Used ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            k.smem = num_before(line, "bytes smem");
        }
    }
    v
}

fn report(cuda: &Path, out: &Path, infos: &[PtxasInfo]) {
    let allow_path = cuda.join("spill-allow.txt");
    let allow_text = fs::read_to_string(&allow_path).unwrap_or_default();
    // Lines: `kernel_name  reason...`; '#' starts a comment.
    let allowed: BTreeMap<&str, &str> = allow_text
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(char::is_whitespace)
                .map_or((l, ""), |(k, r)| (k, r.trim()))
        })
        .collect();
    for (k, reason) in &allowed {
        if reason.is_empty() {
            panic!(
                "{}: `{k}` needs a reason after its name",
                allow_path.display()
            );
        }
    }
    let mut text = String::from("# ptxas -v per kernel and architecture (generated by build.rs)\n");
    writeln!(
        text,
        "{:<32} {:<7} {:>5} {:>8} {:>6} {:>7} {:>7}",
        "kernel", "arch", "regs", "smem", "stack", "spill_st", "spill_ld"
    )
    .unwrap();
    let mut spilling = Vec::new();
    for i in infos {
        writeln!(
            text,
            "{:<32} {:<7} {:>5} {:>8} {:>6} {:>7} {:>7}",
            i.kernel, i.arch, i.registers, i.smem, i.stack, i.spill_stores, i.spill_loads
        )
        .unwrap();
        if (i.spill_stores > 0 || i.spill_loads > 0) && !allowed.contains_key(i.kernel.as_str()) {
            spilling.push(format!(
                "{} ({}: {} B stores, {} B loads)",
                i.kernel, i.arch, i.spill_stores, i.spill_loads
            ));
        }
    }
    let path = out.join("kernel-report.txt");
    fs::write(&path, &text).unwrap();
    let max = infos.iter().max_by_key(|i| i.registers);
    let spills: u32 = infos.iter().map(|i| i.spill_stores + i.spill_loads).sum();
    println!(
        "cargo:warning=nvcc: {} kernel builds, max {} registers ({}), {} spill bytes; report: {}",
        infos.len(),
        max.map_or(0, |m| m.registers),
        max.map_or("-", |m| m.kernel.as_str()),
        spills,
        path.display()
    );
    if !spilling.is_empty() {
        panic!(
            "kernels spill registers to local memory: {}\nFix them, or list each in {} as `kernel_name  reason`.\nReport: {}",
            spilling.join(", "),
            allow_path.display(),
            path.display()
        );
    }
}
