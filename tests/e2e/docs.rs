//! The README's configuration tables and the binaries' `--help` say the same thing, and
//! the build files keep their promises (small release binaries, a complete image build).

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

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Release binaries carry no debug info of their own (it goes to a .dwp beside them),
/// and the image strips its binaries: 155 MB of gateway became about 25 MB.
#[test]
fn release_binaries_and_the_image_ship_without_debug_info() {
    let cargo = repo_file("Cargo.toml");
    let release = cargo
        .split("[profile.release]")
        .nth(1)
        .expect("a release profile");
    assert!(
        release.contains("split-debuginfo = \"packed\"") || release.contains("strip ="),
        "the release profile keeps debug info out of the binaries:\n{release}"
    );
    let dockerfile = repo_file("infra/docker/Dockerfile");
    assert!(
        dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"),
        "the image strips its binaries"
    );
}

/// The image's dependency layer loads the whole workspace: every member's manifest is
/// copied in before the first build.
#[test]
fn the_image_build_copies_every_workspace_member() {
    let cargo = repo_file("Cargo.toml");
    let members = cargo
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("workspace members");
    let dockerfile = repo_file("infra/docker/Dockerfile");
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "infra/docker/Dockerfile does not copy {member}/Cargo.toml"
        );
    }
}
