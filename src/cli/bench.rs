//! `tmoe bench` (in progress).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tmoe bench` is not implemented yet")
}
