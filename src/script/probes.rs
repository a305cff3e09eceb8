//! Effects on the running network: workloads (`run`, `serve`), commands (`exec`) and probes
//! (`ping`, `connect`, `http_get`), each applying pending declarations first, then asking
//! the `Effects` the session supplied; and `internet()`, the simulated internet.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rhai::plugin::*;
use rhai::{Array, Dynamic, Map, NativeCallContext};

use super::context::{
    Res, Shared, check_options, effect_failed, fail, fail_here, option_type_error, option_value_error,
    run_apply, shared, span,
};
use super::effects::{EffectError, Endpoint, ProbeOptions, Prober};
use super::errors::Fault;
use super::handles::{HostHandle, InternetHandle, SubnetHandle, first_host, host_ip, host_ip6};
use crate::model::{HostId, HostRef, WorkloadDecl, WorkloadKind};
use crate::plan::desired::{INTERNET_IP, INTERNET_IP6};

const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// A host, a subnet (its first host), `internet()`, or an address string (IPv6 with or
/// without brackets); a handle stands for its address of `family` (4 or 6).
pub(super) fn endpoint(
    ctx: &NativeCallContext,
    shared: &Shared,
    v: &Dynamic,
    role: &str,
    family: u8,
) -> Res<(Endpoint, IpAddr)> {
    let host = |h: HostRef| -> Res<(Endpoint, IpAddr)> {
        let subnet = shared.decls.subnet(shared.decls.host_subnet(h));
        let endpoint = Endpoint::Host {
            vpc: shared.decls.vpc(subnet.vpc).name.clone(),
            host: shared.decls.host_name(h).to_string(),
        };
        if family == 4 {
            return Ok((endpoint, host_ip(&shared.decls, h).unwrap_or(Ipv4Addr::UNSPECIFIED).into()));
        }
        match host_ip6(&shared.decls, h) {
            Some(ip) => Ok((endpoint, ip.into())),
            None if role == "source" => Ok((endpoint, Ipv4Addr::UNSPECIFIED.into())),
            None => {
                let name = shared.decls.host_name(h);
                let fault =
                    Fault::new(format!("host `{name}` has no IPv6 address"), span(shared, ctx), "IPv4 only")
                        .help(format!(
                            "give subnet `{}` `#{{ ipv6: true }}`, or probe over IPv4",
                            subnet.name
                        ));
                fail(ctx, fault)
            }
        }
    };
    if let Some(h) = v.clone().try_cast::<HostHandle>() {
        return host(h.0);
    }
    if let Some(s) = v.clone().try_cast::<SubnetHandle>() {
        return host(first_host(&shared.decls, s.0));
    }
    if v.is::<InternetHandle>() {
        let ip = if family == 6 { IpAddr::V6(INTERNET_IP6) } else { IpAddr::V4(INTERNET_IP) };
        return Ok((Endpoint::Internet, ip));
    }
    if let Ok(text) = v.clone().into_string() {
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(&text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if role == "target" {
                return Ok((Endpoint::Internet, ip));
            }
            // As a source, an address names the host that has it.
            let owners: Vec<HostRef> = (0..shared.decls.hosts.len())
                .map(|i| HostRef::Declared(HostId(i)))
                .filter(|h| {
                    host_ip(&shared.decls, *h).map(IpAddr::V4) == Some(ip)
                        || host_ip6(&shared.decls, *h).map(IpAddr::V6) == Some(ip)
                })
                .collect();
            if let [one] = owners[..] {
                return host(one);
            }
            let why = if owners.is_empty() { "no host has" } else { "several hosts have" };
            let fault = Fault::new(format!("{why} address {ip}"), span(shared, ctx), "ambiguous source")
                .help("pass the host handle itself");
            return fail(ctx, fault);
        }
        let fault = Fault::new(format!("`{text}` is not an IP address"), span(shared, ctx), "not an address");
        return fail(ctx, fault);
    }
    let fault = Fault::new(
        format!("the {role} must be a Host, a Subnet, internet() or an address, not {}", v.type_name()),
        span(shared, ctx),
        "wrong type",
    );
    fail(ctx, fault)
}

