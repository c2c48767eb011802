//! `tmoe vocab`: train a WordPiece vocabulary on the bigram corpus of captures.

use super::flow_parts::FlowPartsArgs;
use crate::cli::args;
use crate::traffic::capture::stats::RunStats;
use crate::traffic::dataset::build::{
    collect_captures_real, corpus_counts, path_list, read_sorted_flows,
};
use crate::traffic::tokens::vocab::{DEFAULT_LEARNED, SPECIALS, Vocab};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Capture files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the BERT-format vocab.txt.
    #[arg(long)]
    pub out: PathBuf,
    /// Entries besides the 5 specials. The corpus's alphabet (each hex digit
    /// seen, alone and as a `##` piece: at most 32) is always kept, as
    /// WordPiece needs it to spell any bigram, so a smaller size gives the
    /// alphabet; merges fill the rest.
    #[arg(long, value_parser = args::vocab_size, default_value_t = DEFAULT_LEARNED)]
    pub size: usize,
    #[command(flatten)]
    pub parts: FlowPartsArgs,
    /// Only flows with at least this many packets feed the corpus.
    #[arg(long, default_value_t = 3)]
    pub min_packets: usize,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Refused before any reading, so a bad --out costs nothing.
    super::check_out_file(&args.out, args.force)?;
    let start = Instant::now();
    let found = collect_captures_real(&args.inputs)?;
    let paths: Vec<PathBuf> = found.iter().map(|c| c.path.clone()).collect();
    anyhow::ensure!(
        !paths.is_empty(),
        "no capture files found under {}",
        path_list(&args.inputs)
    );
    // The vocabulary would replace the capture (with --force).
    super::refuse_out_among_captures(
        &args.out,
        found.iter().map(|c| (c.path.as_path(), c.real.as_deref())),
    )?;
    let rc = args.parts.reader();
    let (mut flows, stats) = read_sorted_flows(&paths, &rc, !args.quiet);
    let before = flows.len();
    flows.retain(|f| f.total_packets >= args.min_packets as u64);
    let tcfg = args.parts.tokenizer();
    let counts = corpus_counts(&flows, &tcfg);
    if counts.total() == 0 {
        // Why the corpus is empty (per-file problems) comes before the error.
        println!("{stats}");
        let why = empty_corpus(&stats, before, flows.len(), args.min_packets);
        anyhow::bail!("{why}");
    }
    let t = Instant::now();
    let vocab = Vocab::train(&counts, args.size)?;
    vocab.save(&args.out)?;
    println!("{stats}");
    println!(
        "{} flows ({} dropped below {} packets), {} bigrams ({} distinct)",
        flows.len(),
        before - flows.len(),
        args.min_packets,
        counts.total(),
        counts.distinct()
    );
    let base = vocab.len() - SPECIALS.len();
    if base > args.size {
        println!(
            "note: --size {} is below the corpus's alphabet: its {base} characters and ## pieces are always kept",
            args.size
        );
    }
    println!(
        "vocabulary: {} entries, hash {:016x}, trained in {:.1} s (total {:.1} s) -> {}",
        vocab.len(),
        vocab.hash(),
        t.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Why there is nothing to train on: no capture read at all, or what the
/// filters left.
fn empty_corpus(stats: &RunStats, read: usize, kept: usize, min_packets: usize) -> String {
    if stats.files_failed == stats.files {
        format!(
            "no capture could be read ({} files, all failed: problems above); \
             cannot train a vocabulary on an empty corpus",
            stats.files
        )
    } else {
        format!(
            "cannot train a vocabulary on an empty corpus: {read} flows read from {} files \
             ({} failed, {} with warnings), {kept} with {min_packets} packets or more, \
             no byte pair in those",
            stats.files, stats.files_failed, stats.files_warned
        )
    }
}
