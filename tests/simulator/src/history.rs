//! The simulated meter's stored interval records (EMData / EM1Data).
//!
//! Records are a pure function of their timestamp, so the simulator can
//! serve a year of one-minute records without storing them, and tests can
//! recompute exactly what the device holds.

use shellyctl::shelly::emdata::{em1_keys, triphase_keys, Field, FIELDS};
use std::fmt::Write;

/// One phase's values in one period, as integers of fixed scale so that
/// their decimal text is exact: energies in 1/10000 Wh, powers and voltages
/// in 1/10, currents in 1/1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseRecord {
    pub act_energy: i64,
    pub fund_act_energy: i64,
    pub ret_energy: i64,
    pub fund_ret_energy: i64,
    pub lag_react: i64,
    pub lead_react: i64,
    pub max_act_power: i64,
    pub min_act_power: i64,
    pub max_aprt_power: i64,
    pub min_aprt_power: i64,
    pub max_voltage: i64,
    pub min_voltage: i64,
    pub avg_voltage: i64,
    pub max_current: i64,
    pub min_current: i64,
    pub avg_current: i64,
}

impl PhaseRecord {
    /// The value of one field of `emdata::FIELDS`, with its decimals.
    fn value(&self, f: &Field) -> (i64, u32) {
        match f.suffix {
            "total_act_energy" => (self.act_energy, 4),
            "fund_act_energy" => (self.fund_act_energy, 4),
            "total_act_ret_energy" => (self.ret_energy, 4),
            "fund_act_ret_energy" => (self.fund_ret_energy, 4),
            "lag_react_energy" => (self.lag_react, 4),
            "lead_react_energy" => (self.lead_react, 4),
            "max_act_power" => (self.max_act_power, 1),
            "min_act_power" => (self.min_act_power, 1),
            "max_aprt_power" => (self.max_aprt_power, 1),
            "min_aprt_power" => (self.min_aprt_power, 1),
            "max_voltage" => (self.max_voltage, 1),
            "min_voltage" => (self.min_voltage, 1),
            "avg_voltage" => (self.avg_voltage, 1),
            "max_current" => (self.max_current, 3),
            "min_current" => (self.min_current, 3),
            "avg_current" => (self.avg_current, 3),
            other => unreachable!("emdata::FIELDS has no {other}"),
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A deterministic value in [0, 1) for (seed, ts, salt).
fn noise(seed: u64, ts: i64, salt: u64) -> f64 {
    (splitmix(seed ^ (ts as u64).wrapping_mul(31) ^ salt.wrapping_mul(0x1234_5678_9ABC)) >> 11)
        as f64
        / (1u64 << 53) as f64
}

#[derive(Debug, Clone)]
pub struct History {
    pub period: i64,
    /// How long the device keeps records, in seconds.
    pub retention: i64,
    /// Half-open [start, end) spans without records (power loss).
    pub gaps: Vec<(i64, i64)>,
    pub seed: u64,
}

/// A run of consecutive records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub ts: i64,
    pub records: i64,
}

impl History {
    /// Exclusive end of the records at time `now`: a record is stored once
    /// its period is over.
    pub fn end(&self, now: i64) -> i64 {
        now.div_euclid(self.period) * self.period
    }

    /// Timestamp of the oldest record still kept at `now`.
    pub fn first(&self, now: i64) -> i64 {
        self.end(now) - (self.retention / self.period) * self.period
    }

    fn in_gap(&self, ts: i64) -> Option<i64> {
        self.gaps
            .iter()
            .find(|(s, e)| ts >= *s && ts < *e)
            .map(|(_, e)| *e)
    }

    /// The first record at or after `ts`, if any, at time `now`.
    pub fn next_record(&self, ts: i64, now: i64) -> Option<i64> {
        let first = self.first(now);
        let end = self.end(now);
        let mut t = if ts <= first {
            first
        } else {
            first + (ts - first + self.period - 1) / self.period * self.period
        };
        while let Some(gap_end) = self.in_gap(t) {
            t = first + (gap_end - first + self.period - 1) / self.period * self.period;
        }
        (t < end).then_some(t)
    }

    /// Record timestamps in [from, to] at time `now`, at most `limit`.
    pub fn records(&self, from: i64, to: Option<i64>, now: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = self.next_record(from, now);
        while let Some(ts) = t {
            if to.is_some_and(|to| ts > to) || out.len() >= limit {
                break;
            }
            out.push(ts);
            t = self.next_record(ts + 1, now);
        }
        out
    }

    /// The stored blocks at time `now`, starting at `from`.
    pub fn blocks(&self, from: i64, now: i64) -> Vec<Block> {
        let mut out: Vec<Block> = Vec::new();
        let mut t = self.next_record(from, now);
        let end = self.end(now);
        while let Some(start) = t {
            // Extend to the next gap or the end.
            let stop = self
                .gaps
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| *s > start)
                .min()
                .unwrap_or(end)
                .min(end);
            let records = (stop - start + self.period - 1) / self.period;
            out.push(Block { ts: start, records });
            t = self.next_record(start + records * self.period, now);
        }
        out
    }

    /// Phase `p` (0..3) of the record at `ts`.
    pub fn phase(&self, ts: i64, p: usize) -> PhaseRecord {
        let s = self.seed.wrapping_add(p as u64 * 7919);
        let day = ((ts.rem_euclid(86_400)) as f64) / 86_400.0 * std::f64::consts::TAU;
        let base = [850.0, 420.0, 260.0][p];
        let swing = [700.0, 300.0, 900.0][p];
        let mut power = base + swing * (day - 2.0 + p as f64).sin() + 400.0 * noise(s, ts, 1);
        // Phase C has "solar" that exports around midday.
        if p == 2 {
            power -= 1400.0 * (day - std::f64::consts::FRAC_PI_2).sin().max(0.0);
        }
        let power_dw = (power * 10.0).round() as i64; // 1/10 W
        let spread = (200.0 + 600.0 * noise(s, ts, 2)) as i64 * 10;
        let energy = |dw: i64| dw.max(0) * self.period * 1000 / 3600; // 1/10 W * s -> 1/10000 Wh
        let act_energy = energy(power_dw);
        let ret_energy = energy(-power_dw);
        let volt = 2300 + (40.0 * noise(s, ts, 3)) as i64 - 20; // 1/10 V
        let avg_current = (power_dw.abs() * 1000 / volt.max(1)) + 50; // mA
        PhaseRecord {
            act_energy,
            fund_act_energy: act_energy - act_energy / 2000,
            ret_energy,
            fund_ret_energy: ret_energy - ret_energy / 2000,
            lag_react: act_energy / 4,
            lead_react: ret_energy / 5,
            max_act_power: power_dw + spread,
            min_act_power: power_dw - spread,
            max_aprt_power: power_dw.abs() + spread + 500,
            min_aprt_power: (power_dw.abs() - spread).max(0) + 300,
            max_voltage: volt + 12,
            min_voltage: volt - 15,
            avg_voltage: volt,
            max_current: avg_current + 900,
            min_current: (avg_current - 700).max(0),
            avg_current,
        }
    }

    /// Neutral current (max, min, avg) in mA.
    pub fn neutral(&self, ts: i64) -> (i64, i64, i64) {
        let avg = 27 + (3.0 * noise(self.seed, ts, 9)) as i64;
        (avg + 2, avg - 1, avg)
    }

    /// The JSON text of a GetData answer for the given records.
    /// `channel` is `None` for EMData (all phases) or `Some(i)` for EM1Data:i.
    pub fn get_data_json(
        &self,
        records: &[i64],
        channel: Option<usize>,
        add_keys: bool,
        next: Option<i64>,
    ) -> String {
        let mut s = String::with_capacity(64 + records.len() * 420);
        s.push('{');
        if add_keys {
            s.push_str("\"keys\":[");
            let keys = if channel.is_some() {
                em1_keys()
            } else {
                triphase_keys()
            };
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "\"{k}\"");
            }
            s.push_str("],");
        }
        s.push_str("\"data\":[");
        let mut i = 0;
        let mut first_block = true;
        while i < records.len() {
            // A block runs while records are consecutive.
            let mut j = i + 1;
            while j < records.len() && records[j] == records[j - 1] + self.period {
                j += 1;
            }
            if !first_block {
                s.push(',');
            }
            first_block = false;
            let _ = write!(
                s,
                "{{\"ts\":{},\"period\":{},\"values\":[",
                records[i], self.period
            );
            for (n, ts) in records[i..j].iter().enumerate() {
                if n > 0 {
                    s.push(',');
                }
                s.push('[');
                self.write_values(&mut s, *ts, channel);
                s.push(']');
            }
            s.push_str("]}");
            i = j;
        }
        s.push(']');
        if let Some(n) = next {
            let _ = write!(s, ",\"next_record_ts\":{n}");
        }
        s.push('}');
        s
    }

    fn write_values(&self, s: &mut String, ts: i64, channel: Option<usize>) {
        let mut first = true;
        let mut put = |s: &mut String, (v, scale): (i64, u32)| {
            if !first {
                s.push(',');
            }
            first = false;
            write_fixed(s, v, scale);
        };
        match channel {
            Some(c) => {
                let phase = self.phase(ts, c);
                for f in FIELDS.iter().filter(|f| f.em1) {
                    put(s, phase.value(f));
                }
            }
            None => {
                for p in 0..3 {
                    let phase = self.phase(ts, p);
                    for f in &FIELDS {
                        put(s, phase.value(f));
                    }
                }
                let (mx, mn, avg) = self.neutral(ts);
                for v in [(mx, 3), (mn, 3), (avg, 3)] {
                    put(s, v);
                }
            }
        }
    }
}

