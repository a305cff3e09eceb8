//! The command line: dispatch from the words (`args`) to the session layer and the
//! commands, and how results are printed. Exit codes: 0 success, 1 the script or the system
//! refused (diagnostic printed), 2 usage error.

mod args;
mod completions;
mod config;
mod rootless;
mod script;
mod test;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use args::{Cli, Command, Global, PolicyCommand};
use clap::Parser;
use config::{Color, Config};
use script::Output;

use crate::commands::graph::Format;

use crate::commands;
use crate::diag;
use crate::session::{self, Failure, Mode, Target};

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let out = Output { json: cli.global.json, quiet: cli.global.quiet, yes: cli.global.yes };
    // vpcsh's own helper processes take everything from their flags.
    let internal = cli.command.as_ref().is_some_and(Command::is_helper);
    let config = match if internal { Ok(Config::default()) } else { Config::load() } {
        Ok(config) => config,
        Err(failure) => {
            out.failure(&failure);
            return ExitCode::from(1);
        }
    };
    let global = &cli.global;
    diag::set_color(match global.color.or(config.color).unwrap_or(Color::Auto) {
        Color::Auto => None,
        Color::Always => Some(true),
        Color::Never => Some(false),
    });
    init_logging(global);
    let configured_jobs = config.jobs;
    let target = target_of(global, config);
    let need = match &cli.command {
        None if cli.script.is_none() && !std::io::stdin().is_terminal() => rootless::Need::Nothing,
        command => rootless::need(command.as_ref()),
    };
    let entered = match rootless::enter(&target, need) {
        Ok(entered) => entered,
        Err(failure) => {
            out.failure(&failure);
            return ExitCode::from(1);
        }
    };
    let mut command = match (cli.command, cli.script) {
        (Some(command), _) => command,
        (None, Some(script)) => match mistyped_command(&script) {
            Some(usage) => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
            None => Command::Apply { script, dry_run: false },
        },
        (None, None) if std::io::stdin().is_terminal() => return crate::repl::run(&target),
        (None, None) => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            return ExitCode::from(2);
        }
    };
    if let Command::Test { jobs, .. } = &mut command {
        *jobs = jobs.or(configured_jobs);
    }
    match run(command, &target, &out, entered.as_ref()) {
        Ok(code) => code,
        Err(failure) => match failure.exit_code() {
            Some(code) => ExitCode::from(code as u8),
            None => {
                out.failure(&failure);
                ExitCode::from(1)
            }
        },
    }
}

/// Where a command works: the flags, then the configuration file, then the defaults.
fn target_of(global: &Global, config: Config) -> Target {
    Target {
        state_dir: global
            .state_dir
            .clone()
            .or(config.state_dir)
            .unwrap_or_else(|| crate::state::default_dir(crate::exec::userns::privileged())),
        sandbox: global.sandbox.clone(),
        stack: global.stack.clone(),
        max_namespaces: global.max_namespaces.or(config.max_namespaces).unwrap_or(DEFAULT_MAX_NAMESPACES),
        prefix: global
            .prefix
            .clone()
            .or(config.prefix)
            .unwrap_or_else(|| crate::plan::naming::REAL_HOST_PREFIX.into()),
        uplink: global.uplink.clone().or(config.uplink),
        node: global.node.clone(),
        fabric: global.fabric.clone(),
        probe_timeout: global.probe_timeout.or(config.probe_timeout.map(|s| s.0)),
    }
}

/// `vpcsh statsu`: a word that is no file and is close to a subcommand is a usage error
/// with a suggestion, not a script that cannot be read.
fn mistyped_command(word: &Path) -> Option<String> {
    let text = word.to_str()?;
    if word.exists() || text.contains(['/', '.']) {
        return None;
    }
    let command = <Cli as clap::CommandFactory>::command();
    let names: Vec<&str> =
        command.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name()).collect();
    let best = crate::script::suggest(text, names.iter().copied())?;
    Some(format!(
        "error: `{text}` is neither a command nor a script\n\n  tip: did you mean `{best}`?\n\nFor more information, try '--help'."
    ))
}

