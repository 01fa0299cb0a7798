//! The distribution operator's hourly meter data (AMI): parsing the portal
//! exports into hours in UTC, exactly, DST days included.
//!
//! Formats:
//! - `tauron`: Tauron eLicznik's CSV, `;`-separated with decimal commas, the
//!   columns found by name (`Data`, `Wartość kWh`, `Rodzaj`, an optional
//!   `Strefa`), one row per hour and kind, the hour given by its END in local
//!   time (`2026-03-01 1:00` is 00:00–01:00, `24:00` ends the day). Kinds:
//!   `pobór` (taken), `oddanie` (fed in), `pobrana po zbilansowaniu` and
//!   `oddana po zbilansowaniu` (the DSO's hourly-balanced values). A day's
//!   hours are taken in file order: the fall-back day has 25 (its repeated
//!   hour written twice, or numbered to 25:00), the spring day 23; any other
//!   count is refused with the line.
//! - `plain`: `start,import_kwh,export_kwh[,balanced_import_kwh,balanced_export_kwh]`
//!   with `start` in RFC 3339 with its offset, one row per hour; a row may
//!   leave both balanced values empty.
//!
//! A file is refused whole (with its line number) on anything it cannot
//! read exactly: a number that is not one, a negative or absurd value, an
//! hour twice with different values, a day with the wrong number of hours.

use chrono::{NaiveDate, TimeZone};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;

/// One hour of the DSO's data (kWh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hour {
    /// Unix start of the hour.
    pub start: i64,
    pub import_kwh: Decimal,
    pub export_kwh: Decimal,
    pub balanced_import_kwh: Option<Decimal>,
    pub balanced_export_kwh: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Recognise the format from the header.
    Auto,
    /// Tauron eLicznik CSV.
    Tauron,
    /// Enea eBOK's hourly balancing CSV (before/after hourly balancing).
    Enea,
    /// The DSO's daily file: a row per point of delivery and kind (CP, CO,
    /// CB) with the day's hours as columns.
    Daily,
    /// start,import_kwh,export_kwh[,balanced_import_kwh,balanced_export_kwh]
    Plain,
}

/// A file's bytes as text: UTF-8 (with or without a BOM), UTF-16 with a
/// BOM, or else windows-1250 (Polish Windows); bytes none of them can
/// hold are refused. Returns the text and the encoding's name.
pub fn decode(bytes: &[u8]) -> Result<(String, &'static str), String> {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        return enc
            .decode_without_bom_handling_and_without_replacement(&bytes[bom..])
            .map(|t| (t.into_owned(), enc.name()))
            .ok_or_else(|| format!("not valid {} after its byte-order mark", enc.name()));
    }
    if let Ok(t) = std::str::from_utf8(bytes) {
        return Ok((t.to_string(), "UTF-8"));
    }
    // WHATWG's windows-1250 gives the five unassigned bytes C1 controls: a
    // file holding one is not windows-1250 either.
    encoding_rs::WINDOWS_1250
        .decode_without_bom_handling_and_without_replacement(bytes)
        .filter(|t| !t.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)))
        .map(|t| (t.into_owned(), "windows-1250"))
        .ok_or_else(|| "neither UTF-8 nor windows-1250: save the export as UTF-8".to_string())
}

