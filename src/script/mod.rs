//! The Rhai layer: an engine whose functions record declarations into the model, with the
//! span of every call, and hand effects (`apply()`, `destroy()`) to an `Effects` the caller
//! supplies. Nothing here touches the kernel.

pub(crate) mod api;
mod bindings;
mod effects;
mod errors;
pub(crate) mod policy;
pub(crate) mod span;

use std::cell::RefCell;
use std::rc::Rc;

use rhai::{AST, Engine, Position, Scope};

pub(crate) use errors::{Fault, ScriptError};

use crate::model::{Declarations, Network, Problem, Span};
use crate::plan::Summary;

/// Limits that turn a runaway script into a diagnostic instead of a hang.
pub(crate) mod limits {
    pub(crate) const MAX_OPERATIONS: u64 = 10_000_000;
    pub(crate) const MAX_CALL_LEVELS: usize = 64;
    pub(crate) const MAX_EXPR_DEPTH: usize = 64;
    pub(crate) const MAX_STRING_SIZE: usize = 1 << 20;
    pub(crate) const MAX_ARRAY_SIZE: usize = 100_000;
    pub(crate) const MAX_MAP_SIZE: usize = 10_000;
}

/// A script text, named for diagnostics.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub name: String,
    pub text: String,
}

/// Why an effect could not happen.
#[derive(Clone, Debug)]
pub(crate) enum EffectError {
    /// The declarations so far do not validate.
    Invalid(Vec<Problem>),
    /// The system refused: what was being done, what to do about it, and further detail.
    Failed { message: String, help: Option<String>, notes: Vec<String> },
}

/// Where a command or probe runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Host { vpc: String, host: String },
    Internet,
}

