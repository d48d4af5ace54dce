//! The `onramp` command line: `serve`, `config show` and the admin commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use onramp::config::{Config, LogFormat};
use toml::{Table, Value};

#[path = "cli/credentials.rs"]
mod credentials;

/// mimalloc: glibc's malloc took about a tenth of the server's CPU under load (TLS records and
/// frames are many short-lived buffers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Where /metrics is served (plain HTTP); empty turns metrics off [default: 127.0.0.1:9464]
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    metrics_address: Option<String>,
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
    /// Bulk import and export of individual enrollments (works on the store).
    #[command(subcommand)]
    Enrollments(EnrollmentsCommand),
}

#[derive(Subcommand)]
enum EnrollmentsCommand {
    /// Import a .csv or JSON-lines file; an interrupted import of the same file resumes.
    Import {
        file: PathBuf,
        /// Start from the first row even if a checkpoint exists.
        #[arg(long)]
        restart: bool,
    },
    /// Create COUNT enrollments `{prefix}0000000`.. with generated keys (demos, benchmarks).
    Seed {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "seed-")]
        prefix: String,
    },
    /// Export every individual enrollment (keys included).
    Export {
        /// Output file (.csv for CSV); standard output when absent.
        #[arg(long)]
        output: Option<PathBuf>,
        /// csv or jsonl (default: from --output, else jsonl).
        #[arg(long)]
        format: Option<String>,
    },
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
    /// Shared access policies of the service API (JSON output).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Linked hubs (JSON output).
    #[command(subcommand)]
    Hub(HubCommand),
    /// Console users.
    #[command(subcommand)]
    User(UserCommand),
    /// CA certificates for X.509 enrollment groups, with proof of possession (JSON output).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Credential policies: how devices that send a CSR get certificates (JSON output).
    #[command(subcommand)]
    CredentialPolicy(CredentialPolicyCommand),
    /// Issuers: CAs with their keys that sign for credential policies (JSON output).
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// A device's issued certificates, and their revocation (JSON output).
    #[command(subcommand)]
    Certificate(CertificateCommand),
}

#[derive(Subcommand)]
enum CredentialPolicyCommand {
    List,
    /// Create or replace a policy; enrollments name it in `credentialPolicyName`.
    Set {
        name: String,
        /// The issuer that signs: the instance's own (`onramp`) or an uploaded one.
        #[arg(long, default_value = "onramp")]
        issuer: String,
        #[arg(long, default_value_t = 90)]
        validity_days: u32,
        /// Comma-separated: ecP256,ecP384,rsa2048,rsa3072,ed25519
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ecP256,ecP384,rsa2048,rsa3072"
        )]
        key_types: Vec<String>,
        /// How long before expiry a device may renew with its issued certificate.
        #[arg(long, default_value_t = 30)]
        renewal_window_days: u32,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum IssuerCommand {
    List,
    /// Upload an intermediate CA (PEM chain, the CA first) with its private key (PEM) as NAME;
    /// it also becomes a verified CA for X.509 groups (renewal).
    Add {
        name: String,
        chain: PathBuf,
        key: PathBuf,
    },
    Remove {
        name: String,
    },
}

