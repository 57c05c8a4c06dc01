//! A small memcached text-protocol client: the load generator for the
//! "memcached direct" and "twemproxy" targets.
//!
//! It is deliberately independent of memgate's own memcached layer, so the
//! baselines do not move when that layer changes, and deliberately simple:
//! one TCP connection per server per in-flight caller, closed loop (a
//! caller writes a request and reads its whole reply before the next one),
//! and every request of a call written with one `write`. Routing keys to
//! servers is a plain hash modulo the server count; the load generator's
//! routing is not what is measured.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One caller's connections: one per server, connected on first use and
/// dropped (to reconnect) after any error, since a half-read reply leaves
/// the protocol out of step.
pub(crate) struct TextClient {
    conns: Vec<Conn>,
    /// Per server, the indices of the keys of the current call it owns.
    scratch: Vec<Vec<usize>>,
}

impl TextClient {
    /// A client for `servers` (`host:port`); with one server (twemproxy)
    /// every key goes to it.
    pub(crate) fn new(servers: &[String]) -> TextClient {
        TextClient {
            conns: servers.iter().map(|a| Conn::new(a.clone())).collect(),
            scratch: vec![Vec::new(); servers.len()],
        }
    }

    /// `get key`: whether the key was found.
    pub(crate) async fn get(&mut self, key: &str) -> io::Result<bool> {
        let s = self.route(key);
        let conn = &mut self.conns[s];
        conn.queue_get(std::iter::once(key));
        let found = match conn.send_and_read_values().await {
            Ok(n) => n == 1,
            Err(e) => return Err(self.reset(e)),
        };
        Ok(found)
    }

    /// Reads `keys` with one multi-key `get` per server owning any of them.
    /// The requests go out to every server first and the replies are read
    /// after, so the servers work in parallel (as a real client would),
    /// without a task per server. Returns how many keys were found.
    pub(crate) async fn get_many(&mut self, keys: &[String]) -> io::Result<usize> {
        self.split(keys);
        let result = self.get_split(keys).await;
        result.map_err(|e| self.reset(e))
    }

    async fn get_split(&mut self, keys: &[String]) -> io::Result<usize> {
        for (conn, idx) in self.conns.iter_mut().zip(&self.scratch) {
            if !idx.is_empty() {
                conn.queue_get(idx.iter().map(|&i| keys[i].as_str()));
                conn.flush().await?;
            }
        }
        let mut found = 0;
        for (conn, idx) in self.conns.iter_mut().zip(&self.scratch) {
            if !idx.is_empty() {
                found += conn.read_values().await?;
            }
        }
        Ok(found)
    }

    /// Stores every key with `value` (no expiry): per server, all its `set`s
    /// pipelined in one write, then one `STORED` read per item. Like
    /// [`TextClient::get_many`], all servers are written before any is read.
    pub(crate) async fn set_many(&mut self, keys: &[String], value: &[u8]) -> io::Result<()> {
        self.split(keys);
        let result = self.set_split(keys, value).await;
        result.map_err(|e| self.reset(e))
    }

    async fn set_split(&mut self, keys: &[String], value: &[u8]) -> io::Result<()> {
        for (conn, idx) in self.conns.iter_mut().zip(&self.scratch) {
            if !idx.is_empty() {
                for &i in idx {
                    conn.queue_set(&keys[i], value);
                }
                conn.flush().await?;
            }
        }
        for (conn, idx) in self.conns.iter_mut().zip(&self.scratch) {
            for _ in idx {
                conn.read_stored().await?;
            }
        }
        Ok(())
    }

    /// Which server owns `key`: FNV-1a modulo the server count.
    fn route(&self, key: &str) -> usize {
        if self.conns.len() == 1 {
            return 0;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % self.conns.len() as u64) as usize
    }

    /// Groups the indices of `keys` by owning server into `scratch`.
    fn split(&mut self, keys: &[String]) {
        for idx in &mut self.scratch {
            idx.clear();
        }
        for (i, k) in keys.iter().enumerate() {
            let s = self.route(k);
            self.scratch[s].push(i);
        }
    }

    /// Drops every connection after an error (replies may be pending on
    /// any of them) and hands the error back.
    pub(crate) fn reset(&mut self, e: io::Error) -> io::Error {
        for c in &mut self.conns {
            c.io = None;
            c.out.clear();
        }
        e
    }
}

/// One connection to one server.
struct Conn {
    addr: String,
    io: Option<BufReader<TcpStream>>,
    /// Requests queued for the next write.
    out: Vec<u8>,
    /// The reply line being parsed.
    line: Vec<u8>,
    /// Value bytes read and thrown away.
    data: Vec<u8>,
}

impl Conn {
    fn new(addr: String) -> Conn {
        Conn {
            addr,
            io: None,
            out: Vec::new(),
            line: Vec::new(),
            data: Vec::new(),
        }
    }

    fn queue_get<'a>(&mut self, keys: impl Iterator<Item = &'a str>) {
        self.out.extend_from_slice(b"get");
        for k in keys {
            self.out.push(b' ');
            self.out.extend_from_slice(k.as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
    }

    fn queue_set(&mut self, key: &str, value: &[u8]) {
        use std::io::Write;
        let _ = write!(self.out, "set {key} 0 0 {}\r\n", value.len());
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes the queued requests in one write, connecting first if needed.
    async fn flush(&mut self) -> io::Result<()> {
        if self.io.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            self.io = Some(BufReader::with_capacity(64 * 1024, stream));
        }
        let io = self.io.as_mut().expect("connected above");
        io.get_mut().write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    async fn send_and_read_values(&mut self) -> io::Result<usize> {
        self.flush().await?;
        self.read_values().await
    }

    /// Reads `VALUE <key> <flags> <bytes>\r\n<data>\r\n`... `END\r\n`;
    /// returns how many values came.
    async fn read_values(&mut self) -> io::Result<usize> {
        let mut found = 0;
        loop {
            self.read_line().await?;
            let line = trim_crlf(&self.line);
            if line == b"END" {
                return Ok(found);
            }
            let len: usize = line
                .strip_prefix(b"VALUE ")
                .and_then(|rest| rest.rsplit(|&b| b == b' ').next())
                .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
                .ok_or_else(|| unexpected(line))?;
            self.data.resize(len + 2, 0);
            let io = self.io.as_mut().expect("read_line connected");
            io.read_exact(&mut self.data).await?;
            if !self.data.ends_with(b"\r\n") {
                return Err(unexpected(b"a value not followed by CRLF"));
            }
            found += 1;
        }
    }

    async fn read_stored(&mut self) -> io::Result<()> {
        self.read_line().await?;
        match trim_crlf(&self.line) {
            b"STORED" => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn read_line(&mut self) -> io::Result<()> {
        let io = self
            .io
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no request sent"))?;
        self.line.clear();
        if io.read_until(b'\n', &mut self.line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n").unwrap_or(line)
}

fn unexpected(reply: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected reply: {}", String::from_utf8_lossy(reply)),
    )
}
