//! Parse, run, exit with the documented status; errors print their whole
//! chain on one line to stderr.

use clap::Parser as _;
use dio_trace::{
    cli::Cli,
    commands,
    error::{EnvError, UsageError},
    exit::Exit,
};

fn main() {
    let cli = Cli::parse();
    let code = match commands::dispatch(cli) {
        Ok(exit) => exit,
        Err(e) => {
            if is_broken_pipe(&e) {
                // `dio-trace ... | head`: the reader left; not our failure.
                std::process::exit(0);
            }
            eprintln!("dio-trace: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                Exit::Usage
            } else {
                if e.downcast_ref::<EnvError>().is_none() {
                    eprintln!("dio-trace: this run could not trace; see the cause above");
                }
                Exit::Environment
            }
        }
    };
    std::process::exit(code as i32);
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
