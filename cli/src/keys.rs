//! `watchtrail keys`: API keys, through a server (an admin key of the tenant) or straight in a
//! store (`--store`: whoever can write the bucket can make keys of any tenant, the way an
//! operator makes the first ones).

use anyhow::bail;
use serde_json::{Value, json};

use super::alarms::{Api, print};
use super::client::ConnectionArgs;
use watchtrail_storage::keys::{KeyStore, Role};
use watchtrail_storage::store::Storage;

/// `watchtrail keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Makes a key; prints its token (the only time it is shown) on standard output and what
    /// it is on standard error. The tenant is `--tenant`, else the caller's (or `default`).
    Create {
        /// What the key may do.
        #[arg(long, value_enum)]
        role: Role,
        /// Who or what holds the key.
        #[arg(long, default_value = "")]
        description: String,
        /// Also issue AWS credentials (SigV4) for the key, and print it as a profile of an AWS
        /// credentials file (`AWS_SHARED_CREDENTIALS_FILE` can point at the output); the token
        /// is kept in a comment line of it.
        #[arg(long, conflicts_with = "store")]
        aws_credentials: bool,
        /// The profile name of `--aws-credentials` output.
        #[arg(long, default_value = "default", requires = "aws_credentials")]
        profile: String,
        /// Write the key straight into this store instead of asking a server.
        #[arg(long)]
        store: Option<String>,
    },
    /// Lists keys (ids, tenants, roles, descriptions; never a secret).
    List {
        /// Read this store instead of asking a server (every tenant's keys).
        #[arg(long)]
        store: Option<String>,
    },
    /// Revokes a key by its id.
    Revoke {
        /// The key id (16 hex digits: the part after `wt_`).
        key_id: String,
        /// Revoke in this store instead of asking a server.
        #[arg(long)]
        store: Option<String>,
    },
}

fn key_store(url: &str) -> anyhow::Result<KeyStore> {
    let storage = Storage::from_url(url)?;
    Ok(KeyStore::new(storage.object_store(), storage.base_path()))
}

fn announce(v: &Value) {
    eprintln!(
        "created key {} (tenant {}, role {}); keep its token secret, it is not shown again",
        v["keyId"].as_str().unwrap_or("?"),
        v["tenant"].as_str().unwrap_or("?"),
        v["role"].as_str().unwrap_or("?"),
    );
}

/// Runs `watchtrail keys`.
///
/// # Errors
/// A refusal by the server or the store, or either unreachable.
pub async fn keys(conn: &ConnectionArgs, cmd: KeysCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        KeysCommand::Create {
            role,
            description,
            store: Some(url),
            ..
        } => {
            let (record, token) = key_store(&url)?
                .create(&conn.store_tenant()?, role, &description)
                .await?;
            announce(&record.public());
            println!("{token}");
        }
        KeysCommand::Create {
            role,
            description,
            aws_credentials,
            profile,
            store: None,
        } => {
            let mut body = json!({"role": role, "description": description});
            if aws_credentials {
                if profile.is_empty() || profile.contains([']', '\n', '\r']) {
                    bail!("--profile: `{profile}` cannot be a profile name");
                }
                body["awsCredentials"] = Value::Bool(true);
            }
            if let Some(t) = &conn.tenant {
                body["tenant"] = Value::String(t.clone());
            }
            let v = Api::new(conn)?
                .call(Method::POST, &["v1", "keys"], &[], Some(&body))
                .await?;
            announce(&v);
            let Some(token) = v["token"].as_str() else {
                bail!("the server's answer holds no token");
            };
            if aws_credentials {
                let (Some(id), Some(secret)) = (
                    v["awsAccessKeyId"].as_str(),
                    v["awsSecretAccessKey"].as_str(),
                ) else {
                    bail!("the server's answer holds no AWS credentials");
                };
                println!("[{profile}]");
                println!("aws_access_key_id = {id}");
                println!("aws_secret_access_key = {secret}");
                println!("# watchtrail token: {token}");
            } else {
                println!("{token}");
            }
        }
        KeysCommand::List { store: Some(url) } => {
            let keys: Vec<Value> = key_store(&url)?
                .list()
                .await?
                .iter()
                .filter(|k| conn.tenant.as_ref().is_none_or(|t| *t == k.tenant))
                .map(watchtrail_storage::keys::KeyRecord::public)
                .collect();
            print(&json!({ "keys": keys }));
        }
        KeysCommand::List { store: None } => {
            print(
                &Api::new(conn)?
                    .call(Method::GET, &["v1", "keys"], &[], None)
                    .await?,
            );
        }
        KeysCommand::Revoke {
            key_id,
            store: Some(url),
        } => {
            if !key_store(&url)?.revoke(&key_id).await? {
                bail!("key {key_id} does not exist");
            }
            println!("key {key_id} revoked");
        }
        KeysCommand::Revoke {
            key_id,
            store: None,
        } => {
            Api::new(conn)?
                .call(Method::DELETE, &["v1", "keys", &key_id], &[], None)
                .await?;
            println!("key {key_id} revoked");
        }
    }
    Ok(())
}
