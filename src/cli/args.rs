//! The command line's words: subcommands, global options and their help (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::config::Color;

/// The version and the git revision it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("VPCSH_REVISION"), ")");

const ABOUT: &str = "Build AWS-style virtual private clouds on one Linux host from network namespaces, \
veth pairs, bridges and routes, described as Rhai scripts.";

const AFTER_HELP: &str = "\
Examples:
  vpcsh --sandbox demo scripts/demo.rhai     build the demo inside a sandbox (no host changes)
  vpcsh --sandbox demo list                  what is there
  vpcsh --sandbox demo exec prod/w1 -- ip addr
  vpcsh --sandbox demo destroy               remove the sandbox and everything in it

Settings come from /etc/vpcsh/config.toml, then ~/.config/vpcsh/config.toml (or only
$VPCSH_CONFIG), then VPCSH_* variables, then flags; a file's keys are the flags' names.

A script declares VPCs, subnets and hosts; nothing changes until `apply()` or the script's end.
`check` validates, `plan` prints the kernel operations an apply would do, `apply` does them.";

#[derive(Parser, Debug)]
#[command(name = "vpcsh", version = VERSION, about = ABOUT, after_help = AFTER_HELP)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) global: Global,
    #[command(subcommand)]
    pub(super) command: Option<Command>,
    /// A script to apply (same as `vpcsh apply SCRIPT`).
    pub(super) script: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(super) struct Global {
    /// Work inside a sandbox namespace NAME that plays the machine, with a simulated
    /// internet at 198.51.100.1; every namespace it makes starts with NAME. Works without
    /// root, inside a user namespace of its own.
    #[arg(long, global = true, value_name = "NAME")]
    pub(super) sandbox: Option<String>,
    /// Where vpcsh records what it owns (a sandbox keeps its own state below it)
    /// [default: /var/lib/vpcsh as root, else $XDG_STATE_HOME/vpcsh or ~/.local/state/vpcsh].
    #[arg(long, global = true, value_name = "DIR", env = "VPCSH_STATE_DIR")]
    pub(super) state_dir: Option<PathBuf>,
    /// On the real host: the prefix of every namespace vpcsh makes (PREFIX.VPC, PREFIX.VPC.HOST)
    /// [default: vpcsh].
    #[arg(long, global = true, value_name = "PREFIX", env = "VPCSH_PREFIX")]
    pub(super) prefix: Option<String>,
    /// On the real host: the interface towards the internet (default: the default route's).
    #[arg(long, global = true, value_name = "IFACE", env = "VPCSH_UPLINK")]
    pub(super) uplink: Option<String>,
    /// In a script that declares nodes: which node this machine is (it builds only its part).
    #[arg(long, global = true, value_name = "NAME", env = "VPCSH_NODE")]
    pub(super) node: Option<String>,
    /// With --sandbox: join the simulated data centre NAME, a namespace whose switch links
    /// every sandbox machine of that fabric at its node's underlay address.
    #[arg(long, global = true, value_name = "NAME", requires = "sandbox")]
    pub(super) fabric: Option<String>,
    /// The stack a script applies to (default: its file stem; the REPL's: `repl`), or, for
    /// `destroy`, the stack to remove.
    #[arg(long, global = true, value_name = "NAME")]
    pub(super) stack: Option<String>,
    /// The most network namespaces one script may make (a VPC is one, and each host)
    /// [default: 20000].
    #[arg(long, global = true, value_name = "N", env = "VPCSH_MAX_NAMESPACES")]
    pub(super) max_namespaces: Option<usize>,
    /// Seconds a probe without its own `timeout` waits [default: 0.2 in a sandbox, 1 on a
    /// real host].
    #[arg(long, global = true, value_name = "SECONDS", env = "VPCSH_PROBE_TIMEOUT",
          value_parser = |s: &str| s.parse::<f64>().map_err(|e| e.to_string()).and_then(super::config::seconds))]
    pub(super) probe_timeout: Option<std::time::Duration>,
    /// Colour diagnostics [default: auto: on a terminal, unless NO_COLOR is set].
    #[arg(long, global = true, value_name = "WHEN", env = "VPCSH_COLOR")]
    pub(super) color: Option<Color>,
    /// Agree in advance to an apply that deletes VPCs its script no longer declares.
    #[arg(long, global = true)]
    pub(super) yes: bool,
    /// More log output (-v info, -vv debug: every kernel operation).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(super) verbose: u8,
    /// Only errors and what the script itself prints.
    #[arg(short, long, global = true)]
    pub(super) quiet: bool,
    /// Print data and diagnostics as JSON (schemas in docs/json.md).
    #[arg(long, global = true)]
    pub(super) json: bool,
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
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
    /// Every owned object, read from the kernel: ok, missing, drifted or blocked; processes.
    Status {
        /// Then probe every flow and compare with the model, as `verify` does.
        #[arg(long)]
        probe: bool,
        /// Then the packets and bytes each of vpcsh's rules has matched, with what made the
        /// rule (a firewall rule and its script location, a published port, NAT).
        #[arg(long)]
        counters: bool,
    },
    /// What the model says about a flow, without packets: reachable, the path hop by hop,
    /// and what blocks it. FROM and TO: VPC/HOST, a host name, an address, or `internet`.
    Explain {
        from: String,
        to: String,
        /// The destination port (0 with --proto icmp: a ping).
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp", "icmp"])]
        proto: String,
    },
    /// Probe every flow that matters (host to host, to and from the internet; ping, published
    /// and firewall-listed ports) and compare each with `explain`; exit 0 only if all agree.
    Verify {
        /// The script whose model to check against what is applied [default: the applied one].
        script: Option<PathBuf>,
        /// Probe about N flows, spread over all hosts, instead of every one.
        #[arg(long, value_name = "N")]
        sample: Option<usize>,
    },
    /// VPCs, subnets, hosts and addresses.
    List,
    /// Run a command inside a host (VPC/HOST), a VPC router (VPC) or `internet`; exits
    /// with the command's status (127: no such command, 126: cannot run it). With no
    /// command, an interactive shell (on a terminal).
    Exec {
        target: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Firewall policies in the original tool's JSON format.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the logs of the processes run() and serve() started in a host (VPC/HOST).
    Logs { target: String },
    /// The flows firewalled hosts accepted or rejected (all of them, or VPC/HOST's), each
    /// with the rule that decided; with --follow, new ones as they come, until Ctrl-C.
    Flows {
        target: Option<String>,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Capture the packets of a host (VPC/HOST, its eth0), a VPC's router (VPC) or
    /// `internet`: one line each, or a pcap file (-w) that Wireshark and tcpdump read;
    /// until Ctrl-C or -c N.
    Capture {
        target: String,
        /// Write the packets to this pcap file.
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        write: Option<PathBuf>,
        /// Only packets that match: tcp, udp, icmp, icmp6, arp, port N, host ADDR, joined by `and`.
        #[arg(long, value_name = "FILTER")]
        filter: Option<String>,
        /// Stop after N packets.
        #[arg(short = 'c', long = "count", value_name = "N")]
        count: Option<u64>,
        /// The interface (default: eth0 of a host, every interface of a router or the internet).
        #[arg(short = 'i', long, value_name = "IFACE")]
        interface: Option<String>,
    },
    /// Run each script as a test fixture in a fresh sandbox of its own, destroyed
    /// afterwards; prints a line per script and `N passed, N failed`.
    Test {
        #[arg(required = true)]
        scripts: Vec<PathBuf>,
        /// Keep the sandbox of a failed script for inspection.
        #[arg(long)]
        keep: bool,
        /// Scripts run at the same time [default: 1].
        #[arg(long, short = 'j', env = "VPCSH_JOBS")]
        jobs: Option<usize>,
    },
    /// An interactive session: declarations apply as you type (also: `vpcsh` on a terminal).
    Repl,
    /// Print the script reference, every function and property, as Markdown.
    Reference,
    /// Rhai definition files for editors: every function and type of the script API.
    Defs,
    /// The manual page, generated from this command line: `vpcsh man | man -l -`.
    Man,
    /// Shell completions: `vpcsh completions bash > /etc/bash_completion.d/vpcsh`.
    Completions {
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// The topology as a diagram: of a script, or of what is applied here.
    Graph {
        script: Option<PathBuf>,
        /// `dot` (Graphviz), `mermaid` (renders on GitHub) or `svg` (laid out by vpcsh itself,
        /// no Graphviz needed).
        #[arg(long, value_parser = ["dot", "mermaid", "svg"], default_value = "dot")]
        format: String,
    },
    /// The names `exec` and `logs` accept, one per line (for shell completion).
    #[command(name = "__targets", hide = true)]
    Targets,
    /// A VPC's resolver, run by vpcsh inside the VPC's router: NAME=ADDRESS records.
    #[command(name = "__dns", hide = true)]
    Dns {
        #[arg(long)]
        netns: String,
        records: Vec<String>,
    },
    /// A firewalled host's flow log collector, run by vpcsh inside the host.
    #[command(name = "__flows", hide = true)]
    FlowLog {
        #[arg(long)]
        netns: String,
    },
    /// Takes apart namespaces vpcsh deleted, handed over as open descriptors.
    #[command(name = "__reap", hide = true)]
    Reap { fds: Vec<i32> },
    /// A rootless sandbox's keeper: holds its user and mount namespaces between commands.
    #[command(name = "__keep", hide = true)]
    Keep { sandbox: String },
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

impl Command {
    /// The processes vpcsh starts for itself (a server, a resolver, a flow log, a keeper).
    pub(super) fn is_helper(&self) -> bool {
        matches!(
            self,
            Command::Serve { .. }
                | Command::Dns { .. }
                | Command::FlowLog { .. }
                | Command::Keep { .. }
                | Command::Reap { .. }
        )
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum PolicyCommand {
    /// Attach a policy to the applied subnet whose CIDR the file names ("subnet"), e.g.
    /// {"subnet": "10.0.1.0/24", "ingress": [{"port": 80, "protocol": "tcp", "action": "allow"}]}
    Apply {
        file: PathBuf,
        /// The VPC, when several have a subnet with that CIDR.
        #[arg(long)]
        vpc: Option<String>,
    },
}
