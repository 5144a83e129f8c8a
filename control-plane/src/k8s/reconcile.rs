//! The controller's decisions as pure functions, so every case is a unit test: [`plan`] turns
//! what was observed of one custom resource and its control-plane counterpart into the writes
//! that converge them; [`conclude`] turns the writes' outcome into the resource's status.
//!
//! The control plane is the source of truth for ids and versions; the status remembers what
//! was applied (`id`, `appliedVersion`, `specHash`) so an unchanged resource costs one GET.

use super::crd::{Condition, SyncStatus};
use std::time::Duration;

/// Keeps a resource until its control-plane counterpart is gone.
pub const FINALIZER: &str = "hookmesh.dev/cleanup";

/// What the control plane should hold, computed from the spec with its references resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The REST body for create and replace, `managed_by` included.
    pub body: serde_json::Value,
    /// A digest of the body and every secret value it was built from.
    pub hash: String,
    /// Endpoints: the signing secret the spec references (rotated in when it changes) and its
    /// digest.
    pub secret: Option<(String, String)>,
}

impl Desired {
    /// What `status.specHash` records: the body's digest, and the secret's after a `+`.
    pub fn applied_hash(&self) -> String {
        match &self.secret {
            Some((_, digest)) => format!("{}+{digest}", self.hash),
            None => self.hash.clone(),
        }
    }
}

/// Why a spec cannot be turned into a control-plane body (a missing Secret, an unknown
/// endpoint): shown in the status until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// CamelCase reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// The control-plane counterpart, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Its id.
    pub id: String,
    /// Its version (ETag).
    pub version: i64,
    /// Whether it is managed by this very object (its `managed_by.uid`).
    pub owned: bool,
}

/// Everything [`plan`] needs about one custom resource.
#[derive(Debug, Clone)]
pub struct Observed {
    /// `metadata.generation`.
    pub generation: i64,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// [`FINALIZER`] is on the object.
    pub has_finalizer: bool,
    /// The status as last written.
    pub status: SyncStatus,
    /// The desired state, or why there is none.
    pub desired: Result<Desired, Unresolved>,
    /// The counterpart (looked up by `status.id`), if it exists.
    pub current: Option<Current>,
}

/// One step towards convergence; run in order, stopping at the first failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Put [`FINALIZER`] on the object.
    AddFinalizer,
    /// Create the counterpart.
    Create {
        /// REST body.
        body: serde_json::Value,
    },
    /// Replace the counterpart at `version` (If-Match).
    Replace {
        /// Its id.
        id: String,
        /// The version read.
        version: i64,
        /// REST body.
        body: serde_json::Value,
    },
    /// Rotate an endpoint's signing secret to the referenced one.
    RotateSecret {
        /// Its id.
        id: String,
        /// The new secret.
        secret: String,
    },
    /// Delete the counterpart.
    Delete {
        /// Its id.
        id: String,
    },
    /// Take [`FINALIZER`] off: Kubernetes then removes the object.
    RemoveFinalizer,
}

/// The writes that converge the control plane with the observed resource.
pub fn plan(o: &Observed) -> Vec<Action> {
    if o.deleting {
        let mut out = Vec::new();
        if let Some(c) = o.current.as_ref().filter(|c| c.owned) {
            out.push(Action::Delete { id: c.id.clone() });
        }
        if o.has_finalizer {
            out.push(Action::RemoveFinalizer);
        }
        return out;
    }
    let mut out = Vec::new();
    if !o.has_finalizer {
        out.push(Action::AddFinalizer);
    }
    let Ok(desired) = &o.desired else {
        // Nothing is written: the control plane keeps serving what was applied last.
        return out;
    };
    match &o.current {
        None => out.push(Action::Create {
            body: desired.body.clone(),
        }),
        // Someone else's resource under the id the status names: never touched.
        Some(c) if !c.owned => {}
        Some(c) => {
            let applied = o.status.spec_hash.as_deref().unwrap_or_default();
            let (body_hash, secret_hash) = match applied.split_once('+') {
                Some((b, s)) => (b, Some(s)),
                None => (applied, None),
            };
            if body_hash != desired.hash || o.status.applied_version != Some(c.version) {
                out.push(Action::Replace {
                    id: c.id.clone(),
                    version: c.version,
                    body: desired.body.clone(),
                });
            }
            if let Some((secret, digest)) = &desired.secret {
                if secret_hash != Some(digest.as_str()) {
                    out.push(Action::RotateSecret {
                        id: c.id.clone(),
                        secret: secret.clone(),
                    });
                }
            }
        }
    }
    out
}

