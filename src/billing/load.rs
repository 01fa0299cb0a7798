//! Loading the energy to bill: the Shelly's meter spans (fetched once per
//! range, bucket and netting, shared by every tariff priced), or the DSO's
//! hours of one point of delivery.

use crate::billing::ami::How;
use crate::db::hours::{self, HourLoad};
use crate::db::{self, energy};
use crate::tariff::balance::{self, MeterSpan};
use crate::tariff::cost::Span;
use crate::tariff::{Balancing, Tariff};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Meter spans and the seconds each device's records cover.
pub(crate) type Fetched = (Vec<MeterSpan>, BTreeMap<String, i64>);

/// What a range bills: spans, the seconds covered per device (per point of
/// delivery for the DSO's readings), and for the DSO's readings how their
/// hours were balanced.
pub(crate) struct Loaded {
    pub(crate) spans: Vec<Span>,
    pub(crate) covered: BTreeMap<String, i64>,
    pub(crate) dso_how: Option<How>,
}

/// Meter spans fetched once per (range, bucket, netting), shared by every
/// tariff that needs them; or, with `ami`, the DSO's hours.
pub(crate) struct Data<'a> {
    pub(crate) url: &'a str,
    pub(crate) devices: &'a [String],
    pub(crate) pairs: &'a [String],
    pub(crate) cache: BTreeMap<(i64, i64, i64, bool), Fetched>,
    /// Hourly sums (`energy_hours`) read once per range.
    pub(crate) hours: BTreeMap<(i64, i64), HourLoad>,
    pub(crate) ami: Option<Ami>,
}

/// The DSO's readings of one point of delivery, from 12 months before the
/// period (the capacity basis) to its end.
pub(crate) struct Ami {
    pub(crate) pod: String,
    pub(crate) hours: BTreeMap<i64, crate::ami::Hour>,
}

impl Data<'_> {
    pub(crate) fn spans(
        &mut self,
        from: i64,
        to: i64,
        bucket: i64,
        per_record: bool,
    ) -> anyhow::Result<&Fetched> {
        let key = (from, to, bucket, per_record);
        if !self.cache.contains_key(&key) {
            let v = energy::spans(
                self.url,
                self.devices,
                self.pairs,
                from,
                to,
                bucket,
                per_record,
            )?;
            self.cache.insert(key, v);
        }
        Ok(&self.cache[&key])
    }

    /// The hourly sums of the billed meters over [from, to), when the range
    /// can be read by UTC hour for a report in `tz` (`hours::whole_hours`);
    /// `None` for the DSO's readings or a range that needs the slots.
    pub(crate) fn hours(
        &mut self,
        from: i64,
        to: i64,
        tz: chrono_tz::Tz,
    ) -> anyhow::Result<Option<&HourLoad>> {
        if self.ami.is_some() || !hours::whole_hours(tz, from, to) {
            return Ok(None);
        }
        let key = (from, to);
        if !self.hours.contains_key(&key) {
            let v = hours::load(self.url, self.devices, self.pairs, from, to, tz)?;
            self.hours.insert(key, v);
        }
        Ok(self.hours.get(&key))
    }

    /// Measured energy per meter and phase over [from, to) (Wh), before
    /// any balancing: the DSO's readings as one line, else the meters'.
    pub(crate) fn measured(
        &mut self,
        from: i64,
        to: i64,
        tz: chrono_tz::Tz,
    ) -> anyhow::Result<Vec<(String, String, Decimal, Decimal)>> {
        if let Some(a) = &self.ami {
            return Ok(vec![ami_measured(a, from, to)]);
        }
        if let Some(h) = self.hours(from, to, tz)? {
            return Ok(h.measured.clone());
        }
        let mut client = db::connect(self.url)?;
        energy::measured(&mut client, self.devices, self.pairs, from, to)
    }

    /// Billed spans over [from, to): each version balances the spans that
    /// start while it is in force.
    pub(crate) fn billed(
        &mut self,
        versions: &[Tariff],
        from: i64,
        to: i64,
        bucket: i64,
    ) -> anyhow::Result<Loaded> {
        if let Some(a) = &self.ami {
            let b = crate::billing::ami::billed(versions, &a.hours, from, to);
            let covered = 3600 * a.hours.range(from..to).count() as i64;
            return Ok(Loaded {
                spans: b.spans,
                covered: BTreeMap::from([(a.pod.clone(), covered)]),
                dso_how: Some(b.how),
            });
        }
        // Hourly balancing nets clock hours: where they are UTC hours, the
        // hourly sums give the same bill as the slots, from a quarter of
        // the rows.
        let hourly = versions
            .iter()
            .all(|v| v.file.balancing == Balancing::Hourly && hours::whole_hours(v.tz, from, to));
        if let (true, Some(first)) = (hourly, versions.first()) {
            if let Some(h) = self.hours(from, to, first.tz)? {
                let mut out = Vec::new();
                for (v, (lo, hi)) in versions
                    .iter()
                    .zip(crate::billing::version_windows(versions, from, to))
                {
                    out.extend(billed_in(v, &h.spans, (lo, hi), from));
                }
                out.sort_by_key(|s| (s.start, s.end));
                return Ok(Loaded {
                    spans: out,
                    covered: h.covered.clone(),
                    dso_how: None,
                });
            }
        }
        let mut out = Vec::new();
        let mut covered = BTreeMap::new();
        for (v, (lo, hi)) in versions
            .iter()
            .zip(crate::billing::version_windows(versions, from, to))
        {
            let per_record = v.file.balancing == Balancing::PerRecord;
            let (spans, cov) = self.spans(from, to, bucket, per_record)?;
            if covered.is_empty() {
                covered = cov.clone();
            }
            out.extend(billed_in(v, spans, (lo, hi), from));
        }
        out.sort_by_key(|s| (s.start, s.end));
        Ok(Loaded {
            spans: out,
            covered,
            dso_how: None,
        })
    }
}

/// The spans that start in [lo, hi), balanced by `v`: a tariff version
/// bills the spans that start while it is in force. The first version
/// (`lo` = `from`, the report's start) also bills the spans that started
/// before the report and end in it (a record across the report's start,
/// which pricing splits pro rata at `from`).
fn billed_in(v: &Tariff, spans: &[MeterSpan], (lo, hi): (i64, i64), from: i64) -> Vec<Span> {
    let inside = |s: &MeterSpan| s.start < hi && (s.start >= lo || (lo == from && s.end > lo));
    if spans.iter().all(inside) {
        return balance::billed(v, spans);
    }
    let mine: Vec<MeterSpan> = spans.iter().filter(|s| inside(s)).cloned().collect();
    balance::billed(v, &mine)
}

/// The DSO's readings of `pod` from 13 months before `from` (the capacity
/// basis) to `to`.
pub(crate) fn load_ami(
    client: &mut db::Client,
    pod: String,
    from: i64,
    to: i64,
) -> anyhow::Result<Ami> {
    let hours = db::ami::hours(client, &pod, from - 400 * 86_400, to)?;
    Ok(Ami { pod, hours })
}

/// The DSO's readings summed over [from, to) as one measured line (Wh).
pub(crate) fn ami_measured(a: &Ami, from: i64, to: i64) -> (String, String, Decimal, Decimal) {
    let thousand = Decimal::from(1000);
    let (i, e) = a
        .hours
        .range(from..to)
        .fold((Decimal::ZERO, Decimal::ZERO), |(i, e), (_, h)| {
            (i + h.import_kwh * thousand, e + h.export_kwh * thousand)
        });
    (a.pod.clone(), "all".to_string(), i, e)
}
