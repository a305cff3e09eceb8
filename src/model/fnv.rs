//! FNV-1a: the one stable hash vpcsh derives names, addresses, MACs and fingerprints from
//! (the same on every run and every machine, which std's hasher does not promise).

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
