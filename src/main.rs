use std::process::ExitCode;

use clap::Parser;

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