/// How the writes went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Everything planned was done (or nothing was needed); the counterpart is now `current`
    /// (`None` when deleted).
    Applied {
        /// The counterpart after the writes.
        current: Option<Current>,
        /// Sources: the filter configuration version now published, and whether every
        /// connected Envoy has acknowledged it (`Err` with the refusal when one rejected it).
        propagation: Option<(String, Result<bool, String>)>,
    },
    /// The control plane refused (4xx): the spec must change.
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem's detail and field errors.
        message: String,
    },
    /// The control plane could not be reached or failed (5xx): try again.
    Unavailable {
        /// What went wrong.
        message: String,
    },
}

/// The status to write and when to look again.
pub fn conclude(o: &Observed, outcome: &Outcome, now: &str) -> (SyncStatus, Option<Duration>) {
    let mut status = SyncStatus {
        observed_generation: Some(o.generation),
        ..o.status.clone()
    };
    let mut set = |kind: &str, ok: bool, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            kind,
            ok,
            reason,
            &message,
            o.generation,
            now,
        );
    };
    let requeue = match (&o.desired, outcome) {
        (Err(u), _) => {
            set("Synced", false, u.reason, u.message.clone());
            set("Ready", false, u.reason, "not applied: see Synced".into());
            set("Degraded", true, u.reason, u.message.clone());
            // The referenced Secret may appear any moment; its watch also wakes the controller.
            Some(Duration::from_secs(30))
        }
        (
            Ok(_),
            Outcome::Refused {
                status: code,
                message,
            },
        ) => {
            let reason = if *code == 409 { "Conflict" } else { "Invalid" };
            set("Synced", false, reason, message.clone());
            set("Ready", false, reason, "not applied: see Synced".into());
            set("Degraded", true, reason, message.clone());
            // Only a change of the spec helps; that wakes the controller anyway.
            Some(Duration::from_secs(300))
        }
        (Ok(_), Outcome::Unavailable { message }) => {
            set("Synced", false, "ControlPlaneUnavailable", message.clone());
            set("Degraded", true, "ControlPlaneUnavailable", message.clone());
            None // the error policy's back-off decides
        }
        (
            Ok(desired),
            Outcome::Applied {
                current,
                propagation,
            },
        ) => {
            match current {
                Some(c) if !c.owned => {
                    let message = format!(
                        "{} in the control plane is not managed by this object",
                        c.id
                    );
                    set("Synced", false, "NotOwned", message.clone());
                    set("Ready", false, "NotOwned", message.clone());
                    set("Degraded", true, "NotOwned", message);
                    Some(Duration::from_secs(300))
                }
                Some(c) => {
                    status.id = Some(c.id.clone());
                    status.applied_version = Some(c.version);
                    status.spec_hash = Some(desired.applied_hash());
                    set(
                        "Synced",
                        true,
                        "Applied",
                        format!("stored as {} version {}", c.id, c.version),
                    );
                    match propagation {
                        None => {
                            set("Ready", true, "Applied", String::new());
                            set("Degraded", false, "Applied", String::new());
                            None
                        }
                        Some((version, acked)) => {
                            status.config_version = Some(version.clone());
                            match acked {
                                Ok(true) => {
                                    set(
                                        "Ready",
                                        true,
                                        "Propagated",
                                        format!(
                                            "every connected Envoy runs configuration {version}"
                                        ),
                                    );
                                    set("Degraded", false, "Propagated", String::new());
                                    None
                                }
                                Ok(false) => {
                                    set("Ready", false, "Propagating", format!("waiting for Envoys to acknowledge configuration {version}"));
                                    set("Degraded", false, "Propagating", String::new());
                                    Some(Duration::from_secs(2))
                                }
                                Err(refusal) => {
                                    set("Ready", false, "RejectedByEnvoy", refusal.clone());
                                    set("Degraded", true, "RejectedByEnvoy", refusal.clone());
                                    Some(Duration::from_secs(30))
                                }
                            }
                        }
                    }
                }
                None => None,
            }
        }
    };
    (status, requeue)
}

