//! Diagnostics: script errors and validation problems rendered with miette, underlining the
//! script text at fault; system errors with what to do about them.

use std::io::IsTerminal;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use crate::model::{Problem, Span};
use crate::script::{Fault, ScriptError, Source};
use crate::session::{Failure, Warnings};

/// One renderable diagnostic.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Diag {
    pub message: String,
    severity: miette::Severity,
    src: Option<Box<NamedSource<String>>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl Diagnostic for Diag {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.src.as_deref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        (!self.labels.is_empty())
            .then(|| Box::new(self.labels.iter().cloned()) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

impl Diag {
    /// A diagnostic with no script text to point at.
    pub(crate) fn plain(message: impl Into<String>, help: Option<String>) -> Self {
        Self {
            message: message.into(),
            severity: miette::Severity::Error,
            src: None,
            labels: Vec::new(),
            help,
        }
    }

    /// The same, as a warning: printed, but nothing fails.
    pub(crate) fn warning(mut self) -> Self {
        self.severity = miette::Severity::Warning;
        self
    }

    fn at(message: String, sources: &[Source], primary: (Span, String), others: Vec<(Span, String)>) -> Self {
        let (span, label) = primary;
        let mut notes = Vec::new();
        let src = sources.get(span.source as usize);
        let mut labels = vec![LabeledSpan::new_primary_with_span(Some(label), (span.start, span.len))];
        for (other, label) in others {
            if other.source == span.source {
                labels.push(LabeledSpan::new_with_span(Some(label), (other.start, other.len)));
            } else if let Some(s) = sources.get(other.source as usize) {
                let (line, col) = line_col(&s.text, other.start);
                notes.push(format!("{label} at {}:{line}:{col}", s.name));
            }
        }
        Self {
            message,
            severity: miette::Severity::Error,
            src: src.map(|s| Box::new(NamedSource::new(&s.name, s.text.clone()))),
            labels,
            help: None,
        }
        .with_notes(notes)
    }

    fn with_notes(mut self, notes: Vec<String>) -> Self {
        if !notes.is_empty() {
            let joined = notes.join("\n");
            self.help = Some(match self.help.take() {
                Some(h) => format!("{h}\n{joined}"),
                None => joined,
            });
        }
        self
    }
}

/// 1-based line and character column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(crate) fn from_problem(p: &Problem, sources: &[Source]) -> Diag {
    let mut d = Diag::at(p.message.clone(), sources, (p.span, p.label.clone()), p.related.clone());
    d.help = match (p.help.clone(), d.help.take()) {
        (Some(h), Some(notes)) => Some(format!("{h}\n{notes}")),
        (h, n) => h.or(n),
    };
    d
}

pub(crate) fn from_fault(f: &Fault, sources: &[Source]) -> Diag {
    let chain = f.chain.iter().map(|(name, span)| (*span, format!("in call to `{name}`"))).collect();
    let mut d = Diag::at(f.message.clone(), sources, (f.span, f.label.clone()), chain);
    let extra = d.help.take();
    d.help = f.help.clone();
    d.with_notes(f.notes.clone().into_iter().chain(extra).collect())
}

pub(crate) fn from_script_error(e: &ScriptError, sources: &[Source]) -> Vec<Diag> {
    match e {
        ScriptError::Invalid(problems) => problems.iter().map(|p| from_problem(p, sources)).collect(),
        ScriptError::Fault(f) => vec![from_fault(f, sources)],
        ScriptError::Exit(_) => Vec::new(),
    }
}

/// A failed run as diagnostics.
pub(crate) fn from_failure(f: &Failure) -> Vec<Diag> {
    match f {
        Failure::Script { error, sources } => from_script_error(error, sources),
        Failure::Problems(problems) => {
            problems.iter().map(|p| Diag::plain(p.message.clone(), p.help.clone())).collect()
        }
        Failure::Refused { message, help, notes } => {
            let help = help.iter().chain(notes).cloned().collect::<Vec<_>>().join("\n");
            vec![Diag::plain(message.clone(), (!help.is_empty()).then_some(help))]
        }
    }
}

/// Validation warnings as warning diagnostics.
pub(crate) fn from_warnings(w: &Warnings) -> Vec<Diag> {
    w.problems.iter().map(|p| from_problem(p, &w.sources).warning()).collect()
}

/// A failure as JSON diagnostics: `{severity, message, file, line, column, label, help,
/// related: [{file, line, column, label}]}`, positions where the failure has them.
pub(crate) fn failure_json(f: &Failure) -> Vec<serde_json::Value> {
    match f {
        Failure::Script { error: ScriptError::Invalid(problems), sources } => {
            problems.iter().map(|p| problem_json(p, sources, "error")).collect()
        }
        Failure::Script { error: ScriptError::Exit(_), .. } => Vec::new(),
        Failure::Script { error: ScriptError::Fault(fault), sources } => {
            let mut d = located(fault.span, sources);
            d["severity"] = "error".into();
            d["message"] = fault.message.clone().into();
            d["label"] = fault.label.clone().into();
            d["help"] = fault.help.clone().into();
            d["related"] = fault
                .chain
                .iter()
                .map(|(name, span)| related(*span, &format!("in call to `{name}`"), sources))
                .collect();
            d["notes"] = fault.notes.clone().into();
            vec![d]
        }
        Failure::Problems(problems) => problems.iter().map(|p| problem_json(p, &[], "error")).collect(),
        Failure::Refused { message, help, notes } => {
            vec![serde_json::json!({ "severity": "error", "message": message, "help": help, "notes": notes })]
        }
    }
}

/// Warnings as JSON diagnostics.
pub(crate) fn warnings_json(w: &Warnings) -> Vec<serde_json::Value> {
    w.problems.iter().map(|p| problem_json(p, &w.sources, "warning")).collect()
}

fn problem_json(p: &Problem, sources: &[Source], severity: &str) -> serde_json::Value {
    let mut d = located(p.span, sources);
    d["severity"] = severity.into();
    d["message"] = p.message.clone().into();
    d["label"] = p.label.clone().into();
    d["help"] = p.help.clone().into();
    d["related"] = p.related.iter().map(|(span, label)| related(*span, label, sources)).collect();
    d
}

/// `{file, line, column}` of a span, when its source is known.
fn located(span: Span, sources: &[Source]) -> serde_json::Value {
    match sources.get(span.source as usize) {
        Some(s) => {
            let (line, column) = line_col(&s.text, span.start);
            serde_json::json!({ "file": s.name, "line": line, "column": column })
        }
        None => serde_json::json!({}),
    }
}

fn related(span: Span, label: &str, sources: &[Source]) -> serde_json::Value {
    let mut r = located(span, sources);
    r["label"] = label.into();
    r
}

/// `--color always|never` (or the config's), set once at start; `None` is auto.
static COLOR_CHOICE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();

/// Fixes the colour choice for this process: `Some` forces it, `None` leaves it to [`color`].
pub(crate) fn set_color(choice: Option<bool>) {
    let _ = COLOR_CHOICE.set(choice);
}

/// Whether to colour output on stderr: as chosen, else a terminal and `NO_COLOR` unset.
pub(crate) fn color() -> bool {
    COLOR_CHOICE.get().copied().flatten().unwrap_or_else(|| {
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    })
}

/// Renders a diagnostic as text (coloured when `color`).
pub(crate) fn render(d: &Diag, color: bool) -> String {
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1).with_width(100);
    let mut out = String::new();
    if handler.render_report(&mut out, d).is_err() {
        out = format!("error: {}\n", d.message);
    }
    out
}

/// Prints diagnostics to stderr.
pub(crate) fn eprint(diags: &[Diag]) {
    let color = color();
    for d in diags {
        eprint!("{}", render(d, color));
    }
}
