//! The Rhai layer: an engine whose functions record declarations into the model, with the
//! span of every call, and hand effects (`apply()`, `destroy()`) to an `Effects` the caller
//! supplies. Nothing here touches the kernel.

mod context;
mod declare;
mod effects;
mod errors;
mod explain;
mod fabric;
mod handles;
mod impair;
mod modules;
mod policy;
mod probes;
mod reference;
mod span;
mod stdlib;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use rhai::{AST, Engine, Scope};

pub(crate) use effects::{EffectError, Effects, Endpoint, ExecOutput, ProbeOptions, Prober};
pub(crate) use errors::{Fault, ScriptError, suggest};
pub(crate) use reference::{Function, Reference};
pub(crate) use span::Source;

use crate::model::{Declarations, Network, Span};
use crate::plan::Summary;
use context::{Shared, SharedRef};

/// Limits that turn a runaway script into a diagnostic instead of a hang.
pub(crate) mod limits {
    pub(crate) const MAX_OPERATIONS: u64 = 10_000_000;
    pub(crate) const MAX_CALL_LEVELS: usize = 64;
    pub(crate) const MAX_EXPR_DEPTH: usize = 64;
    /// Small enough that a loop adding to a string one piece at a time (each addition
    /// copies it) reaches the limit within about a second.
    pub(crate) const MAX_STRING_SIZE: usize = 256 << 10;
    pub(crate) const MAX_ARRAY_SIZE: usize = 100_000;
    pub(crate) const MAX_MAP_SIZE: usize = 10_000;
}

/// A point an interpreter can go back to: its declarations, variables and functions.
#[derive(Clone)]
pub(crate) struct Checkpoint {
    decls: Declarations,
    scope: Scope<'static>,
    functions: AST,
}

impl Checkpoint {
    /// How much was declared at this point (see `Declarations::extent`).
    pub(crate) fn extent(&self) -> [usize; 12] {
        self.decls.extent()
    }
}

/// One Rhai engine and scope over one set of declarations; scripts and REPL lines run in it.
pub(crate) struct Interpreter {
    engine: Engine,
    scope: Scope<'static>,
    /// Functions defined so far, kept for later inputs (REPL).
    functions: AST,
    shared: SharedRef,
    /// The API's functions and properties, read from the engine once, when first needed
    /// (a diagnostic, the REPL's help): reading them costs more than a short script's run.
    reference: OnceCell<Reference>,
    /// Whether a quiet run printed (and so must run again to be seen).
    printed: Rc<Cell<bool>>,
}

