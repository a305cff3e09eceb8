//! `vpcsh capture`: a host's packets in a pcap file, checked byte by byte; stopped by
//! `-c N` or by Ctrl-C; a filter that is not understood is a diagnostic.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const LAB: &str = "let s = vpc(\"v\", \"10.84.0.0/16\").subnet(\"s\", \"10.84.1.0/24\");\n\
                   let a = s.host(\"a\");\nlet b = s.host(\"b\");\n";

/// Starts `vpcsh capture` and waits until it listens.
fn start(sb: &Sandbox, args: &[&str]) -> Child {
    let mut all = vec!["capture"];
    all.extend_from_slice(args);
    let mut child = sb.cmd(&all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("capturing on"), "{line}");
    child
}

fn wait(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "capture did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The records of a pcap file: (captured bytes, length on the wire).
fn records(pcap: &[u8]) -> Vec<(Vec<u8>, u32)> {
    let u32_at = |at: usize| u32::from_le_bytes(pcap[at..at + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "pcap magic");
    assert_eq!((pcap[4], pcap[6]), (2, 4), "version 2.4");
    assert_eq!(u32_at(20), 1, "Ethernet frames");
    let (mut at, mut out) = (24, Vec::new());
    while at + 16 <= pcap.len() {
        let (kept, len) = (u32_at(at + 8) as usize, u32_at(at + 12));
        out.push((pcap[at + 16..at + 16 + kept].to_vec(), len));
        at += 16 + kept;
    }
    assert_eq!(at, pcap.len(), "records fill the file exactly");
    out
}

#[test]
fn a_capture_holds_the_packets_a_test_sends() {
    let sb = Sandbox::new("capture");
    sb.apply(LAB);
    let file = sb.dir.0.join("a.pcap");
    let mut capture = start(&sb, &["v/a", "-w", file.to_str().unwrap(), "-c", "2", "--filter", "icmp"]);
    assert!(ping(&sb.ns("v.b"), "10.84.1.2"));
    assert_eq!(wait(&mut capture), 0);
    let records = records(&std::fs::read(&file).unwrap());
    assert_eq!(records.len(), 2, "-c 2");
    let (request, reply) = (&records[0].0, &records[1].0);
    for frame in [request, reply] {
        assert_eq!(frame[12..14], [0x08, 0x00], "IPv4");
        assert_eq!(frame[14 + 9], 1, "ICMP");
    }
    assert_eq!(request[14 + 12..14 + 20], [10, 84, 1, 3, 10, 84, 1, 2], "b to a");
    assert_eq!(request[34], 8, "echo request");
    assert_eq!(reply[14 + 12..14 + 20], [10, 84, 1, 2, 10, 84, 1, 3], "a to b");
    assert_eq!(reply[34], 0, "echo reply");
    assert_eq!(records[0].1 as usize, request.len(), "whole frames kept");
}

#[test]
fn ctrl_c_ends_a_capture_that_prints_a_line_per_packet() {
    let sb = Sandbox::new("capture-int");
    sb.apply(LAB);
    let mut capture = start(&sb, &["v/a", "--filter", "icmp and host 10.84.1.3"]);
    assert!(ping(&sb.ns("v.b"), "10.84.1.2"));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(capture.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    assert_eq!(wait(&mut capture), 0);
    let out = String::from_utf8(capture.wait_with_output().unwrap().stdout).unwrap();
    assert!(out.contains("10.84.1.3 > 10.84.1.2: ICMP echo request"), "{out}");
    assert!(out.contains("10.84.1.2 > 10.84.1.3: ICMP echo reply"), "{out}");

    let bad = sb.run(&["capture", "v/a", "--filter", "udp or tcp"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("`or` is not understood"), "{bad:?}");
}
