//! Script errors: Rhai's errors and refused effects turned into spans, labels and help.

use rhai::{AST, EvalAltResult, ParseError};

use super::effects::EffectError;
use super::limits;
use super::reference::{Reference, readable_types};
use super::span::{Source, span_at};
use super::stdlib::{MODULES, PREFIX};
use crate::model::{Problem, Span};

/// An error at a place in a script.
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
    /// Script functions the error passed through, innermost first: (function, call site).
    pub chain: Vec<(String, Span)>,
    pub notes: Vec<String>,
}

impl Fault {
    pub(crate) fn new(message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span,
            label: label.into(),
            help: None,
            chain: Vec::new(),
            notes: Vec::new(),
        }
    }
    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

#[derive(Clone, Debug)]
pub(crate) enum ScriptError {
    /// The declarations do not validate: every problem.
    Invalid(Vec<Problem>),
    Fault(Box<Fault>),
    /// `exit(code)`: the script ends here, and vpcsh with this status.
    Exit(i32),
}

impl From<Fault> for ScriptError {
    fn from(f: Fault) -> Self {
        ScriptError::Fault(Box::new(f))
    }
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptError::Invalid(problems) => {
                let msgs: Vec<_> = problems.iter().map(|p| p.message.as_str()).collect();
                write!(f, "{}", msgs.join("; "))
            }
            ScriptError::Fault(fault) => write!(f, "{}", fault.message),
            ScriptError::Exit(code) => write!(f, "exit({code})"),
        }
    }
}

pub(crate) fn from_parse(sources: &[Source], e: ParseError) -> ScriptError {
    let span = span_at(sources, None, e.position());
    let text_len = sources.get(span.source as usize).map_or(0, |s| s.text.len());
    let span = Span { len: span.len.clamp(usize::from(span.start < text_len), 1), ..span };
    Fault::new(format!("syntax error: {}", e.err_type()), span, "here")
        .help("check the brackets, commas and semicolons around this point")
        .into()
}

/// What converting an evaluation error needs to know.
pub(crate) struct EvalContext<'a> {
    pub sources: &'a [Source],
    pub reference: &'a Reference,
    /// Functions the script defined, for "did you mean".
    pub functions: &'a AST,
}

/// Converts an evaluation error of the source named `source`, following it into script
/// functions (and modules) it passed through.
pub(crate) fn from_eval(cx: &EvalContext, e: EvalAltResult, source: &str) -> ScriptError {
    convert(cx, e, Some(source))
}

