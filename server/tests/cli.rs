//! The `memgate` binary's command line: bad flags fail fast with one clear
//! line and a non-zero exit, never a panic.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// `memgate` with none of the caller's MEMGATE_* variables.
fn memgate_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMGATE_") {
            command.env_remove(name);
        }
    }
    command.stdin(Stdio::null());
    command
}

fn memgate(args: &[&str]) -> (i32, String) {
    let out = memgate_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    for (args, needle) in [
        (&["--listen", "not-an-address"][..], "--listen"),
        (&["--memcached", ",,"], "names no server"),
        (&["--memcached", "127.0.0.1"], "host:port"),
        (&["--memcached", "127.0.0.1:11211:0"], "weight"),
        (&["--max-message-bytes", "10"], "--max-message-bytes"),
    ] {
        let (code, stderr) = memgate(args);
        assert_ne!(code, 0, "{args:?} exited 0");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("memgate:"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = memgate(&["--listen", &addr]);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_memgate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--memcached",
        "--memcached-file",
        "--memcached-srv",
        "--discovery-interval",
        "--dns-server",
        "--default-ttl",
        "--max-value-bytes",
        "--max-batch-keys",
        "--max-message-bytes",
        "--list-max-keys",
        "--timeout",
        "--connect-timeout",
        "--max-idle-conns",
        "--keepalive",
        "--health-interval",
        "--embedded-max-bytes",
        "--no-reflection",
        "MEMGATE_MEMCACHED",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

/// SIGTERM: health turns NOT_SERVING first (so meshes drain), then the
/// open health Watch ends with UNAVAILABLE and the process exits 0 at once:
/// only unary calls in flight get --shutdown-grace (10 s here), and there
/// are none.
#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    use std::time::{Duration, Instant};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_memgate"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shutdown-grace",
            "10s",
        ])
        .env_remove("MEMGATE_MEMCACHED")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut health = loop {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            break HealthClient::new(ch);
        }
        assert!(Instant::now() < deadline, "memgate never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut status = watch.message().await.unwrap().unwrap().status;
    while status != ServingStatus::Serving as i32 {
        status = watch.message().await.unwrap().unwrap().status;
    }

    let sent = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("no health change after SIGTERM");
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    let end = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("the Watch did not end after SIGTERM");
    assert_eq!(
        end.expect_err("the Watch went on").code(),
        tonic::Code::Unavailable
    );

    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "memgate still running 3 s after SIGTERM (grace 10 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(code.success(), "exit status {code:?}");
    println!(
        "exited {:?} after SIGTERM with an open Watch (grace 10s)",
        sent.elapsed()
    );
}

#[test]
fn an_unknown_key_in_the_file_is_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "memgate.toml",
        "listen = \"127.0.0.1:1\"\ntimeuot = \"1s\"\n",
    );
    let (code, stderr) = memgate(&["--config", &file]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown key `timeuot`"), "{stderr}");
    assert!(stderr.contains(&format!("{file}:2")), "{stderr}");
}