/// A point of delivery's id (PPE, the DSO's meter number) as stored and
/// printed: 1 to 64 letters, digits, `.`, `-` or `_`.
pub fn valid_pod(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// More than any household meter takes in an hour (a 63 A three-phase
/// connection is about 43 kW).
const MAX_KWH_PER_HOUR: i64 = 1000;

fn number(raw: &str, line: usize, comma: bool) -> Result<Decimal, String> {
    let text = if comma {
        raw.trim().replace(',', ".")
    } else {
        raw.trim().to_string()
    };
    let v =
        Decimal::from_str(&text).map_err(|_| format!("line {line}: {raw:?} is not a number"))?;
    if v < Decimal::ZERO || v > Decimal::from(MAX_KWH_PER_HOUR) {
        return Err(format!(
            "line {line}: {v} kWh in an hour is out of range (0 to {MAX_KWH_PER_HOUR})"
        ));
    }
    Ok(v)
}

/// Which format a file's first line says it is.
pub fn detect(text: &str) -> Result<Format, String> {
    let header = text
        .trim_start_matches('\u{feff}')
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or("the file is empty")?
        .to_lowercase();
    if header.contains(';') && header.contains("rodzaj") {
        Ok(Format::Tauron)
    } else if header.contains("przed bilansowaniem") {
        Ok(Format::Enea)
    } else if ["kosd;", "kse;", "dd;"]
        .iter()
        .any(|p| header.starts_with(p))
    {
        Ok(Format::Daily)
    } else if header.split(',').next().map(str::trim) == Some("start") {
        Ok(Format::Plain)
    } else {
        Err(format!(
            "not a format shellyctl reads (Tauron eLicznik CSV, Enea eBOK balancing CSV, the daily CP/CO/CB file, or start,import_kwh,export_kwh): {:?}",
            header.chars().take(80).collect::<String>()
        ))
    }
}

/// Parses `text` in `format` (local hours in `tz`; `pod` chooses among the
/// points of delivery of a daily file that holds several).
pub fn parse(
    text: &str,
    format: Format,
    tz: chrono_tz::Tz,
    pod: Option<&str>,
) -> Result<Vec<Hour>, String> {
    match format {
        Format::Auto => parse(text, detect(text)?, tz, pod),
        Format::Tauron => parse_tauron(text, tz),
        Format::Enea => parse_enea(text, tz),
        Format::Daily => parse_daily(text, tz, pod),
        Format::Plain => parse_plain(text),
    }
}

/// Enea eBOK's balancing export: `;`-separated, values quoted with decimal
/// commas, the time written as an Excel formula (`="2025-06-15 11:59"`),
/// the hour named by its last minute (11:59 is 11:00–12:00 local), the
/// columns found by name: energy taken and fed in before and after hourly
/// balancing. On the fall-back day the repeated hour comes twice, in file
/// order; a time the day does not have is refused.
fn parse_enea(text: &str, tz: chrono_tz::Tz) -> Result<Vec<Hour>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .trim(csv::Trim::All)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let cols: Vec<String> = reader
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .iter()
        .map(|c| c.to_lowercase())
        .collect();
    let find = |taken: bool, after: bool| {
        cols.iter().position(|c| {
            c.contains(if taken { "pobranej" } else { "oddanej" })
                && c.contains(if after {
                    "po bilansowaniu"
                } else {
                    "przed bilansowaniem"
                })
        })
    };
    let (Some(ci_date), Some(i), Some(e), Some(bi), Some(be)) = (
        cols.iter().position(|c| c == "data"),
        find(true, false),
        find(false, false),
        find(true, true),
        find(false, true),
    ) else {
        return Err(format!(
            "line 1: an Enea balancing export needs Data and the energy taken and fed in before and after hourly balancing, got {cols:?}"
        ));
    };
    let mut out: BTreeMap<i64, (usize, Hour)> = BTreeMap::new();
    let mut last_start = i64::MIN;
    for row in crate::csvrows::rows(&mut reader, &cols) {
        let row = row?;
        let line = row.line;
        let get = |c: usize| row.get(c);
        let stamp = get(ci_date)?.trim_matches(|c| c == '=' || c == '"');
        let local = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M")
            .map_err(|_| format!("line {line}: {stamp:?} is not a time like 2025-06-15 11:59"))?;
        if chrono::Timelike::minute(&local) != 59 {
            return Err(format!(
                "line {line}: {stamp} does not name an hour by its last minute (HH:59)"
            ));
        }
        let hour = local - chrono::Duration::minutes(59);
        // The repeated hour of the fall-back day: its second row is the
        // later of the two.
        let start = match tz.from_local_datetime(&hour) {
            chrono::LocalResult::Single(t) => t.timestamp(),
            chrono::LocalResult::Ambiguous(a, b) => {
                if a.timestamp() > last_start {
                    a.timestamp()
                } else {
                    b.timestamp()
                }
            }
            chrono::LocalResult::None => {
                return Err(format!("line {line}: {stamp} does not exist in {tz}"))
            }
        };
        last_start = start;
        let h = Hour {
            start,
            import_kwh: number(get(i)?, line, true)?,
            export_kwh: number(get(e)?, line, true)?,
            balanced_import_kwh: Some(number(get(bi)?, line, true)?),
            balanced_export_kwh: Some(number(get(be)?, line, true)?),
        };
        insert(&mut out, line, h)?;
    }
    if out.is_empty() {
        return Err("the file has no rows".into());
    }
    Ok(out.into_values().map(|(_, h)| h).collect())
}

