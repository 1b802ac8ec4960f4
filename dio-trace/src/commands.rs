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
        Reporter, Show, Tee,
        human::Human,
        junit::{Expect, Junit},
        ndjson::Ndjson,
        output::Output,
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
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// NDJSON or text on stdout, showing `show`.
pub fn reporter(json: bool, show: Show) -> Box<dyn Reporter> {
    reporter_to(Box::new(io::stdout().lock()), json, show)
}

fn reporter_to(out: Box<dyn io::Write>, json: bool, show: Show) -> Box<dyn Reporter> {
    if json {
        Box::new(Ndjson::new(out, show))
    } else {
        Box::new(Human::new(out, show))
    }
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
    let plan = Plan::new(&a.opts, Show::All, true)?;
    let mut rep = reporter(plan.json, plan.show);
    let outcome = runtime()?.block_on(session::trace(
        &plan,
        Target::Command(a.command.clone()),
        rep.as_mut(),
        None,
    ))?;
    if let Some(status) = outcome.child
        && !status.success()
    {
        eprintln!("dio-trace: note: {} exited with {status}", a.command[0]);
    }
    Ok(explain(&outcome))
}

fn watch(a: WatchArgs) -> anyhow::Result<Exit> {
    let plan = Plan::new(&a.opts, Show::Problems, false)?;
    if !plan.json && io::stderr().is_terminal() {
        eprintln!("dio-trace: watching; Ctrl-C to stop and print the summary");
    }
    let mut main = match &a.output {
        Some(path) => {
            let out =
                Output::create(path).map_err(|e| UsageError(format!("--output {}: {e}", path.display())))?;
            reporter_to(Box::new(out), plan.json, plan.show)
        }
        None => reporter(plan.json, plan.show),
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
    let mut tee = Tee(vec![main.as_mut()]);
    if let Some(m) = metrics_rep.as_mut() {
        tee.0.push(m);
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
    let plan = Plan::new(&a.opts, if spawns { Show::All } else { Show::Problems }, spawns)?;
    let target = if spawns {
        Target::Command(a.command.clone())
    } else {
        Target::Watch(a.duration)
    };
    let mut rep = reporter(plan.json, plan.show);
    let outcome = runtime()?.block_on(session::trace(&plan, target, rep.as_mut(), Some(&a.output)))?;
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
    let mut main = reporter(a.json, a.show);
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
    let mut tee = Tee(vec![main.as_mut()]);
    if let Some(j) = junit.as_mut() {
        tee.0.push(j);
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
    let size = workload::run(a.pattern, &a.file, a.count, a.size)?;
    eprintln!(
        "dio-trace write: {} x {} bytes, {}, {} is now {size} bytes",
        a.count,
        a.size,
        a.pattern.name(),
        a.file.display()
    );
    Ok(Exit::Ordered)
}
