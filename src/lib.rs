//! vpcsh: AWS-style virtual private clouds on one Linux host, from kernel primitives.
//!
//! Data flows one way: `script` (Rhai bindings) records declarations into `model`, which
//! validates them; `plan` turns the model and the observed kernel into ordered operations;
//! `exec` applies them over netlink; `state` records what vpcsh owns. `session` wires those
//! together for one run; `cli` and `diag` sit on top and only call down.

pub mod cli;
pub mod diag;
pub mod exec;
pub mod httpd;
pub mod model;
pub mod plan;
pub mod repl;
pub mod script;
pub mod session;
pub mod state;
