//! Bring-up and teardown of V VPCs × S subnets: vpcsh against the baseline beside this file
//! (`baseline-ip.sh`: the same topology the way the original tool built it, one `ip` or
//! `iptables` process per step), side by side in one run, each in its own sandbox. Prints
//! every round, the medians and the ratios: apply, no-op re-apply, destroy, an apply right
//! after a destroy (while the kernel still reaps namespaces), and an apply's peak RSS. Then
//! what a test author waits for: a probe's answer (a blocked and an answered ping, in a
//! sandbox) and `vpcsh test -j 2` of many small fixtures.
//!
//! `cargo bench --bench apply` (as root); `-- --quick` for one small round without the
//! baseline (a smoke test: it prints, it asserts no time). Env: BENCH_SIZES ("1x10,4x25,10x50";
//! VxS each; 10x500 is the large one), BENCH_ROUNDS (3), BENCH_FIXTURES (50), BENCH_BASELINE=0
//! to skip the baseline, BENCH_FIREWALL=1 to put a firewall on every subnet, BENCH_SETTLE (15)
//! seconds to wait after each teardown, once vpcsh's reapers are done: the kernel destroys
//! unmounted namespaces asynchronously, and a bring-up started while it does runs several
//! times slower, whichever tool it is.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const VPCSH: &str = env!("CARGO_BIN_EXE_vpcsh");

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The baseline's topology as a vpcsh script: VPC v = 10.v.0.0/16, subnet s = 10.v.s.0/24
/// with one host, odd subnets public. Past 255 subnets a VPC's subnets are /26s instead
/// (the baseline stops at 255).
fn script(v: usize, s: usize, firewall: bool) -> String {
    let mut out = String::new();
    for i in 1..=v {
        out += &format!("let v{i} = vpc(\"v{i}\", \"10.{i}.0.0/16\");\n");
        for j in 1..=s {
            let cidr = if s <= 255 {
                format!("10.{i}.{j}.0/24")
            } else {
                format!("10.{i}.{}.{}/26", j / 4, (j % 4) * 64)
            };
            out += &format!("let s = v{i}.subnet(\"s{j}\", \"{cidr}\", #{{ public: {} }});\n", j % 2 == 1);
            if firewall {
                out += "firewall(s, #{ ingress: [#{ proto: \"tcp\", port: 80, action: \"allow\" }, \
                        #{ proto: \"tcp\", port: 22, action: \"deny\" }] });\n";
            }
        }
    }
    out
}

