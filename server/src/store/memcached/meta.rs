//! memcached's meta protocol (memcached >= 1.6): encoding commands and
//! parsing reply lines, with no I/O.
//!
//! Every command memgate sends carries an opaque token (`O<n>`) and, where
//! the reply has one, asks for the key back (`k`). The connection matches
//! each reply to its request by token and key, not only by position, so a
//! reply that is stale, shifted or meant for another request is caught
//! (and the connection closed) instead of being handed out as a value.
//!
//! Commands are built with [`Command`]: a verb, a key, positional arguments
//! and flags. `mg`/`ms`/`md`/`mn` are what the data path uses today; CAS
//! (`C`, `c`), add/replace (`M`), counters (`ma`), touch (`T` on `mg`) and
//! leases (`N`, `W`/`Z`/`X`) are a flag or two more on the same builder,
//! and [`Flags`] already parses what their replies carry.

use bytes::{BufMut, BytesMut};

use crate::store::Condition;

/// A meta command being appended to a write buffer.
///
/// ```text
/// Command::new(buf, b"mg", key).flag(b'v').flag(b'k').token(7).finish();
/// // mg <key> v k O7\r\n
/// ```
#[must_use = "a command is only complete after finish()"]
pub struct Command<'a> {
    buf: &'a mut BytesMut,
}

impl<'a> Command<'a> {
    /// Starts `<verb> <key>`.
    pub fn new(buf: &'a mut BytesMut, verb: &[u8], key: &str) -> Command<'a> {
        buf.reserve(verb.len() + key.len() + 32);
        buf.put_slice(verb);
        buf.put_u8(b' ');
        buf.put_slice(key.as_bytes());
        Command { buf }
    }

    /// A positional number (the data length of `ms`).
    pub fn arg(self, n: u64) -> Self {
        self.buf.put_u8(b' ');
        put_decimal(self.buf, n);
        self
    }

    /// A flag without a value (`v`, `k`, `q`, ...).
    pub fn flag(self, f: u8) -> Self {
        self.buf.put_u8(b' ');
        self.buf.put_u8(f);
        self
    }

    /// A flag with a numeric value (`T60`, `C123`, `N30`, ...).
    pub fn flag_num(self, f: u8, n: u64) -> Self {
        self.buf.put_u8(b' ');
        self.buf.put_u8(f);
        put_decimal(self.buf, n);
        self
    }

    /// A flag with a one-letter value (the mode of `ms`: `ME` is add).
    pub fn flag_mode(self, f: u8, mode: u8) -> Self {
        self.buf.put_u8(b' ');
        self.buf.put_u8(f);
        self.buf.put_u8(mode);
        self
    }

    /// The opaque token the reply must echo.
    pub fn token(self, token: u32) -> Self {
        self.flag_num(b'O', u64::from(token))
    }

    /// Ends the command line.
    pub fn finish(self) {
        self.buf.put_slice(b"\r\n");
    }

    /// Ends the command line and appends a data block (for `ms`).
    pub fn finish_with_data(self, data: &[u8]) {
        self.buf.reserve(data.len() + 4);
        self.buf.put_slice(b"\r\n");
        self.buf.put_slice(data);
        self.buf.put_slice(b"\r\n");
    }
}

fn put_decimal(buf: &mut BytesMut, n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&tmp[i..]);
}

/// Appends `mg <key> v k c O<token>[ q]`: a read that returns the value
/// and its CAS token (needed to hand back a stale item's lease, which
/// memcached gives to any reader) and echoes key and token. Quiet (`q`)
/// reads suppress misses; a batch of them is closed by [`encode_noop`].
pub fn encode_get(buf: &mut BytesMut, key: &str, token: u32, quiet: bool) {
    let cmd = Command::new(buf, b"mg", key)
        .flag(b'v')
        .flag(b'k')
        .flag(b'c')
        .token(token);
    if quiet { cmd.flag(b'q') } else { cmd }.finish();
}

/// Appends `mg <key> v k O<token> [N<lease>] [T<touch>] c t`: a read of
/// one key with its CAS token and remaining TTL, optionally creating a
/// lease placeholder on a miss (`N`, living `lease`) and setting a new
/// TTL (`T`). The flags go in this order because memcached applies them
/// left to right: `t` after `N`/`T` reports the TTL they set.
pub fn encode_read(
    buf: &mut BytesMut,
    key: &str,
    token: u32,
    lease: Option<u64>,
    touch: Option<u64>,
) {
    let mut cmd = Command::new(buf, b"mg", key)
        .flag(b'v')
        .flag(b'k')
        .token(token);
    if let Some(exptime) = lease {
        cmd = cmd.flag_num(b'N', exptime);
    }
    if let Some(exptime) = touch {
        cmd = cmd.flag_num(b'T', exptime);
    }
    cmd.flag(b'c').flag(b't').finish();
}

