//! `dio-trace check --svg` on the trace recorded on the buggy kernel,
//! opened in a real browser: headless Chromium (Debian's `chromium`, which
//! `cargo xtask setup` installs) must parse it without error, find a step
//! marker for every step of every violating write and each step's stack,
//! and render it to a screenshot. No root needed.

use std::{path::Path, process::Command};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_dio-trace");

/// Chromium, headless, with the flags that keep it off the (closed)
/// network and away from the user's profile.
fn browse(chromium: &Path, profile: &Path, args: &[&str], svg: &Path) -> std::process::Output {
    Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", svg.display()))
        .output()
        .unwrap()
}

#[test]
fn the_buggy_kernels_violations_render_in_a_browser() {
    let Some(chromium) = common::required_tool(
        "the_buggy_kernels_violations_render_in_a_browser",
        "chromium",
        "Debian package chromium",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let trace = common::fixture("buggy-6.1-kprobe.dtr");
    let status = Command::new(BIN)
        .arg("check")
        .arg(&trace)
        .arg("--svg")
        .arg(&svg)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "the buggy trace is a violation");

    let profile = dir.path().join("profile");
    let dom = browse(&chromium, &profile, &["--dump-dom"], &svg);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.starts_with("<svg"),
        "Chromium did not read an SVG: {dom:.300}"
    );
    assert!(
        !dom.contains("parsererror"),
        "Chromium could not parse it: {dom:.600}"
    );
    for step in [
        "write_begin",
        "sync_enter",
        "dio_complete_exit",
        "mark_inode_dirty",
    ] {
        assert_eq!(
            dom.matches(&format!("data-step=\"{step}\"")).count(),
            3,
            "a {step} marker for each of the 3 writes"
        );
    }
    assert_eq!(dom.matches("VIOLATION sync_before_size_update").count(), 3);
    assert!(
        dom.contains("iomap_dio_complete"),
        "the early sync's stack is drawn"
    );
    assert!(
        dom.contains("ext4_file_write_iter"),
        "the late size update's stack is drawn"
    );
    assert!(!dom.contains("0xffffffff"), "no raw addresses by default");

    let png = dir.path().join("t.png");
    let shot = browse(
        &chromium,
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=960,900",
        ],
        &svg,
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "a screenshot with something drawn ({size} bytes): {}",
        String::from_utf8_lossy(&shot.stderr)
    );
}
