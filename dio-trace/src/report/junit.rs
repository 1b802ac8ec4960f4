//! JUnit XML for CI: one test case per counted write (failures carry the
//! violation's timeline), plus one for the trace as a whole, which errors
//! when the trace is incomplete, so a partial view never reads as green.

use std::{io::Write, path::PathBuf};

use super::{Reporter, RunInfo, human::timeline};
use crate::{
    analysis::{Overall, Summary, Verdict, engine::WriteReport},
    kernel::dev_string,
};

/// What a test case wants to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Ordered,
    Violation,
}

/// How one `verify --crash` write ends as a test case.
pub enum CrashCase {
    Agrees,
    /// The tracer gave no verdict (inconclusive): skipped, with why.
    Unjudged(String),
    Disagrees(String),
}

enum Outcome {
    Pass,
    Failure(String, String),
    /// `verify --crash`: the verdict and the crash truth disagree.
    Disagreement(String),
    Error(String),
    Skipped(String),
}

struct Case {
    class: String,
    name: String,
    secs: f64,
    outcome: Outcome,
}

pub struct Junit {
    out: PathBuf,
    suite: String,
    expect: Expect,
    cases: Vec<Case>,
}

impl Junit {
    pub fn new(out: PathBuf, suite: String, expect: Expect) -> Self {
        Self {
            out,
            suite,
            expect,
            cases: Vec::new(),
        }
    }
}

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {
                o.push_str(&format!("&#x{:x};", c as u32))
            }
            c => o.push(c),
        }
    }
    o
}

impl Reporter for Junit {
    fn start(&mut self, _: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        let b = &w.begin;
        let end = w.events.last().map_or(b.ts_ns, |e| e.ts_ns);
        let outcome = match (&w.verdict, self.expect) {
            (Verdict::Ordered, Expect::Ordered) | (Verdict::Violation(_), Expect::Violation) => Outcome::Pass,
            (Verdict::Violation(k), Expect::Ordered) => Outcome::Failure(k.name().into(), timeline(w)),
            (Verdict::Ordered, Expect::Violation) => {
                Outcome::Failure("expected a violation, the write was ordered".into(), timeline(w))
            }
            (Verdict::Inconclusive(why), _) => Outcome::Error(format!("inconclusive: {why}")),
            (Verdict::Failed(ret), _) => Outcome::Skipped(format!("the write failed (ret={ret})")),
        };
        self.cases.push(Case {
            class: format!(
                "dio-trace.{}",
                w.path
                    .as_deref()
                    .map_or_else(|| format!("{}:{}", dev_string(b.dev), b.ino), str::to_owned)
            ),
            name: format!(
                "pid {} ({}) off={} len={} {}",
                b.tgid,
                b.comm,
                b.pos,
                b.len,
                b.sync_flavour()
            ),
            secs: end.saturating_sub(b.ts_ns) as f64 / 1e9,
            outcome,
        });
        Ok(())
    }

    fn finish(&mut self, s: &Summary, info: &RunInfo) -> std::io::Result<()> {
        let whole = if s.overall == Overall::Inconclusive {
            Outcome::Error(format!("inconclusive: {}", s.reasons.join("; ")))
        } else {
            Outcome::Pass
        };
        self.cases.push(Case {
            class: "dio-trace".into(),
            name: format!("trace is complete (kernel {})", info.kernel),
            secs: 0.0,
            outcome: whole,
        });
        let mut f = std::fs::File::create(&self.out)?;
        f.write_all(xml(&self.suite, &self.cases).as_bytes())
    }
}

/// One test case per counted write of `verify --crash`: `class`, `name`,
/// and the disagreement that fails it (`None`: it passes).
pub fn write_crash_cases(
    out: &std::path::Path,
    suite: &str,
    cases: impl IntoIterator<Item = (String, String, CrashCase)>,
) -> std::io::Result<()> {
    let cases: Vec<Case> = cases
        .into_iter()
        .map(|(class, name, end)| Case {
            class,
            name,
            secs: 0.0,
            outcome: match end {
                CrashCase::Agrees => Outcome::Pass,
                CrashCase::Unjudged(why) => Outcome::Skipped(why),
                CrashCase::Disagrees(why) => Outcome::Disagreement(why),
            },
        })
        .collect();
    std::fs::write(out, xml(suite, &cases))
}

/// The whole document for `cases`.
fn xml(suite: &str, cases: &[Case]) -> String {
    let count = |f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let failures = count(|o| matches!(o, Outcome::Failure(..) | Outcome::Disagreement(_)));
    let errors = count(|o| matches!(o, Outcome::Error(_)));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x += &format!(
        "<testsuites name=\"dio-trace\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\">\n  <testsuite name=\"{}\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">\n",
        escape(suite),
        n = cases.len()
    );
    for c in cases {
        x += &format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
            escape(&c.class),
            escape(&c.name),
            c.secs
        );
        match &c.outcome {
            Outcome::Pass => x += "/>\n",
            Outcome::Failure(msg, body) => {
                x += &format!(
                    ">\n      <failure type=\"violation\" message=\"{}\">{}</failure>\n    </testcase>\n",
                    escape(msg),
                    escape(body)
                )
            }
            Outcome::Disagreement(msg) => {
                x += &format!(
                    ">\n      <failure type=\"disagreement\" message=\"{}\"/>\n    </testcase>\n",
                    escape(msg)
                )
            }
            Outcome::Error(msg) => {
                x += &format!(
                    ">\n      <error type=\"inconclusive\" message=\"{}\"/>\n    </testcase>\n",
                    escape(msg)
                )
            }
            Outcome::Skipped(msg) => {
                x += &format!(
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    escape(msg)
                )
            }
        }
    }
    x += "  </testsuite>\n</testsuites>\n";
    x
}
