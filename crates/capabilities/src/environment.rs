//! Environment files (`--env FILE`): which real backend each alias means.
//! Grants name aliases (`session-store`, `production/auth-service`); this
//! file maps them to endpoints, one section per capability (each
//! capability module defines and checks its own), plus `[aws]`, shared by
//! the capabilities whose backends are AWS services. It holds no secrets:
//! passwords come from environment variables it names, AWS credentials from
//! the standard chain, and a parse error never shows the file's text.

use crate::aws::{self, AwsConfig};
use crate::backends::{Backends, RealClock};
use crate::capability::{Capability, LiveContext, Missing};
use anyhow::Result;
use runbook_core::interface::Interface;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HINT: &str = "see runbooks/environments/README.md for the environment file";

/// A conventional environment variable's name (`PD_ROUTING_KEY`): what a
/// `*_env` field may be printed as. Anything else may be the secret
/// itself, pasted in.
pub fn is_conventional_variable(var: &str) -> bool {
    var.len() <= 64
        && var.starts_with(|c: char| c.is_ascii_uppercase())
        && var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A section's `timeout_ms` (per attempt) and `max_attempts`, in bounds.
pub fn check_attempts(section: &str, timeout_ms: u64, max_attempts: u32) -> Result<(), String> {
    if timeout_ms == 0 || timeout_ms > 600_000 {
        return Err(format!(
            "`{section}.timeout_ms` must be between 1 and 600000, not {timeout_ms}"
        ));
    }
    if max_attempts == 0 || max_attempts > 10 {
        return Err(format!(
            "`{section}.max_attempts` must be between 1 and 10, not {max_attempts}"
        ));
    }
    Ok(())
}

macro_rules! define_environment {
    ($($section:ident: $variant:ident($wit:literal, $form:literal, parts $parts:literal, $($access:ident)+) => $module:ident,)*) => {
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Environment {
            #[serde(default)]
            pub description: Option<String>,
            #[serde(default)]
            pub aws: AwsConfig,
            $(
                #[serde(default)]
                pub $section: <crate::$module::Cap as Capability>::LiveConfig,
            )*
            #[serde(skip)]
            pub path: PathBuf,
        }

        impl Environment {
            fn check_sections(&mut self, base: &Path) -> Result<(), String> {
                self.aws.validate()?;
                $(<crate::$module::Cap as Capability>::check_live(&mut self.$section, base)?;)*
                Ok(())
            }

            /// What resource `name` of `interface` is here (for leases),
            /// when its capability says: prefixed by the AWS account's
            /// endpoint and region.
            pub fn identity(&self, interface: Interface, name: &str) -> Option<String> {
                let id = match interface {
                    $(Interface::$variant => <crate::$module::Cap as Capability>::live_identity(&self.$section, name),)*
                }?;
                Some(format!("{}@{}", id, self.aws.identity()))
            }

            /// Whether the environment provides resource `name` of `interface`.
            pub fn provides(&self, interface: Interface, name: &str) -> Result<(), Missing> {
                match interface {
                    $(Interface::$variant => <crate::$module::Cap as Capability>::live_provides(&self.$section, name),)*
                }
            }

            fn uses_aws(&self, interface: Interface) -> bool {
                match interface {
                    $(Interface::$variant => <crate::$module::Cap as Capability>::live_uses_aws(&self.$section),)*
                }
            }

            /// The live backends of the capabilities in `used`. AWS
            /// settings (and credentials) are loaded only when one of them
            /// needs AWS.
            pub async fn backends(
                &self,
                used: &BTreeSet<Interface>,
                incident_start_ms: Option<u64>,
            ) -> Result<Backends> {
                let ctx = self.live_context(used, incident_start_ms).await?;
                let builder = Backends::builder(Arc::new(RealClock { incident_start_ms }));
                $(
                    let builder = if used.contains(&Interface::$variant) {
                        builder.with::<crate::$module::Cap>(
                            <crate::$module::Cap as Capability>::live(&self.$section, &ctx)?,
                        )
                    } else {
                        builder
                    };
                )*
                Ok(builder.build())
            }

            /// What the live backends of `used` are built from: AWS
            /// settings when one of them (or a Secrets Manager secret)
            /// needs AWS, and their secrets, read once.
            pub async fn live_context(
                &self,
                used: &BTreeSet<Interface>,
                incident_start_ms: Option<u64>,
            ) -> Result<LiveContext> {
                let mut refs = Vec::new();
                $(
                    if used.contains(&Interface::$variant) {
                        refs.extend(<crate::$module::Cap as Capability>::live_secrets(&self.$section));
                    }
                )*
                let manager = refs
                    .iter()
                    .any(|(_, r)| matches!(r, crate::secrets::SecretRef::Manager { .. }));
                let aws = if manager || used.iter().any(|i| self.uses_aws(*i)) {
                    Some(aws::load(&self.aws).await?)
                } else {
                    None
                };
                let secrets = match &aws {
                    Some(a) if manager => crate::secrets::fetch(a, &refs)
                        .await
                        .map_err(|e| e.context(format!("environment `{}`", self.path.display())))?,
                    _ => crate::secrets::Secrets::default(),
                };
                Ok(LiveContext { aws, incident_start_ms, secrets })
            }
        }
    };
}
runbook_core::with_capabilities!(define_environment);

impl Environment {
    pub fn load(path: &Path) -> Result<Self> {
        let text = runbook_core::files::read_text(path, "environment")?;
        Self::parse(&text, path)
    }

    /// An environment from `text`; `path` names it in errors and relative
    /// paths in it are relative to `path`'s directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut env: Environment = runbook_core::parse::parse_toml_redacted(
            text,
            path,
            "environment",
            HINT,
            |e: &mut Environment| e.check_sections(&base),
        )?;
        env.path = path.to_path_buf();
        Ok(env)
    }
}

impl crate::durable::Identities for Environment {
    fn identity(&self, interface: Interface, name: &str) -> Option<String> {
        Environment::identity(self, interface, name)
    }
}
