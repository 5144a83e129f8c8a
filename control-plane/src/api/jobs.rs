//! Bulk work as background jobs, page by page, with `GET /v1/jobs/{id}` for progress:
//! `POST /v1/deliveries/replay` requeues every delivery a filter matches (not those in flight);
//! the inbound hub's bulk replay and quarantine release (`api::inbound`) run its webhooks
//! through their sources again. Jobs are stored, so any replica can report on them, and with
//! their progress (a cursor and counts, after each page), so a job whose process stopped is
//! resumed where it was: by the next start of a SQLite control plane, by any replica on
//! PostgreSQL once its runner has been silent for [`LEASE_MS`].

use super::auth::{Access, Area, Principal};
use super::error::ApiError;
use super::extract::{time_field, AppJson, AppQuery, Page, PageParams};
use super::resource::{audit, list_page, load, with_etag};
use super::AppState;
use crate::ids::{floor_id, new_id, now_ms, rfc3339};
use crate::ingest::process::Run;
use crate::store::{
    InboundFilter, InboundQuery, Kind, ListQuery, ReplayFilter, Resource, Store, StoreError,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Deliveries per page of a delivery replay.
const PAGE: i64 = 500;
/// Deliveries per page of a delivery replay beside live traffic (see `requeue_page`).
const LIVE_PAGE: i64 = 32;
/// The pause after each such page: at most 320 requeued a second.
const LIVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// A running job whose runner has recorded nothing for this long is taken over.
pub const LEASE_MS: i64 = 30_000;
/// How often the keeper looks for such jobs.
const KEEPER_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Inbound webhooks per page: rows with their bodies.
const INBOUND_PAGE: i64 = 256;
/// Webhooks run at once unless the request says otherwise: their writes share group commits, and
/// at 64 a replay on a quiet hub ran about a fifth faster than at 16, at less CPU per webhook.
/// Live traffic meanwhile is not slowed by it: the job gives way to it (`room`).
pub(super) const DEFAULT_CONCURRENCY: usize = 64;

/// Which deliveries to attempt again.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// Tenant (a bound key's own; global keys may omit it to cover every tenant).
    pub tenant_id: Option<String>,
    /// Only this endpoint's deliveries.
    pub endpoint_id: Option<String>,
    /// `dead` (retry dead letters), `succeeded` (resend) or `pending` (attempt now).
    pub status: Option<String>,
    /// Only deliveries of this event type.
    pub event_type: Option<String>,
    /// RFC 3339: created at or after.
    pub since: Option<String>,
    /// RFC 3339: created before.
    pub until: Option<String>,
}

/// A background job.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    /// Id (`job_…`).
    pub id: String,
    /// `replay` (deliveries), `inbound_replay` or `quarantine_release`.
    pub kind: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// So far: deliveries requeued, or inbound webhooks run again.
    pub requeued: u64,
    /// Left as they were. Deliveries: in flight, or changed since the job started (attempted,
    /// or requeued by another replay). Inbound webhooks: their source is gone or no longer a hub
    /// source, or another replay, release or delete changed them since the job started.
    pub skipped: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once finished.
    pub finished_at: Option<String>,
    /// Inbound webhooks run at once (bulk inbound replay and release).
    pub concurrency: Option<usize>,
}

/// What a job does, stored as its `kind` and its filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub(super) enum Work {
    /// Requeue deliveries.
    #[serde(rename = "replay")]
    Deliveries { filter: ReplayFilter },
    /// Run inbound webhooks through their sources' current rules again.
    #[serde(rename = "inbound_replay")]
    InboundReplay(InboundWork),
    /// Release quarantined inbound webhooks.
    #[serde(rename = "quarantine_release")]
    QuarantineRelease(InboundWork),
}

/// Which inbound webhooks a bulk job runs again, and how many at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct InboundWork {
    pub(super) inbound: InboundFilter,
    #[serde(default = "default_concurrency")]
    pub(super) concurrency: usize,
}

/// Jobs stored before the setting existed.
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

