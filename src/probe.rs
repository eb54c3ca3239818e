//! The network probes: what berth asks a server over its own protocol to decide that it is
//! healthy. They run against the container's address on the project network, from the
//! host, and each says in a few words what it saw, for gate reasons and `berth check`.
//!
//! - `tcp`: a connection is accepted.
//! - `http`: `GET` answers 2xx, and with `expect_json` the body is a JSON object whose
//!   top-level fields have the expected values (Grafana's `/api/health` says
//!   `"database": "ok"`).
//! - `postgres`: log in with sqlx, `SELECT 1`, and count the tables outside the system
//!   schemas (the runbook's "Can execute queries (3 tables found)").
//! - `redis`: `PING` answers `PONG`; `INFO memory` gives the memory in use.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};

use crate::runtime::ProbeResult;
use crate::spec::Probe;

/// Run a tcp, http, postgres or redis probe against `ip`. Exec and docker probes need the
/// runtime and are not handled here.
pub async fn network(
    http: &reqwest::Client,
    ip: &str,
    probe: &Probe,
    timeout: Duration,
) -> ProbeResult {
    match tokio::time::timeout(timeout, run(http, ip, probe, timeout)).await {
        Ok(r) => r,
        Err(_) => ProbeResult::new(false, format!("{probe}: no answer within {timeout:?}")),
    }
}

async fn run(http: &reqwest::Client, ip: &str, probe: &Probe, timeout: Duration) -> ProbeResult {
    match probe {
        Probe::Tcp { port } => tcp(ip, *port).await,
        Probe::Http {
            port,
            path,
            expect_json,
        } => http_get(http, ip, *port, path, expect_json, timeout).await,
        Probe::Postgres {
            port,
            user,
            password,
            database,
        } => postgres(ip, *port, user, password, database).await,
        Probe::Redis { port, password } => redis_ping(ip, *port, password.as_deref()).await,
        Probe::Exec { .. } | Probe::Docker => {
            ProbeResult::new(false, format!("{probe}: not a network probe"))
        }
    }
}

/// Connected, or why not.
async fn tcp(ip: &str, port: u16) -> ProbeResult {
    let fail = |detail: String| ProbeResult::new(false, detail);
    let addr = format!("{ip}:{port}");
    match tokio::net::TcpStream::connect(&addr).await {
        Ok(_) => ProbeResult::new(true, format!("tcp {addr} connected")),
        Err(e) => fail(format!("tcp {addr}: {e}")),
    }
}

/// `GET` answers 2xx, and with `expect_json` a JSON object with those fields (the body
/// read up to [`HTTP_BODY_MAX`]).
async fn http_get(
    http: &reqwest::Client,
    ip: &str,
    port: u16,
    path: &str,
    expect_json: &BTreeMap<String, String>,
    timeout: Duration,
) -> ProbeResult {
    let fail = |detail: String| ProbeResult::new(false, detail);
    let url = format!("http://{ip}:{port}{path}");
    let r = match http.get(&url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("GET {url}: {}", error_chain(&e))),
    };
    let status = r.status();
    if !status.is_success() {
        return fail(format!("GET {url}: {status}"));
    }
    if expect_json.is_empty() {
        return ProbeResult::new(true, format!("GET {url}: {status}"));
    }
    let body = match read_bounded(r, HTTP_BODY_MAX).await {
        Ok(b) => b,
        Err(e) => return fail(format!("GET {url}: {status}, reading body: {e}")),
    };
    match json_mismatch(&body, expect_json) {
        None => ProbeResult::new(
            true,
            format!("GET {url}: {status}, {}", fields(expect_json)),
        ),
        Some(why) => fail(format!("GET {url}: {status}, but {why}")),
    }
}

