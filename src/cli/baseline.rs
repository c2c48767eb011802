//! `tmoe baseline appscanner|knn --data DIR --out DIR`: a classic baseline on
//! the dataset's own splits, reported like `tmoe eval`.

use std::path::PathBuf;

use anyhow::Result;

use crate::baseline::{BaselineOpts, Method, run as run_baseline};
use crate::cli::args;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// appscanner (packet-size statistics + random forest) or knn (first K
    /// packets' sizes, directions and gaps).
    #[arg(value_enum)]
    pub method: Method,
    /// Dataset directory written by `tmoe tokenize` (shards and `.pkts`).
    #[arg(long)]
    pub data: PathBuf,
    /// Report directory (metrics.json, report.txt, confusion matrix).
    #[arg(long)]
    pub out: PathBuf,
    /// Part to score.
    #[arg(long, default_value = "test", value_parser = args::SPLITS)]
    pub split: String,
    /// Random forest trees (appscanner).
    #[arg(long, value_parser = args::count_u16, default_value_t = 100)]
    pub trees: u16,
    /// Neighbours (knn); 1 also answers "does a test flow's nearest training
    /// flow share its label?".
    #[arg(long, value_parser = args::count, default_value_t = 1)]
    pub neighbours: usize,
    /// Seed of the random forest.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replace the files of an existing report directory.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    super::prepare_report_dir(&a.out, a.force)?;
    let opts = BaselineOpts {
        method: a.method,
        split: a.split.clone(),
        trees: a.trees,
        neighbours: a.neighbours,
        seed: a.seed,
        train_rows: None,
    };
    let name = match a.method {
        Method::Appscanner => "AppScanner".to_string(),
        Method::Knn => format!("{}-NN", a.neighbours),
    };
    // The forest's fit is one call with nothing to count (9 s on nDPI's
    // 2,300 training flows): a spinner says it is under way.
    let working = crate::progress::spinner(format!(
        "{name}: fitting on {}'s train part, scoring {}",
        a.data.display(),
        a.split
    ));
    let r = run_baseline(&a.data, &opts);
    working.finish_and_clear();
    let r = r?;
    super::write_report_or_take_back(&a.out, || {
        r.report
            .write_all(&a.out, &format!("{name} on {}", a.split))
            .map(drop)
    })?;
    println!(
        "{name}: fitted on {} flows in {:.2} s, scored {} in {:.2} s",
        r.train_flows, r.fit_seconds, a.split, r.predict_seconds
    );
    println!("{}", r.report.summary());
    super::eval::print_capture_vote(&r.report);
    println!("{}", r.report.classification_report());
    println!("reports written to {}", a.out.display());
    Ok(())
}
