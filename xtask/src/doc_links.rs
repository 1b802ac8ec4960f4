//! The relative links of the README and `docs/` must lead somewhere: the
//! front page is a map of the docs pages, and a link that broke when a
//! section moved would leave a newcomer at a dead end. Checked by a unit
//! test, so CI's `cargo xtask test` runs it.
//!
//! A link is `[text](target)` outside code; `target` is a path relative to
//! the page (a file or folder that must exist), optionally with
//! `#anchor`, or `#anchor` alone for the page itself. An anchor must name a
//! heading of the target page, slugged as GitHub does. Links with a scheme
//! (`https:`, `mailto:`) are not followed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The Markdown pages whose links are checked: the top level's and
/// `docs/`'s.
pub fn pages(root: &Path) -> Result<Vec<PathBuf>> {
    let mut pages = Vec::new();
    for dir in [root.to_path_buf(), root.join("docs")] {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    pages.sort();
    Ok(pages)
}

/// Every broken link of `pages`, as `page: [target]: why`.
pub fn broken(pages: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
        for target in links(&text) {
            if let Some(why) = check(page, &text, &target)? {
                out.push(format!("{}: [{target}]: {why}", page.display()));
            }
        }
    }
    Ok(out)
}

/// Why `target`, linked from `page` (whose text is `text`), leads nowhere.
fn check(page: &Path, text: &str, target: &str) -> Result<Option<String>> {
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let (file, body) = if path.is_empty() {
        (page.to_path_buf(), Some(text.to_owned()))
    } else {
        let file = page.parent().unwrap_or(Path::new(".")).join(path);
        if !file.exists() {
            return Ok(Some(format!("{} does not exist", file.display())));
        }
        let is_md = file.extension().is_some_and(|e| e == "md");
        let body = match (anchor, is_md) {
            (Some(_), true) => Some(std::fs::read_to_string(&file)?),
            _ => None,
        };
        (file, body)
    };
    Ok(match (anchor, body) {
        (Some(a), Some(body)) if !anchors(&body).contains(a) => {
            Some(format!("{} has no heading #{a}", file.display()))
        }
        (Some(_), None) if !path.is_empty() => Some(format!(
            "an anchor into {}, which is not Markdown",
            file.display()
        )),
        _ => None,
    })
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The link targets of a Markdown text, outside fenced and inline code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        // Inline code spans alternate with prose between backticks.
        for (i, prose) in line.split('`').enumerate() {
            if i % 2 == 1 {
                continue;
            }
            let mut rest = prose;
            while let Some(at) = rest.find("](") {
                let after = &rest[at + 2..];
                let Some(end) = after.find(')') else { break };
                let target = after[..end].trim();
                if !target.contains(':') && !target.is_empty() {
                    out.push(target.to_owned());
                }
                rest = &after[end..];
            }
        }
    }
    out
}

/// The anchors GitHub makes for the headings of a Markdown text: lower
/// case, punctuation dropped but `-` and `_`, spaces made `-`, a repeat
/// suffixed `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let title = heading.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while seen.contains(&unique) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
        seen.insert(unique);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_and_docs_have_no_broken_link() {
        let pages = pages(&crate::build::workspace()).unwrap();
        assert!(pages.iter().any(|p| p.ends_with("README.md")));
        assert!(
            pages
                .iter()
                .filter(|p| p.parent().is_some_and(|d| d.ends_with("docs")))
                .count()
                >= 8
        );
        let broken = broken(&pages).unwrap();
        assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    }

    #[test]
    fn links_outside_code_are_found() {
        let text = "see [a](x.md#y) and `[b](not)` and [c](https://e.org)\n```\n[d](no)\n```\n[e](#here)";
        assert_eq!(links(text), ["x.md#y", "#here"]);
    }

    #[test]
    fn anchors_are_slugged_as_github_does() {
        let a = anchors(
            "# The 2025 O_DSYNC regression (6.15 .. 6.16.2)\n## Containers: `--cgroup`\n## Tests\n## Tests\n```\n# not\n```",
        );
        let want: BTreeSet<String> = [
            "the-2025-o_dsync-regression-615--6162",
            "containers---cgroup",
            "tests",
            "tests-1",
        ]
        .map(String::from)
        .into();
        assert_eq!(a, want);
    }

    /// Each way a link can break is reported, and a good one is not.
    #[test]
    fn a_broken_link_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        std::fs::write(docs.join("a.md"), "# A page\n## Part two\n").unwrap();
        std::fs::write(docs.join("p.svg"), "<svg/>").unwrap();
        let readme = dir.path().join("README.md");
        std::fs::write(
            &readme,
            "# Top\n[ok](docs/a.md) [ok](docs/a.md#part-two) [ok](#top) [ok](docs/p.svg)\n\
             [gone](docs/b.md) [bad](docs/a.md#part-three) [self](#nowhere) [svg](docs/p.svg#x)\n",
        )
        .unwrap();
        let found = broken(&pages(dir.path()).unwrap()).unwrap();
        assert_eq!(found.len(), 4, "{found:#?}");
        for (bad, why) in [
            ("docs/b.md]", "does not exist"),
            ("docs/a.md#part-three]", "no heading #part-three"),
            ("#nowhere]", "no heading #nowhere"),
            ("docs/p.svg#x]", "not Markdown"),
        ] {
            assert!(
                found.iter().any(|f| f.contains(bad) && f.contains(why)),
                "{bad}: {found:#?}"
            );
        }
    }
}
