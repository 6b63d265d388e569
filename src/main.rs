//! The `tfload` command: parses arguments, sets up logging, runs the command, maps the result to
//! an exit code. Everything else lives in the library and in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::stderr::restore_from_launcher();
    let args = cli::Cli::parse();
    cli::logging::init(args.global.verbose, args.global.quiet);
    cli::exit_code(cli::run(args))
}
