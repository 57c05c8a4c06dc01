//! What `memgate` writes to stderr: plain text with no colour codes when
//! stderr is not a terminal, or one JSON object per line; one `rpc
//! finished` line per call at debug, inside the call's span; and never a
//! value or a token, even at debug.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use memgate_api::v1::cache_client::CacheClient;
use memgate_api::v1::{GetRequest, SetRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const TOKEN: &str = "tok-SECRET-4f1c77e0";
const VALUE: &[u8] = b"VALUE-SECRET-9b2e31aa";

/// Starts `memgate` with `args`, logging at `level` to the file `log`.
fn start(dir: &Path, log: &Path, level: &str, args: &[&str]) -> (Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_memgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMGATE_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--auth-token-file", tokens.to_str().unwrap()])
        .args(args)
        .env("MEMGATE_LOG", level)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    (child, port)
}

/// Connects (polling until memgate listens), then sets and gets a key with
/// the token and tries a Get with a wrong one.
async fn traffic(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            break ch;
        }
        assert!(Instant::now() < deadline, "memgate never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut client = CacheClient::new(channel);
    let bearer = |token: &str| -> MetadataValue<_> { format!("Bearer {token}").parse().unwrap() };
    let mut set = tonic::Request::new(SetRequest {
        key: "log-key".into(),
        value: VALUE.to_vec().into(),
        ..Default::default()
    });
    set.metadata_mut().insert("authorization", bearer(TOKEN));
    client.set(set).await.unwrap();
    let mut get = tonic::Request::new(GetRequest {
        key: "log-key".into(),
        ..Default::default()
    });
    get.metadata_mut().insert("authorization", bearer(TOKEN));
    let got = client.get(get).await.unwrap().into_inner();
    assert_eq!(got.value.as_ref(), VALUE);
    let mut bad = tonic::Request::new(GetRequest {
        key: "log-key".into(),
        ..Default::default()
    });
    bad.metadata_mut()
        .insert("authorization", bearer("tok-SECRET-wrong"));
    let err = client.get(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

/// Stops memgate (the `rpc finished` lines were written before each
/// response went out) and reads what it logged.
fn stop(mut child: Child, log: &Path) -> String {
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    for secret in [
        TOKEN,
        "tok-SECRET-wrong",
        std::str::from_utf8(VALUE).unwrap(),
    ] {
        assert!(!text.contains(secret), "the log holds {secret:?}:\n{text}");
    }
    text
}

#[tokio::test]
async fn text_logs_are_plain_and_show_each_call_without_values_or_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let (child, port) = start(dir.path(), &log, "debug", &[]);
    traffic(port).await;
    let text = stop(child, &log);

    assert!(!text.contains('\x1b'), "colour codes in a file:\n{text}");
    let serving = text
        .lines()
        .find(|l| l.contains("memgate serving"))
        .unwrap_or_else(|| panic!("no startup line:\n{text}"));
    assert!(
        serving.contains(&format!("listen=127.0.0.1:{port}")),
        "{serving}"
    );
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rpc finished"))
        .collect();
    assert_eq!(calls.len(), 3, "one line per call:\n{text}");
    for (line, method, code) in [
        (calls[0], "Set", "OK"),
        (calls[1], "Get", "OK"),
        (calls[2], "Get", "Unauthenticated"),
    ] {
        for needle in [
            "rpc.system=grpc",
            "rpc.service=memgate.v1.Cache",
            &format!("rpc.method={method}"),
            &format!("code={code}"),
            "duration_us=",
        ] {
            assert!(line.contains(needle), "no {needle:?} in {line}");
        }
    }
    // Handlers ran inside the span: the key count is on it. The refused
    // call never reached one.
    assert!(calls[0].contains("keys=1"), "{}", calls[0]);
    assert!(calls[1].contains("keys=1"), "{}", calls[1]);
    assert!(!calls[2].contains("keys="), "{}", calls[2]);
    assert!(calls[2].contains("rpc.grpc.status_code=16"), "{}", calls[2]);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_span_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let (child, port) = start(
        dir.path(),
        &log,
        "memgate_server=debug",
        &["--log-format", "json"],
    );
    traffic(port).await;
    let text = stop(child, &log);

    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
    }
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "memgate serving")
        .unwrap_or_else(|| panic!("no startup line:\n{text}"));
    assert_eq!(
        serving["fields"]["listen"],
        format!("127.0.0.1:{port}"),
        "{serving}"
    );
    let get = lines
        .iter()
        .find(|l| l["fields"]["message"] == "rpc finished" && l["span"]["rpc.method"] == "Get")
        .unwrap_or_else(|| panic!("no rpc finished line for Get:\n{text}"));
    assert_eq!(get["level"], "DEBUG");
    assert_eq!(get["target"], "memgate_server::rpc");
    assert_eq!(get["fields"]["code"], "OK");
    assert!(get["fields"]["duration_us"].is_u64(), "{get}");
    let span = &get["span"];
    assert_eq!(span["name"], "rpc");
    assert_eq!(span["rpc.system"], "grpc");
    assert_eq!(span["rpc.service"], "memgate.v1.Cache");
    assert_eq!(span["rpc.grpc.status_code"], 0);
    assert_eq!(span["keys"], 1);
}
