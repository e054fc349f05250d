//! The README's configuration tables and the binaries' `--help` say the same thing.

use crate::helpers::bin;
use std::collections::BTreeMap;
use std::process::Command;

/// (env var → (flag, default)) from `--help`.
fn from_help(binary: &str) -> BTreeMap<String, (String, Option<String>)> {
    let out = Command::new(bin(binary))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for block in help.split("\n      --").skip(1) {
        let flag = format!("--{}", block.split_whitespace().next().unwrap());
        let env = block
            .split("[env: ")
            .nth(1)
            .map(|r| r.split(['=', ']']).next().unwrap().to_owned());
        let default = block
            .split("[default: ")
            .nth(1)
            .map(|r| r.split(']').next().unwrap().to_owned());
        if let Some(env) = env {
            map.insert(env, (flag, default));
        }
    }
    map
}

/// The same from the README table under `### {binary}`.
fn from_readme(binary: &str) -> BTreeMap<String, (String, Option<String>)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split(&format!("### {binary}\n"))
        .nth(1)
        .expect("README has the section");
    let mut map = BTreeMap::new();
    for line in section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let unquote = |s: &str| s.trim_matches('`').to_owned();
        let default = (cells[3] != "unset").then(|| unquote(cells[3]));
        map.insert(unquote(cells[1]), (unquote(cells[2]), default));
    }
    map
}

#[test]
fn readme_configuration_tables_match_help() {
    for binary in ["gateway", "worker"] {
        assert_eq!(
            from_readme(binary),
            from_help(binary),
            "README ### {binary} table vs {binary} --help"
        );
    }
}