impl Interpreter {
    pub(crate) fn new(effects: Box<dyn Effects>, previous: Network) -> Self {
        let shared = Rc::new(RefCell::new(Shared::new(effects, previous)));
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits::MAX_OPERATIONS)
            .set_max_call_levels(limits::MAX_CALL_LEVELS)
            .set_max_expr_depths(limits::MAX_EXPR_DEPTH, limits::MAX_EXPR_DEPTH)
            .set_max_string_size(limits::MAX_STRING_SIZE)
            .set_max_array_size(limits::MAX_ARRAY_SIZE)
            .set_max_map_size(limits::MAX_MAP_SIZE);
        // The API writes `#{ public: true }`, but Rhai reserves `public`: read it as a name.
        #[allow(deprecated)]
        engine.on_parse_token(|token, _, _| match token {
            rhai::Token::Reserved(word) if word.as_str() == "public" => rhai::Token::Identifier(word),
            other => other,
        });
        // Ctrl-C (or `vpcsh test` stopping a fixture) ends the script between operations.
        engine.on_progress(|_| crate::exec::interrupted().then(|| rhai::Dynamic::from("interrupted")));
        engine.register_type_with_name::<ScriptError>("Error");
        engine.register_fn("to_string", |e: &mut ScriptError| e.to_string());
        handles::register(&mut engine);
        declare::register(&mut engine);
        fabric::register(&mut engine);
        probes::register(&mut engine);
        explain::register(&mut engine);
        policy::register(&mut engine);
        impair::register(&mut engine);
        engine.set_module_resolver(modules::Resolver::new());
        // Plugin functions reach the declarations through the engine's tag.
        engine.set_default_tag(rhai::Dynamic::from(shared.clone()));
        Self {
            engine,
            scope: Scope::new(),
            functions: AST::empty(),
            shared,
            reference: OnceCell::new(),
            printed: Rc::default(),
        }
    }

    /// Silences `print` and `debug` (the validation pass of a batch run).
    pub(crate) fn quiet(&mut self) {
        let (printed, debugged) = (self.printed.clone(), self.printed.clone());
        self.engine.on_print(move |_| printed.set(true)).on_debug(move |_, _, _| debugged.set(true));
    }

    /// Whether the script run so far only declared: it printed nothing (while quiet), and
    /// applied, probed, ran and asserted nothing. Running it again would declare the same.
    pub(crate) fn only_declared(&self) -> bool {
        !self.printed.get() && !self.shared.borrow().acted
    }

    /// From now on effects go to `effects`: a held-back run that only declared goes on to
    /// apply what it found (see `only_declared`).
    pub(crate) fn set_effects(&mut self, effects: Box<dyn Effects>) {
        self.shared.borrow_mut().effects = effects;
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
        self.shared.borrow_mut().sources.push(Source::new(name, text));
        let mut ast = self
            .engine
            .compile_with_scope(&self.scope, text)
            .map_err(|e| errors::from_parse(&self.shared.borrow().sources, e))?;
        ast.set_source(name);
        let mut combined = self.functions.merge(&ast);
        combined.set_source(name);
        let result = self.engine.eval_ast_with_scope::<rhai::Dynamic>(&mut self.scope, &combined);
        self.functions.combine(ast.clone_functions_only());
        result.map_err(|e| {
            let shared = self.shared.borrow();
            let cx = errors::EvalContext {
                sources: &shared.sources,
                reference: self.reference(),
                functions: &self.functions,
            };
            errors::from_eval(&cx, *e, name)
        })
    }

    /// Where the interpreter stands now (before a REPL input).
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            decls: self.shared.borrow().decls.clone(),
            scope: self.scope.clone(),
            functions: self.functions.clone(),
        }
    }

    /// Goes back to a checkpoint: what was declared, defined or assigned since is gone.
    pub(crate) fn restore(&mut self, to: Checkpoint) {
        self.shared.borrow_mut().decls = to.decls;
        self.scope = to.scope;
        self.functions = to.functions;
    }

    /// Rhai definition files of the API (`.d.rhai`, one text), for editors; types spelled as
    /// scripts know them (`Vpc`, not the Rust `Res<VpcHandle>`).
    pub(crate) fn definitions(&self) -> String {
        let mut text = self.engine.definitions().single_file();
        while let Some(start) = text.find("Res<") {
            let Some(len) = text[start..].find('>') else { break };
            let inner = reference::readable(text[start + 4..start + len].trim());
            text.replace_range(start..=start + len, &inner);
        }
        for (rust, script) in reference::HANDLE_TYPES {
            text = text.replace(rust, script);
        }
        text
    }

    /// The script API, from the engine's metadata.
    pub(crate) fn reference(&self) -> &Reference {
        self.reference.get_or_init(|| Reference::of(&self.engine))
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

#[cfg(test)]
pub(crate) mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;
    use crate::model::WorkloadKind;

    /// Effects that do nothing, for tests of the script layer alone.
    struct Inert;

    impl Effects for Inert {
        fn apply(&mut self, _: &Declarations) -> Result<Summary, EffectError> {
            Ok(Summary::default())
        }
        fn held_back(&self) -> bool {
            true
        }
        fn sandboxed(&self) -> bool {
            true
        }
        fn workload_pid(&mut self, _: &str, _: &str, _: &WorkloadKind) -> i64 {
            0
        }
        fn prober(&mut self) -> &mut dyn Prober {
            self
        }
    }

    impl Prober for Inert {
        fn exec(&mut self, _: &Endpoint, _: &[String], _: Duration) -> Result<ExecOutput, EffectError> {
            Ok(ExecOutput::default())
        }
        fn resolve(&mut self, _: &Endpoint, _: &str, _: ProbeOptions) -> Result<Option<IpAddr>, EffectError> {
            Ok(None)
        }
        fn ping(
            &mut self,
            _: &Endpoint,
            _: IpAddr,
            _: ProbeOptions,
        ) -> Result<Option<std::time::Duration>, EffectError> {
            Ok(Some(std::time::Duration::ZERO))
        }
        fn connect(&mut self, _: &Endpoint, _: IpAddr, _: u16, _: ProbeOptions) -> Result<bool, EffectError> {
            Ok(true)
        }
        fn http_get(
            &mut self,
            _: &Endpoint,
            _: IpAddr,
            _: u16,
            _: &str,
            _: ProbeOptions,
        ) -> Result<(u16, String), EffectError> {
            Ok((200, String::new()))
        }
    }

    pub(crate) fn interpreter() -> Interpreter {
        Interpreter::new(Box::new(Inert), Network::default())
    }

    /// A held-back run that only declared can stand for the run for real; one that printed,
    /// asserted, applied, probed or ran a command cannot.
    #[test]
    fn only_a_run_that_declares_stands_for_the_real_one() {
        let declares =
            "let v = vpc(\"v\", \"10.9.0.0/16\"); let a = v.subnet(\"s\", \"10.9.1.0/24\").host(\"a\");";
        let cases = [
            ("", true),
            ("print(\"hi\");", false),
            ("debug(1);", false),
            ("assert(true, \"holds\");", false),
            ("apply();", false),
            ("ping(a, a);", false),
            ("exec(a, \"true\");", false),
        ];
        for (then, only) in cases {
            let mut run = interpreter();
            run.quiet();
            run.run("t.rhai", &format!("{declares} {then}")).unwrap();
            assert_eq!(run.only_declared(), only, "{then}");
        }
    }
}
