//! Applies the embedded migrations in order, each in its own transaction,
//! under an advisory lock so concurrent runs are safe.

use anyhow::{bail, Context};
use postgres::Client;
use serde::Serialize;

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Advisory lock key for migrations ("shellyctl" folded into an i64).
const LOCK_KEY: i64 = 0x5348_454c_4c59_4d47;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub checksum: String,
    #[serde(skip)]
    pub sql: &'static str,
}

/// The embedded migrations, ordered by version.
pub fn embedded() -> anyhow::Result<Vec<Migration>> {
    let mut out = Vec::new();
    for (name, sql) in MIGRATIONS {
        let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
        let version: i32 = digits
            .parse()
            .with_context(|| format!("migration {name} does not start with a number"))?;
        out.push(Migration {
            version,
            name,
            checksum: crate::shelly::digest::sha256_hex(sql),
            sql,
        });
    }
    out.sort_by_key(|m| m.version);
    for w in out.windows(2) {
        if w[0].version == w[1].version {
            bail!(
                "two migrations share version {}: {} and {}",
                w[0].version,
                w[0].name,
                w[1].name
            );
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub applied: Vec<Migration>,
    pub already_applied: usize,
}

pub fn run(client: &mut Client) -> anyhow::Result<Outcome> {
    let migrations = embedded()?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .context("taking the migration lock")?;
    let result = apply_pending(client, &migrations);
    // The lock is also released when the session ends; unlock explicitly so
    // a caller that keeps the connection does not hold it.
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
    let outcome = result?;
    unlock.context("releasing the migration lock")?;
    Ok(outcome)
}

fn apply_pending(client: &mut Client, migrations: &[Migration]) -> anyhow::Result<Outcome> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .context("creating schema_migrations")?;
    let rows = client
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .context("reading schema_migrations")?;
    let mut already_applied = 0;
    for row in &rows {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let checksum: String = row.get(2);
        match migrations.iter().find(|m| m.version == version) {
            Some(m) if m.checksum == checksum => already_applied += 1,
            Some(m) => bail!(
                "migration {} was changed after it was applied (checksum {} in the database, {} now); \
                 add a new migration instead of editing an applied one",
                m.name,
                short(&checksum),
                short(&m.checksum)
            ),
            None => bail!(
                "the database has migration {version} ({name}) that this shellyctl does not know; \
                 it was migrated by a newer version"
            ),
        }
    }
    let applied_versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let mut applied = Vec::new();
    for m in migrations
        .iter()
        .filter(|m| !applied_versions.contains(&m.version))
    {
        let mut tx = client.transaction()?;
        tx.batch_execute(m.sql)
            .with_context(|| format!("applying migration {}", m.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum],
        )?;
        tx.commit()
            .with_context(|| format!("committing migration {}", m.name))?;
        crate::log::info(
            "migration_applied",
            None,
            serde_json::json!({"version": m.version, "name": m.name}),
        );
        applied.push(m.clone());
    }
    Ok(Outcome {
        applied,
        already_applied,
    })
}

fn short(checksum: &str) -> &str {
    &checksum[..checksum.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_numbered_and_ordered() {
        let m = embedded().unwrap();
        assert!(!m.is_empty());
        assert_eq!(m[0].version, 1);
        assert!(m.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(m[0].checksum.len(), 64);
    }
}
