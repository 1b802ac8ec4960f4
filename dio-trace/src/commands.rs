//! One function per subcommand; each returns the exit status it earned.

use std::{
    io::{self, IsTerminal as _},
    sync::{Arc, Mutex},
};

use crate::{
    analysis::Overall,
    cli::{CheckArgs, Cli, Command, ExpectArg, InfoArgs, RecordArgs, RunArgs, WatchArgs, WriteArgs},
    error::{EnvError, UsageError},
    exit::Exit,
    metrics::{self, Metrics, MetricsReporter},
    plan::Plan,
    replay,
    report::{
        Reporter, Show, Tee, View,
        human::Human,
        junit::{Expect, Junit},
        ndjson::Ndjson,
        output::Output,
        perfetto::Perfetto,
        svg::Svg,
    },
    session::{self, Outcome, Target},
    trace::reader,
    workload,
};

pub fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Run(a) => run(a),
        Command::Watch(a) => watch(a),
        Command::Verify(a) => crate::verify::verify(a),
        Command::Record(a) => record(a),
        Command::Check(a) => check(a),
        Command::Info(a) => info(a),
        Command::Write(a) => write(a),
        Command::Completions(a) => {
            crate::docs::completions(a.shell, &mut io::stdout().lock());
            Ok(Exit::Ordered)
        }
        Command::Man(a) => {
            for name in crate::docs::write_man(&a.dir)? {
                println!("{}", a.dir.join(name).display());
            }
            Ok(Exit::Ordered)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// NDJSON or text on stdout, showing `show`; `raw`: with kernel addresses.
pub fn reporter(json: bool, show: Show, raw: bool) -> Box<dyn Reporter> {
    let view = View {
        show,
        raw_addresses: raw,
    };
    reporter_to(Box::new(io::stdout().lock()), json, view)
}

fn reporter_to(out: Box<dyn io::Write>, json: bool, view: View) -> Box<dyn Reporter> {
    if json {
        Box::new(Ndjson::new(out, view))
    } else {
        Box::new(Human::new(out, view))
    }
}

/// The `--perfetto` writer, when asked for: a file that cannot be created
/// is a usage error.
fn perfetto(path: Option<&std::path::Path>, raw: bool) -> anyhow::Result<Option<Perfetto>> {
    path.map(|p| Perfetto::create(p, raw).map_err(|e| UsageError(format!("{e:#}")).into()))
        .transpose()
}

/// Trace `target` reporting to stdout (and to a Perfetto trace when asked).
fn traced(plan: &Plan, target: Target, record: Option<&std::path::Path>) -> anyhow::Result<Outcome> {
    let mut main = reporter(plan.json, plan.show, plan.raw_addresses);
    let mut perfetto = perfetto(plan.perfetto.as_deref(), plan.raw_addresses)?;
    let mut tee = Tee(vec![main.as_mut()]);
    if let Some(p) = perfetto.as_mut() {
        tee.0.push(p);
    }
    runtime()?.block_on(session::trace(plan, target, &mut tee, record))
}

/// Print why an answer is inconclusive on stderr (the contract for exit 3).
pub fn explain(outcome: &Outcome) -> Exit {
    let exit = Exit::from(outcome.summary.overall);
    if exit == Exit::Inconclusive {
        for r in &outcome.summary.reasons {
            eprintln!("dio-trace: inconclusive: {r}");
        }
    }
    exit
}

fn run(a: RunArgs) -> anyhow::Result<Exit> {
    crate::spawn::check_runnable(&a.command)?;
    let plan = Plan::from_args(&a.opts, Show::All, true)?;
    let outcome = traced(&plan, Target::Command(a.command.clone()), None)?;
    if let Some(status) = outcome.child
        && !status.success()
    {
        eprintln!("dio-trace: note: {} exited with {status}", a.command[0]);
    }
    Ok(explain(&outcome))
}

fn watch(a: WatchArgs) -> anyhow::Result<Exit> {
    let plan = Plan::from_args(&a.opts, Show::Problems, false)?;
    if !plan.json && io::stderr().is_terminal() {
        eprintln!("dio-trace: watching; Ctrl-C to stop and print the summary");
    }
    let mut main = match &a.output {
        Some(path) => {
            let out =
                Output::create(path).map_err(|e| UsageError(format!("--output {}: {e}", path.display())))?;
            reporter_to(
                Box::new(out),
                plan.json,
                View {
                    show: plan.show,
                    raw_addresses: plan.raw_addresses,
                },
            )
        }
        None => reporter(plan.json, plan.show, plan.raw_addresses),
    };
    let served = match a.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr)?;
            let kept = plan.cgroups.iter().map(|c| c.path.clone()).collect();
            Some((Arc::new(Mutex::new(Metrics::new(kept))), listener))
        }
        None => None,
    };
    let mut metrics_rep = served.as_ref().map(|(m, _)| MetricsReporter(m.clone()));
    let mut perfetto = perfetto(plan.perfetto.as_deref(), plan.raw_addresses)?;
    let mut tee = Tee(vec![main.as_mut()]);
    if let Some(m) = metrics_rep.as_mut() {
        tee.0.push(m);
    }
    if let Some(p) = perfetto.as_mut() {
        tee.0.push(p);
    }
    let outcome = runtime()?.block_on(async {
        if let Some((m, listener)) = served {
            Metrics::serve(m, listener)?;
        }
        session::trace(&plan, Target::Watch(a.duration), &mut tee, None).await
    })?;
    Ok(explain(&outcome))
}

