use std::process::ExitCode;

use clap::Parser;

// The allocator and its options, shared with the benches that run the request path.
mod allocator;

fn main() -> ExitCode {
    let cli = ravpnd::cli::Cli::parse();
    match ravpnd::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
