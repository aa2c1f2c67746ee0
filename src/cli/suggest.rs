//! Parsing the command line, with two repairs to clap's defaults: help
//! shows `[env: NAME]` (clap writes an unset variable as `[env: NAME=]`),
//! and a mistyped top-level command gets suggestions that make sense
//! (`platform jbo` → `job`, `platform list` → `job list`; never a hidden
//! command like `demo-train`).

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Command, FromArgMatches};

use super::Cli;

/// Most suggestions shown for one mistyped command.
const MAX_SUGGESTIONS: usize = 3;

/// Parses the process's arguments; exits with clap's message (and code 2)
/// when they are wrong.
pub fn parse() -> Cli {
    let mut cmd = super::generate::command();
    let matches = match cmd.try_get_matches_from_mut(std::env::args_os()) {
        Ok(m) => m,
        Err(mut e) => {
            if e.kind() == ErrorKind::InvalidSubcommand {
                improve(&cmd, &mut e, std::env::args_os().skip(1));
            }
            e.exit()
        }
    };
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
}

/// Replaces clap's suggestions for an unknown top-level command with ours
/// (nested commands keep clap's: there the word is compared with the
/// right siblings already).
fn improve(root: &Command, e: &mut clap::Error, args: impl Iterator<Item = OsString>) {
    let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidSubcommand) else {
        return;
    };
    let word = word.clone();
    if !is_top_level(root, &word, args) {
        return;
    }
    e.remove(ContextKind::SuggestedSubcommand);
    let found = suggestions(root, &word);
    if !found.is_empty() {
        e.insert(
            ContextKind::SuggestedSubcommand,
            ContextValue::Strings(found),
        );
    }
}

/// Whether `word` is the first command word of `args` (global options and
/// their values may come before it).
fn is_top_level(root: &Command, word: &str, args: impl Iterator<Item = OsString>) -> bool {
    let mut args = args.map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == word {
            return true;
        }
        if !arg.starts_with('-') || arg == "--" {
            return false;
        }
        if takes_separate_value(root, &arg) {
            args.next();
        }
    }
    false
}

/// Whether `flag` (`--server`, `-o`) is an option whose value is the next
/// argument.
fn takes_separate_value(root: &Command, flag: &str) -> bool {
    if flag.contains('=') {
        return false;
    }
    root.get_arguments().any(|a| {
        let named = match flag.strip_prefix("--") {
            Some(long) => a.get_long() == Some(long),
            None => flag.len() == 2 && a.get_short().map(String::from).as_deref() == flag.get(1..),
        };
        named && a.get_action().takes_values()
    })
}

/// Visible commands close to `word`: top-level ones first, then
/// `PARENT CHILD` for second-level ones (people type `platform list`).
fn suggestions(root: &Command, word: &str) -> Vec<String> {
    // (level, distance, place in the tree, text): nearest first, then in
    // the order `--help` lists them.
    let mut scored: Vec<(u8, usize, usize, String)> = Vec::new();
    let visible = |c: &&Command| !c.is_hide_set();
    for top in root.get_subcommands().filter(visible) {
        if let Some(d) = closeness(word, top) {
            scored.push((0, d, scored.len(), top.get_name().to_string()));
        }
        for sub in top.get_subcommands().filter(visible) {
            if let Some(d) = closeness(word, sub) {
                let text = format!("{} {}", top.get_name(), sub.get_name());
                scored.push((1, d, scored.len(), text));
            }
        }
    }
    if let Some(d) = distance(word, "help") {
        scored.push((0, d, scored.len(), "help".into()));
    }
    scored.sort();
    // Only the nearest: an exact `upload` is not also `reload`.
    let nearest = scored.iter().map(|s| s.1).min().unwrap_or(0);
    let mut out: Vec<String> = Vec::new();
    for (_, d, _, text) in scored {
        if d == nearest && !out.contains(&text) && out.len() < MAX_SUGGESTIONS {
            out.push(text);
        }
    }
    out
}

/// How far `word` is from `cmd`'s name or any visible alias, when close.
fn closeness(word: &str, cmd: &Command) -> Option<usize> {
    std::iter::once(cmd.get_name())
        .chain(cmd.get_visible_aliases())
        .filter_map(|name| distance(word, name))
        .min()
}

/// The edit distance from `word` to `name` when it is small for the
/// name's length, or when `word` starts `name` (at least 3 letters).
fn distance(word: &str, name: &str) -> Option<usize> {
    if word.len() >= 3 && name.starts_with(word) {
        return Some(name.len() - word.len());
    }
    let d = strsim::damerau_levenshtein(word, name);
    (d <= (name.len() / 3).max(1)).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggest(word: &str) -> Vec<String> {
        suggestions(&super::super::generate::command(), word)
    }

    #[test]
    fn close_and_nested_commands_are_suggested_never_hidden_ones() {
        assert_eq!(suggest("jbo"), vec!["job"]);
        assert_eq!(suggest("jobs"), vec!["job"]);
        assert_eq!(suggest("verison"), vec!["version"]);
        assert_eq!(suggest("metric"), vec!["metrics"]);
        assert_eq!(
            suggest("list"),
            vec!["job list", "queue list", "dataset list"]
        );
        assert_eq!(suggest("watch"), vec!["job watch"]);
        assert_eq!(suggest("upload"), vec!["dataset upload"]);
        assert_eq!(suggest("hepl"), vec!["help"]);
        assert!(suggest("demo").is_empty(), "{:?}", suggest("demo"));
        assert!(suggest("supervis").is_empty());
        assert!(suggest("zzzzzz").is_empty());
    }

    #[test]
    fn only_the_first_command_word_counts_as_top_level() {
        let root = super::super::generate::command();
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        assert!(is_top_level(&root, "jbo", args(&["jbo"])));
        assert!(is_top_level(
            &root,
            "jbo",
            args(&["--server", "http://x", "-o", "json", "--quiet", "jbo"])
        ));
        assert!(!is_top_level(&root, "lsit", args(&["job", "lsit"])));
        // A value that happens to equal the word is skipped as a value.
        assert!(!is_top_level(
            &root,
            "x",
            args(&["--server", "x", "job", "x"])
        ));
    }
}
