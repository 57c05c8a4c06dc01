//! memcached's text protocol: encoding commands and decoding replies, with
//! no I/O.
//!
//! Every byte read from the network is untrusted. A [`Decoder`] consumes a
//! reply incrementally from a read buffer and fails (instead of panicking or
//! allocating without bound) on anything malformed, truncated at a limit, or
//! inconsistent with the command it answers — for example a `VALUE` line for
//! a key that was not asked for. A decode error ends the connection, so a
//! reply can never be handed to the wrong request.
//!
//! memcache-async is not used for this layer: its `set`/`delete` send
//! `noreply` (so a write cannot be confirmed), its API needs exclusive
//! `&mut` access per request (no pipelining), and it allocates whatever
//! length a reply announces.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Longest reply line (everything but value data) accepted, in bytes.
/// memcached's own lines are far shorter; a longer one means the peer is not
/// speaking the protocol.
pub const MAX_LINE_LEN: usize = 8 * 1024;

/// A reply that does not follow the protocol. The connection it came from
/// must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A line longer than [`MAX_LINE_LEN`] without a terminator.
    #[error("reply line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// A line that is not valid for the command that was sent.
    #[error("unexpected reply line {0:?}")]
    Unexpected(String),
    /// A `VALUE` block longer than the limit given to the decoder.
    #[error("reply announces a {len}-byte value, more than the {max}-byte limit")]
    ValueTooLarge {
        /// Announced length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A `VALUE` for a key that was not requested or came out of order.
    #[error("reply carries key {0:?} that was not requested at that position")]
    UnrequestedKey(String),
    /// Value data not followed by `\r\n`.
    #[error("value data is not terminated by CRLF")]
    BadDataTerminator,
    /// A reply that does not answer the request it was matched with: the
    /// wrong token or key, or a reply where none was awaited.
    #[error("reply does not match its request: {0}")]
    Mismatch(String),
    /// `ERROR` or `CLIENT_ERROR`: memcached did not understand the command.
    /// After these, the stream position is not trustworthy.
    #[error("memcached rejected the command: {0}")]
    Rejected(String),
}

/// A complete reply, matched to the command it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Values found by a `get`, in reply order (a subsequence of the keys
    /// asked for).
    Values(Vec<(String, Bytes)>),
    /// `STORED`.
    Stored,
    /// `NOT_STORED`.
    NotStored,
    /// `DELETED`.
    Deleted,
    /// `NOT_FOUND`.
    NotFound,
    /// `VERSION <v>`.
    Version(String),
    /// `STAT <name> <value>` lines of a `stats` command.
    Stats(Vec<(String, String)>),
    /// Keys from `lru_crawler metadump`, filtered and capped (see
    /// [`Decoder::metadump`]).
    Keys {
        /// The keys kept, sorted.
        keys: Vec<String>,
        /// Live keys matching the prefix that were skipped because they
        /// are not UTF-8 (another client wrote them; memgate's keys are
        /// strings, so it cannot return them).
        skipped: usize,
    },
    /// `BUSY <message>`: the LRU crawler is already running a dump.
    Busy(String),
    /// `SERVER_ERROR <message>`: memcached could not do it (e.g. out of
    /// memory, object too large). The connection stays in sync.
    ServerError(String),
}

/// Appends `get <keys...>\r\n`.
pub fn encode_get<K: AsRef<str>>(buf: &mut BytesMut, keys: &[K]) {
    buf.put_slice(b"get");
    for k in keys {
        buf.put_u8(b' ');
        buf.put_slice(k.as_ref().as_bytes());
    }
    buf.put_slice(b"\r\n");
}

/// Appends `set <key> 0 <exptime> <len>\r\n<value>\r\n` (acknowledged: no
/// `noreply`).
pub fn encode_set(buf: &mut BytesMut, key: &str, exptime: u64, value: &[u8]) {
    buf.reserve(key.len() + value.len() + 48);
    buf.put_slice(b"set ");
    buf.put_slice(key.as_bytes());
    buf.put_slice(format!(" 0 {exptime} {}\r\n", value.len()).as_bytes());
    buf.put_slice(value);
    buf.put_slice(b"\r\n");
}

