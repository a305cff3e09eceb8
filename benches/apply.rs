//! Bring-up and teardown of V VPCs × S subnets: vpcsh against the baseline beside this file
//! (`baseline-ip.sh`: the same topology the way the original tool built it, one `ip` or
//! `iptables` process per step), side by side in one run, each in its own sandbox. Prints
//! every round, the medians and the ratios.
//!
//! `cargo bench --bench apply` (as root). Env: BENCH_V (10), BENCH_S (50), BENCH_ROUNDS (3),
//! BENCH_BASELINE=0 to skip the baseline, BENCH_FIREWALL=1 to put a firewall on every subnet,
//! BENCH_SETTLE (15) seconds to wait after each teardown: the kernel destroys unmounted
//! namespaces asynchronously, and a bring-up started while it does runs several times slower,
//! whichever tool it is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const VPCSH: &str = env!("CARGO_BIN_EXE_vpcsh");

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The baseline's topology as a vpcsh script: VPC v = 10.v.0.0/16, subnet s = 10.v.s.0/24
/// with one host, odd subnets public.
fn script(v: usize, s: usize, firewall: bool) -> String {
    let mut out = String::new();
    for i in 1..=v {
        out += &format!("let v{i} = vpc(\"v{i}\", \"10.{i}.0.0/16\");\n");
        for j in 1..=s {
            out += &format!(
                "let s = v{i}.subnet(\"s{j}\", \"10.{i}.{j}.0/24\", #{{ public: {} }});\n",
                j % 2 == 1
            );
            if firewall {
                out += "firewall(s, #{ ingress: [#{ proto: \"tcp\", port: 80, action: \"allow\" }, \
                        #{ proto: \"tcp\", port: 22, action: \"deny\" }] });\n";
            }
        }
    }
    out
}

fn vpcsh(sandbox: &str, state: &Path, args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = Command::new(VPCSH)
        .args(["--sandbox", sandbox, "--state-dir"])
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    assert!(out.status.success(), "vpcsh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    ms
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (v, s, rounds) = (env_num("BENCH_V", 10), env_num("BENCH_S", 50), env_num("BENCH_ROUNDS", 3));
    let subnets = (v * s) as f64;
    let settle = std::time::Duration::from_secs(env_num("BENCH_SETTLE", 15) as u64);
    let tmp = std::env::temp_dir().join(format!("vpcsh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let script_path = tmp.join("topology.rhai");
    let firewall = std::env::var("BENCH_FIREWALL").as_deref() == Ok("1");
    std::fs::write(&script_path, script(v, s, firewall)).unwrap();
    let baseline_script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/baseline-ip.sh");
    let run_baseline = std::env::var("BENCH_BASELINE").as_deref() != Ok("0");
    let missing: Vec<&str> = ["ip", "iptables", "nsenter"].into_iter().filter(|c| !have(c)).collect();
    if run_baseline && !missing.is_empty() {
        eprintln!(
            "the baseline needs {}: apt-get install iproute2 iptables util-linux (or BENCH_BASELINE=0)",
            missing.join(", ")
        );
        std::process::exit(1);
    }

    println!(
        "{v} VPCs x {s} subnets{}, {rounds} rounds",
        if firewall { ", a firewall on every subnet" } else { "" }
    );
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>14}",
        "round", "vpcsh up", "vpcsh down", "baseline up", "baseline down"
    );
    let (mut up, mut down, mut bl_up, mut bl_down) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let sandbox = format!("vb{}-{round}", std::process::id());
        let state = tmp.join(&sandbox);
        up.push(vpcsh(&sandbox, &state, &["apply", script_path.to_str().unwrap()]));
        down.push(vpcsh(&sandbox, &state, &["destroy"]));
        std::thread::sleep(settle);
        let (mut bu, mut bd) = (f64::NAN, f64::NAN);
        if run_baseline {
            let bl_state = tmp.join(format!("baseline-{round}.state"));
            bu = baseline(&baseline_script, &bl_state, &[&v.to_string(), &s.to_string()], "up_ms")
                .unwrap_or(f64::NAN);
            bd = baseline(&baseline_script, &bl_state, &["--down"], "down_ms").unwrap_or(f64::NAN);
            std::thread::sleep(settle);
            bl_up.push(bu);
            bl_down.push(bd);
        }
        println!(
            "{round:<6} {:>9.1} ms {:>9.1} ms {:>11.1} ms {:>11.1} ms",
            up[round - 1],
            down[round - 1],
            bu,
            bd
        );
    }
    let (mu, md) = (median(up), median(down));
    println!(
        "median vpcsh:    up {mu:.1} ms ({:.2} ms/subnet), down {md:.1} ms ({:.2} ms/subnet)",
        mu / subnets,
        md / subnets
    );
    if run_baseline {
        let (bu, bd) = (median(bl_up), median(bl_down));
        println!(
            "median baseline: up {bu:.1} ms ({:.2} ms/subnet), down {bd:.1} ms ({:.2} ms/subnet)",
            bu / subnets,
            bd / subnets
        );
        println!("ratio baseline/vpcsh: up {:.1}x, down {:.1}x", bu / mu, bd / md);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
