//! Backups stay readable: the golden snapshots checked in under `common/tests/golden/` (one per
//! format version) must read, with this build, to exactly the objects beside them, and the
//! property-id tables must still say what `property-ids.tsv` pinned. See the README there.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rewind_common::diff::diff_snapshots;
use rewind_common::properties::{self, link_kinds, properties};
use rewind_common::snapshot::shard::{FLAG_DYNAMIC, FLAG_ON_PREMISES};
use rewind_common::snapshot::{
    load_snapshot, seal_manifest_with, shard_key, store_part, write_objects, LoadedSnapshot,
    LocalShardStore, ShardLayout, SnapshotInfo, SnapshotKind, FORMAT_VERSION,
};
use rewind_common::{
    DirectoryObject, Lifecycle, Link, LinkKind, ObjectId, ObjectType, Scope, SourceOfAuthority,
    Value,
};
use serde_json::{json, Map, Value as Json};

use crate::support::store;

const TENANT: &str = "golden";
const SNAPSHOT: &str = "golden";
/// Set to write the golden snapshot of a new format version (never to rewrite one).
const WRITE_VAR: &str = "REWIND_WRITE_GOLDEN";
const NEVER_REGENERATE: &str = "never regenerate a golden snapshot or edit property-ids.tsv \
     to make this test pass: every backup already written reads through these ids";

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn version_dir(version: u16) -> PathBuf {
    golden_root().join(format!("v{version}"))
}

/// The property tables as `property-ids.tsv` holds them: `type<TAB>id<TAB>name` lines.
fn property_rows() -> Vec<String> {
    ObjectType::ALL
        .into_iter()
        .flat_map(|t| {
            properties(t)
                .iter()
                .map(move |p| format!("{t}\t{}\t{}", p.id, p.name))
        })
        .collect()
}

const TSV_HEADER: &str = "# type\tid\tname — append-only; see README.md";

/// The golden folder of this build's format version. With [`WRITE_VAR`] set, first writes it
/// (and `property-ids.tsv` when there is none), once per test run.
fn current_golden() -> PathBuf {
    static WRITTEN: OnceLock<()> = OnceLock::new();
    let dir = version_dir(FORMAT_VERSION);
    if std::env::var_os(WRITE_VAR).is_some() {
        WRITTEN.get_or_init(|| {
            let tsv = golden_root().join("property-ids.tsv");
            if !tsv.exists() {
                let text = format!("{TSV_HEADER}\n{}\n", property_rows().join("\n"));
                std::fs::write(&tsv, text).expect("write property-ids.tsv");
            }
            write_golden(&dir);
        });
    }
    dir
}

