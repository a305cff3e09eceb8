//! `vpcsh graph`: the topology as a diagram — Graphviz `dot`, Mermaid text or SVG — with VPCs
//! as clusters, subnets and hosts with their addresses, the internet, NAT gateways, peerings
//! with their allow-lists, published ports and firewalled targets.

use std::fmt::Write;

use crate::model::{Network, Protected, Vpc};
use crate::session::Failure;

/// The most boxes the in-process SVG layout is asked to place. Its layout time grows with
/// about the cube of the diagram (425 boxes: 1.8 s, 1,000: minutes), so larger networks are
/// refused with a pointer to Graphviz rather than left to hang.
const SVG_MAX_NODES: usize = 500;

/// The diagram formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Dot,
    Mermaid,
    Svg,
}

/// Renders a network in a format.
pub(crate) fn render(network: &Network, format: Format) -> Result<String, Failure> {
    Ok(match format {
        Format::Dot => dot(network, Clusters::Drawn),
        Format::Mermaid => mermaid(network),
        Format::Svg => svg(network)?,
    })
}

/// How a VPC is shown: as a cluster around its parts, or — for the in-process layout, which
/// does not draw clusters — named on its router.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clusters {
    Drawn,
    OnRouter,
}

/// SVG laid out in-process by `layout-rs` (pure Rust: no Graphviz needed), from the same
/// diagram as `dot`.
fn svg(network: &Network) -> Result<String, Failure> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};

    let boxes = 1 + network
        .vpcs
        .iter()
        .map(|v| 1 + v.subnets.iter().map(|s| 1 + s.hosts.len()).sum::<usize>())
        .sum::<usize>();
    if boxes > SVG_MAX_NODES {
        return Err(Failure::refused(
            format!("this network has {boxes} boxes to draw; vpcsh lays out SVG of up to {SVG_MAX_NODES}"),
            Some("draw it with Graphviz: `vpcsh graph SCRIPT | dot -Tsvg > network.svg`"),
        ));
    }
    let text = dot(network, Clusters::OnRouter);
    let mut parser = DotParser::new(&text);
    // The text is ours and always parses; a failure here is a bug in `dot`, not user input.
    let graph = parser.process().expect("vpcsh's own dot text parses");
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}

/// A node identifier both formats accept.
fn id(parts: &[&str]) -> String {
    parts.iter().map(|p| p.replace('-', "_")).collect::<Vec<_>>().join("__")
}

/// Whether a firewall protects this subnet, or this host of it.
fn guarded(network: &Network, vpc: &str, target: &Protected) -> bool {
    network.firewalls.iter().any(|f| f.vpc == vpc && f.protects == *target)
}

fn subnet_label(network: &Network, vpc: &Vpc, s: &crate::model::Subnet) -> String {
    let kind = match (s.public, s.nat) {
        (true, _) => "public",
        (false, true) => "private, NAT",
        (false, false) => "private",
    };
    let lock =
        if guarded(network, &vpc.name, &Protected::Subnet(s.name.clone())) { ", firewall" } else { "" };
    let vni = s.vni.map_or(String::new(), |v| format!(", vni {v}"));
    format!("{} {} ({kind}{lock}{vni})", s.name, s.cidr)
}

fn host_label(network: &Network, vpc: &Vpc, h: &crate::model::Host) -> String {
    let lock = if guarded(network, &vpc.name, &Protected::Host(h.name.clone())) { " (firewall)" } else { "" };
    let impaired = h.impairment.map_or(String::new(), |i| format!(" [{i}]"));
    // In a fabric, where it runs.
    let node = h.node.as_ref().map_or(String::new(), |n| format!(" @{n}"));
    format!("{} {}{node}{lock}{impaired}", h.name, h.ip)
}

/// A peering's label: what crosses, and what the link does when impaired.
fn peering_label(p: &crate::model::Peering) -> String {
    let allowed =
        |nets: &[ipnetwork::IpNetwork]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ");
    let impaired = p.impairment.map_or(String::new(), |i| format!(" [{i}]"));
    format!("peering: {} <-> {}{impaired}", allowed(&p.a_allowed), allowed(&p.b_allowed))
}

