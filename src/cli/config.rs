//! The configuration files: `/etc/vpcsh/config.toml`, then the user's
//! (`$XDG_CONFIG_HOME/vpcsh/config.toml`, default `~/.config`), or only `$VPCSH_CONFIG` when
//! that is set (empty: none). Later files win; `VPCSH_*` variables and flags win over both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::Span;
use crate::script::{Fault, ScriptError, Source};
use crate::session::Failure;

/// What a configuration file may set. A key is the flag's own name.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Config {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) prefix: Option<String>,
    pub(super) uplink: Option<String>,
    pub(super) max_namespaces: Option<usize>,
    pub(super) color: Option<Color>,
    pub(super) jobs: Option<usize>,
    /// Seconds a probe without its own `timeout` waits.
    pub(super) probe_timeout: Option<Seconds>,
}

/// A positive, finite number of seconds (`0.25`, `2`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Seconds(pub(super) Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(d)?;
        seconds(value).map(Seconds).map_err(serde::de::Error::custom)
    }
}

/// A count of seconds as a duration: positive and at most an hour.
pub(super) fn seconds(value: f64) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value <= 3600.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("{value} is not a number of seconds between 0 and 3600"))
    }
}

/// When diagnostics are coloured.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Color {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    Always,
    Never,
}

impl Config {
    /// Every file that applies, read and layered in order.
    pub(super) fn load() -> Result<Config, Failure> {
        let (files, named) = search_path();
        let mut config = Config::default();
        for path in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => config = config.under(parse(&path, &text)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {}
                // Another user's home (`sudo -u`, `setpriv` keep `HOME`): not our settings.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !named => {}
                Err(e) => {
                    let message = format!("cannot read {}: {e}", path.display());
                    return Err(Failure::refused(message, None));
                }
            }
        }
        Ok(config)
    }

    /// This configuration with `later`'s settings taking precedence.
    fn under(self, later: Config) -> Config {
        Config {
            state_dir: later.state_dir.or(self.state_dir),
            prefix: later.prefix.or(self.prefix),
            uplink: later.uplink.or(self.uplink),
            max_namespaces: later.max_namespaces.or(self.max_namespaces),
            color: later.color.or(self.color),
            jobs: later.jobs.or(self.jobs),
            probe_timeout: later.probe_timeout.or(self.probe_timeout),
        }
    }
}

/// The files to read, and whether they were named by `VPCSH_CONFIG` (then they must exist).
fn search_path() -> (Vec<PathBuf>, bool) {
    if let Some(only) = std::env::var_os("VPCSH_CONFIG") {
        return (if only.is_empty() { Vec::new() } else { vec![PathBuf::from(only)] }, true);
    }
    let user = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")),
    };
    let mut files = vec![PathBuf::from("/etc/vpcsh/config.toml")];
    files.extend(user.map(|dir| dir.join("vpcsh/config.toml")));
    (files, false)
}

/// One file; an unknown key, a wrong type or bad TOML is a diagnostic pointing into it.
fn parse(path: &Path, text: &str) -> Result<Config, Failure> {
    toml::from_str(text).map_err(|e| {
        let range = e.span().unwrap_or(0..0);
        let span = Span { source: 0, start: range.start, len: range.len() };
        let message = format!("config file: {}", e.message().trim_end());
        let mut fault = Fault::new(message, span, "here");
        fault.help = Some("each key is the name of a vpcsh option (`vpcsh --help`), without `--`".into());
        let sources = vec![Source::new(path.display().to_string(), text)];
        Failure::Script { error: ScriptError::from(fault), sources }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_key_by_key() {
        let system = parse(Path::new("system"), "prefix = \"lab\"\njobs = 2\n").unwrap();
        let user = parse(Path::new("user"), "jobs = 4\ncolor = \"never\"\nprobe-timeout = 0.25\n").unwrap();
        let both = Config::default().under(system).under(user);
        assert_eq!(both.prefix.as_deref(), Some("lab"));
        assert_eq!(both.jobs, Some(4));
        assert_eq!(both.color, Some(Color::Never));
        assert_eq!(both.state_dir, None);
        assert_eq!(both.probe_timeout, Some(Seconds(Duration::from_millis(250))));
    }

    #[test]
    fn a_timeout_is_a_positive_number_of_seconds() {
        for bad in ["0.0", "-1.5", "7200.0", "\"fast\""] {
            let text = format!("probe-timeout = {bad}\n");
            assert!(parse(Path::new("c"), &text).is_err(), "accepted {bad}");
        }
        let whole = parse(Path::new("c"), "probe-timeout = 2\n").unwrap();
        assert_eq!(whole.probe_timeout, Some(Seconds(Duration::from_secs(2))));
    }

    #[test]
    fn an_unknown_key_points_at_itself() {
        let text = "jobs = 2\nstat-dir = \"/tmp\"\n";
        let Err(Failure::Script { error: ScriptError::Fault(fault), .. }) = parse(Path::new("c"), text)
        else {
            panic!("accepted an unknown key");
        };
        assert!(fault.message.contains("unknown field `stat-dir`"), "{}", fault.message);
        assert_eq!(&text[fault.span.start..fault.span.start + fault.span.len], "stat-dir");
    }
}
