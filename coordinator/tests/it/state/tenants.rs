//! Tenants: checks naming the bad field, duplicates, credentials encrypted at rest (and nowhere
//! in clear on disk), removal refused while a job runs.

use rewind_common::connector::Secret;
use rewind_coordinator::state::{
    Actor, ErrorClass, JobKind, JobStatus, RecoveryPatch, RecoverySettings, Schedule, SecretKey,
    StateError, TenantSettings, MAX_APPS,
};

use super::{new_tenant, open, reopen, with_tenants};

#[tokio::test]
async fn bad_fields_are_named_with_their_values() {
    let (_dir, state) = open();
    let key = SecretKey::generate();
    type Edit = fn(&mut rewind_coordinator::state::NewTenant);
    let cases: &[(Edit, &str, &str)] = &[
        (|t| t.name = "Acme".into(), "name", "Acme"),
        (|t| t.name = "-acme".into(), "name", "-acme"),
        (|t| t.name = "a".repeat(64), "name", "aaaa"),
        (|t| t.name = "acme.corp".into(), "name", "acme.corp"),
        (
            |t| t.graph_base_url = "ftp://x/v1.0".into(),
            "graphBaseUrl",
            "ftp://x/v1.0",
        ),
        (
            |t| t.token_url = "login.example".into(),
            "tokenUrl",
            "login.example",
        ),
        (|t| t.client_id = String::new(), "clientId", "\"\""),
        (|t| t.retention = 0, "retention", "0"),
        (|t| t.report_retention_days = 0, "reportRetentionDays", "0"),
        (|t| t.shard_bits = 17, "shardBits", "17"),
        (
            |t| t.schedule = Schedule::Daily { at_utc: (7, 60) },
            "schedule",
            "07:60",
        ),
        (
            |t| t.schedule = Schedule::Interval { seconds: 0 },
            "schedule",
            "0",
        ),
    ];
    for (edit, field, value) in cases {
        let mut tenant = new_tenant("acme");
        edit(&mut tenant);
        let err = state.add_tenant(&key, tenant).await.unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.class(), ErrorClass::Invalid, "{msg}");
        assert!(
            matches!(&err, StateError::Invalid { field: f, .. } if f == field),
            "{field}: {msg}"
        );
        assert!(msg.contains(field) && msg.contains(value), "{field}: {msg}");
    }
    assert!(state.list_tenants().unwrap().is_empty());

    let mut edge = new_tenant("a");
    edge.shard_bits = 16;
    edge.schedule = Schedule::Off;
    let added = state.add_tenant(&key, edge).await.unwrap();
    assert_eq!(added.shard_bits, 16);
    let defaults = state.add_tenant(&key, new_tenant("acme")).await.unwrap();
    assert_eq!(
        (
            defaults.retention,
            defaults.report_retention_days,
            defaults.shard_bits
        ),
        (7, 7, 6)
    );
    assert_eq!(defaults.schedule, Schedule::Daily { at_utc: (2, 0) });
    let err = state
        .update_tenant(
            "acme",
            TenantSettings {
                retention: Some(0),
                ..TenantSettings::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
}

#[tokio::test]
async fn add_get_list_update_and_duplicates() {
    let (_dir, state, key) = with_tenants(&["globex", "acme"]).await;
    let err = state
        .add_tenant(&key, new_tenant("acme"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert!(err.to_string().contains("acme"), "{err}");
    let names: Vec<String> = state
        .list_tenants()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme", "globex"]);
    let updated = state
        .update_tenant(
            "acme",
            TenantSettings {
                retention: Some(3),
                schedule: Some(Schedule::Interval { seconds: 60 }),
                graph_base_url: Some("https://graph.example/v1.0".into()),
                ..TenantSettings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.retention, 3);
    assert_eq!(state.get_tenant("acme").unwrap(), updated);
    assert_eq!(
        state.get_tenant("nobody").unwrap_err().class(),
        ErrorClass::NotFound
    );
}

/// Edits of different recovery settings made at the same time all stand: each one's fields
/// are applied to the stored record under the state's lock, never a copy read before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_of_recovery_settings_all_stand() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    let edit = |patch: RecoveryPatch| {
        let state = state.clone();
        tokio::spawn(async move {
            state
                .update_tenant(
                    "acme",
                    TenantSettings {
                        recovery: patch,
                        ..TenantSettings::default()
                    },
                )
                .await
                .unwrap()
        })
    };
    for round in 1..=20u32 {
        let edits = [
            edit(RecoveryPatch {
                write_budget: Some(round),
                ..RecoveryPatch::default()
            }),
            edit(RecoveryPatch {
                approval_threshold: Some(u64::from(round) * 10),
                ..RecoveryPatch::default()
            }),
            edit(RecoveryPatch {
                history_days: Some(round + 1),
                conditional_access_budget: Some(round + 2),
                ..RecoveryPatch::default()
            }),
        ];
        for e in edits {
            e.await.unwrap();
        }
        let r = state.get_tenant("acme").unwrap().recovery;
        assert_eq!(
            r,
            RecoverySettings {
                write_budget: round,
                approval_threshold: u64::from(round) * 10,
                history_days: round + 1,
                conditional_access_budget: round + 2,
                ..RecoverySettings::default()
            },
            "round {round}"
        );
    }
    // A bad field is named, and nothing of its edit is kept.
    let err = state
        .update_tenant(
            "acme",
            TenantSettings {
                recovery: RecoveryPatch {
                    approval_threshold: Some(1),
                    write_budget: Some(0),
                    ..RecoveryPatch::default()
                },
                ..TenantSettings::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("writeBudget"), "{err}");
    assert_eq!(
        state
            .get_tenant("acme")
            .unwrap()
            .recovery
            .approval_threshold,
        200
    );
}

#[tokio::test]
async fn secrets_round_trip_and_a_wrong_key_says_it_does_not_match() {
    let (_dir, state, key) = with_tenants(&["acme"]).await;
    let record = state.get_tenant("acme").unwrap();
    assert_eq!(record.client_secret(&key).unwrap().expose(), "s3cret-value");
    let err = record.client_secret(&SecretKey::generate()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("does not match") && msg.contains("acme"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret") && !format!("{err:?}").contains("s3cret"));
    assert!(!format!("{record:?}").contains("s3cret"));
    assert!(!format!("{:?}", new_tenant("acme")).contains("s3cret"));

    let record = state
        .set_credentials(&key, "acme", "client-2", &Secret::new("rotated-value"))
        .await
        .unwrap();
    assert_eq!(record.client_id, "client-2");
    assert_eq!(
        record.client_secret(&key).unwrap().expose(),
        "rotated-value"
    );
}

#[tokio::test]
async fn no_secret_is_on_disk_in_clear() {
    let (dir, state) = open();
    let key = SecretKey::generate();
    let plaintext = "plain-secret-3f9a7c1e-never-on-disk";
    let mut tenant = new_tenant("acme");
    tenant.secret = Secret::new(plaintext);
    tenant.client_id = "client-id-visible-on-disk".into();
    state.add_tenant(&key, tenant).await.unwrap();
    state
        .set_credentials(
            &key,
            "acme",
            "client-id-visible-on-disk",
            &Secret::new(plaintext),
        )
        .await
        .unwrap();
    let app_secret = "app-secret-77d01b2e-never-on-disk";
    state
        .add_app_by(
            &Actor::Coordinator,
            &key,
            "acme",
            "second-app",
            &Secret::new(app_secret),
        )
        .await
        .unwrap();
    drop(state);
    let state = reopen(&dir);
    assert_eq!(
        state
            .get_tenant("acme")
            .unwrap()
            .client_secret(&key)
            .unwrap()
            .expose(),
        plaintext
    );
    drop(state);

    let mut bytes = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                bytes.extend(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // The scan sees what is stored in clear…
    assert!(
        contains(b"client-id-visible-on-disk"),
        "the scan found no record at all"
    );
    // …and the secret is not.
    assert!(
        !contains(plaintext.as_bytes()) && !contains(app_secret.as_bytes()),
        "a secret is on disk in clear"
    );
}

/// More app registrations: added with their secrets sealed, kept over a restart, listed for
/// recoveries after the primary one; a client id the tenant has (primary or added) is a
/// conflict, the primary cannot be removed, an unknown one is not found, and no more than
/// `MAX_APPS` are taken.
#[tokio::test]
async fn app_registrations_are_added_kept_and_removed() {
    let (dir, state) = open();
    let key = SecretKey::generate();
    state.add_tenant(&key, new_tenant("acme")).await.unwrap();
    let primary = state.get_tenant("acme").unwrap().client_id;
    let actor = Actor::Coordinator;
    for (id, secret) in [("app-2", "secret-2"), ("app-3", "secret-3")] {
        state
            .add_app_by(&actor, &key, "acme", id, &Secret::new(secret))
            .await
            .unwrap();
    }
    for taken in [primary.as_str(), "app-2"] {
        let err = state
            .add_app_by(&actor, &key, "acme", taken, &Secret::new("x"))
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Conflict, "{err}");
        assert!(err.to_string().contains(taken), "{err}");
    }
    let err = state
        .set_credentials(&key, "acme", "app-3", &Secret::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Conflict, "{err}");
    let err = state
        .add_app_by(&actor, &key, "acme", "app 4", &Secret::new("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("clientId"), "{err}");
    let err = state
        .add_app_by(&actor, &key, "acme", "app-4", &Secret::new(""))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Invalid, "{err}");
    let err = state
        .add_app_by(&actor, &key, "nobody", "app-4", &Secret::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound, "{err}");

    drop(state);
    let state = reopen(&dir);
    let record = state.get_tenant("acme").unwrap();
    let apps = record.write_apps();
    let ids: Vec<&str> = apps.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [primary.as_str(), "app-2", "app-3"]);
    assert_eq!(apps[2].1.open(&key, "acme").unwrap().expose(), "secret-3");

    let err = state
        .remove_app_by(&actor, "acme", &primary)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Invalid, "{err}");
    assert!(err.to_string().contains("primary"), "{err}");
    let err = state
        .remove_app_by(&actor, "acme", "app-9")
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    let record = state.remove_app_by(&actor, "acme", "app-2").await.unwrap();
    assert_eq!(record.apps.len(), 1);
    assert_eq!(record.apps[0].client_id, "app-3");

    for n in record.write_apps().len()..MAX_APPS {
        state
            .add_app_by(
                &actor,
                &key,
                "acme",
                &format!("more-{n}"),
                &Secret::new("x"),
            )
            .await
            .unwrap();
    }
    let err = state
        .add_app_by(&actor, &key, "acme", "one-too-many", &Secret::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Invalid, "{err}");
    assert!(err.to_string().contains(&MAX_APPS.to_string()), "{err}");
    let audited: Vec<String> = state
        .audit_records()
        .map(|r| r.unwrap().action)
        .filter(|a| a.starts_with("app."))
        .collect();
    assert_eq!(audited.iter().filter(|a| *a == "app.removed").count(), 1);
    assert_eq!(
        audited.iter().filter(|a| *a == "app.added").count(),
        2 + MAX_APPS - 2
    );
}

#[tokio::test]
async fn a_tenant_with_an_open_job_cannot_be_removed() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    let job = state.create_job("acme", JobKind::Backup).await.unwrap();
    let err = state.remove_tenant("acme").await.unwrap_err();
    assert!(err.to_string().contains(&job.id), "{err}");
    state
        .transition(&job.id, JobStatus::Abandoned, |_| {})
        .await
        .unwrap();
    state.remove_tenant("acme").await.unwrap();
    assert!(state.get_tenant("acme").is_err());
    assert_eq!(
        state.remove_tenant("acme").await.unwrap_err().class(),
        ErrorClass::NotFound
    );
}
