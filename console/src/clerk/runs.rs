//! Billing runs: choose period and group, preview (billing's dry run),
//! commit, follow the progress.
//!
//! A committed run can take minutes (a million bills); the console starts it
//! in the background with the clerk's token and a long timeout (at most
//! [`MAX_BACKGROUND_RUNS`] at once), and the progress page polls billing's
//! `GET /api/v1/billing-runs/{id}` through an htmx fragment. The outcome or
//! failure of each background run is kept for the progress page (at most
//! [`MAX_JOBS_KEPT`], oldest dropped).

use super::usage_type_ko;
use crate::backend::{query, Backend};
use crate::layout::{thousands, ts};
use crate::web::{Authed, PageError};
use axum::extract::{Form, Query};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use waterworks_api::billing::{Component, RunDetail, RunList, RunOutcome, RunStatus, StartRun};
use waterworks_service::auth::Role;

/// Committed runs started by this console and still going, at most.
pub const MAX_BACKGROUND_RUNS: usize = 4;
/// Background run results kept for the progress page.
pub const MAX_JOBS_KEPT: usize = 64;
/// How long a background run may take before the console stops waiting
/// (billing resumes an interrupted run where it stopped).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

#[derive(Deserialize, Clone)]
pub struct RunForm {
    pub period: String,
    pub group: String,
}

impl RunForm {
    fn check(&self) -> Result<(), PageError> {
        let p = self.period.trim();
        let ok = p.len() == 7
            && p.as_bytes()[4] == b'-'
            && p[..4].bytes().all(|b| b.is_ascii_digit())
            && p[5..].bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(PageError::BadRequest(format!(
                "period {p:?} is not of the form YYYY-MM"
            )));
        }
        let g = self.group.trim();
        if g.is_empty() || g.chars().count() > 64 || g.chars().any(char::is_control) {
            return Err(PageError::BadRequest(
                "group must be 1-64 printable characters".into(),
            ));
        }
        Ok(())
    }
}

enum Job {
    Running,
    Done(RunOutcome),
    Failed(String),
}

/// Background runs by (period, group): when last changed, and how they went.
type Jobs = Mutex<HashMap<(String, String), (Instant, Job)>>;

fn jobs() -> &'static Jobs {
    static JOBS: OnceLock<Jobs> = OnceLock::new();
    JOBS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn set_job(key: (String, String), job: Job) {
    let mut j = jobs().lock().unwrap_or_else(|e| e.into_inner());
    if j.len() >= MAX_JOBS_KEPT && !j.contains_key(&key) {
        if let Some(oldest) = j
            .iter()
            .min_by_key(|(_, (t, _))| *t)
            .map(|(k, _)| k.clone())
        {
            j.remove(&oldest);
        }
    }
    j.insert(key, (Instant::now(), job));
}

fn running() -> &'static Semaphore {
    static RUNNING: Semaphore = Semaphore::const_new(MAX_BACKGROUND_RUNS);
    &RUNNING
}

fn form(ctx: &Authed, period: &str, group: &str) -> Markup {
    html! {
        form method="post" action="/clerk/runs/preview" class="run-form" id="run-form" {
            label { (ctx.t("clerk.period")) " "
                input type="month" name="period" id="run-period" required value=(period); }
            label { (ctx.t("clerk.group")) " "
                input type="text" name="group" id="run-group" required maxlength="64" value=(group); }
            button type="submit" id="run-preview" { (ctx.t("clerk.preview")) }
        }
    }
}

