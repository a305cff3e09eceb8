//! The `vpcsh` binary: everything happens in `vpcsh::cli`.

fn main() -> std::process::ExitCode {
    // Printing into a closed pipe (`vpcsh list | head`) ends quietly, as for other tools.
    // SAFETY: restoring a default signal disposition before any thread starts.
    unsafe {
        let _ =
            nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    vpcsh::main()
}
