//! `deploy/memgate.example.toml` documents every setting: its keys are
//! exactly the flags `memgate` accepts (read from clap, not a list kept by
//! hand), each under a comment, each set to its default, and the binary
//! checks it with `--check-config`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use memgate_server::cli;
use memgate_server::config::Settings;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/memgate.example.toml")
}

fn example() -> String {
    std::fs::read_to_string(example_path()).unwrap()
}

/// The key a line sets: `key = value`, or `#key = value` for a setting
/// shown commented out (prose comments are `# text`, with a space).
fn documented_key(line: &str) -> Option<(&str, bool)> {
    let (line, active) = match line.strip_prefix('#') {
        Some(rest) => (rest, false),
        None => (line, true),
    };
    let (key, _) = line.split_once(" = ")?;
    key.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        .then_some((key, active))
}

#[test]
fn the_example_documents_exactly_the_flags() {
    let text = example();
    let lines: Vec<&str> = text.lines().collect();
    let mut documented = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((key, _)) = documented_key(line) else {
            continue;
        };
        assert!(documented.insert(key.to_owned()), "{key} appears twice");
        assert!(
            i > 0 && lines[i - 1].starts_with("# "),
            "{key} (line {}) has no comment above it",
            i + 1
        );
    }
    let flags: BTreeSet<String> = cli::setting_names().into_iter().collect();
    let missing: Vec<_> = flags.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&flags).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "deploy/memgate.example.toml lacks {missing:?} and documents {extra:?}, which are not flags"
    );
}

#[test]
fn the_example_parses_and_shows_the_defaults() {
    let text = example();
    let settings = Settings::from_toml(&text, &example_path()).unwrap();
    assert_eq!(settings, Settings::default());
    // Every active key holds its default as written (not just a value that
    // happens to parse to it), so the file can be read as the table of
    // defaults.
    let file: toml::Table = text.parse().unwrap();
    let defaults = toml::Table::try_from(Settings::default()).unwrap();
    for (key, value) in &file {
        assert_eq!(Some(value), defaults.get(key), "{key}");
    }
}

#[test]
fn the_commented_out_settings_parse_when_uncommented() {
    let text: String = example()
        .lines()
        .map(|line| match documented_key(line) {
            Some((_, false)) => &line[1..],
            _ => line,
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    let settings = Settings::from_toml(&text, &example_path()).unwrap();
    assert!(settings.tls_cert.is_some() && settings.tls_key.is_some());
    assert!(settings.tls_client_ca.is_some() && settings.auth_token_file.is_some());
}

/// What CI runs: the binary validates the example and prints the effective
/// configuration, which reads back as the same settings.
#[test]
fn check_config_accepts_the_example() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMGATE_") {
            command.env_remove(name);
        }
    }
    let out = command
        .arg("--config")
        .arg(example_path())
        .arg("--check-config")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed = Settings::from_toml(&stdout, Path::new("stdout")).unwrap();
    assert_eq!(printed, Settings::default());
}
