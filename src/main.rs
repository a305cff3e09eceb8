//! The `vpcsh` binary: everything happens in `vpcsh::cli`.

fn main() -> std::process::ExitCode {
    vpcsh::cli::main()
}
