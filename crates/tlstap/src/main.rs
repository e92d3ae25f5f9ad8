//! tlstap: parse the command line, run it, map the outcome to an exit code.

mod capture_loop;
mod cli;
mod discovery;
mod intake;
mod output;
mod pipeline;
mod request;
mod run;
mod system;
mod target;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Gotls(args) => run::gotls(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`tlstap … | head`): the capture is over, and that is no error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("tlstap: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
