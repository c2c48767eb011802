//! Reads every capture under the given folders (default ../shared/data) with
//! the default ReadConfig and prints the end-of-run summary: MB/s, flows/s,
//! peak memory. `cargo run --release --example capture_throughput [DIR...]`

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use traffic_moe::traffic::capture::reader::{ReadConfig, find_captures, read_captures};

fn main() -> anyhow::Result<()> {
    let mut roots: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if roots.is_empty() {
        roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    }
    let mut files = Vec::new();
    for r in &roots {
        files.extend(find_captures(r)?);
    }
    let kept = AtomicU64::new(0);
    let stats = read_captures(&files, &ReadConfig::default(), true, &|f| {
        kept.fetch_add(f.packets.len() as u64, Ordering::Relaxed);
    });
    println!("{stats}");
    println!(
        "threads: {}, packets kept (first K per flow): {}",
        rayon::current_num_threads(),
        kept.load(Ordering::Relaxed)
    );
    Ok(())
}
