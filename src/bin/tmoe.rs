//! `tmoe`: the Traffic-MoE command line. Each subcommand lives in
//! `traffic_moe::cli::<name>`.

use clap::{Parser, Subcommand};
use traffic_moe::cli;

#[derive(Parser, Debug)]
#[command(
    name = "tmoe",
    version,
    about = "Traffic-MoE: sparse mixture-of-experts traffic classification"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Synthesise labelled pcaps of several traffic classes (no outside data needed).
    Synth(cli::synth::Args),
    /// Captures -> flows -> tokens -> dataset shards (train/val/test).
    Tokenize(cli::tokenize::Args),
    /// Train a WordPiece vocabulary on the bigram corpus of some captures.
    Vocab(cli::vocab::Args),
    /// Show a flow's packets, bytes and tokens side by side.
    Inspect(cli::inspect::Args),
    /// Parameters (total / active per token) and FLOPs per token, MoE vs dense.
    ModelInfo(cli::model_info::Args),
    /// Next-token pretraining on token shards.
    Pretrain(cli::pretrain::Args),
    /// Fine-tune a classifier with layer-wise lr decay and early stopping.
    Finetune(cli::finetune::Args),
    /// Evaluate a fine-tuned checkpoint: metrics, confusion matrix (text, CSV, PNG, SVG).
    Eval(cli::eval::Args),
    /// Classify the flows of captures: CSV or JSON lines.
    Classify(cli::classify::Args),
    /// A classic baseline (AppScanner's random forest, k-NN on the first
    /// packets) on a dataset's own splits, reported like eval.
    Baseline(cli::baseline::Args),
    /// The comparison rows (pretrained, scratch, dense, no aux loss, header,
    /// payload, AppScanner, k-NN) over seeds, resumable, one report with
    /// shortcut checks.
    Study(cli::study::Args),
    /// The main job: synth -> tokenize -> pretrain -> fine-tune -> evaluate (CPU by default; --device for the GPU engine).
    Demo(cli::demo::Args),
    /// Kernel and model benchmarks.
    Bench(cli::bench::Args),
    /// A classifier's logits on one batch of a split, with the batch (JSON),
    /// for tools/torch_reference.py.
    #[command(hide = true)]
    DumpLogits(cli::dump_logits::Args),
}

/// `tmoe ... | head` closes the pipe early: end quietly, as Unix tools do,
/// instead of panicking in `println!` (Rust starts with SIGPIPE ignored).
#[cfg(unix)]
fn default_sigpipe() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: libc's signal(2), called once before any thread starts.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

/// What Ctrl-C (or SIGTERM) does (`cli::interrupt`): training stops at its
/// next step with what it must save; other commands stop at once, saying
/// what they had and had not written.
fn interrupt_handling(command: &Command) {
    use cli::interrupt::{exit_at_once, stop_at_safe_point};
    let installed = match command {
        Command::Pretrain(_) | Command::Finetune(_) | Command::Study(_) => stop_at_safe_point(),
        Command::Tokenize(a) => {
            let out = a.out.clone();
            exit_at_once(move || cli::tokenize::interrupted_line(&out))
        }
        Command::Classify(a) => exit_at_once(cli::classify::interrupted_line(a)),
        Command::Demo(a) => {
            let out = a.out.clone();
            exit_at_once(move || {
                format!(
                    "interrupted: {} holds the demo's steps finished so far (their files \
                     whole); run it again with --force to start over",
                    out.display()
                )
            })
        }
        _ => {
            // The subcommand as typed (`tmoe` takes no options before it).
            let name = std::env::args().nth(1).unwrap_or_default();
            exit_at_once(move || {
                format!(
                    "interrupted: tmoe {name} stopped before it finished: the outputs it had \
                     finished are kept whole (each is renamed into place once written), the \
                     rest were not written; run it again (with --force where it asks) to \
                     finish"
                )
            })
        }
    };
    if let Err(e) = installed {
        eprintln!(
            "warning: Ctrl-C is not handled (the signal handler: {e}): it ends the run at once"
        );
    }
}

/// Counts heap bytes for `tmoe bench`'s CPU peak memory and holds a run to
/// its memory limit (`traffic_moe::heap`).
#[global_allocator]
static HEAP: traffic_moe::heap::Counting = traffic_moe::heap::Counting;

fn main() {
    traffic_moe::heap::mark_installed();
    match traffic_moe::heap::limit::from_environment() {
        Ok(limit) => traffic_moe::heap::set_limit(limit),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    #[cfg(unix)]
    default_sigpipe();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Synth(_)
            | Command::Tokenize(_)
            | Command::Vocab(_)
            | Command::Inspect(_)
            | Command::ModelInfo(_)
            | Command::Baseline(_)
    ) {
        traffic_moe::heap::set_advice(traffic_moe::heap::Advice::Data);
    }
    interrupt_handling(&cli.command);
    let result = match cli.command {
        Command::Synth(a) => cli::synth::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Vocab(a) => cli::vocab::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::ModelInfo(a) => cli::model_info::run(a),
        Command::Pretrain(a) => cli::pretrain::run(a),
        Command::Finetune(a) => cli::finetune::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Classify(a) => cli::classify::run(a),
        Command::Baseline(a) => cli::baseline::run(a),
        Command::Study(a) => cli::study::run_cli(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::DumpLogits(a) => cli::dump_logits::run(a),
    };
    if let Err(e) = result {
        // Through any context a caller added (a study names its run).
        if let Some(i) = e.downcast_ref::<cli::interrupt::Interrupted>() {
            cli::interrupt::say_stopped(&i.0);
            std::process::exit(cli::interrupt::exit_status());
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
