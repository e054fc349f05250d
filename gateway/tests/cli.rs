//! The `gateway` binary's command line. Being an integration test of this package, it
//! also makes a plain `cargo test` build `target/debug/gateway`, which the end-to-end
//! tests in tests/e2e start as a process.

use std::process::Command;

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_clear()
        .output()
        .expect("the gateway binary runs")
}

#[test]
fn help_names_each_setting_with_its_environment_variable() {
    let out = gateway(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for env in ["BIND", "QUEUE_URL", "DATABASE_URL", "JWT_SECRET", "WORKERS"] {
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing:\n{help}"
        );
    }
}

#[test]
fn an_unknown_flag_exits_2_with_the_usage() {
    let out = gateway(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--no-such-flag") && err.contains("Usage: gateway"),
        "{err}"
    );
}