/// The DSO's daily file (as energy cooperatives receive it): header
/// records `kOSD`, `kSE`, `DCW`, `DD;DD-MM-YYYY` (the day), `VV`, a
/// `Kod_PPE` column row, then per point of delivery a row per kind —
/// `CP` (taken), `CO` (fed in), `CB` (balanced) — with the day's hours as
/// the cells after the third column, each `value[,flag]` with a decimal
/// point (`.739,+`). The cells are the day's hours in order (23, 24 or 25,
/// checked against the day in `tz`); an empty cell is a missing hour, left
/// out, never 0. CB is read and checked but not used: its meaning (the
/// point's own hourly balance, or a cooperative's) is not documented, so
/// shellyctl balances the hours itself. With several points of delivery in
/// the file, `pod` chooses.
pub fn parse_daily(text: &str, tz: chrono_tz::Tz, pod: Option<&str>) -> Result<Vec<Hour>, String> {
    let mut day = None;
    // (line, point of delivery, kind, cells)
    let mut rows: Vec<(usize, String, String, Vec<String>)> = Vec::new();
    for (i, l) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = i + 1;
        let f: Vec<&str> = l.trim_end_matches('\r').split(';').collect();
        match f[0].trim().to_lowercase().as_str() {
            "" | "kosd" | "kse" | "dcw" | "vv" | "kod_ppe" => continue,
            "dd" => {
                let raw = f.get(1).map(|s| s.trim()).unwrap_or_default();
                day = Some(
                    NaiveDate::parse_from_str(raw, "%d-%m-%Y")
                        .or_else(|_| NaiveDate::parse_from_str(raw, "%Y-%m-%d"))
                        .map_err(|_| format!("line {line}: {raw:?} is not a day (DD-MM-YYYY)"))?,
                );
                continue;
            }
            _ => {}
        }
        let kind = f
            .get(1)
            .map(|k| k.trim().to_uppercase())
            .unwrap_or_default();
        if !["CP", "CO", "CB"].contains(&kind.as_str()) {
            return Err(format!("line {line}: kind {kind:?} is not CP, CO or CB"));
        }
        let mut cells: Vec<String> = f.iter().skip(3).map(|c| c.trim().to_string()).collect();
        // A `;` ending the line ends the row; an empty cell before it is
        // a missing hour.
        if l.trim_end().ends_with(';') {
            cells.pop();
        }
        rows.push((line, f[0].trim().to_string(), kind, cells));
    }
    let day = day.ok_or("no DD record (the day the file covers)")?;
    let mut pods: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    pods.sort();
    pods.dedup();
    let chosen = match (pods.as_slice(), pod) {
        ([], _) => return Err("the file has no CP/CO rows".into()),
        ([one], _) => one.to_string(),
        (many, Some(p)) if many.contains(&p) => p.to_string(),
        (many, _) => {
            return Err(format!(
                "the file holds several points of delivery ({}); import it with --pod set to one of them",
                many.join(", ")
            ))
        }
    };
    let start = local_midnight(tz, day)?;
    let end = local_midnight(tz, day.succ_opt().ok_or("date out of range")?)?;
    let n = ((end - start) / 3600) as usize;
    let mut values: [Option<Vec<Option<Decimal>>>; 2] = [None, None];
    for (line, _, kind, cells) in rows.iter().filter(|r| r.1 == chosen) {
        if cells.len() != n {
            return Err(format!(
                "line {line}: {} hour cells for {day}, which has {n} hours in {tz}",
                cells.len()
            ));
        }
        let mut parsed = Vec::with_capacity(n);
        for c in cells.iter() {
            let value = c.split(',').next().unwrap_or_default().trim();
            parsed.push(if value.is_empty() {
                None
            } else if kind == "CB" {
                // Checked, not used (sign unknown).
                Decimal::from_str(value)
                    .ok()
                    .filter(|v| v.abs() <= Decimal::from(MAX_KWH_PER_HOUR))
                    .ok_or_else(|| format!("line {line}: {c:?} is not a number"))?;
                None
            } else {
                Some(number(value, *line, false)?)
            });
        }
        let slot = match kind.as_str() {
            "CP" => 0,
            "CO" => 1,
            _ => continue,
        };
        if values[slot].replace(parsed).is_some() {
            return Err(format!("line {line}: a second {kind} row for {chosen}"));
        }
    }
    let imports = values[0]
        .take()
        .ok_or_else(|| format!("no CP row for {chosen}"))?;
    let exports = values[1]
        .take()
        .unwrap_or_else(|| vec![Some(Decimal::ZERO); n]);
    Ok(imports
        .iter()
        .zip(&exports)
        .enumerate()
        .filter_map(|(k, (i, e))| {
            Some(Hour {
                start: start + 3600 * k as i64,
                import_kwh: (*i)?,
                export_kwh: (*e)?,
                balanced_import_kwh: None,
                balanced_export_kwh: None,
            })
        })
        .collect())
}

