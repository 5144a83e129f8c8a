//! The `hookmesh` binary: parses the command line and calls the library.

use clap::Parser;
use hookmesh::cli::{controller, crds, serve, sig, Cli, Command};
use std::process::ExitCode;

// mimalloc: delivery does many small, short-lived allocations across threads, where it is
// 35-45 % faster than glibc's malloc (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    // SAFETY: both only adjust memory tuning; called before any other thread exists.
    unsafe {
        // Transparent huge pages make the allocator's arenas resident 2 MiB at a time: +30 MiB
        // for nothing at this size.
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        // Freed pages go back to the OS after 10 ms instead of mimalloc's default 1 s: the same
        // throughput, 4-7 MiB less peak RSS under delivery load (docs/benchmarks.md). The
        // bindings name the option after it; purge_delay is the one before (mimalloc.h).
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_use_numa_nodes - 1, 10);
        // SQLite allocates through glibc: two arenas are plenty and keep less freed memory.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let run = |fut: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>| {
        let result = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(fut));
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    };
    match cli.command {
        Command::Serve(args) => run(Box::pin(serve::serve(*args))),
        Command::Controller(args) => run(Box::pin(controller::run(*args))),
        Command::Migrate(args) => run(Box::pin(serve::migrate(args))),
        Command::Rekey(args) => run(Box::pin(serve::rekey(args))),
        Command::Crds(args) => match crds::run(&args, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Sig(cmd) => match sig::run(&cmd, now, &mut std::io::stdout().lock()) {
            Ok(sig::SigOutcome::Ok) => ExitCode::SUCCESS,
            Ok(sig::SigOutcome::Invalid) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