#[derive(Subcommand)]
enum CertificateCommand {
    /// The certificates issued to a device, newest first.
    List { registration_id: String },
    /// Revoke one (--serial) or all of a device's certificates; they join the issuer's CRL.
    Revoke {
        registration_id: String,
        #[arg(long)]
        serial: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    List,
    /// Upload a CA certificate (PEM file) under NAME; it authenticates devices once verified.
    Add {
        name: String,
        file: PathBuf,
        /// Trust it without proof of possession (Azure's "verified on upload").
        #[arg(long)]
        verified: bool,
    },
    /// Issue the verification code: sign a certificate with this subject CN with the CA's key.
    Code {
        name: String,
    },
    /// Verify the CA with the signed certificate for its code (PEM file).
    Verify {
        name: String,
        file: PathBuf,
    },
    Remove {
        name: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, or set an existing user's password and role.
    Create {
        username: String,
        /// viewer, operator or admin
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Read the password from standard input; otherwise one is generated and printed.
        #[arg(long)]
        password_stdin: bool,
    },
    List,
}

#[derive(Subcommand)]
enum PolicyCommand {
    List,
    /// Create a policy (fresh keys) or change its rights.
    Set {
        name: String,
        /// Comma-separated: ServiceConfig,EnrollmentRead,EnrollmentWrite,RegistrationStatusRead,RegistrationStatusWrite
        #[arg(long, value_delimiter = ',', required = true)]
        rights: Vec<String>,
    },
    /// Replace the primary (or --secondary) key.
    Rekey {
        name: String,
        #[arg(long)]
        secondary: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum HubCommand {
    List,
    /// Link a hub, or change its settings.
    Set {
        host: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Only use this hub when an enrollment names it.
        #[arg(long)]
        no_allocation: bool,
    },
    Remove {
        host: String,
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
        set(
            "metrics_address",
            self.metrics_address.clone().map(Value::String),
        );
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
        Command::Enrollments(command) => enrollments(config, command).await,
        Command::Admin(AdminCommand::Policy(command)) => admin_policy(config, command).await,
        Command::Admin(AdminCommand::Hub(command)) => admin_hub(config, command).await,
        Command::Admin(AdminCommand::User(command)) => admin_user(config, command).await,
        Command::Admin(AdminCommand::Ca(command)) => admin_ca(config, command).await,
        Command::Admin(AdminCommand::CredentialPolicy(command)) => {
            credentials::policy(config, command).await
        }
        Command::Admin(AdminCommand::Issuer(command)) => credentials::issuer(config, command).await,
        Command::Admin(AdminCommand::Certificate(command)) => {
            credentials::certificate(config, command).await
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

/// Reads a file an admin command names.
fn read_file(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Changes made here are audited as the operator at the terminal: their login name, else their uid.
fn cli_actor() -> onramp::model::Actor {
    use std::os::unix::fs::MetadataExt;
    let name = ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            let uid = std::fs::metadata("/proc/self").ok()?.uid();
            Some(format!("uid {uid}"))
        })
        .unwrap_or_else(|| "unknown".into());
    onramp::model::Actor::cli(&name)
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

async fn admin_policy(config: Config, command: PolicyCommand) -> anyhow::Result<()> {
    use onramp::domain::admin::{self, KeySlot};
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin, actor) = (
        prepared.state.store.as_ref(),
        &prepared.state.admin,
        cli_actor(),
    );
    let show = |p: &onramp::model::AccessPolicy| {
        serde_json::json!({
            "name": p.name,
            "rights": p.rights.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "primaryKey": p.primary_key,
            "secondaryKey": p.secondary_key,
        })
    };
    match command {
        PolicyCommand::List => {
            let names: Vec<_> = store.list_policies().await?.iter().map(show).collect();
            print_json(&serde_json::json!(names));
        }
        PolicyCommand::Set { name, rights } => {
            let rights = admin::parse_rights(&rights)?;
            let policy = admin.put_policy(&actor, &name, rights).await?;
            print_json(&show(&policy));
        }
        PolicyCommand::Rekey { name, secondary } => {
            let slot = if secondary {
                KeySlot::Secondary
            } else {
                KeySlot::Primary
            };
            print_json(&show(&admin.rekey_policy(&actor, &name, slot).await?));
        }
        PolicyCommand::Delete { name } => admin.delete_policy(&actor, &name).await?,
    }
    store.close().await;
    Ok(())
}

async fn admin_ca(config: Config, command: CaCommand) -> anyhow::Result<()> {
    use onramp::domain::ca;
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin, actor) = (
        prepared.state.store.as_ref(),
        &prepared.state.admin,
        cli_actor(),
    );
    match command {
        CaCommand::List => {
            let cas = store.list_ca_certificates().await?;
            print_json(&serde_json::json!(
                cas.iter().map(ca::view).collect::<Vec<_>>()
            ));
        }
        CaCommand::Add {
            name,
            file,
            verified,
        } => print_json(&ca::view(
            &admin
                .put_ca(&actor, &name, &read_file(&file)?, verified)
                .await?,
        )),
        CaCommand::Code { name } => {
            print_json(&ca::view(&admin.generate_ca_code(&actor, &name).await?))
        }
        CaCommand::Verify { name, file } => print_json(&ca::view(
            &admin.verify_ca(&actor, &name, &read_file(&file)?).await?,
        )),
        CaCommand::Remove { name } => admin.delete_ca(&actor, &name).await?,
    }
    store.close().await;
    Ok(())
}

async fn admin_hub(config: Config, command: HubCommand) -> anyhow::Result<()> {
    use onramp::domain::admin::HubSettings;
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin, actor) = (
        prepared.state.store.as_ref(),
        &prepared.state.admin,
        cli_actor(),
    );
    match command {
        HubCommand::List => print_json(&serde_json::to_value(store.list_hubs().await?)?),
        HubCommand::Set {
            host,
            region,
            weight,
            no_allocation,
        } => {
            let settings = HubSettings {
                region,
                allocation_weight: weight,
                apply_allocation_policy: !no_allocation,
                ..HubSettings::default()
            };
            print_json(&serde_json::to_value(
                admin.put_hub(&actor, &host, settings).await?,
            )?);
        }
        HubCommand::Remove { host } => admin.delete_hub(&actor, &host).await?,
    }
    store.close().await;
    Ok(())
}

async fn admin_user(config: Config, command: UserCommand) -> anyhow::Result<()> {
    use onramp::domain::console_users;
    use onramp::model::Role;
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin, actor) = (
        prepared.state.store.as_ref(),
        &prepared.state.admin,
        cli_actor(),
    );
    match command {
        UserCommand::Create {
            username,
            role,
            password_stdin,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("--role {role:?} is not viewer, operator or admin")
            })?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                let generated = console_users::generate_password();
                println!("password: {generated}");
                generated
            };
            let user = admin.put_user(&actor, &username, &password, role).await?;
            eprintln!("user {} ({})", user.username, user.role.as_str());
        }
        UserCommand::List => {
            let users: Vec<_> = store
                .list_users()
                .await?
                .into_iter()
                .map(|u| {
                    serde_json::json!({
                        "username": u.username,
                        "role": u.role.as_str(),
                        "disabled": u.disabled,
                    })
                })
                .collect();
            print_json(&serde_json::json!(users));
        }
    }
    store.close().await;
    Ok(())
}

