use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    umbrella::adapters::tls::install_crypto_provider();
    let cli = umbrella::cli::Cli::parse();
    match umbrella::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("umbrella: {error:#}");
            ExitCode::FAILURE
        }
    }
}
