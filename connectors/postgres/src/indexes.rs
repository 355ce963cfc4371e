//! The live table's secondary indexes (users add them for their queries; sinkd creates
//! none) and their copies on a rebuild's shadow.
//!
//! A copy is built on the filled shadow while the live table still serves
//! ([`sinkd_core::sink::TargetAdmin::prepare_swap`]), under the name
//! `sinkd_shadow_idx_<live index OID>`, so it never collides with a user's name. The swap
//! then only renames it to the live index's name once the old table is dropped. An index
//! the user adds after that point has no copy and is built inside the swap, as a fallback.

use std::collections::BTreeSet;

use sinkd_core::error::SinkError;
use tokio_postgres::GenericClient;

use crate::{classify, ident};

/// What names a shadow copy.
const COPY_PREFIX: &str = "sinkd_shadow_idx_";

/// One secondary index of the live table.
pub(crate) struct LiveIndex {
    /// Its name, unquoted.
    pub name: String,
    /// `pg_get_indexdef`: the DDL that builds it on the live table.
    pub def: String,
    /// The definition after the table's name (`USING btree (customer) WHERE …`), when
    /// `def` has the form PostgreSQL documents; without it no copy is built early.
    body: Option<String>,
    unique: bool,
    oid: u32,
}

impl LiveIndex {
    /// The name of its copy on the shadow.
    pub fn copy_name(&self) -> String {
        format!("{COPY_PREFIX}{}", self.oid)
    }

    /// The DDL that builds its copy on `shadow` (qualified), if it can be derived.
    pub fn build_copy_on(&self, shadow: &str) -> Option<String> {
        let body = self.body.as_ref()?;
        Some(format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {shadow} {body}",
            if self.unique { "UNIQUE " } else { "" },
            ident(&self.copy_name()),
        ))
    }
}

/// The secondary indexes of `table` (qualified).
pub(crate) async fn secondary(
    client: &impl GenericClient,
    table: &str,
) -> Result<Vec<LiveIndex>, SinkError> {
    // pg_get_indexdef always qualifies the table (generate_qualified_relation_name), so
    // the part before the body is known exactly and the body can be cut off safely.
    let rows = client
        .query(
            "SELECT c.oid, c.relname::text, pg_get_indexdef(i.indexrelid), i.indisunique, \
                    format('CREATE %sINDEX %s ON %s.%s ', \
                           CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END, \
                           quote_ident(c.relname), quote_ident(n.nspname), quote_ident(t.relname)) \
             FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_class t ON t.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE i.indrelid = $1::text::regclass AND NOT i.indisprimary \
             ORDER BY c.relname",
            &[&table],
        )
        .await
        .map_err(|e| classify(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let def: String = r.get(2);
            let prefix: String = r.get(4);
            LiveIndex {
                oid: r.get(0),
                name: r.get(1),
                body: def.strip_prefix(&prefix).map(str::to_owned),
                def,
                unique: r.get(3),
            }
        })
        .collect())
}

/// The names of the copies already built on `shadow` (qualified).
pub(crate) async fn copies_on(
    client: &impl GenericClient,
    shadow: &str,
) -> Result<BTreeSet<String>, SinkError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = $1::text::regclass AND starts_with(c.relname::text, $2)",
            &[&shadow, &COPY_PREFIX],
        )
        .await
        .map_err(|e| classify(&e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