/// Appends `delete <key>\r\n` (acknowledged).
pub fn encode_delete(buf: &mut BytesMut, key: &str) {
    buf.put_slice(b"delete ");
    buf.put_slice(key.as_bytes());
    buf.put_slice(b"\r\n");
}

/// Appends `version\r\n`, the read-only liveness probe.
pub fn encode_version(buf: &mut BytesMut) {
    buf.put_slice(b"version\r\n");
}

/// Appends `stats\r\n`: the server's general statistics (items, memory,
/// hits, uptime, version), for the Stats RPC.
pub fn encode_stats(buf: &mut BytesMut) {
    buf.put_slice(b"stats\r\n");
}

/// Appends `stats settings\r\n` (to learn `item_size_max`).
pub fn encode_stats_settings(buf: &mut BytesMut) {
    buf.put_slice(b"stats settings\r\n");
}

/// Which walk a key dump takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpWalk {
    /// `lru_crawler metadump hash` (memcached 1.6.10+): walks the hash
    /// table, so it sees every item that exists for the whole dump.
    Hash,
    /// `lru_crawler metadump all`: walks the LRU queues, and misses items
    /// that move between queues while it runs (reads bump items; the LRU
    /// maintainer moves new ones). For memcached older than 1.6.10.
    Lru,
}

/// Appends `lru_crawler metadump hash|all\r\n`.
pub fn encode_metadump(buf: &mut BytesMut, walk: DumpWalk) {
    buf.put_slice(match walk {
        DumpWalk::Hash => b"lru_crawler metadump hash\r\n",
        DumpWalk::Lru => b"lru_crawler metadump all\r\n",
    });
}

/// What kind of reply a decoder expects.
#[derive(Debug)]
enum Expect {
    /// A `get`: the distinct keys asked for, in order, and the position of
    /// the next key a `VALUE` may name.
    Values {
        keys: Vec<String>,
        next: usize,
        max_value: usize,
        found: Vec<(String, Bytes)>,
    },
    Store,
    Delete,
    Version,
    Stats(Vec<(String, String)>),
    Metadump(Metadump),
}

/// The state of a metadump being decoded: keys kept so far.
#[derive(Debug)]
struct Metadump {
    prefix: String,
    limit: usize,
    now_unix: i64,
    keys: BTreeSet<String>,
    skipped: usize,
}

/// Decodes the reply to one command, incrementally. Feed it the connection's
/// read buffer after each read; it consumes complete parts of the reply and
/// returns the reply once it is complete.
#[derive(Debug)]
pub struct Decoder {
    expect: Expect,
}

impl Decoder {
    /// For a `get` of `keys` (distinct, in the order sent); values longer
    /// than `max_value` are refused.
    pub fn get(keys: Vec<String>, max_value: usize) -> Decoder {
        Decoder {
            expect: Expect::Values {
                keys,
                next: 0,
                max_value,
                found: Vec::new(),
            },
        }
    }

    /// For a `set`.
    pub fn store() -> Decoder {
        Decoder {
            expect: Expect::Store,
        }
    }

    /// For a `delete`.
    pub fn delete() -> Decoder {
        Decoder {
            expect: Expect::Delete,
        }
    }

    /// For a `version`.
    pub fn version() -> Decoder {
        Decoder {
            expect: Expect::Version,
        }
    }

    /// For a `stats ...`.
    pub fn stats() -> Decoder {
        Decoder {
            expect: Expect::Stats(Vec::new()),
        }
    }