/// Appends `ms <key> <len> T<exptime> [ME|MR|C<cas>] [c] k O<token>[ q]`
/// and the value: an acknowledged write, stored only if `condition` holds
/// (add, replace, compare-and-swap). A loud write asks for its new CAS
/// token (`c`); quiet writes report only failures.
pub fn encode_set(
    buf: &mut BytesMut,
    key: &str,
    exptime: u64,
    value: &[u8],
    condition: Condition,
    token: u32,
    quiet: bool,
) {
    let mut cmd = Command::new(buf, b"ms", key)
        .arg(value.len() as u64)
        .flag_num(b'T', exptime);
    cmd = match condition {
        Condition::Always => cmd,
        Condition::Absent => cmd.flag_mode(b'M', b'E'),
        Condition::Present => cmd.flag_mode(b'M', b'R'),
        Condition::CasMatch(cas) => cmd.flag_num(b'C', cas),
    };
    if !quiet {
        cmd = cmd.flag(b'c');
    }
    let cmd = cmd.flag(b'k').token(token);
    if quiet { cmd.flag(b'q') } else { cmd }.finish_with_data(value);
}

/// Appends `md <key> I T<exptime> k O<token>`: marks the item stale for
/// `exptime` instead of removing it (`HD`; `NF` when missing). The next
/// reader gets the lease to refresh it.
pub fn encode_invalidate(buf: &mut BytesMut, key: &str, exptime: u64, token: u32) {
    Command::new(buf, b"md", key)
        .flag(b'I')
        .flag_num(b'T', exptime)
        .flag(b'k')
        .token(token)
        .finish();
}

/// Appends `md <key> I C<cas> k O<token>`: hands back the refresh lease of
/// a stale item that a read took without asking for it (memcached gives it
/// to any reader). The item stays stale with its TTL, and the next reader
/// wins the lease again; if it changed meanwhile (`EX`), nothing happens.
pub fn encode_hand_back(buf: &mut BytesMut, key: &str, cas: u64, token: u32) {
    Command::new(buf, b"md", key)
        .flag(b'I')
        .flag_num(b'C', cas)
        .flag(b'k')
        .token(token)
        .finish();
}

/// Appends `md <key> k O<token>[ q]` (quiet deletes report only misses).
pub fn encode_delete(buf: &mut BytesMut, key: &str, token: u32, quiet: bool) {
    let cmd = Command::new(buf, b"md", key).flag(b'k').token(token);
    if quiet { cmd.flag(b'q') } else { cmd }.finish();
}

/// Appends `ma <key> [N<exptime> J<initial>] D<delta> M<I|D> v k O<token>`:
/// add `delta` to a counter (or subtract it when `decrement`), returning
/// the new value. With `create`, a missing key is created holding
/// `initial` with `exptime` (the value returned is then `initial`).
pub fn encode_arithmetic(
    buf: &mut BytesMut,
    key: &str,
    delta: u64,
    decrement: bool,
    create: Option<(u64, u64)>,
    token: u32,
) {
    let mut cmd = Command::new(buf, b"ma", key);
    if let Some((initial, exptime)) = create {
        cmd = cmd.flag_num(b'N', exptime).flag_num(b'J', initial);
    }
    cmd.flag_num(b'D', delta)
        .flag_mode(b'M', if decrement { b'D' } else { b'I' })
        .flag(b'v')
        .flag(b'k')
        .token(token)
        .finish();
}

/// Appends `mg <key> T<exptime> k O<token>`: a touch that reads no value
/// (`HD` when the key exists, `EN` when not).
pub fn encode_touch(buf: &mut BytesMut, key: &str, exptime: u64, token: u32) {
    Command::new(buf, b"mg", key)
        .flag_num(b'T', exptime)
        .flag(b'k')
        .token(token)
        .finish();
}

/// Appends `mn`: answered by `MN` once every command before it is answered.
pub fn encode_noop(buf: &mut BytesMut) {
    buf.put_slice(b"mn\r\n");
}

/// The status code a meta reply line starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// `VA <len>`: a value follows.
    Value,
    /// `HD`: success without a value.
    Done,
    /// `EN`: a read missed.
    Miss,
    /// `NF`: not found (delete, counter, CAS on a missing key).
    NotFound,
    /// `NS`: not stored (add/replace condition failed).
    NotStored,
    /// `EX`: exists (CAS mismatch).
    Exists,
    /// `MN`: the end of a quiet batch.
    NoOp,
}

