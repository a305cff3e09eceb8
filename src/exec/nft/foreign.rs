//! Other tools' firewalls on the machine: their base chains on the forward hook whose policy
//! is drop (Docker's and ufw's under iptables-nft, firewalld's, a hand-written nft table).
//! In an nftables hook every base chain must accept a packet, so vpcsh's own table cannot
//! let its traffic through one of these; like Docker, libvirt and netavark, vpcsh puts two
//! narrow accept rules at the top of each (in `DOCKER-USER` where Docker made one): traffic
//! from and to its uplinks, which vpcsh's own table goes on filtering. They carry vpcsh's
//! comment, so they are found and taken out again; nothing else of the other tool changes.

use std::collections::{BTreeMap, HashSet};
use std::io;

use super::*;
use crate::plan::kernel::ForeignChain;
use crate::plan::naming::MACHINE_UPLINK_PREFIX;
use crate::plan::nft::{Action, IfName, Match, Rule};

const NFT_MSG_DELRULE: u16 = 8;
const NFTA_RULE_HANDLE: u16 = 3;
/// A table that its creator owns: no other process may change it.
const NFT_TABLE_F_OWNER: u32 = 2;
const NF_INET_FORWARD: u32 = 2;
/// Docker's chain for other tools' rules, which it never touches.
const DOCKER_USER: &str = "DOCKER-USER";

fn family_name(family: u8) -> Option<&'static str> {
    match family {
        NFPROTO_IPV4 => Some("ip"),
        NFPROTO_IPV6 => Some("ip6"),
        NFPROTO_INET => Some("inet"),
        _ => None,
    }
}

fn family_number(name: &str) -> io::Result<u8> {
    match name {
        "ip" => Ok(NFPROTO_IPV4),
        "ip6" => Ok(NFPROTO_IPV6),
        "inet" => Ok(NFPROTO_INET),
        other => Err(io::Error::new(io::ErrorKind::Unsupported, format!("vpcsh cannot write {other} rules"))),
    }
}

/// vpcsh's rules in another tool's chain: traffic from and to its uplinks.
fn passage_rules() -> [Rule; 2] {
    let uplinks = || IfName::Prefix(MACHINE_UPLINK_PREFIX.into());
    [
        Rule { matches: vec![Match::Iif(uplinks())], action: Action::Accept, origin: None, log: None },
        Rule { matches: vec![Match::Oif(uplinks())], action: Action::Accept, origin: None, log: None },
    ]
}

impl Nft {
    /// Every other tool's dropping forward chain here, with whether vpcsh's rules are in it.
    pub(crate) fn foreign_chains(&mut self) -> io::Result<BTreeMap<ForeignChain, bool>> {
        let owned: HashSet<(u8, String)> = self
            .tables()?
            .into_iter()
            .filter(|(.., flags)| flags & NFT_TABLE_F_OWNER != 0)
            .map(|(family, name, _)| (family, name))
            .collect();
        let seq = self.next_seq();
        let chains = self
            .request_by_family(Msg::nft_in(NFPROTO_UNSPEC, NFT_MSG_GETCHAIN, NLM_F_DUMP, seq), seq)?
            .map_err(io::Error::from_raw_os_error)?;
        let mut all = HashSet::new();
        let mut dropping = Vec::new();
        for (family, body) in &chains {
            let a = attrs(body);
            let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
            let table = get(NFTA_CHAIN_TABLE).map(text).unwrap_or_default();
            let name = get(NFTA_CHAIN_NAME).map(text).unwrap_or_default();
            all.insert((*family, table.clone(), name.clone()));
            let hook = get(NFTA_CHAIN_HOOK).map(attrs).unwrap_or_default();
            let hooknum = hook.iter().find(|(ty, _)| *ty == NFTA_HOOK_HOOKNUM).map(|(_, v)| be32(v));
            let drops = get(NFTA_CHAIN_POLICY).map(be32) == Some(NF_DROP);
            if table != TABLE && hooknum == Some(NF_INET_FORWARD) && drops && family_name(*family).is_some() {
                dropping.push((*family, table, name));
            }
        }
        let mut out = BTreeMap::new();
        for (family, table, chain) in dropping {
            let docker_user = all.contains(&(family, table.clone(), DOCKER_USER.to_string()));
            let rules_in = if docker_user { DOCKER_USER.to_string() } else { chain.clone() };
            let open = self.our_rules(family, &table, &rules_in)?.len() == passage_rules().len();
            let foreign = ForeignChain {
                family: family_name(family).expect("filtered above").to_string(),
                writable: !owned.contains(&(family, table.clone())),
                table,
                chain,
                rules_in,
            };
            out.insert(foreign, open);
        }
        Ok(out)
    }