fn convert(cx: &EvalContext, e: EvalAltResult, source: Option<&str>) -> ScriptError {
    let span = span_at(cx.sources, source, e.position());
    match e {
        EvalAltResult::ErrorRuntime(value, _) if value.is::<ScriptError>() => value.cast::<ScriptError>(),
        EvalAltResult::ErrorInFunctionCall(name, src, inner, _) => {
            let inner_source = if src.is_empty() { source.map(str::to_string) } else { Some(src) };
            let mut err = convert(cx, *inner, inner_source.as_deref());
            if let ScriptError::Fault(f) = &mut err {
                f.chain.push((name, span));
            }
            err
        }
        EvalAltResult::ErrorFunctionNotFound(signature, _) => function_not_found(cx, &signature, span),
        EvalAltResult::ErrorTooManyOperations(_) => Fault::new(
            format!("the script ran more than {} operations and was stopped", limits::MAX_OPERATIONS),
            span,
            "still running here",
        )
        .help("look for a loop that never ends")
        .into(),
        EvalAltResult::ErrorTerminated(..) => Fault::new("interrupted", span, "stopped here")
            .help("what this run applied before stays, and `vpcsh status` shows it; nothing is half-built")
            .into(),
        EvalAltResult::ErrorStackOverflow(_) => Fault::new("calls nest too deeply", span, "too deep here")
            .help("look for unbounded recursion")
            .into(),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            // Rhai names the value ("Length of string", "Size of array", "Size of object map").
            let (value, limit) = if what.contains("string") {
                ("a string", format!("{} bytes", limits::MAX_STRING_SIZE))
            } else if what.contains("array") {
                ("an array", format!("{} items", limits::MAX_ARRAY_SIZE))
            } else if what.contains("map") {
                ("a map", format!("{} entries", limits::MAX_MAP_SIZE))
            } else {
                ("a value", "its limit".to_string())
            };
            Fault::new(format!("{value} grew past {limit}"), span, "too large")
                .help(format!(
                    "strings hold at most {} bytes, arrays {} items, maps {} entries; look for a loop \
                     that keeps adding to one",
                    limits::MAX_STRING_SIZE,
                    limits::MAX_ARRAY_SIZE,
                    limits::MAX_MAP_SIZE
                ))
                .into()
        }
        EvalAltResult::ErrorDotExpr(..) => {
            Fault::new("properties of VPCs, subnets and hosts are read-only", span, "cannot set this")
                .help("declare a new object instead of changing one")
                .into()
        }
        EvalAltResult::ErrorModuleNotFound(path, _) => {
            let help = if path.starts_with(PREFIX) {
                let names: Vec<String> = MODULES.iter().map(|(n, _)| format!("{PREFIX}{n}")).collect();
                format!("the standard library has: {}", names.join(", "))
            } else {
                "other paths are files relative to the importing script (`.rhai` is added)".into()
            };
            Fault::new(format!("no module `{path}`"), span, "not found").help(help).into()
        }
        EvalAltResult::ErrorVariableNotFound(var, _) => {
            Fault::new(format!("no variable `{var}`"), span, "not defined")
                .help("declare it with `let` before using it")
                .into()
        }
        mut other => {
            other.clear_position();
            Fault::new(other.to_string(), span, "error here").into()
        }
    }
}

/// A call no function takes: a known function with the wrong arguments, or a typo.
fn function_not_found(cx: &EvalContext, signature: &str, span: Span) -> ScriptError {
    // Rhai writes the call as `name (type, type)`.
    let name = signature.split([' ', '(']).next().unwrap_or(signature).to_string();
    let args = signature[name.len()..].trim();
    if let Some(f) = cx.reference.function(&name) {
        return Fault::new(
            format!("{name}() cannot take {}", readable_types(args)),
            span,
            "wrong argument types",
        )
        .help(format!("{}: {}", f.signature, f.summary()))
        .into();
    }
    let script_functions: Vec<&str> = cx.functions.iter_functions().map(|f| f.name).collect();
    let known =
        cx.reference.functions.iter().map(|f| f.name.as_str()).chain(script_functions.iter().copied());
    let mut fault = Fault::new(format!("no function `{name}`"), span, "unknown function");
    if let Some(best) = suggest(&name, known) {
        let hint = cx.reference.function(best).map_or(String::new(), |f| format!(": {}", f.signature));
        fault = fault.help(format!("did you mean `{best}`?{hint}"));
    } else if script_functions.contains(&name.as_str()) {
        fault.message = format!("`{name}` cannot take {}", readable_types(args));
        fault.label = "wrong argument types".into();
    }
    fault.into()
}

/// An effect's error, placed at the call that asked for the effect.
pub(crate) fn from_effect(e: EffectError, span: Span) -> ScriptError {
    match e {
        EffectError::Invalid(problems) => ScriptError::Invalid(problems),
        EffectError::Failed { message, help, notes } => {
            let mut fault = Fault::new(message, span, "while doing this");
            fault.help = help;
            fault.notes = notes;
            fault.into()
        }
    }
}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.len() / 3).max(1);
    candidates
        .filter(|c| *c != word)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["subnet", "host", "vpc", "apply"];
        assert_eq!(suggest("subnte", names.iter().copied()), Some("subnet"));
        assert_eq!(suggest("hots", names.iter().copied()), Some("host"));
        assert_eq!(suggest("frobnicate", names.iter().copied()), None);
    }
}
