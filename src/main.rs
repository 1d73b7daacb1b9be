//! `wgpu-mha`: the command-line tool. `info` shows the adapters, `mha` and `sdpa` run one
//! attention on tensors from a safetensors file, `bench` measures the local adapter.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wgpu-mha",
    version,
    about = "Multi-head attention on WGSL compute shaders (wgpu), checked against a CPU reference"
)]
struct Cli {
    #[command(flatten)]
    device: cli::DeviceArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters, the one chosen and why, its features and limits.
    Info,
    /// nn.MultiheadAttention forward on tensors read from a safetensors file.
    Mha(cli::run::MhaArgs),
    /// F.scaled_dot_product_attention on tensors read from a safetensors file.
    Sdpa(cli::run::SdpaArgs),
    /// Measure kernel configurations on this adapter and cache the fastest.
    Tune(cli::tune::TuneArgs),
    /// Benchmark the built-in presets (or a custom shape) on the adapter.
    Bench(Box<cli::bench::BenchArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info => cli::info::run(&cli.device),
        Command::Mha(args) => cli::run::mha(&cli.device, args),
        Command::Sdpa(args) => cli::run::sdpa(&cli.device, args),
        Command::Bench(args) => cli::bench::run(&cli.device, args),
        Command::Tune(args) => cli::tune::run(&cli.device, args),
    };
    match result {
        Ok(cli::Outcome::Pass) => ExitCode::SUCCESS,
        Ok(cli::Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
