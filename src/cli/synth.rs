//! `tmoe synth`: write labelled synthetic pcaps (one folder per class).

use std::path::PathBuf;
use std::time::Instant;

use crate::cli::args;
use crate::traffic::capture::synth::{SynthConfig, synthesize_with_progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory; gets one sub-folder of pcaps per class.
    #[arg(long)]
    pub out: PathBuf,
    /// Flows written per class.
    #[arg(long, value_parser = args::synth_flows, default_value_t = 500)]
    pub flows_per_class: usize,
    /// At most this many flows per capture file (1: one file per flow).
    #[arg(long, value_parser = args::count, default_value_t = crate::traffic::capture::synth::FLOWS_PER_FILE)]
    pub flows_per_file: usize,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write into a non-empty directory (an earlier synth's captures in its class folders are replaced; other files are kept).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let summary = synthesize_with_progress(
        &SynthConfig {
            out: args.out.clone(),
            flows_per_class: args.flows_per_class,
            flows_per_file: args.flows_per_file,
            seed: args.seed,
            force: args.force,
        },
        true,
    )?;
    println!(
        "wrote {} flows ({} packets, {:.1} MB) in {} files under {} in {:.2} s; classes: {}",
        summary.flows,
        summary.packets,
        summary.bytes as f64 / 1e6,
        summary.files,
        args.out.display(),
        start.elapsed().as_secs_f64(),
        summary.classes.join(", ")
    );
    Ok(())
}
