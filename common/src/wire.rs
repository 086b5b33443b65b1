//! Wire messages between the coordinator and the workers, their subjects and message ids.
//!
//! A task is a pure request: it names its inputs (tenant, job, snapshot ids, shard range,
//! scope) and carries no payload larger than a key; what it produces goes to the blob store,
//! and its result message carries the key and the blake3 digest. Replaying a task gives the
//! same result, so every message id is deterministic: a duplicate is dropped by the queue, and
//! a result counted twice is refused by the coordinator's exactly-once record.
//!
//! Messages are rmp-serde with named fields ([`encode`], [`decode`]) and a `version` field;
//! enums are externally tagged (never internally tagged or flattened, which buffer through
//! serde's `Content` and lose rmp-serde's compact forms of `ObjectType` and `Lifecycle`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::id::ObjectId;
use crate::model::ObjectType;
use crate::plan::{PlannedStep, UniqueKey};
use crate::report::{ReportEntry, Scope};
use crate::secret_box::EncryptedSecret;
use crate::snapshot::{ShardRef, SnapshotKind, StandingRef};

/// The wire version this build writes and reads.
pub const WIRE_VERSION: u16 = 1;

/// The largest message this build sends or accepts (a larger payload goes through the blob
/// store and the message carries its key).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// A message that cannot be sent or used.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message does not encode: {0}")]
    Encode(String),
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error("message of wire version {found}; this build speaks version {WIRE_VERSION}")]
    Version { found: u16 },
    #[error("message of {bytes} bytes is over the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge { bytes: usize },
}

/// Encodes a message (rmp-serde, named fields), refusing one over [`MAX_MESSAGE_BYTES`].
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let bytes = rmp_serde::to_vec_named(message).map_err(|e| WireError::Encode(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge { bytes: bytes.len() });
    }
    Ok(bytes)
}

/// Just the version of a message, read first so that a message of another version is refused
/// as such rather than as one that does not parse.
#[derive(Deserialize)]
struct VersionOnly {
    version: u16,
}

/// Decodes a message that [`encode`] wrote, checking its version first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge { bytes: bytes.len() });
    }
    let v: VersionOnly =
        rmp_serde::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    if v.version != WIRE_VERSION {
        return Err(WireError::Version { found: v.version });
    }
    rmp_serde::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))
}

/// What a task does; a token of its subject and message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskKind {
    Capture,
    Diff,
    /// A batch of a recovery's steps, applied through the connector.
    Apply,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Capture => "capture",
            TaskKind::Diff => "diff",
            TaskKind::Apply => "apply",
        }
    }
}

/// Which task of which job: the identity every subject, message id and result key derives
/// from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskId {
    pub tenant: String,
    pub job: String,
    pub kind: TaskKind,
    /// The task's number within its job and kind (a capture part, a diff range).
    pub number: u32,
}

impl TaskId {
    /// `rewind.tasks.<tenant>.<job>.<kind>.<number>`, or `rewind.apply.` for an apply task
    /// (its own lane).
    pub fn task_subject(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            task_prefix(self.kind),
            self.tenant,
            self.job,
            self.kind.as_str(),
            self.number
        )
    }

    /// `rewind.results.<tenant>.<job>.<kind>.<number>`.
    pub fn result_subject(&self) -> String {
        format!(
            "rewind.results.{}.{}.{}.{}",
            self.tenant,
            self.job,
            self.kind.as_str(),
            self.number
        )
    }

    /// The task's message id: `<job>.<kind>.<number>` (a job id is unique, so the same task
    /// published twice is one message).
    pub fn task_msg_id(&self) -> String {
        format!("{}.{}.{}", self.job, self.kind.as_str(), self.number)
    }

    /// The result's message id.
    pub fn result_msg_id(&self) -> String {
        format!("result.{}", self.task_msg_id())
    }

    /// The key of the task's result in the coordinator's exactly-once record.
    pub fn result_key(&self) -> String {
        format!("{}.{}", self.kind.as_str(), self.number)
    }
}

/// The subjects' start of the lane of tasks of `kind`.
pub fn task_prefix(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Apply => "rewind.apply",
        TaskKind::Capture | TaskKind::Diff => "rewind.tasks",
    }
}

/// Every queued task of `kind`'s lane of a job, as a subject filter (to purge them on cancel).
pub fn job_task_filter(tenant: &str, job: &str, kind: TaskKind) -> String {
    format!("{}.{tenant}.{job}.>", task_prefix(kind))
}