/// Writes `v / 10^scale` as the shortest exact decimal text (as a device's
/// JSON would: `60.73`, `0`, `-12.5`). Hand-rolled: this runs 27 million
/// times for a year of one-minute records.
pub fn write_fixed(s: &mut String, v: i64, scale: u32) {
    let mut digits = [0u8; 24];
    let mut n = v.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    // Ensure an integer digit: 5 at scale 4 is 0.0005.
    while len <= scale as usize {
        digits[len] = b'0';
        len += 1;
    }
    // Trailing fractional zeros are not written.
    let mut skip = 0;
    while skip < scale as usize && digits[skip] == b'0' {
        skip += 1;
    }
    if v < 0 {
        s.push('-');
    }
    for i in (scale as usize..len).rev() {
        s.push(digits[i] as char);
    }
    if skip < scale as usize {
        s.push('.');
        for i in (skip..scale as usize).rev() {
            s.push(digits[i] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> History {
        History {
            period: 60,
            retention: 7 * 86_400,
            gaps: vec![(1_000_000_020, 1_000_000_020 + 1800)],
            seed: 7,
        }
    }

    #[test]
    fn fixed_decimals_print_like_a_device() {
        let mut s = String::new();
        for (v, sc) in [
            (607312, 4),
            (0, 4),
            (-125, 1),
            (28, 3),
            (2300, 1),
            (5, 4),
            (-5, 4),
            (120, 1),
            (7, 0),
        ] {
            write_fixed(&mut s, v, sc);
            s.push(' ');
        }
        assert_eq!(s, "60.7312 0 -12.5 0.028 230 0.0005 -0.0005 12 7 ");
    }

    #[test]
    fn blocks_split_at_the_power_loss_gap() {
        let h = h();
        let now = 1_000_000_020 + 86_400;
        let blocks = h.blocks(0, now);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].ts, h.first(now));
        let b0_end = blocks[0].ts + blocks[0].records * 60;
        assert!((1_000_000_020..1_000_000_080).contains(&b0_end));
        assert_eq!(blocks[1].ts % 60, h.first(now) % 60);
        assert!(blocks[1].ts >= 1_000_000_020 + 1800);
        let total: i64 = blocks.iter().map(|b| b.records).sum();
        assert_eq!(total as usize, h.records(0, None, now, usize::MAX).len());
    }

    #[test]
    fn records_page_and_skip_gaps() {
        let h = h();
        let now = 1_000_000_020 + 86_400;
        let r = h.records(1_000_000_000 - 120, None, now, 6);
        assert_eq!(r.len(), 6);
        assert!(
            r.windows(2).any(|w| w[1] - w[0] > 60),
            "a page spans the gap: {r:?}"
        );
        assert!(r.iter().all(|t| h.in_gap(*t).is_none()));
    }

    #[test]
    fn get_data_json_has_blocks_keys_and_next() {
        let h = h();
        let now = 1_000_000_020 + 86_400;
        let r = h.records(1_000_000_000 - 120, None, now, 6);
        let v: serde_json::Value =
            serde_json::from_str(&h.get_data_json(&r, None, true, Some(12345))).unwrap();
        assert_eq!(v["keys"].as_array().unwrap().len(), 51);
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][0]["values"][0].as_array().unwrap().len(), 51);
        assert_eq!(v["next_record_ts"], 12345);
        let v: serde_json::Value =
            serde_json::from_str(&h.get_data_json(&r[..1], Some(1), true, None)).unwrap();
        assert_eq!(v["keys"].as_array().unwrap().len(), 14);
        assert!(v.get("next_record_ts").is_none());
    }

    #[test]
    fn energy_matches_power_over_the_period() {
        let h = h();
        for ts in (0..50).map(|i| 1_700_000_000 + i * 60) {
            for p in 0..3 {
                let r = h.phase(ts, p);
                assert!(r.act_energy == 0 || r.ret_energy == 0);
                assert!(r.min_act_power <= r.max_act_power);
            }
        }
    }
}
