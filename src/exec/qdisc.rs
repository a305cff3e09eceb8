//! Impairments as kernel queues: a token bucket (tbf) for a rate alone, netem for the rest.
//! netem's `TCA_OPTIONS` is a `struct tc_netem_qopt` followed by netem's own attributes
//! (not a plain attribute list, which is why rtnetlink cannot build it for us).

use crate::model::impair::Impairment;

pub(crate) const TCA_OPTIONS: u16 = 2;
const NETEM: &str = "netem";
const TBF: &str = "tbf";

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `TC_LINKLAYER_ETHERNET`: the kernel computes transmission times itself, no rate table.
const LINKLAYER_ETHERNET: u8 = 1;

const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
/// `sizeof(struct tc_netem_qopt)`: latency, limit, loss, gap, duplicate, jitter.
const QOPT_LEN: usize = 24;
/// netem's old time unit (psched ticks of 64 ns), still read when the 64-bit fields are absent.
const NS_PER_TICK: u64 = 64;
/// Packets a queue holds while it delays them: enough for 10 ms at a gigabit.
const LIMIT: u32 = 10_000;
/// 100 % in the model's thousandths of a percent.
const ALL: u64 = 100_000;

fn probability(milli: u32) -> u32 {
    (u64::from(milli) * u64::from(u32::MAX)).div_ceil(ALL) as u32
}

fn milli(probability: u32) -> u32 {
    ((u64::from(probability) * ALL + u64::from(u32::MAX) / 2) / u64::from(u32::MAX)) as u32
}