fn dot(network: &Network, clusters: Clusters) -> String {
    let mut out =
        String::from("digraph vpcsh {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n");
    out += "  internet [label=\"internet\", shape=ellipse];\n";
    for vpc in &network.vpcs {
        let router = match clusters {
            Clusters::Drawn => {
                let _ = writeln!(
                    out,
                    "  subgraph cluster_{} {{\n    label=\"vpc {} {}\";",
                    id(&[&vpc.name]),
                    vpc.name,
                    vpc.cidr
                );
                "router".to_string()
            }
            Clusters::OnRouter => format!("vpc {} {}", vpc.name, vpc.cidr),
        };
        let _ = writeln!(out, "    {} [label=\"{router}\", shape=diamond];", id(&[&vpc.name, "router"]));
        for s in &vpc.subnets {
            let sid = id(&[&vpc.name, &s.name]);
            let _ = writeln!(out, "    {sid} [label=\"{}\", shape=folder];", subnet_label(network, vpc, s));
            let _ = writeln!(out, "    {} -> {sid} [dir=none];", id(&[&vpc.name, "router"]));
            for h in &s.hosts {
                let hid = id(&[&vpc.name, &s.name, &h.name]);
                let _ = writeln!(out, "    {hid} [label=\"{}\"];", host_label(network, vpc, h));
                let _ = writeln!(out, "    {sid} -> {hid} [dir=none];");
            }
        }
        if clusters == Clusters::Drawn {
            out += "  }\n";
        }
        if vpc.subnets.iter().any(|s| s.public || s.nat) {
            let _ = writeln!(out, "  {} -> internet [label=\"egress\"];", id(&[&vpc.name, "router"]));
        }
    }
    for p in &network.peerings {
        let _ = writeln!(
            out,
            "  {} -> {} [dir=both, style=dashed, label=\"{}\"];",
            id(&[&p.a, "router"]),
            id(&[&p.b, "router"]),
            peering_label(p)
        );
    }
    for p in &network.publishes {
        let host = host_id(network, &p.vpc, &p.host);
        let _ = writeln!(out, "  internet -> {host} [label=\"{} -> {}/{}\"];", p.host_port, p.port, p.proto);
    }
    out + "}\n"
}

fn mermaid(network: &Network) -> String {
    let mut out = String::from("flowchart LR\n  internet((internet))\n");
    for vpc in &network.vpcs {
        let _ = writeln!(out, "  subgraph {}[\"vpc {} {}\"]", id(&[&vpc.name]), vpc.name, vpc.cidr);
        let _ = writeln!(out, "    {}{{router}}", id(&[&vpc.name, "router"]));
        for s in &vpc.subnets {
            let sid = id(&[&vpc.name, &s.name]);
            let _ = writeln!(out, "    {sid}[\"{}\"]", subnet_label(network, vpc, s));
            let _ = writeln!(out, "    {} --- {sid}", id(&[&vpc.name, "router"]));
            for h in &s.hosts {
                let hid = id(&[&vpc.name, &s.name, &h.name]);
                let _ = writeln!(out, "    {hid}[\"{}\"]", host_label(network, vpc, h));
                let _ = writeln!(out, "    {sid} --- {hid}");
            }
        }
        out += "  end\n";
        if vpc.subnets.iter().any(|s| s.public || s.nat) {
            let _ = writeln!(out, "  {} -->|egress| internet", id(&[&vpc.name, "router"]));
        }
    }
    for p in &network.peerings {
        let label = p.impairment.map_or("peering".to_string(), |i| format!("peering, {i}"));
        let _ = writeln!(out, "  {} <-.->|{label}| {}", id(&[&p.a, "router"]), id(&[&p.b, "router"]));
    }
    for p in &network.publishes {
        let host = host_id(network, &p.vpc, &p.host);
        let _ = writeln!(out, "  internet -->|\"{} -> {}/{}\"| {host}", p.host_port, p.port, p.proto);
    }
    out
}

/// The node of a host, found by VPC and name.
fn host_id(network: &Network, vpc: &str, host: &str) -> String {
    let subnet = network
        .vpc(vpc)
        .and_then(|v| v.subnets.iter().find(|s| s.hosts.iter().any(|h| h.name == host)))
        .map_or("", |s| s.name.as_str());
    id(&[vpc, subnet, host])
}
