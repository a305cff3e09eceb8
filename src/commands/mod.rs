//! The commands that look at or step into an applied network — `status`, `list`, `exec`,
//! `logs` — printing for a person or as JSON. The CLI and the REPL both call them; they
//! call only the session layer and below.

mod enter;
mod report;

pub(crate) use enter::{exec, logs};
pub(crate) use report::{list, status};