    /// The handles of vpcsh's passage rules in a chain.
    fn our_rules(&mut self, family: u8, table: &str, chain: &str) -> io::Result<Vec<u64>> {
        let wanted: Vec<String> = passage_rules().iter().map(Rule::fingerprint).collect();
        let seq = self.next_seq();
        let mut dump = Msg::nft_in(family, NFT_MSG_GETRULE, NLM_F_DUMP, seq);
        dump.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
        let rules = self.request(dump, seq)?.map_err(io::Error::from_raw_os_error)?;
        Ok(rules
            .iter()
            .filter_map(|body| {
                let r = attrs(body);
                let get = |t: u16| r.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
                let here = get(NFTA_RULE_TABLE).map(text).as_deref() == Some(table)
                    && get(NFTA_RULE_CHAIN).map(text).as_deref() == Some(chain);
                let ours = rule_comment(&r).is_some_and(|c| wanted.contains(&c));
                let handle =
                    get(NFTA_RULE_HANDLE).and_then(|h| h.get(..8)?.try_into().ok()).map(u64::from_be_bytes);
                handle.filter(|_| here && ours)
            })
            .collect())
    }

    /// Puts vpcsh's rules at the top of `chain`, in one batch with taking out any of them
    /// already there (so a half-removed pair is never doubled).
    pub(crate) fn open_foreign(&mut self, chain: &ForeignChain) -> io::Result<()> {
        let family = family_number(&chain.family)?;
        let stale = self.our_rules(family, &chain.table, &chain.rules_in)?;
        self.transact(|nft| {
            let mut msgs = delete_messages(nft, family, chain, &stale);
            // Each goes to the top, so the last inserted ends first.
            for rule in passage_rules().iter().rev() {
                let mut m = Msg::nft_in(family, NFT_MSG_NEWRULE, NLM_F_CREATE, nft.next_seq());
                m.str(NFTA_RULE_TABLE, &chain.table).str(NFTA_RULE_CHAIN, &chain.rules_in);
                rule_body(&mut m, rule);
                msgs.push(m.finish());
            }
            msgs
        })
    }

    /// Takes vpcsh's rules out of `chain`, if they are there.
    pub(crate) fn close_foreign(&mut self, chain: &ForeignChain) -> io::Result<()> {
        let family = family_number(&chain.family)?;
        let ours = self.our_rules(family, &chain.table, &chain.rules_in)?;
        if ours.is_empty() {
            return Ok(());
        }
        self.transact(|nft| delete_messages(nft, family, chain, &ours))
    }
}

fn delete_messages(nft: &mut Nft, family: u8, chain: &ForeignChain, handles: &[u64]) -> Vec<Vec<u8>> {
    handles
        .iter()
        .map(|handle| {
            let mut m = Msg::nft_in(family, NFT_MSG_DELRULE, 0, nft.next_seq());
            m.str(NFTA_RULE_TABLE, &chain.table).str(NFTA_RULE_CHAIN, &chain.rules_in);
            m.attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
            m.finish()
        })
        .collect()
}