/// A command: a string for /bin/sh, or an argv array; never empty.
fn argv(ctx: &NativeCallContext, shared: &Shared, cmd: &Dynamic) -> Res<Vec<String>> {
    if let Ok(text) = cmd.clone().into_string() {
        if !text.trim().is_empty() {
            return Ok(vec!["/bin/sh".into(), "-c".into(), text]);
        }
    } else if let Some(list) = cmd.clone().try_cast::<Array>() {
        let words: Option<Vec<String>> = list.into_iter().map(|w| w.into_string().ok()).collect();
        if let Some(words) = words.filter(|w| w.first().is_some_and(|p| !p.trim().is_empty())) {
            return Ok(words);
        }
    }
    let fault = Fault::new(
        "a command is a non-empty string (run by /bin/sh) or an array of strings naming a program",
        span(shared, ctx),
        "no command",
    )
    .help("e.g. run(w1, \"sleep 1000\") or run(w1, [\"sleep\", \"1000\"])");
    fail(ctx, fault)
}

/// A probe's options: `#{ timeout: secs }`, for ping `count`, and for probes between
/// handles `family` (4, the default, or 6); returned with the family.
fn probe_options(ctx: &NativeCallContext, func: &str, opts: &Map, keys: &[&str]) -> Res<(ProbeOptions, u8)> {
    let sh = shared(ctx);
    let shared = sh.borrow();
    check_options(ctx, &shared, func, opts, keys)?;
    let mut out = ProbeOptions::default();
    if let Some(v) = opts.get("timeout") {
        match v.as_int().map(|s| s as f64).or_else(|_| v.as_float()) {
            Ok(secs) if secs > 0.0 && secs <= 60.0 => out.timeout = Some(Duration::from_secs_f64(secs)),
            _ => {
                return option_type_error(
                    ctx,
                    &shared,
                    "timeout",
                    "a number of seconds above 0, at most 60",
                    v,
                );
            }
        }
    }
    if let Some(v) = opts.get("count") {
        match v.as_int().map(|n| u32::try_from(n).ok().filter(|n| (1..=100).contains(n))) {
            Ok(Some(n)) => out.count = n,
            Ok(None) => return option_value_error(ctx, &shared, "count", "a whole number from 1 to 100", v),
            Err(_) => return option_type_error(ctx, &shared, "count", "a whole number", v),
        }
    }
    let family = match opts.get("family").map(|v| v.as_int()) {
        None => 4,
        Some(Ok(f @ (4 | 6))) => f as u8,
        Some(Ok(_)) => {
            let v = &opts["family"];
            return option_value_error(ctx, &shared, "family", "4 or 6", v);
        }
        Some(Err(_)) => return option_type_error(ctx, &shared, "family", "4 or 6", &opts["family"]),
    };
    Ok((out, family))
}

/// `run()`'s options: `#{ restart: bool }`.
fn restart_option(ctx: &NativeCallContext, shared: &Shared, opts: &Map) -> Res<bool> {
    check_options(ctx, shared, "run", opts, &["restart"])?;
    match opts.get("restart") {
        None => Ok(false),
        Some(v) => v.as_bool().or_else(|_| option_type_error(ctx, shared, "restart", "true or false", v)),
    }
}

fn host_of(ctx: &NativeCallContext, shared: &Shared, v: &Dynamic) -> Res<HostRef> {
    if let Some(h) = v.clone().try_cast::<HostHandle>() {
        return Ok(h.0);
    }
    if let Some(s) = v.clone().try_cast::<SubnetHandle>() {
        return Ok(first_host(&shared.decls, s.0));
    }
    let fault = Fault::new(
        format!("expected a Host or a Subnet, not {}", v.type_name()),
        span(shared, ctx),
        "wrong type",
    );
    fail(ctx, fault)
}