    /// For `lru_crawler metadump all`: keeps the `limit` smallest keys that
    /// start with `prefix` and have not expired at `now_unix`, so memory stays
    /// bounded however many items the shard holds. Keys that are not UTF-8
    /// are counted and skipped.
    pub fn metadump(prefix: String, limit: usize, now_unix: i64) -> Decoder {
        Decoder {
            expect: Expect::Metadump(Metadump {
                prefix,
                limit,
                now_unix,
                keys: BTreeSet::new(),
                skipped: 0,
            }),
        }
    }

    /// Consumes what it can of `buf`. `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        loop {
            let Some(line_len) = find_line(buf, self.line_terminator())? else {
                return Ok(None);
            };
            match &mut self.expect {
                Expect::Values {
                    keys,
                    next,
                    max_value,
                    found,
                } => {
                    let line = line_str(&buf[..line_len])?;
                    if line == "END" {
                        buf.advance(line_len + 2);
                        return Ok(Some(Reply::Values(std::mem::take(found))));
                    }
                    if let Some(reply) = server_error(line) {
                        buf.advance(line_len + 2);
                        return Ok(Some(reply));
                    }
                    let Some(rest) = line.strip_prefix("VALUE ") else {
                        return Err(other_reply(line));
                    };
                    let (key, len) = parse_value_header(rest)?;
                    if len > *max_value {
                        return Err(ProtocolError::ValueTooLarge {
                            len,
                            max: *max_value,
                        });
                    }
                    // memcached answers in request order, skipping misses:
                    // the key must be one of those not yet answered.
                    let Some(pos) = keys[*next..].iter().position(|k| k == key) else {
                        return Err(ProtocolError::UnrequestedKey(key.to_owned()));
                    };
                    let block = line_len + 2 + len + 2;
                    if buf.len() < block {
                        // Wait for the whole block; reserve so reads land in place.
                        buf.reserve(block - buf.len());
                        return Ok(None);
                    }
                    if &buf[block - 2..block] != b"\r\n" {
                        return Err(ProtocolError::BadDataTerminator);
                    }
                    let key = key.to_owned();
                    *next += pos + 1;
                    let mut chunk = buf.split_to(block).freeze();
                    chunk.advance(line_len + 2);
                    chunk.truncate(len);
                    found.push((key, chunk));
                }
                Expect::Store => {
                    let reply = match line_str(&buf[..line_len])? {
                        "STORED" => Reply::Stored,
                        "NOT_STORED" => Reply::NotStored,
                        other => server_error(other).ok_or_else(|| other_reply(other))?,
                    };
                    buf.advance(line_len + 2);
                    return Ok(Some(reply));
                }
                Expect::Delete => {
                    let reply = match line_str(&buf[..line_len])? {
                        "DELETED" => Reply::Deleted,
                        "NOT_FOUND" => Reply::NotFound,
                        other => server_error(other).ok_or_else(|| other_reply(other))?,
                    };
                    buf.advance(line_len + 2);
                    return Ok(Some(reply));
                }
                Expect::Version => {
                    let line = line_str(&buf[..line_len])?;
                    let Some(v) = line.strip_prefix("VERSION ") else {
                        return Err(other_reply(line));
                    };
                    let reply = Reply::Version(v.to_owned());
                    buf.advance(line_len + 2);
                    return Ok(Some(reply));
                }
                Expect::Stats(stats) => {
                    let line = line_str(&buf[..line_len])?;
                    if line == "END" {
                        buf.advance(line_len + 2);
                        return Ok(Some(Reply::Stats(std::mem::take(stats))));
                    }
                    let Some((name, value)) = line
                        .strip_prefix("STAT ")
                        .and_then(|rest| rest.split_once(' '))
                    else {
                        return Err(other_reply(line));
                    };
                    stats.push((name.to_owned(), value.to_owned()));
                    buf.advance(line_len + 2);
                }
                Expect::Metadump(dump) => {
                    // Entries end in a bare "\n"; END and errors in "\r\n".
                    let line = line_str(&buf[..line_len])?.trim_end_matches('\r');
                    if line == "END" {
                        buf.advance(line_len + 1);
                        let keys = std::mem::take(&mut dump.keys);
                        return Ok(Some(Reply::Keys {
                            keys: keys.into_iter().collect(),
                            skipped: dump.skipped,
                        }));
                    }
                    if let Some(msg) = line.strip_prefix("BUSY ") {
                        let reply = Reply::Busy(msg.to_owned());
                        buf.advance(line_len + 1);
                        return Ok(Some(reply));
                    }
                    if line.starts_with("SERVER_ERROR ")
                        || line.starts_with("CLIENT_ERROR ")
                        || line == "ERROR"
                    {
                        return Err(other_reply(line));
                    }
                    dump.add(line)?;
                    buf.advance(line_len + 1);
                }
            }
        }
    }

    /// Metadump entries end in `\n`; every other reply line in `\r\n`.
    fn line_terminator(&self) -> Terminator {
        match self.expect {
            Expect::Metadump(_) => Terminator::Lf,
            _ => Terminator::CrLf,
        }
    }
}

