//! vpcsh's integration tests: the binary against the real kernel, each test in a sandbox of
//! its own (a unique name, destroyed on drop even when the test fails), checked from
//! outside with `ip netns exec`, `ping` and plain TCP.

mod capture;
mod cli;
mod common;
mod counters;
mod crash;
mod diagnostics;
mod explain;
mod fabric;
mod firewall;
mod golden_plan;
mod graph;
mod impair;
mod internet;
mod ipv6;
mod kernel;
mod layers;
mod mangled;
mod names;
mod peering;
mod reaper;
mod repl;
mod rootless;
mod stacks;
mod stdlib;
mod workloads;
mod workstation;
