use clap::{Args, Parser, Subcommand};

use sp_hub::server::{serve, ServeConfig};

/// sp-hub: FHIR R4 referral hub for social prescribing.
#[derive(Parser)]
#[command(name = "sp-hub", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DbArgs),
    /// Rebuild the search index of every resource (after adding or
    /// changing a SearchParameter in fhir-profiles/search-parameters/).
    Reindex(DbArgs),
}

#[derive(Args)]
struct DbArgs {
    /// SQLite file path, or postgres://user@host:port/db for PostgreSQL.
    #[arg(long, env = "SP_HUB_DATABASE_URL", default_value = "./sp-hub.db")]
    database_url: String,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SP_HUB_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SP_HUB_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Most entries a transaction or batch Bundle may hold.
    #[arg(long, env = "SP_HUB_MAX_BUNDLE_ENTRIES", default_value_t = 500)]
    max_bundle_entries: usize,
    /// Load the example PCN (fhir-profiles/examples/demo-pcn.json) into the
    /// database before serving; does nothing when it is already there.
    #[arg(long)]
    demo: bool,
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SP_HUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // One JSON object a line for log collectors; text for people.
    match std::env::var("SP_HUB_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().with_current_span(true).init(),
        Ok("text") | Err(_) => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => {
            eprintln!("sp-hub: SP_HUB_LOG_FORMAT must be json or text, not '{other}'");
            return std::process::ExitCode::from(2);
        }
    }
    let result = match Cli::parse().command {
        Command::Serve(args) => actix_web::rt::System::new().block_on(serve(ServeConfig {
            database_url: args.db.database_url,
            listen: args.listen,
            max_body_bytes: args.max_body_bytes,
            max_bundle_entries: args.max_bundle_entries,
            demo: args.demo,
        })),
        Command::Migrate(args) => sp_hub::store::Store::open(&args.database_url).map(|_| {
            println!("migrations applied");
        }),
        Command::Reindex(args) => sp_hub::search::registry::load()
            .map(drop)
            .and_then(|()| sp_hub::store::Store::open(&args.database_url))
            .and_then(|store| store.reindex().map_err(|e| e.to_string()))
            .map(|n| println!("reindexed {n} resources")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sp-hub: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