impl Metadump {
    /// Adds one `key=<urlencoded> exp=<unix|-1> ...` line if it matches.
    fn add(&mut self, line: &str) -> Result<(), ProtocolError> {
        let mut key = None;
        let mut exp = None;
        for field in line.split(' ') {
            if let Some(k) = field.strip_prefix("key=") {
                key = Some(k);
            } else if let Some(e) = field.strip_prefix("exp=") {
                exp = e.parse::<i64>().ok();
            }
        }
        let (Some(key), Some(exp)) = (key, exp) else {
            return Err(ProtocolError::Unexpected(truncate(line)));
        };
        if exp != -1 && exp <= self.now_unix {
            return Ok(());
        }
        // A broken escape means the peer is not memcached; a key that is
        // not UTF-8 is only a key memgate cannot return.
        let key = percent_decode(key).ok_or_else(|| ProtocolError::Unexpected(truncate(line)))?;
        if !key.starts_with(self.prefix.as_bytes()) {
            return Ok(());
        }
        let Ok(key) = String::from_utf8(key) else {
            self.skipped += 1;
            return Ok(());
        };
        if self.keys.len() < self.limit {
            self.keys.insert(key);
        } else if self.keys.last().is_some_and(|last| &key < last) {
            self.keys.insert(key);
            self.keys.pop_last();
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Terminator {
    /// `\r\n`, as every reply line but metadump entries.
    CrLf,
    /// `\n`.
    Lf,
}

/// Length of the first line in `buf` without its terminator, or `None` if
/// it is not complete yet.
pub(crate) fn find_line(buf: &[u8], term: Terminator) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_LINE_LEN + 2)];
    let found = match term {
        Terminator::CrLf => memchr::memchr_iter(b'\n', window)
            .find(|&n| n > 0 && window[n - 1] == b'\r')
            .map(|n| n - 1),
        Terminator::Lf => memchr::memchr(b'\n', window),
    };
    match found {
        Some(n) => Ok(Some(n)),
        None if buf.len() > MAX_LINE_LEN => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

fn line_str(line: &[u8]) -> Result<&str, ProtocolError> {
    std::str::from_utf8(line).map_err(|_| ProtocolError::Unexpected(describe(line)))
}

/// Reply words memgate knows (text and meta protocols).
const REPLY_WORDS: [&str; 20] = [
    "VALUE",
    "END",
    "STORED",
    "NOT_STORED",
    "EXISTS",
    "NOT_FOUND",
    "DELETED",
    "TOUCHED",
    "ERROR",
    "CLIENT_ERROR",
    "SERVER_ERROR",
    "VERSION",
    "STAT",
    "BUSY",
    "VA",
    "HD",
    "EN",
    "NF",
    "NS",
    "MN",
];

/// Describes reply bytes that break the protocol, for an error message,
/// without quoting them: out of step, they may be part of a value, and
/// these messages reach logs and callers. Their first word, when it is a
/// reply word memgate knows, and their length.
pub fn describe(bytes: &[u8]) -> String {
    let word = bytes
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    match REPLY_WORDS.iter().find(|w| w.as_bytes() == word) {
        Some(w) => format!("{w} ... ({} bytes)", bytes.len()),
        None => format!("{} bytes, not shown", bytes.len()),
    }
}

impl Reply {
    /// What kind of reply this is, without what it carries (values).
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Values(_) => "VALUE",
            Reply::Stored => "STORED",
            Reply::NotStored => "NOT_STORED",
            Reply::Deleted => "DELETED",
            Reply::NotFound => "NOT_FOUND",
            Reply::Version(_) => "VERSION",
            Reply::Stats(_) => "STAT",
            Reply::Keys { .. } => "metadump keys",
            Reply::Busy(_) => "BUSY",
            Reply::ServerError(_) => "SERVER_ERROR",
        }
    }
}

