//! Tariff versions and dynamic prices in the database.

use crate::tariff::{cost::Price, Tariff};
use anyhow::{bail, Context};
use postgres::GenericClient;

use super::utc as ts;

/// Stores a validated tariff version. Versions of one name must not
/// overlap in time; `replace` swaps a version with the same `valid_from`.
pub fn import(
    client: &mut postgres::Client,
    t: &Tariff,
    replace: bool,
) -> anyhow::Result<&'static str> {
    let mut tx = client.transaction()?;
    // Serialise imports: the overlap check and the insert must see the same table.
    tx.batch_execute("LOCK TABLE tariffs IN SHARE ROW EXCLUSIVE MODE")?;
    let from = t.valid_from_utc();
    let to = t.valid_to_utc();
    let rows = tx.query(
        "SELECT id, EXTRACT(EPOCH FROM valid_from)::bigint, rules->>'valid_from', rules->>'valid_to' FROM tariffs
          WHERE name = $1 AND valid_from < COALESCE($3, 'infinity'::timestamptz)
            AND COALESCE(valid_to, 'infinity'::timestamptz) > $2",
        &[&t.file.name, &ts(from), &to.map(ts)],
    )?;
    let mut replaced = false;
    for r in &rows {
        let (id, start): (i64, i64) = (r.get(0), r.get(1));
        if replace && start == from {
            tx.execute("DELETE FROM tariffs WHERE id = $1", &[&id])?;
            replaced = true;
            continue;
        }
        let (vf, vt): (Option<String>, Option<String>) = (r.get(2), r.get(3));
        bail!(crate::exit::ConfigError(format!(
            "tariff {} already has a version valid from {} to {} that overlaps {} to {}; end the old version with valid_to, \
             or use --replace to correct a version with the same valid_from",
            t.file.name,
            vf.unwrap_or_default(),
            vt.unwrap_or_else(|| "(open)".into()),
            t.file.valid_from,
            t.file.valid_to.map(|d| d.to_string()).unwrap_or_else(|| "(open)".into())
        )));
    }
    let kind = match t.file.kind {
        crate::tariff::Kind::Fixed => "fixed",
        crate::tariff::Kind::Dynamic => "dynamic",
    };
    tx.execute(
        "INSERT INTO tariffs (name, kind, currency, valid_from, valid_to, rules) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&t.file.name, &kind, &t.file.currency, &ts(from), &to.map(ts), &serde_json::to_value(&t.file)?],
    )?;
    tx.commit()?;
    Ok(if replaced { "replaced" } else { "imported" })
}

fn parse_rows(rows: &[postgres::Row]) -> anyhow::Result<Vec<Tariff>> {
    rows.iter()
        .map(|r| {
            let text: String = r.get(0);
            Tariff::parse(&text).map_err(|e| anyhow::anyhow!("a stored tariff is invalid: {e}"))
        })
        .collect()
}

/// Versions of `name` in force at some time in [from, to), oldest first.
pub fn versions(
    client: &mut impl GenericClient,
    name: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<Tariff>> {
    let rows = client.query(
        "SELECT rules::text FROM tariffs WHERE name = $1
            AND valid_from < $3 AND COALESCE(valid_to, 'infinity'::timestamptz) > $2
          ORDER BY valid_from",
        &[&name, &ts(from), &ts(to)],
    )?;
    parse_rows(&rows)
}

/// Every version of every tariff (or of one name), by name then start.
pub fn all(client: &mut impl GenericClient, name: Option<&str>) -> anyhow::Result<Vec<Tariff>> {
    let rows = client.query(
        "SELECT rules::text FROM tariffs WHERE $1::text IS NULL OR name = $1 ORDER BY name, valid_from",
        &[&name],
    )?;
    parse_rows(&rows)
}

/// The names of all tariffs.
pub fn names(client: &mut impl GenericClient) -> anyhow::Result<Vec<String>> {
    Ok(client
        .query("SELECT DISTINCT name FROM tariffs ORDER BY name", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A tariff's price series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// A dynamic tariff's energy prices.
    Import,
    /// The market price of exported energy (net-billing, e.g. RCE).
    Export,
}

impl Series {
    pub fn as_str(self) -> &'static str {
        match self {
            Series::Import => "import",
            Series::Export => "export",
        }
    }
}

/// Prices of a series overlapping [from, to), sorted.
pub fn prices(
    client: &mut impl GenericClient,
    name: &str,
    series: Series,
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<Price>> {
    let rows = client.query(
        "SELECT EXTRACT(EPOCH FROM start_ts)::bigint, EXTRACT(EPOCH FROM end_ts)::bigint, price FROM tariff_prices
          WHERE tariff_name = $1 AND series = $4 AND start_ts < $3 AND end_ts > $2 ORDER BY start_ts",
        &[&name, &ts(from), &ts(to), &series.as_str()],
    )?;
    Ok(rows
        .iter()
        .map(|r| Price {
            start: r.get(0),
            end: r.get(1),
            price: r.get(2),
        })
        .collect())
}

/// Upserts prices of a series; returns (inserted, updated). Import prices
/// belong to dynamic tariffs, export prices to tariffs that value export by
/// net-billing.
pub fn store_prices(
    client: &mut postgres::Client,
    name: &str,
    series: Series,
    prices: &[Price],
) -> anyhow::Result<(u64, u64)> {
    let mut tx = client.transaction()?;
    let versions =
        parse_rows(&tx.query("SELECT rules::text FROM tariffs WHERE name = $1", &[&name])?)?;
    if versions.is_empty() {
        bail!(crate::exit::ConfigError(format!(
            "no tariff named {name}; import it first with `shellyctl tariff import`"
        )));
    }
    match series {
        Series::Import
            if versions
                .iter()
                .any(|t| t.file.kind != crate::tariff::Kind::Dynamic) =>
        {
            bail!(crate::exit::ConfigError(format!(
                "tariff {name} is not dynamic; prices come from its zones (export prices take --series export)"
            )))
        }
        Series::Export
            if versions
                .iter()
                .all(|t| t.export_rule().rule != crate::tariff::ExportKind::NetBilling) =>
        {
            bail!(crate::exit::ConfigError(format!(
                "tariff {name} does not value export by net-billing (export.rule net_billing); it has no use for export prices"
            )))
        }
        _ => {}
    }
    let stmt = tx.prepare(
        "INSERT INTO tariff_prices (tariff_name, series, start_ts, end_ts, price) VALUES ($1, $5, $2, $3, $4)
         ON CONFLICT (tariff_name, series, start_ts) DO UPDATE SET end_ts = EXCLUDED.end_ts, price = EXCLUDED.price, imported_at = now()
         RETURNING (xmax = 0)",
    )?;
    let (mut inserted, mut updated) = (0, 0);
    for p in prices {
        let row = tx
            .query_one(
                &stmt,
                &[&name, &ts(p.start), &ts(p.end), &p.price, &series.as_str()],
            )
            .context("storing a price")?;
        if row.get::<_, bool>(0) {
            inserted += 1;
        } else {
            updated += 1;
        }
    }
    tx.commit()?;
    Ok((inserted, updated))
}
