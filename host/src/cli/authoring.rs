//! Arguments of the commands that make, build and ship plugins.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name, e.g. `check-error-budget`.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: runbook_kit::Lang,
    /// Where (default: `./NAME`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The plugin's directory (with `plugin.toml`).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub action: PluginAction,
}

#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Push a plugin (component, manifest, signatures) to REF
    /// (`REGISTRY/REPOSITORY:TAG`) and print its digest.
    Push(PushArgs),
    /// Pull a plugin by digest (`REGISTRY/REPOSITORY@sha256:…`), check it,
    /// and install it in the plugin store as `STORE/NAME/`; run with
    /// `--plugins STORE`.
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The plugin's directory or its `plugin.toml`.
    pub plugin: PathBuf,
    /// Where to push it, e.g. `registry.example.com/runbook/set-flag:0.1.0`.
    pub reference: String,
    /// Extra directories to find the component file in.
    #[arg(long, value_name = "DIR")]
    pub components: Vec<PathBuf>,
    /// Speak plain HTTP to the registry (always so for localhost and
    /// 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `REGISTRY/REPOSITORY@sha256:DIGEST`.
    pub reference: String,
    /// The plugin store (default `RUNBOOK_PLUGIN_STORE`, else
    /// `$XDG_DATA_HOME/runbook/plugins`, else `~/.local/share/runbook/plugins`).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Check the plugin's signatures against this trust file before
    /// installing it.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Speak plain HTTP to the registry (always so for localhost and
    /// 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
}
