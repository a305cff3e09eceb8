//! Script errors: Rhai's errors and refused effects turned into spans, labels and help.

use rhai::{AST, Engine, EvalAltResult, ParseError};

use super::{EffectError, Shared, api, limits};
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
        }
    }
}

pub(super) fn from_parse(shared: &Shared, e: ParseError) -> ScriptError {
    let pos = e.position();
    let span = shared.span_at(None, pos);
    let span = Span { len: span.len.clamp(usize::from(span.start < text_len(shared, span)), 1), ..span };
    Fault::new(format!("syntax error: {}", e.err_type()), span, "here")
        .help("check the brackets, commas and semicolons around this point")
        .into()
}

fn text_len(shared: &Shared, span: Span) -> usize {
    shared.sources.get(span.source as usize).map_or(0, |s| s.text.len())
}

/// Converts an evaluation error, following it into script functions it passed through.
pub(super) fn from_eval(shared: &Shared, engine: &Engine, functions: &AST, e: EvalAltResult) -> ScriptError {
    convert(shared, engine, functions, e, None)
}

fn convert(
    shared: &Shared,
    engine: &Engine,
    functions: &AST,
    e: EvalAltResult,
    source: Option<&str>,
) -> ScriptError {
    let pos = e.position();
    let span = shared.span_at(source, pos);
    match e {
        EvalAltResult::ErrorRuntime(value, _) if value.is::<ScriptError>() => value.cast::<ScriptError>(),
        EvalAltResult::ErrorInFunctionCall(name, src, inner, _) => {
            let inner_source = if src.is_empty() { source.map(str::to_string) } else { Some(src) };
            let mut err = convert(shared, engine, functions, *inner, inner_source.as_deref());
            if let ScriptError::Fault(f) = &mut err {
                f.chain.push((name, span));
            }
            err
        }
        EvalAltResult::ErrorFunctionNotFound(signature, _) => {
            let name = signature.split([' ', '(']).next().unwrap_or(&signature).to_string();
            let args = signature[name.len()..].trim();
            let known = known_functions(engine, functions);
            if let Some(f) = api::function(&name) {
                return Fault::new(
                    format!("{name}() cannot take {}", api::readable_types(args)),
                    span,
                    "wrong argument types",
                )
                .help(format!("{}: {}", f.signature, f.doc))
                .into();
            }
            let mut fault = Fault::new(format!("no function `{name}`"), span, "unknown function");
            if let Some(best) = suggest(&name, known.iter().map(String::as_str)) {
                let hint = api::function(best).map_or(String::new(), |f| format!(": {}", f.signature));
                fault = fault.help(format!("did you mean `{best}`?{hint}"));
            } else if known.contains(&name) {
                fault.message = format!("`{name}` cannot take {}", api::readable_types(args));
                fault.label = "wrong argument types".into();
            }
            fault.into()
        }
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
            Fault::new(format!("{what} grew too large"), span, "too large")
                .help(format!(
                    "strings hold at most {} bytes, arrays {} items, maps {} entries",
                    limits::MAX_STRING_SIZE,
                    limits::MAX_ARRAY_SIZE,
                    limits::MAX_MAP_SIZE
                ))
                .into()
        }
        EvalAltResult::ErrorPropertyNotFound(text, _) | EvalAltResult::ErrorDotExpr(text, _) => {
            // Rhai says "Unknown property 'cdir' - a getter is not registered for type 'Vpc'".
            let mut quoted = text.split('\'').skip(1).step_by(2);
            let prop = quoted.next().unwrap_or(&text).to_string();
            let on = quoted.next().map_or(String::new(), |t| format!(" on a {t}"));
            let mut fault = Fault::new(format!("no property `{prop}`{on}"), span, "unknown property");
            if let Some(best) = suggest(&prop, super::bindings::PROPERTIES.iter().copied()) {
                fault = fault.help(format!("did you mean `{best}`?"));
            } else {
                fault = fault.help(format!("properties: {}", super::bindings::PROPERTIES.join(", ")));
            }
            fault.into()
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

fn known_functions(engine: &Engine, functions: &AST) -> Vec<String> {
    let mut names = engine.gen_fn_signatures(false);
    names.extend(functions.iter_functions().map(|f| format!("{}({})", f.name, f.params.join(", "))));
    names.into_iter().map(|s| s.split('(').next().unwrap_or(&s).trim().to_string()).collect()
}

/// An effect's error, placed at the call that asked for the effect.
pub(super) fn from_effect(e: EffectError, span: Span) -> ScriptError {
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
pub(super) fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
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