impl Work {
    fn concurrency(&self) -> Option<usize> {
        match self {
            Work::Deliveries { .. } => None,
            Work::InboundReplay(w) | Work::QuarantineRelease(w) => Some(w.concurrency),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Work::Deliveries { .. } => "replay",
            Work::InboundReplay(_) => "inbound_replay",
            Work::QuarantineRelease(_) => "quarantine_release",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    work: Work,
    status: String,
    requeued: u64,
    #[serde(default)]
    skipped: u64,
    /// The last id done: where a resumed job goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    error: Option<String>,
    finished_at: Option<i64>,
}

impl Stored {
    fn progress(&self) -> Progress {
        Progress {
            requeued: self.requeued,
            skipped: self.skipped,
        }
    }
}

/// Counts so far.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    requeued: u64,
    skipped: u64,
}

fn view(r: &Resource) -> Result<Job, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    Ok(Job {
        id: r.id.clone(),
        kind: s.work.kind().into(),
        status: s.status,
        requeued: s.requeued,
        skipped: s.skipped,
        error: s.error,
        created_at: rfc3339(r.created_at),
        finished_at: s.finished_at.map(rfc3339),
        concurrency: s.work.concurrency(),
    })
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(replay))
        .routes(routes!(list))
        .routes(routes!(get))
}

/// List jobs, oldest first: after a restart, or for what another replica started.
#[utoipa::path(get, path = "/v1/jobs", tag = "events", params(PageParams), responses((status = 200, body = Page<Job>)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(page): AppQuery<PageParams>,
) -> Result<AppJson<Page<Job>>, ApiError> {
    who.require(Area::Events, Access::Read)?;
    Ok(AppJson(
        list_page(&state, &who, Kind::Job, &page, view, |j| j.id.clone()).await?,
    ))
}

/// Attempt again, now, every delivery a filter matches; runs in the background.
#[utoipa::path(post, path = "/v1/deliveries/replay", tag = "events", request_body = ReplayInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 202, body = Job)))]
async fn replay(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<ReplayInput>,
) -> Result<Response, ApiError> {
    who.require(Area::Events, Access::Write)?;
    let tenant = who.tenant_filter(input.tenant_id.as_deref())?;
    if input
        .status
        .as_deref()
        .is_some_and(|s| !["dead", "succeeded", "pending"].contains(&s))
    {
        return Err(ApiError::field("status", "one of dead, succeeded, pending"));
    }
    let filter = ReplayFilter {
        tenant_id: tenant.clone(),
        endpoint_id: input.endpoint_id,
        status: input.status,
        event_type: input.event_type,
        since: time_field("since", input.since.as_deref())?,
        until: time_field("until", input.until.as_deref())?,
    };
    start(&state, &who, tenant, Work::Deliveries { filter }).await
}

