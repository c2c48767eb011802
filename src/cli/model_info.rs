//! `tmoe model-info` (in progress).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tmoe model-info` is not implemented yet")
}
