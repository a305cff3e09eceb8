//! The built-in HTTP server (`vpcsh __serve`): `GET /` answers a fixed body, `GET /ip` the
//! caller's address as the server sees it (after any NAT). Runs inside a namespace.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use crate::exec::{netns, process::READY_LINE};

/// Enters `ns` (this process is still single-threaded), listens on `port`, serves forever.
pub(crate) fn serve(ns: &str, port: u16, body: &str) -> io::Result<()> {
    let fd = netns::open(ns)?;
    setns(&fd, CloneFlags::CLONE_NEWNET)?;
    // Both families where IPv6 is on (a `[::]` socket takes IPv4 too), else IPv4 alone.
    let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
        .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?;
    println!("{READY_LINE} {} in {ns}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let body = body.to_string();
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &body) {
                eprintln!("request failed: {e}");
            }
        });
    }
    Ok(())
}

fn answer(mut stream: TcpStream, body: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers so the client sees a clean close.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, text) = match (method, path) {
        ("GET", "/") => ("200 OK", body.to_string()),
        ("GET", "/ip") => ("200 OK", format!("{}\n", caller(stream.peer_addr()?.ip()))),
        ("GET", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

/// The caller's address as it would write it: an IPv4 caller of a dual-stack socket
/// arrives as `::ffff:a.b.c.d`.
fn caller(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