/// The flags a reply line carries back. Only those memgate asks for are
/// kept; anything else is ignored (flags a newer server adds must not
/// break an older memgate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `O<token>`.
    pub token: Option<u32>,
    /// `c<cas>`.
    pub cas: Option<u64>,
    /// `t<ttl>`: remaining seconds, -1 for never.
    pub ttl: Option<i64>,
    /// `W`: this caller won the right to refill (leases).
    pub won: bool,
    /// `Z`: another caller holds the lease.
    pub held: bool,
    /// `X`: the item is stale.
    pub stale: bool,
}

/// A parsed reply line (the value data, if any, is not part of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A status line; `len` is the data length after `VA`.
    Status {
        /// Which status.
        code: Code,
        /// Bytes of data that follow (`VA` only; 0 otherwise).
        len: usize,
        /// What the flags said.
        flags: Flags,
    },
    /// `SERVER_ERROR <msg>`: the server failed the command but consumed
    /// it whole; it carries no token.
    ServerError(String),
    /// `CLIENT_ERROR ...` or `ERROR`: the server did not understand what
    /// it was sent, so the stream position can no longer be trusted.
    Rejected(String),
    /// [`NON_NUMERIC`]: an `ma` found a value that is not a number. Unlike
    /// other `CLIENT_ERROR`s, memcached sends it after parsing the whole
    /// command, so the stream is still in step — but only an `ma` can
    /// cause it (the connection decides, by what it awaits).
    NonNumeric,
}

/// memcached's reply to `ma` on a value that is not a decimal number (also
/// an empty value or a lease placeholder). It carries no token or key.
pub const NON_NUMERIC: &[u8] = b"CLIENT_ERROR cannot increment or decrement non-numeric value";

/// Why a reply line is not a meta reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a meta reply: {0}")]
pub struct BadLine(pub String);

/// Parses one reply line (without its `\r\n`), returning it and the key it
/// echoes (`k<key>`), if any. Works on bytes: this runs once per key read.
pub fn parse_line(line: &[u8]) -> Result<(Line, Option<&[u8]>), BadLine> {
    // Out of step, a line may be part of a value: never quoted.
    let bad = || BadLine(super::protocol::describe(line));
    let text = |b: &[u8]| String::from_utf8_lossy(b).chars().take(120).collect();
    if let Some(msg) = line.strip_prefix(b"SERVER_ERROR") {
        return Ok((Line::ServerError(text(msg.trim_ascii_start())), None));
    }
    if line == NON_NUMERIC {
        return Ok((Line::NonNumeric, None));
    }
    if line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") {
        return Ok((Line::Rejected(text(line)), None));
    }
    let mut parts = line.split(|&b| b == b' ');
    let code = match parts.next() {
        Some(b"VA") => Code::Value,
        Some(b"HD") => Code::Done,
        Some(b"EN") => Code::Miss,
        Some(b"NF") => Code::NotFound,
        Some(b"NS") => Code::NotStored,
        Some(b"EX") => Code::Exists,
        Some(b"MN") => Code::NoOp,
        _ => return Err(bad()),
    };
    let len = if code == Code::Value {
        let n = parts.next().and_then(parse_u64).ok_or_else(bad)?;
        usize::try_from(n).map_err(|_| bad())?
    } else {
        0
    };
    let mut flags = Flags::default();
    let mut key = None;
    for part in parts {
        let Some((&f, value)) = part.split_first() else {
            return Err(bad());
        };
        match f {
            b'O' => {
                let token = parse_u64(value).and_then(|t| u32::try_from(t).ok());
                flags.token = Some(token.ok_or_else(bad)?);
            }
            b'k' => key = Some(value),
            b'c' => flags.cas = Some(parse_u64(value).ok_or_else(bad)?),
            b't' => flags.ttl = Some(parse_i64(value).ok_or_else(bad)?),
            b'W' => flags.won = true,
            b'Z' => flags.held = true,
            b'X' => flags.stale = true,
            _ => {}
        }
    }
    if code == Code::NoOp && (flags != Flags::default() || key.is_some()) {
        return Err(bad());
    }
    Ok((Line::Status { code, len, flags }, key))
}