/// Connects, `SELECT 1` answers 1; the table count and server version are kept as facts.
async fn postgres(ip: &str, port: u16, user: &str, password: &str, database: &str) -> ProbeResult {
    let fail = |detail: String| ProbeResult::new(false, detail);
    let opts = PgConnectOptions::new()
        .host(ip)
        .port(port)
        .username(user)
        .password(password)
        .database(database)
        .ssl_mode(PgSslMode::Disable)
        .application_name("berth-probe");
    let target = format!("postgres {user}@{ip}:{port}/{database}");
    let mut conn = match PgConnection::connect_with(&opts).await {
        Ok(c) => c,
        Err(e) => return fail(format!("{target}: connect: {}", error_chain(&e))),
    };
    let result = async {
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        )
        .fetch_one(&mut conn)
        .await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>((one, tables, version))
    }
    .await;
    let _ = conn.close().await;
    match result {
        Ok((1, tables, version)) => {
            ProbeResult::new(true, format!("{target}: SELECT 1 ok, {tables} tables"))
                .with_fact("tables", tables.to_string())
                .with_fact("server_version", version)
        }
        Ok((other, ..)) => fail(format!("{target}: SELECT 1 returned {other}")),
        Err(e) => fail(format!("{target}: query: {}", error_chain(&e))),
    }
}

/// `PING` answers `PONG`; the memory in use is kept as a fact.
async fn redis_ping(ip: &str, port: u16, password: Option<&str>) -> ProbeResult {
    let fail = |detail: String| ProbeResult::new(false, detail);
    use redis::IntoConnectionInfo;
    let target = format!("redis {ip}:{port}");
    let mut settings = redis::RedisConnectionInfo::default();
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    let info = match redis::ConnectionAddr::Tcp(ip.to_string(), port).into_connection_info() {
        Ok(i) => i.set_redis_settings(settings),
        Err(e) => return fail(format!("{target}: {e}")),
    };
    let client = match redis::Client::open(info) {
        Ok(c) => c,
        Err(e) => return fail(format!("{target}: {e}")),
    };
    let mut conn = match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => return fail(format!("{target}: connect: {e}")),
    };
    let pong: String = match redis::cmd("PING").query_async(&mut conn).await {
        Ok(p) => p,
        Err(e) => return fail(format!("{target}: PING: {e}")),
    };
    if pong != "PONG" {
        return fail(format!("{target}: PING answered {pong:?}"));
    }
    let info: String = match redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
    {
        Ok(i) => i,
        Err(e) => return fail(format!("{target}: INFO memory: {e}")),
    };
    let used = info_field(&info, "used_memory_human")
        .unwrap_or("?")
        .to_string();
    ProbeResult::new(true, format!("{target}: PONG, used_memory {used}"))
        .with_fact("used_memory", used)
}

/// How much of an HTTP probe's body is read: a health answer is small, and a container
/// that streams without end must not fill berth's memory (`docs/design.md` §12).
const HTTP_BODY_MAX: usize = 1024 * 1024;

/// The body of `r`, or an error once it passes `max` bytes.
async fn read_bounded(mut r: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("the body is larger than {} KiB", max / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `None` when `body` is a JSON object with every expected field equal; else why not.
fn json_mismatch(
    body: &[u8],
    expect: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("the body is not JSON: {e}")),
    };
    for (k, want) in expect {
        match v.get(k) {
            Some(serde_json::Value::String(s)) if s == want => {}
            Some(other) => return Some(format!("{k} is {other}, expected {want:?}")),
            None => return Some(format!("the body has no {k:?} field")),
        }
    }
    None
}

fn fields(expect: &std::collections::BTreeMap<String, String>) -> String {
    expect
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `key:value` line of Redis `INFO` output.
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// An error with its sources, for reasons a person can act on.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_must_match() {
        let want = [("database".to_string(), "ok".to_string())].into();
        assert_eq!(
            json_mismatch(br#"{"database": "ok", "version": "10.4.2"}"#, &want),
            None
        );
        assert_eq!(
            json_mismatch(br#"{"database": "failing"}"#, &want).unwrap(),
            r#"database is "failing", expected "ok""#
        );
        assert!(
            json_mismatch(b"<html>", &want)
                .unwrap()
                .starts_with("the body is not JSON")
        );
        assert_eq!(
            json_mismatch(b"{}", &want).unwrap(),
            r#"the body has no "database" field"#
        );
    }

    #[test]
    fn redis_info_fields() {
        let info = "# Memory\r\nused_memory:1015000\r\nused_memory_human:991.21K\r\n";
        assert_eq!(info_field(info, "used_memory_human"), Some("991.21K"));
        assert_eq!(info_field(info, "used_memory"), Some("1015000"));
        assert_eq!(info_field(info, "maxmemory"), None);
    }
}
