//! A small pipelined memcached text-protocol client: the load generator for
//! the "memcached direct" and "twemproxy" targets.
//!
//! It is deliberately independent of memgate's own memcached layer, so the
//! baselines do not move when that layer changes, and deliberately simple.
//! A [`TextPool`] holds a few TCP connections per server; each caller's
//! [`TextClient`] uses one of them per server, shared with the other
//! callers on it. Every connection has a writer and a reader task: a caller
//! queues its request (all of a call's requests to one server as one
//! request) and waits for its reply on a oneshot; the writer writes
//! whatever is queued in one `write`, telling the reader, in the same
//! order, what each reply looks like; the reader parses the replies in
//! order (the text protocol answers in order) and hands each to its
//! caller. A connection with one caller is the classic closed loop, one
//! request at a time. Routing keys to servers is a plain hash modulo the
//! server count; the load generator's routing is not what is measured.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};

/// A writer stops coalescing once this much is queued for one write.
const MAX_WRITE: usize = 256 * 1024;

/// The connections to one target: `per_server` to each server address.
pub(crate) struct TextPool {
    /// `conns[server][i]`.
    conns: Vec<Vec<Conn>>,
}

impl TextPool {
    /// `per_server` connections to each of `servers` (`host:port`), each
    /// connected on first use; with one server (twemproxy) every key goes
    /// to it.
    pub(crate) fn new(servers: &[String], per_server: usize) -> TextPool {
        let conns = servers
            .iter()
            .map(|addr| (0..per_server.max(1)).map(|_| Conn::spawn(addr)).collect())
            .collect();
        TextPool { conns }
    }

    /// Caller `i`'s client: connection `i % per_server` of every server.
    pub(crate) fn client(&self, i: usize) -> TextClient {
        TextClient {
            conns: self.conns.iter().map(|c| c[i % c.len()].clone()).collect(),
            scratch: vec![Vec::new(); self.conns.len()],
        }
    }
}

/// One caller's view of a pool: one shared connection per server.
pub(crate) struct TextClient {
    conns: Vec<Conn>,
    /// Per server, the indices of the keys of the current call it owns.
    scratch: Vec<Vec<usize>>,
}

impl TextClient {
    /// `get key`: whether the key was found.
    pub(crate) async fn get(&mut self, key: &str) -> io::Result<bool> {
        let conn = &self.conns[self.route(key)];
        let reply = conn.send(get_request(std::iter::once(key)), Expect::Values);
        Ok(reply.await? == 1)
    }

    /// Reads `keys` with one multi-key `get` per server owning any of them.
    /// The requests go out to every server before any reply is awaited, so
    /// the servers work in parallel. Returns how many keys were found.
    pub(crate) async fn get_many(&mut self, keys: &[String]) -> io::Result<usize> {
        self.split(keys);
        let replies: Vec<_> = self
            .conns
            .iter()
            .zip(&self.scratch)
            .filter(|(_, idx)| !idx.is_empty())
            .map(|(conn, idx)| {
                let req = get_request(idx.iter().map(|&i| keys[i].as_str()));
                conn.send(req, Expect::Values)
            })
            .collect();
        let mut found = 0;
        for r in replies {
            found += r.await?;
        }
        Ok(found)
    }

