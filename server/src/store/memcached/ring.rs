//! Key placement: which shard owns a key.
//!
//! A consistent-hash ring (consistent_hash_ring, hashed with XXH64 seed 0
//! — the crate's default FNV puts short keys like "a", "b", "c" next to
//! each other on the ring, so they all land on one shard) over the shard
//! addresses. Placement depends only on the set of addresses and weights —
//! never on their order or on the process — so every memgate replica, and a
//! restarted one, sends a key to the same shard, and adding a shard moves
//! only about 1/N of the keys. Shards are identified by their address as
//! written, so all replicas must spell the addresses the same way.

use std::hash::{BuildHasherDefault, Hash, Hasher};

use consistent_hash_ring::{Ring as HashRing, RingBuilder};
use twox_hash::XxHash64;

use super::ketama::{Continuum, KeyHash};

/// A fixed, unseeded hash: the same in every process and on every machine.
type StableHash = BuildHasherDefault<XxHash64>;

/// Virtual nodes per unit of weight. ketama uses 160; this many keeps each
/// shard within a few percent of its fair share (see the tests).
pub const VNODES_PER_WEIGHT: usize = 160;

/// One memcached server and its share of the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// `host:port` as given.
    pub addr: String,
    /// Relative share of keys (default 1).
    pub weight: usize,
}

impl std::str::FromStr for ShardSpec {
    type Err = String;

    /// Parses `host:port` or `host:port:weight` (IPv6 as `[::1]:11211`).
    fn from_str(s: &str) -> Result<ShardSpec, String> {
        let s = s.trim();
        let (addr, weight) = match s.rsplit_once(':') {
            // A colon after the host part means the last field is a weight.
            Some((left, w)) if left.rsplit_once(']').map_or(left, |(_, r)| r).contains(':') => {
                let weight = w
                    .parse::<usize>()
                    .ok()
                    .filter(|w| (1..=100).contains(w))
                    .ok_or_else(|| format!("bad weight {w:?} in {s:?}: expected 1..=100"))?;
                (left, weight)
            }
            _ => (s, 1),
        };
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("bad memcached address {s:?}: expected host:port[:weight]"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!(
                "bad memcached address {s:?}: expected host:port[:weight]"
            ));
        }
        Ok(ShardSpec {
            addr: addr.to_owned(),
            weight,
        })
    }
}

/// A ring node: hashed by address only, carrying its index in the shard list.
#[derive(Clone, Debug)]
struct Node {
    addr: String,
    index: usize,
}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl Eq for Node {}

/// How keys are spread over the servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// memgate's own consistent-hash ring (XXH64, 160 points per unit of
    /// weight).
    #[default]
    Ring,
    /// ketama exactly as twemproxy places keys (with `--hash md5`, as
    /// libmemcached's ketama): a pool moved from either keeps its keys
    /// where they are.
    Ketama,
}

/// Which placement, and for ketama which key hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The algorithm.
    pub distribution: Distribution,
    /// The key hash (ketama only).
    pub hash: KeyHash,
}

/// Maps keys to shard indexes.
pub struct Ring {
    placement: Placer,
    /// How many shards it places keys on.
    servers: usize,
}

enum Placer {
    Ring(HashRing<Node, StableHash>),
    Ketama(Continuum),
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.placement {
            Placer::Ring(r) => f.debug_struct("Ring").field("nodes", &r.len()).finish(),
            Placer::Ketama(c) => f.debug_tuple("Ring").field(c).finish(),
        }
    }
}

impl Ring {
    /// memgate's own ring over `shards`; index `i` in the answers is
    /// `shards[i]`.
    pub fn new(shards: &[ShardSpec]) -> Ring {
        Ring::with_placement(shards, Placement::default())
    }

