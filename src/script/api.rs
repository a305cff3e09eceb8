//! The script API as users see it: signatures and one-line docs, for error help (and for
//! the REPL's `:help` and completion).

pub(crate) struct Function {
    pub name: &'static str,
    pub signature: &'static str,
    pub doc: &'static str,
}

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "vpc",
        signature: "vpc(name, cidr[, opts]) -> Vpc",
        doc: "declare a VPC with an IPv4 CIDR from /16 to /28",
    },
    Function {
        name: "subnet",
        signature: "subnet(vpc, name, cidr[, #{ public: bool }]) -> Subnet, or vpc.subnet(name, cidr[, opts])",
        doc: "declare a subnet inside a VPC; private unless public: true",
    },
    Function {
        name: "host",
        signature: "host(subnet, name[, #{ ip: \"a.b.c.d\" }]) -> Host, or subnet.host(name[, opts])",
        doc: "declare a host in a subnet, at the next free address unless ip is given",
    },
    Function {
        name: "nat",
        signature: "nat(subnet)",
        doc: "egress-only internet for a private subnet (a NAT gateway)",
    },
    Function {
        name: "publish",
        signature: "publish(host, port, host_port[, \"udp\"])",
        doc: "forward the machine's host_port to a public host's port, like docker run -p",
    },
    Function {
        name: "peer",
        signature: "peer(a, b[, #{ allow: [cidr or subnet, ...] }])",
        doc: "route two VPCs to each other (never transitively); allow limits what crosses",
    },
    Function {
        name: "firewall",
        signature: "firewall(host or subnet, #{ ingress: [rule, ...], egress: [rule, ...] })",
        doc: "a stateful policy; rule: #{ proto, port, from/to, action: \"allow\"|\"deny\" }, first match wins",
    },
    Function {
        name: "policy_file",
        signature: "policy_file(path) -> policy",
        doc: "read a seed-format JSON policy (path relative to the script)",
    },
    Function {
        name: "apply",
        signature: "apply() -> #{ created, changed, deleted }",
        doc: "make reality match the declarations now",
    },
    Function {
        name: "destroy",
        signature: "destroy([vpc])",
        doc: "remove one VPC, or everything this state owns",
    },
    Function {
        name: "assert",
        signature: "assert(cond, message)",
        doc: "fail the script with a diagnostic at the call",
    },
];

pub(crate) fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// Rhai's spelling of argument types, made readable: `&str | ImmutableString | String` → `string`.
pub(crate) fn readable_types(signature: &str) -> String {
    signature
        .replace("&str | ImmutableString | String", "string")
        .replace("ImmutableString", "string")
        .replace("i64", "int")
        .replace("f64", "float")
}
