//! ketama placement as twemproxy (nutcracker) computes it, so that a pool
//! moved from twemproxy — or from a libmemcached client, whose md5 ketama
//! twemproxy copies — keeps every key on the server it is already on.
//!
//! Follows twemproxy's `nc_ketama.c` and `hashkit/` exactly, including
//! their quirks, because every quirk decides where some key lives:
//! - a server's name on the continuum is `host:port`, or just `host` when
//!   the port is 11211 (libmemcached's convention);
//! - points per server are `floor(weight / total * 40 * servers) * 4`,
//!   computed in single precision as C does;
//! - each point group hashes `"<name>-<i>"` with md5 and takes four
//!   little-endian 32-bit words of the digest;
//! - a key goes to the first point at or after its hash, wrapping around;
//! - the key hashes work on C `char`s, which are signed on x86: a byte of
//!   0x80 or more is sign-extended before it is mixed in (fnv, crc32,
//!   one_at_a_time).

use md5::{Digest, Md5};

/// Points per server at weight parity (40 md5 digests of 4 points each).
const POINTS_PER_SERVER: f32 = 160.0;
/// Points each md5 digest yields.
const POINTS_PER_HASH: u32 = 4;
/// twemproxy's default memcached port, left out of server names.
const DEFAULT_PORT: &str = "11211";

/// How a key is hashed onto the continuum: twemproxy's `hash:` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
pub enum KeyHash {
    /// FNV-1a in twemproxy's 32-bit arithmetic (its default).
    #[default]
    #[value(name = "fnv1a_64")]
    Fnv1a64,
    /// FNV-1, twemproxy's `fnv1_64`.
    #[value(name = "fnv1_64")]
    Fnv164,
    /// FNV-1a, 32-bit.
    #[value(name = "fnv1a_32")]
    Fnv1a32,
    /// FNV-1, 32-bit.
    #[value(name = "fnv1_32")]
    Fnv132,
    /// The first four bytes of the md5 digest (libmemcached's ketama).
    Md5,
    /// twemproxy's `crc32`: 15 bits of CRC-32 (libmemcached's).
    Crc32,
    /// The whole CRC-32.
    Crc32a,
    /// Bob Jenkins' one-at-a-time.
    OneAtATime,
}

impl KeyHash {
    /// The hash of `key`, as twemproxy computes it.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            // twemproxy truncates the 64-bit FNV constants to 32 bits.
            KeyHash::Fnv1a64 => fnv(key, 0xcbf2_9ce4_8422_2325_u64 as u32, 0x1b3, true),
            KeyHash::Fnv164 => fnv(key, 0xcbf2_9ce4_8422_2325_u64 as u32, 0x1b3, false),
            KeyHash::Fnv1a32 => fnv(key, 0x811c_9dc5, 0x0100_0193, true),
            KeyHash::Fnv132 => fnv(key, 0x811c_9dc5, 0x0100_0193, false),
            KeyHash::Md5 => md5_word(key, 0),
            // Sign extension cannot change CRC-32: only the low 8 bits of
            // `crc ^ byte` index its table.
            KeyHash::Crc32 => (crc32fast::hash(key) >> 16) & 0x7fff,
            KeyHash::Crc32a => crc32fast::hash(key),
            KeyHash::OneAtATime => one_at_a_time(key),
        }
    }
}

/// A C `char` as twemproxy's hashes see it: signed, widened to 32 bits.
fn signed(b: u8) -> u32 {
    b as i8 as i32 as u32
}

fn fnv(key: &[u8], basis: u32, prime: u32, xor_first: bool) -> u32 {
    let mut h = basis;
    for &b in key {
        if xor_first {
            h ^= signed(b);
            h = h.wrapping_mul(prime);
        } else {
            h = h.wrapping_mul(prime);
            h ^= signed(b);
        }
    }
    h
}

fn one_at_a_time(key: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in key {
        h = h.wrapping_add(signed(b));
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
    }
    h = h.wrapping_add(h << 3);
    h ^= h >> 11;
    h.wrapping_add(h << 15)
}

/// The `word`th little-endian 32-bit word of md5(`data`).
fn md5_word(data: &[u8], word: usize) -> u32 {
    let digest = Md5::digest(data);
    u32::from_le_bytes(digest[word * 4..word * 4 + 4].try_into().expect("4 bytes"))
}

/// The name a server has on twemproxy's continuum.
pub fn server_name(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, DEFAULT_PORT)) => host,
        _ => addr,
    }
}

/// A ketama continuum: points sorted by value, each naming a server.
#[derive(Debug)]
pub struct Continuum {
    points: Vec<(u32, usize)>,
    hash: KeyHash,
}

