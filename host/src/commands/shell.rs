//! `runbook completions` and `runbook man`: the shell's completions and
//! the manual, from the same definitions as `--help`.

use super::emit;
use crate::cli::{CompletionsArgs, ManArgs};
use anyhow::{Context, Result};
use runbook_core::exit::Exit;

pub fn completions(args: CompletionsArgs) -> Result<Exit> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut crate::cli::command(), "runbook", &mut out);
    emit(&String::from_utf8_lossy(&out))?;
    Ok(Exit::Ok)
}

pub fn man(args: ManArgs) -> Result<Exit> {
    let cmd = crate::cli::command();
    match args.dir {
        Some(dir) => {
            fs_err::create_dir_all(&dir)?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages into `{}`", dir.display()))?;
            emit(&format!("wrote the man pages into `{}`\n", dir.display()))?;
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            emit(&String::from_utf8_lossy(&out))?;
        }
    }
    Ok(Exit::Ok)
}