pub async fn page(ctx: Authed) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    let runs: RunList = ctx
        .app
        .billing
        .get(ctx.token(), "/api/v1/billing-runs")
        .await?;
    let this_month = chrono::Utc::now()
        .with_timezone(&crate::layout::kst())
        .format("%Y-%m")
        .to_string();
    Ok(super::page(
        &ctx,
        ctx.t("nav.runs"),
        html! {
            h1 { (ctx.t("nav.runs")) }
            (form(&ctx, &this_month, "A"))
            h2 { (ctx.t("clerk.runs.recent")) }
            table class="grid" id="runs" {
                thead { tr {
                    th { "#" } th { (ctx.t("clerk.period")) } th { (ctx.t("clerk.group")) }
                    th { (ctx.t("clerk.runs.status")) } th { (ctx.t("clerk.runs.started")) }
                    th { (ctx.t("clerk.runs.finished")) } th class="num" { (ctx.t("clerk.runs.created")) }
                    th class="num" { (ctx.t("clerk.total")) }
                } }
                tbody {
                    @for r in runs.runs.iter().take(50) {
                        tr {
                            td { (r.run_id) }
                            td { (r.period) }
                            td { (r.group) }
                            td { (status_label(&ctx, r.status)) }
                            td { (time(Some(r.started_at))) }
                            td { (time(r.finished_at)) }
                            td class="num" { (thousands(r.outcome.as_ref().map_or(0, |o| o.bills_created as i64))) }
                            td class="num" { (thousands(r.outcome.as_ref().map_or(0, |o| o.total_krw))) }
                        }
                    }
                }
            }
        },
    ))
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| ts(&t)).unwrap_or_else(|| "—".into())
}

fn status_label(ctx: &Authed, s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => ctx.t("clerk.run_status.running"),
        RunStatus::Committed => ctx.t("clerk.run_status.committed"),
    }
}

const COMPONENTS: [(Component, &str); 5] = [
    (Component::Water, "clerk.water"),
    (Component::Base, "clerk.base"),
    (Component::Sewer, "clerk.sewer"),
    (Component::Levy, "clerk.levy"),
    (Component::Reduction, "clerk.reduction"),
];

/// One component's KRW in a run's totals (keyed by the component's name).
fn part(totals: &std::collections::BTreeMap<String, i64>, c: Component) -> i64 {
    totals.get(c.as_str()).copied().unwrap_or(0)
}

