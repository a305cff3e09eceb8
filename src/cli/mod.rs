//! The command line: clap definitions, and dispatch to the session layer. Exit codes: 0
//! success, 1 the script or the system refused (diagnostic printed), 2 usage error.

mod test;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::diag;
use crate::session::{self, Deletions, Failure, Mode, Outcome, Target, Ui, Warnings};

const ABOUT: &str = "Build AWS-style virtual private clouds on one Linux host from network namespaces, \
veth pairs, bridges and routes, described as Rhai scripts.";

const AFTER_HELP: &str = "\
Examples:
  vpcsh --sandbox demo scripts/demo.rhai     build the demo inside a sandbox (no host changes)
  vpcsh --sandbox demo list                  what is there
  vpcsh --sandbox demo exec prod/w1 -- ip addr
  vpcsh --sandbox demo destroy               remove the sandbox and everything in it

A script declares VPCs, subnets and hosts; nothing changes until `apply()` or the script's end.
`check` validates, `plan` prints the kernel operations an apply would do, `apply` does them.";

#[derive(Parser, Debug)]
#[command(name = "vpcsh", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
    /// A script to apply (same as `vpcsh apply SCRIPT`).
    script: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct Global {
    /// Work inside a sandbox namespace NAME that plays the machine, with a simulated
    /// internet at 198.51.100.1; every namespace it makes starts with NAME.
    #[arg(long, global = true, value_name = "NAME")]
    sandbox: Option<String>,
    /// Where vpcsh records what it owns (a sandbox keeps its own state below it).
    #[arg(long, global = true, value_name = "DIR", default_value = crate::state::DEFAULT_DIR)]
    state_dir: PathBuf,
    /// On the real host: the prefix of every namespace vpcsh makes (PREFIX.VPC, PREFIX.VPC.HOST).
    #[arg(long, global = true, value_name = "PREFIX", default_value = crate::plan::naming::REAL_HOST_PREFIX)]
    prefix: String,
    /// On the real host: the interface towards the internet (default: the default route's).
    #[arg(long, global = true, value_name = "IFACE")]
    uplink: Option<String>,
    /// The stack a script applies to (default: its file stem; the REPL's: `repl`), or, for
    /// `destroy`, the stack to remove.
    #[arg(long, global = true, value_name = "NAME")]
    stack: Option<String>,
    /// Agree in advance to an apply that deletes VPCs its script no longer declares.
    #[arg(long, global = true)]
    yes: bool,
    /// More log output (-v info, -vv debug: every kernel operation).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a script and make reality match it.
    Apply {
        script: PathBuf,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print every kernel operation an apply would do (or `no changes`); change nothing.
    Plan { script: PathBuf },
    /// Validate a script: diagnostics only, no changes, no root needed.
    Check { script: PathBuf },
    /// Remove the named VPCs, or everything vpcsh owns here (a sandbox included).
    Destroy { vpcs: Vec<String> },
    /// Every owned object, read from the kernel: ok, missing or drifted; processes.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// VPCs, subnets, hosts and addresses.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a host (VPC/HOST), a VPC router (VPC) or `internet`; exits
    /// with the command's status.
    Exec {
        target: String,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Firewall policies in the original tool's JSON format.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the logs of the processes run() and serve() started in a host (VPC/HOST).
    Logs { target: String },
    /// Run each script as a test fixture in a fresh sandbox of its own, destroyed
    /// afterwards; prints a line per script and `N passed, N failed`.
    Test {
        #[arg(required = true)]
        scripts: Vec<PathBuf>,
        /// Keep the sandbox of a failed script for inspection.
        #[arg(long)]
        keep: bool,
        /// Scripts run at the same time.
        #[arg(long, short = 'j', default_value_t = 1)]
        jobs: usize,
    },
    /// An interactive session: declarations apply as you type (also: `vpcsh` on a terminal).
    Repl,
    /// Print the script reference, every function and property, as Markdown.
    Reference,
    /// The built-in HTTP server, run by vpcsh inside a namespace.
    #[command(name = "__serve", hide = true)]
    Serve {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        body: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Attach a policy to the applied subnet whose CIDR the file names ("subnet"), e.g.
    /// {"subnet": "10.0.1.0/24", "ingress": [{"port": 80, "protocol": "tcp", "action": "allow"}]}
    Apply {
        file: PathBuf,
        /// The VPC, when several have a subnet with that CIDR.
        #[arg(long)]
        vpc: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(&cli.global);
    let target = Target {
        state_dir: cli.global.state_dir.clone(),
        sandbox: cli.global.sandbox.clone(),
        stack: cli.global.stack.clone(),
        prefix: cli.global.prefix.clone(),
        uplink: cli.global.uplink.clone(),
    };
    let yes = cli.global.yes;
    let result = match (cli.command, cli.script) {
        (Some(command), _) => run(command, &target, yes),
        (None, Some(script)) => run(Command::Apply { script, dry_run: false }, &target, yes),
        (None, None) if std::io::stdin().is_terminal() => return crate::repl::run(&target),
        (None, None) => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            diag::eprint(&diag::from_failure(&failure));
            ExitCode::from(1)
        }
    }
}

fn init_logging(global: &Global) {
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

fn run(command: Command, target: &Target, yes: bool) -> Result<ExitCode, Failure> {
    if matches!(command, Command::Apply { .. } | Command::Destroy { .. } | Command::Policy(_)) {
        crate::exec::stop_on_signals();
    }
    match command {
        Command::Apply { script, dry_run } => {
            return run_script(target, &script, if dry_run { Mode::DryRun } else { Mode::Apply }, yes);
        }
        Command::Plan { script } => return run_script(target, &script, Mode::Plan, yes),
        Command::Check { script } => return run_script(target, &script, Mode::Check, yes),
        Command::Destroy { vpcs } => println!("{}", session::destroy(target, &vpcs)?),
        Command::Status { json } => return commands::status(target, json),
        Command::List { json } => commands::list(target, json)?,
        Command::Exec { target: who, command } => return commands::exec(target, &who, &command),
        Command::Logs { target: who } => commands::logs(target, &who)?,
        Command::Repl => return Ok(crate::repl::run(target)),
        Command::Reference => print!("{}", session::reference()),
        Command::Policy(PolicyCommand::Apply { file, vpc }) => {
            println!("{}", session::apply_policy(target, &file, vpc.as_deref())?)
        }
        Command::Test { scripts, keep, jobs } => {
            let state_dir = std::env::temp_dir();
            return Ok(test::run(test::Options { scripts, keep, jobs, state_dir }));
        }
        Command::Serve { netns, port, body } => {
            crate::httpd::serve(&netns, port, &body)
                .map_err(|e| Failure::refused(format!("http server in {netns}: {e}"), None))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `apply`, `plan` and `check`: runs the script and prints what came of it.
fn run_script(target: &Target, script: &Path, mode: Mode, yes: bool) -> Result<ExitCode, Failure> {
    match session::run_script(target, script, mode, &mut Asker { yes })? {
        Outcome::Applied(summary) => println!("{summary}"),
        Outcome::Planned { plan, would_run, deleting } => {
            deleting
                .iter()
                .for_each(|vpc| println!("will delete: vpc {vpc} (the script no longer declares it)"));
            print!("{plan}");
            would_run.iter().for_each(|w| println!("would run: {w}"));
            if mode == Mode::DryRun {
                println!("dry run: {}", plan.summary());
            }
        }
        Outcome::Checked { vpcs, subnets, hosts } => {
            println!("{}: ok ({vpcs} VPCs, {subnets} subnets, {hosts} hosts)", script.display())
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Warnings to stderr; deletes shown first and, on a terminal, asked about. Without a
/// terminal an apply may delete some of its stack's VPCs, never all of them unless `--yes`.
struct Asker {
    yes: bool,
}

impl Ui for Asker {
    fn warn(&mut self, warnings: Warnings) {
        diag::eprint(&diag::from_warnings(&warnings));
    }

    fn confirm_deletes(&mut self, d: &Deletions) -> bool {
        eprintln!(
            "this apply deletes VPC(s) {} of stack `{}`: the script no longer declares them",
            d.vpcs.join(", "),
            d.stack
        );
        if self.yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            return !d.all;
        }
        eprint!("delete them? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
    }
}
