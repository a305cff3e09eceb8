//! Link impairments (`impair()`): delay, jitter, loss, rate, duplication and reordering of
//! a link, in units a person writes ("20ms", "10mbit", 1.5 %) and as the kernel takes them.

use serde::{Deserialize, Serialize};

/// What a link does to the packets that cross it, in each direction. Percentages are kept
/// in thousandths of a percent so that equal declarations compare equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Impairment {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_us: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter_us: u64,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub loss_milli: u32,
    /// Bits per second; 0 is unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_bps: u64,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub duplicate_milli: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub reorder_milli: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}

/// The keys `impair()` takes.
pub(crate) const KEYS: &[&str] = &["delay", "jitter", "loss", "rate", "duplicate", "reorder"];

impl Impairment {
    /// The longest a packet may be held back, one way (for probe timeouts).
    pub(crate) fn worst_delay_us(&self) -> u64 {
        self.delay_us + self.jitter_us
    }
}

/// A duration: a number with `us`, `ms` or `s` ("20ms", "1.5s"), or a bare number of
/// milliseconds. Whole microseconds; never negative.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.trim().parse().map_err(|_| format!("`{text}` is not a duration"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1e3,
        "us" => 1.0,
        "s" => 1e6,
        other => return Err(format!("unknown unit `{other}` in `{text}`: use us, ms or s")),
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` is negative: a delay is 0 or more"));
    }
    let micros = value * scale;
    if micros > 3.6e9 {
        return Err(format!("`{text}` is over an hour"));
    }
    Ok(micros.round() as u64)
}

/// A rate as tc writes it: `bit`, `kbit`, `mbit`, `gbit` (bits per second) or `bps`,
/// `kbps`, `mbps`, `gbps` (bytes per second). At least 8 bit/s.
pub(crate) fn parse_rate(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let value: f64 = number.trim().parse().map_err(|_| format!("`{text}` is not a rate"))?;
    let scale = match unit.trim() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        "" => return Err(format!("`{text}` has no unit: e.g. \"10mbit\" or \"1gbit\"")),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use bit, kbit, mbit, gbit or bps, kbps, mbps, gbps"
            ));
        }
    };
    let bps = value * scale;
    if !bps.is_finite() || !(8.0..=1e12).contains(&bps) {
        return Err(format!("`{text}` is out of range: 8bit to 1000gbit"));
    }
    // Whole bytes per second, as the kernel keeps it.
    Ok((bps / 8.0).round() as u64 * 8)
}

/// A percentage from 0 to 100, in thousandths of a percent.
pub(crate) fn parse_percent(value: f64) -> Result<u32, String> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(format!("{value} is not a percentage from 0 to 100"));
    }
    Ok((value * 1000.0).round() as u32)
}

fn duration(us: u64) -> String {
    if us >= 1_000_000 && us.is_multiple_of(1000) {
        format!("{}s", trim(us as f64 / 1e6))
    } else if us >= 1000 {
        format!("{}ms", trim(us as f64 / 1e3))
    } else {
        format!("{us}us")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn percent(milli: u32) -> String {
    format!("{}%", trim(f64::from(milli) / 1000.0))
}

fn rate(bps: u64) -> String {
    for (unit, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] {
        if bps as f64 >= scale {
            return format!("{}{unit}", trim(bps as f64 / scale));
        }
    }
    format!("{bps}bit")
}

impl std::fmt::Display for Impairment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.delay_us > 0, "delay", duration(self.delay_us)),
            (self.jitter_us > 0, "jitter", duration(self.jitter_us)),
            (self.loss_milli > 0, "loss", percent(self.loss_milli)),
            (self.rate_bps > 0, "rate", rate(self.rate_bps)),
            (self.duplicate_milli > 0, "duplicate", percent(self.duplicate_milli)),
            (self.reorder_milli > 0, "reorder", percent(self.reorder_milli)),
        ]
        .into_iter()
        .filter(|(set, ..)| *set)
        .map(|(_, what, value)| format!("{what} {value}"))
        .collect();
        f.write_str(if parts.is_empty() { "none" } else { "" })?;
        f.write_str(&parts.join(" "))
    }
}

/// One of every kind, for tests of what reads and writes impairments.
#[cfg(test)]
pub(crate) fn every_kind() -> Impairment {
    Impairment {
        delay_us: 20_000,
        jitter_us: 5_000,
        loss_milli: 1500,
        rate_bps: 10_000_000,
        duplicate_milli: 100,
        reorder_milli: 2000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_rates_and_percentages_read_as_tc_writes_them() {
        assert_eq!(parse_duration("20ms"), Ok(20_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000));
        assert_eq!(parse_duration("250us"), Ok(250));
        assert_eq!(parse_duration("7"), Ok(7_000));
        assert!(parse_duration("-5ms").unwrap_err().contains("negative"));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("100kbps"), Ok(800_000));
        assert!(parse_rate("10").unwrap_err().contains("no unit"));
        assert_eq!(parse_percent(1.5), Ok(1500));
        assert!(parse_percent(100.5).is_err());
        assert!(parse_percent(-1.0).is_err());
    }

    #[test]
    fn an_impairment_reads_back_as_it_was_written() {
        let i = every_kind();
        assert_eq!(i.to_string(), "delay 20ms jitter 5ms loss 1.5% rate 10mbit duplicate 0.1% reorder 2%");
        assert_eq!(Impairment::default().to_string(), "none");
    }
}