/// Stores a new job and starts it; answers 202 with the job.
pub(super) async fn start(
    state: &AppState,
    who: &Principal,
    tenant: Option<String>,
    work: Work,
) -> Result<Response, ApiError> {
    let id = new_id("job");
    let now = now_ms();
    let body = serde_json::to_value(Stored {
        work,
        status: "running".into(),
        requeued: 0,
        skipped: 0,
        cursor: None,
        error: None,
        finished_at: None,
    })
    .map_err(ApiError::internal)?;
    let r = Resource {
        kind: Kind::Job,
        id: id.clone(),
        tenant_id: tenant.clone().unwrap_or_default(),
        unique_key: id.clone(),
        body: body.clone(),
        secrets: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .insert(
            &r,
            &audit(
                who,
                "create",
                Kind::Job,
                &id,
                tenant.as_deref(),
                serde_json::json!({"after": body}),
            ),
        )
        .await?;
    tokio::spawn(run(state.clone(), r.clone()));
    Ok(with_etag(StatusCode::ACCEPTED, 1, view(&r)?))
}

/// A job's progress.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "events", params(("id" = String, Path)), responses((status = 200, body = Job)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require(Area::Events, Access::Read)?;
    let r = load(&state, &who, Kind::Job, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Resumes every running job last recorded before `updated_before` (unix ms): its runner
/// stopped. Each is claimed by recording it again at the next version, so of several replicas
/// looking at once, one takes it. Returns how many this call resumed.
///
/// # Errors
/// The store failed.
pub async fn resume_jobs(state: &AppState, updated_before: i64) -> Result<usize, ApiError> {
    let mut resumed = 0;
    for job in state.store.list_all(Kind::Job).await? {
        if job.updated_at >= updated_before {
            continue;
        }
        let Ok(stored) = serde_json::from_value::<Stored>(job.body.clone()) else {
            tracing::warn!(job = %job.id, "a job of an unknown kind is left alone");
            continue;
        };
        if stored.status != "running" {
            continue;
        }
        match record(
            state,
            job,
            Some("resume"),
            "running",
            stored.progress(),
            stored.cursor,
            None,
        )
        .await
        {
            Ok(claimed) => {
                tracing::info!(job = %claimed.id, kind = stored.work.kind(), "resuming a job whose runner stopped");
                tokio::spawn(run(state.clone(), claimed));
                resumed += 1;
            }
            Err(ApiError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(resumed)
}

/// Deletes jobs that finished before `before` (unix ms), with their progress: the audit log
/// keeps who started each and how it ended. Returns how many went.
///
/// # Errors
/// The store failed; what was deleted stays deleted.
pub async fn purge_finished_jobs(store: &dyn Store, before: i64) -> Result<u64, StoreError> {
    // A job finishes after it starts, and ids begin with the start: only those started
    // before the cut-off can qualify.
    let cut = floor_id("job", before);
    let mut after: Option<String> = None;
    let mut deleted = 0;
    loop {
        let q = ListQuery {
            kind: Kind::Job,
            tenant_id: None,
            after: after.take(),
            limit: PAGE,
        };
        let page = store.list(&q).await?;
        for job in page.iter().take_while(|j| j.id < cut) {
            let finished = serde_json::from_value::<Stored>(job.body.clone())
                .ok()
                .and_then(|s| s.finished_at);
            if finished.is_none_or(|at| at >= before) {
                continue;
            }
            match store
                .delete(Kind::Job, &job.id, Some(job.version), None)
                .await
            {
                // Gone or changed since it was read: another replica's purge, or nothing to do.
                Ok(()) => deleted += 1,
                Err(StoreError::NotFound | StoreError::VersionConflict) => {}
                Err(e) => return Err(e),
            }
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE && last.id < cut => {
                after = Some(last.id.clone())
            }
            _ => return Ok(deleted),
        }
    }
}

/// Resumes stopped jobs: at start, those the previous run of this process left (one process
/// owns a SQLite file; on PostgreSQL another replica may be running them, so only those silent
/// for [`LEASE_MS`]), then every [`KEEPER_EVERY`] those whose replica stopped.
pub fn spawn_job_keeper(state: AppState) -> tokio::task::JoinHandle<()> {
    let started = now_ms();
    tokio::spawn(async move {
        let mut before = if state.store.backend() == "sqlite" {
            started
        } else {
            started - LEASE_MS
        };
        loop {
            if let Err(e) = resume_jobs(&state, before).await {
                tracing::warn!(error = %e, "looking for stopped jobs failed");
            }
            tokio::time::sleep(KEEPER_EVERY).await;
            before = now_ms() - LEASE_MS;
        }
    })
}

/// Works page by page from where the job's record says it is, recording progress after each
/// page. Stops without a word when another runner took the job over (its version moved on).
async fn run(state: AppState, mut job: Resource) {
    let (mut progress, work, mut after) = match serde_json::from_value::<Stored>(job.body.clone()) {
        Ok(s) => (s.progress(), s.work, s.cursor),
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "a job that cannot be read is not run");
            return;
        }
    };
    let outcome: Result<(), ApiError> = async {
        loop {
            let from = (after.clone(), job.created_at);
            let last = match &work {
                Work::Deliveries { filter } => {
                    requeue_page(&state, filter, from, &mut progress).await
                }
                Work::InboundReplay(w) => {
                    rerun_page(&state, w, Run::Replay, from, &mut progress).await
                }
                Work::QuarantineRelease(w) => {
                    rerun_page(&state, w, Run::Release, from, &mut progress).await
                }
            }
            .map_err(ApiError::Unavailable)?;
            let Some(last) = last else {
                return Ok(());
            };
            after = Some(last);
            job = record(
                &state,
                job.clone(),
                None,
                "running",
                progress,
                after.clone(),
                None,
            )
            .await?;
        }
    }
    .await;
    let (status, error) = match outcome {
        Ok(()) => ("succeeded", None),
        Err(ApiError::Conflict(_)) => {
            tracing::info!(job = %job.id, "another runner took the job over");
            return;
        }
        Err(e) => ("failed", Some(e.to_string())),
    };
    if let Err(e) = record(&state, job, Some("finish"), status, progress, after, error).await {
        tracing::error!(error = %e, kind = work.kind(), "could not record the end of a job");
    }
}

/// One page of deliveries after the cursor requeued; the last id, or none when there are no
/// more. Those in flight are skipped, and so are those changed since the job started
/// (`started`, unix ms): attempted since, or requeued by this job before its runner stopped and
/// it was resumed from an earlier cursor.
///
/// Beside live traffic (as for inbound jobs, [`QUIET_MS`]) the pages are small and paced, and
/// so are the resends that follow them: requeued as fast as the store allows, tens of
/// thousands of resends a minute took the CPU that accepting webhooks and publishes needs, and
/// routed arrivals fell to half their rate. Providers and publishers wait for the answer; the
/// deliveries being replayed can wait.
async fn requeue_page(
    state: &AppState,
    filter: &ReplayFilter,
    (after, started): (Option<String>, i64),
    progress: &mut Progress,
) -> Result<Option<String>, String> {
    let live = state.metrics.live_within(QUIET_MS);
    let ids = state
        .store
        .find_deliveries(
            filter,
            after.as_deref(),
            if live { LIVE_PAGE } else { PAGE },
        )
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = ids.last().cloned() else {
        return Ok(None);
    };
    let requeued = state
        .store
        .requeue_deliveries(&ids, now_ms(), started)
        .await
        .map_err(|e| e.to_string())?;
    progress.requeued += requeued;
    progress.skipped += ids.len() as u64 - requeued;
    state.delivery.wake();
    if live {
        tokio::time::sleep(LIVE_PAUSE).await;
    }
    Ok(Some(last))
}

/// How many webhooks a job may have running: its concurrency while this process is quiet, one
/// beside live traffic (`live`: a webhook arriving at the ingest or a publish through the API,
/// now or in the last [`QUIET_MS`]). Providers and publishers wait on that traffic and time out
/// on it; a job's webhooks are stored already and can wait. With one at a time the job still
/// moves on, so steady traffic slows it down but never stops it. It is asked again each time
/// one of the job's webhooks is done.
fn room(concurrency: usize, live: bool) -> usize {
    if live {
        1
    } else {
        concurrency
    }
}

/// How long live traffic must have been quiet before a job takes its full concurrency.
/// Looking only at the arrivals in flight, a job saw none in the instants between a group commit
/// answering every waiting webhook and the next ones coming in, and started its whole
/// concurrency at once in the middle of steady traffic.
const QUIET_MS: i64 = 100;

/// One page of inbound webhooks after the cursor run again, several at once; the last id, or
/// none when there are no more. A webhook whose source is gone is skipped, and so is one changed
/// since the job started (`started`, unix ms): another replay, release or delete, or this job
/// before its runner stopped and it was resumed from an earlier cursor. So a job runs each
/// webhook at most once. A storage failure ends the job.
async fn rerun_page(
    state: &AppState,
    work: &InboundWork,
    how: Run,
    (after, started): (Option<String>, i64),
    progress: &mut Progress,
) -> Result<Option<String>, String> {
    let q = InboundQuery {
        filter: work.inbound.clone(),
        after,
        limit: INBOUND_PAGE,
    };
    let mut rows = state
        .store
        .list_inbound(&q)
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = rows.last().map(|r| r.id.clone()) else {
        return Ok(None);
    };
    let read = rows.len();
    rows.retain(|r| r.updated_at < started);
    progress.skipped += (read - rows.len()) as u64;
    let mut waiting = rows.into_iter();
    let mut runs = FuturesUnordered::new();
    let mut failure = None;
    loop {
        while runs.len() < room(work.concurrency, state.metrics.live_within(QUIET_MS)) {
            let Some(row) = waiting.next() else { break };
            let running = state.metrics.job_webhook();
            runs.push(async move {
                let outcome = state.ingest.rerun(&row, how).await;
                drop(running);
                outcome
            });
        }
        let Some(outcome) = runs.next().await else {
            break;
        };
        match outcome {
            Ok(_) => progress.requeued += 1,
            Err(ApiError::Conflict(_)) => progress.skipped += 1,
            Err(e) => failure = Some(e.to_string()),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Some(last)),
    }
}

/// Records a job's state at its next version, with an audit entry for `action` (resuming or
/// finishing it; progress within a run has none, or a long job would flood the audit log);
/// `ApiError::Conflict` when another runner recorded it first.
async fn record(
    state: &AppState,
    job: Resource,
    action: Option<&str>,
    status: &str,
    progress: Progress,
    cursor: Option<String>,
    error: Option<String>,
) -> Result<Resource, ApiError> {
    let who = Principal::new("system", None, &["admin"]);
    let mut s: Stored = serde_json::from_value(job.body.clone()).map_err(ApiError::internal)?;
    s.status = status.into();
    s.requeued = progress.requeued;
    s.skipped = progress.skipped;
    s.cursor = cursor;
    s.error = error;
    if status != "running" {
        s.finished_at = Some(now_ms());
    }
    let body = serde_json::to_value(s).map_err(ApiError::internal)?;
    let next = Resource {
        body,
        version: job.version + 1,
        updated_at: now_ms(),
        ..job.clone()
    };
    let entry = action.map(|action| {
        audit(
            &who,
            action,
            Kind::Job,
            &job.id,
            Some(&job.tenant_id),
            serde_json::json!({"status": status, "requeued": progress.requeued, "skipped": progress.skipped}),
        )
    });
    state
        .store
        .update(&next, job.version, entry.as_ref())
        .await?;
    Ok(next)
}
