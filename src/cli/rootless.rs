//! vpcsh without root: a `--sandbox` command run by an ordinary user enters the sandbox's
//! user namespace first (see `exec::userns`), and then works exactly as root would there.

use std::path::PathBuf;

use super::args::Command;
use crate::exec::userns::{self, Keeper, KeeperError, UsernsError};
use crate::session::{Failure, Target};

/// What a command needs of the sandbox's namespaces when vpcsh is not privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// It builds: the sandbox must outlive it, so a keeper holds the namespaces.
    Keeper,
    /// It looks or removes: the keeper's namespaces if there is one, else empty ones.
    Join,
    /// It never touches the kernel (or is a sandbox's own helper process).
    Nothing,
}

pub(super) fn need(command: Option<&Command>) -> Need {
    match command {
        // The REPL, when no command is given.
        None | Some(Command::Repl | Command::Policy(_) | Command::Apply { dry_run: false, .. }) => {
            Need::Keeper
        }
        Some(
            Command::Apply { dry_run: true, .. }
            | Command::Plan { .. }
            | Command::Destroy { .. }
            | Command::Status { .. }
            | Command::Explain { .. }
            | Command::Verify { .. }
            | Command::List
            | Command::Exec { .. }
            | Command::Capture { .. }
            | Command::Flows { .. }
            | Command::Logs { .. },
        ) => Need::Join,
        Some(_) => Need::Nothing,
    }
}

/// The sandbox's keeper this run joined, and the file that records it.
pub(super) struct Joined {
    keeper: Keeper,
    file: PathBuf,
}

impl Joined {
    /// After the whole sandbox is destroyed: nothing is left for the keeper to keep.
    pub(super) fn end(&self) {
        self.keeper.end(&self.file);
    }
}

/// Enters the sandbox's user namespace when vpcsh is unprivileged and the command needs it;
/// refuses an unprivileged command on the machine itself. Must run before any thread starts.
pub(super) fn enter(target: &Target, need: Need) -> Result<Option<Joined>, Failure> {
    if need == Need::Nothing || userns::privileged() {
        return Ok(None);
    }
    let Some(sandbox) = &target.sandbox else {
        return Err(Failure::refused(
            "vpcsh needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN to change this machine's network",
            Some(
                "run it with sudo, or without root inside a sandbox, which changes nothing on the machine: `vpcsh --sandbox NAME ...`",
            ),
        ));
    };
    target.check()?;
    if !userns::single_threaded() {
        return Err(Failure::refused("vpcsh started a thread before entering its user namespace", None));
    }
    let file = keeper_file(target, sandbox);
    let keeper = match (need, Keeper::read(&file)) {
        (_, Some(keeper)) => keeper,
        (Need::Keeper, None) => match userns::keeper(&file, sandbox) {
            Ok(keeper) => keeper,
            Err(KeeperError::Userns(e)) => return Err(unavailable(e)),
            Err(KeeperError::File { path, error }) => {
                return Err(Failure::refused(
                    format!("cannot write the sandbox's keeper file {}: {error}", path.display()),
                    Some("pass a --state-dir of your own, or set XDG_RUNTIME_DIR to one"),
                ));
            }
        },
        // Nothing is kept: an empty sandbox of one's own, gone when this command ends.
        (_, None) => return userns::isolate().map(|()| None).map_err(unavailable),
    };
    keeper.join().map_err(unavailable)?;
    Ok(Some(Joined { keeper, file }))
}

/// `$XDG_RUNTIME_DIR/vpcsh/sandbox/NAME.keeper`, or beside the sandbox's state.
fn keeper_file(target: &Target, sandbox: &str) -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| d.is_dir()) {
        Some(run) => run.join("vpcsh").join("sandbox").join(format!("{sandbox}.keeper")),
        None => target.dir().join("keeper"),
    }
}

fn unavailable(e: UsernsError) -> Failure {
    let help = match e.setting() {
        Some(setting) => format!("{setting}; or run vpcsh as root"),
        None => "run vpcsh as root, or allow unprivileged user namespaces on this machine".into(),
    };
    Failure::refused(
        format!("a rootless sandbox needs a user namespace, and this machine refused one ({e})"),
        Some(&help),
    )
}
