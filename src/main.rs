use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = tokaroo::cli::Cli::parse();
    match tokaroo::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
