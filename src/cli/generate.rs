//! `banshare generate`: man pages and shell completions made from the
//! clap definitions, so they never drift from `--help`. The package build
//! (packaging/build-deb) runs it.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::args::{Cli, GenerateCommand};
use super::failure::Result;

pub fn generate(command: GenerateCommand) -> Result<()> {
    match command {
        GenerateCommand::Man { dir } => man_pages(&dir),
        GenerateCommand::Completions { dir } => completions(&dir),
    }
}

/// banshare.1, and banshare-<command>.1 for each visible command.
fn man_pages(dir: &Path) -> Result<()> {
    create(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    log::info!("wrote man pages into {}", dir.display());
    Ok(())
}

/// One file per shell, named as each shell's completion folder expects.
fn completions(dir: &Path) -> Result<()> {
    create(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut Cli::command(), "banshare", dir)
            .with_context(|| format!("cannot write {shell} completions into {}", dir.display()))?;
        log::info!("wrote {}", path.display());
    }
    Ok(())
}

fn create(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}
