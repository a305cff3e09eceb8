//! `vpcsh repl`: one persistent engine and scope; declarations apply live after each input,
//! errors are diagnostics and the session carries on. Meta-commands start with `:`, and,
//! as in Mininet, `w1 ping w2` runs a command in host w1 with host names as addresses.

mod helper;
mod save;

use std::path::PathBuf;
use std::process::ExitCode;

use rustyline::error::ReadlineError;
use rustyline::{Config, Editor, history::DefaultHistory};

use crate::commands;
use crate::diag;
use crate::model::{self, Declarations, Network};
use crate::script::{Checkpoint, Interpreter, ScriptError};
use crate::session::{Failure, Interactive, Target};

use helper::Helper;

const HELP: &str = "\
Type Rhai: declarations apply as soon as the input is complete.
  let prod = vpc(\"prod\", \"10.10.0.0/16\");   let web = prod.subnet(\"web\", \"10.10.1.0/24\");
  ping(web, prod.subnets[0])        exec(web, \"ip addr\").stdout
Mininet style: HOST CMD ARGS...     (host names in ARGS become their addresses)
  w1 ping -c1 w2                    w1 curl http://w2/
Meta-commands:
  :help [function]   the functions, or one in detail
  :plan              what the next apply would change
  :status            each object: ok, missing or drifted
  :load FILE         run a script in this session
  :save FILE         write a script that rebuilds this session's topology
  :explain A B [PORT [PROTO]]   what the model says about A reaching B, and what blocks it
  :verify            probe every flow and compare with the model
  :undo              take back the last input: its declarations and what it made
  :reset             take back the whole session (asks first)
  :quit              leave (or Ctrl-D)
A failed input leaves no trace. Ctrl-C stops what runs (a command, a probe, an apply, which
rolls back) and returns here.";

/// A REPL session over one target.
struct Repl {
    target: Target,
    interpreter: Interpreter,
    inputs: usize,
    /// Where the session stood before each input that declared something, latest last
    /// (`:undo`).
    history: Vec<Point>,
    /// Where it stood when it began (`:reset`).
    start: Option<Point>,
    /// `exit(code)` was typed: leave with that status.
    exit: Option<i32>,
}

/// A point to go back to: the interpreter's, and the session's stack as it was applied.
#[derive(Clone)]
struct Point {
    input: String,
    checkpoint: Checkpoint,
    applied: Network,
}

enum Flow {
    Continue,
    Quit,
}

impl Repl {
    fn declarations(&self) -> Declarations {
        self.interpreter.declarations()
    }

    /// The session's network as it would be applied (with what exists and was not declared).
    fn network(&self) -> Result<Network, Failure> {
        Ok(Interactive::new(&self.target).network(&self.declarations())?.1)
    }

    fn print_error(&self, e: &crate::script::ScriptError) {
        diag::eprint(&diag::from_script_error(e, &self.interpreter.sources()));
    }

    /// Where the session stands now, before `input`.
    fn point(&self, input: &str) -> Option<Point> {
        let applied = Interactive::new(&self.target).applied().ok()?;
        Some(Point { input: input.to_string(), checkpoint: self.interpreter.checkpoint(), applied })
    }

    /// Evaluates one complete input, then applies what it declared. A failure takes the
    /// whole input back, declarations and what it made alike.
    fn eval(&mut self, name: &str, text: &str) {
        let before = self.point(text);
        let result = self.interpreter.eval_to_string(name, text).and_then(|value| {
            let summary = self.interpreter.apply_now()?;
            Ok((value, summary))
        });
        match result {
            Ok((value, s)) => {
                if s.created + s.changed + s.deleted > 0 {
                    println!("{s}");
                }
                if let Some(v) = value {
                    println!("{v}");
                }
                let declared = |p: &Point| p.checkpoint.extent() != self.declarations().extent();
                self.history.extend(before.filter(declared));
            }
            Err(ScriptError::Exit(code)) => self.exit = Some(code),
            Err(e) => {
                self.print_error(&e);
                if let Some(point) = before {
                    self.go_back(point, "the input was taken back");
                }
            }
        }
    }

    /// Restores a point: the interpreter, then the kernel.
    fn go_back(&mut self, point: Point, what: &str) {
        self.interpreter.restore(point.checkpoint);
        match Interactive::new(&self.target).apply_on(&self.declarations(), &point.applied) {
            Ok(s) if s.created + s.changed + s.deleted > 0 => println!("{what}: {s}"),
            Ok(_) => {}
            Err(f) => diag::eprint(&diag::from_failure(&f)),
        }
    }

    fn undo(&mut self) {
        match self.history.pop() {
            Some(point) => {
                let line = point.input.clone();
                self.go_back(point, "undone");
                println!("took back: {line}");
            }
            None => println!("nothing to undo"),
        }
    }

    fn reset(&mut self, editor: &mut Editor<Helper, DefaultHistory>) {
        let answer = editor.readline("take back everything this session declared and made? [y/N] ");
        if !matches!(answer.as_deref().map(str::trim), Ok("y" | "Y" | "yes")) {
            println!("kept");
            return;
        }
        if let Some(start) = self.start.clone() {
            self.go_back(start, "reset");
            self.history.clear();
        }
    }

    fn meta(&mut self, line: &str, editor: &mut Editor<Helper, DefaultHistory>) -> Flow {
        let (cmd, arg) = line.split_once(char::is_whitespace).map_or((line, ""), |(c, a)| (c, a.trim()));
        match cmd {
            ":quit" | ":q" | ":exit" => return Flow::Quit,
            ":undo" => self.undo(),
            ":reset" => self.reset(editor),
            ":help" | ":h" => self.help(arg),
            ":plan" => match self.plan() {
                Ok(text) => print!("{text}"),
                Err(f) => diag::eprint(&diag::from_failure(&f)),
            },
            ":status" => {
                if let Err(f) = commands::status(&self.target, false) {
                    diag::eprint(&diag::from_failure(&f));
                }
            }
            ":explain" if !arg.is_empty() => self.explain(arg),
            ":verify" => {
                if let Err(f) = commands::verify(&self.target, None, None, false) {
                    diag::eprint(&diag::from_failure(&f));
                }
            }
            ":load" if !arg.is_empty() => match std::fs::read_to_string(arg) {
                Ok(text) => self.eval(arg, &text),
                Err(e) => eprintln!("cannot read {arg}: {e}"),
            },
            ":save" if !arg.is_empty() => match self.network() {
                Ok(network) => match std::fs::write(arg, save::script(&network)) {
                    Ok(()) => println!("wrote {arg}"),
                    Err(e) => eprintln!("cannot write {arg}: {e}"),
                },
                Err(f) => diag::eprint(&diag::from_failure(&f)),
            },
            _ => println!("unknown command `{line}`; :help lists them"),
        }
        Flow::Continue
    }

    /// `:explain FROM TO [PORT [PROTO]]`, as `vpcsh explain` takes them.
    fn explain(&self, arg: &str) {
        let words: Vec<&str> = arg.split_whitespace().collect();
        let (port, proto) = match words.as_slice() {
            [_, _] => (80, "tcp"),
            [_, _, port] | [_, _, port, _] => match port.parse::<u16>() {
                Ok(p) => (p, words.get(3).copied().unwrap_or(if p == 0 { "icmp" } else { "tcp" })),
                Err(_) => return println!("`{port}` is not a port"),
            },
            _ => return println!("usage: :explain FROM TO [PORT [tcp|udp|icmp]]"),
        };
        if let Err(f) = commands::explain(&self.target, (words[0], words[1]), port, proto, false) {
            diag::eprint(&diag::from_failure(&f));
        }
    }

    /// `:help` lists the API; `:help NAME` shows a function or property in full.
    fn help(&self, arg: &str) {
        let reference = self.interpreter.reference();
        let name = arg.trim_start_matches('.').trim_end_matches("()");
        if name.is_empty() {
            println!("{HELP}\nFunctions (:help NAME for more):");
            for f in &reference.functions {
                println!("  {:<12} {}", f.name, f.summary());
            }
            println!("Properties: {}", reference.property_names(None).join(", "));
            return;
        }
        if let Some(f) = reference.any_function(name) {
            println!("{}\n\n{}", f.signature, f.doc);
            return;
        }
        let properties: Vec<_> = reference.properties.iter().filter(|p| p.name == name).collect();
        if properties.is_empty() {
            println!("no function or property `{name}`; :help lists them");
        }
        for p in properties {
            println!("{}.{}: {}", p.on, p.name, p.doc);
        }
    }

    fn plan(&self) -> Result<String, Failure> {
        let (mut runner, network) = Interactive::new(&self.target).network(&self.declarations())?;
        Ok(runner.plan(&network, false)?.to_string())
    }

    /// `HOST CMD ARGS...`: runs in that host, host names in ARGS replaced by addresses.
    /// `None` when the first word is not a host.
    fn mininet(&self, line: &str) -> Option<ExitCode> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (first, rest) = words.split_first()?;
        // `w1 = ...` or `w1.ip` are Rhai; `w1 ping w2` is a command.
        if !rest.first()?.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '/') {
            return None;
        }
        let network = self.network().ok()?;
        // `w1 ping -6 w2` means w2's IPv6 address.
        let hosts = helper::host_table(&network, rest.contains(&"-6"));
        let (vpc, host, _) = hosts.iter().find(|(v, h, _)| *h == *first || format!("{v}/{h}") == *first)?;
        let argv: Vec<String> = rest
            .iter()
            .map(|w| {
                let mut out = w.to_string();
                for (_, name, ip) in &hosts {
                    out = helper::replace_word(&out, name, &ip.to_string());
                }
                out
            })
            .collect();
        match commands::exec(&self.target, &format!("{vpc}/{host}"), &argv) {
            Ok(code) => Some(code),
            Err(f) => {
                diag::eprint(&diag::from_failure(&f));
                Some(ExitCode::FAILURE)
            }
        }
    }
}

fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("vpcsh").join("history"))
}

pub(crate) fn run(target: &Target) -> ExitCode {
    if let Err(f) = target.check() {
        diag::eprint(&diag::from_failure(&f));
        return ExitCode::from(1);
    }
    let interpreter = Interpreter::new(Box::new(Interactive::new(target)), model::Network::default());
    let mut repl =
        Repl { target: target.clone(), interpreter, inputs: 0, history: Vec::new(), start: None, exit: None };
    repl.start = repl.point("");
    // Ctrl-C stops what runs (a command in a host, a probe, an apply) and the session goes on.
    crate::exec::stop_on_signals();
    let config = Config::builder().auto_add_history(true).build();
    let mut editor: Editor<Helper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vpcsh: cannot start the line editor: {e}");
            return ExitCode::from(1);
        }
    };
    let color = diag::color();
    editor.set_helper(Some(Helper::new(color)));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let where_ = target.sandbox.as_deref().map_or("the real host".to_string(), |s| format!("sandbox {s}"));
    println!("vpcsh repl on {where_}: :help for help, Ctrl-D to leave");
    let prompt = if color { "\x1b[1;36mvpcsh>\x1b[0m " } else { "vpcsh> " };
    loop {
        if let Some(h) = editor.helper_mut() {
            h.refresh(&repl.interpreter, repl.network().ok().as_ref());
        }
        match editor.readline(prompt) {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if line.starts_with(':') {
                    if let Flow::Quit = repl.meta(line, &mut editor) {
                        break;
                    }
                } else if repl.mininet(line).is_none() {
                    repl.inputs += 1;
                    let name = format!("<input {}>", repl.inputs);
                    repl.eval(&name, line);
                }
                crate::exec::clear_interrupt();
                if repl.exit.is_some() {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("vpcsh: {e}");
                break;
            }
        }
    }
    if let Some(path) = &history {
        let _ = path.parent().map(std::fs::create_dir_all);
        let _ = editor.save_history(path);
    }
    ExitCode::from(repl.exit.unwrap_or(0) as u8)
}