/// Declares a workload, applies, and returns its handle `#{ pid, host }`.
fn workload(ctx: &NativeCallContext, host: &Dynamic, kind: WorkloadKind) -> Res<Map> {
    let sh = shared(ctx);
    let (vpc, name) = {
        let mut shared = sh.borrow_mut();
        let host = host_of(ctx, &shared, host)?;
        let span = span(&shared, ctx);
        shared.decls.workloads.push(WorkloadDecl { host, kind: kind.clone(), span });
        let subnet = shared.decls.subnet(shared.decls.host_subnet(host));
        (shared.decls.vpc(subnet.vpc).name.clone(), shared.decls.host_name(host).to_string())
    };
    run_apply(ctx, &sh)?;
    let pid = sh.borrow_mut().effects.workload_pid(&vpc, &name, &kind);
    let mut m = Map::new();
    m.insert("pid".into(), Dynamic::from(pid));
    m.insert("host".into(), Dynamic::from(format!("{vpc}/{name}")));
    Ok(m)
}

fn exec(ctx: &NativeCallContext, host: &Dynamic, cmd: &Dynamic, opts: Map) -> Res<Map> {
    let sh = shared(ctx);
    let (on, argv, timeout) = {
        let shared = sh.borrow();
        check_options(ctx, &shared, "exec", &opts, &["timeout"])?;
        let timeout = match opts.get("timeout") {
            None => DEFAULT_EXEC_TIMEOUT,
            Some(v) => match v.as_int().map(|s| s as f64).or_else(|_| v.as_float()) {
                Ok(secs) if secs > 0.0 => Duration::from_secs_f64(secs),
                _ => return option_type_error(ctx, &shared, "timeout", "a positive number of seconds", v),
            },
        };
        (endpoint(ctx, &shared, host, "host", 4)?.0, argv(ctx, &shared, cmd)?, timeout)
    };
    run_apply(ctx, &sh)?;
    let result = sh.borrow_mut().effects.prober().exec(&on, &argv, timeout);
    let out = result.or_else(|e| effect_failed(ctx, &sh, e))?;
    let mut m = Map::new();
    m.insert("code".into(), Dynamic::from(i64::from(out.code)));
    m.insert("stdout".into(), Dynamic::from(out.stdout));
    m.insert("stderr".into(), Dynamic::from(out.stderr));
    Ok(m)
}

/// Runs a probe from `from` after applying; `probe` gets the effects, source and target.
fn probe<T>(
    ctx: &NativeCallContext,
    (from, to): (&Dynamic, &Dynamic),
    family: u8,
    probe: impl FnOnce(&mut dyn Prober, &Endpoint, IpAddr) -> Result<T, EffectError>,
) -> Res<T> {
    let sh = shared(ctx);
    let (source, target) = {
        let shared = sh.borrow();
        (endpoint(ctx, &shared, from, "source", family)?.0, endpoint(ctx, &shared, to, "target", family)?.1)
    };
    run_apply(ctx, &sh)?;
    let result = probe(sh.borrow_mut().effects.prober(), &source, target);
    result.or_else(|e| effect_failed(ctx, &sh, e))
}

/// `http://HOST[:PORT][/PATH]` → (host, port, path); the host an address or a name.
fn parse_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    // `[v6]:port` or `[v6]`, else `v4:port` or `v4`.
    let (host, port) = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
        Some((h, "")) => (h, 80),
        Some((h, p)) => (h, p.strip_prefix(':')?.parse().ok()?),
        None => match authority.split_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, 80),
        },
    };
    Some((host.to_string(), port, path))
}