/// Runs vpcsh to the end: its wall time in ms and its peak resident memory in MiB.
fn vpcsh(sandbox: &str, state: &Path, args: &[&str]) -> (f64, f64) {
    let errors = state.with_extension("stderr");
    let start = Instant::now();
    // Reaped by wait4 below, which also reports its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(VPCSH)
        .args(["--sandbox", sandbox, "--state-dir"])
        .arg(state)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 fills it for the child we started.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else waits for.
    let pid = unsafe { nix::libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let ok = pid > 0 && nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0;
    assert!(ok, "vpcsh {args:?} failed: {}", std::fs::read_to_string(&errors).unwrap_or_default());
    (ms, usage.ru_maxrss as f64 / 1024.0)
}

/// Runs the baseline script and returns the `KEY=ms` figure it prints.
fn baseline(script: &Path, state: &Path, args: &[&str], key: &str) -> Option<f64> {
    let out = Command::new("bash").arg(script).args(args).env("BL_STATE", state).output().ok()?;
    if !out.status.success() {
        eprintln!("baseline {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))?.parse().ok())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() { f64::NAN } else { xs[xs.len() / 2] }
}

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

/// What one size is measured with.
struct Setup {
    rounds: usize,
    settle: std::time::Duration,
    firewall: bool,
    baseline: Option<PathBuf>,
    tmp: PathBuf,
}

/// Medians of one size: vpcsh up, no-op re-apply, down, up again at once after a down, the
/// peak RSS of an apply; the baseline's up and down.
struct Figures {
    up: f64,
    noop: f64,
    down: f64,
    up_again: f64,
    rss: f64,
    bl_up: f64,
    bl_down: f64,
}

/// Lets the kernel finish what teardowns left: waits for vpcsh's reapers (the tail of a
/// 10 × 50 destroy takes ~16 s), then the settle time. A round that starts among them measures
/// them too, and the next size's first round would pay for this one's last.
fn settle(setup: &Setup) {
    if setup.settle.is_zero() {
        return;
    }
    let reaping = || {
        let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
        procs.filter_map(|p| std::fs::read(p.path().join("cmdline")).ok()).any(|cmdline| {
            let mut argv = cmdline.split(|b| *b == 0);
            argv.next() == Some(VPCSH.as_bytes()) && argv.next() == Some(b"__reap".as_slice())
        })
    };
    let start = Instant::now();
    while reaping() && start.elapsed() < std::time::Duration::from_secs(300) {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    std::thread::sleep(setup.settle);
}

/// Measures V VPCs × S subnets, round by round, side by side.
fn measure(v: usize, s: usize, setup: &Setup) -> Figures {
    let script_path = setup.tmp.join(format!("topology-{v}x{s}.rhai"));
    std::fs::write(&script_path, script(v, s, setup.firewall)).unwrap();
    let script = script_path.to_str().unwrap();
    let (mut up, mut noop, mut down, mut bl_up, mut bl_down) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut up_again, mut rss) = (vec![], vec![]);
    for round in 1..=setup.rounds {
        let sandbox = format!("vb{}-{v}x{s}-{round}", std::process::id());
        let state = setup.tmp.join(&sandbox);
        let (ms, mib) = vpcsh(&sandbox, &state, &["apply", script]);
        up.push(ms);
        rss.push(mib);
        noop.push(vpcsh(&sandbox, &state, &["apply", script]).0);
        down.push(vpcsh(&sandbox, &state, &["destroy"]).0);
        // At once, while the kernel still tears the last namespaces down.
        up_again.push(vpcsh(&sandbox, &state, &["apply", script]).0);
        vpcsh(&sandbox, &state, &["destroy"]);
        settle(setup);
        if let Some(baseline_script) = &setup.baseline {
            let bl_state = setup.tmp.join(format!("baseline-{v}x{s}-{round}.state"));
            let (v, s) = (v.to_string(), s.to_string());
            bl_up.push(baseline(baseline_script, &bl_state, &[&v, &s], "up_ms").unwrap_or(f64::NAN));
            bl_down.push(baseline(baseline_script, &bl_state, &["--down"], "down_ms").unwrap_or(f64::NAN));
            settle(setup);
        }
        let baseline = match (bl_up.last(), bl_down.last()) {
            (Some(u), Some(d)) => format!("baseline up {u:.1} ms, down {d:.1} ms"),
            _ => "no baseline".into(),
        };
        println!(
            "  round {round}: vpcsh up {:.1} ms, no-op {:.1} ms, down {:.1} ms, up again {:.1} ms, {:.1} MiB; {baseline}",
            up[round - 1],
            noop[round - 1],
            down[round - 1],
            up_again[round - 1],
            rss[round - 1],
        );
    }
    Figures {
        up: median(up),
        noop: median(noop),
        down: median(down),
        up_again: median(up_again),
        rss: median(rss),
        bl_up: median(bl_up),
        bl_down: median(bl_down),
    }
}

/// A blocked and an answered ping, each asked `n` times in a sandbox: the time of one, in ms.
const PROBES: &str = r#"
let a = vpc("a", "10.1.0.0/16");
let x = a.subnet("s", "10.1.1.0/24").host("x");
let z = a.subnet("t", "10.1.2.0/24").host("z");
let b = vpc("b", "10.2.0.0/16");
let y = b.subnet("s", "10.2.1.0/24").host("y");
apply();
let t = timestamp();
for i in 0..COUNT { assert(!ping(x, y), "unpeered VPCs"); }
print(`blocked=${t.elapsed * 1000.0 / COUNT}`);
let t = timestamp();
for i in 0..COUNT { assert(ping(x, z), "one VPC"); }
print(`answered=${t.elapsed * 1000.0 / COUNT}`);
"#;

/// A small test fixture: two tiers, a server, an exec, answered and blocked probes.
const FIXTURE: &str = r#"
let app = vpc("app", "10.90.0.0/16");
let web = app.subnet("web", "10.90.1.0/24", #{ public: true });
let api = app.subnet("api", "10.90.2.0/24");
let w = web.host("w");
let a = api.host("a");
serve(a, 8080);
assert(exec(w, ["true"]).code == 0, "exec");
assert(ping(w, a), "the tiers route to each other");
assert(http_get(w, `http://${a.ip}:8080/`).status == 200, "the api answers");
assert(http_get(a, "http://198.51.100.1/").status == 0, "a private subnet has no internet");
"#;

/// The probe figures (ms each) and the wall time of `vpcsh test -j 2` over `fixtures`
/// copies of a small fixture (s).
fn probes_and_fixtures(setup: &Setup, n: usize, fixtures: usize) -> (f64, f64, f64) {
    let sandbox = format!("vb{}-probes", std::process::id());
    let state = setup.tmp.join(&sandbox);
    let script = setup.tmp.join("probes.rhai");
    std::fs::write(&script, PROBES.replace("COUNT", &n.to_string())).unwrap();
    let out = Command::new(VPCSH)
        .args(["--sandbox", &sandbox, "--state-dir"])
        .arg(&state)
        .arg("apply")
        .arg(&script)
        .output()
        .unwrap();
    vpcsh(&sandbox, &state, &["destroy"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "probes: {}", String::from_utf8_lossy(&out.stderr));
    let figure = |key: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(&format!("{key}="))?.parse().ok()).unwrap_or(f64::NAN)
    };
    let dir = setup.tmp.join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = (1..=fixtures)
        .map(|i| {
            let path = dir.join(format!("f{i}.rhai"));
            std::fs::write(&path, FIXTURE).unwrap();
            path
        })
        .collect();
    settle(setup);
    let start = Instant::now();
    let run = Command::new(VPCSH).args(["test", "-j", "2"]).args(&paths).output().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(run.status.success(), "fixtures: {}", String::from_utf8_lossy(&run.stdout));
    (figure("blocked"), figure("answered"), secs)
}

/// The medians of every size, side by side with the baseline.
fn print_table(table: &[((usize, usize), Figures)]) {
    println!(
        "\n{:<8} {:>11} {:>10} {:>11} {:>10} {:>11} {:>8} {:>8} {:>12} {:>12} {:>8} {:>8}",
        "size",
        "vpcsh up",
        "ms/subnet",
        "no-op",
        "down",
        "up again",
        "again/up",
        "RSS",
        "baseline up",
        "baseline dn",
        "up x",
        "down x"
    );
    for ((v, s), f) in table {
        let n = (v * s) as f64;
        // Without a baseline (--quick) its columns say so rather than NaN.
        let or_dash = |x: f64, unit: &str| if x.is_nan() { "-".to_string() } else { format!("{x:.1}{unit}") };
        println!(
            "{:<8} {:>8.1} ms {:>10.2} {:>8.1} ms {:>7.1} ms {:>8.1} ms {:>7.2}x {:>4.0} MiB {:>12} {:>12} {:>8} {:>8}",
            format!("{v}x{s}"),
            f.up,
            f.up / n,
            f.noop,
            f.down,
            f.up_again,
            f.up_again / f.up,
            f.rss,
            or_dash(f.bl_up, " ms"),
            or_dash(f.bl_down, " ms"),
            or_dash(f.bl_up / f.up, "x"),
            or_dash(f.bl_down / f.down, "x")
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // --quick: one small round, no baseline, no settling: proves the bench runs (CI smoke).
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: Vec<(usize, usize)> = if quick {
        vec![(1, 10)]
    } else {
        std::env::var("BENCH_SIZES")
            .unwrap_or_else(|_| "1x10,4x25,10x50".into())
            .split(',')
            .filter_map(|p| {
                p.split_once('x').and_then(|(v, s)| Some((v.trim().parse().ok()?, s.trim().parse().ok()?)))
            })
            .collect()
    };
    let run_baseline = !quick && std::env::var("BENCH_BASELINE").as_deref() != Ok("0");
    let missing: Vec<&str> = ["ip", "iptables", "nsenter"].into_iter().filter(|c| !have(c)).collect();
    if run_baseline && !missing.is_empty() {
        eprintln!(
            "the baseline needs {}: apt-get install iproute2 iptables util-linux (or BENCH_BASELINE=0)",
            missing.join(", ")
        );
        std::process::exit(1);
    }
    let tmp = std::env::temp_dir().join(format!("vpcsh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let setup = Setup {
        rounds: if quick { 1 } else { env_num("BENCH_ROUNDS", 3) },
        settle: std::time::Duration::from_secs(if quick { 0 } else { env_num("BENCH_SETTLE", 15) as u64 }),
        firewall: std::env::var("BENCH_FIREWALL").as_deref() == Ok("1"),
        baseline: run_baseline
            .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/baseline-ip.sh")),
        tmp: tmp.clone(),
    };
    let firewall = if setup.firewall { ", a firewall on every subnet" } else { "" };
    println!("{} rounds per size{firewall}; medians", setup.rounds);
    let mut table = Vec::new();
    for (v, s) in sizes {
        println!("{v} VPCs x {s} subnets");
        table.push(((v, s), measure(v, s, &setup)));
    }
    print_table(&table);
    let fixtures = if quick { 4 } else { env_num("BENCH_FIXTURES", 50) }.max(1);
    let (blocked, answered, secs) = probes_and_fixtures(&setup, if quick { 3 } else { 20 }, fixtures);
    println!(
        "\nprobes in a sandbox: a blocked ping answers in {blocked:.1} ms, an answered one in {answered:.2} ms"
    );
    println!(
        "vpcsh test -j 2 of {fixtures} small fixtures: {secs:.2} s ({:.0} ms each)",
        secs * 1000.0 / fixtures as f64
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