fn parse_plain(text: &str) -> Result<Vec<Hour>, String> {
    let mut out: BTreeMap<i64, (usize, Hour)> = BTreeMap::new();
    let mut lines = text.trim_start_matches('\u{feff}').lines().enumerate();
    let (_, header) = lines.next().ok_or("the file is empty")?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    let want = ["start", "import_kwh", "export_kwh"];
    if cols.len() < 3 || cols[..3] != want {
        return Err(format!(
            "line 1: the header must start with start,import_kwh,export_kwh, got {header:?}"
        ));
    }
    let balanced =
        cols.len() >= 5 && cols[3] == "balanced_import_kwh" && cols[4] == "balanced_export_kwh";
    for (i, l) in lines {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split(',').collect();
        if f.len() != cols.len() {
            return Err(format!(
                "line {line}: {} fields, the header has {}",
                f.len(),
                cols.len()
            ));
        }
        let start = chrono::DateTime::parse_from_rfc3339(f[0].trim())
            .map_err(|_| {
                format!(
                    "line {line}: {:?} is not a time in RFC 3339 with its offset",
                    f[0]
                )
            })?
            .timestamp();
        if start.rem_euclid(3600) != 0 {
            return Err(format!(
                "line {line}: {} is not the start of an hour",
                f[0].trim()
            ));
        }
        // Balanced values may be left empty on a row (both of them): the
        // hour is then balanced by shellyctl.
        let (bi, be) = match balanced.then(|| (f[3].trim(), f[4].trim())) {
            None | Some(("", "")) => (None, None),
            Some((i, e)) => (Some(number(i, line, false)?), Some(number(e, line, false)?)),
        };
        let hour = Hour {
            start,
            import_kwh: number(f[1], line, false)?,
            export_kwh: number(f[2], line, false)?,
            balanced_import_kwh: bi,
            balanced_export_kwh: be,
        };
        insert(&mut out, line, hour)?;
    }
    Ok(out.into_values().map(|(_, h)| h).collect())
}

/// Adds an hour; the same hour again must have the same values.
fn insert(out: &mut BTreeMap<i64, (usize, Hour)>, line: usize, hour: Hour) -> Result<(), String> {
    match out.get(&hour.start) {
        Some((first, h)) if *h != hour => Err(format!(
            "line {line}: the hour starting {} is also on line {first} with other values",
            chrono::DateTime::from_timestamp(hour.start, 0)
                .unwrap_or_default()
                .to_rfc3339()
        )),
        Some(_) => Ok(()),
        None => {
            out.insert(hour.start, (line, hour));
            Ok(())
        }
    }
}

/// The kinds of a Tauron row.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Taken,
    FedIn,
    BalancedTaken,
    BalancedFedIn,
}

fn kind(raw: &str) -> Option<Kind> {
    match raw.trim().to_lowercase().as_str() {
        "pobór" | "pobor" => Some(Kind::Taken),
        "oddanie" => Some(Kind::FedIn),
        "pobrana po zbilansowaniu" => Some(Kind::BalancedTaken),
        "oddana po zbilansowaniu" => Some(Kind::BalancedFedIn),
        _ => None,
    }
}

/// A Tauron row: (line, hour label, value).
type Row = (usize, u32, Decimal);