fn attr(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Whether a queue of this kind may be one vpcsh put there for an impairment.
pub(crate) fn is_impairment(kind: &str) -> bool {
    kind == NETEM || kind == TBF
}

/// The queue kind and `TCA_OPTIONS` payload that do what `i` says: a rate alone is a
/// token bucket (which every kernel with traffic control has), anything else netem.
pub(crate) fn queue(i: &Impairment) -> (&'static str, Vec<u8>) {
    let rate_only = Impairment { rate_bps: 0, ..*i } == Impairment::default();
    if rate_only && i.rate_bps > 0 { (TBF, tbf_options(i.rate_bps)) } else { (NETEM, netem_options(i)) }
}

/// A token bucket at `bps`: a burst of 10 ms (at least two full frames), and a queue that
/// holds 50 ms more before it drops.
fn tbf_options(bps: u64) -> Vec<u8> {
    let bytes = bps / 8;
    let burst = u32::try_from((bytes / 100).max(3200)).unwrap_or(u32::MAX);
    let limit = u32::try_from(u64::from(burst) + bytes / 20).unwrap_or(u32::MAX);
    let mut parms = Vec::with_capacity(36);
    // struct tc_ratespec rate: cell_log, linklayer, overhead, cell_align, mpu, rate.
    parms.extend_from_slice(&[0, LINKLAYER_ETHERNET, 0, 0, 0, 0, 0, 0]);
    parms.extend_from_slice(&u32::try_from(bytes).unwrap_or(u32::MAX).to_ne_bytes());
    // No peak rate; then limit, buffer (set by TCA_TBF_BURST), mtu.
    parms.extend_from_slice(&[0u8; 12]);
    for field in [limit, 0, 0] {
        parms.extend_from_slice(&field.to_ne_bytes());
    }
    let mut out = Vec::with_capacity(64);
    attr(&mut out, TCA_TBF_PARMS, &parms);
    if bytes > u64::from(u32::MAX) {
        attr(&mut out, TCA_TBF_RATE64, &bytes.to_ne_bytes());
    }
    attr(&mut out, TCA_TBF_BURST, &burst.to_ne_bytes());
    out
}

fn netem_options(i: &Impairment) -> Vec<u8> {
    let (latency_ns, jitter_ns) = (i.delay_us * 1000, i.jitter_us * 1000);
    let ticks = |ns: u64| u32::try_from(ns / NS_PER_TICK).unwrap_or(u32::MAX);
    // Reordering sends some packets at once while the rest wait; a gap of 1 lets any packet be one.
    let gap = u32::from(i.reorder_milli > 0);
    let mut out = Vec::with_capacity(96);
    for field in [ticks(latency_ns), LIMIT, probability(i.loss_milli), gap, probability(i.duplicate_milli)] {
        out.extend_from_slice(&field.to_ne_bytes());
    }
    out.extend_from_slice(&ticks(jitter_ns).to_ne_bytes());
    attr(&mut out, TCA_NETEM_LATENCY64, &(latency_ns as i64).to_ne_bytes());
    attr(&mut out, TCA_NETEM_JITTER64, &(jitter_ns as i64).to_ne_bytes());
    if i.reorder_milli > 0 {
        let reorder = [probability(i.reorder_milli).to_ne_bytes(), 0u32.to_ne_bytes()].concat();
        attr(&mut out, TCA_NETEM_REORDER, &reorder);
    }
    if i.rate_bps > 0 {
        let bytes = i.rate_bps / 8;
        let rate = u32::try_from(bytes).unwrap_or(u32::MAX);
        let mut data = rate.to_ne_bytes().to_vec();
        data.extend_from_slice(&[0u8; 12]);
        attr(&mut out, TCA_NETEM_RATE, &data);
        if bytes > u64::from(u32::MAX) {
            attr(&mut out, TCA_NETEM_RATE64, &bytes.to_ne_bytes());
        }
    }
    out
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_of(data: &[u8]) -> Option<u64> {
    data.get(..8).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
}

/// Attributes of a payload, as (type, value).
fn attrs(mut rest: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((ty, &rest[4..len]));
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    out
}

/// What a queue of `kind` with these `TCA_OPTIONS`, as the kernel reports them, does;
/// `None` for another kind of queue, or options that cannot be read.
pub(crate) fn parse(kind: &str, data: &[u8]) -> Option<Impairment> {
    match kind {
        NETEM => parse_netem(data),
        TBF => {
            let attrs = attrs(data);
            let parms = attrs.iter().find(|(ty, _)| *ty == TCA_TBF_PARMS)?.1;
            let rate64 = attrs.iter().find(|(ty, _)| *ty == TCA_TBF_RATE64).and_then(|(_, v)| u64_of(v));
            let bytes = rate64.unwrap_or(u64::from(u32_at(parms, 8)));
            Some(Impairment { rate_bps: bytes * 8, ..Impairment::default() })
        }
        _ => None,
    }
}

fn parse_netem(data: &[u8]) -> Option<Impairment> {
    if data.len() < QOPT_LEN {
        return None;
    }
    let mut i = Impairment {
        delay_us: u64::from(u32_at(data, 0)) * NS_PER_TICK / 1000,
        loss_milli: milli(u32_at(data, 8)),
        duplicate_milli: milli(u32_at(data, 16)),
        jitter_us: u64::from(u32_at(data, 20)) * NS_PER_TICK / 1000,
        ..Impairment::default()
    };
    for (ty, value) in attrs(&data[QOPT_LEN..]) {
        match ty {
            TCA_NETEM_LATENCY64 => i.delay_us = u64_of(value)? / 1000,
            TCA_NETEM_JITTER64 => i.jitter_us = u64_of(value)? / 1000,
            TCA_NETEM_REORDER => i.reorder_milli = milli(u32_at(value, 0)),
            TCA_NETEM_RATE => i.rate_bps = u64::from(u32_at(value, 0)) * 8,
            TCA_NETEM_RATE64 => i.rate_bps = u64_of(value)? * 8,
            _ => {}
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_the_same() {
        let i = crate::model::impair::every_kind();
        let round_trip = |i: Impairment| {
            let (kind, options) = queue(&i);
            parse(kind, &options)
        };
        assert_eq!(round_trip(i), Some(i));
        let fast = Impairment { rate_bps: 80_000_000_000, ..Impairment::default() };
        assert_eq!(queue(&fast).0, "tbf", "a rate alone is a token bucket");
        assert_eq!(round_trip(fast), Some(fast));
        let slow = Impairment { rate_bps: 1_000_000, delay_us: 1000, ..Impairment::default() };
        assert_eq!(queue(&slow).0, "netem");
        assert_eq!(round_trip(slow), Some(slow));
        assert_eq!(parse("fq_codel", &[]), None);
    }

    #[test]
    fn the_struct_comes_first_then_netem_attributes() {
        let bytes =
            netem_options(&Impairment { delay_us: 1000, loss_milli: 100_000, ..Impairment::default() });
        assert_eq!(u32_at(&bytes, 0), 1_000_000 / 64, "latency in ticks");
        assert_eq!(u32_at(&bytes, 4), LIMIT);
        assert_eq!(u32_at(&bytes, 8), u32::MAX, "100 % loss");
        assert_eq!(u16::from_ne_bytes([bytes[26], bytes[27]]), TCA_NETEM_LATENCY64);
    }
}
