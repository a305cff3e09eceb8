//! The commands that look at or step into an applied network — `status`, `list`, `exec`,
//! `logs`, `capture`, `explain`, `verify` — printing for a person or as JSON. The CLI and the REPL both call them; they
//! call only the session layer and below.

mod capture;
mod enter;
mod flows;
pub(crate) mod graph;
mod reach;
mod report;

pub(crate) use capture::{CaptureOptions, capture};
pub(crate) use enter::{exec, logs, targets};
pub(crate) use flows::flows;
pub(crate) use reach::{explain, verify};
pub(crate) use report::{counters, list, status};

/// A JSON document of one of vpcsh's kinds, stamped with the schema version and its kind
/// (`docs/json.md` describes each).
pub(crate) fn document(kind: &str, mut body: serde_json::Value) -> String {
    if let Some(map) = body.as_object_mut() {
        map.insert("version".into(), serde_json::json!(JSON_VERSION));
        map.insert("kind".into(), serde_json::json!(kind));
    }
    serde_json::to_string_pretty(&body).expect("json serialises")
}

/// The version of every JSON document vpcsh prints; it changes only when a field changes
/// meaning or goes away (new fields may appear at any time).
pub(crate) const JSON_VERSION: u32 = 1;