fn parse_tauron(text: &str, tz: chrono_tz::Tz) -> Result<Vec<Hour>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let cols: Vec<String> = reader
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .iter()
        .map(|c| c.trim().to_lowercase())
        .collect();
    let col = |pred: &dyn Fn(&str) -> bool| cols.iter().position(|c| pred(c));
    let (Some(ci_date), Some(ci_value), Some(ci_kind)) = (
        col(&|c| c == "data" || c.starts_with("data i godzina")),
        col(&|c| c.starts_with("wartość") || c.starts_with("wartosc")),
        col(&|c| c.starts_with("rodzaj")),
    ) else {
        return Err(format!(
            "line 1: a Tauron export needs the columns Data, Wartość kWh and Rodzaj, got {cols:?}"
        ));
    };
    // Rows per (local day, kind), in file order.
    let mut days: BTreeMap<(NaiveDate, Kind), Vec<Row>> = BTreeMap::new();
    for row in crate::csvrows::rows(&mut reader, &cols) {
        let row = row?;
        let line = row.line;
        let get = |c: usize| row.get(c);
        let stamp = get(ci_date)?;
        let (date, time) = stamp
            .split_once(' ')
            .ok_or_else(|| format!("line {line}: {stamp:?} is not a date and an hour"))?;
        let date = NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d")
            .or_else(|_| NaiveDate::parse_from_str(date.trim(), "%d.%m.%Y"))
            .map_err(|_| format!("line {line}: {date:?} is not a date"))?;
        let label: u32 = time
            .trim()
            .split(':')
            .next()
            .and_then(|h| h.parse().ok())
            .filter(|h| (1..=25).contains(h))
            .ok_or_else(|| format!("line {line}: {time:?} is not an hour 1:00 to 24:00"))?;
        let k = kind(get(ci_kind)?).ok_or_else(|| {
            format!(
                "line {line}: unknown kind {:?} (pobór, oddanie, pobrana/oddana po zbilansowaniu)",
                get(ci_kind).unwrap_or_default()
            )
        })?;
        let v = number(get(ci_value)?, line, true)?;
        days.entry((date, k)).or_default().push((line, label, v));
    }
    if days.is_empty() {
        return Err("the file has no rows".into());
    }
    let mut hours: BTreeMap<i64, [Option<Decimal>; 4]> = BTreeMap::new();
    for ((date, k), rows) in &days {
        let start = local_midnight(tz, *date)?;
        let end = local_midnight(tz, date.succ_opt().ok_or("date out of range")?)?;
        let n = ((end - start) / 3600) as usize;
        if rows.len() != n {
            let (line, _, _) = rows[rows.len().min(n).saturating_sub(1)];
            return Err(format!(
                "line {line}: {date} has {} hours of {k:?} in the file, but {n} in {tz}",
                rows.len()
            ));
        }
        // Labels count the hours' ends: increasing, except that a 25-hour
        // day may write its repeated hour twice.
        let mut repeats = 0;
        for w in rows.windows(2) {
            if w[1].1 == w[0].1 && n == 25 {
                repeats += 1;
            } else if w[1].1 <= w[0].1 {
                return Err(format!("line {}: hour {}:00 out of order", w[1].0, w[1].1));
            }
        }
        if repeats > 1 {
            return Err(format!(
                "line {}: more than one repeated hour on {date}",
                rows[0].0
            ));
        }
        for (i, (_, _, v)) in rows.iter().enumerate() {
            let slot = &mut hours.entry(start + 3600 * i as i64).or_default()[*k as usize];
            *slot = Some(*v);
        }
    }
    let mut out = Vec::with_capacity(hours.len());
    for (start, v) in hours {
        out.push(Hour {
            start,
            import_kwh: v[Kind::Taken as usize].unwrap_or_default(),
            export_kwh: v[Kind::FedIn as usize].unwrap_or_default(),
            balanced_import_kwh: v[Kind::BalancedTaken as usize],
            balanced_export_kwh: v[Kind::BalancedFedIn as usize],
        });
    }
    Ok(out)
}

