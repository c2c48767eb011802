//! `tmoe tokenize` (in progress).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tmoe tokenize` is not implemented yet")
}
