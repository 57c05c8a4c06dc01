//! SIGHUP re-reads `--memcached-file`. A test binary of its own: the
//! signal is sent to the whole process.

use std::time::Duration;

use memgate_server::membership::{Source, watch};
use memgate_server::store::memcached::ring::ShardSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_re_reads_the_file() {
    // The members file is a symlink into another directory, so writing
    // its target makes no event in the directory memgate watches, and
    // the periodic re-read is an hour away: only SIGHUP can explain an
    // update.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("members");
    std::fs::write(&target, "a:11211\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("members");
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let mut rx = watch(Source::File {
        path,
        poll: Duration::from_secs(3600),
    })
    .await
    .unwrap();
    assert_eq!(rx.borrow_and_update().len(), 1);

    std::fs::write(&target, "a:11211\nb:11211:2\n").unwrap();
    // SAFETY: kill(2) on this process's own id with a signal that
    // `watch` has installed a handler for.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("SIGHUP did not re-read the file")
        .unwrap();
    assert_eq!(
        *rx.borrow(),
        vec![
            ShardSpec {
                addr: "a:11211".to_owned(),
                weight: 1
            },
            ShardSpec {
                addr: "b:11211".to_owned(),
                weight: 2
            },
        ]
    );
}