/// Counts, totals by usage type and component, and held bills of a run's
/// outcome (dry or committed).
fn outcome_view(ctx: &Authed, o: &RunOutcome) -> Markup {
    html! {
        dl class="facts" id="run-outcome" {
            dt { (ctx.t("clerk.runs.accounts")) } dd { (thousands(o.accounts as i64)) }
            dt { (ctx.t("clerk.runs.created")) } dd id="run-created" { (thousands(o.bills_created as i64)) }
            dt { (ctx.t("clerk.runs.existing")) } dd { (thousands(o.bills_existing as i64)) }
            dt { (ctx.t("clerk.runs.held")) } dd id="run-held" { (thousands(o.held as i64)) }
            dt { (ctx.t("clerk.runs.estimated")) } dd { (thousands(o.estimated as i64)) }
            dt { (ctx.t("clerk.usage_m3")) } dd { (thousands(o.usage_m3)) }
            dt { (ctx.t("clerk.total")) } dd id="run-total" { (thousands(o.total_krw)) " 원" }
        }
        h2 { (ctx.t("clerk.runs.by_type")) }
        table class="grid" id="run-by-type" {
            thead { tr {
                th { (ctx.t("clerk.usage_type")) }
                @for (_, key) in COMPONENTS { th class="num" { (ctx.t(key)) } }
                th class="num" { (ctx.t("clerk.total")) }
            } }
            tbody {
                @for (t, parts) in &o.totals_by_usage_type {
                    tr {
                        td { (usage_type_ko(t)) " (" (t) ")" }
                        @for (c, _) in COMPONENTS { td class="num" { (thousands(part(parts, c))) } }
                        td class="num" { (thousands(COMPONENTS.iter().map(|(c, _)| part(parts, *c)).sum())) }
                    }
                }
                tr class="total" {
                    td { (ctx.t("clerk.total")) }
                    @for (c, _) in COMPONENTS { td class="num" { (thousands(part(&o.totals_by_component, c))) } }
                    td class="num" { (thousands(o.total_krw)) }
                }
            }
        }
        @if !o.holds.is_empty() {
            h2 { (ctx.t("clerk.runs.holds")) }
            table class="grid" id="run-holds" {
                thead { tr { th { (ctx.t("clerk.account")) } th { (ctx.t("clerk.reason")) } } }
                tbody {
                    @for h in &o.holds {
                        tr {
                            td { (h.account_no) }
                            td { @for r in &h.reasons { div { (r) } } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn preview(ctx: Authed, Form(f): Form<RunForm>) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    f.check()?;
    let (period, group) = (f.period.trim(), f.group.trim());
    let outcome: RunOutcome = ctx
        .app
        .billing
        .post(
            ctx.token(),
            "/api/v1/billing-runs",
            &start(period, group, true),
        )
        .await?;
    Ok(super::page(
        &ctx,
        ctx.t("clerk.runs.preview_title"),
        html! {
            h1 { (ctx.t("clerk.runs.preview_title")) ": " (period) " · " (group) }
            (outcome_view(&ctx, &outcome))
            form method="post" action="/clerk/runs/commit" id="commit-form" {
                input type="hidden" name="period" value=(period);
                input type="hidden" name="group" value=(group);
                button type="submit" id="run-commit" class="primary" { (ctx.t("clerk.commit")) }
            }
            h2 { (ctx.t("clerk.preview")) }
            (form(&ctx, period, group))
        },
    ))
}

pub async fn commit(ctx: Authed, Form(f): Form<RunForm>) -> Result<Response, PageError> {
    ctx.require(Role::Clerk)?;
    f.check()?;
    let (period, group) = (f.period.trim().to_string(), f.group.trim().to_string());
    let Ok(permit) = running().try_acquire() else {
        return Err(PageError::Conflict(ctx.t("clerk.runs.busy").into()));
    };
    let key = (period.clone(), group.clone());
    set_job(key.clone(), Job::Running);
    // A client of its own: a run outlives the page's usual backend timeout.
    let billing = Backend::new("billing", &ctx.app.config.billing_url, RUN_TIMEOUT);
    let token = ctx.token().to_string();
    let who = ctx.session.name.clone();
    tokio::spawn(async move {
        let _permit = permit;
        tracing::info!(%who, period = %key.0, group = %key.1, "billing run started from the console");
        let r: Result<RunOutcome, _> = billing
            .post(
                &token,
                "/api/v1/billing-runs",
                &start(&key.0, &key.1, false),
            )
            .await;
        match r {
            Ok(o) => set_job(key, Job::Done(o)),
            Err(e) => {
                tracing::warn!(%who, error = %e, "billing run from the console failed");
                set_job(key, Job::Failed(e.to_string()));
            }
        }
    });
    let q = query(&[("period", Some(period)), ("group", Some(group))]);
    Ok(Redirect::to(&format!("/clerk/runs/progress{q}")).into_response())
}

/// The body that starts (or, dry, previews) a run from the console: never
/// forced (a month not over yet is refused with billing's own message).
fn start(period: &str, group: &str, dry_run: bool) -> StartRun {
    StartRun {
        period: period.to_string(),
        group: group.to_string(),
        dry_run,
        force: false,
        reason: None,
    }
}

#[derive(Deserialize)]
pub struct ProgressQuery {
    period: String,
    group: String,
}

pub async fn progress_page(
    ctx: Authed,
    Query(q): Query<ProgressQuery>,
) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    let frag = progress(&ctx, &q).await?;
    Ok(super::page(
        &ctx,
        ctx.t("clerk.runs.progress_title"),
        html! {
            h1 { (ctx.t("clerk.runs.progress_title")) ": " (q.period) " · " (q.group) }
            (frag)
        },
    ))
}

pub async fn progress_fragment(
    ctx: Authed,
    Query(q): Query<ProgressQuery>,
) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    progress(&ctx, &q).await
}

/// The progress box; it polls itself (htmx) until the run is over.
async fn progress(ctx: &Authed, q: &ProgressQuery) -> Result<Markup, PageError> {
    let job = {
        let j = jobs().lock().unwrap_or_else(|e| e.into_inner());
        match j.get(&(q.period.clone(), q.group.clone())) {
            Some((_, Job::Running)) => Some(None),
            Some((_, Job::Done(o))) => Some(Some(Ok(o.clone()))),
            Some((_, Job::Failed(e))) => Some(Some(Err(e.clone()))),
            None => None,
        }
    };
    // The newest run of this period and group, and its progress.
    let runs: RunList = ctx
        .app
        .billing
        .get(
            ctx.token(),
            &format!(
                "/api/v1/billing-runs{}",
                query(&[("period", Some(q.period.clone()))])
            ),
        )
        .await?;
    let run = runs.runs.into_iter().find(|r| r.group == q.group);
    let detail: Option<RunDetail> = match &run {
        Some(r) => Some(
            ctx.app
                .billing
                .get(ctx.token(), &format!("/api/v1/billing-runs/{}", r.run_id))
                .await?,
        ),
        None => None,
    };
    let committed = detail
        .as_ref()
        .is_some_and(|d| d.run.status == RunStatus::Committed);
    // Over when billing says the run is committed (the console's own
    // request may not have returned yet), when that request ended, or when
    // there is nothing to follow.
    let finished = committed || matches!(job, Some(Some(_))) || (job.is_none() && run.is_none());
    let poll = format!(
        "/clerk/runs/progress/frag{}",
        query(&[
            ("period", Some(q.period.clone())),
            ("group", Some(q.group.clone()))
        ])
    );
    let body = html! {
        @if let Some(d) = &detail {
            @let p = &d.progress;
            @let percent = p.percent.clamp(0, 100);
            dl class="facts" {
                dt { "#" } dd id="progress-run" { (d.run.run_id) }
                dt { (ctx.t("clerk.runs.status")) } dd id="progress-status" data-status=(d.run.status.as_str()) { (status_label(ctx, d.run.status)) }
                dt { (ctx.t("clerk.runs.written")) }
                dd id="progress-written" { (thousands(p.bills_written)) " / " (thousands(p.accounts)) }
            }
            progress max="100" value=(percent) { (percent) "%" }
        } @else {
            p { (ctx.t("clerk.runs.waiting")) }
        }
        @match &job {
            Some(Some(Ok(o))) => {
                p class="ok" id="run-done" { (ctx.t("clerk.runs.done")) }
                (outcome_view(ctx, o))
            }
            Some(Some(Err(e))) => {
                p class="error" id="run-failed" { (ctx.t("clerk.runs.failed")) ": " (e) }
            }
            _ => {
                @if committed {
                    p class="ok" id="run-done" { (ctx.t("clerk.runs.done")) }
                    @if let Some(o) = detail.as_ref().and_then(|d| d.run.outcome.as_ref()) {
                        (outcome_view(ctx, o))
                    }
                }
            }
        }
        @if finished {
            p { a id="run-bills" href=(format!("/clerk/bills{}", query(&[("period", Some(q.period.clone())), ("q", Some(String::new()))]))) { (ctx.t("clerk.runs.see_bills")) } }
        }
    };
    Ok(if finished {
        html! { div id="progress" data-finished="1" { (body) } }
    } else {
        html! {
            div id="progress" data-finished="0" hx-get=(poll) hx-trigger="every 2s" hx-swap="outerHTML" { (body) }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_form_is_checked() {
        let f = |p: &str, g: &str| RunForm {
            period: p.into(),
            group: g.into(),
        };
        assert!(f("2026-10", "A").check().is_ok());
        assert!(f("2026-1", "A").check().is_err());
        assert!(f("2026/10", "A").check().is_err());
        assert!(f("2026-10", "").check().is_err());
        assert!(f("2026-10", &"g".repeat(65)).check().is_err());
    }

    #[test]
    fn kept_jobs_are_bounded() {
        for i in 0..(MAX_JOBS_KEPT + 10) {
            set_job((format!("p{i}"), "g".into()), Job::Running);
        }
        assert!(jobs().lock().unwrap().len() <= MAX_JOBS_KEPT);
    }
}
