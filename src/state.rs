//! Persistent state: which namespaces and processes vpcsh owns, and the desired network.
//!
//! One versioned JSON file per scope (the real host, or one sandbox), written atomically
//! (temp file + rename) and guarded by an exclusive lock held for a whole run, so two
//! vpcsh runs on one state never interleave. The kernel is the truth; this file records
//! ownership and intent.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exec::process::ProcessRecord;
use crate::model::Network;

pub(crate) const VERSION: u32 = 1;
const SYSTEM_DIR: &str = "/var/lib/vpcsh";

/// Where state lives unless configured: `/var/lib/vpcsh` for root; for anyone else
/// `$XDG_STATE_HOME/vpcsh`, else `~/.local/state/vpcsh`, else (no home) a directory of
/// their own, private to them, in the temp directory.
pub(crate) fn default_dir(privileged: bool) -> PathBuf {
    if privileged {
        return PathBuf::from(SYSTEM_DIR);
    }
    let set = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("XDG_STATE_HOME") {
        return dir.join("vpcsh");
    }
    if let Some(home) = set("HOME").filter(|h| h.is_dir()) {
        return home.join(".local/state/vpcsh");
    }
    let dir = std::env::temp_dir().join(format!("vpcsh-{}", nix::unistd::getuid()));
    use std::os::unix::fs::DirBuilderExt;
    let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    dir
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    /// The network last applied.
    pub network: Network,
    /// Every namespace vpcsh made and has not removed; only these are ever deleted.
    pub namespaces: BTreeSet<String>,
    pub processes: Vec<ProcessRecord>,
    /// On the real host: vpcsh turned on the machine's IPv4 forwarding, and turns it off
    /// again when the last VPC goes.
    #[serde(default)]
    pub host_forwarding_set: bool,
    /// The stacks, by name: which VPCs each owns. A VPC no stack names (from before stacks)
    /// is adopted by the first stack that declares it.
    #[serde(default)]
    pub stacks: BTreeMap<String, Stack>,
    /// The simulated fabric this sandbox machine joined (`--fabric`): left by the last
    /// machine to go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabric: Option<String>,
    /// The node of a fabric this machine is (`--node`), so later commands need not repeat it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What one script (or REPL session) owns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stack {
    pub vpcs: BTreeSet<String>,
    /// Where it was last applied from, for messages that name it.
    #[serde(default)]
    pub script: Option<String>,
}

impl State {
    /// The stack that owns a VPC.
    pub(crate) fn stack_of(&self, vpc: &str) -> Option<&str> {
        self.stacks.iter().find(|(_, s)| s.vpcs.contains(vpc)).map(|(name, _)| name.as_str())
    }

    /// The VPCs of a stack.
    pub(crate) fn stack_vpcs(&self, stack: &str) -> BTreeSet<String> {
        self.stacks.get(stack).map(|s| s.vpcs.clone()).unwrap_or_default()
    }
}

/// The state of one scope, locked for as long as this value lives.
pub(crate) struct Store {
    path: PathBuf,
    _lock: File,
    pub state: State,
    /// What the file holds, as this store last read or wrote it, while the file is still
    /// the one it read or wrote.
    on_disk: Option<(State, FileId)>,
}

/// Which file a path names, and its size and time of change: a write through a new file
/// renamed over the old one (the only way state is written) changes it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    changed: (i64, i64),
}

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(Self { dev: m.dev(), ino: m.ino(), len: m.len(), changed: (m.ctime(), m.ctime_nsec()) })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("cannot use state directory {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} is not valid vpcsh state: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("state file {path} has version {found}; this vpcsh reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Where a scope keeps its state: `DIR/state.json`, or `DIR/sandbox/NAME/state.json`.
pub(crate) fn scope_dir(state_dir: &Path, sandbox: Option<&str>) -> PathBuf {
    match sandbox {
        Some(name) => state_dir.join("sandbox").join(name),
        None => state_dir.to_path_buf(),
    }
}

/// Reads the state in `dir` without locking or creating anything (for `check`, `list`, the
/// REPL between inputs): `None` when nothing is applied there, an error when the file cannot
/// be read or is not state this vpcsh understands.
pub(crate) fn peek(dir: &Path) -> Result<Option<State>, StateError> {
    let path = dir.join("state.json");
    match fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read { path, source }),
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    /// A newer file says so rather than failing to parse.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let parse_err = |source| StateError::Parse { path: path.to_path_buf(), source };
    let version_err = |found| StateError::Version { path: path.to_path_buf(), found };
    // Read whole at once: a file of this version parses, and only one that does not is
    // read again for the version it says it has.
    match serde_json::from_slice::<State>(bytes) {
        Ok(state) if state.version == VERSION => Ok(state),
        Ok(state) => Err(version_err(state.version)),
        Err(e) => match serde_json::from_slice::<Versioned>(bytes) {
            Ok(Versioned { version }) if version != VERSION => Err(version_err(version)),
            _ => Err(parse_err(e)),
        },
    }
}

