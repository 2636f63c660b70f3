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
    /// Copy a SQLite database, consistently, while the server runs
    /// (restore: serve the copy). PostgreSQL: use pg_dump.
    Backup {
        #[command(flatten)]
        db: DbArgs,
        /// The new file to write.
        #[arg(long)]
        to: String,
    },
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage the clients that may ask for access tokens.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Rebuild the search index of every resource (after adding or
    /// changing a SearchParameter in fhir-profiles/search-parameters/).
    Reindex(DbArgs),
    /// Fill the database with synthetic referrals for benchmarks (PCNs,
    /// practices, VCS organisations, link workers; per referral a Patient,
    /// the ServiceRequest, its Task and its trail), through the server's
    /// own write path. Not for a database that holds real data.
    LoadSynthetic(LoadSyntheticArgs),
}

#[derive(Args)]
struct LoadSyntheticArgs {
    #[command(flatten)]
    db: DbArgs,
    /// How many referrals to write.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
    referrals: u64,
    /// How many PCNs they are spread over (five practices each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pcns: u64,
    /// Seed of the generator: the same seed writes the same data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; report the first broken link (exit status 1).
    Verify(DbArgs),
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client (SMART backend services, private_key_jwt).
    Add(ClientAdd),
    /// List the registered clients.
    List(DbArgs),
    /// Disable a client: it gets no new access token.
    Disable {
        /// The client id.
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Args)]
struct ClientAdd {
    #[command(flatten)]
    db: DbArgs,
    /// The client id (the `iss` and `sub` of its assertions).
    #[arg(long)]
    id: String,
    /// The organisation it acts for, as Organization/ID.
    #[arg(long)]
    organization: String,
    /// gp, vcs, pcn or admin.
    #[arg(long)]
    role: String,
    /// Space-separated SMART scopes it may be granted, e.g.
    /// "system/ServiceRequest.cruds system/Task.rus".
    #[arg(long)]
    scope: String,
    /// A file holding its JSON Web Key Set (public keys only).
    #[arg(
        long,
        required_unless_present = "jwks_url",
        conflicts_with = "jwks_url"
    )]
    jwks: Option<std::path::PathBuf>,
    /// Or the https URL where it publishes its JWKS (fetched when it asks
    /// for a token, cached for five minutes).
    #[arg(long)]
    jwks_url: Option<String>,
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
    /// Seconds an access token lives.
    #[arg(long, env = "SP_HUB_TOKEN_LIFETIME", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(10..=3600))]
    token_lifetime: i64,
    /// Requests a client may make a minute, counted across all replicas
    /// (in the database); more get 429 with Retry-After. 0: no limit.
    #[arg(long, env = "SP_HUB_RATE_LIMIT", default_value_t = 6000)]
    rate_limit: i64,
    /// Milliseconds one SQL statement may run before it is stopped and the
    /// request answered 503 (too costly) with Retry-After. 0: no limit.
    #[arg(long, env = "SP_HUB_QUERY_TIMEOUT_MS", default_value_t = 10_000)]
    query_timeout_ms: u64,
    /// Let clients' JWKS URLs be http or resolve to private or local
    /// addresses (a closed network, tests). Default: https to public
    /// addresses only (a guard against server-side request forgery).
    #[arg(long, env = "SP_HUB_ALLOW_PRIVATE_JWKS_URLS")]
    allow_private_jwks_urls: bool,
    /// Public base URL of this server (e.g. https://sp-hub.example.nhs.uk)
    /// when it sits behind a proxy; the token endpoint's URL, which client
    /// assertions name as `aud`, is derived from it. Default: each
    /// request's own scheme and host.
    #[arg(long, env = "SP_HUB_PUBLIC_URL")]
    public_url: Option<String>,
    /// Load the example PCN (fhir-profiles/examples/demo-pcn.json) into the
    /// database before serving; does nothing when it is already there.
    #[arg(long)]
    demo: bool,
    /// Let subscription endpoints be loopback addresses, over plain http
    /// too (tests, a receiver beside the hub). Default: https to public
    /// addresses only (a guard against server-side request forgery).
    #[arg(long, env = "SP_HUB_ALLOW_LOOPBACK_SUBSCRIPTIONS")]
    allow_loopback_subscriptions: bool,
    /// Milliseconds before the first retry of a failed notification; each
    /// further failure in a row doubles it.
    #[arg(long, env = "SP_HUB_NOTIFY_RETRY_MIN_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    notify_retry_min_ms: u64,
    /// Longest wait between retries of a failed notification, in
    /// milliseconds.
    #[arg(long, env = "SP_HUB_NOTIFY_RETRY_MAX_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    notify_retry_max_ms: u64,
    /// Failed deliveries in a row after which a subscription goes to
    /// status error (its notifications are kept until it is requested
    /// again).
    #[arg(long, env = "SP_HUB_NOTIFY_MAX_FAILURES", default_value_t = 20,
          value_parser = clap::value_parser!(i32).range(1..))]
    notify_max_failures: i32,
    /// Dashboard figures derived from fewer people than this are not
    /// shown (small-number suppression; a request may raise it, not lower it).
    #[arg(long, env = "SP_HUB_DASHBOARD_MIN_GROUP", default_value_t = 5,
          value_parser = clap::value_parser!(i64).range(1..=1000))]
    dashboard_min_group: i64,
}