/// A task, as published on the tasks lane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub version: u16,
    pub id: TaskId,
    pub spec: TaskSpec,
}

/// What a task asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskSpec {
    Capture(CaptureTask),
    Diff(DiffTask),
    Apply(ApplyTask),
}

/// The snapshot a capture task writes into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTarget {
    pub id: String,
    pub kind: SnapshotKind,
    /// Unix seconds.
    pub created_at: i64,
    /// The tenant's fixed layout.
    pub shard_bits: u8,
}

/// How a capture task reads its collections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CaptureMode {
    /// Every object of the collections, read from the directory.
    Full,
    // An incremental capture (the last snapshot's part plus the directory's delta query since
    // its delta links) slots in here, with the base snapshot and the delta links it starts
    // from; the job model does not change.
}

/// Where the directory is and how to sign in. The client secret is sealed with the cluster's
/// secret key (the tenant name as associated data), never carried in the clear: messages rest
/// in the queue's store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryRef {
    pub graph_base_url: String,
    pub token_url: String,
    pub client_id: String,
    /// Sealed with the cluster's key for the tenant (as the coordinator stores it).
    pub secret: EncryptedSecret,
    /// Whether to read the per-user MFA states (one beta request per 20 users).
    pub per_user_mfa_state: bool,
}

impl std::fmt::Debug for DirectoryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryRef")
            .field("graph_base_url", &self.graph_base_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret)
            .field("per_user_mfa_state", &self.per_user_mfa_state)
            .finish()
    }
}

/// Read these collections into part `part` of every shard of the snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTask {
    pub snapshot: SnapshotTarget,
    pub part: u16,
    pub collections: Vec<ObjectType>,
    pub mode: CaptureMode,
    pub directory: DirectoryRef,
}

/// Diff one range of shards of a backup against a live snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffTask {
    pub backup: String,
    pub live: String,
    /// The id space is cut into 2^`range_bits` ranges; this task diffs range `range`.
    pub range_bits: u8,
    pub range: u32,
    pub scope: Scope,
    /// Also store the unique values (`plan::unique_values`) of the live objects the entries
    /// restore or soft-delete as newcomers, for a recovery's planner.
    #[serde(default)]
    pub current_values: bool,
}

/// The tenant's write budget, as a recovery's apply tasks carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteBudget {
    /// Directory writes per second of the task's app registration, all workers together.
    pub writes_per_second: u32,
    /// Conditional access policy and named location writes per second (the tenant's, all
    /// apps together).
    pub conditional_access_per_second: u32,
    /// Directory writes per second of all the tenant's app registrations together (0 in
    /// tasks of builds before it: Graph's 60).
    #[serde(default)]
    pub tenant_writes_per_second: u32,
}

/// A planned step with its place in the recovery's actions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyStep {
    pub seq: u32,
    pub planned: PlannedStep,
}

/// Apply these steps (one range of object ids of one wave), in order, through the connector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyTask {
    pub directory: DirectoryRef,
    pub steps: Vec<ApplyStep>,
    pub budget: WriteBudget,
}

/// A task's result, as published on the results lane. A task that fails is never a result:
/// it goes to the dead-letter lane with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    pub version: u16,
    pub id: TaskId,
    pub outcome: TaskOutcome,
    /// Seconds the task ran on its worker.
    pub seconds: f64,
    /// The worker that ran it (for the operator).
    pub worker: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskOutcome {
    Captured(CaptureResult),
    Diffed(DiffResult),
    Applied(ApplyResult),
}

/// What became of one applied step (the connector's `StepResult`, as sent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepReport {
    Applied,
    AlreadyInState,
    Failed {
        permanent: bool,
        status: u16,
        code: String,
        message: String,
    },
    /// Never sent: the job was stopped first.
    NotSent {
        reason: String,
    },
}

/// What an apply task did: one report per step, by the step's sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    pub steps: Vec<(u32, StepReport)>,
}

/// A payload in the blob store: its key and blake3 digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobRef {
    pub key: String,
    pub digest: String,
}