/// What `exec()` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExecOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What effect functions do. The session layer implements it over state, plan and exec;
/// under `check`/`plan` effects are held back.
pub(crate) trait Effects {
    /// Makes reality match the declarations (validating them first).
    fn apply(&mut self, decls: &Declarations) -> Result<Summary, EffectError>;
    /// Whether effects are held back (check, plan, dry run).
    fn held_back(&self) -> bool;
    /// Makes reality match the declarations at the end of a script, exactly.
    fn finish(&mut self, decls: &Declarations) -> Result<Summary, EffectError> {
        self.apply(decls)
    }
    /// Everything applied so far in this run.
    fn total(&self) -> Summary {
        Summary::default()
    }
    /// Whether there is a simulated internet.
    fn sandboxed(&self) -> bool;
    /// The pid of a running workload (0 when held back or not running).
    fn workload_pid(&mut self, vpc: &str, host: &str, kind: &crate::model::WorkloadKind) -> i64;
    /// Where commands and probes run.
    fn prober(&mut self) -> &mut dyn Prober;
    /// Effects held back, as `would run: ...` lines for `plan`.
    fn would_run(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Commands and probes: `exec()`, `ping()`, `connect()`, `http_get()`.
pub(crate) trait Prober {
    fn exec(
        &mut self,
        on: &Endpoint,
        argv: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput, EffectError>;
    fn ping(&mut self, from: &Endpoint, to: std::net::Ipv4Addr) -> Result<bool, EffectError>;
    fn connect(&mut self, from: &Endpoint, to: std::net::Ipv4Addr, port: u16) -> Result<bool, EffectError>;
    fn http_get(
        &mut self,
        from: &Endpoint,
        to: std::net::Ipv4Addr,
        port: u16,
        path: &str,
    ) -> Result<(u16, String), EffectError>;
}

pub(crate) struct Shared {
    pub decls: Declarations,
    pub sources: Vec<Source>,
    pub effects: Box<dyn Effects>,
    /// The network last applied, so automatic addresses stay where they were.
    pub previous: Network,
}

impl Shared {
    /// The span of the call at `pos` in the source named `source`.
    pub(crate) fn span_at(&self, source: Option<&str>, pos: Position) -> Span {
        let id = source
            .and_then(|name| self.sources.iter().rposition(|s| s.name == name))
            .unwrap_or(self.sources.len().saturating_sub(1));
        let Some(src) = self.sources.get(id) else {
            return Span::default();
        };
        let (Some(line), Some(col)) = (pos.line(), pos.position()) else {
            return Span { source: id as u32, start: src.text.len(), len: 0 };
        };
        let (start, len) = span::widen(&src.text, span::offset(&src.text, line, col));
        Span { source: id as u32, start, len }
    }
}

/// One Rhai engine and scope over one set of declarations; scripts and REPL lines run in it.
pub(crate) struct Interpreter {
    engine: Engine,
    scope: Scope<'static>,
    /// Functions defined so far, kept for later inputs (REPL).
    functions: AST,
    shared: Rc<RefCell<Shared>>,
}

impl Interpreter {
    pub(crate) fn new(effects: Box<dyn Effects>, previous: Network) -> Self {
        let shared = Rc::new(RefCell::new(Shared {
            decls: Declarations::default(),
            sources: Vec::new(),
            effects,
            previous,
        }));
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits::MAX_OPERATIONS)
            .set_max_call_levels(limits::MAX_CALL_LEVELS)
            .set_max_expr_depths(limits::MAX_EXPR_DEPTH, limits::MAX_EXPR_DEPTH)
            .set_max_string_size(limits::MAX_STRING_SIZE)
            .set_max_array_size(limits::MAX_ARRAY_SIZE)
            .set_max_map_size(limits::MAX_MAP_SIZE);
        // SPEC.md writes `#{ public: true }`, but Rhai reserves `public`: read it as a name.
        #[allow(deprecated)]
        engine.on_parse_token(|token, _, _| match token {
            rhai::Token::Reserved(word) if word.as_str() == "public" => rhai::Token::Identifier(word),
            other => other,
        });
        // Ctrl-C (or `vpcsh test` stopping a fixture) ends the script between operations.
        engine.on_progress(|_| crate::exec::interrupted().then(|| rhai::Dynamic::from("interrupted")));
        bindings::register(&mut engine, &shared);
        Self { engine, scope: Scope::new(), functions: AST::empty(), shared }
    }

    /// Silences `print` and `debug` (the validation pass of a batch run).
    pub(crate) fn quiet(&mut self) {
        self.engine.on_print(|_| {}).on_debug(|_, _, _| {});
    }

    /// Runs a script text in this interpreter's scope.
    pub(crate) fn run(&mut self, name: &str, text: &str) -> Result<(), ScriptError> {
        self.eval(name, text).map(|_| ())
    }

    /// Runs a text and renders its value, if it has one (what the REPL prints).
    pub(crate) fn eval_to_string(&mut self, name: &str, text: &str) -> Result<Option<String>, ScriptError> {
        let value = self.eval(name, text)?;
        if value.is_unit() {
            return Ok(None);
        }
        let mut scope = Scope::new();
        scope.push("value", value.clone());
        Ok(Some(
            self.engine
                .eval_with_scope::<String>(&mut scope, "to_string(value)")
                .unwrap_or_else(|_| value.to_string()),
        ))
    }

    fn eval(&mut self, name: &str, text: &str) -> Result<rhai::Dynamic, ScriptError> {
        self.shared.borrow_mut().sources.push(Source { name: name.into(), text: text.into() });
        let mut ast = self
            .engine
            .compile_with_scope(&self.scope, text)
            .map_err(|e| errors::from_parse(&self.shared.borrow(), e))?;
        ast.set_source(name);
        let mut combined = self.functions.merge(&ast);
        combined.set_source(name);
        let result = self.engine.eval_ast_with_scope::<rhai::Dynamic>(&mut self.scope, &combined);
        self.functions.combine(ast.clone_functions_only());
        result.map_err(|e| errors::from_eval(&self.shared.borrow(), &self.engine, &self.functions, *e))
    }

    /// The names of the variables the session has defined.
    pub(crate) fn variables(&self) -> Vec<String> {
        self.scope.iter_raw().map(|(name, _, _)| name.to_string()).collect()
    }

    /// Makes reality match the declarations so far (after a REPL input).
    pub(crate) fn apply_now(&mut self) -> Result<Summary, ScriptError> {
        let mut shared = self.shared.borrow_mut();
        let decls = shared.decls.clone();
        let end = Span { source: shared.sources.len().saturating_sub(1) as u32, start: 0, len: 0 };
        shared.effects.apply(&decls).map_err(|e| errors::from_effect(e, end))
    }

    /// Effects held back so far, as `would run: ...` lines.
    pub(crate) fn would_run(&self) -> Vec<String> {
        self.shared.borrow().effects.would_run()
    }

    pub(crate) fn declarations(&self) -> Declarations {
        self.shared.borrow().decls.clone()
    }

    pub(crate) fn sources(&self) -> Vec<Source> {
        self.shared.borrow().sources.clone()
    }

    /// Makes reality match everything declared so far (the end of a script); returns the
    /// total of every apply in this run.
    pub(crate) fn apply(&mut self) -> Result<Summary, ScriptError> {
        let mut shared = self.shared.borrow_mut();
        let decls = shared.decls.clone();
        let end = shared.sources.last().map_or(Span::default(), |s| Span {
            source: (shared.sources.len() - 1) as u32,
            start: s.text.len(),
            len: 0,
        });
        shared.effects.finish(&decls).map_err(|e| errors::from_effect(e, end))?;
        Ok(shared.effects.total())
    }
}