impl Continuum {
    /// The continuum of `servers` (`(addr, weight)`; index `i` in the
    /// answers is `servers[i]`), keys hashed with `hash`.
    pub fn new(servers: &[(&str, usize)], hash: KeyHash) -> Continuum {
        let total: usize = servers.iter().map(|(_, w)| w).sum();
        let live = servers.len() as f32;
        let mut points = Vec::new();
        for (index, (addr, weight)) in servers.iter().enumerate() {
            // As C computes it: float all the way, plus a double epsilon.
            let pct = *weight as f32 / total as f32;
            let scaled = pct * POINTS_PER_SERVER / POINTS_PER_HASH as f32 * live;
            let groups = ((f64::from(scaled) + 0.000_000_000_1) as f32).floor() as u32;
            let name = server_name(addr);
            for group in 0..groups {
                let host = format!("{name}-{group}");
                let digest = Md5::digest(host.as_bytes());
                for word in 0..POINTS_PER_HASH as usize {
                    let value = u32::from_le_bytes(
                        digest[word * 4..word * 4 + 4].try_into().expect("4 bytes"),
                    );
                    points.push((value, index));
                }
            }
        }
        points.sort_by_key(|&(value, _)| value);
        Continuum { points, hash }
    }

    /// Where on the continuum `key` falls: the first point at or after its
    /// hash, wrapping around.
    fn position(&self, key: &str) -> usize {
        let h = self.hash.hash(key.as_bytes());
        let i = self.points.partition_point(|&(value, _)| value < h);
        if i == self.points.len() { 0 } else { i }
    }

    /// The index of the server that owns `key`.
    pub fn server_for(&self, key: &str) -> usize {
        self.points[self.position(key)].1
    }

    /// Server indexes in continuum order from the owner of `key` (the owner
    /// first), each once.
    pub fn candidates(&self, key: &str) -> impl Iterator<Item = usize> + '_ {
        let start = self.position(key);
        let n = self.points.len();
        let mut seen = Vec::new();
        (0..n).filter_map(move |step| {
            let server = self.points[(start + step) % n].1;
            if seen.contains(&server) {
                None
            } else {
                seen.push(server);
                Some(server)
            }
        })
    }

    /// Each server's share of the hash space.
    pub fn shares(&self, servers: usize) -> Vec<f64> {
        let mut owned = vec![0u64; servers];
        let n = self.points.len();
        for i in 0..n {
            let (value, server) = self.points[i];
            // A point owns the arc from the previous point (exclusive).
            let prev = if i == 0 {
                self.points[n - 1].0
            } else {
                self.points[i - 1].0
            };
            owned[server] += u64::from(value.wrapping_sub(prev));
        }
        let total = (1u64 << 32) as f64;
        owned.iter().map(|&o| o as f64 / total).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_match_reference_values() {
        // FNV-1a/32 and CRC-32 reference values; fnv1a_64 is FNV-1a with
        // the 64-bit constants truncated to 32 bits, as twemproxy does.
        assert_eq!(KeyHash::Fnv1a32.hash(b""), 0x811c_9dc5);
        assert_eq!(KeyHash::Fnv1a32.hash(b"a"), 0xe40c_292c);
        assert_eq!(KeyHash::Fnv1a32.hash(b"foobar"), 0xbf9c_f968);
        assert_eq!(KeyHash::Fnv132.hash(b"foobar"), 0x31f0_b262);
        assert_eq!(KeyHash::Crc32a.hash(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            KeyHash::Crc32.hash(b"123456789"),
            (0xcbf4_3926 >> 16) & 0x7fff
        );
        assert_eq!(KeyHash::Fnv1a64.hash(b""), 0x8422_2325);
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661: first word, LE.
        assert_eq!(KeyHash::Md5.hash(b"a"), 0xb975_c10c);
        // A high byte is sign-extended before it is mixed in.
        let h = 0x8422_2325u32 ^ 0xffff_ffe9;
        assert_eq!(KeyHash::Fnv1a64.hash(&[0xe9]), h.wrapping_mul(0x1b3));
    }

    #[test]
    fn names_leave_out_the_default_port() {
        assert_eq!(server_name("10.0.0.1:11211"), "10.0.0.1");
        assert_eq!(server_name("10.0.0.1:11212"), "10.0.0.1:11212");
        assert_eq!(server_name("cache-0.memcached:11211"), "cache-0.memcached");
    }

    #[test]
    fn points_follow_weights_and_shares_sum_to_one() {
        let c = Continuum::new(&[("a:1", 1), ("b:1", 1), ("c:1", 2)], KeyHash::Fnv1a64);
        let count = |i| c.points.iter().filter(|p| p.1 == i).count();
        // floor(w/4 * 40 * 3) * 4: 120, 120 and 240 points.
        assert_eq!((count(0), count(1), count(2)), (120, 120, 240));
        let shares = c.shares(3);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(shares[2] > shares[0] && shares[2] > shares[1], "{shares:?}");
    }

    #[test]
    fn candidates_start_at_the_owner_and_name_each_server_once() {
        let c = Continuum::new(&[("a:1", 1), ("b:1", 1), ("c:1", 1)], KeyHash::Md5);
        for key in ["x", "y", "user:42"] {
            let all: Vec<usize> = c.candidates(key).collect();
            assert_eq!(all[0], c.server_for(key));
            let mut sorted = all.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2]);
        }
    }
}