/// `SERVER_ERROR <msg>`: memcached failed the command but consumed it
/// whole, so the stream stays in sync.
fn server_error(line: &str) -> Option<Reply> {
    line.strip_prefix("SERVER_ERROR ")
        .map(|msg| Reply::ServerError(truncate(msg)))
}

/// Classifies a line that is not the expected reply.
fn other_reply(line: &str) -> ProtocolError {
    if line == "ERROR" || line.starts_with("CLIENT_ERROR") {
        ProtocolError::Rejected(truncate(line))
    } else {
        ProtocolError::Unexpected(describe(line.as_bytes()))
    }
}

fn truncate(line: &str) -> String {
    line.chars().take(120).collect()
}

/// Parses `<key> <flags> <bytes>[ <cas>]` after `VALUE `.
fn parse_value_header(rest: &str) -> Result<(&str, usize), ProtocolError> {
    let mut parts = rest.split(' ');
    let (Some(key), Some(flags), Some(len)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ProtocolError::Unexpected(describe(rest.as_bytes())));
    };
    let cas_ok = parts.next().is_none_or(|cas| cas.parse::<u64>().is_ok());
    let valid = !key.is_empty() && flags.parse::<u32>().is_ok() && cas_ok && parts.next().is_none();
    let len = len.parse::<usize>().ok().filter(|_| valid);
    match len {
        Some(len) => Ok((key, len)),
        None => Err(ProtocolError::Unexpected(format!(
            "VALUE {}",
            describe(rest.as_bytes())
        ))),
    }
}

