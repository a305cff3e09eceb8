//! `import "vpcsh/<module>"`: the standard library, embedded in the binary from `stdlib/`
//! (so a copied binary has it); any other path is a file relative to the importing script.

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

use super::context::SharedRef;
use super::span::Source;
use super::stdlib::{MODULES, PREFIX};

pub(super) struct Resolver {
    files: FileModuleResolver,
}

impl Resolver {
    pub(super) fn new() -> Self {
        Self { files: FileModuleResolver::new() }
    }
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let Some(name) = path.strip_prefix(PREFIX) else {
            return self.files.resolve(engine, source, path, pos);
        };
        let Some((_, text)) = MODULES.iter().find(|(n, _)| *n == name) else {
            return Err(EvalAltResult::ErrorModuleNotFound(path.into(), pos).into());
        };
        // Its text joins the sources, so a mistake inside it is shown where it is.
        if let Some(shared) = engine.default_tag().clone().try_cast::<SharedRef>() {
            let mut shared = shared.borrow_mut();
            if !shared.sources.iter().any(|s| s.name == path) {
                shared.sources.push(Source::new(path, *text));
            }
        }
        let mut ast =
            engine.compile(*text).map_err(|e| EvalAltResult::ErrorInModule(path.into(), e.into(), pos))?;
        ast.set_source(path);
        Ok(Module::eval_ast_as_new(Scope::new(), &ast, engine)?.into())
    }
}
