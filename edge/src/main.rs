//! `aero-edge` command line: enroll with central, then serve the venue; and find the venue's
//! plugs for ops.

use aero_edge::config::Settings;
use aero_edge::plugs::discover;
use aero_edge::plugs::kasa::DEFAULT_PORT;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "aero-edge", version, about = "AeroSports venue edge daemon")]
struct Cli {
    /// Data directory (credential, replica database, generated secrets).
    #[arg(long, global = true, env = "AERO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, global = true, env = "AERO_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Redeem a one-time enrollment token and store this venue's credential.
    Enroll {
        /// Central's base URL, e.g. https://hq.example.com
        #[arg(long)]
        central: String,
        /// The enrollment token issued at central for this site.
        #[arg(long, env = "AERO_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// Enroll a box that is already enrolled (fenced, or moved to a restored central),
        /// keeping its database and pending ops. Fences every other box of the site.
        #[arg(long)]
        replace: bool,
    },
    /// Run the venue API and sync with central.
    Serve(ServeArgs),
    /// Write a consistent, checked copy of the venue database to PATH, while the edge serves.
    Backup { path: PathBuf },
    /// Replace the venue database with the backup at PATH (the service must be stopped).
    Restore { path: PathBuf },
    /// The sync state of this box: from the running daemon's database, or the data directory
    /// when it is down. Exit 0 healthy, 3 daemon not running, 4 offline, fenced or dead
    /// letters, 1 unreadable (not enrolled).
    Status {
        /// Print JSON for machines instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Check configuration, data directory, enrollment, central and clock skew; exit 1 on any
    /// failure.
    Check,
    /// Print the compiled default settings as TOML (a starting point for the config file).
    PrintDefaultConfig,
    /// Smart plugs on the venue LAN.
    Plugs {
        #[command(subcommand)]
        command: PlugsCommand,
    },
}

#[derive(Subcommand)]
enum PlugsCommand {
    /// List the Kasa plugs that answer discovery at an address, with what HQ needs to add them.
    Discover(DiscoverArgs),
}

#[derive(Args)]
struct DiscoverArgs {
    /// Where to send discovery: the venue LAN's broadcast address (e.g. 192.168.1.255), or one
    /// plug's address.
    #[arg(long, value_name = "ADDR")]
    broadcast: IpAddr,
    /// The UDP port plugs answer discovery on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// How long to collect answers.
    #[arg(
        long,
        default_value_t = discover::DEFAULT_WAIT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=60),
    )]
    seconds: u64,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8090).
    #[arg(long, env = "AERO_LISTEN")]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // These two work whatever the configuration holds: one prints the defaults, the other
    // loads the configuration itself and reports a broken one as a failed check.
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{}", aero_shared::settings::default_toml::<Settings>()?);
            return Ok(());
        }
        Command::Check => {
            aero_shared::settings::init_tracing(Default::default());
            let clock = aero_shared::clock::SystemClock;
            std::process::exit(
                aero_edge::ops::check::run(cli.config.as_deref(), cli.data_dir, &clock).await,
            );
        }
        _ => {}
    }
    let mut settings = Settings::load(cli.config.as_deref())?;
    aero_shared::settings::init_tracing(settings.log_format);
    if cli.data_dir.is_some() {
        settings.data_dir = cli.data_dir;
    }
    match cli.command {
        Command::PrintDefaultConfig | Command::Check => {
            unreachable!("handled before the settings load")
        }
        Command::Enroll {
            central,
            token,
            replace,
        } => {
            let data_dir = settings.data_dir();
            let credential = if replace {
                aero_edge::credential::enroll_again(&central, &token, &data_dir).await?
            } else {
                aero_edge::credential::enroll(&central, &token, &data_dir).await?
            };
            eprintln!(
                "enrolled for site {} (credential in {})",
                credential.site_id,
                aero_edge::credential::path_in(&settings.data_dir()).display()
            );
            if !replace {
                aero_edge::sync::initial::report(
                    aero_edge::sync::initial::pull_after_enroll(&settings, credential).await,
                );
            }
            Ok(())
        }
        Command::Status { json } => {
            std::process::exit(aero_edge::ops::status::run(&settings.data_dir(), json)?)
        }
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                settings.listen = listen;
            }
            // Fail before binding: an unenrolled edge has nothing to serve, and a TLS file
            // that cannot be used would fail every connection.
            aero_edge::load_credential(&settings)?;
            settings.tls.acceptor()?;
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?;
            eprintln!(
                "aero-edge serving {}://{} (data in {})",
                if settings.tls.enabled() {
                    "https"
                } else {
                    "http"
                },
                listener.local_addr()?,
                settings.data_dir().display()
            );
            aero_edge::launch(settings, listener, aero_shared::server::shutdown_signal()).await
        }
        Command::Backup { path } => {
            print!(
                "{}",
                aero_edge::backup::backup(&settings.data_dir(), &path)?
            );
            Ok(())
        }
        Command::Restore { path } => {
            let restored = aero_edge::backup::restore::restore(
                &settings.data_dir(),
                &path,
                chrono::Utc::now(),
            )?;
            print!("{restored}");
            Ok(())
        }
        Command::Plugs {
            command: PlugsCommand::Discover(args),
        } => {
            let target = SocketAddr::new(args.broadcast, args.port);
            let found = discover::discover(target, Duration::from_secs(args.seconds)).await?;
            if found.is_empty() {
                eprintln!(
                    "no plug answered at {target} within {} s; plugs answer only on the LAN \
                     they are on, so run this on the venue network with its broadcast address",
                    args.seconds
                );
                return Ok(());
            }
            print!("{}", discover::table(&found));
            println!("{}", discover::hq_hint(&found));
            Ok(())
        }
    }
}