/// Decodes memcached's URL-style key escaping in metadump output into the
/// key's bytes (which need not be UTF-8); `None` if an escape is broken.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_reply_bytes_never_quote_them() {
        assert_eq!(describe(b"secret value bytes"), "18 bytes, not shown");
        assert_eq!(describe(b"VALUE k 0 5"), "VALUE ... (11 bytes)");
        assert_eq!(describe(b"VA 5 t\r\nsecret\r\n"), "VA ... (16 bytes)");
        // A line out of step in a value: its text stays out of the error.
        let d = Decoder::get(vec!["k".into()], 1 << 20);
        let err = decode_all(d, b"hunter2 is the password\r\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = decode_all(Decoder::store(), b"\xffhunter2\r\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn decode_all(mut d: Decoder, input: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        d.decode(&mut buf)
    }

    fn get(keys: &[&str]) -> Decoder {
        Decoder::get(keys.iter().map(|k| k.to_string()).collect(), 1 << 20)
    }

    #[test]
    fn encodes_commands() {
        let mut b = BytesMut::new();
        encode_get(&mut b, &["a", "b"]);
        encode_set(&mut b, "k", 60, b"v\r\n\0");
        encode_delete(&mut b, "k");
        assert_eq!(
            &b[..],
            b"get a b\r\nset k 0 60 4\r\nv\r\n\0\r\ndelete k\r\n"
        );
    }

    #[test]
    fn decodes_values_with_binary_data() {
        let reply = decode_all(
            get(&["a", "b", "c"]),
            b"VALUE a 0 4\r\n\r\nEN\r\nVALUE c 0 1 99\r\n\0\r\nEND\r\n",
        );
        assert_eq!(
            reply,
            Ok(Some(Reply::Values(vec![
                ("a".into(), Bytes::from_static(b"\r\nEN")),
                ("c".into(), Bytes::from_static(b"\0")),
            ])))
        );
    }

    #[test]
    fn decodes_incrementally_byte_by_byte() {
        let input = b"VALUE key 0 5\r\nhello\r\nVALUE other 0 0\r\n\r\nEND\r\nSTORED\r\n";
        let mut d = get(&["key", "other"]);
        let mut buf = BytesMut::new();
        let mut reply = None;
        for &b in input.iter() {
            buf.put_u8(b);
            if let Some(r) = d.decode(&mut buf).unwrap() {
                reply = Some(r);
                break;
            }
        }
        assert_eq!(
            reply,
            Some(Reply::Values(vec![
                ("key".into(), Bytes::from_static(b"hello")),
                ("other".into(), Bytes::new()),
            ]))
        );
        // The next reply's bytes are left for the next decoder.
        let mut rest = BytesMut::from(&input[input.len() - 8..]);
        assert_eq!(Decoder::store().decode(&mut rest), Ok(Some(Reply::Stored)));
    }

    #[test]
    fn refuses_values_for_keys_not_asked_for() {
        assert_eq!(
            decode_all(get(&["a"]), b"VALUE b 0 1\r\nx\r\nEND\r\n"),
            Err(ProtocolError::UnrequestedKey("b".into()))
        );
        // Out of order (or repeated) is refused too.
        assert_eq!(
            decode_all(
                get(&["a", "b"]),
                b"VALUE b 0 1\r\nx\r\nVALUE a 0 1\r\ny\r\nEND\r\n"
            ),
            Err(ProtocolError::UnrequestedKey("a".into()))
        );
    }

    #[test]
    fn refuses_oversized_and_malformed_values() {
        let d = Decoder::get(vec!["a".into()], 10);
        assert_eq!(
            decode_all(d, b"VALUE a 0 11\r\n"),
            Err(ProtocolError::ValueTooLarge { len: 11, max: 10 })
        );
        for bad in [
            &b"VALUE a 0 -1\r\n"[..],
            b"VALUE a x 1\r\n",
            b"VALUE a 0\r\n",
            b"VALUE a 0 1 2 3\r\n",
            b"VALUE a 0 99999999999999999999999\r\n",
        ] {
            assert!(
                matches!(
                    decode_all(get(&["a"]), bad),
                    Err(ProtocolError::Unexpected(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            decode_all(get(&["a"]), b"VALUE a 0 1\r\nxyz\r\n"),
            Err(ProtocolError::BadDataTerminator)
        );
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(
            decode_all(
                Decoder::store(),
                b"SERVER_ERROR object too large for cache\r\n"
            ),
            Ok(Some(Reply::ServerError(
                "object too large for cache".into()
            )))
        );
        assert!(matches!(
            decode_all(Decoder::store(), b"ERROR\r\n"),
            Err(ProtocolError::Rejected(_))
        ));
        assert!(matches!(
            decode_all(
                Decoder::delete(),
                b"CLIENT_ERROR bad command line format\r\n"
            ),
            Err(ProtocolError::Rejected(_))
        ));
        assert_eq!(
            decode_all(Decoder::delete(), b"NOT_FOUND\r\n"),
            Ok(Some(Reply::NotFound))
        );
        assert_eq!(
            decode_all(Decoder::store(), b"NOT_STORED\r\n"),
            Ok(Some(Reply::NotStored))
        );
        assert!(matches!(
            decode_all(Decoder::store(), b"DELETED\r\n"),
            Err(ProtocolError::Unexpected(_))
        ));
        assert!(matches!(
            decode_all(get(&["a"]), b"STORED\r\n"),
            Err(ProtocolError::Unexpected(_))
        ));
    }

    #[test]
    fn refuses_endless_lines() {
        let junk = vec![b'x'; MAX_LINE_LEN + 10];
        assert_eq!(
            decode_all(Decoder::version(), &junk),
            Err(ProtocolError::LineTooLong)
        );
        assert_eq!(decode_all(Decoder::version(), b"VERSION 1.6"), Ok(None));
        assert_eq!(
            decode_all(Decoder::version(), b"VERSION 1.6.18\r\n"),
            Ok(Some(Reply::Version("1.6.18".into())))
        );
    }

    #[test]
    fn decodes_stats() {
        assert_eq!(
            decode_all(
                Decoder::stats(),
                b"STAT item_size_max 1048576\r\nSTAT evictions on\r\nEND\r\n"
            ),
            Ok(Some(Reply::Stats(vec![
                ("item_size_max".into(), "1048576".into()),
                ("evictions".into(), "on".into()),
            ])))
        );
    }

    #[test]
    fn metadump_filters_expired_and_prefix_and_caps() {
        let input = b"key=user%3A2 exp=-1 la=1 cas=1 fetch=no cls=1 size=63\n\
key=user%3A1 exp=2000 la=1 cas=2 fetch=no cls=1 size=63\n\
key=user%3A0 exp=500 la=1 cas=3 fetch=no cls=1 size=63\n\
key=other exp=-1 la=1 cas=4 fetch=no cls=1 size=63\n\
key=user%3A3 exp=-1 la=1 cas=5 fetch=no cls=1 size=63\n\
END\r\n";
        let d = Decoder::metadump("user:".into(), 2, 1000);
        assert_eq!(
            decode_all(d, input),
            Ok(Some(Reply::Keys {
                keys: vec!["user:1".into(), "user:2".into()],
                skipped: 0
            }))
        );
        assert_eq!(
            decode_all(
                Decoder::metadump(String::new(), 10, 0),
                b"BUSY currently processing crawler request\r\n"
            ),
            Ok(Some(Reply::Busy(
                "currently processing crawler request".into()
            )))
        );
    }

    #[test]
    fn metadump_skips_and_counts_keys_that_are_not_utf8() {
        let input = b"key=a%3A1 exp=-1 la=1 cas=1 fetch=no cls=1 size=63\n\
key=%FF%FEkey exp=-1 la=1 cas=2 fetch=no cls=1 size=63\n\
key=a%3A%C3%28 exp=-1 la=1 cas=3 fetch=no cls=1 size=63\n\
key=a%3A%E2%82%AC exp=-1 la=1 cas=4 fetch=no cls=1 size=63\n\
key=a%3A%FF exp=500 la=1 cas=5 fetch=no cls=1 size=63\n\
END\r\n";
        // Everything: two bad live keys skipped; the expired one is not
        // counted (it would not be listed anyway).
        assert_eq!(
            decode_all(Decoder::metadump(String::new(), 10, 1000), input),
            Ok(Some(Reply::Keys {
                keys: vec!["a:1".into(), "a:€".into()],
                skipped: 2
            }))
        );
        // Only keys inside the prefix count.
        assert_eq!(
            decode_all(Decoder::metadump("a:".into(), 10, 1000), input),
            Ok(Some(Reply::Keys {
                keys: vec!["a:1".into(), "a:€".into()],
                skipped: 1
            }))
        );
        // A broken escape is still a protocol error.
        assert!(matches!(
            decode_all(
                Decoder::metadump(String::new(), 10, 0),
                b"key=a%F exp=-1 la=1 cas=1 fetch=no cls=1 size=63\nEND\r\n"
            ),
            Err(ProtocolError::Unexpected(_))
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2520b").as_deref(), Some(&b"a%20b"[..]));
        assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€".as_bytes()));
        assert_eq!(
            percent_decode("%FF%FEk").as_deref(),
            Some(&b"\xff\xfek"[..])
        );
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
