//! The line editor's helper: completion of functions, methods, properties, variables and
//! topology names; signature hints; multi-line input while brackets or strings are open.

use std::borrow::Cow;
use std::net::IpAddr;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper as LineHelper};

use crate::model::Network;
use crate::script::{Function, Interpreter};

const META: &[&str] =
    &[":help", ":plan", ":status", ":explain", ":verify", ":load", ":save", ":undo", ":reset", ":quit"];
const KEYWORDS: &[&str] =
    &["let", "const", "if", "else", "for", "in", "while", "loop", "fn", "return", "true", "false"];
/// Fields of the maps effects return, completed after a `.` like handle properties.
const RESULT_FIELDS: &[&str] = &["pid", "stdout", "stderr", "code", "status", "body"];
/// Declarations that read as methods of a handle: `vpc.subnet(...)`, `subnet.host(...)`.
const METHODS: &[&str] = &["subnet", "host"];

pub(super) struct Helper {
    color: bool,
    /// Names completion offers at the start of a word.
    words: Vec<String>,
    /// Names completion offers after a `.`.
    members: Vec<String>,
    functions: Vec<Function>,
}

/// Every host of a network with its VPC and address.
/// Every host as (VPC, host, address); the IPv6 address when `ipv6` and it has one.
pub(super) fn host_table(network: &Network, ipv6: bool) -> Vec<(String, String, IpAddr)> {
    network
        .hosts()
        .map(|(v, _, h)| {
            let ip = h.ip6.filter(|_| ipv6).map_or(IpAddr::V4(h.ip), IpAddr::V6);
            (v.name.clone(), h.name.clone(), ip)
        })
        .collect()
}

/// `text` with whole-word occurrences of `word` replaced (words are names: letters,
/// digits, `-` and `_`).
pub(super) fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(is_name) || after.is_some_and(is_name) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Whether brackets or a string are still open at the end of `text`.
pub(super) fn incomplete(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quote = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '`' | '\'' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth > 0 || quote.is_some()
}

impl Helper {
    pub(super) fn new(color: bool) -> Self {
        Self { color, words: Vec::new(), members: Vec::new(), functions: Vec::new() }
    }

    /// Updates the names completion offers from the session as it is now.
    pub(super) fn refresh(&mut self, interpreter: &Interpreter, network: Option<&Network>) {
        let reference = interpreter.reference();
        self.functions = reference.functions.clone();
        let mut members: Vec<String> = reference.property_names(None).into_iter().map(String::from).collect();
        members.extend(RESULT_FIELDS.iter().chain(METHODS).map(|m| m.to_string()));
        members.sort();
        members.dedup();
        self.members = members;
        let mut words: Vec<String> = self.functions.iter().map(|f| f.name.clone()).collect();
        words.push("print".into());
        words.extend(KEYWORDS.iter().map(|k| k.to_string()));
        words.extend(interpreter.variables());
        if let Some(n) = network {
            words.extend(n.vpcs.iter().map(|v| v.name.clone()));
            words.extend(n.vpcs.iter().flat_map(|v| v.subnets.iter().map(|s| s.name.clone())));
            words.extend(host_table(n, false).into_iter().map(|(_, h, _)| h));
        }
        words.sort();
        words.dedup();
        self.words = words;
    }
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        let after_dot = line[..start].ends_with('.');
        let pool: Vec<&str> = if word.starts_with(':') {
            META.to_vec()
        } else if after_dot {
            self.members.iter().map(String::as_str).collect()
        } else {
            self.words.iter().map(String::as_str).collect()
        };
        let pairs = pool
            .into_iter()
            .filter(|w| w.starts_with(word))
            .map(|w| Pair { display: w.to_string(), replacement: w.to_string() })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Helper {
    type Hint = String;

    /// After `name(`, the rest of the function's signature.
    fn hint(&self, line: &str, pos: usize, _: &Context<'_>) -> Option<String> {
        if pos < line.len() || !line.ends_with('(') {
            return None;
        }
        let head = &line[..line.len() - 1];
        let name_start = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let f = self.functions.iter().find(|f| f.name == head[name_start..])?;
        let rest = f.signature.lines().next()?.split_once('(')?.1;
        Some(rest.to_string())
    }
}

impl Highlighter for Helper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.color { Cow::Owned(format!("\x1b[2m{hint}\x1b[0m")) } else { Cow::Borrowed(hint) }
    }
}

impl Validator for Helper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if !input.trim_start().starts_with(':') && incomplete(input) {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}

impl LineHelper for Helper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_brackets_and_strings_continue_the_input() {
        assert!(incomplete("firewall(web, #{ ingress: ["));
        assert!(incomplete("let s = \"abc"));
        assert!(!incomplete("vpc(\"a(\", \"10.0.0.0/16\")"));
        assert!(!incomplete("let x = 1;"));
    }

    #[test]
    fn host_names_become_addresses_as_whole_words() {
        assert_eq!(replace_word("ping -c1 w2", "w2", "10.0.1.3"), "ping -c1 10.0.1.3");
        assert_eq!(replace_word("curl http://w2/ip", "w2", "10.0.1.3"), "curl http://10.0.1.3/ip");
        assert_eq!(replace_word("w22 and w2x", "w2", "10.0.1.3"), "w22 and w2x");
    }
}
