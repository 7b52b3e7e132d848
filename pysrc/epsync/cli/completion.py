"""`epsync completion bash|zsh`: a completion script written from the parser itself, so it cannot drift.

It completes commands, each command's options, the values of options with choices (`-o`, `--datastore`),
file names for `-f` and the `*-file` options, kinds, and resource names (asked of the server with
`epsync get KIND -o name`, using the command line's own `--server`, TLS and `-n` options). zsh runs
the same function through its bash compatibility (`bashcompinit`), as kubectl's first zsh support did.
"""

from __future__ import annotations

import argparse
import shlex

from epsync.cli.parser import KIND_ALIASES

# Commands whose first positional is a kind, and those whose later positionals are resource names.
_KIND_COMMANDS = ("get", "list", "watch", "patch", "label", "delete")
_NAME_COMMANDS = ("get", "patch", "label", "delete")
# Options of any command passed on to the `epsync get` that lists names, with their value.
_PASSED_ON = ("--server", "--ca-file", "--cert-file", "--key-file", "-n", "--namespace")


def run(args: argparse.Namespace) -> int:
    script = bash_script(args.root_parser)
    if args.shell == "zsh":
        script = "#compdef epsync\nautoload -U +X bashcompinit && bashcompinit\n" + script
    print(script, end="")
    return 0


def _subcommands(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str] | None]]:
    """Every option string, and for those that take a value, its choices (None: any value)."""
    flags: list[str] = []
    valued: dict[str, list[str] | None] = {}
    for action in parser._actions:
        flags += action.option_strings
        if action.option_strings and action.nargs != 0:
            for flag in action.option_strings:
                valued[flag] = [str(c) for c in action.choices] if action.choices else None
    return flags, valued


def _quoted(words: list[str]) -> str:
    return shlex.quote(" ".join(words))


def bash_script(root: argparse.ArgumentParser) -> str:
    commands = _subcommands(root)
    root_flags, root_valued = _options(root)
    valued_everywhere = set(root_valued)
    option_cases: list[str] = []
    value_cases: list[str] = []
    for name, sub in commands.items():
        flags, valued = _options(sub)
        valued_everywhere |= set(valued)
        option_cases.append(f"        {name}) opts={_quoted(sorted(set(flags + root_flags)))} ;;")
        for flag, choices in valued.items():
            value_cases.append(f"        {name}:{flag}) {_value_completion(flag, choices)} ;;")
    for flag, choices in root_valued.items():
        value_cases.append(f"        *:{flag}) {_value_completion(flag, choices)} ;;")
    kinds = sorted(KIND_ALIASES)
    return f"""# bash completion for epsync: source <(epsync completion bash)
_epsync_names() {{
    local kind="$1"; shift
    epsync get "$kind" -o name "$@" 2>/dev/null | sed -e 's|^[^/]*/||' -e 's|^[^/]*/||'
}}

_epsync() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" kind="" word i opts=""
    local -a passed=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case " {" ".join(sorted(valued_everywhere))} " in
            *" $word "*)
                case " {" ".join(_PASSED_ON)} " in *" $word "*) passed+=("$word" "${{COMP_WORDS[i+1]}}") ;; esac
                ((i++)); continue ;;
        esac
        case "$word" in
            -*) ;;
            *) if [[ -z "$cmd" ]]; then cmd="$word"; elif [[ -z "$kind" ]]; then kind="$word"; fi ;;
        esac
    done
    case "${{cmd:-}}:$prev" in
{chr(10).join(value_cases)}
    esac
    if [[ " {" ".join(sorted(valued_everywhere))} " == *" $prev "* ]]; then
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        case "$cmd" in
{chr(10).join(option_cases)}
        *) opts={_quoted(sorted(root_flags))} ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return 0
    fi
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W {_quoted(sorted(commands))} -- "$cur"))
    elif [[ -z "$kind" && " {" ".join(_KIND_COMMANDS)} " == *" $cmd "* ]]; then
        COMPREPLY=($(compgen -W {_quoted(kinds)} -- "$cur"))
    elif [[ -n "$kind" && " {" ".join(_NAME_COMMANDS)} " == *" $cmd "* ]]; then
        COMPREPLY=($(compgen -W "$(_epsync_names "$kind" "${{passed[@]}}")" -- "$cur"))
    elif [[ "$cmd" == completion ]]; then
        COMPREPLY=($(compgen -W "bash zsh" -- "$cur"))
    fi
    return 0
}}
complete -o default -F _epsync epsync
"""


def _value_completion(flag: str, choices: list[str] | None) -> str:
    if choices:
        return f'COMPREPLY=($(compgen -W {_quoted(choices)} -- "$cur"))'
    if flag in ("-f", "--filename") or flag.endswith("-file") or flag == "--data-dir":
        return 'COMPREPLY=($(compgen -f -- "$cur"))'
    return "COMPREPLY=()"
