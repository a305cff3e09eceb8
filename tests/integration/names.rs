//! Names as on real machines: each host's hostname is its name, and a resolver per VPC
//! answers `HOST` and `HOST.VPC` (and `HOST.SUBNET.VPC`) inside the VPC, peers' names
//! across a peering, and nothing across VPCs that are not peered. Looked up with the
//! system's own resolver (`getent`), and from scripts with `http_get`.

use crate::common::*;

const LAB: &str = r#"
let prod = vpc("prod", "10.88.0.0/16");
let web = prod.subnet("web", "10.88.1.0/24");
let w1 = web.host("w1");
let w2 = web.host("w2");
let dev = vpc("dev", "10.89.0.0/16");
let d1 = dev.subnet("s", "10.89.1.0/24").host("d1");
peer(prod, dev);
let x = vpc("x", "10.90.0.0/16");
let x1 = x.subnet("s", "10.90.1.0/24").host("x1");
serve(w2, 80);
"#;

fn getent(sb: &Sandbox, host: &str, name: &str) -> Run {
    sb.run(&["exec", host, "--", "getent", "hosts", name])
}

#[test]
fn hosts_find_each_other_by_name_within_their_vpc_and_across_a_peering_only() {
    let sb = Sandbox::new("names");
    sb.apply(LAB);
    assert_eq!(sb.run(&["exec", "prod/w1", "--", "hostname"]).stdout.trim(), "w1");
    assert_eq!(
        sb.run(&["exec", "dev", "--", "hostname"]).stdout.trim(),
        "dev",
        "a router is named after its VPC"
    );
    for name in ["w2", "w2.prod", "w2.web.prod"] {
        let run = getent(&sb, "prod/w1", name);
        assert!(run.stdout.starts_with("10.88.1.3"), "{name}: {run:?}");
    }
    let across = getent(&sb, "dev/d1", "w1.prod");
    assert!(across.stdout.starts_with("10.88.1.2"), "{across:?}");
    assert_eq!(getent(&sb, "dev/d1", "w1").code, 2, "a bare name is only the VPC's own");
    let unpeered = getent(&sb, "x/x1", "w1.prod");
    assert_eq!(unpeered.code, 2, "no name crosses to an unpeered VPC: {unpeered:?}");
    // The machine's own resolver configuration and hostname are untouched.
    let machine = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!machine.contains("169.254.169.253"), "{machine}");

    // Scripts fetch by name, as hosts do.
    let script = format!(
        "{LAB}\nassert(http_get(w1, \"http://w2/\").body == \"prod/w2\\n\", \"by name\");\n\
         assert(http_get(d1, \"http://w2.prod/\").status == 200, \"across the peering\");\n\
         assert(http_get(x1, \"http://w2.prod/\").status == 0, \"unknown from x\");"
    );
    sb.apply(&script);
}

#[test]
fn a_vpcs_resolver_follows_its_hosts() {
    let sb = Sandbox::new("names-follow");
    sb.apply(LAB);
    assert_eq!(getent(&sb, "prod/w1", "w3").code, 2);
    sb.apply(&format!("{LAB}\nweb.host(\"w3\");"));
    let run = getent(&sb, "prod/w1", "w3");
    assert!(run.stdout.starts_with("10.88.1.4"), "a new host is known at once: {run:?}");
    let status = sb.run(&["status"]);
    assert!(status.stdout.contains("resolver"), "{status:?}");
}

/// Mount lines of `pid`'s mount namespace that are namespace names.
fn names_mounted(pid: i64) -> Vec<String> {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    mounts.lines().filter(|l| l.contains(" /run/netns/")).map(String::from).collect()
}

#[test]
fn a_hosts_commands_have_mounts_of_their_own_without_the_machines_namespace_names() {
    let sb = Sandbox::new("mounts");
    let script = format!("{LAB}\nrun(w1, \"sleep 303\");");
    sb.apply(&script);
    let pid = sb.status_processes("sleep 303")[0]["pid"].as_i64().unwrap();
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(mounts.contains(" /etc/resolv.conf "), "the VPC's resolver is bound: {mounts}");
    assert_eq!(names_mounted(pid), Vec::<String>::new(), "a workload holds the machine's names");

    // A namespace made after the workload started does not reach into it either.
    sb.apply(&format!("{script}\nweb.host(\"w3\");"));
    assert!(list_netns().contains(&sb.ns("prod.w3")));
    assert!(running(pid), "the workload was restarted");
    assert_eq!(names_mounted(pid), Vec::<String>::new(), "a later name reached the workload");

    // Inside: no names, and vpcsh's working directory.
    let cwd = std::env::current_dir().unwrap();
    let inside = sb.run(&["exec", "prod/w1", "--", "sh", "-c", "ls -A /run/netns | wc -l; pwd"]);
    assert_eq!(inside.stdout, format!("0\n{}\n", cwd.display()), "{inside:?}");

    // What one command mounts stays its own: not on the machine, not in another host.
    let dir = sb.dir.0.join("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let line = format!(" {} ", dir.display());
    let mount = format!("mount -t tmpfs none {0} && grep -c '{line}' /proc/self/mountinfo", dir.display());
    let mounted = sb.run(&["exec", "prod/w1", "--", "sh", "-c", &mount]);
    assert_eq!(mounted.stdout.trim(), "1", "{mounted:?}");
    let leaked = std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&line);
    if leaked {
        let _ = std::process::Command::new("umount").arg("-l").arg(&dir).status();
    }
    assert!(!leaked, "a command's mount reached the machine");
    let other = sb.run(&["exec", "prod/w2", "--", "grep", "-c", &line, "/proc/self/mountinfo"]);
    assert_eq!(other.stdout.trim(), "0", "a command's mount reached another host: {other:?}");
}
