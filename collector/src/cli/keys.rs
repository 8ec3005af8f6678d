//! `tollgate keys`: create, list and revoke keys through the admin API.

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use serde_json::{Value, json};

use super::ClientError;
use super::args::{AdminArgs, KeysCommand};

/// Runs a `keys` subcommand; returns what to print.
pub async fn run_keys(command: &KeysCommand) -> Result<String, ClientError> {
    match command {
        KeysCommand::Generate => Ok(tollgate_gateway::generate_key()),
        KeysCommand::List(admin) => {
            let body = call(admin, reqwest::Method::GET, "/admin/v1/keys", None).await?;
            if admin.json {
                return Ok(body.to_string());
            }
            Ok(table(
                body["keys"].as_array().map_or(&[][..], Vec::as_slice),
            ))
        }
        KeysCommand::Revoke(args) => {
            let path = format!("/admin/v1/keys/{}", args.id);
            let body = call(&args.admin, reqwest::Method::DELETE, &path, None).await?;
            if args.admin.json {
                return Ok(body.to_string());
            }
            Ok(format!("revoked {}", args.id))
        }
        KeysCommand::Create(args) => {
            for r in &args.roles {
                if tollgate_gateway::Role::parse(r.trim()).is_none() {
                    return Err(ClientError::BadRole(r.clone()));
                }
            }
            let mut new = json!({
                "roles": args.roles.iter().map(|r| r.trim()).collect::<Vec<_>>(),
                "allowed_models": args.allowed_models,
            });
            for (field, value) in [
                ("name", &args.name),
                ("org", &args.org),
                ("project", &args.project),
                ("user", &args.user),
                ("expires_in", &args.expires_in),
            ] {
                if let Some(v) = value {
                    new[field] = json!(v);
                }
            }
            let body = call(
                &args.admin,
                reqwest::Method::POST,
                "/admin/v1/keys",
                Some(new),
            )
            .await?;
            if args.admin.json {
                return Ok(body.to_string());
            }
            let info = &body["info"];
            Ok(format!(
                "{}\n\nid {} (roles: {}); the key is shown once: only its hash is kept",
                body["key"].as_str().unwrap_or_default(),
                info["id"].as_str().unwrap_or_default(),
                roles(info)
            ))
        }
    }
}

async fn call(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    let token = admin.admin_token.as_deref().ok_or(ClientError::NoToken)?;
    let url = format!("{}{path}", admin.api.trim_end_matches('/'));
    let client = super::http_client(admin.ca_file.as_deref()).map_err(ClientError::Tls)?;
    let mut request = client.request(method, &url).bearer_auth(token);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let body = super::send(request, &admin.api).await?;
    Ok(body)
}

fn roles(info: &Value) -> String {
    info["roles"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn table(keys: &[Value]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["id", "name", "roles", "org", "project", "user", "state"]);
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    for k in keys {
        let state = if k["revoked_unix_nanos"].is_i64() {
            "revoked"
        } else if k["from_config"].as_bool() == Some(true) {
            "config"
        } else {
            "active"
        };
        t.add_row([
            text(&k["id"]),
            text(&k["name"]),
            roles(k),
            text(&k["org"]),
            text(&k["project"]),
            text(&k["user"]),
            state.to_owned(),
        ]);
    }
    t.to_string()
}