/// What a capture task stored: the part's shard references are a blob of their own
/// ([`encode_blob`] of a `Vec<ShardRef>`), too many for a message at 65,536 shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureResult {
    pub part: u16,
    pub shards_key: String,
    pub shards_digest: String,
    pub objects: u64,
    /// Objects read, by type name.
    pub by_type: BTreeMap<String, u64>,
    /// Kept properties this part did not read (`type.property`).
    pub not_captured: Vec<String>,
    /// The part's standing list (its key and digest go into the manifest).
    pub standing: StandingRef,
    pub requests: u64,
    pub bytes: u64,
}

/// What a diff task stored: the range's entries as a blob ([`encode_blob`] of a
/// `Vec<ReportEntry>`, in id order), with their counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffResult {
    pub range: u32,
    pub entries_key: String,
    pub entries_digest: String,
    pub entries: u64,
    /// Entries by recovery action (the API's names).
    pub by_action: BTreeMap<String, u64>,
    /// Changed links over all the range's entries (0 in results of builds before it).
    #[serde(default)]
    pub links: u64,
    /// The unique values of the live objects the entries restore or soft-delete as
    /// newcomers ([`RangeValues`]), when the task asked for them.
    #[serde(default)]
    pub values: Option<BlobRef>,
}

/// The store key of a capture part's shard list.
pub fn part_shards_key(tenant: &str, snapshot: &str, part: u16) -> String {
    format!(
        "{}/parts/part-{part:03}.rmp",
        crate::snapshot::snapshot_prefix(tenant, snapshot)
    )
}

/// The store prefix (with its trailing `/`) under which a report's or recovery's blobs are.
pub fn report_prefix(tenant: &str, job: &str) -> String {
    format!("tenants/{tenant}/reports/{job}/")
}

/// The store key of a diff range's entries.
pub fn range_entries_key(tenant: &str, job: &str, range: u32) -> String {
    format!("{}range-{range:05}.rmp.zst", report_prefix(tenant, job))
}

/// Encodes a payload that goes through the blob store (rmp-serde named, then zstd), with no
/// size limit.
pub fn encode_blob<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let raw = rmp_serde::to_vec_named(value).map_err(|e| WireError::Encode(e.to_string()))?;
    zstd::bulk::compress(&raw, 3).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a blob that [`encode_blob`] wrote; the caller has verified its digest.
pub fn decode_blob<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let raw = zstd::stream::decode_all(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    rmp_serde::from_slice(&raw).map_err(|e| WireError::Decode(e.to_string()))
}

/// The store key of a diff range's unique values (a recovery's).
pub fn range_values_key(tenant: &str, job: &str, range: u32) -> String {
    format!("{}values-{range:05}.rmp.zst", report_prefix(tenant, job))
}

