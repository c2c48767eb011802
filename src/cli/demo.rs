//! `tmoe demo` (in progress).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`tmoe demo` is not implemented yet")
}
