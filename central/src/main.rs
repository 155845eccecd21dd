//! `aero-central` command line: serve, migrate, and bootstrap staff users.

use aero_central::config::Settings;
use aero_central::routes::users::{NewUser, new_user_record};
use aero_central::store::Actor;
use aero_shared::auth::principal::Role;
use aero_shared::validate::{Validate, Validator};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "aero-central", version, about = "AeroSports HQ service")]
struct Cli {
    /// Data directory (SQLite database, generated secrets).
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
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Write a consistent, checked copy of the SQLite database to PATH, while central serves.
    Backup {
        path: PathBuf,
        #[arg(long, env = "AERO_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Print the compiled default settings as TOML (a starting point for the config file).
    PrintDefaultConfig,
    /// Manage staff users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List the sites with their venues' sync health.
    Sites(ListArgs),
    /// List a site's devices (never their keys).
    Devices {
        /// The site whose devices to list.
        #[arg(long = "site", value_name = "SITE_ID")]
        site_id: Uuid,
        #[command(flatten)]
        list: ListArgs,
    },
}

#[derive(Args)]
struct ListArgs {
    /// Print JSON for machines instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, env = "AERO_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "AERO_LISTEN")]
    listen: Option<SocketAddr>,
    /// SQLite path or an ADO.NET SQL Server connection string.
    #[arg(long, env = "AERO_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a staff user; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A site the user works at (managers and staff); repeatable.
        #[arg(long = "site")]
        sites: Vec<Uuid>,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long, env = "AERO_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| "one of owner, admin, manager, staff".to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::PrintDefaultConfig = cli.command {
        print!("{}", aero_shared::settings::default_toml::<Settings>()?);
        return Ok(());
    }
    let mut settings = Settings::load(cli.config.as_deref())?;
    aero_shared::settings::init_tracing(settings.log_format);
    if cli.data_dir.is_some() {
        settings.data_dir = cli.data_dir;
    }
    match cli.command {
        Command::PrintDefaultConfig => unreachable!("handled before the settings load"),
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                settings.listen = listen;
            }
            if let Some(url) = args.database_url {
                settings.database_url = Some(url.into());
            }
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?;
            let url = settings
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", settings.listen));
            eprintln!(
                "aero-central serving {url} (listening on {}, data in {})",
                listener.local_addr()?,
                settings.data_dir().display()
            );
            aero_central::launch(settings, listener, aero_shared::server::shutdown_signal()).await
        }
        Command::Migrate => {
            aero_central::open_store(&settings).await?;
            tracing::info!("database is up to date");
            Ok(())
        }
        Command::Backup { path, database_url } => {
            if let Some(url) = database_url {
                settings.database_url = Some(url.into());
            }
            print!("{}", aero_central::backup::backup(&settings, &path)?);
            Ok(())
        }
        Command::Sites(list) => {
            let store = open_for_listing(settings, list.database_url).await?;
            aero_central::ops::sites::run(store.as_ref(), list.json).await
        }
        Command::Devices { site_id, list } => {
            let store = open_for_listing(settings, list.database_url).await?;
            aero_central::ops::devices::run(store.as_ref(), site_id, list.json).await
        }
        Command::User {
            command:
                UserCommand::Create {
                    username,
                    role,
                    sites,
                    password_stdin: _,
                    database_url,
                },
        } => {
            if let Some(url) = database_url {
                settings.database_url = Some(url.into());
            }
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            let request = NewUser {
                username,
                password: SecretString::from(password),
                role,
                site_ids: sites,
            };
            let mut v = Validator::new();
            request.validate(&mut v);
            if let Err(aero_shared::ApiError::Validation(errors)) = v.finish() {
                for e in &errors {
                    eprintln!("{}: {}", e.field, e.message);
                }
                anyhow::bail!("invalid user");
            }
            let store = aero_central::open_store(&settings).await?;
            for site in &request.site_ids {
                anyhow::ensure!(
                    store.get_site(*site).await?.is_some(),
                    "no such site {site}"
                );
            }
            let user = new_user_record(request, chrono::Utc::now())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store
                .create_user(&Actor::system("aero-central user create"), &user)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", user.id);
            Ok(())
        }
    }
}

async fn open_for_listing(
    mut settings: Settings,
    database_url: Option<String>,
) -> anyhow::Result<std::sync::Arc<dyn aero_central::store::Store>> {
    if let Some(url) = database_url {
        settings.database_url = Some(url.into());
    }
    aero_central::open_store(&settings).await
}
