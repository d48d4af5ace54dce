//! The `onramp` command line: `serve`, `config show` and the admin commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use onramp::config::{Config, LogFormat};
use toml::{Table, Value};

#[derive(Parser)]
#[command(
    name = "onramp",
    version,
    about = "Self-hosted device provisioning service (Azure DPS compatible)"
)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Command,
}

/// Flags override the config file and the environment.
#[derive(Args)]
struct Flags {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, generated certificates) [default: ./data]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite:... or postgres://... [default: SQLite in the data dir]
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Host name devices and operators use [default: localhost]
    #[arg(long, global = true)]
    hostname: Option<String>,
    /// [default: 8443]
    #[arg(long, global = true, value_name = "PORT")]
    https_port: Option<i64>,
    /// [default: 8883]
    #[arg(long, global = true, value_name = "PORT")]
    mqtt_port: Option<i64>,
    /// [default: 5671]
    #[arg(long, global = true, value_name = "PORT")]
    amqp_port: Option<i64>,
    /// human or json [default: human]
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Administer an instance (works on the store; no running server needed).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Show,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Print the ID scope, service connection string, URLs and linked hubs.
    Info {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

impl Flags {
    /// The flags that were given, as a TOML table laid over the other sources.
    fn overrides(&self) -> Table {
        let mut table = Table::new();
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                table.insert(key.into(), value);
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| Value::String(p.display().to_string()));
        set("data_dir", path(&self.data_dir));
        set("database_url", self.database_url.clone().map(Value::String));
        set("hostname", self.hostname.clone().map(Value::String));
        set("https_port", self.https_port.map(Value::Integer));
        set("mqtt_port", self.mqtt_port.map(Value::Integer));
        set("amqp_port", self.amqp_port.map(Value::Integer));
        set("log_format", self.log_format.clone().map(Value::String));
        table
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ONRAMP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(
        cli.flags.config.as_deref(),
        std::env::vars(),
        cli.flags.overrides(),
    ) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("onramp: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onramp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            init_logging(config.log_format);
            onramp::service::serve(config).await
        }
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Admin(AdminCommand::Info { json }) => {
            let prepared = onramp::service::prepare(config).await?;
            let state = &prepared.state;
            let info = onramp::bootstrap::admin_info(
                state.store.as_ref(),
                &state.config,
                &state.instance,
                prepared.tls.ca_path.as_deref(),
            )
            .await?;
            state.store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("ID scope:           {}", info.id_scope);
                println!("Service connection: {}", info.service_connection_string);
                println!(
                    "CA certificate:     {}",
                    info.ca_cert_path
                        .as_deref()
                        .unwrap_or("(operator-supplied)")
                );
                println!("HTTPS:              {}", info.https_url);
                println!("MQTT:               {}", info.mqtt_url);
                println!("AMQP:               {}", info.amqp_url);
                for hub in &info.hubs {
                    println!(
                        "Hub:                {} ({:?}, weight {})",
                        hub.host_name, hub.connector, hub.allocation_weight
                    );
                }
            }
            Ok(())
        }
    }
}
