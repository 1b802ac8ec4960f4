//! Bad arguments are answered at once, before anything is loaded: what a
//! new user's first typo gets. No root needed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dio-trace");

fn dio(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run dio-trace");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_command_that_cannot_run_is_a_usage_error() {
    for (cmd, says) in [
        ("/nonexistent-cmd", "no such executable file"),
        ("no-such-cmd-dio-trace", "command not found in PATH"),
    ] {
        for sub in ["run", "record"] {
            let mut args = vec![sub];
            if sub == "record" {
                args.extend(["-o", "/tmp/dio-trace-usage-test.dtr"]);
            }
            args.extend(["--", cmd]);
            let (code, _, err) = dio(&args);
            assert_eq!(code, Some(2), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
            // Refused before the trace was set up: nothing says it attached.
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
    assert!(!std::path::Path::new("/tmp/dio-trace-usage-test.dtr").exists());
}

#[test]
fn a_path_that_does_not_exist_is_a_usage_error() {
    for args in [
        &["watch", "--path", "/nonexistent-dio-trace", "--duration", "1"][..],
        &["run", "--path", "/nonexistent-dio-trace", "--", "true"],
        &[
            "record",
            "-o",
            "/tmp/dio-trace-usage-path.dtr",
            "--path",
            "/nonexistent-dio-trace",
        ],
    ] {
        let (code, _, err) = dio(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--path /nonexistent-dio-trace: no such file or directory"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn the_version_names_its_build() {
    let (code, out, _) = dio(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("dio-trace ") && out.contains("(commit ") && out.contains("BPF object crc32"),
        "{out}"
    );
}
