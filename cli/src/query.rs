//! `watchtrail query`: SQL against a server (gRPC, committed and buffered rows) or straight
//! against a store (committed rows only), printed as a table, CSV, JSON or NDJSON; with no SQL,
//! an interactive shell.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use watchtrail_proto::v1::QueryRequest;
use watchtrail_proto::v1::query_response::Payload;
use watchtrail_proto::v1::query_service_client::QueryServiceClient;

use super::client::{ConnectionArgs, Credentials};
use watchtrail_query::engine::{Engine, EngineConfig, QueryResult, QueryStats};
use watchtrail_query::output::{self, Format};
use watchtrail_query::units::{parse_bytes, parse_duration};
use watchtrail_storage::store::Storage;

/// Where queries go: a server, or a store read directly.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Read a store directly (`file:///dir`, `s3://bucket/prefix`) instead of asking a server.
    /// Sees committed rows only: a server's rows younger than its flush age are not there yet.
    #[arg(long, env = "WATCHTRAIL_QUERY_STORE")]
    pub store: Option<String>,
    /// With --store: memory a query may use before it spills or fails.
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// With --store: how long a query may run.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `watchtrail query` flags.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// One SQL statement. Without it, an interactive shell starts.
    pub sql: Option<String>,
    /// How to print the answer.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print the query's statistics (files scanned, bytes read, rows, time) to standard error.
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// A server or a store, for one tenant.
#[derive(Debug)]
pub enum Backend {
    /// A server's query service.
    Server {
        /// The client.
        client: QueryServiceClient<Channel>,
        /// The API key and tenant headers.
        credentials: Credentials,
    },
    /// A store, read by a local engine.
    Store {
        /// The engine.
        engine: Engine,
        /// The tenant.
        tenant: String,
    },
}

impl Backend {
    /// The backend the flags name.
    ///
    /// # Errors
    /// A bad server address, store URL or tenant name.
    pub fn new(conn: &ConnectionArgs, args: &BackendArgs) -> anyhow::Result<Self> {
        if let Some(url) = &args.store {
            let storage = Storage::from_url(url)?;
            let config = EngineConfig {
                memory_limit: usize::try_from(args.memory_limit).unwrap_or(usize::MAX),
                timeout: args.timeout,
                ..EngineConfig::default()
            };
            return Ok(Backend::Store {
                engine: Engine::for_store(&storage, config),
                tenant: conn.store_tenant()?,
            });
        }
        let endpoint = conn
            .grpc_endpoint()?
            .connect_timeout(Duration::from_secs(5));
        let client = QueryServiceClient::new(endpoint.connect_lazy())
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(256 << 20);
        Ok(Backend::Server {
            client,
            credentials: conn.credentials()?,
        })
    }

    /// Runs one statement and gathers the answer.
    ///
    /// # Errors
    /// The query's error, with the server's message.
    pub async fn run(&self, sql: &str) -> anyhow::Result<QueryResult> {
        match self {
            Backend::Store { engine, tenant } => Ok(engine.collect(tenant, sql).await?),
            Backend::Server {
                client,
                credentials,
            } => {
                let mut req = tonic::Request::new(QueryRequest {
                    sql: sql.to_string(),
                });
                credentials.apply(req.metadata_mut());
                let mut stream = client
                    .clone()
                    .query(req)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                let mut ipc = Vec::new();
                let mut stats = QueryStats::default();
                while let Some(msg) = stream.message().await.map_err(status_error)? {
                    match msg.payload {
                        Some(Payload::ArrowIpc(b)) => ipc.extend_from_slice(&b),
                        Some(Payload::Stats(s)) => {
                            stats = QueryStats {
                                files_total: s.files_total,
                                files_scanned: s.files_scanned,
                                bytes_scanned: s.bytes_scanned,
                                buffered_rows_scanned: s.buffered_rows_scanned,
                                rows: s.rows,
                                elapsed_ms: s.elapsed_ms,
                            }
                        }
                        None => {}
                    }
                }
                let reader =
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
                        .context("the server's answer is not an Arrow IPC stream")?;
                let schema = reader.schema();
                let batches = reader
                    .collect::<Result<Vec<_>, _>>()
                    .context("reading the server's Arrow batches")?;
                Ok(QueryResult {
                    schema,
                    batches,
                    stats,
                })
            }
        }
    }
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::PermissionDenied
        | tonic::Code::ResourceExhausted
        | tonic::Code::DeadlineExceeded => anyhow::anyhow!("{}", s.message()),
        tonic::Code::Unavailable => {
            anyhow::anyhow!(
                "server unavailable: {} (is watchtrail-server running? see --server)",
                s.message()
            )
        }
        code => anyhow::anyhow!("{code:?}: {}", s.message()),
    }
}

/// Prints an answer to standard output.
///
/// # Errors
/// Output errors.
pub fn print(result: &QueryResult, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    output::write(format, &result.schema, &result.batches, &mut out)?;
    if format == Format::Json {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

fn print_stats(stats: &QueryStats) {
    eprintln!(
        "{} rows, {} of {} files scanned, {} bytes read, {} buffered rows, {} ms",
        stats.rows,
        stats.files_scanned,
        stats.files_total,
        stats.bytes_scanned,
        stats.buffered_rows_scanned,
        stats.elapsed_ms
    );
}

/// Runs `watchtrail query`.
///
/// # Errors
/// The query's error.
pub async fn query(conn: &ConnectionArgs, args: QueryArgs) -> anyhow::Result<()> {
    let backend = Backend::new(conn, &args.backend)?;
    match &args.sql {
        Some(sql) => {
            let result = backend.run(sql).await?;
            print(&result, args.format)?;
            if args.stats {
                print_stats(&result.stats);
            }
            Ok(())
        }
        None => shell(&backend, args.format).await,
    }
}

/// The interactive shell: statements end with `;` and may span lines; history is kept in
/// `~/.watchtrail_history`.
async fn shell(backend: &Backend, format: Format) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".watchtrail_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!(
        "Watchtrail SQL shell. End statements with `;`. Tables: metrics, logs, audit. \\q quits."
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "watchtrail> "
        } else {
            "        ..> "
        };
        let line = match tokio::task::block_in_place(|| editor.readline(prompt)) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if statement.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit" | "quit;" | "exit;") {
            break;
        }
        if trimmed.is_empty() {
            continue;
        }
        if !statement.is_empty() {
            statement.push('\n');
        }
        statement.push_str(&line);
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(statement.as_str());
        let sql = statement.trim().trim_end_matches(';').to_string();
        statement.clear();
        match backend.run(&sql).await {
            Ok(r) => {
                print(&r, format)?;
                print_stats(&r.stats);
            }
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}
