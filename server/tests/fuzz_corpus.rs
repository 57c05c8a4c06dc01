//! Replays the committed fuzz corpus (fuzz/corpus/) through the same entry
//! points the fuzz targets use, plus property tests over random input, on
//! stable Rust in every CI run.

use std::path::Path;

use memgate_server::fuzzing;
use proptest::prelude::*;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{} panicked", path.display());
        n += 1;
    }
    n
}

#[test]
fn reply_corpus_replays_cleanly() {
    assert!(
        replay("reply", fuzzing::reply) >= 10,
        "the reply corpus is missing"
    );
}

#[test]
fn key_corpus_replays_cleanly() {
    assert!(
        replay("key", fuzzing::key) >= 5,
        "the key corpus is missing"
    );
}

proptest! {
    #[test]
    fn arbitrary_reply_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::reply(&data);
    }

    #[test]
    fn protocol_like_reply_bytes_never_panic(
        split in any::<u8>(),
        lines in proptest::collection::vec(
            prop_oneof![
                Just("VALUE a 0 3\r\nabc\r\n".to_string()),
                Just("VALUE key 0 0\r\n\r\n".to_string()),
                Just("END\r\n".to_string()),
                Just("STORED\r\n".to_string()),
                Just("SERVER_ERROR x\r\n".to_string()),
                "[A-Z_ a-z0-9=%]{0,40}\r\n",
                "[ -~]{0,20}\n",
            ],
            0..8,
        ),
    ) {
        let mut data = vec![split];
        data.extend(lines.concat().into_bytes());
        fuzzing::reply(&data);
    }

    #[test]
    fn arbitrary_keys_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::key(&data);
    }

    #[test]
    fn arbitrary_strings_as_keys(s in "\\PC{0,260}") {
        fuzzing::key(s.as_bytes());
    }
}