/// A progress bar on standard error.
fn draw_progress(done: u64, total: u64, started: std::time::Instant) {
    let share = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = (share * 30.0) as usize;
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
    eprint!(
        "\r[{}{}] {:>3.0}% {done}/{total} rows, {rate:.0}/s",
        "#".repeat(filled),
        ".".repeat(30 - filled),
        share * 100.0
    );
}

async fn enrollments(config: Config, command: EnrollmentsCommand) -> anyhow::Result<()> {
    use onramp::bulk::{self, Format};
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin, actor) = (
        prepared.state.store.as_ref(),
        &prepared.state.admin,
        cli_actor(),
    );
    match command {
        EnrollmentsCommand::Import { file, restart } => {
            let started = std::time::Instant::now();
            let report = bulk::import(admin, &actor, &file, !restart, |done, total| {
                draw_progress(done, total, started)
            })
            .await?;
            eprintln!();
            print_json(&serde_json::json!({
                "imported": report.imported,
                "failed": report.failed,
                "resumedFrom": report.resumed_from,
                "seconds": report.elapsed.as_secs_f64(),
                "errorsFile": report.errors_file,
            }));
            if report.failed > 0 {
                // Scripts see refused rows in the exit status; the rest of the file is imported.
                anyhow::bail!("{} row(s) refused; see the errors file", report.failed);
            }
        }
        EnrollmentsCommand::Seed { count, prefix } => {
            let started = std::time::Instant::now();
            let seeded = bulk::seed(admin, &actor, count, &prefix, |done, total| {
                draw_progress(done, total, started)
            })
            .await?;
            eprintln!();
            print_json(&serde_json::json!({
                "seeded": seeded,
                "seconds": started.elapsed().as_secs_f64(),
            }));
        }
        EnrollmentsCommand::Export { output, format } => {
            let format = match format.as_deref() {
                Some("csv") => Format::Csv,
                Some("jsonl") => Format::JsonLines,
                Some(other) => anyhow::bail!("unknown export format {other:?}: csv or jsonl"),
                None => output.as_deref().map_or(Format::JsonLines, Format::of),
            };
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let count = bulk::export(store, &mut out, format).await?;
            eprintln!("exported {count} enrollments");
        }
    }
    store.close().await;
    Ok(())
}