/// Decimal digits only (no sign, no spaces), at most 20 of them.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// An optional `-` and decimal digits.
fn parse_i64(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => i64::try_from(parse_u64(digits)?).ok().map(|n| -n),
        None => i64::try_from(parse_u64(text)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut b = BytesMut::new();
        encode_get(&mut b, "a", 1, false);
        encode_get(&mut b, "b", 2, true);
        encode_set(&mut b, "k", 60, b"v\r\n\0", Condition::Always, 3, false);
        encode_delete(&mut b, "k", 4294967295, true);
        encode_noop(&mut b);
        assert_eq!(
            &b[..],
            &b"mg a v k c O1\r\nmg b v k c O2 q\r\nms k 4 T60 c k O3\r\nv\r\n\0\r\nmd k k O4294967295 q\r\nmn\r\n"[..]
        );
    }

    #[test]
    fn encodes_leases_conditions_and_invalidation() {
        let mut b = BytesMut::new();
        encode_read(&mut b, "a", 1, None, None);
        encode_read(&mut b, "a", 2, Some(10), Some(60));
        encode_set(&mut b, "k", 0, b"v", Condition::Absent, 3, false);
        encode_set(&mut b, "k", 0, b"v", Condition::Present, 4, true);
        encode_set(&mut b, "k", 0, b"v", Condition::CasMatch(7), 5, false);
        encode_invalidate(&mut b, "k", 30, 6);
        encode_hand_back(&mut b, "k", 9, 7);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            "mg a v k O1 c t\r\n\
             mg a v k O2 N10 T60 c t\r\n\
             ms k 1 T0 ME c k O3\r\nv\r\n\
             ms k 1 T0 MR k O4 q\r\nv\r\n\
             ms k 1 T0 C7 c k O5\r\nv\r\n\
             md k I T30 k O6\r\n\
             md k I C9 k O7\r\n"
        );
    }

    #[test]
    fn encodes_counters_and_touch() {
        let mut b = BytesMut::new();
        encode_arithmetic(&mut b, "c", 5, false, None, 1);
        encode_arithmetic(&mut b, "c", u64::MAX, true, Some((10, 60)), 2);
        encode_touch(&mut b, "c", 30, 3);
        assert_eq!(
            &b[..],
            &b"ma c D5 MI v k O1\r\nma c N60 J10 D18446744073709551615 MD v k O2\r\nmg c T30 k O3\r\n"[..]
        );
    }

    #[test]
    fn only_the_exact_non_numeric_error_is_told_apart() {
        assert_eq!(
            parse_line(b"CLIENT_ERROR cannot increment or decrement non-numeric value"),
            Ok((Line::NonNumeric, None))
        );
        for other in [
            &b"CLIENT_ERROR cannot increment or decrement non-numeric value x"[..],
            b"CLIENT_ERROR bad command line format",
        ] {
            assert!(matches!(parse_line(other), Ok((Line::Rejected(_), None))));
        }
    }

    #[test]
    fn builder_leaves_room_for_the_api_to_come() {
        // CAS-conditioned add with a lease TTL: one line per feature.
        let mut b = BytesMut::new();
        Command::new(&mut b, b"ms", "k")
            .arg(2)
            .flag_num(b'C', 99)
            .flag(b'c')
            .flag_num(b'M', 0)
            .token(5)
            .finish_with_data(b"hi");
        assert_eq!(&b[..], b"ms k 2 C99 c M0 O5\r\nhi\r\n");
    }

    #[test]
    fn parses_replies_as_memcached_sends_them() {
        let token = |t| Flags {
            token: Some(t),
            ..Flags::default()
        };
        assert_eq!(
            parse_line(b"VA 3 khit O3"),
            Ok((
                Line::Status {
                    code: Code::Value,
                    len: 3,
                    flags: token(3)
                },
                Some(&b"hit"[..])
            ))
        );
        assert_eq!(
            parse_line(b"EN kmiss O1"),
            Ok((
                Line::Status {
                    code: Code::Miss,
                    len: 0,
                    flags: token(1)
                },
                Some(&b"miss"[..])
            ))
        );
        let Ok((Line::Status { flags, .. }, None)) = parse_line(b"VA 0 c1 t-1 W O9 s0 f0") else {
            panic!()
        };
        assert_eq!(
            (flags.cas, flags.ttl, flags.won, flags.token),
            (Some(1), Some(-1), true, Some(9))
        );
        assert_eq!(
            parse_line(b"MN"),
            Ok((
                Line::Status {
                    code: Code::NoOp,
                    len: 0,
                    flags: Flags::default()
                },
                None
            ))
        );
        assert_eq!(
            parse_line(b"SERVER_ERROR out of memory storing object"),
            Ok((
                Line::ServerError("out of memory storing object".into()),
                None
            ))
        );
        assert!(matches!(
            parse_line(b"CLIENT_ERROR bad command line format"),
            Ok((Line::Rejected(_), None))
        ));
        assert!(matches!(
            parse_line(b"ERROR"),
            Ok((Line::Rejected(_), None))
        ));
    }

    #[test]
    fn refuses_what_is_not_a_meta_reply() {
        for bad in [
            &b"VALUE k 0 1"[..],
            b"STORED",
            b"VA",
            b"VA -1 O1",
            b"VA +1 O1",
            b"VA x O1",
            b"HD Ox",
            b"HD O99999999999",
            b"HD t",
            b"HD c-1",
            b"VA 99999999999999999999999 O1",
            b"HD  O1",
            b"MN O1",
            b"MN kx",
            b"\xff\xfe",
            b"",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
