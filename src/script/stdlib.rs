//! The modules of vpcsh's standard library (`stdlib/`), embedded in the binary.

/// How a script names them: `import "vpcsh/patterns" as p;`.
pub(crate) const PREFIX: &str = "vpcsh/";

/// The modules, by name.
pub(crate) const MODULES: &[(&str, &str)] = &[
    ("patterns", include_str!("../../stdlib/patterns.rhai")),
    ("probes", include_str!("../../stdlib/probes.rhai")),
];
