//! Test helpers: the vpcsh binary, sandboxes that clean up after themselves, and probes
//! that look at the kernel from outside vpcsh.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) const VPCSH: &str = env!("CARGO_BIN_EXE_vpcsh");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The VPC most tests start from — a public `web` subnet with host `w1`, private `app` and
/// `db` — followed by the test's own lines.
macro_rules! prod_and {
    ($($rest:tt)*) => {
        concat!(
            r#"
let prod = vpc("prod", "10.10.0.0/16");
let web  = prod.subnet("web", "10.10.1.0/24", #{ public: true });
let app  = prod.subnet("app", "10.10.2.0/24");
let db   = prod.subnet("db", "10.10.3.0/24");
let w1   = web.host("w1");
"#,
            $($rest)*
        )
    };
}
pub(crate) use prod_and;

/// The vpcsh binary, without colour, fault injection, configuration files or `VPCSH_*`
/// settings from the environment.
pub(crate) fn vpcsh() -> Command {
    let mut cmd = Command::new(VPCSH);
    cmd.env("NO_COLOR", "1").env("VPCSH_CONFIG", "");
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("VPCSH_") && k != "VPCSH_CONFIG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Compares `got` with a golden file, or rewrites the file when `VPCSH_BLESS` is set; a
/// description of the difference when they differ.
pub(crate) fn golden(path: &std::path::Path, got: &str) -> Option<String> {
    if std::env::var_os("VPCSH_BLESS").is_some() {
        fs::write(path, got).unwrap();
        return None;
    }
    let want = fs::read_to_string(path).unwrap_or_default();
    (want != got).then(|| format!("--- {} (VPCSH_BLESS=1 to accept), got:\n{got}", path.display()))
}

/// A unique name per test and process: safe with parallel tests and parallel runs.
pub(crate) fn unique(tag: &str) -> String {
    format!("vt{}-{tag}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A temporary directory removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a vpcsh run printed and returned.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A sandbox with its own state directory; everything it made is destroyed on drop.
pub(crate) struct Sandbox {
    pub name: String,
    pub dir: TempDir,
}

impl Sandbox {
    /// The `status --json` records of the processes whose command mentions `needle`.
    pub(crate) fn status_processes(&self, needle: &str) -> Vec<serde_json::Value> {
        let status: serde_json::Value =
            serde_json::from_str(&self.run(&["status", "--json"]).stdout).unwrap();
        status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["argv"].to_string().contains(needle))
            .cloned()
            .collect()
    }

    pub(crate) fn new(tag: &str) -> Self {
        let name = unique(tag);
        let dir = TempDir::new(&format!("{tag}-state"));
        Self { name, dir }
    }

    /// A vpcsh command in this sandbox.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = vpcsh();
        cmd.arg("--sandbox").arg(&self.name).arg("--state-dir").arg(&self.dir.0).args(args);
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().unwrap().into()
    }

    /// Writes `text` as a script and applies it; the run must succeed.
    pub(crate) fn apply(&self, text: &str) -> Run {
        let script = self.script(text);
        let run = self.run(&["apply", script.to_str().unwrap()]);
        assert_eq!(run.code, 0, "apply failed: {run:?}");
        run
    }

    /// Writes a script; every script of one sandbox is a version of `main.rhai`, so they
    /// all belong to the stack `main`, as one file edited between runs would.
    pub(crate) fn script(&self, text: &str) -> PathBuf {
        let dir = self.dir.0.join(unique("script"));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("main.rhai");
        fs::write(&path, text).unwrap();
        path
    }

    pub(crate) fn ns(&self, suffix: &str) -> String {
        if suffix.is_empty() { self.name.clone() } else { format!("{}.{suffix}", self.name) }
    }

    /// Namespaces under /run/netns that belong to this sandbox.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        let prefix = format!("{}.", self.name);
        list_netns().into_iter().filter(|n| *n == self.name || n.starts_with(&prefix)).collect()
    }

    pub(crate) fn state_file(&self) -> PathBuf {
        self.dir.0.join("sandbox").join(&self.name).join("state.json")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.cmd(&["destroy"]).output();
        // Anything a failed run left behind: the processes its state records (by pid and
        // start time), then the namespaces, by exact name.
        for (pid, start_time) in recorded_processes(&self.state_file()) {
            if start_time_of(pid) == Some(start_time) {
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).output();
            }
        }
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
        }
    }
}

