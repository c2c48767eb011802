//! `tmoe eval` (in progress).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tmoe eval` is not implemented yet")
}
