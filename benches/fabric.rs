//! Throughput across a fabric: a TCP stream between two hosts of one subnet on different
//! sandbox nodes (over VXLAN through the simulated underlay), side by side with the same
//! stream between two hosts on one node, in one run. In-process, iperf3-style: a sink
//! thread inside the receiver's namespace counts what a source thread inside the sender's
//! sends. Prints every round, the medians (MiB/s) and the ratio.
//!
//! `cargo bench --bench fabric` (as root). Env: BENCH_ROUNDS (5), BENCH_MIB (256) per stream,
//! BENCH_CONTROL (`static`, or `evpn` with FRR installed).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const VPCSH: &str = env!("CARGO_BIN_EXE_vpcsh");
const PORT: u16 = 5201;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The two sandbox machines and their fabric, destroyed on drop.
struct Lab {
    tag: String,
    state: PathBuf,
}

impl Lab {
    fn sandbox(&self, node: &str) -> String {
        format!("{}{node}", self.tag)
    }

    fn vpcsh(&self, node: &str, args: &[&str]) {
        let out = Command::new(VPCSH)
            .args(["--sandbox", &self.sandbox(node), "--state-dir"])
            .arg(&self.state)
            .args(["--fabric", &format!("{}f", self.tag), "--node", node])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "vpcsh {args:?} on {node}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in ["n1", "n2"] {
            let _ = Command::new(VPCSH)
                .args(["--sandbox", &self.sandbox(node), "--state-dir"])
                .arg(&self.state)
                .arg("destroy")
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Runs `f` in a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// MiB/s of one stream of `bytes` from namespace `from` to `to_ip` in namespace `to`.
fn stream(from: &str, to: &str, to_ip: Ipv4Addr, bytes: usize) -> f64 {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = in_netns(to, move || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        let start = Instant::now();
        while got < bytes {
            match conn.read(&mut buf).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        (got, start.elapsed())
    });
    ready_rx.recv().unwrap();
    let source = in_netns(from, move || {
        let addr = SocketAddr::from((to_ip, PORT));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            conn.write_all(&chunk[..n]).unwrap();
            sent += n;
        }
    });
    source.join().unwrap();
    let (got, took) = sink.join().unwrap();
    assert_eq!(got, bytes, "the stream arrived short");
    got as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = env_or("BENCH_ROUNDS", "5").parse().unwrap();
    let bytes: usize = env_or("BENCH_MIB", "256").parse::<usize>().unwrap() << 20;
    let control = env_or("BENCH_CONTROL", "static");
    let tag = format!("fb{}", std::process::id());
    let lab = Lab { state: std::env::temp_dir().join(format!("{tag}-state")), tag };
    let script = lab.state.with_extension("rhai");
    std::fs::create_dir_all(&lab.state).unwrap();
    std::fs::write(
        &script,
        format!(
            r#"fabric(#{{ control: "{control}" }});
let n1 = node("n1", #{{ underlay: "192.0.2.11" }});
let n2 = node("n2", #{{ underlay: "192.0.2.12" }});
let s = vpc("v", "10.7.0.0/16").subnet("s", "10.7.1.0/24");
s.host("a", #{{ node: n1, ip: "10.7.1.10" }});
s.host("b", #{{ node: n1, ip: "10.7.1.11" }});
s.host("c", #{{ node: n2, ip: "10.7.1.12" }});
"#
        ),
    )
    .unwrap();
    for node in ["n1", "n2"] {
        lab.vpcsh(node, &["apply", script.to_str().unwrap()]);
    }
    let a = format!("{}.v.a", lab.sandbox("n1"));
    let b = format!("{}.v.b", lab.sandbox("n1"));
    let c = format!("{}.v.c", lab.sandbox("n2"));
    // EVPN needs its sessions up before the first packet crosses.
    for _ in 0..100 {
        let ping = Command::new("ip")
            .args(["netns", "exec", &a, "ping", "-c1", "-W1", "10.7.1.12"])
            .output()
            .unwrap();
        if ping.status.success() {
            break;
        }
    }
    println!("fabric throughput, {control} control plane, {} MiB per stream, {rounds} rounds", bytes >> 20);
    println!("{:>6} {:>14} {:>14}", "round", "one node MiB/s", "two nodes MiB/s");
    let (mut local, mut across) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let l = stream(&a, &b, "10.7.1.11".parse().unwrap(), bytes);
        let x = stream(&a, &c, "10.7.1.12".parse().unwrap(), bytes);
        println!("{round:>6} {l:>14.0} {x:>14.0}");
        local.push(l);
        across.push(x);
    }
    let (l, x) = (median(local), median(across));
    println!("{:>6} {l:>14.0} {x:>14.0}", "median");
    println!("two nodes / one node: {:.2}", x / l);
}