/// Sets a condition, keeping its transition time when its status did not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: &str,
) {
    let status = if ok { "True" } else { "False" };
    let since = conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != kind);
    conditions.push(Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: since,
        observed_generation: Some(generation),
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired() -> Desired {
        Desired {
            body: json!({"spec": {"name": "stripe"}}),
            hash: "h1".into(),
            secret: None,
        }
    }

    fn mine(version: i64) -> Option<Current> {
        Some(Current {
            id: "src_1".into(),
            version,
            owned: true,
        })
    }

    /// Applied once: status remembers id, version 3 and the hash.
    fn synced() -> Observed {
        Observed {
            generation: 2,
            deleting: false,
            has_finalizer: true,
            status: SyncStatus {
                id: Some("src_1".into()),
                applied_version: Some(3),
                spec_hash: Some("h1".into()),
                ..SyncStatus::default()
            },
            desired: Ok(desired()),
            current: mine(3),
        }
    }

    fn condition<'a>(s: &'a SyncStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn a_new_resource_gets_the_finalizer_then_is_created() {
        let o = Observed {
            has_finalizer: false,
            status: SyncStatus::default(),
            current: None,
            ..synced()
        };
        assert_eq!(
            plan(&o),
            [
                Action::AddFinalizer,
                Action::Create {
                    body: desired().body
                }
            ]
        );
        let o = Observed {
            has_finalizer: true,
            ..o
        };
        assert_eq!(
            plan(&o),
            [Action::Create {
                body: desired().body
            }]
        );
    }

    #[test]
    fn an_unchanged_resource_writes_nothing() {
        assert_eq!(plan(&synced()), []);
    }

    #[test]
    fn a_changed_spec_or_a_changed_copy_is_replaced_at_the_version_read() {
        let o = Observed {
            desired: Ok(Desired {
                hash: "h2".into(),
                ..desired()
            }),
            ..synced()
        };
        assert_eq!(
            plan(&o),
            [Action::Replace {
                id: "src_1".into(),
                version: 3,
                body: desired().body
            }]
        );
        // Changed in the control plane (by the manager's key, or restored from a backup).
        let o = Observed {
            current: mine(5),
            ..synced()
        };
        assert_eq!(
            plan(&o),
            [Action::Replace {
                id: "src_1".into(),
                version: 5,
                body: desired().body
            }]
        );
    }

    #[test]
    fn a_new_endpoint_secret_is_rotated_in_without_rewriting_the_endpoint() {
        let with_secret = |digest: &str| Desired {
            secret: Some((format!("whsec_{digest}"), digest.into())),
            ..desired()
        };
        let mut o = Observed {
            desired: Ok(with_secret("s1")),
            ..synced()
        };
        o.status.spec_hash = Some(with_secret("s1").applied_hash());
        assert_eq!(plan(&o), []);
        o.desired = Ok(with_secret("s2"));
        assert_eq!(
            plan(&o),
            [Action::RotateSecret {
                id: "src_1".into(),
                secret: "whsec_s2".into()
            }]
        );
        // After a status lost (or first adoption of a secret), both are applied.
        o.status.spec_hash = None;
        assert_eq!(plan(&o).len(), 2);
    }

    #[test]
    fn an_unresolved_reference_changes_nothing_and_says_why() {
        let o = Observed {
            desired: Err(Unresolved {
                reason: "SecretNotFound",
                message: "Secret payments/stripe-webhook has no key signing-secret".into(),
            }),
            ..synced()
        };
        assert_eq!(plan(&o), []);
        let (status, requeue) = conclude(
            &o,
            &Outcome::Applied {
                current: mine(3),
                propagation: None,
            },
            "t1",
        );
        assert_eq!(condition(&status, "Synced").status, "False");
        assert_eq!(condition(&status, "Synced").reason, "SecretNotFound");
        assert!(condition(&status, "Degraded")
            .message
            .contains("stripe-webhook"));
        assert_eq!(condition(&status, "Ready").status, "False");
        assert_eq!(requeue, Some(Duration::from_secs(30)));
        // What was applied before is still recorded: the control plane keeps serving it.
        assert_eq!(status.applied_version, Some(3));
    }

    #[test]
    fn another_owners_resource_is_never_written_or_deleted() {
        let theirs = Some(Current {
            id: "src_1".into(),
            version: 3,
            owned: false,
        });
        let o = Observed {
            current: theirs.clone(),
            ..synced()
        };
        assert_eq!(plan(&o), []);
        let (status, _) = conclude(
            &o,
            &Outcome::Applied {
                current: theirs.clone(),
                propagation: None,
            },
            "t1",
        );
        assert_eq!(condition(&status, "Degraded").reason, "NotOwned");
        let o = Observed {
            deleting: true,
            current: theirs,
            ..synced()
        };
        assert_eq!(plan(&o), [Action::RemoveFinalizer]);
    }

    #[test]
    fn deletion_removes_the_copy_before_the_finalizer() {
        let o = Observed {
            deleting: true,
            ..synced()
        };
        assert_eq!(
            plan(&o),
            [
                Action::Delete { id: "src_1".into() },
                Action::RemoveFinalizer
            ]
        );
        // Already gone in the control plane, or never created.
        let o = Observed {
            deleting: true,
            current: None,
            ..synced()
        };
        assert_eq!(plan(&o), [Action::RemoveFinalizer]);
        // Deleted before the finalizer was ever added: nothing to do.
        let o = Observed {
            deleting: true,
            has_finalizer: false,
            current: None,
            ..synced()
        };
        assert_eq!(plan(&o), []);
        // Deleting wins over an unresolvable spec.
        let o = Observed {
            deleting: true,
            desired: Err(Unresolved {
                reason: "SecretNotFound",
                message: String::new(),
            }),
            ..synced()
        };
        assert_eq!(plan(&o)[0], Action::Delete { id: "src_1".into() });
    }

    #[test]
    fn a_source_is_ready_once_every_envoy_runs_its_configuration() {
        let o = synced();
        let applied = |acked: Result<bool, String>| Outcome::Applied {
            current: mine(4),
            propagation: Some(("cfg7".into(), acked)),
        };
        let (status, requeue) = conclude(&o, &applied(Ok(false)), "t1");
        assert_eq!(condition(&status, "Synced").status, "True");
        assert_eq!(condition(&status, "Ready").reason, "Propagating");
        assert_eq!(requeue, Some(Duration::from_secs(2)));
        assert_eq!(status.applied_version, Some(4));
        assert_eq!(status.config_version.as_deref(), Some("cfg7"));
        assert_eq!(status.observed_generation, Some(2));
        let (status, requeue) = conclude(
            &Observed {
                status,
                ..o.clone()
            },
            &applied(Ok(true)),
            "t2",
        );
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "Ready").last_transition_time, "t2");
        assert_eq!(
            condition(&status, "Synced").last_transition_time,
            "t1",
            "unchanged since t1"
        );
        assert_eq!(requeue, None);
        let (status, _) = conclude(&o, &applied(Err("envoy-a: unknown field".into())), "t3");
        assert_eq!(condition(&status, "Degraded").status, "True");
        assert_eq!(condition(&status, "Degraded").reason, "RejectedByEnvoy");
    }

    #[test]
    fn refusals_and_outages_are_told_apart() {
        let o = synced();
        let (status, requeue) = conclude(
            &o,
            &Outcome::Refused {
                status: 422,
                message: "spec.verify.secrets[0]: not a whsec_ secret".into(),
            },
            "t1",
        );
        assert_eq!(condition(&status, "Synced").reason, "Invalid");
        assert!(condition(&status, "Synced")
            .message
            .contains("spec.verify.secrets[0]"));
        assert_eq!(requeue, Some(Duration::from_secs(300)));
        let (status, _) = conclude(
            &o,
            &Outcome::Refused {
                status: 409,
                message: "name taken".into(),
            },
            "t1",
        );
        assert_eq!(condition(&status, "Synced").reason, "Conflict");
        let (status, requeue) = conclude(
            &o,
            &Outcome::Unavailable {
                message: "connection refused".into(),
            },
            "t1",
        );
        assert_eq!(
            condition(&status, "Synced").reason,
            "ControlPlaneUnavailable"
        );
        assert_eq!(requeue, None, "the error policy backs off");
        // A refusal keeps the record of what was applied before.
        assert_eq!(status.id.as_deref(), Some("src_1"));
    }

    /// Every combination of what can be observed, against the rules that must always hold.
    #[test]
    fn every_observed_state_gets_a_safe_plan() {
        let bools = [false, true];
        let currents = [
            None,
            Some(Current {
                id: "x".into(),
                version: 3,
                owned: true,
            }),
            Some(Current {
                id: "x".into(),
                version: 4,
                owned: true,
            }),
            Some(Current {
                id: "x".into(),
                version: 3,
                owned: false,
            }),
        ];
        let desireds = [
            Err(Unresolved {
                reason: "SecretNotFound",
                message: String::new(),
            }),
            Ok(desired()),
            Ok(Desired {
                hash: "h2".into(),
                ..desired()
            }),
            Ok(Desired {
                secret: Some(("whsec_a".into(), "sa".into())),
                ..desired()
            }),
        ];
        let hashes = [None, Some("h1".to_owned()), Some("h1+sa".to_owned())];
        let mut cases = 0;
        for deleting in bools {
            for has_finalizer in bools {
                for current in &currents {
                    for d in &desireds {
                        for spec_hash in &hashes {
                            cases += 1;
                            let o = Observed {
                                generation: 1,
                                deleting,
                                has_finalizer,
                                status: SyncStatus {
                                    applied_version: Some(3),
                                    spec_hash: spec_hash.clone(),
                                    ..SyncStatus::default()
                                },
                                desired: d.clone(),
                                current: current.clone(),
                            };
                            let p = plan(&o);
                            let writes = |a: &Action| {
                                !matches!(a, Action::AddFinalizer | Action::RemoveFinalizer)
                            };
                            let owned = current.as_ref().is_some_and(|c| c.owned);
                            // Another owner's resource is never written.
                            if current.as_ref().is_some_and(|c| !c.owned) {
                                assert!(!p.iter().any(writes), "{o:?} -> {p:?}");
                            }
                            // Nothing is written before the finalizer guards it.
                            if !has_finalizer && !deleting {
                                assert_eq!(p.first(), Some(&Action::AddFinalizer), "{o:?}");
                            }
                            if deleting {
                                assert!(!p.contains(&Action::AddFinalizer));
                                assert!(!p.iter().any(|a| matches!(
                                    a,
                                    Action::Create { .. }
                                        | Action::Replace { .. }
                                        | Action::RotateSecret { .. }
                                )));
                                assert_eq!(
                                    p.contains(&Action::RemoveFinalizer),
                                    has_finalizer,
                                    "{o:?}"
                                );
                                assert_eq!(
                                    p.first()
                                        .is_some_and(|a| matches!(a, Action::Delete { .. })),
                                    owned,
                                    "{o:?}"
                                );
                                if has_finalizer {
                                    assert_eq!(p.last(), Some(&Action::RemoveFinalizer));
                                }
                            } else {
                                assert!(!p.contains(&Action::RemoveFinalizer));
                                assert!(!p.iter().any(|a| matches!(a, Action::Delete { .. })));
                                // An unresolved spec writes nothing to the control plane.
                                if d.is_err() {
                                    assert!(!p.iter().any(writes), "{o:?} -> {p:?}");
                                }
                                // A missing copy is created, exactly once.
                                let creates = p
                                    .iter()
                                    .filter(|a| matches!(a, Action::Create { .. }))
                                    .count();
                                assert_eq!(
                                    creates,
                                    usize::from(current.is_none() && d.is_ok()),
                                    "{o:?}"
                                );
                            }
                            // Replaces name the version read (If-Match).
                            for a in &p {
                                if let Action::Replace { version, .. } = a {
                                    assert_eq!(Some(*version), current.as_ref().map(|c| c.version));
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 2 * 4 * 4 * 3);
    }
}