/// The blob types, named for their round-trip tests.
pub type PartShards = Vec<ShardRef>;
pub type RangeEntries = Vec<ReportEntry>;
pub type RangeValues = Vec<(ObjectId, Vec<(UniqueKey, String)>)>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Secret;
    use crate::id::ObjectId;
    use crate::model::LinkKind;
    use crate::report::{
        Change, ChangedAttribute, ChangedLink, LinkState, NotRecoverableReason, RecoveryAction,
    };
    use crate::secret_box::SecretKey;
    use crate::value::Value;

    fn task_id(kind: TaskKind) -> TaskId {
        TaskId {
            tenant: "contoso".into(),
            job: "0b7f3c1e-3d6a-4a57-9a3c-5f1d2e0c9b11".into(),
            kind,
            number: 7,
        }
    }

    fn capture() -> Task {
        Task {
            version: WIRE_VERSION,
            id: task_id(TaskKind::Capture),
            spec: TaskSpec::Capture(CaptureTask {
                snapshot: SnapshotTarget {
                    id: "s1".into(),
                    kind: SnapshotKind::Live,
                    created_at: 1_795_000_000,
                    shard_bits: 10,
                },
                part: 2,
                collections: vec![ObjectType::ServicePrincipal, ObjectType::Organization],
                mode: CaptureMode::Full,
                directory: DirectoryRef {
                    graph_base_url: "http://127.0.0.1:1/contoso/v1.0".into(),
                    token_url: "http://127.0.0.1:1/contoso/oauth2/v2.0/token".into(),
                    client_id: "app".into(),
                    secret: EncryptedSecret::seal(
                        &SecretKey::generate(),
                        "contoso",
                        &Secret::new("s3cr3t-value"),
                    )
                    .unwrap(),
                    per_user_mfa_state: true,
                },
            }),
        }
    }

    fn diff(scope: Scope) -> Task {
        Task {
            version: WIRE_VERSION,
            id: task_id(TaskKind::Diff),
            spec: TaskSpec::Diff(DiffTask {
                backup: "b".into(),
                live: "l".into(),
                range_bits: 4,
                range: 9,
                current_values: matches!(scope, Scope::All),
                scope,
            }),
        }
    }

    fn apply() -> Task {
        let TaskSpec::Capture(c) = capture().spec else {
            unreachable!()
        };
        let step = crate::plan::Step::AddLink {
            id: ObjectId(5),
            object_type: ObjectType::ServicePrincipal,
            kind: LinkKind::OAuth2PermissionGrants,
            target: ObjectId(6),
            data: Some(Value::from("scope")),
        };
        Task {
            version: WIRE_VERSION,
            id: task_id(TaskKind::Apply),
            spec: TaskSpec::Apply(ApplyTask {
                directory: c.directory,
                steps: vec![ApplyStep {
                    seq: 7,
                    planned: PlannedStep {
                        action_id: "a".into(),
                        step,
                        note: Some("why".into()),
                    },
                }],
                budget: WriteBudget {
                    writes_per_second: 20,
                    conditional_access_per_second: 1,
                    tenant_writes_per_second: 60,
                },
            }),
        }
    }

    fn entry() -> ReportEntry {
        ReportEntry {
            id: ObjectId(42),
            object_type: ObjectType::Group,
            display_name: "Sales".into(),
            change: Change::Modified,
            action: RecoveryAction::NotRecoverable,
            reason: Some(NotRecoverableReason::HardDeleted),
            changed_attributes: vec![ChangedAttribute {
                name: "description".into(),
                current: Some(Value::from("new")),
                backup: None,
            }],
            changed_links: vec![ChangedLink {
                kind: LinkKind::Members,
                target: ObjectId(7),
                current: LinkState::Absent,
                backup: LinkState::Present,
                recoverable: false,
                reason: Some(NotRecoverableReason::HardDeleted),
                current_data: None,
                backup_data: Some(Value::from("data")),
            }],
        }
    }

    #[test]
    fn every_message_round_trips_through_the_queue_encoder() {
        let scopes = [
            Scope::All,
            Scope::types([ObjectType::User, ObjectType::NamedLocation]).unwrap(),
            Scope::ids([ObjectId(3), ObjectId(u128::MAX)]).unwrap(),
        ];
        let mut tasks = vec![capture(), apply()];
        tasks.extend(scopes.into_iter().map(diff));
        for task in tasks {
            let back: Task = decode(&encode(&task).unwrap()).unwrap();
            assert_eq!(back, task);
        }
        let results = [
            TaskOutcome::Captured(CaptureResult {
                part: 1,
                shards_key: part_shards_key("contoso", "s1", 1),
                shards_digest: "ab".into(),
                objects: 10,
                by_type: BTreeMap::from([("user".into(), 10)]),
                not_captured: vec!["user.perUserMfaState".into()],
                standing: StandingRef {
                    part: 1,
                    key: "k".into(),
                    digest: "d".into(),
                    objects: 10,
                },
                requests: 3,
                bytes: 900,
            }),
            TaskOutcome::Diffed(DiffResult {
                range: 9,
                entries_key: range_entries_key("contoso", "j", 9),
                entries_digest: "cd".into(),
                entries: 1,
                by_action: BTreeMap::from([("notRecoverable".into(), 1)]),
                links: 2,
                values: Some(BlobRef {
                    key: range_values_key("contoso", "j", 9),
                    digest: "ef".into(),
                }),
            }),
            TaskOutcome::Applied(ApplyResult {
                steps: vec![
                    (1, StepReport::Applied),
                    (2, StepReport::AlreadyInState),
                    (
                        3,
                        StepReport::Failed {
                            permanent: true,
                            status: 400,
                            code: "Request_BadRequest".into(),
                            message: "no".into(),
                        },
                    ),
                    (
                        4,
                        StepReport::NotSent {
                            reason: "canceled".into(),
                        },
                    ),
                ],
            }),
        ];
        for outcome in results {
            let result = TaskResult {
                version: WIRE_VERSION,
                id: task_id(TaskKind::Diff),
                outcome,
                seconds: 1.5,
                worker: "w1".into(),
            };
            let back: TaskResult = decode(&encode(&result).unwrap()).unwrap();
            assert_eq!(back, result);
        }
    }

    #[test]
    fn blobs_round_trip_entries_and_shard_lists() {
        let entries: RangeEntries = vec![entry(), entry()];
        let back: RangeEntries = decode_blob(&encode_blob(&entries).unwrap()).unwrap();
        assert_eq!(back, entries);
        let shards: PartShards = vec![ShardRef {
            index: 3,
            part: 2,
            key: "k".into(),
            digest: "d".into(),
            objects: 5,
            bytes: 99,
        }];
        let back: PartShards = decode_blob(&encode_blob(&shards).unwrap()).unwrap();
        assert_eq!(back, shards);
        let values: RangeValues = vec![(
            ObjectId(9),
            vec![(UniqueKey::UserPrincipalName, "a@b.example".into())],
        )];
        let back: RangeValues = decode_blob(&encode_blob(&values).unwrap()).unwrap();
        assert_eq!(back, values);
    }

    #[test]
    fn another_version_or_garbage_is_refused_by_name() {
        let mut task = capture();
        task.version = WIRE_VERSION + 1;
        let err = decode::<Task>(&encode(&task).unwrap()).unwrap_err();
        assert!(matches!(err, WireError::Version { found } if found == WIRE_VERSION + 1));
        assert!(err.to_string().contains("wire version"), "{err}");
        assert!(matches!(
            decode::<Task>(b"\x93not a task"),
            Err(WireError::Decode(_))
        ));
        let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(encode(&huge), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn subjects_and_ids_are_deterministic_and_purgeable() {
        let id = task_id(TaskKind::Diff);
        assert_eq!(
            id.task_subject(),
            "rewind.tasks.contoso.0b7f3c1e-3d6a-4a57-9a3c-5f1d2e0c9b11.diff.7"
        );
        assert!(id
            .task_subject()
            .starts_with(job_task_filter(&id.tenant, &id.job, id.kind).trim_end_matches('>')));
        let apply = task_id(TaskKind::Apply);
        assert_eq!(
            apply.task_subject(),
            "rewind.apply.contoso.0b7f3c1e-3d6a-4a57-9a3c-5f1d2e0c9b11.apply.7"
        );
        assert!(apply.task_subject().starts_with(
            job_task_filter(&apply.tenant, &apply.job, apply.kind).trim_end_matches('>')
        ));
        assert!(!apply
            .task_subject()
            .starts_with(job_task_filter(&id.tenant, &id.job, id.kind).trim_end_matches('>')));
        assert_eq!(id.task_msg_id(), task_id(TaskKind::Diff).task_msg_id());
        assert_ne!(id.task_msg_id(), task_id(TaskKind::Capture).task_msg_id());
        assert_ne!(id.result_msg_id(), id.task_msg_id());
    }

    #[test]
    fn the_sealed_secret_is_not_in_debug_output() {
        let t = capture();
        let TaskSpec::Capture(c) = &t.spec else {
            unreachable!()
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(format!("{:?}", c.directory).contains("***"));
    }
}

#[cfg(test)]
mod plan_tests {
    //! Planned steps travel to the workers that apply them (the recovery lane): they must
    //! round-trip through the queue's encoder, ids and types in their compact forms.

    use crate::id::ObjectId;
    use crate::model::ObjectType;
    use crate::plan::{plan, PlanScope, PlannedStep};
    use crate::report::{Change, RecoveryAction, ReportEntry};

    #[test]
    fn planned_steps_round_trip_through_the_queue_encoder() {
        let entries: Vec<ReportEntry> = [
            (Change::SoftDeleted, RecoveryAction::Restore),
            (Change::Created, RecoveryAction::SoftDelete),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (change, action))| ReportEntry {
            id: ObjectId(i as u128 + 1),
            object_type: ObjectType::User,
            display_name: format!("u{i}"),
            change,
            action,
            reason: None,
            changed_attributes: Vec::new(),
            changed_links: Vec::new(),
        })
        .collect();
        let steps = plan(
            PlanScope {
                tenant: "t",
                job: "j",
            },
            &entries,
        );
        assert_eq!(steps.len(), 2);
        let bytes = rmp_serde::to_vec_named(&steps).unwrap();
        let back: Vec<PlannedStep> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, steps);
        let json: Vec<PlannedStep> =
            serde_json::from_str(&serde_json::to_string(&steps).unwrap()).unwrap();
        assert_eq!(json, steps);
    }
}
