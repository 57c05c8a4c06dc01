//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay
//! test, so CI exercises exactly what the fuzzer does.
//!
//! Each takes arbitrary bytes and must never panic: they are the two places
//! where untrusted input meets memgate — a key from a client, a reply from a
//! backend.

use bytes::BytesMut;

use crate::key::Key;
use crate::store::memcached::meta;
use crate::store::memcached::protocol::{Decoder, Reply};

/// Parses `data` as a key; a valid key must be safe to put on a memcached
/// command line.
pub fn key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = Key::parse(text) {
        let k = key.as_str();
        assert!(!k.is_empty() && k.len() <= crate::key::MAX_KEY_LEN);
        assert!(
            !k.bytes()
                .any(|b| b == b' ' || b == b'\r' || b == b'\n' || b == 0)
        );
    }
}

/// Feeds `data` to every kind of reply decoder, in one piece and split at
/// a point chosen by the first byte; the two must agree, a `get` reply may
/// only carry requested keys, and nothing may panic.
pub fn reply(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    // Every line as a meta reply: parsed or refused, never a panic, and a
    // key it echoes is a part of the line.
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Ok((_, Some(key))) = meta::parse_line(line) {
            assert!(key.len() < line.len());
        }
    }
    for make in DECODERS {
        let whole = decode(make(), data, data.len());
        let pieces = decode(make(), data, split);
        assert_eq!(whole, pieces, "decoding depends on how the bytes arrive");
        if let Some(Ok(Reply::Values(values))) = &whole {
            for (k, v) in values {
                assert!(REQUESTED.contains(&k.as_str()), "unrequested key {k:?}");
                assert!(v.len() <= MAX_VALUE);
            }
        }
    }
}

const REQUESTED: [&str; 3] = ["a", "b", "key"];
const MAX_VALUE: usize = 4096;

const DECODERS: [fn() -> Decoder; 6] = [
    || Decoder::get(REQUESTED.iter().map(|s| s.to_string()).collect(), MAX_VALUE),
    Decoder::store,
    Decoder::delete,
    Decoder::version,
    Decoder::stats,
    || Decoder::metadump(String::new(), 10, 0),
];

/// Decodes `data` fed in two pieces (at `split`); `None` if incomplete.
fn decode(
    mut d: Decoder,
    data: &[u8],
    split: usize,
) -> Option<Result<Reply, crate::store::memcached::protocol::ProtocolError>> {
    let mut buf = BytesMut::new();
    for piece in [&data[..split], &data[split..]] {
        buf.extend_from_slice(piece);
        match d.decode(&mut buf) {
            Ok(Some(r)) => return Some(Ok(r)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
    }
    None
}