fn record(a: RecordArgs) -> anyhow::Result<Exit> {
    let spawns = !a.command.is_empty();
    if spawns {
        crate::spawn::check_runnable(&a.command)?;
    }
    let plan = Plan::from_args(&a.opts, if spawns { Show::All } else { Show::Problems }, spawns)?
        .sending_every_write();
    let target = if spawns {
        Target::Command(a.command.clone())
    } else {
        Target::Watch(a.duration)
    };
    let outcome = traced(&plan, target, Some(&a.output))?;
    eprintln!("dio-trace: trace written to {}", a.output.display());
    Ok(explain(&outcome))
}

fn check(a: CheckArgs) -> anyhow::Result<Exit> {
    let data = std::fs::read(&a.file)
        .map_err(|e| EnvError(format!("cannot read trace {}: {e}", a.file.display())))?;
    let trace = reader::parse(&data).map_err(|e| EnvError(format!("{}: {e}", a.file.display())))?;
    let expect = match a.expect {
        Some(ExpectArg::Violation) => Expect::Violation,
        _ => Expect::Ordered,
    };
    let mut main = reporter(a.json, a.show, a.view.raw_addresses);
    let mut junit = a.junit.as_ref().map(|out| {
        Junit::new(
            out.clone(),
            format!(
                "dio-trace check {} (kernel {})",
                a.file.display(),
                trace.header.kernel
            ),
            expect,
        )
    });
    let mut perfetto = perfetto(a.view.perfetto.as_deref(), a.view.raw_addresses)?;
    let mut tee = Tee(vec![main.as_mut()]);
    if let Some(j) = junit.as_mut() {
        tee.0.push(j);
    }
    if let Some(p) = perfetto.as_mut() {
        tee.0.push(p);
    }
    let mut svg = a
        .svg
        .as_deref()
        .map(|p| Svg::create(p, a.view.raw_addresses).map_err(|e| UsageError(format!("{e:#}"))))
        .transpose()?;
    if let Some(s) = svg.as_mut() {
        tee.0.push(s);
    }
    let (summary, _) = replay::replay(&trace, a.path.clone(), &mut tee)?;
    let exit = match (summary.overall, a.expect) {
        (Overall::Inconclusive, _) => Exit::Inconclusive,
        (Overall::Violation, Some(ExpectArg::Violation)) => Exit::Ordered,
        (Overall::Ordered, Some(ExpectArg::Violation)) => Exit::Violation,
        (o, _) => Exit::from(o),
    };
    if exit == Exit::Inconclusive {
        for r in &summary.reasons {
            eprintln!("dio-trace: inconclusive: {r}");
        }
    }
    if a.expect == Some(ExpectArg::Violation) && exit == Exit::Violation {
        eprintln!("dio-trace: expected a violation; every counted write was ordered");
    }
    Ok(exit)
}

fn info(a: InfoArgs) -> anyhow::Result<Exit> {
    crate::info::print(a.backend, a.btf.as_deref())
}

fn write(a: WriteArgs) -> anyhow::Result<Exit> {
    let marker = match &a.mark_dm {
        Some(dm) => Some(crate::crash::Marker::new(dm, a.pattern)?),
        None => None,
    };
    let mark = |w, i| marker.as_ref().map_or(Ok(()), |m| m.mark(w, i));
    let on_return: Option<workload::OnReturn> = marker.is_some().then_some(&mark);
    let size = workload::run(a.pattern, &a.file, a.count, a.size, on_return)?;
    eprintln!(
        "dio-trace write: {} x {} bytes, {}, {} is now {size} bytes",
        a.count,
        a.size,
        a.pattern.name(),
        a.file.display()
    );
    Ok(Exit::Ordered)
}