fn local_midnight(tz: chrono_tz::Tz, d: NaiveDate) -> Result<i64, String> {
    let naive = d.and_hms_opt(0, 0, 0).ok_or("bad date")?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp())
        .ok_or_else(|| format!("{d} has no midnight in {tz}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    const WAW: chrono_tz::Tz = chrono_tz::Europe::Warsaw;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    /// A Tauron day: `n` hours labelled by `label(i)`, taken 0,1·(i+1).
    fn tauron_day(date: &str, labels: &[u32], kind: &str) -> String {
        labels
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{date} {h}:00;{},{};{kind}\n", i / 10, i % 10))
            .collect()
    }

    const HEADER: &str = "Data; Wartość kWh;Rodzaj\n";

    #[test]
    fn an_ordinary_day_is_24_hours_ending_at_the_labels() {
        let labels: Vec<u32> = (1..=24).collect();
        let text = format!("{HEADER}{}", tauron_day("2026-06-10", &labels, "pobór"));
        assert_eq!(detect(&text).unwrap(), Format::Tauron);
        let h = parse(&text, Format::Auto, WAW, None).unwrap();
        assert_eq!(h.len(), 24);
        // "1:00" is 00:00–01:00 CEST = 22:00 UTC the day before.
        assert_eq!(h[0].start, utc("2026-06-09T22:00:00Z"));
        assert_eq!(h[23].start, utc("2026-06-10T21:00:00Z"));
        assert_eq!((h[5].import_kwh, h[5].export_kwh), (d("0.5"), d("0")));
        assert_eq!(h[0].balanced_import_kwh, None);
    }

    #[test]
    fn the_fall_back_day_has_25_hours_and_keeps_the_repeated_one_twice() {
        // 2026-10-25: 02:00–03:00 local happens twice (CEST, then CET).
        for labels in [
            (1..=25).collect::<Vec<u32>>(),
            [1, 2, 3, 3].into_iter().chain(4..=24).collect(),
        ] {
            let text = format!("{HEADER}{}", tauron_day("2026-10-25", &labels, "pobór"));
            let h = parse(&text, Format::Tauron, WAW, None).unwrap();
            assert_eq!(h.len(), 25, "{labels:?}");
            assert_eq!(h[0].start, utc("2026-10-24T22:00:00Z"));
            // The two 02:00 hours: 00:00 and 01:00 UTC, with their own values.
            assert_eq!(h[2].start, utc("2026-10-25T00:00:00Z"));
            assert_eq!(h[3].start, utc("2026-10-25T01:00:00Z"));
            assert_eq!((h[2].import_kwh, h[3].import_kwh), (d("0.2"), d("0.3")));
            assert_eq!(h[24].start, utc("2026-10-25T22:00:00Z"));
        }
    }

    #[test]
    fn the_spring_day_has_23_hours_and_24_is_refused_with_the_line() {
        let labels: Vec<u32> = [1, 2].into_iter().chain(4..=24).collect();
        let text = format!("{HEADER}{}", tauron_day("2026-03-29", &labels, "pobór"));
        let h = parse(&text, Format::Tauron, WAW, None).unwrap();
        assert_eq!(h.len(), 23);
        assert_eq!(h[2].start, utc("2026-03-29T01:00:00Z")); // 03:00 CEST
        let all: Vec<u32> = (1..=24).collect();
        let text = format!("{HEADER}{}", tauron_day("2026-03-29", &all, "pobór"));
        let e = parse(&text, Format::Tauron, WAW, None).unwrap_err();
        assert!(e.starts_with("line 24: 2026-03-29 has 24 hours"), "{e}");
        // An ordinary day with an hour missing.
        let short: Vec<u32> = (1..=23).collect();
        let text = format!("{HEADER}{}", tauron_day("2026-06-10", &short, "pobór"));
        let e = parse(&text, Format::Tauron, WAW, None).unwrap_err();
        assert!(e.contains("has 23 hours") && e.contains("but 24"), "{e}");
    }

    #[test]
    fn kinds_become_columns_and_balanced_values_are_kept() {
        let labels: Vec<u32> = (1..=24).collect();
        let text = format!(
            "{HEADER}{}{}{}{}",
            tauron_day("2026-06-10", &labels, "pobór"),
            tauron_day("2026-06-10", &labels, "oddanie"),
            tauron_day("2026-06-10", &labels, "pobrana po zbilansowaniu"),
            tauron_day("2026-06-10", &labels, "oddana po zbilansowaniu"),
        );
        let h = parse(&text, Format::Tauron, WAW, None).unwrap();
        assert_eq!(h.len(), 24);
        assert_eq!(h[12].export_kwh, d("1.2"));
        assert_eq!(h[12].balanced_import_kwh, Some(d("1.2")));
        assert_eq!(h[12].balanced_export_kwh, Some(d("1.2")));
    }

    #[test]
    fn a_malformed_file_is_refused_whole_naming_the_line() {
        let bad = format!("{HEADER}2026-06-10 1:00;abc;pobór\n");
        assert_eq!(
            parse(&bad, Format::Tauron, WAW, None).unwrap_err(),
            "line 2: \"abc\" is not a number"
        );
        let negative = format!("{HEADER}2026-06-10 1:00;-1,5;pobór\n");
        assert!(parse(&negative, Format::Tauron, WAW, None)
            .unwrap_err()
            .starts_with("line 2: -1.5 kWh"));
        let kind = format!("{HEADER}2026-06-10 1:00;1,5;zużycie\n");
        assert!(parse(&kind, Format::Tauron, WAW, None)
            .unwrap_err()
            .starts_with("line 2: unknown kind"));
        let hour = format!("{HEADER}2026-06-10 26:00;1,5;pobór\n");
        assert!(parse(&hour, Format::Tauron, WAW, None)
            .unwrap_err()
            .starts_with("line 2: "));
        assert!(detect("a,b,c\n1,2,3\n")
            .unwrap_err()
            .starts_with("not a format"));
    }

    #[test]
    fn the_plain_format_reads_rfc3339_hours_and_refuses_a_conflicting_repeat() {
        let text = "start,import_kwh,export_kwh,balanced_import_kwh,balanced_export_kwh\n\
                    2026-10-25T02:00:00+02:00,0.5,0,0.5,0\n\
                    2026-10-25T02:00:00+01:00,0.4,0.1,0.3,0\n";
        assert_eq!(detect(text).unwrap(), Format::Plain);
        let h = parse(text, Format::Auto, WAW, None).unwrap();
        assert_eq!(h.len(), 2, "the repeated local hour is two hours");
        assert_eq!(h[1].start - h[0].start, 3600);
        assert_eq!(h[1].balanced_import_kwh, Some(d("0.3")));
        let clash = "start,import_kwh,export_kwh\n2026-06-10T10:00:00Z,1,0\n2026-06-10T12:00:00+02:00,2,0\n";
        let e = parse(clash, Format::Plain, WAW, None).unwrap_err();
        assert!(
            e.starts_with("line 3: the hour starting") && e.contains("also on line 2"),
            "{e}"
        );
        let same = "start,import_kwh,export_kwh\n2026-06-10T10:00:00Z,1,0\n2026-06-10T12:00:00+02:00,1,0\n";
        assert_eq!(parse(same, Format::Plain, WAW, None).unwrap().len(), 1);
        let half = "start,import_kwh,export_kwh\n2026-06-10T10:30:00Z,1,0\n";
        assert!(parse(half, Format::Plain, WAW, None)
            .unwrap_err()
            .contains("not the start of an hour"));
    }

    #[test]
    fn exports_in_windows_1250_utf8_with_a_bom_and_utf16_are_read_exactly() {
        let text = "Data; Wartość kWh;Rodzaj\n2026-06-10 1:00;0,5;pobór\n";
        let (cp, _, bad) = encoding_rs::WINDOWS_1250.encode(text);
        assert!(!bad);
        assert!(
            std::str::from_utf8(&cp).is_err(),
            "ś and ó are single bytes"
        );
        assert_eq!(decode(&cp).unwrap(), (text.to_string(), "windows-1250"));
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(text.as_bytes());
        assert_eq!(decode(&bom).unwrap(), (text.to_string(), "UTF-8"));
        let mut utf16 = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(decode(&utf16).unwrap(), (text.to_string(), "UTF-16LE"));
        // 0x98 has no character in windows-1250 (and is not UTF-8).
        assert!(decode(&[b'a', 0x98]).is_err());
    }

    const ENEA_HEADER: &str = "Data;Wolumen energii elektrycznej pobranej z sieci przed bilansowaniem godzinowym;Wolumen energii elektrycznej oddanej do sieci przed bilansowaniem godzinowym;Wolumen energii elektrycznej pobranej z sieci po bilansowaniu godzinowym;Wolumen energii elektrycznej oddanej do sieci po bilansowaniu godzinowym";

    #[test]
    fn an_enea_balancing_export_names_each_hour_by_its_last_minute() {
        // 11:59 is 11:00–12:00 CEST = 09:00Z; balanced 0,000 / 1,720.
        let text = format!(
            "{ENEA_HEADER}\n\"=\"\"2025-06-15 11:59\"\"\";\"0,120\";\"1,840\";\"0,000\";\"1,720\"\n\"=\"\"2025-06-15 12:59\"\"\";\"0,310\";\"0,200\";\"0,110\";\"0,000\"\n"
        );
        assert_eq!(detect(&text).unwrap(), Format::Enea);
        let h = parse(&text, Format::Auto, WAW, None).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].start, utc("2025-06-15T09:00:00Z"));
        assert_eq!(
            (
                h[0].import_kwh,
                h[0].export_kwh,
                h[0].balanced_import_kwh,
                h[0].balanced_export_kwh
            ),
            (d("0.120"), d("1.840"), Some(d("0.000")), Some(d("1.720")))
        );
        // The fall-back day's repeated hour 02:00–03:00, twice in file
        // order: 00:00Z (CEST) then 01:00Z (CET).
        let row = |t: &str, v: &str| format!("\"=\"\"{t}\"\"\";\"{v}\";\"0\";\"{v}\";\"0\"\n");
        let text = format!(
            "{ENEA_HEADER}\n{}{}{}",
            row("2026-10-25 01:59", "0,1"),
            row("2026-10-25 02:59", "0,2"),
            row("2026-10-25 02:59", "0,3")
        );
        let h = parse(&text, Format::Enea, WAW, None).unwrap();
        let got: Vec<(i64, Decimal)> = h.iter().map(|h| (h.start, h.import_kwh)).collect();
        assert_eq!(
            got,
            [
                (utc("2026-10-24T23:00:00Z"), d("0.1")),
                (utc("2026-10-25T00:00:00Z"), d("0.2")),
                (utc("2026-10-25T01:00:00Z"), d("0.3"))
            ]
        );
        // The spring day has no 02:00 hour: refused with the line.
        let text = format!("{ENEA_HEADER}\n{}", row("2026-03-29 02:59", "0,1"));
        let e = parse(&text, Format::Enea, WAW, None).unwrap_err();
        assert!(
            e.starts_with("line 2:") && e.contains("does not exist"),
            "{e}"
        );
    }

    /// A daily file of `day` with `cells` hour cells per row.
    fn daily(day: &str, rows: &[(&str, &str, Vec<String>)]) -> String {
        let mut s =
            format!("kOSD;XXXX;;\nkSE;SEXX;;\nDCW;x;;\nDD;{day};;\nVV;1;;\nKod_PPE;Rodzaj;X;1;2\n");
        for (pod, kind, cells) in rows {
            s.push_str(&format!("{pod};{kind};;{};\n", cells.join(";")));
        }
        s
    }

    #[test]
    fn a_daily_cp_co_file_maps_its_cells_to_the_days_hours() {
        let cells =
            |n: usize, v: &str| -> Vec<String> { (0..n).map(|_| format!("{v},+")).collect() };
        // 10 June 2026 (24 hours): CP .5 each, CO 0 except the 13th cell.
        let mut co = cells(24, "0.000");
        co[12] = "1.250,+".into();
        let mut cp = cells(24, ".500");
        cp[5] = String::new(); // a missing hour: left out, never 0
        let text = daily(
            "10-06-2026",
            &[
                ("590000000000000001", "CP", cp),
                ("590000000000000001", "CO", co),
                ("590000000000000001", "CB", cells(24, "-.100")),
            ],
        );
        assert_eq!(detect(&text).unwrap(), Format::Daily);
        let h = parse(&text, Format::Auto, WAW, None).unwrap();
        assert_eq!(h.len(), 23);
        assert_eq!(h[0].start, utc("2026-06-09T22:00:00Z"));
        assert!(h.iter().all(|x| x.start != utc("2026-06-10T03:00:00Z")));
        let noon = h
            .iter()
            .find(|x| x.start == utc("2026-06-10T10:00:00Z"))
            .unwrap();
        assert_eq!(
            (noon.import_kwh, noon.export_kwh, noon.balanced_import_kwh),
            (d("0.500"), d("1.250"), None)
        );
        // The fall-back day has 25 cells; 24 are refused with the line.
        let ok = daily("25-10-2026", &[("P1", "CP", cells(25, ".1"))]);
        assert_eq!(parse(&ok, Format::Daily, WAW, None).unwrap().len(), 25);
        let short = daily("25-10-2026", &[("P1", "CP", cells(24, ".1"))]);
        let e = parse(&short, Format::Daily, WAW, None).unwrap_err();
        assert!(
            e.starts_with("line 7: 24 hour cells for 2026-10-25, which has 25 hours"),
            "{e}"
        );
        // Several points of delivery: --pod chooses, else refused.
        let two = daily(
            "10-06-2026",
            &[("P1", "CP", cells(24, ".1")), ("P2", "CP", cells(24, ".2"))],
        );
        assert!(parse(&two, Format::Daily, WAW, None)
            .unwrap_err()
            .contains("several points of delivery (P1, P2)"));
        assert_eq!(
            parse(&two, Format::Daily, WAW, Some("P2")).unwrap()[0].import_kwh,
            d(".2")
        );
        let bad = daily("10-06-2026", &[("P1", "XX", cells(24, ".1"))]);
        assert!(parse(&bad, Format::Daily, WAW, None)
            .unwrap_err()
            .starts_with("line 7: kind \"XX\""));
    }
}
