//! Command-line helpers shared by the server binary and the example
//! clients: the original MaChat used Go's `flag` package, where long flags
//! take one dash (`-tcp localhost:8989`); clap wants two. Both work.

use std::ffi::OsString;

/// Rewrites `-name` and `-name=value` to `--name`/`--name=value` for every
/// long option `command` knows, leaving everything else alone (short
/// flags, values, unknown words), then returns the arguments for clap.
pub fn accept_single_dash(
    command: &clap::Command,
    args: impl IntoIterator<Item = OsString>,
) -> Vec<OsString> {
    let long_names: Vec<&str> = command.get_arguments().filter_map(|arg| arg.get_long()).collect();
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            let Some(flag) = text.strip_prefix('-').filter(|rest| !rest.starts_with('-')) else {
                return arg;
            };
            let name = flag.split('=').next().unwrap_or_default();
            if name.len() > 1 && (long_names.contains(&name) || name == "help") {
                OsString::from(format!("-{text}"))
            } else {
                arg
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        let command = clap::Command::new("t")
            .arg(clap::Arg::new("tcp").long("tcp"))
            .arg(clap::Arg::new("verbose").short('v').long("verbose").action(clap::ArgAction::SetTrue));
        let args = ["machat", "-tcp", "localhost:1", "-tcp=x", "--tcp", "-v", "-x", "-unknown", "-help"];
        let rewritten = accept_single_dash(&command, args.iter().map(OsString::from));
        let expected =
            ["machat", "--tcp", "localhost:1", "--tcp=x", "--tcp", "-v", "-x", "-unknown", "--help"];
        assert_eq!(rewritten, expected.iter().map(OsString::from).collect::<Vec<_>>());
    }
}
