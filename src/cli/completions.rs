//! `vpcsh completions SHELL`: clap's completions of the command line, plus the names of the
//! applied network for `exec`, `logs`, `capture` and `flows`, asked of `vpcsh __targets` with the line's own
//! `--sandbox` and `--state-dir`.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use super::args::Cli;

/// Bash: a wrapper that answers for the word after `exec`/`logs`/`capture`/`flows`, and otherwise defers to
/// clap's `_vpcsh`.
const BASH: &str = r#"
_vpcsh_targets() {
    local i scope=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --sandbox|--state-dir) scope+=("${COMP_WORDS[i]}" "${COMP_WORDS[i+1]}") ;;
        esac
    done
    vpcsh "${scope[@]}" __targets 2>/dev/null
}

_vpcsh_with_targets() {
    local previous="${COMP_WORDS[COMP_CWORD-1]}"
    if [[ "$previous" == exec || "$previous" == logs || "$previous" == capture || "$previous" == flows ]]; then
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$(_vpcsh_targets)" -- "${COMP_WORDS[COMP_CWORD]}"))
        return 0
    fi
    _vpcsh "$@"
}

complete -F _vpcsh_with_targets -o bashdefault -o default vpcsh
"#;

/// Zsh: the target argument of `exec` and `logs` completes from `_vpcsh_targets`.
const ZSH: &str = r#"
(( $+functions[_vpcsh_targets] )) ||
_vpcsh_targets() {
    local i scope=()
    for ((i = 2; i < CURRENT; i++)); do
        case "$words[i]" in
            --sandbox|--state-dir) scope+=("$words[i]" "$words[i+1]") ;;
        esac
    done
    local -a names
    names=(${(f)"$(vpcsh $scope __targets 2>/dev/null)"})
    compadd -a names
}
"#;

/// Fish: the names after `exec` or `logs`, with the line's scope options.
const FISH: &str = r#"
function __fish_vpcsh_targets
    set -l words (commandline -opc)
    set -l scope
    for i in (seq (count $words))
        if contains -- $words[$i] --sandbox --state-dir
            set -a scope $words[$i] $words[(math $i + 1)]
        end
    end
    vpcsh $scope __targets 2>/dev/null
end
complete -c vpcsh -n "__fish_vpcsh_using_subcommand exec; or __fish_vpcsh_using_subcommand logs; or __fish_vpcsh_using_subcommand capture; or __fish_vpcsh_using_subcommand flows" -f -a "(__fish_vpcsh_targets)"
"#;

/// The command line as a person types it: without vpcsh's own helper subcommands (`__serve`,
/// `__dns`, ...), which clap's generators would offer although they are hidden.
fn without_helpers() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    // `--version` is offered whatever the version says.
    let mut root = clap::Command::new("vpcsh").version(env!("CARGO_PKG_VERSION")).subcommands(visible);
    for arg in full.get_arguments() {
        root = root.arg(arg.clone());
    }
    root
}

/// Writes the completion script of `shell`.
pub(super) fn write(shell: Shell, out: &mut impl Write) -> std::io::Result<()> {
    let mut generated = Vec::new();
    clap_complete::generate(shell, &mut without_helpers(), "vpcsh", &mut generated);
    let generated = String::from_utf8_lossy(&generated);
    match shell {
        Shell::Bash => write!(out, "{generated}{BASH}"),
        // The `target` positional of `exec`, `logs`, `capture` and `flows` is the only one
        // named so.
        Shell::Zsh => {
            let (body, register) =
                generated.rsplit_once("\nif [ \"$funcstack[1]\"").unwrap_or((&generated, ""));
            let body = body
                .replace("':target:_default'", "':target:_vpcsh_targets'")
                .replace("'::target:_default'", "'::target:_vpcsh_targets'");
            write!(out, "{body}{ZSH}\nif [ \"$funcstack[1]\"{register}")
        }
        Shell::Fish => write!(out, "{generated}{FISH}"),
        _ => write!(out, "{generated}"),
    }
}
