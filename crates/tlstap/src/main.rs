//! tlstap: parse the command line, run it, map the outcome to an exit code.

mod cli;
mod discovery;
mod output;
mod pipeline;
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
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("tlstap: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