/// The effect functions of the script API. Their `///` comments are the reference.
// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod api {
    use super::*;

    /// The simulated internet (sandbox only): a Host-like handle for 198.51.100.1 and
    /// 2001:db8::1, which serves HTTP on port 80.
    #[rhai_fn(return_raw)]
    pub fn internet(ctx: NativeCallContext) -> Res<InternetHandle> {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        if !shared.effects.sandboxed() {
            let fault = Fault::new(
                "internet() exists only in a sandbox",
                span(&shared, &ctx),
                "no simulated internet",
            )
            .help("run with --sandbox NAME");
            return fail(&ctx, fault);
        }
        Ok(InternetHandle)
    }

    /// Runs a command in a host (a string runs under /bin/sh, an array is argv); it outlives
    /// the script until `destroy` or until the call is removed. A command that ends stays
    /// ended, with its exit status in `vpcsh status`, unless `#{ restart: true }` (then the
    /// next apply starts it again). Returns `#{ pid, host }`; output goes to a log.
    #[rhai_fn(return_raw)]
    pub fn run(ctx: NativeCallContext, host: Dynamic, cmd: Dynamic) -> Res<Map> {
        run_with(ctx, host, cmd, Map::new())
    }
    #[rhai_fn(name = "run", return_raw)]
    pub fn run_with(ctx: NativeCallContext, host: Dynamic, cmd: Dynamic, opts: Map) -> Res<Map> {
        let (argv, restart) = {
            let sh = shared(&ctx);
            let shared = sh.borrow();
            (argv(&ctx, &shared, &cmd)?, restart_option(&ctx, &shared, &opts)?)
        };
        workload(&ctx, &host, WorkloadKind::Run { argv, restart })
    }

    /// Runs vpcsh's HTTP server in a host: `GET /` answers `<vpc>/<host>`, `GET /ip` the
    /// caller's address as the server sees it. Returns `#{ pid, host }`.
    #[rhai_fn(return_raw)]
    pub fn serve(ctx: NativeCallContext, host: Dynamic, port: i64) -> Res<Map> {
        let Some(port) = u16::try_from(port).ok().filter(|p| *p > 0) else {
            return fail_here(&ctx, &shared(&ctx).borrow(), format!("{port} is not a port"), "out of range");
        };
        workload(&ctx, &host, WorkloadKind::Serve { port })
    }

    /// Runs a command in a host to completion (default timeout 10 s, `#{ timeout: secs }`);
    /// returns `#{ code, stdout, stderr }`.
    #[rhai_fn(return_raw)]
    pub fn exec(ctx: NativeCallContext, host: Dynamic, cmd: Dynamic) -> Res<Map> {
        super::exec(&ctx, &host, &cmd, Map::new())
    }
    #[rhai_fn(name = "exec", return_raw)]
    pub fn exec_with(ctx: NativeCallContext, host: Dynamic, cmd: Dynamic, opts: Map) -> Res<Map> {
        super::exec(&ctx, &host, &cmd, opts)
    }

    /// Whether `to` answers an ICMP echo from `from`: within `#{ timeout: secs }`, else the
    /// configured `probe-timeout`, else 1 s on a real host and 0.2 s in a sandbox (0.05 s
    /// where the model says the flow is blocked); `#{ count: n }` tries up to n echoes. Between handles it uses IPv4 unless
    /// `#{ family: 6 }`; an address string (IPv4 or IPv6) is used as it is.
    #[rhai_fn(return_raw)]
    pub fn ping(ctx: NativeCallContext, from: Dynamic, to: Dynamic) -> Res<bool> {
        ping_with(ctx, from, to, Map::new())
    }
    #[rhai_fn(name = "ping", return_raw)]
    pub fn ping_with(ctx: NativeCallContext, from: Dynamic, to: Dynamic, opts: Map) -> Res<bool> {
        let (opts, family) = probe_options(&ctx, "ping", &opts, &["timeout", "count", "family"])?;
        probe(&ctx, (&from, &to), family, |p, from, to| p.ping(from, to, opts)).map(|rtt| rtt.is_some())
    }

    /// The round trip of an ICMP echo from `from` to `to`, in milliseconds (options as
    /// `ping`); `()` when nothing answered. `assert(ping_rtt(a, b) > 40.0, ...)`.
    #[rhai_fn(return_raw)]
    pub fn ping_rtt(ctx: NativeCallContext, from: Dynamic, to: Dynamic) -> Res<Dynamic> {
        ping_rtt_with(ctx, from, to, Map::new())
    }
    #[rhai_fn(name = "ping_rtt", return_raw)]
    pub fn ping_rtt_with(ctx: NativeCallContext, from: Dynamic, to: Dynamic, opts: Map) -> Res<Dynamic> {
        let (opts, family) = probe_options(&ctx, "ping_rtt", &opts, &["timeout", "count", "family"])?;
        let rtt = probe(&ctx, (&from, &to), family, |p, from, to| p.ping(from, to, opts))?;
        Ok(rtt.map_or(Dynamic::UNIT, |d| Dynamic::from_float(d.as_secs_f64() * 1000.0)))
    }

    /// Whether a TCP connection from `from` to `to:port` is accepted (timeouts and
    /// `family` as `ping`).
    #[rhai_fn(return_raw)]
    pub fn connect(ctx: NativeCallContext, from: Dynamic, to: Dynamic, port: i64) -> Res<bool> {
        connect_with(ctx, from, to, port, Map::new())
    }
    #[rhai_fn(name = "connect", return_raw)]
    pub fn connect_with(
        ctx: NativeCallContext,
        from: Dynamic,
        to: Dynamic,
        port: i64,
        opts: Map,
    ) -> Res<bool> {
        let (opts, family) = probe_options(&ctx, "connect", &opts, &["timeout", "family"])?;
        let port = u16::try_from(port).unwrap_or(0);
        probe(&ctx, (&from, &to), family, |p, from, to| p.connect(from, to, port, opts))
    }

    /// An HTTP GET from a host: `#{ status, body }`, status 0 when nothing answered
    /// (timeouts as `ping`). IPv6 addresses go in brackets: `http://[2001:db8::1]/ip`; a
    /// name (`http://w2/`, `http://w2.prod/`) is looked up by the source host's VPC
    /// resolver, and one it does not know is status 0 too.
    #[rhai_fn(return_raw)]
    pub fn http_get(ctx: NativeCallContext, from: Dynamic, url: &str) -> Res<Map> {
        http_get_with(ctx, from, url, Map::new())
    }
    #[rhai_fn(name = "http_get", return_raw)]
    pub fn http_get_with(ctx: NativeCallContext, from: Dynamic, url: &str, opts: Map) -> Res<Map> {
        let (opts, _) = probe_options(&ctx, "http_get", &opts, &["timeout"])?;
        let Some((host, port, path)) = parse_url(url) else {
            let fault = Fault::new(
                format!("`{url}` is not an http:// URL"),
                span(&shared(&ctx).borrow(), &ctx),
                "bad URL",
            )
            .help(
                "e.g. http://10.0.1.2/, http://w2/, http://198.51.100.1:8080/ip or http://[2001:db8::1]/ip",
            );
            return fail(&ctx, fault);
        };
        let target = if host.parse::<IpAddr>().is_ok() {
            Dynamic::from(host)
        } else {
            // A name: the VPC's resolver answers it, asked from inside the source host.
            match probe(&ctx, (&from, &from), 4, |p, from, _| p.resolve(from, &host, opts))? {
                Some(ip) => Dynamic::from(ip.to_string()),
                None => {
                    let mut m = Map::new();
                    m.insert("status".into(), Dynamic::from(0_i64));
                    m.insert("body".into(), Dynamic::from(String::new()));
                    return Ok(m);
                }
            }
        };
        let (status, body) =
            probe(&ctx, (&from, &target), 4, |p, from, to| p.http_get(from, to, port, &path, opts))?;
        let mut m = Map::new();
        m.insert("status".into(), Dynamic::from(i64::from(status)));
        m.insert("body".into(), Dynamic::from(body));
        Ok(m)
    }
}

pub(super) fn register(engine: &mut rhai::Engine) {
    engine.register_global_module(exported_module!(api).into());
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls_need_an_address_and_may_have_a_port_and_path() {
        assert_eq!(parse_url("http://10.0.1.2/"), Some(("10.0.1.2".into(), 80, "/".into())));
        assert_eq!(parse_url("http://10.0.1.2:8080/ip"), Some(("10.0.1.2".into(), 8080, "/ip".into())));
        assert_eq!(parse_url("http://10.0.1.2"), Some(("10.0.1.2".into(), 80, "/".into())));
        assert_eq!(parse_url("http://[fd10::2]:8080/ip"), Some(("fd10::2".into(), 8080, "/ip".into())));
        assert_eq!(parse_url("http://[fd10::2]"), Some(("fd10::2".into(), 80, "/".into())));
        assert_eq!(parse_url("http://[fd10::2]x/"), None);
        assert_eq!(parse_url("ftp://x/"), None);
    }
}