    /// A ring over `shards` placing keys by `placement`.
    pub fn with_placement(shards: &[ShardSpec], placement: Placement) -> Ring {
        let placement = match placement.distribution {
            Distribution::Ring => {
                let nodes = shards.iter().enumerate().map(|(index, s)| {
                    let node = Node {
                        addr: s.addr.clone(),
                        index,
                    };
                    (node, s.weight * VNODES_PER_WEIGHT)
                });
                Placer::Ring(
                    RingBuilder::new(StableHash::default())
                        .weighted_nodes_iter(nodes)
                        .build(),
                )
            }
            Distribution::Ketama => {
                let servers: Vec<(&str, usize)> =
                    shards.iter().map(|s| (s.addr.as_str(), s.weight)).collect();
                Placer::Ketama(Continuum::new(&servers, placement.hash))
            }
        };
        Ring {
            placement,
            servers: shards.len(),
        }
    }

    /// The index of the shard that owns `key`.
    pub fn shard_for(&self, key: &str) -> usize {
        match &self.placement {
            Placer::Ring(r) => r.get(key).index,
            Placer::Ketama(c) => c.server_for(key),
        }
    }

    /// Shard indexes in ring order after the owner of `key` (the owner
    /// first): where a key goes when its owner is down.
    pub fn candidates(&self, key: &str) -> Box<dyn Iterator<Item = usize> + '_> {
        match &self.placement {
            Placer::Ring(r) => Box::new(r.replicas(key).map(|n| n.index)),
            Placer::Ketama(c) => Box::new(c.candidates(key)),
        }
    }

    /// The fraction of the hash space each shard owns, by index: the share
    /// of keys it gets. Exact, from the ring's own ranges; sums to 1.
    pub fn shares(&self) -> Vec<f64> {
        match &self.placement {
            Placer::Ring(ring) => {
                let mut owned = vec![0u128; self.servers];
                for range in ring.resident_ranges() {
                    let (start, end) = (*range.keys().start(), *range.keys().end());
                    owned[range.node().index] += u128::from(end - start) + 1;
                }
                let total = owned.iter().sum::<u128>() as f64;
                owned.iter().map(|&n| n as f64 / total).collect()
            }
            Placer::Ketama(c) => c.shares(self.servers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(addrs: &[&str]) -> Vec<ShardSpec> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user:{i}:profile")).collect()
    }

    #[test]
    fn parses_addresses_and_weights() {
        let s: ShardSpec = "127.0.0.1:11211".parse().unwrap();
        assert_eq!((s.addr.as_str(), s.weight), ("127.0.0.1:11211", 1));
        let s: ShardSpec = "cache-a:11211:3".parse().unwrap();
        assert_eq!((s.addr.as_str(), s.weight), ("cache-a:11211", 3));
        let s: ShardSpec = "[::1]:11211".parse().unwrap();
        assert_eq!((s.addr.as_str(), s.weight), ("[::1]:11211", 1));
        let s: ShardSpec = "[::1]:11211:2".parse().unwrap();
        assert_eq!((s.addr.as_str(), s.weight), ("[::1]:11211", 2));
        for bad in [
            "",
            "host",
            "host:",
            ":11211",
            "host:notaport",
            "h:1:0",
            "h:1:x",
        ] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn placement_ignores_order() {
        let a = Ring::new(&specs(&[
            "10.0.0.1:11211",
            "10.0.0.2:11211",
            "10.0.0.3:11211",
        ]));
        let b = Ring::new(&specs(&[
            "10.0.0.3:11211",
            "10.0.0.1:11211",
            "10.0.0.2:11211",
        ]));
        let names_a = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"];
        let names_b = ["10.0.0.3:11211", "10.0.0.1:11211", "10.0.0.2:11211"];
        for k in keys(10_000) {
            assert_eq!(names_a[a.shard_for(&k)], names_b[b.shard_for(&k)], "{k}");
        }
    }

    #[test]
    fn placement_is_fixed_across_processes() {
        // Pinned answers: a change of hash function or ring layout would
        // silently move every key in production, so it must fail here.
        let ring = Ring::new(&specs(&[
            "10.0.0.1:11211",
            "10.0.0.2:11211",
            "10.0.0.3:11211",
        ]));
        let placed: Vec<usize> = [
            "a",
            "b",
            "c",
            "d",
            "user:1",
            "user:2",
            "user:3",
            "session:xyz",
        ]
        .iter()
        .map(|k| ring.shard_for(k))
        .collect();
        assert_eq!(placed, PINNED_PLACEMENT);
    }

    const PINNED_PLACEMENT: [usize; 8] = [2, 2, 1, 0, 2, 2, 2, 0];

    #[test]
    fn keys_spread_evenly() {
        for addrs in [
            vec!["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"],
            vec![
                "10.0.0.1:11211",
                "10.0.0.2:11211",
                "10.0.0.3:11211",
                "10.0.0.4:11211",
            ],
            vec![
                "cache-0:11211",
                "cache-1:11211",
                "cache-2:11211",
                "cache-3:11211",
                "cache-4:11211",
            ],
        ] {
            let ring = Ring::new(&specs(&addrs));
            let n = 100_000;
            // Both long structured keys and short sequential ones.
            let short: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            for keys in [keys(n), short] {
                let mut counts = vec![0usize; addrs.len()];
                for k in keys {
                    counts[ring.shard_for(&k)] += 1;
                }
                let mean = n as f64 / addrs.len() as f64;
                let max = *counts.iter().max().unwrap() as f64;
                assert!(
                    max <= 1.15 * mean,
                    "{addrs:?}: {counts:?} (max/mean {:.3})",
                    max / mean
                );
            }
        }
    }

    #[test]
    fn adding_a_shard_moves_about_one_nth() {
        let before = specs(&[
            "cache-0:11211",
            "cache-1:11211",
            "cache-2:11211",
            "cache-3:11211",
        ]);
        let mut after = before.clone();
        after.push("cache-4:11211".parse().unwrap());
        let (r1, r2) = (Ring::new(&before), Ring::new(&after));
        let n = 100_000;
        let mut moved = 0;
        for k in keys(n) {
            let (i, j) = (r1.shard_for(&k), r2.shard_for(&k));
            if i != j {
                // A key only ever moves to the new shard.
                assert_eq!(j, 4, "{k} moved between old shards");
                moved += 1;
            }
        }
        let share = moved as f64 / n as f64;
        assert!(
            (0.15..0.25).contains(&share),
            "moved {share:.3} of keys, expected ~0.2"
        );
    }

    #[test]
    fn shares_sum_to_one_and_match_placement() {
        for addrs in [
            vec!["127.0.0.1:11211"],
            vec!["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"],
            vec!["a:1:1", "b:1:3"],
            vec!["cache-0:11211:2", "cache-1:11211", "cache-2:11211:5"],
        ] {
            let ring = Ring::new(&specs(&addrs));
            let shares = ring.shares();
            assert_eq!(shares.len(), addrs.len());
            let sum: f64 = shares.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{addrs:?}: shares sum to {sum}");
            // The shares are where keys actually go.
            let n = 100_000;
            let mut counts = vec![0usize; addrs.len()];
            for k in keys(n) {
                counts[ring.shard_for(&k)] += 1;
            }
            for (i, share) in shares.iter().enumerate() {
                let sampled = counts[i] as f64 / n as f64;
                assert!(
                    (share - sampled).abs() < 0.02,
                    "{addrs:?}: shard {i} owns {share:.4} of the ring but got {sampled:.4} of the keys"
                );
            }
        }
    }

    #[test]
    fn shares_follow_weights() {
        let specs = specs(&["a:1:1", "b:1:3", "c:1:1", "d:1:5"]);
        let shares = Ring::new(&specs).shares();
        let total: usize = specs.iter().map(|s| s.weight).sum();
        for (spec, share) in specs.iter().zip(&shares) {
            let fair = spec.weight as f64 / total as f64;
            assert!(
                (share / fair - 1.0).abs() < 0.15,
                "{} (weight {}) owns {share:.3}, fair share {fair:.3}",
                spec.addr,
                spec.weight
            );
        }
    }

    #[test]
    fn weights_shift_share() {
        let ring = Ring::new(&specs(&["a:1:1", "b:1:3"]));
        let heavy = keys(40_000)
            .iter()
            .filter(|k| ring.shard_for(k) == 1)
            .count();
        let share = heavy as f64 / 40_000.0;
        assert!(
            (0.68..0.82).contains(&share),
            "weight-3 shard got {share:.3}"
        );
    }
}
