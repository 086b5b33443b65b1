//! `rewind audit verify|export` on a stopped coordinator's state: an intact log verifies
//! (exit 0); a record changed by one byte, deleted (inside the log or from its end), moved or
//! unreadable, or the log's head deleted (each done through
//! sled directly, as an attacker with the disk would) is named by `verify` with exit 1; the
//! export is JSON Lines of every record; a held state and a missing folder are said plainly.

use std::path::Path;

use rewind_coordinator::state::{Actor, NewToken, Role, State, TenantScope};

use crate::rewind;

const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// A state folder whose log holds one `token.created` record per name, records 1 to 4.
fn logged_state(dir: &Path) {
    let state = State::open(dir.join("state")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for name in NAMES {
        runtime
            .block_on(state.create_token_by(
                &Actor::Console,
                NewToken {
                    name: name.into(),
                    role: Role::Reader,
                    tenants: TenantScope::All,
                    expires_at: None,
                },
            ))
            .unwrap();
    }
}

/// sled's own handle on the state once the last holder let go of it.
fn raw_db(dir: &Path) -> sled::Db {
    let mut last = None;
    for _ in 0..100 {
        match sled::open(dir.join("state")) {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("cannot reopen the state: {last:?}");
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

type Tamper = fn(&sled::Db);

fn change_a_byte_of_record_2(db: &sled::Db) {
    let tree = log(db);
    let mut bytes = tree.get(key(2)).unwrap().unwrap().to_vec();
    let at = bytes
        .windows(5)
        .position(|w| w == b"bravo")
        .expect("record 2 holds its token's name");
    bytes[at + 2] = b'x';
    tree.insert(key(2), bytes).unwrap();
}

fn delete_record_2(db: &sled::Db) {
    log(db).remove(key(2)).unwrap();
}

fn delete_record_1(db: &sled::Db) {
    log(db).remove(key(1)).unwrap();
}

fn delete_the_last_record(db: &sled::Db) {
    log(db).remove(key(4)).unwrap();
}

fn delete_the_last_two_records(db: &sled::Db) {
    log(db).remove(key(4)).unwrap();
    log(db).remove(key(3)).unwrap();
}

fn delete_the_head(db: &sled::Db) {
    db.open_tree("audit_head").unwrap().remove(b"head").unwrap();
}

fn swap_records_2_and_3(db: &sled::Db) {
    let tree = log(db);
    let two = tree.get(key(2)).unwrap().unwrap();
    let three = tree.get(key(3)).unwrap().unwrap();
    tree.insert(key(2), three).unwrap();
    tree.insert(key(3), two).unwrap();
}

fn garble_record_3(db: &sled::Db) {
    log(db).insert(key(3), b"\xc1garbage".as_slice()).unwrap();
}

fn nothing(_: &sled::Db) {}

fn log(db: &sled::Db) -> sled::Tree {
    db.open_tree("audit").unwrap()
}

#[test]
fn verify_names_the_first_changed_deleted_or_moved_record() {
    // (case, tampering, exit code, what the output says)
    #[rustfmt::skip]
    let table: &[(&str, Tamper, i32, &[&str])] = &[
        ("intact", nothing, 0, &["intact: 4 records"]),
        ("a byte of record 2's details changed", change_a_byte_of_record_2, 1, &["record 2", "changed", "1 records before it"]),
        ("record 2 deleted", delete_record_2, 1, &["record 2", "missing", "record 3 follows"]),
        ("record 1 deleted", delete_record_1, 1, &["record 1", "missing"]),
        ("the last record deleted", delete_the_last_record, 1, &["record 4", "missing", "deleted from the end", "3 records before it"]),
        ("the last two records deleted", delete_the_last_two_records, 1, &["records 3 to 4", "deleted from the end"]),
        ("the log's head deleted", delete_the_head, 1, &["head", "missing"]),
        ("records 2 and 3 swapped", swap_records_2_and_3, 1, &["record 2", "out of order", "holds record 3"]),
        ("record 3 unreadable", garble_record_3, 1, &["record 3", "cannot be read", "2 records before it"]),
    ];
    for (case, tamper, want, says) in table {
        let dir = tempfile::tempdir().unwrap();
        logged_state(dir.path());
        {
            let db = raw_db(dir.path());
            tamper(&db);
            db.flush().unwrap();
        }
        // sled lets go of its lock file as the last handle drops; retry while it does.
        let mut out = rewind(&[
            "audit",
            "verify",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        for _ in 0..50 {
            if !String::from_utf8_lossy(&out.stderr).contains("in use") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            out = rewind(&[
                "audit",
                "verify",
                "--state-dir",
                dir.path().to_str().unwrap(),
            ]);
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(*want), "{case}: {text}");
        for needle in *says {
            assert!(text.contains(needle), "{case}: {needle:?} not in {text}");
        }
    }
}

#[test]
fn export_writes_every_record_as_json_lines_and_a_held_state_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    logged_state(dir.path());
    let file = dir.path().join("audit.jsonl");
    let out = rewind(&[
        "audit",
        "export",
        "--state-dir",
        d,
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    let stdout = rewind(&["audit", "export", "--state-dir", d]);
    assert!(stdout.status.success());
    assert_eq!(String::from_utf8_lossy(&stdout.stdout), written);
    let records: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), NAMES.len());
    for (i, (r, name)) in records.iter().zip(NAMES).enumerate() {
        assert_eq!(r["seq"], serde_json::json!(i + 1), "{r}");
        assert_eq!(r["action"], "token.created");
        assert_eq!(r["actor"], serde_json::json!({"type": "console"}));
        assert_eq!(r["details"]["name"], name);
        assert_eq!(r["hash"].as_str().unwrap().len(), 64);
    }
    assert_eq!(records[0]["prev"], "0".repeat(64));
    assert_eq!(records[1]["prev"], records[0]["hash"]);

    {
        let _held = State::open(dir.path().join("state")).unwrap();
        let out = rewind(&["audit", "verify", "--state-dir", d]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("in use") && err.contains("coordinator"),
            "{err}"
        );
    }
    let missing = dir.path().join("nowhere");
    let out = rewind(&["audit", "verify", "--state-dir", missing.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );
}
