//! `vpcsh capture TARGET`: the packets of a host (its `eth0`), a VPC's router or the
//! internet, to a pcap file or one line each on the terminal, until Ctrl-C or `-c N`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::exec::{capture, interrupted, stop_on_signals};
use crate::session::{Failure, Target};

pub(crate) struct CaptureOptions {
    /// A pcap file to write instead of printing a line per packet.
    pub write: Option<PathBuf>,
    pub filter: Option<String>,
    /// Stop after this many packets (that pass the filter).
    pub count: Option<u64>,
    /// Default: `eth0` of a host, every interface of a router or the internet.
    pub interface: Option<String>,
}

pub(crate) fn capture(target: &Target, who: &str, opts: CaptureOptions) -> Result<ExitCode, Failure> {
    let ns = super::enter::resolve(target, who)?;
    let filter = capture::parse_filter(opts.filter.as_deref().unwrap_or_default()).map_err(|e| {
        Failure::refused(format!("bad filter: {e}"), Some("e.g. --filter \"tcp and port 80\""))
    })?;
    let interface = opts.interface.or_else(|| who.contains('/').then(|| "eth0".to_string()));
    let failed = |e: std::io::Error| Failure::refused(format!("capturing in {ns}: {e}"), None);
    let sock = capture::open(&ns, interface.as_deref()).map_err(failed)?;
    let mut file = match &opts.write {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| Failure::refused(format!("cannot write {}: {e}", path.display()), None))?;
            let mut out = BufWriter::new(file);
            capture::pcap_header(&mut out, capture::SNAPLEN).map_err(failed)?;
            Some(out)
        }
        None => None,
    };
    eprintln!("capturing on {} in {who}; Ctrl-C stops", interface.as_deref().unwrap_or("every interface"));
    stop_on_signals();
    let mut buf = vec![0u8; capture::SNAPLEN as usize];
    let mut seen = 0u64;
    while opts.count.is_none_or(|n| seen < n) && !interrupted() {
        let Some((kept, len)) = capture::next(&sock, &mut buf, Duration::from_millis(200)).map_err(failed)?
        else {
            continue;
        };
        let frame = capture::decode(&buf[..kept]);
        if !capture::matches(&frame, &filter) {
            continue;
        }
        seen += 1;
        let now = SystemTime::now();
        match &mut file {
            // Flushed per packet: the file is readable while the capture runs.
            Some(out) => capture::pcap_record(out, now, &buf[..kept], len)
                .and_then(|()| out.flush())
                .map_err(failed)?,
            None => println!("{} {}", clock(now), capture::summary(&frame, len)),
        }
    }
    eprintln!("{seen} packet{} captured", if seen == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}

/// `HH:MM:SS.micros` (UTC), as tcpdump prints.
fn clock(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:06}", secs / 3600, secs / 60 % 60, secs % 60, since.subsec_micros())
}
