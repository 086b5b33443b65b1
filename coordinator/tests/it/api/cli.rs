//! `rewind token create|list|revoke` as an operator runs it: the token printed once (and
//! usable: it authenticates against the state), JSON output, revocation, bad input named with
//! a non-zero exit, and a state held by a running coordinator said plainly.

use rewind_coordinator::state::{AuthError, Role, State, TenantScope};

use crate::rewind;

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failure(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tokens_are_created_listed_and_revoked_in_a_stopped_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let created = stdout(&rewind(&[
        "token",
        "create",
        "--state-dir",
        d,
        "--name",
        "bootstrap",
        "--role",
        "operator",
        "--all-tenants",
        "--json",
    ]));
    let created: serde_json::Value = serde_json::from_str(created.trim()).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("rwd_") && token.len() == 47, "{token}");
    assert_eq!(created["tenants"], serde_json::json!(["*"]));

    let plain = stdout(&rewind(&[
        "token",
        "create",
        "--state-dir",
        d,
        "--name",
        "ci",
        "--role",
        "reader",
        "--tenant",
        "acme",
        "--expires-days",
        "2",
    ]));
    assert!(plain.trim().starts_with("rwd_"), "{plain}");

    let listed = stdout(&rewind(&["token", "list", "--state-dir", d, "--json"]));
    assert!(!listed.contains(&token), "the list shows a token");
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    let value = listed["value"].as_array().unwrap();
    assert_eq!(value.len(), 2);
    assert!(value.iter().any(|t| t["expiresDateTime"].is_string()));

    {
        let state = State::open(dir.path().join("state")).unwrap();
        let record = state
            .authenticate(&token, rewind_coordinator::state::unix_now())
            .unwrap();
        assert_eq!(
            (record.role, record.tenants),
            (Role::Operator, TenantScope::All)
        );
        // While the state is open here, as a running coordinator holds it, the CLI says so.
        let held = failure(&rewind(&["token", "list", "--state-dir", d]));
        assert!(
            held.contains("in use") && held.contains("coordinator"),
            "{held}"
        );
    }

    let revoked = stdout(&rewind(&["token", "revoke", "--state-dir", d, &id]));
    assert!(revoked.contains(&id), "{revoked}");
    let state = reopen(dir.path());
    assert!(matches!(
        state.authenticate(&token, rewind_coordinator::state::unix_now()),
        Err(AuthError::Revoked { .. })
    ));
    drop(state);

    for (args, needle) in [
        (vec!["--role", "admin", "--all-tenants"], "role"),
        (vec!["--role", "reader"], "--tenant"),
        (
            vec!["--role", "reader", "--all-tenants", "--tenant", "acme"],
            "not both",
        ),
        (vec!["--role", "reader", "--tenant", "Bad Name"], "Bad Name"),
    ] {
        let mut all = vec!["token", "create", "--state-dir", d, "--name", "x"];
        all.extend(args);
        let err = failure(&rewind(&all));
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    let err = failure(&rewind(&[
        "token",
        "revoke",
        "--state-dir",
        d,
        "tok_000000000000",
    ]));
    assert!(err.contains("tok_000000000000"), "{err}");
}

/// Opens the state again once the CLI's process let go of it.
fn reopen(dir: &std::path::Path) -> State {
    let mut last = None;
    for _ in 0..100 {
        match State::open(dir.join("state")) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("cannot reopen the state: {last:?}");
}
