//! The registry of capability interfaces: one line each. Everything else
//! about a capability lives in its own module of `runbook-capabilities`
//! (WIT host impl, simulated and live backends, their scenario and
//! environment sections, tests); this list is where it is switched on.
//!
//! Each line: the section name it owns in scenario and environment files,
//! the [`Interface`] variant, its WIT interface name, how its resources are
//! written (for hints), how many `/`-separated parts a resource has at
//! least (so a grant pattern can be checked before anything runs), whether
//! it has mutating operations, and its module in `runbook-capabilities`
//! (`crates/capabilities/src/MODULE/`).

/// Calls `$then!` with the registry. Macros that build per-capability code
/// (the [`Interface`] enum, the capability modules and their dispatch, the
/// scenario and environment sections) are all fed from here.
#[macro_export]
macro_rules! with_capabilities {
    ($then:ident) => {
        $then! {
            metrics: Metrics("metrics", "`Namespace/MetricName`", parts 2, read only) => metrics,
            redis: Redis("redis", "a redis alias such as `session-store`", parts 1, read only) => redis,
            flags: FeatureFlags("feature-flags", "a flag key such as `AUTH_STATELESS_FALLBACK`", parts 1, mutates) => feature_flags,
            ecs: Ecs("ecs", "`cluster/service`", parts 2, mutates) => ecs,
            notify: Notify("notify", "`page/TARGET` or `channel/NAME`", parts 2, mutates) => notify,
        }
    };
}

macro_rules! define_interface {
    ($($section:ident: $variant:ident($wit:literal, $form:literal, parts $parts:literal, $($access:ident)+) => $module:ident,)*) => {
        /// A capability interface a manifest can grant. `log` is not one:
        /// every step may log.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Interface {
            $($variant,)*
        }

        impl Interface {
            pub const ALL: &'static [Interface] = &[$(Interface::$variant,)*];

            /// The WIT interface name, as in `runbook:host/<name>@0.1.0`,
            /// and the key under `[grants]`.
            pub fn wit_name(self) -> &'static str {
                match self {
                    $(Interface::$variant => $wit,)*
                }
            }

            /// The section it owns in scenario and environment files.
            pub fn section(self) -> &'static str {
                match self {
                    $(Interface::$variant => stringify!($section),)*
                }
            }

            /// How resources of this interface are written, for hints.
            pub fn resource_form(self) -> &'static str {
                match self {
                    $(Interface::$variant => $form,)*
                }
            }

            /// The fewest `/`-separated parts one of its resources has.
            pub fn resource_parts(self) -> usize {
                match self {
                    $(Interface::$variant => $parts,)*
                }
            }

            /// Whether the interface has mutating operations at all.
            pub fn can_mutate(self) -> bool {
                match self {
                    $(Interface::$variant => define_interface!(@mutates $($access)+),)*
                }
            }
        }
    };
    (@mutates read only) => { false };
    (@mutates mutates) => { true };
}
with_capabilities!(define_interface);

impl Interface {
    pub fn from_wit_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|i| i.wit_name() == name)
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wit_name())
    }
}

impl serde::Serialize for Interface {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.wit_name())
    }
}

impl<'de> serde::Deserialize<'de> for Interface {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Interface::from_wit_name(&raw).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown interface `{raw}`; known: {}",
                Interface::ALL
                    .iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}