impl Store {
    /// Opens (creating if needed) and locks the state in `dir`, waiting for another run
    /// holding the lock to finish.
    pub(crate) fn open(dir: &Path) -> Result<Self, StateError> {
        let dir_err = |source| StateError::Dir { dir: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(dir_err)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(dir_err)?;
        lock.lock().map_err(dir_err)?;
        let path = dir.join("state.json");
        let id = FileId::of(&path);
        let state = match fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State { version: VERSION, ..State::default() },
            Err(source) => return Err(StateError::Read { path, source }),
        };
        // Taken before the read, the file's identity can only be older than what was read:
        // at worst a later save compares bytes it need not have.
        let on_disk = id.map(|id| (state.clone(), id));
        Ok(Self { path, _lock: lock, state, on_disk })
    }

    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().expect("state file lives in a directory")
    }

    /// Where the logs of the processes this state records are kept.
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.dir().join("logs")
    }

    /// Writes the state atomically and durably; an empty state removes the file instead.
    /// A save that would write what the file already holds writes nothing: known without
    /// serialising when the file is still the one this store read or wrote, and the state
    /// what it was then (others, such as the process journal, write through a new file).
    pub(crate) fn save(&mut self) -> Result<(), StateError> {
        if let Some((saved, id)) = &self.on_disk
            && *saved == self.state
            && FileId::of(&self.path) == Some(*id)
        {
            return Ok(());
        }
        self.on_disk = None;
        write(&self.path, &self.state)?;
        self.on_disk = FileId::of(&self.path).map(|id| (self.state.clone(), id));
        Ok(())
    }
}

/// Records `processes` in the state file of `dir` at once, leaving the rest as it is: the
/// journal of a run that holds the lock and is starting or stopping processes.
pub(crate) fn record_processes(dir: &Path, processes: &[ProcessRecord]) -> Result<(), StateError> {
    let path = dir.join("state.json");
    let mut state = match fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => State { version: VERSION, ..State::default() },
        Err(source) => return Err(StateError::Read { path, source }),
    };
    state.processes = processes.to_vec();
    write(&path, &state)
}

/// Temp file, fsync, rename, fsync of the directory: a crash leaves the old file or the new.
fn write(path: &Path, state: &State) -> Result<(), StateError> {
    let write_err = |source| StateError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    if state.namespaces.is_empty() && state.processes.is_empty() && state.network.vpcs.is_empty() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(write_err(e)),
            _ => File::open(dir).and_then(|d| d.sync_all()).map_err(write_err),
        };
    }
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    // A run that changed nothing (a no-op re-apply) leaves the file alone: reading it back is
    // far cheaper than the two fsyncs of writing it.
    if fs::read(path).is_ok_and(|on_disk| on_disk == json) {
        return Ok(());
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp).map_err(write_err)?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vpcsh-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saves_and_reloads() {
        let dir = temp_dir("reload");
        {
            let mut store = Store::open(&dir).unwrap();
            store.state.namespaces.insert("t.prod".into());
            store.save().unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert!(store.state.namespaces.contains("t.prod"));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Saving what the file already says writes nothing (a no-op re-apply); a change is
    /// written (through a new file renamed over the old).
    #[test]
    fn an_unchanged_state_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = temp_dir("unchanged");
        let mut store = Store::open(&dir).unwrap();
        store.state.namespaces.insert("t.prod".into());
        store.save().unwrap();
        let inode = || fs::metadata(dir.join("state.json")).unwrap().ino();
        let first = inode();
        store.save().unwrap();
        assert_eq!(inode(), first, "rewritten although nothing changed");
        store.state.namespaces.insert("t.dev".into());
        store.save().unwrap();
        assert_ne!(inode(), first, "a change was not written");
        drop(store);
        assert!(Store::open(&dir).unwrap().state.namespaces.contains("t.dev"));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file another writer replaced (as the process journal does) is written again by a
    /// save even when this store's state did not change since it read the file.
    #[test]
    fn a_file_replaced_by_another_writer_is_saved_over() {
        let dir = temp_dir("replaced");
        let mut store = Store::open(&dir).unwrap();
        store.state.namespaces.insert("t.prod".into());
        store.save().unwrap();
        let mut other = store.state.clone();
        other.namespaces.insert("t.other".into());
        let path = dir.join("state.json");
        fs::write(dir.join("other.json"), serde_json::to_vec_pretty(&other).unwrap()).unwrap();
        fs::rename(dir.join("other.json"), &path).unwrap();
        store.save().unwrap();
        let on_disk = peek(&dir).unwrap().unwrap();
        assert_eq!(on_disk.namespaces, store.state.namespaces, "the other writer's file was left");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_state_removes_the_file() {
        let dir = temp_dir("empty");
        let mut store = Store::open(&dir).unwrap();
        store.state.namespaces.insert("x".into());
        store.save().unwrap();
        assert!(dir.join("state.json").exists());
        store.state.namespaces.clear();
        store.save().unwrap();
        assert!(!dir.join("state.json").exists());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn peek_reports_damage_instead_of_reading_nothing() {
        let dir = temp_dir("peek");
        assert!(matches!(peek(&dir), Ok(None)));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("state.json"), "{ not json").unwrap();
        assert!(matches!(peek(&dir), Err(StateError::Parse { .. })));
        fs::write(dir.join("state.json"), r#"{"version":99,"something":"new"}"#).unwrap();
        assert!(matches!(peek(&dir), Err(StateError::Version { found: 99, .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_other_versions() {
        let dir = temp_dir("version");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("state.json"),
            r#"{"version":99,"network":{"vpcs":[]},"namespaces":[],"processes":[]}"#,
        )
        .unwrap();
        assert!(matches!(Store::open(&dir), Err(StateError::Version { found: 99, .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
