use clap::Parser;

// glibc's malloc serialises the runtime's worker threads on its arena locks under load; the
// load bench showed allocation as the largest cost per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