/// How vpcsh reports as it works: log lines by `-v`/`-q`/`VPCSH_LOG`, and a progress line
/// for long applies when a person watches (stderr a terminal, neither `-q` nor `--json`).
fn init_logging(global: &Global) {
    if std::io::stderr().is_terminal() && !global.quiet && !global.json {
        crate::exec::progress::enable();
    }
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VPCSH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vpcsh={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(diag::color())
        .without_time()
        .try_init();
}

/// `--max-namespaces` unless configured: far above any lab, far below what exhausts a host.
const DEFAULT_MAX_NAMESPACES: usize = 20_000;

fn run(
    command: Command,
    target: &Target,
    out: &Output,
    rootless: Option<&rootless::Joined>,
) -> Result<ExitCode, Failure> {
    if matches!(command, Command::Apply { .. } | Command::Destroy { .. } | Command::Policy(_)) {
        crate::exec::stop_on_signals();
    }
    match command {
        Command::Apply { script, dry_run } => {
            return script::run(target, &script, if dry_run { Mode::DryRun } else { Mode::Apply }, out);
        }
        Command::Plan { script } => return script::run(target, &script, Mode::Plan, out),
        Command::Check { script } => return script::run(target, &script, Mode::Check, out),
        Command::Destroy { vpcs } => {
            out.summary("destroy", session::destroy(target, &vpcs)?);
            if let Some(keeper) = rootless.filter(|_| vpcs.is_empty()) {
                keeper.end();
            }
        }
        Command::Status { probe, counters } => {
            if counters {
                return commands::counters(target, out.json);
            }
            let status = commands::status(target, out.json)?;
            if !probe {
                return Ok(status);
            }
            let verified = commands::verify(target, None, None, out.json)?;
            return Ok(if status == ExitCode::SUCCESS { verified } else { status });
        }
        Command::Explain { from, to, port, proto } => {
            let port = if proto != "icmp" && port == 0 { 80 } else { port };
            return commands::explain(target, (&from, &to), port, &proto, out.json);
        }
        Command::Verify { script, sample } => {
            return commands::verify(target, script.as_deref(), sample, out.json);
        }
        Command::List => commands::list(target, out.json)?,
        Command::Exec { target: who, command } => return exec(target, &who, command),
        Command::Logs { target: who } => commands::logs(target, &who)?,
        Command::Flows { target: who, follow } => {
            return commands::flows(target, who.as_deref(), follow, out.json);
        }
        Command::Capture { target: who, write, filter, count, interface } => {
            let opts = commands::CaptureOptions { write, filter, count, interface };
            return commands::capture(target, &who, opts);
        }
        Command::Repl => return Ok(crate::repl::run(target)),
        Command::Reference => print!("{}", session::reference()),
        Command::Defs => print!("{}", session::definitions()),
        Command::Man | Command::Completions { .. } => generated(&command)?,
        Command::Targets => {
            for name in commands::targets(target)? {
                println!("{name}");
            }
        }
        Command::Graph { script, format } => {
            let network = match script {
                Some(script) => session::network_of(target, &script)?,
                None => session::applied(target)?,
            };
            let format = match format.as_str() {
                "mermaid" => Format::Mermaid,
                "svg" => Format::Svg,
                _ => Format::Dot,
            };
            print!("{}", commands::graph::render(&network, format)?);
        }
        Command::Policy(PolicyCommand::Apply { file, vpc }) => {
            out.summary("policy", session::apply_policy(target, &file, vpc.as_deref())?)
        }
        Command::Test { scripts, keep, jobs } => {
            let prefix = target.sandbox.clone();
            let state_dir = std::env::temp_dir();
            let jobs = jobs.unwrap_or(1);
            return Ok(test::run(test::Options { scripts, keep, jobs, state_dir, prefix, json: out.json }));
        }
        Command::Dns { .. }
        | Command::FlowLog { .. }
        | Command::Keep { .. }
        | Command::Reap { .. }
        | Command::Serve { .. } => helper(command)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The processes vpcsh starts for itself: a VPC's resolver, a sandbox's keeper, the
/// built-in HTTP server.
fn helper(command: Command) -> Result<(), Failure> {
    match command {
        Command::Dns { netns, records } => {
            crate::dnsd::serve(&netns, &records)
                .map_err(|e| Failure::refused(format!("resolver in {netns}: {e}"), None))?;
        }
        Command::FlowLog { netns } => {
            crate::exec::nft::flows::serve(&netns)
                .map_err(|e| Failure::refused(format!("flow log in {netns}: {e}"), None))?;
        }
        Command::Reap { fds } => {
            crate::exec::reaper::reap(&fds)
                .map_err(|e| Failure::refused(format!("taking deleted namespaces apart: {e}"), None))?;
        }
        Command::Keep { .. } => {
            crate::exec::userns::keep()
                .map_err(|e| Failure::refused(format!("keeping the sandbox's namespaces: {e}"), None))?;
        }
        Command::Serve { netns, port, body } => {
            crate::httpd::serve(&netns, port, &body)
                .map_err(|e| Failure::refused(format!("http server in {netns}: {e}"), None))?;
        }
        _ => {}
    }
    Ok(())
}

/// What vpcsh writes about itself: its manual page and shell completions.
fn generated(command: &Command) -> Result<(), Failure> {
    let written = match command {
        Command::Completions { shell } => {
            let shell = match shell.as_str() {
                "zsh" => clap_complete::Shell::Zsh,
                "fish" => clap_complete::Shell::Fish,
                _ => clap_complete::Shell::Bash,
            };
            completions::write(shell, &mut std::io::stdout())
        }
        _ => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout()),
    };
    written.map_err(|e| Failure::refused(format!("writing it out: {e}"), None))
}

/// `vpcsh exec TARGET [CMD...]`: with no command, an interactive shell on a terminal.
fn exec(target: &Target, who: &str, mut command: Vec<String>) -> Result<ExitCode, Failure> {
    if command.first().is_some_and(|w| w == "--") {
        command.remove(0);
    }
    if command.is_empty() {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: `vpcsh exec {who}` needs a command when not on a terminal: vpcsh exec {who} -- CMD ..."
            );
            return Ok(ExitCode::from(2));
        }
        command.push(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()));
    }
    commands::exec(target, who, &command)
}
