//! `check --svg FILE`: the writes that are not ordered drawn as timelines
//! a person can open in any browser: per write, its steps on a time axis
//! (the sync red when it came before the size update), and under the axis
//! each step with its kernel stack. A trace with nothing wrong draws its
//! first writes instead, so a fixed kernel's trace shows the right order.

use std::{fs::File, io::Write, path::Path};

use anyhow::{Context as _, Result};

use dio_trace_common::kind::RecordKind;

use super::{Reporter, RunInfo, perfetto::slice_name};
use crate::analysis::{Event, Summary, Verdict, ViolationKind, engine::WriteReport};

/// Writes drawn at most (the rest are counted in the title).
const MAX_DRAWN: usize = 12;
const WIDTH: u32 = 960;
const AXIS_X: u32 = 40;
const AXIS_W: u32 = 880;
const LINE: u32 = 15;

pub struct Svg {
    /// Created up front, so a path that cannot be written fails before
    /// anything is traced; written at the end.
    out: File,
    raw_addresses: bool,
    problems: Vec<WriteReport>,
    ordered: Vec<WriteReport>,
    not_drawn: u64,
}

impl Svg {
    pub fn create(path: &Path, raw_addresses: bool) -> Result<Self> {
        let out = File::create(path).with_context(|| format!("cannot create SVG {}", path.display()))?;
        Ok(Self {
            out,
            raw_addresses,
            problems: Vec::new(),
            ordered: Vec::new(),
            not_drawn: 0,
        })
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The colour of a step: what it means for the verdict.
fn colour(w: &WriteReport, e: &Event) -> &'static str {
    let early_sync = w.verdict == Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate);
    match e.kind {
        RecordKind::SyncEnter if early_sync => "#d62728",
        RecordKind::SyncEnter => "#1f77b4",
        RecordKind::MarkDirty => "#2ca02c",
        RecordKind::WriteBegin => "#555555",
        _ => "#999999",
    }
}

/// One write's block at height `y`; returns the SVG and the block's height.
fn block(w: &WriteReport, y: u32, raw: bool) -> (String, u32) {
    let mut s = String::new();
    let t0 = w.begin.ts_ns;
    let steps: Vec<&Event> = std::iter::once(&w.begin).chain(&w.events).collect();
    let span = steps
        .iter()
        .map(|e| e.ts_ns - t0.min(e.ts_ns))
        .max()
        .unwrap_or(0)
        .max(1);
    let x_of =
        |e: &Event| AXIS_X + (e.ts_ns.saturating_sub(t0) as f64 / span as f64 * f64::from(AXIS_W)) as u32;
    let title_colour = if matches!(w.verdict, Verdict::Violation(_)) {
        "#d62728"
    } else {
        "#222222"
    };
    s += &format!(
        "<text x=\"{AXIS_X}\" y=\"{}\" font-weight=\"bold\" fill=\"{title_colour}\">{}</text>\n",
        y + LINE,
        esc(&slice_name(w))
    );
    let axis_y = y + 2 * LINE + 14;
    let end = w
        .events
        .iter()
        .find(|e| e.kind == RecordKind::CompleteExit)
        .map_or(AXIS_X + AXIS_W, &x_of);
    s += &format!(
        "<rect x=\"{AXIS_X}\" y=\"{}\" width=\"{}\" height=\"8\" fill=\"#dddddd\"><title>the write, begin to completion</title></rect>\n",
        axis_y - 4,
        end.saturating_sub(AXIS_X).max(1)
    );
    for (i, e) in steps.iter().enumerate() {
        let x = x_of(e);
        // Steps close in time would overlap: alternate above and below.
        let label_y = if i % 2 == 0 { axis_y - 10 } else { axis_y + 20 };
        s += &format!(
            "<circle cx=\"{x}\" cy=\"{axis_y}\" r=\"6\" fill=\"{}\" class=\"step\" data-step=\"{}\"><title>{}</title></circle>\n",
            colour(w, e),
            e.kind.name(),
            e.kind.name()
        );
        s += &format!(
            "<text x=\"{x}\" y=\"{label_y}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n",
            i + 1
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#777777\">axis: {}us</text>\n",
        AXIS_X + AXIS_W,
        y + LINE,
        span / 1000
    );
    let mut ty = axis_y + 2 * LINE + 8;
    for (i, e) in steps.iter().enumerate() {
        let disk = e.disksize().map_or("?".into(), |d| d.to_string());
        let us = e.ts_ns.saturating_sub(t0) / 1000;
        s += &format!(
            "<text x=\"{AXIS_X}\" y=\"{ty}\" fill=\"{}\">{}</text>\n",
            colour(w, e),
            esc(&format!("{} {} +{us}us disk={disk}", i + 1, e.kind.name()))
        );
        ty += LINE;
        if let Some(stack) = &e.stack {
            for f in stack.frames.iter().filter_map(|f| f.display(raw)) {
                s += &format!(
                    "<text x=\"{}\" y=\"{ty}\" class=\"frame\">{}</text>\n",
                    AXIS_X + 24,
                    esc(&f)
                );
                ty += LINE;
            }
        }
    }
    (s, ty - y + LINE)
}

impl Reporter for Svg {
    fn start(&mut self, _info: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        let problem = !matches!(w.verdict, Verdict::Ordered | Verdict::Failed(_));
        if problem && self.problems.len() < MAX_DRAWN {
            self.problems.push(w.clone());
        } else if !problem && self.ordered.len() < MAX_DRAWN {
            self.ordered.push(w.clone());
        } else {
            self.not_drawn += 1;
        }
        Ok(())
    }

    fn finish(&mut self, s: &Summary, info: &RunInfo) -> std::io::Result<()> {
        let drawn = if self.problems.is_empty() {
            &self.ordered
        } else {
            &self.problems
        };
        let mut body = String::new();
        let mut y = 40;
        for w in drawn {
            let (b, h) = block(w, y, self.raw_addresses);
            body += &b;
            y += h;
        }
        let t = &s.tally;
        let mut title = format!(
            "dio-trace on {}: {} ({} counted: {} ordered, {} violations, {} inconclusive)",
            info.kernel,
            s.overall.name().to_uppercase(),
            t.counted(),
            t.ordered,
            t.violations,
            t.inconclusive
        );
        if self.not_drawn > 0 {
            title += &format!("; {} drawn, {} more not", drawn.len(), self.not_drawn);
        }
        let f = &mut self.out;
        write!(
            f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" font-family=\"monospace\" font-size=\"12\">\n\
             <style>.frame {{ fill: #444444; }}</style>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{AXIS_X}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\n\
             {body}</svg>\n",
            y + 10,
            esc(&title)
        )?;
        f.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<path unknown> & \"x\""),
            "&lt;path unknown&gt; &amp; &quot;x&quot;"
        );
    }
}
