//! The `memgate` binary: the command line, the environment and the
//! configuration file in; one clear line out on failure.

/// mimalloc, measured: memgate allocates many small, short-lived buffers
/// per call (keys, replies, HTTP/2 frames); see the README's benchmarks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use memgate_server::check;
use memgate_server::cli::{self, LoadError};
use memgate_server::config::Config;
use memgate_server::trace;
use std::io::IsTerminal;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt;

fn main() {
    // The only place memgate reads its own MEMGATE_* variables.
    let invocation = match cli::load(std::env::args_os(), |name| std::env::var_os(name)) {
        Ok(invocation) => invocation,
        Err(LoadError::Usage(e)) => e.exit(),
        Err(LoadError::Config(e)) => fail(&e),
    };
    if invocation.check_config {
        // Every check, then the effective configuration on stdout; nothing
        // is bound or connected.
        match check::check(&invocation.settings) {
            Ok(checked) => {
                let config_file = invocation.config_file.as_deref();
                print!(
                    "{}",
                    check::report(&invocation.settings, config_file, &checked)
                );
                return;
            }
            Err(e) => fail(&e),
        }
    }
    let config = match Config::try_from(invocation.settings) {
        Ok(c) => c,
        Err(e) => fail(&e),
    };
    // One event loop by default: every call is served on the thread that
    // read it, with no cross-thread wake-ups (measured: the least CPU per
    // call). More threads trade CPU per call for using more cores.
    let runtime = match config.server.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = runtime.unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));

    // OTLP export (feature `otlp`): made inside the runtime, whose tasks
    // carry its gRPC channel.
    #[cfg(feature = "otlp")]
    let exporter = config.otlp_endpoint.as_deref().map(|url| {
        let _runtime = runtime.enter();
        trace::otlp::Exporter::new(url).unwrap_or_else(|e| fail(&e))
    });
    #[cfg(feature = "otlp")]
    let export = exporter.as_ref().map(|e| e.layer());
    #[cfg(not(feature = "otlp"))]
    let export = None;

    let filter = EnvFilter::try_from_env("MEMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person watching: a file or a log collector
    // gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let logs = trace::subscriber(config.log_format, filter, ansi, std::io::stderr, export);
    // Also routes the `log` records of dependencies into it.
    if let Err(e) = logs.try_init() {
        fail(&format!("cannot set up logging: {e}"));
    }
    runtime.block_on(serve(config));
    #[cfg(feature = "otlp")]
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
}

async fn serve(config: Config) {
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on {}: {e}", config.listen)),
    };
    if let Err(e) = memgate_server::run(listener, config, shutdown_signal()).await {
        fail(&format!("server failed: {e}"));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("memgate: {message}");
    std::process::exit(2);
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
