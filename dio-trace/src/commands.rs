//! One function per subcommand; each returns the exit status it earned.

use std::io::{self, IsTerminal as _};

use crate::{
    cli::{Cli, Command, InfoArgs, RunArgs, WatchArgs, WriteArgs},
    exit::Exit,
    plan::Plan,
    report::{Reporter, Show, human::Human, ndjson::Ndjson},
    session::{self, Outcome, Target},
    workload,
};

pub fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Run(a) => run(a),
        Command::Watch(a) => watch(a),
        Command::Verify(a) => crate::verify::verify(a),
        Command::Info(a) => info(a),
        Command::Write(a) => write(a),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The reporter a plan asks for, on stdout.
pub fn reporter(plan: &Plan) -> Box<dyn Reporter> {
    if plan.json {
        Box::new(Ndjson::new(io::stdout().lock()))
    } else {
        Box::new(Human::new(io::stdout().lock(), plan.show))
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
    let mut rep = reporter(&plan);
    let outcome = runtime()?.block_on(session::trace(
        &plan,
        Target::Command(a.command.clone()),
        rep.as_mut(),
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
    let mut rep = reporter(&plan);
    let outcome = runtime()?.block_on(session::trace(&plan, Target::Watch(a.duration), rep.as_mut()))?;
    Ok(explain(&outcome))
}

fn info(a: InfoArgs) -> anyhow::Result<Exit> {
    crate::info::print(a.backend)
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
