//! The script API as users see it — every function and property with its signature and doc
//! comment — read from the engine's own metadata, which Rhai builds from the `///` comments
//! of the binding modules. Error help, the REPL's `:help`, completion and the reference in
//! `docs/` all come from here, so they cannot drift apart.

use rhai::Engine;

use super::stdlib::{MODULES, PREFIX};
use serde::Deserialize;

/// One script function, all its overloads together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Function {
    pub name: String,
    /// Overloads that extend each other shown as one (`f(a[, b])`), others one per line.
    pub signature: String,
    pub doc: String,
}

impl Function {
    /// The first line of the doc comment.
    pub(crate) fn summary(&self) -> &str {
        self.doc.lines().next().unwrap_or_default()
    }
}

/// A read-only property of a handle type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Property {
    pub name: String,
    /// The handle type it is read on (`Vpc`, `Subnet`, `Host`, `Internet`).
    pub on: String,
    pub doc: String,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Reference {
    pub functions: Vec<Function>,
    pub properties: Vec<Property>,
    /// The standard library: each module (`vpcsh/patterns`) with its public functions.
    pub modules: Vec<(String, Vec<Function>)>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    functions: Vec<FnMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FnMeta {
    name: String,
    #[serde(default)]
    params: Vec<ParamMeta>,
    #[serde(default)]
    return_type: String,
    #[serde(default)]
    doc_comments: Vec<String>,
}

#[derive(Deserialize)]
struct ParamMeta {
    name: Option<String>,
    #[serde(rename = "type")]
    typ: Option<String>,
}

/// Functions every handle has that are not part of the API a user reads about.
const PLUMBING: &[&str] = &["to_string", "to_debug"];

impl Reference {
    /// Everything the engine has registered outside Rhai's standard packages.
    pub(crate) fn of(engine: &Engine) -> Self {
        let metadata: Metadata = engine
            .gen_fn_metadata_to_json(false)
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or(Metadata { functions: Vec::new() });
        let mut reference = Reference::default();
        let mut overloads: Vec<(String, Vec<FnMeta>)> = Vec::new();
        for f in metadata.functions {
            if let Some(name) = f.name.strip_prefix("get$") {
                let on = f.params.first().and_then(|p| p.typ.as_deref()).map(readable).unwrap_or_default();
                reference.properties.push(Property { name: name.into(), on, doc: doc_text(&f.doc_comments) });
            } else if !f.name.contains('$') && !PLUMBING.contains(&f.name.as_str()) {
                match overloads.iter_mut().find(|(n, _)| *n == f.name) {
                    Some((_, list)) => list.push(f),
                    None => overloads.push((f.name.clone(), vec![f])),
                }
            }
        }
        reference.functions = overloads.into_iter().map(|(name, list)| function(name, list)).collect();
        reference.functions.sort_by(|a, b| a.name.cmp(&b.name));
        reference.properties.sort_by(|a, b| (&a.on, &a.name).cmp(&(&b.on, &b.name)));
        reference.modules =
            MODULES.iter().map(|(name, text)| (format!("{PREFIX}{name}"), module(engine, text))).collect();
        reference
    }

    /// A function of the script API or of the standard library (`three_tier`).
    pub(crate) fn any_function(&self, name: &str) -> Option<&Function> {
        self.function(name).or_else(|| self.modules.iter().flat_map(|(_, fs)| fs).find(|f| f.name == name))
    }

    pub(crate) fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The reference as a Markdown page (`docs/reference.md`).
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::from(
            "# Script reference\n\n\
             Every function and property a vpcsh script can use. This page is generated from the \
             doc comments of the script bindings (`src/script/`), the same text the REPL's `:help` \
             shows; `VPCSH_BLESS=1 cargo test reference` rewrites it, and the tests fail when it is \
             out of date.\n\n## Functions\n",
        );
        for f in &self.functions {
            out += &format!("\n### `{}`\n\n```\n{}\n```\n\n{}\n", f.name, f.signature, f.doc);
        }
        out += "\n## Standard library\n\nModules embedded in vpcsh, imported as `import \"vpcsh/NAME\" as m;` and called as `m::function(...)`.\n";
        for (module, functions) in &self.modules {
            out += &format!("\n### `{module}`\n");
            for f in functions {
                out += &format!("\n```\n{}\n```\n\n{}\n", f.signature, f.doc);
            }
        }
        out += "\n## Properties\n\nRead-only; a misspelt one is a diagnostic that lists the right ones.\n\n";
        out += "| on | property | what it is |\n|---|---|---|\n";
        for p in &self.properties {
            out += &format!("| {} | `.{}` | {} |\n", p.on, p.name, p.doc.replace('\n', " "));
        }
        out
    }

    /// The property names of a handle type, or of every type when `on` is `None`.
    pub(crate) fn property_names(&self, on: Option<&str>) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .properties
            .iter()
            .filter(|p| on.is_none_or(|t| p.on == t))
            .map(|p| p.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// The public functions of a standard-library module, with their doc comments.
fn module(engine: &Engine, text: &str) -> Vec<Function> {
    let Ok(ast) = engine.compile(text) else { return Vec::new() };
    let mut functions: Vec<Function> = ast
        .iter_functions()
        .filter(|f| f.access != rhai::FnAccess::Private)
        .map(|f| {
            let comments: Vec<String> = f.comments.iter().map(|c| c.to_string()).collect();
            Function {
                name: f.name.to_string(),
                signature: format!("{}({})", f.name, f.params.join(", ")),
                doc: doc_text(&comments),
            }
        })
        .collect();
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    functions
}

fn doc_text(comments: &[String]) -> String {
    let lines: Vec<&str> = comments
        .iter()
        .flat_map(|c| c.lines())
        .map(|l| {
            let l = l.trim_start().trim_start_matches("///");
            l.strip_prefix(' ').unwrap_or(l)
        })
        .collect();
    lines.join("\n").trim().to_string()
}

fn params(f: &FnMeta) -> Vec<String> {
    f.params
        .iter()
        .map(|p| match (&p.name, &p.typ) {
            (Some(n), Some(t)) => format!("{n}: {}", readable(t)),
            (Some(n), None) => n.clone(),
            (None, t) => t.as_deref().map(readable).unwrap_or_default(),
        })
        .collect()
}

/// One function from its overloads: a chain of overloads each extending the last by
/// trailing parameters reads `f(a[, b[, c]])`; anything else is listed one per line.
fn function(name: String, mut list: Vec<FnMeta>) -> Function {
    // Metadata comes in hash order: sort so the page is the same every time.
    list.sort_by_cached_key(|f| (f.params.len(), params(f)));
    let doc = list.iter().map(|f| doc_text(&f.doc_comments)).find(|d| !d.is_empty()).unwrap_or_default();
    let returns = |f: &FnMeta| match readable(&f.return_type).as_str() {
        "" | "()" => String::new(),
        t => format!(" -> {t}"),
    };
    let all: Vec<Vec<String>> = list.iter().map(params).collect();
    let chained = all.windows(2).all(|w| w[1].starts_with(&w[0]))
        && list.windows(2).all(|w| returns(&w[0]) == returns(&w[1]));
    let signature = if chained && !all.is_empty() {
        let mut text = format!("{name}({}", all[0].join(", "));
        let mut opened = 0;
        for pair in all.windows(2) {
            let added = &pair[1][pair[0].len()..];
            if !added.is_empty() {
                let sep = if pair[0].is_empty() { "" } else { ", " };
                text += &format!("[{sep}{}", added.join(", "));
                opened += 1;
            }
        }
        format!("{text}{}){}", "]".repeat(opened), returns(&list[0]))
    } else {
        list.iter()
            .zip(&all)
            .map(|(f, p)| format!("{name}({}){}", p.join(", "), returns(f)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Function { name, signature, doc }
}

/// The handle types, by their Rust names, as scripts know them.
pub(crate) const HANDLE_TYPES: &[(&str, &str)] = &[
    ("VpcHandle", "Vpc"),
    ("SubnetHandle", "Subnet"),
    ("HostHandle", "Host"),
    ("NodeHandle", "Node"),
    ("InternetHandle", "Internet"),
    ("PeeringHandle", "Peering"),
];

/// Rhai's spelling of a Rust type, as a script writer knows it.
pub(crate) fn readable(rust_type: &str) -> String {
    let mut t = rust_type.trim().trim_start_matches("&mut ").trim_start_matches('&').trim().to_string();
    for wrapper in ["Res<", "Result<", "RhaiResultOf<"] {
        if let Some(inner) = t.strip_prefix(wrapper) {
            t = inner.split(", Box<").next().unwrap_or(inner).trim_end_matches('>').to_string();
        }
    }
    let t = match t.as_str() {
        "str" | "String" | "ImmutableString" => "string",
        "i64" | "INT" => "int",
        "f64" | "FLOAT" => "float",
        "Dynamic" => "any",
        "Map" => "map",
        "Array" => "array",
        other => HANDLE_TYPES.iter().find(|(rust, _)| *rust == other).map_or(other, |(_, script)| script),
    };
    readable_types(t)
}

/// Rhai's spelling of argument types in its messages, made readable:
/// `&str | ImmutableString | String` → `string`.
pub(crate) fn readable_types(signature: &str) -> String {
    signature
        .replace("&str | ImmutableString | String", "string")
        .replace("ImmutableString", "string")
        .replace("i64", "int")
        .replace("f64", "float")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, params: &[(&str, &str)], ret: &str) -> FnMeta {
        FnMeta {
            name: name.into(),
            params: params
                .iter()
                .map(|(n, t)| ParamMeta { name: Some(n.to_string()), typ: Some(t.to_string()) })
                .collect(),
            return_type: ret.into(),
            doc_comments: vec!["/// Does a thing.".into(), "/// In detail.".into()],
        }
    }

    #[test]
    fn overloads_that_extend_each_other_read_as_optional_parameters() {
        let f = function(
            "vpc".into(),
            vec![
                meta("vpc", &[("name", "&str"), ("cidr", "&str"), ("opts", "Map")], "Res<VpcHandle>"),
                meta("vpc", &[("name", "&str"), ("cidr", "&str")], "Res<VpcHandle>"),
            ],
        );
        assert_eq!(f.signature, "vpc(name: string, cidr: string[, opts: map]) -> Vpc");
        assert_eq!(f.doc, "Does a thing.\nIn detail.");
        assert_eq!(f.summary(), "Does a thing.");
    }

    #[test]
    fn unrelated_overloads_are_listed() {
        let f = function(
            "publish".into(),
            vec![meta("publish", &[("host", "Host")], "()"), meta("publish", &[("subnet", "Subnet")], "()")],
        );
        assert_eq!(f.signature, "publish(host: Host)\npublish(subnet: Subnet)");
    }

    #[test]
    fn the_reference_page_is_current() {
        let page = crate::script::tests::interpreter().reference().markdown();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference.md");
        if std::env::var_os("VPCSH_BLESS").is_some() {
            std::fs::write(path, &page).expect("docs/reference.md is writable");
        }
        let current = std::fs::read_to_string(path).unwrap_or_default();
        assert!(current == page, "docs/reference.md is out of date: VPCSH_BLESS=1 cargo test reference");
    }

    #[test]
    fn the_engine_documents_every_function_and_property() {
        let reference = crate::script::tests::interpreter().reference().clone();
        for name in ["vpc", "subnet", "host", "nat", "publish", "peer", "firewall", "policy_file", "apply"] {
            let f = reference.function(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(!f.doc.is_empty(), "{name} has no doc");
        }
        for name in ["run", "serve", "exec", "ping", "connect", "http_get", "internet", "destroy", "assert"] {
            assert!(reference.function(name).is_some_and(|f| !f.doc.is_empty()), "{name}");
        }
        assert_eq!(reference.property_names(Some("Vpc")), ["cidr", "cidr6", "name", "subnets"]);
        assert_eq!(reference.property_names(Some("Host")), ["ip", "ip6", "name", "node", "subnet", "vpc"]);
        assert_eq!(reference.property_names(Some("Node")), ["name", "underlay"]);
        assert!(reference.function("node").is_some_and(|f| !f.doc.is_empty()));
        assert!(reference.properties.iter().all(|p| !p.doc.is_empty()), "{:?}", reference.properties);
    }
}