fn client(cmd: ClientCommand) -> Result<(), String> {
    match cmd {
        ClientCommand::Add(a) => {
            let jwks = match &a.jwks {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                ),
                None => None,
            };
            let keys = match (&jwks, &a.jwks_url) {
                (Some(jwks), _) => sp_hub::auth::Keys::Jwks(jwks),
                (None, Some(url)) => sp_hub::auth::Keys::Url(url),
                (None, None) => return Err("give --jwks FILE or --jwks-url URL".into()),
            };
            let row = sp_hub::auth::registration(&a.id, &a.organization, &a.role, &a.scope, keys)?;
            sp_hub::store::Store::open(&a.db.database_url)?.add_client(&row)?;
            println!("client {} registered", a.id);
            Ok(())
        }
        ClientCommand::List(db) => {
            for c in sp_hub::store::Store::open(&db.database_url)?.clients()? {
                let state = if c.disabled { "disabled" } else { "enabled" };
                println!(
                    "{}\t{}\t{}\t{state}\t{}",
                    c.id, c.organization, c.role, c.scopes
                );
            }
            Ok(())
        }
        ClientCommand::Disable { id, db } => {
            if sp_hub::store::Store::open(&db.database_url)?.disable_client(&id)? {
                println!("client {id} disabled");
                Ok(())
            } else {
                Err(format!("no client '{id}' is registered"))
            }
        }
    }
}

fn load_synthetic(a: LoadSyntheticArgs) -> Result<(), String> {
    let store = sp_hub::store::Store::open(&a.db.database_url)?;
    let options = sp_hub::synthetic::Options {
        referrals: a.referrals as usize,
        pcns: a.pcns as usize,
        seed: a.seed,
    };
    let done = sp_hub::synthetic::load(&store, &options, |l| {
        eprintln!(
            "sp-hub: {} referrals, {} resources in {:.0} s ({:.0} resources/s)",
            l.referrals,
            l.resources,
            l.seconds,
            l.per_second()
        )
    })?;
    println!(
        "loaded {} referrals ({} resources) in {:.1} s: {:.0} resources/s",
        done.referrals,
        done.resources,
        done.seconds,
        done.per_second()
    );
    // Statistics for the tables just filled, before anyone queries them.
    store.analyze()
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
            token_lifetime: args.token_lifetime,
            rate_limit: args.rate_limit,
            query_timeout: (args.query_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(args.query_timeout_ms)),
            allow_private_jwks_urls: args.allow_private_jwks_urls,
            public_url: args.public_url,
            demo: args.demo,
            dashboard_min_group: args.dashboard_min_group,
            notify: sp_hub::notify::Config {
                allow_loopback: args.allow_loopback_subscriptions,
                retry_min: std::time::Duration::from_millis(args.notify_retry_min_ms),
                retry_max: std::time::Duration::from_millis(
                    args.notify_retry_max_ms.max(args.notify_retry_min_ms),
                ),
                max_failures: args.notify_max_failures,
            },
        })),
        Command::Client(cmd) => client(cmd),
        Command::Backup { db, to } => sp_hub::store::Store::open(&db.database_url)
            .and_then(|s| s.backup_to(&to))
            .map(|()| println!("backed up to {to}")),
        Command::Audit(AuditCommand::Verify(db)) => sp_hub::store::Store::open(&db.database_url)
            .and_then(|s| s.audit_verify().map_err(|e| e.to_string()))
            .and_then(|(checked, broken)| match broken {
                None => {
                    println!("audit chain intact: {checked} records");
                    Ok(())
                }
                Some((seq, why)) => Err(format!(
                    "audit chain broken at record {seq}: {why} ({checked} records before it are intact)"
                )),
            }),
        Command::Migrate(args) => sp_hub::store::Store::open(&args.database_url).map(|_| {
            println!("migrations applied");
        }),
        Command::Reindex(args) => sp_hub::search::registry::load()
            .map(drop)
            .and_then(|()| sp_hub::store::Store::open(&args.database_url))
            .and_then(|store| store.reindex().map_err(|e| e.to_string()))
            .map(|n| println!("reindexed {n} resources")),
        Command::LoadSynthetic(args) => load_synthetic(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sp-hub: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