    /// Stores every key with `value` (no expiry): per server, all its `set`s
    /// as one request (one write, pipelined), answered by one `STORED` per
    /// item. Like [`TextClient::get_many`], all servers are sent to before
    /// any reply is awaited.
    pub(crate) async fn set_many(&mut self, keys: &[String], value: &[u8]) -> io::Result<()> {
        self.split(keys);
        let replies: Vec<_> = self
            .conns
            .iter()
            .zip(&self.scratch)
            .filter(|(_, idx)| !idx.is_empty())
            .map(|(conn, idx)| {
                let mut req = Vec::with_capacity(idx.len() * (value.len() + 40));
                for &i in idx {
                    push_set(&mut req, &keys[i], value);
                }
                conn.send(req, Expect::Stored(idx.len()))
            })
            .collect();
        for r in replies {
            r.await?;
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
}

fn get_request<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut out = b"get".to_vec();
    for k in keys {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_set(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "set {key} 0 0 {}\r\n", value.len());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the reply to a request looks like.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// `VALUE <key> <flags> <bytes>\r\n<data>\r\n`... `END\r\n`: how many
    /// values came.
    Values,
    /// This many `STORED\r\n` lines.
    Stored(usize),
}

/// A reply: the count of values (or items stored), or why there is none.
type Reply = io::Result<usize>;

/// A request queued on a connection.
struct Request {
    bytes: Vec<u8>,
    expect: Expect,
    reply: oneshot::Sender<Reply>,
}

/// A request written, awaiting its reply on the reader.
struct Pending {
    expect: Expect,
    reply: oneshot::Sender<Reply>,
}

/// A handle on one connection's writer; clones share the connection.
#[derive(Clone)]
struct Conn {
    queue: mpsc::UnboundedSender<Request>,
}

impl Conn {
    /// Starts the connection's task; it connects on the first request and
    /// ends when every handle is dropped.
    fn spawn(addr: &str) -> Conn {
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(run(addr.to_owned(), requests));
        Conn { queue }
    }

    /// Queues `bytes`; the future resolves to its reply. A caller that
    /// stops waiting (a timeout) leaves the connection in step: its reply
    /// is still read, then dropped.
    fn send(&self, bytes: Vec<u8>, expect: Expect) -> impl std::future::Future<Output = Reply> {
        let (reply, rx) = oneshot::channel();
        // A closed queue drops the request, and so its reply sender.
        let _ = self.queue.send(Request {
            bytes,
            expect,
            reply,
        });
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection lost before the reply",
                ))
            })
        }
    }
}

/// A connection's writer, which also (re)connects: connects when a request
/// comes, writes until the connection fails, then drops it (every reply
/// still pending fails) and connects again for the next request.
async fn run(addr: String, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut buf = Vec::new();
    while let Some(first) = requests.recv().await {
        let stream = match connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                let _ = first.reply.send(Err(e));
                continue;
            }
        };
        let (rd, mut wr) = stream.into_split();
        let (pending, pending_rx) = mpsc::unbounded_channel();
        let mut reader = tokio::spawn(read_replies(
            BufReader::with_capacity(64 * 1024, rd),
            pending_rx,
        ));
        let mut next = Some(first);
        'connected: loop {
            let mut req = match next.take() {
                Some(r) => r,
                None => tokio::select! {
                    r = requests.recv() => match r {
                        Some(r) => r,
                        None => break 'connected,
                    },
                    // The reader failed (or the server closed): reconnect.
                    _ = &mut reader => break 'connected,
                },
            };
            // Coalesce whatever is queued into one write, announcing each
            // reply to the reader in write order.
            buf.clear();
            loop {
                buf.extend_from_slice(&req.bytes);
                let p = Pending {
                    expect: req.expect,
                    reply: req.reply,
                };
                if pending.send(p).is_err() {
                    break 'connected;
                }
                if buf.len() >= MAX_WRITE {
                    break;
                }
                match requests.try_recv() {
                    Ok(r) => req = r,
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break 'connected;
            }
        }
        reader.abort();
    }
}

async fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A connection's reader: parses the replies in the order the writer
/// announced them. On the first error it gives up on the connection: the
/// replies after it cannot be told apart, and dropping the rest of
/// `pending` fails their callers.
async fn read_replies(
    mut io: BufReader<OwnedReadHalf>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
) {
    let mut line = Vec::new();
    let mut data = Vec::new();
    while let Some(p) = pending.recv().await {
        let reply = read_reply(&mut io, p.expect, &mut line, &mut data).await;
        let failed = reply.is_err();
        let _ = p.reply.send(reply);
        if failed {
            return;
        }
    }
}

async fn read_reply(
    io: &mut BufReader<OwnedReadHalf>,
    expect: Expect,
    line: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> Reply {
    match expect {
        Expect::Values => {
            let mut found = 0;
            loop {
                read_line(io, line).await?;
                let l = trim_crlf(line);
                if l == b"END" {
                    return Ok(found);
                }
                let len: usize = l
                    .strip_prefix(b"VALUE ")
                    .and_then(|rest| rest.rsplit(|&b| b == b' ').next())
                    .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
                    .ok_or_else(|| unexpected(l))?;
                data.resize(len + 2, 0);
                io.read_exact(data).await?;
                if !data.ends_with(b"\r\n") {
                    return Err(unexpected(b"a value not followed by CRLF"));
                }
                found += 1;
            }
        }
        Expect::Stored(n) => {
            for _ in 0..n {
                read_line(io, line).await?;
                match trim_crlf(line) {
                    b"STORED" => {}
                    other => return Err(unexpected(other)),
                }
            }
            Ok(n)
        }
    }
}

async fn read_line(io: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    if io.read_until(b'\n', line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
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
