//! The PostgreSQL side outside the stream: the publication, the slot, its lag, and slots
//! that no pipeline claims. All over an ordinary connection.
//!
//! sinkd creates what is missing and never drops anything: a slot holds WAL on the server
//! until someone drops it, and only an operator knows whether its consumer is gone.

use serde_json::json;
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

use sinkd_core::config::capture::SLOT_PREFIX;

/// Connects an ordinary (non-replication) session; the connection task ends with it.
pub async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// `schema.table` (or `table`, in `public`) as its two parts.
pub fn split_table(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_owned(), t.to_owned()),
        None => ("public".to_owned(), name.to_owned()),
    }
}

/// A quoted SQL identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Creates the publication `FOR TABLE <tables> WITH (publish = 'insert')` when it does not
/// exist. An existing one is used as it is, but must include every table.
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[String],
) -> Result<(), String> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| format!("reading pg_publication: {e}"))?
        .is_some();
    let wanted: Vec<(String, String)> = tables.iter().map(|t| split_table(t)).collect();
    if !exists {
        let list: Vec<String> = wanted
            .iter()
            .map(|(s, t)| format!("{}.{}", quote(s), quote(t)))
            .collect();
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert')",
            quote(publication),
            list.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("creating publication `{publication}`: {}", db_message(&e)))?;
        info!(publication, ?tables, "created the publication");
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| format!("reading pg_publication_tables: {e}"))?;
    let published: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !published.contains(w))
        .map(|(s, t)| format!("{s}.{t}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "publication `{publication}` exists but does not publish {}; add them with \
             ALTER PUBLICATION {publication} ADD TABLE … (sinkd does not change a publication \
             it finds)",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// Creates the logical slot with the pgoutput plugin when it does not exist. Returns
/// whether it was created now. A new slot starts at the current end of the WAL.
pub async fn ensure_slot(client: &Client, slot: &str) -> Result<bool, String> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| format!("reading pg_replication_slots: {e}"))?;
    if let Some(row) = row {
        let plugin: Option<String> = row.get(0);
        if plugin.as_deref() != Some("pgoutput") {
            return Err(format!(
                "replication slot `{slot}` exists with plugin {plugin:?}, not pgoutput: name \
                 another slot"
            ));
        }
        return Ok(false);
    }
    client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(|e| format!("creating replication slot `{slot}`: {}", db_message(&e)))?;
    info!(slot, "created the replication slot");
    Ok(true)
}

/// The slot as the server sees it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SlotStatus {
    /// Slot name.
    pub slot: String,
    /// `confirmed_flush_lsn`: where decoding resumes after a restart.
    pub confirmed_lsn: Option<String>,
    /// WAL bytes between the server's current position and the confirmed one.
    pub lag_bytes: Option<u64>,
    /// A walsender is streaming from it now.
    pub active: bool,
}

/// Reads one slot's position and lag. `Ok(None)` when the slot does not exist.
pub async fn slot_status(client: &Client, slot: &str) -> Result<Option<SlotStatus>, String> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8, active \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| format!("reading pg_replication_slots: {e}"))?;
    Ok(row.map(|r| SlotStatus {
        slot: slot.to_owned(),
        confirmed_lsn: r.get(0),
        lag_bytes: r.get::<_, Option<f64>>(1).map(|b| b.max(0.0) as u64),
        active: r.get(2),
    }))
}

/// Slots named like sinkd's own (`sinkd_…`) that no loaded pipeline uses: most likely
/// left behind by a deleted pipeline. Each is logged with the WAL it holds; none is
/// dropped. Returns them as JSON for the status API.
pub async fn unclaimed_slots(
    client: &Client,
    claimed: &[String],
) -> Result<Vec<serde_json::Value>, String> {
    let rows = client
        .query(
            "SELECT slot_name::text, database::text, active, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 \
             FROM pg_replication_slots WHERE starts_with(slot_name, $1) ORDER BY slot_name",
            &[&SLOT_PREFIX],
        )
        .await
        .map_err(|e| format!("reading pg_replication_slots: {e}"))?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        if claimed.contains(&name) {
            continue;
        }
        let database: Option<String> = r.get(1);
        let active: bool = r.get(2);
        let retained = r.get::<_, Option<f64>>(3).map(|b| b.max(0.0) as u64);
        warn!(
            slot = %name,
            database = database.as_deref().unwrap_or("?"),
            active,
            retained_wal_bytes = retained,
            "replication slot named like sinkd's belongs to no loaded pipeline; it keeps WAL \
             on the server until dropped. If its pipeline is gone for good: SELECT \
             pg_drop_replication_slot('{name}'). sinkd never drops slots"
        );
        out.push(json!({
            "slot": name,
            "database": database,
            "active": active,
            "retained_wal_bytes": retained,
        }));
    }
    Ok(out)
}

/// The server's own message of a database error (tokio-postgres' Display says only "db
/// error").
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Reads a slot's status for the API, over its own connection (opened on first use and
/// again after a failure), at most once a second.
pub struct SlotProbe {
    url: String,
    slot: String,
    client: tokio::sync::Mutex<Option<Client>>,
    cache: std::sync::Mutex<Option<(std::time::Instant, Probed)>>,
}

type Probed = Result<Option<SlotStatus>, String>;

impl SlotProbe {
    /// A probe of `slot` on the server at `url`; connects lazily.
    pub fn new(url: &str, slot: &str) -> SlotProbe {
        SlotProbe {
            url: url.to_owned(),
            slot: slot.to_owned(),
            client: tokio::sync::Mutex::new(None),
            cache: std::sync::Mutex::new(None),
        }
    }

    /// The slot's status (`Ok(None)`: it does not exist yet).
    pub async fn status(&self) -> Probed {
        if let Some((at, r)) = &*self.cache.lock().expect("lock poisoned")
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return r.clone();
        }
        let mut client = self.client.lock().await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            *client = Some(connect(&self.url).await?);
        }
        let c = client.as_ref().expect("connected above");
        let r = slot_status(c, &self.slot).await;
        if r.is_err() {
            *client = None;
        }
        *self.cache.lock().expect("lock poisoned") = Some((std::time::Instant::now(), r.clone()));
        r
    }

    /// [`unclaimed_slots`] on this server.
    pub async fn unclaimed(&self, claimed: &[String]) -> Result<Vec<serde_json::Value>, String> {
        let c = connect(&self.url).await?;
        unclaimed_slots(&c, claimed).await
    }
}
