//! The files a fleet installs (`deploy/`), checked by the tools that will
//! read them: Prometheus' promtool for the alert rules, systemd for the
//! unit, the Kubernetes schema for the DaemonSet. No root needed. A tool
//! that is missing prints SKIPPED; under CI (`CI` set) it fails instead
//! (`cargo xtask setup` installs them all).

use clap::Parser as _;
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

mod common;

use common::required_tool;

const BIN: &str = env!("CARGO_BIN_EXE_dio-trace");

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(rel)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn alert_rules_load_and_fire_when_they_should() {
    let Some(promtool) = required_tool("alert-rules", "promtool", "Debian package prometheus") else {
        return;
    };
    let dir = deploy("prometheus");
    let check = Command::new(&promtool)
        .args(["check", "rules", "dio-trace.rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("SUCCESS: 4 rules found"),
        "{}",
        text(&check)
    );
    let test = Command::new(&promtool)
        .args(["test", "rules", "dio-trace.rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", text(&test));
}

#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = required_tool("systemd-unit", "systemd-analyze", "Debian package systemd") else {
        return;
    };
    let unit = std::fs::read_to_string(deploy("systemd/dio-trace.service")).unwrap();
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nExecStart=/usr/bin/dio-trace watch --json"));
    // systemd checks that ExecStart's program exists: point it at this
    // build; everything else is verified as shipped.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dio-trace.service");
    std::fs::write(&path, unit.replace("/usr/bin/dio-trace", BIN)).unwrap();
    let out = Command::new(&analyze).arg("verify").arg(&path).output().unwrap();
    // Unknown keys and bad values are only warnings (exit 0): none allowed.
    let said: Vec<String> = text(&out)
        .lines()
        .filter(|l| !l.contains("sysinit.target") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    assert!(out.status.success() && said.is_empty(), "{}", text(&out));
    // The command line it runs is one this binary accepts.
    let args: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/bin/dio-trace "))
        .unwrap()
        .split_whitespace()
        .collect();
    let parsed =
        dio_trace::cli::Cli::try_parse_from(std::iter::once("dio-trace").chain(args.iter().copied()));
    assert!(parsed.is_ok(), "{args:?}: {}", parsed.unwrap_err());
}

#[test]
fn the_daemonset_validates_against_the_kubernetes_schema() {
    let Some(validate) = required_tool("daemonset", "kubernetes-validate", "PyPI kubernetes-validate") else {
        return;
    };
    let manifest = deploy("kubernetes/dio-trace.yaml");
    let out = Command::new(&validate)
        .args(["--strict", "--kubernetes-version", "1.30"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("passed for resource daemonset/dio-trace"),
        "{}",
        text(&out)
    );
    // Capabilities: all dropped, and only the commented few added back.
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    assert!(yaml.contains("drop:\n                - ALL"));
    assert!(yaml.contains("privileged: false"));
    assert!(yaml.contains("readOnlyRootFilesystem: true"));
    assert!(yaml.contains("prometheus.io/scrape: \"true\""));
}