#[test]
fn property_ids_are_pinned() {
    current_golden();
    let path = golden_root().join("property-ids.tsv");
    let text = std::fs::read_to_string(&path).expect("common/tests/golden/property-ids.tsv");
    let pinned: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let current = property_rows();
    for row in &pinned {
        assert!(
            current.iter().any(|c| c == row),
            "property {row:?} of property-ids.tsv no longer has that id in \
             common/src/properties.rs. Property ids are append-only: put the entry back where it \
             was and append new properties at the end of their table; {NEVER_REGENERATE}"
        );
    }
    let new: Vec<&String> = current
        .iter()
        .filter(|c| !pinned.contains(&c.as_str()))
        .collect();
    assert!(
        new.is_empty(),
        "properties.rs has properties that property-ids.tsv does not pin yet; if they were \
         appended with new ids, append these lines to common/tests/golden/property-ids.tsv:\n{}",
        new.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// An object in the human-readable form of `objects.jsonl`: properties by name (`#id` for an
/// id the table does not have), links by kind.
fn expected_form(o: &DirectoryObject) -> Json {
    let attributes: Map<String, Json> = o
        .attributes
        .iter()
        .map(|(pid, v)| {
            let name = properties::property(o.object_type, *pid)
                .map_or_else(|| format!("#{pid}"), |d| d.name.to_owned());
            (name, v.to_json())
        })
        .collect();
    let links: Map<String, Json> = o
        .links
        .iter()
        .map(|s| {
            let links = serde_json::to_value(&s.links).unwrap_or(Json::Null);
            (s.kind.as_str().to_owned(), links)
        })
        .collect();
    json!({
        "id": o.id.to_string(),
        "type": o.object_type.as_str(),
        "lifecycle": serde_json::to_value(o.lifecycle).unwrap_or(Json::Null),
        "source": serde_json::to_value(o.source).unwrap_or(Json::Null),
        "dynamicMembership": o.dynamic_membership,
        "attributes": attributes,
        "links": links,
    })
}

/// A value for property `i` of an object, cycling through every kind of value.
fn value(name: &str, i: usize, n: usize) -> Value {
    let text = |s: String| Value::from(s.as_str());
    match (i + n) % 7 {
        0 => text(format!("{name} {n}")),
        1 => Value::Bool(i % 2 != 1),
        2 => Value::Int(-(i as i64) * 1_000_003 + n as i64),
        3 => Value::Float(i as f64 + 0.25),
        4 => Value::List(vec![
            text(format!("{name}@example.com")),
            Value::from("Zürich, ünïcödé ✓"),
            Value::from(""),
        ]),
        5 => Value::Map(
            [
                ("enabled".to_owned(), Value::Bool(true)),
                (
                    "items".to_owned(),
                    Value::List(vec![Value::Int(1), Value::Float(-2.5)]),
                ),
                (
                    "nested".to_owned(),
                    Value::Map([("key".to_owned(), text(format!("{name}-{n}")))].into()),
                ),
            ]
            .into(),
        ),
        _ => text(format!(
            "a value longer than an inline string holds, for {name}"
        )),
    }
}

/// Plain users added to shard 0 of the golden snapshot.
const FILLER_USERS: usize = 128;

fn golden_id(t: ObjectType, n: usize) -> ObjectId {
    ObjectId::for_singleton(&format!("golden/{t}/{n}"))
}

/// A few objects of every type: all properties set on the first, every kind of link with data,
/// soft-deleted, on-premises and dynamic objects.
fn golden_objects() -> Vec<DirectoryObject> {
    let mut out = Vec::new();
    for t in ObjectType::ALL {
        let count = if t.is_singleton() { 1 } else { 3 };
        for n in 0..count {
            let mut o = DirectoryObject::new(golden_id(t, n), t);
            for (i, p) in properties(t).iter().enumerate() {
                // The first object has every property, the others every second or third.
                if n == 0 || i % (n + 1) == 0 {
                    o.set_by_id(p.id, value(p.name, i, n));
                }
            }
            if n == 1 {
                o.lifecycle = Lifecycle::SoftDeleted {
                    deleted_at: 1_795_000_000 + t.code() as i64,
                };
                if matches!(t, ObjectType::User | ObjectType::Group) {
                    o.source = SourceOfAuthority::OnPremises;
                }
            }
            if t == ObjectType::Group && n == 2 {
                o.dynamic_membership = true;
                o.set(
                    "membershipRule",
                    Value::from("user.department -eq \"Sales\""),
                );
            }
            for kind in link_kinds(t) {
                for target in 0..(3 - n) {
                    let data = match kind {
                        LinkKind::OAuth2PermissionGrants => Some(json!({
                            "resourceId": golden_id(ObjectType::ServicePrincipal, 2).to_string(),
                            "scope": format!("User.Read Mail.Send{target}"),
                        })),
                        LinkKind::AppRoleAssignedTo => Some(json!({
                            "principalId": golden_id(ObjectType::User, target).to_string(),
                            "appRoleId": "00000000-0000-0000-0000-00000000000a",
                        })),
                        _ => None,
                    };
                    let target = match data {
                        Some(_) => ObjectId::for_singleton(&format!("golden/{kind}/{n}/{target}")),
                        None => golden_id(ObjectType::User, target),
                    };
                    o.add_link(
                        *kind,
                        Link {
                            target,
                            data: data.map(|d| Value::from_json(&d)),
                        },
                    );
                }
            }
            out.push(o);
        }
    }
    // Enough plain users in shard 0 that its blocks are compressed against a dictionary (the
    // other shards are too small for one), so both kinds of blob are pinned.
    for n in 0..FILLER_USERS {
        let id = ObjectId(golden_id(ObjectType::User, 100 + n).0 >> 2);
        let mut u = DirectoryObject::new(id, ObjectType::User);
        let department = ["Sales", "Legal", "Engineering"][n % 3];
        for (name, v) in [
            ("displayName", format!("Filler User {n}")),
            (
                "userPrincipalName",
                format!("filler.user.{n}@golden.example.com"),
            ),
            ("mail", format!("filler.user.{n}@golden.example.com")),
            ("department", department.to_owned()),
            ("jobTitle", format!("{department} specialist")),
            ("city", "Berlin".to_owned()),
            (
                "streetAddress",
                format!(
                    "Building {n}, Floor {}, Unter den Linden {}, Mitte",
                    n % 7,
                    n % 90
                ),
            ),
            (
                "companyName",
                "Golden Contoso Holdings International GmbH".to_owned(),
            ),
            ("usageLocation", "DE".to_owned()),
        ] {
            u.set(name, Value::from(v.as_str()));
        }
        u.set("accountEnabled", Value::Bool(n % 5 != 0));
        out.push(u);
    }
    for o in &mut out {
        o.normalize();
    }
    out.sort_by_key(|o| o.id);
    out
}

/// Writes the golden snapshot of this build's format version, which must not exist yet.
fn write_golden(dir: &Path) {
    assert!(
        !dir.exists(),
        "{} exists: a golden snapshot is written once, for a new format version; {NEVER_REGENERATE}",
        dir.display()
    );
    let store = LocalShardStore::open(dir).expect("golden store");
    let info = SnapshotInfo {
        tenant: TENANT.into(),
        snapshot_id: SNAPSHOT.into(),
        kind: SnapshotKind::Backup,
        created_at: 1_795_000_000,
        not_captured: Vec::new(),
    };
    let objects = golden_objects();
    // Since format 3 a shard may have several parts: users and groups in part 0, the other
    // types in part 1 (as two capture tasks would write them), so both are pinned.
    let layout = ShardLayout::new(2);
    let mut refs = Vec::new();
    let mut lists = Vec::new();
    for part in 0..2u16 {
        let mut writers = layout.writers();
        for o in &objects {
            let first = matches!(o.object_type, ObjectType::User | ObjectType::Group);
            if first == (part == 0) {
                writers[layout.shard_of(o.id) as usize].add(o.clone());
            }
        }
        let (shards, standing) =
            store_part(&store, &info, layout, writers, part, None).expect("store part");
        refs.extend(shards);
        lists.push(standing);
    }
    seal_manifest_with(&store, &info, layout, refs, lists).expect("write golden");
    let lines: Vec<String> = objects
        .iter()
        .map(|o| expected_form(o).to_string())
        .collect();
    std::fs::write(dir.join("objects.jsonl"), lines.join("\n") + "\n").expect("objects.jsonl");
}

/// Every `v<N>` folder under the golden root, by version.
fn golden_versions() -> Vec<(u16, PathBuf)> {
    let mut out: Vec<(u16, PathBuf)> = std::fs::read_dir(golden_root())
        .expect("common/tests/golden")
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.strip_prefix('v')?.parse().ok()?;
            Some((v, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Checks what the index says of each object against the object itself: the content hash of
/// its canonical encoding as this build writes it (so a backup written by an older build and a
/// snapshot written today agree on unchanged objects), its type, lifecycle and flags.
fn check_index(snapshot: &LoadedSnapshot, version: u16) {
    for shard in &snapshot.shards {
        for (entry, object) in shard
            .index()
            .iter()
            .zip(shard.decode_all().expect("decode"))
        {
            let what = format!("golden v{version}: object {}", object.id);
            assert_eq!(
                DirectoryObject::hash_encoding(&object.encode()),
                entry.hash,
                "{what}: this build encodes it differently from the build that wrote it"
            );
            assert_eq!(entry.object_type(), object.object_type, "{what}");
            assert_eq!(entry.lifecycle, object.lifecycle.code(), "{what}");
            let mut flags = 0;
            if object.source == SourceOfAuthority::OnPremises {
                flags |= FLAG_ON_PREMISES;
            }
            if object.dynamic_membership {
                flags |= FLAG_DYNAMIC;
            }
            assert_eq!(entry.flags, flags, "{what}: index flags");
        }
    }
}

/// The golden snapshot in `dir`, loaded, and its objects decoded.
fn load_golden(version: u16, dir: &Path) -> (LoadedSnapshot, Vec<DirectoryObject>) {
    let store = LocalShardStore::open(dir).expect("golden store");
    let snapshot = load_snapshot(&store, TENANT, SNAPSHOT)
        .unwrap_or_else(|e| panic!("golden v{version} does not load: {e}"));
    let decoded = snapshot.decode_all().expect("golden objects decode");
    (snapshot, decoded)
}

#[test]
fn golden_snapshots_read_to_their_expected_objects() {
    assert!(
        current_golden().exists(),
        "no golden snapshot of format version {FORMAT_VERSION}: write one with \
         `{WRITE_VAR}=1 cargo test -p rewind-common --test it golden` (see \
         common/tests/golden/README.md) and check it in"
    );
    for (version, dir) in golden_versions() {
        let (snapshot, decoded) = load_golden(version, &dir);
        let expected_text =
            std::fs::read_to_string(dir.join("objects.jsonl")).expect("objects.jsonl");
        let expected: Vec<Json> = expected_text
            .lines()
            .map(|l| serde_json::from_str(l).expect("objects.jsonl line"))
            .collect();
        assert_eq!(
            decoded.len(),
            expected.len(),
            "golden v{version}: object count"
        );
        for (object, want) in decoded.iter().zip(&expected) {
            assert_eq!(
                &expected_form(object),
                want,
                "golden v{version}: object {} reads differently; {NEVER_REGENERATE}",
                object.id
            );
        }
        check_index(&snapshot, version);
        // A snapshot of the same objects written today differs from it in nothing.
        let (_dir, fresh) = store();
        let info = SnapshotInfo {
            tenant: TENANT.into(),
            snapshot_id: "today".into(),
            kind: SnapshotKind::Live,
            created_at: 1_800_000_000,
            not_captured: Vec::new(),
        };
        write_objects(&fresh, &info, ShardLayout::new(0), decoded).expect("rewrite");
        let today = load_snapshot(&fresh, TENANT, "today").expect("load rewrite");
        let entries = diff_snapshots(&snapshot, &today, &Scope::All).expect("diff");
        assert!(entries.is_empty(), "golden v{version}: {entries:?}");
    }
}

#[test]
fn the_current_golden_covers_every_type_flag_and_link_kind() {
    let (_, objects) = load_golden(FORMAT_VERSION, &current_golden());
    for t in ObjectType::ALL {
        let of_type: Vec<&DirectoryObject> =
            objects.iter().filter(|o| o.object_type == t).collect();
        assert!(
            of_type
                .iter()
                .any(|o| o.attributes.len() > properties(t).len() / 2),
            "{t}: no object with most properties set"
        );
        for kind in link_kinds(t) {
            assert!(
                of_type.iter().any(|o| !o.links_of(*kind).is_empty()),
                "{t}: no {kind} links"
            );
        }
    }
    assert!(objects.iter().any(|o| !o.lifecycle.is_active()));
    assert!(objects.iter().any(|o| o.dynamic_membership));
    let dictionary_len = |shard: u32| {
        let key = shard_key(TENANT, SNAPSHOT, shard);
        let blob = std::fs::read(current_golden().join(key)).expect("golden blob");
        u32::from_le_bytes([blob[32], blob[33], blob[34], blob[35]])
    };
    assert!(dictionary_len(0) > 0, "shard 0 has no dictionary");
    assert_eq!(dictionary_len(1), 0, "shard 1 has a dictionary");
    assert!(objects
        .iter()
        .any(|o| o.source == SourceOfAuthority::OnPremises));
    assert!(objects
        .iter()
        .flat_map(|o| &o.links)
        .flat_map(|s| &s.links)
        .any(|l| l.data.is_some()));
}
