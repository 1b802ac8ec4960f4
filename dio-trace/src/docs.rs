//! Manual pages and shell completions, generated from the same `clap`
//! definitions as `--help`, so the three cannot drift. `cargo xtask dist`
//! runs the built binary (`dio-trace man DIR`, `dio-trace completions
//! SHELL`) and puts the results where Debian looks for them.

use std::{io::Write, path::Path};

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// `(file name, roff text)`: `dio-trace.1`, then `dio-trace-<sub>.1` for
/// every subcommand a user can call (hidden ones have no page).
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let top = Cli::command().name("dio-trace");
    let mut pages = vec![("dio-trace.1".to_owned(), render(top.clone())?)];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("dio-trace-{}", sub.get_name());
        // The page's title and synopsis say `dio-trace-run`, as git's do.
        let cmd = sub.clone().name(name.clone()).display_name(name.clone());
        pages.push((format!("{name}.1"), render(cmd)?));
    }
    Ok(pages)
}

fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// Write every page of [`man_pages`] into `dir`; returns their names.
pub fn write_man(dir: &Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = Vec::new();
    for (name, text) in man_pages()? {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        names.push(name);
    }
    Ok(names)
}

/// The completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "dio-trace", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for sub in [
            "run",
            "watch",
            "verify",
            "record",
            "check",
            "info",
            "write",
            "completions",
        ] {
            assert!(
                names.contains(&format!("dio-trace-{sub}.1").as_str()),
                "{names:?}"
            );
        }
        assert!(
            !names.contains(&"dio-trace-man.1"),
            "a hidden command has no page"
        );
        for (name, text) in &pages {
            let text = String::from_utf8_lossy(text);
            let title = name.trim_end_matches(".1");
            assert!(text.contains(&format!(".TH {title} 1")), "{name}: {text}");
        }
        let run = String::from_utf8_lossy(&pages.iter().find(|(n, _)| n == "dio-trace-run.1").unwrap().1)
            .into_owned();
        assert!(run.contains("\\-\\-path"), "options are documented: {run}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("verify") && text.contains("watch"),
                "{shell}: {text}"
            );
        }
    }
}