/// The (pid, start time) of every process a state file records.
pub(crate) fn recorded_processes(state_file: &std::path::Path) -> Vec<(i64, u64)> {
    let Ok(text) = fs::read_to_string(state_file) else { return Vec::new() };
    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else { return Vec::new() };
    state["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["pid"].as_i64()?, p["start_time"].as_u64()?)))
        .collect()
}

/// A process's start time in clock ticks since boot, while it exists.
pub(crate) fn start_time_of(pid: i64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn list_netns() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// `ip netns exec NS ARGS...`
pub(crate) fn in_ns(ns: &str, args: &[&str]) -> Run {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap().into()
}

/// One ICMP echo from inside `ns`, one second to answer.
pub(crate) fn ping(ns: &str, addr: &str) -> bool {
    in_ns(ns, &["ping", "-c1", "-W1", "-q", addr]).code == 0
}

/// `ip -n NS ARGS...` output.
pub(crate) fn ip(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").arg("-n").arg(ns).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a process runs (a zombie waiting for init to reap it does not).
pub(crate) fn running(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// vpcsh's built-in HTTP server run by the test in a namespace; killed (by pid) on drop.
pub(crate) struct Server(Child);

impl Server {
    pub(crate) fn start(ns: &str, port: u16, body: &str) -> Self {
        let mut child = vpcsh()
            .args(["__serve", "--netns", ns, "--port", &port.to_string(), "--body", body])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "server did not start: {line}");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP GET from inside `ns` with bash's /dev/tcp (no client package needed); the body.
pub(crate) fn get(ns: &str, addr: &str, port: u16, path: &str) -> Option<String> {
    let script = format!(
        "exec 3<>/dev/tcp/{addr}/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 2 cat <&3"
    );
    let run = in_ns(ns, &["timeout", "3", "bash", "-c", &script]);
    if run.code != 0 {
        return None;
    }
    run.stdout.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// Whether a UDP datagram from inside `ns` reaches `addr:port`, where nothing listens: the
/// host's ICMP port-unreachable comes back as a refused receive; a firewall drop is silence.
pub(crate) fn udp_reaches(ns: &str, addr: &str, port: u16) -> bool {
    let path = format!("/run/netns/{ns}");
    let addr: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    std::thread::spawn(move || {
        let fd = fs::File::open(path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.connect(addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
        let _ = sock.send(b"probe");
        let mut buf = [0u8; 16];
        matches!(sock.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .join()
    .unwrap()
}

/// A namespace the test made, playing a real host: an uplink to a fake internet and a
/// default route, so vpcsh runs there without `--sandbox`.
pub(crate) struct FakeHost {
    pub(crate) host: String,
    pub(crate) net: String,
    pub(crate) prefix: String,
    pub(crate) state: TempDir,
}

impl FakeHost {
    pub(crate) fn new() -> Self {
        let (host, net, prefix) = (unique("rh"), unique("rn"), unique("rp"));
        let sh = |args: &[&str]| {
            let ok = Command::new(args[0]).args(&args[1..]).status().unwrap().success();
            assert!(ok, "{args:?}");
        };
        sh(&["ip", "netns", "add", &host]);
        sh(&["ip", "netns", "add", &net]);
        sh(&[
            "ip", "-n", &host, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", &net,
        ]);
        sh(&["ip", "-n", &host, "addr", "add", "198.51.100.2/24", "dev", "wan0"]);
        sh(&["ip", "-n", &net, "addr", "add", "198.51.100.1/24", "dev", "eth0"]);
        for ns in [&host, &net] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &host, "link", "set", "wan0", "up"]);
        sh(&["ip", "-n", &net, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &host, "route", "add", "default", "via", "198.51.100.1"]);
        // Someone else's firewall, which vpcsh must leave alone.
        sh(&["ip", "netns", "exec", &host, "nft", "add", "table", "ip", "theirs"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &host,
            "nft",
            "add",
            "chain",
            "ip",
            "theirs",
            "input",
            "{ type filter hook input priority 0; }",
        ]);
        FakeHost { host, net, prefix, state: TempDir::new("rh-state") }
    }

    /// vpcsh with only its network namespace entered (`ip netns exec` would also give it a
    /// private mount namespace, where the namespaces it mounts would not outlive it).
    pub(crate) fn vpcsh(&self, args: &[&str]) -> Run {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .args(["--", VPCSH, "--prefix", &self.prefix, "--state-dir"])
            .arg(&self.state.0)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
            .into()
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = self.vpcsh(&["destroy"]);
        let prefix = format!("{}.", self.prefix);
        for ns in list_netns()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .chain([self.host.clone(), self.net.clone()])
        {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
        }
    }
}

/// Sandbox machines of one fabric; on drop each is destroyed, then the fabric namespace
/// (by its exact name) if anything failed before its last machine left.
pub(crate) struct Fabric {
    pub name: String,
    pub nodes: Vec<(String, Sandbox)>,
}

impl Fabric {
    pub(crate) fn new(tag: &str, nodes: &[&str]) -> Self {
        let name = unique(&format!("{tag}f"));
        let nodes = nodes.iter().map(|n| (n.to_string(), Sandbox::new(&format!("{tag}{n}")))).collect();
        Self { name, nodes }
    }

    pub(crate) fn node(&self, node: &str) -> &Sandbox {
        &self.nodes.iter().find(|(n, _)| n == node).expect("a node of this fabric").1
    }

    /// vpcsh on one node's machine.
    pub(crate) fn cmd(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = self.node(node).cmd(&["--fabric", &self.name, "--node", node]);
        cmd.args(args);
        cmd
    }

    pub(crate) fn run(&self, node: &str, args: &[&str]) -> Run {
        self.cmd(node, args).output().unwrap().into()
    }

    /// Applies `script` on every node, in order; each must succeed.
    pub(crate) fn apply_everywhere(&self, script: &str) -> Vec<Run> {
        let path = self.nodes[0].1.script(script);
        self.nodes
            .iter()
            .map(|(node, _)| {
                let run = self.run(node, &["apply", path.to_str().unwrap()]);
                assert_eq!(run.code, 0, "apply on {node} failed: {run:?}");
                run
            })
            .collect()
    }

    /// Waits until every node's BGP EVPN sessions are up and each peer has sent all its
    /// routes (`status` says so once End-of-RIB came), and the counts are steady, for up
    /// to 30 s.
    pub(crate) fn wait_for_evpn(&self) {
        let routes = || -> Option<u64> {
            let mut total = 0;
            for (node, _) in &self.nodes {
                let run = self.run(node, &["status", "--json"]);
                let json: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
                for n in json["nodes"].as_array()? {
                    n["ok"].as_bool().filter(|ok| *ok)?;
                    total += n["routes"].as_u64()?;
                }
            }
            Some(total)
        };
        let mut last = None;
        let settled = (0..60).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let now = routes();
            let same = now.is_some() && now == last;
            last = now;
            same
        });
        assert!(settled, "EVPN sessions never all came up and settled");
    }

    /// A host's namespace, on the machine it runs on.
    pub(crate) fn host(&self, node: &str, vpc_host: &str) -> String {
        self.node(node).ns(vpc_host)
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for (_, sb) in self.nodes.drain(..) {
            drop(sb);
        }
        if list_netns().contains(&self.name) {
            let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
        }
    }
}
