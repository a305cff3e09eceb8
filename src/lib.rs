//! vpcsh: AWS-style virtual private clouds on one Linux host, from kernel primitives.
//!
//! Layers call only downwards (`docs/design.md` draws them):
//! `cli` → `repl` → `commands` → `session` → `script` → `plan` → `exec` → `state`/`model`.
//! `script` records declarations into `model`, which validates them; `plan` turns the model
//! and the observed kernel into ordered operations; `exec` applies them over netlink;
//! `state` records what vpcsh owns. Only `main` is public: the binary is the product.

mod cli;
mod commands;
mod diag;
mod dnsd;
mod exec;
mod httpd;
mod model;
mod plan;
mod repl;
mod script;
mod session;
mod state;

pub use cli::main;
