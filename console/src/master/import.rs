//! (Long because the upload form, the bounded upload store, the preview and the commit are one flow whose states are checked together; about 45 lines are its tests.)
//! `/master/import` (admin): a utility's export into billing and ingest
//! through the import library (`waterworks-import`, what `waterworks import`
//! runs), in the console's process, with the admin's own token against the
//! backends the console already speaks to.
//!
//! 1. `GET /master/import`: the form: the file (CSV in CP949 or UTF-8, or
//!    XLSX; at most [`MAX_UPLOAD_BYTES`]), its kind, the mapping (the
//!    Waterworks layout, the shipped Korean mapping
//!    `fixtures/import/korean.toml`, or an uploaded mapping TOML) and the
//!    encoding (detected, CP949 or UTF-8).
//! 2. `POST /master/import` (multipart): the file is kept in the
//!    [`Uploads`] store under a random id and a dry run is made at once;
//!    the answer redirects to `GET /master/import/{id}`, the preview:
//!    created, changed and unchanged counts and every bad row with its line,
//!    column and reason.
//! 3. `POST /master/import/{id}/commit` (CSRF-checked like every POST):
//!    the real import, with `--skip-bad` semantics only when "skip the bad
//!    rows" is ticked; without it a file with bad rows is refused and
//!    nothing is written. The page then shows what was written and links to
//!    the premises (or customers, meters) pages. The upload is dropped.
//!
//! The store holds at most [`MAX_UPLOADS`] files, each for [`UPLOAD_TTL`]
//! (then it is gone and the admin uploads again); a new upload into a full
//! store drops the oldest. An upload is only ever seen and committed by the
//! person who sent it. The file never goes to the browser and back.

use super::page;
use super::search::{customer_link, meter_link, premises_link};
use crate::web::{Authed, PageError};
use axum::extract::{DefaultBodyLimit, Form, FromRequest, Multipart, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waterworks_import::mapping::Mapping;
use waterworks_import::read::EncodingChoice;
use waterworks_import::{Kind, Options, Outcome, Services};
use waterworks_service::auth::Role;

/// The largest file an admin may upload.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// The largest mapping TOML.
pub const MAX_MAPPING_BYTES: usize = 1024 * 1024;
/// Files kept between preview and commit.
pub const MAX_UPLOADS: usize = 8;
/// How long an upload waits for its commit.
pub const UPLOAD_TTL: Duration = Duration::from_secs(15 * 60);

/// The shipped Korean mapping (the generator's layout; docs/import.md).
const KOREAN_MAPPING: &str = include_str!("../../../fixtures/import/korean.toml");

pub fn routes() -> Router<Arc<crate::App>> {
    Router::new()
        .route(
            "/master/import",
            get(form).post(upload).layer(DefaultBodyLimit::max(
                MAX_UPLOAD_BYTES + MAX_MAPPING_BYTES + 64 * 1024,
            )),
        )
        .route("/master/import/{id}", get(preview))
        .route("/master/import/{id}/commit", post(commit))
}

/// Which mapping the admin chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MappingChoice {
    Waterworks,
    Korean,
    Uploaded,
}

/// A file between its preview and its commit.
#[derive(Clone)]
struct Upload {
    owner: String,
    name: String,
    bytes: Arc<Vec<u8>>,
    kind: Kind,
    mapping: Arc<Mapping>,
    mapping_name: String,
    encoding: Option<EncodingChoice>,
    at: Instant,
    /// The dry run's outcome.
    preview: Outcome,
}

/// The bounded, expiring store of uploads, by a random 128-bit id.
#[derive(Default)]
pub struct Uploads {
    files: Mutex<HashMap<String, Upload>>,
}

impl Uploads {
    fn prune(files: &mut HashMap<String, Upload>, now: Instant) {
        files.retain(|_, u| now.duration_since(u.at) < UPLOAD_TTL);
    }

    fn put(&self, upload: Upload) -> String {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let mut files = self.files.lock().expect("uploads lock");
        Self::prune(&mut files, Instant::now());
        while files.len() >= MAX_UPLOADS {
            let Some(oldest) = files
                .iter()
                .min_by_key(|(_, u)| u.at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            files.remove(&oldest);
        }
        files.insert(id.clone(), upload);
        id
    }

    /// The upload `id` if it is still kept and `owner`'s.
    fn get(&self, id: &str, owner: &str) -> Option<Upload> {
        let mut files = self.files.lock().expect("uploads lock");
        Self::prune(&mut files, Instant::now());
        files.get(id).filter(|u| u.owner == owner).cloned()
    }

    fn remove(&self, id: &str) {
        self.files.lock().expect("uploads lock").remove(id);
    }

    /// Files kept now.
    pub fn len(&self) -> usize {
        let mut files = self.files.lock().expect("uploads lock");
        Self::prune(&mut files, Instant::now());
        files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn kind_of(s: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.as_str() == s)
}

fn kind_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Customers => "master.customers",
        Kind::Premises => "master.premises",
        Kind::Meters => "master.meters",
        Kind::Installations => "master.installations",
    }
}

/// The form, with `error` above it when the last upload failed.
fn form_page(ctx: &Authed, error: Option<&str>) -> Markup {
    page(
        ctx,
        ctx.t("import.title"),
        html! {
            h1 { (ctx.t("import.title")) }
            p class="muted" { (ctx.t("import.help")) }
            @if let Some(e) = error {
                div class="problems" id="import-error" role="alert" { (e) }
            }
            form class="edit" method="post" action="/master/import" enctype="multipart/form-data" id="import-form" {
                label for="import-file" { (ctx.t("import.file")) }
                input type="file" id="import-file" name="file" required accept=".csv,.txt,.xlsx,.xlsm,.xls,.ods";
                label for="import-kind" { (ctx.t("import.kind")) }
                select id="import-kind" name="kind" {
                    @for k in Kind::ALL {
                        option value=(k.as_str()) selected[k == Kind::Premises] { (ctx.t(kind_key(k))) }
                    }
                }
                label for="import-mapping" { (ctx.t("import.mapping")) }
                select id="import-mapping" name="mapping" {
                    option value="waterworks" { (ctx.t("import.mapping_waterworks")) }
                    option value="korean" { (ctx.t("import.mapping_korean")) }
                    option value="upload" { (ctx.t("import.mapping_upload")) }
                }
                label for="import-mapping-file" { (ctx.t("import.mapping_file")) }
                input type="file" id="import-mapping-file" name="mapping_file" accept=".toml";
                label for="import-encoding" { (ctx.t("import.encoding")) }
                select id="import-encoding" name="encoding" {
                    option value="auto" { (ctx.t("import.encoding_auto")) }
                    option value="cp949" { "CP949 (EUC-KR)" }
                    option value="utf-8" { "UTF-8" }
                }
                span {}
                button type="submit" id="import-upload" { (ctx.t("import.dry_run")) }
            }
            p class="muted" { (ctx.t("import.limits")) }
        },
    )
}

fn refuse(ctx: &Authed, status: StatusCode, msg: &str) -> Response {
    (status, form_page(ctx, Some(msg))).into_response()
}

/// `GET /master/import` (admin).
pub async fn form(ctx: Authed) -> Result<Markup, PageError> {
    ctx.require(Role::Admin)?;
    Ok(form_page(&ctx, None))
}

/// Reads one field whole, refusing it past `max` bytes.
async fn field_bytes(
    field: &mut axum::extract::multipart::Field<'_>,
    max: usize,
) -> Result<Option<Vec<u8>>, axum::extract::multipart::MultipartError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if out.len() + chunk.len() > max {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

fn services(ctx: &Authed) -> Services {
    Services {
        billing_url: ctx.app.config.billing_url.clone(),
        billing_token: ctx.token().to_string(),
        ingest_url: Some(ctx.app.config.ingest_url.clone()),
        ingest_token: ctx.token().to_string(),
        report_retries: false,
    }
}

/// `POST /master/import` (admin, multipart): keep the file, dry-run it,
/// show the preview.
pub async fn upload(ctx: Authed, req: axum::extract::Request) -> Result<Response, PageError> {
    // The role first: anyone else is refused whatever they send.
    ctx.require(Role::Admin)?;
    let mut mp = match Multipart::from_request(req, &()).await {
        Ok(mp) => mp,
        Err(e) => {
            return Ok(refuse(
                &ctx,
                StatusCode::BAD_REQUEST,
                &format!("{}: {}", ctx.t("import.bad_form"), e.body_text()),
            ))
        }
    };
    let too_large = |ctx: &Authed| {
        refuse(
            ctx,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{} ({} MiB)",
                ctx.t("import.too_large"),
                MAX_UPLOAD_BYTES / (1024 * 1024)
            ),
        )
    };
    let (mut file, mut name) = (None::<Vec<u8>>, String::new());
    let mut mapping_file = None::<(String, Vec<u8>)>;
    let (mut kind, mut choice, mut encoding) = (None, MappingChoice::Waterworks, None);
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Ok(too_large(&ctx)),
            Err(e) => {
                return Ok(refuse(
                    &ctx,
                    StatusCode::BAD_REQUEST,
                    &format!("{}: {}", ctx.t("import.bad_form"), e.body_text()),
                ))
            }
        };
        let field_name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().unwrap_or("").to_string();
        let max = match field_name.as_str() {
            "file" => MAX_UPLOAD_BYTES,
            "mapping_file" => MAX_MAPPING_BYTES,
            _ => 1024,
        };
        let bytes = match field_bytes(&mut field, max).await {
            Ok(Some(b)) => b,
            Ok(None) if field_name == "mapping_file" => {
                return Ok(refuse(
                    &ctx,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ctx.t("import.mapping_too_large"),
                ))
            }
            Ok(None) => return Ok(too_large(&ctx)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Ok(too_large(&ctx)),
            Err(e) => {
                return Ok(refuse(
                    &ctx,
                    StatusCode::BAD_REQUEST,
                    &format!("{}: {}", ctx.t("import.bad_form"), e.body_text()),
                ))
            }
        };
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match field_name.as_str() {
            "file" => {
                name = file_name;
                file = Some(bytes);
            }
            "mapping_file" if !bytes.is_empty() => mapping_file = Some((file_name, bytes)),
            "kind" => kind = kind_of(&text()),
            "mapping" => {
                choice = match text().as_str() {
                    "korean" => MappingChoice::Korean,
                    "upload" => MappingChoice::Uploaded,
                    _ => MappingChoice::Waterworks,
                }
            }
            "encoding" => {
                encoding = match text().as_str() {
                    "cp949" => Some(EncodingChoice::Cp949),
                    "utf-8" => Some(EncodingChoice::Utf8),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    let Some(kind) = kind else {
        return Ok(refuse(
            &ctx,
            StatusCode::BAD_REQUEST,
            ctx.t("import.no_kind"),
        ));
    };
    let file = match file {
        Some(f) if !f.is_empty() => f,
        _ => {
            return Ok(refuse(
                &ctx,
                StatusCode::BAD_REQUEST,
                ctx.t("import.no_file"),
            ))
        }
    };
    let (mapping, mapping_name) = match choice {
        MappingChoice::Waterworks => (
            Ok(Mapping::default()),
            ctx.t("import.mapping_waterworks").to_string(),
        ),
        MappingChoice::Korean => (
            Mapping::parse(KOREAN_MAPPING, "fixtures/import/korean.toml"),
            "fixtures/import/korean.toml".to_string(),
        ),
        MappingChoice::Uploaded => match &mapping_file {
            Some((n, b)) => match std::str::from_utf8(b) {
                Ok(t) => (Mapping::parse(t, n), n.clone()),
                Err(_) => (Err(anyhow::anyhow!("{n}: not UTF-8")), n.clone()),
            },
            None => {
                return Ok(refuse(
                    &ctx,
                    StatusCode::BAD_REQUEST,
                    ctx.t("import.no_mapping_file"),
                ))
            }
        },
    };
    let mapping = match mapping {
        Ok(m) => m,
        Err(e) => {
            return Ok(refuse(
                &ctx,
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("{e:#}"),
            ))
        }
    };
    let outcome = match run(&ctx, kind, &name, &file, &mapping, encoding, true, false).await {
        Ok(o) => o,
        Err(e) => {
            return Ok(refuse(
                &ctx,
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("{e:#}"),
            ))
        }
    };
    tracing::info!(who = %ctx.session.name, kind = kind.as_str(), file = %name, rows = outcome.rows, bad = outcome.bad.len(), "import previewed");
    let id = ctx.app.uploads.put(Upload {
        owner: ctx.session.name.clone(),
        name,
        bytes: Arc::new(file),
        kind,
        mapping: Arc::new(mapping),
        mapping_name,
        encoding,
        at: Instant::now(),
        preview: outcome,
    });
    Ok(Redirect::to(&format!("/master/import/{id}")).into_response())
}

/// Reads the file and runs the import library on it.
#[allow(clippy::too_many_arguments)]
async fn run(
    ctx: &Authed,
    kind: Kind,
    name: &str,
    bytes: &[u8],
    mapping: &Mapping,
    encoding: Option<EncodingChoice>,
    dry_run: bool,
    skip_bad: bool,
) -> anyhow::Result<Outcome> {
    let table = waterworks_import::read::read_bytes(name, bytes, encoding)?;
    let opts = Options {
        kind,
        dry_run,
        skip_bad,
    };
    waterworks_import::import(table, name, mapping, opts, &services(ctx)).await
}

/// The counts and the bad rows of an outcome.
fn outcome_view(ctx: &Authed, o: &Outcome) -> Markup {
    let would = o.dry_run;
    html! {
        table id="import-counts" {
            tr { th {} th { (ctx.t(if would { "import.would_create" } else { "import.created" })) }
                 th { (ctx.t(if would { "import.would_change" } else { "import.changed" })) }
                 th { (ctx.t("import.unchanged")) } }
            tr data-service="billing" {
                td { "billing" }
                td data-count="created" { (o.billing.created) }
                td data-count="changed" { (o.billing.changed) }
                td data-count="unchanged" { (o.billing.unchanged) }
            }
            @if let Some([c, ch, u]) = o.ingest {
                tr data-service="ingest" {
                    td { "ingest" }
                    td data-count="created" { (c) }
                    td data-count="changed" { (ch) }
                    td data-count="unchanged" { (u) }
                }
            }
        }
        p id="import-rows" {
            (o.rows) " " (ctx.t("import.rows_read")) " (" (o.format) "), "
            span id="bad-count" { (o.bad_lines().len()) } " " (ctx.t("import.rows_bad"))
        }
        @if !o.bad.is_empty() {
            h2 { (ctx.t(if o.written { "import.skipped" } else { "import.bad_rows" })) }
            table id="bad-rows" {
                tr { th { (ctx.t("import.line")) } th { (ctx.t("import.column")) } th { (ctx.t("import.reason")) } }
                @for b in &o.bad {
                    tr data-line=(b.line) {
                        td { (b.line) } td { (b.column) } td { (b.reason) }
                    }
                }
            }
        }
    }
}

fn title(ctx: &Authed, u: &Upload) -> String {
    format!(
        "{}: {} ({})",
        ctx.t("import.title"),
        u.name,
        ctx.t(kind_key(u.kind))
    )
}

fn expired(ctx: &Authed) -> Response {
    refuse(ctx, StatusCode::NOT_FOUND, ctx.t("import.expired"))
}

/// `GET /master/import/{id}` (admin): the dry run's preview and the commit
/// form.
pub async fn preview(ctx: Authed, Path(id): Path<String>) -> Result<Response, PageError> {
    ctx.require(Role::Admin)?;
    let Some(u) = ctx.app.uploads.get(&id, &ctx.session.name) else {
        return Ok(expired(&ctx));
    };
    let t = title(&ctx, &u);
    let has_bad = !u.preview.bad.is_empty();
    Ok(page(
        &ctx,
        &t,
        html! {
            h1 { (t) }
            p class="muted" id="import-mapping-used" {
                (ctx.t("import.mapping")) ": " (u.mapping_name) " · " (ctx.t("import.dry_run_done"))
            }
            (outcome_view(&ctx, &u.preview))
            form class="edit" method="post" action=(format!("/master/import/{id}/commit")) id="commit-form" {
                @if has_bad {
                    label for="skip-bad" { (ctx.t("import.skip_bad")) }
                    input type="checkbox" id="skip-bad" name="skip_bad" value="1";
                }
                span {}
                button type="submit" id="commit" { (ctx.t("import.commit")) }
            }
            p { a href="/master/import" id="import-again" { (ctx.t("import.another")) } }
        },
    )
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CommitForm {
    skip_bad: Option<String>,
}

/// `POST /master/import/{id}/commit` (admin): the real import.
pub async fn commit(
    ctx: Authed,
    Path(id): Path<String>,
    Form(f): Form<CommitForm>,
) -> Result<Response, PageError> {
    ctx.require(Role::Admin)?;
    let Some(u) = ctx.app.uploads.get(&id, &ctx.session.name) else {
        return Ok(expired(&ctx));
    };
    let skip_bad = f.skip_bad.is_some_and(|v| !v.is_empty());
    let t = title(&ctx, &u);
    if !skip_bad && !u.preview.bad.is_empty() {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            page(
                &ctx,
                &t,
                html! {
                    h1 { (t) }
                    div class="problems" id="commit-refused" role="alert" { (ctx.t("import.refused_bad")) }
                    p { a href=(format!("/master/import/{id}")) { (ctx.t("import.back_to_preview")) } }
                },
            ),
        )
            .into_response());
    }
    let result = run(
        &ctx, u.kind, &u.name, &u.bytes, &u.mapping, u.encoding, false, skip_bad,
    )
    .await;
    let o = match result {
        Ok(o) => o,
        Err(e) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                page(
                    &ctx,
                    &t,
                    html! {
                        h1 { (t) }
                        div class="problems" id="commit-failed" role="alert" { (format!("{e:#}")) }
                        p { a href=(format!("/master/import/{id}")) { (ctx.t("import.back_to_preview")) } }
                    },
                ),
            )
                .into_response())
        }
    };
    if !o.written && !o.bad.is_empty() {
        // New bad rows since the preview (a concurrent change): nothing
        // written; the preview is kept to try again.
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            page(
                &ctx,
                &t,
                html! {
                    h1 { (t) }
                    div class="problems" id="commit-refused" role="alert" { (ctx.t("import.refused_bad")) }
                    (outcome_view(&ctx, &o))
                },
            ),
        )
            .into_response());
    }
    ctx.app.uploads.remove(&id);
    tracing::info!(who = %ctx.session.name, kind = u.kind.as_str(), file = %u.name,
        created = o.billing.created, changed = o.billing.changed, skipped = o.bad_lines().len(), "import committed");
    let keys: Vec<&String> = o
        .billing
        .created_keys
        .iter()
        .chain(&o.billing.changed_keys)
        .take(50)
        .collect();
    let (list_href, list_key) = match u.kind {
        Kind::Customers => ("/master/customers", "master.customers"),
        Kind::Meters => ("/master/meters", "master.meters"),
        Kind::Premises | Kind::Installations => ("/master/premises", "master.premises"),
    };
    Ok(page(
        &ctx,
        &t,
        html! {
            h1 { (t) }
            @if o.billing.created + o.billing.changed == 0 && o.ingest.is_none_or(|[c, ch, _]| c + ch == 0) {
                p class="ok" id="import-nothing" { (ctx.t("import.nothing_changed")) }
            } @else {
                p class="ok" id="import-written" { (ctx.t("import.written")) }
            }
            (outcome_view(&ctx, &o))
            @if !keys.is_empty() {
                h2 { (ctx.t("import.written_keys")) }
                ul id="written-keys" {
                    @for k in keys {
                        li {
                            @match u.kind {
                                Kind::Customers => { (customer_link(k)) }
                                Kind::Meters => { (meter_link(k)) }
                                Kind::Premises => { (premises_link(k)) }
                                Kind::Installations => { (k) }
                            }
                        }
                    }
                }
            }
            p { a href=(list_href) id="import-list-link" { (ctx.t(list_key)) " →" } }
            p { a href="/master/import" id="import-again" { (ctx.t("import.another")) } }
        },
    )
    .into_response())
}

pub static MESSAGES: &[crate::i18n::Msg] = &[
    ("import.title", "기준정보 가져오기", "Import master data"),
    (
        "import.help",
        "요금관리 시스템에서 내보낸 파일(CSV: CP949 또는 UTF-8, XLSX)을 올리면 먼저 시험 가져오기(dry run)로 결과와 잘못된 행을 보여 줍니다. 확정해야 기록됩니다.",
        "Upload a billing system's export (CSV in CP949 or UTF-8, or XLSX): a dry run shows what would change and every bad row first; nothing is written until you commit.",
    ),
    ("import.file", "파일", "File"),
    ("import.kind", "종류", "Kind"),
    ("import.mapping", "열 매핑", "Mapping"),
    ("import.mapping_waterworks", "Waterworks 양식", "Waterworks layout"),
    ("import.mapping_korean", "한국어 양식 (korean.toml)", "Korean layout (korean.toml)"),
    ("import.mapping_upload", "매핑 파일 올리기", "Upload a mapping TOML"),
    ("import.mapping_file", "매핑 파일 (TOML)", "Mapping file (TOML)"),
    ("import.encoding", "인코딩", "Encoding"),
    ("import.encoding_auto", "자동 감지", "Detect"),
    ("import.dry_run", "시험 가져오기", "Dry run"),
    (
        "import.limits",
        "파일은 64 MiB까지. 올린 파일은 확정할 때까지 서버에 15분간 보관됩니다 (최대 8개).",
        "Files up to 64 MiB. An uploaded file is kept on the server for 15 minutes until committed (at most 8 files).",
    ),
    (
        "import.too_large",
        "파일이 너무 큽니다. 최대 크기",
        "The file is too large. The limit is",
    ),
    (
        "import.mapping_too_large",
        "매핑 파일이 너무 큽니다 (최대 1 MiB).",
        "The mapping file is too large (at most 1 MiB).",
    ),
    ("import.bad_form", "양식을 읽을 수 없습니다", "The form could not be read"),
    ("import.no_kind", "종류를 고르세요.", "Choose a kind."),
    ("import.no_file", "파일을 고르세요.", "Choose a file."),
    (
        "import.no_mapping_file",
        "매핑 파일을 고르세요.",
        "Choose a mapping file.",
    ),
    (
        "import.expired",
        "올린 파일이 없거나 만료되었습니다 (15분). 다시 올리세요.",
        "That upload is gone or expired (15 minutes). Upload the file again.",
    ),
    (
        "import.dry_run_done",
        "시험 가져오기 결과입니다. 아직 아무것도 기록하지 않았습니다.",
        "Dry run: nothing has been written yet.",
    ),
    ("import.would_create", "추가 예정", "Would be created"),
    ("import.would_change", "변경 예정", "Would be changed"),
    ("import.created", "추가", "Created"),
    ("import.changed", "변경", "Changed"),
    ("import.unchanged", "변경 없음", "Unchanged"),
    ("import.rows_read", "행 읽음", "rows read"),
    ("import.rows_bad", "행 오류", "bad rows"),
    ("import.bad_rows", "잘못된 행", "Bad rows"),
    ("import.skipped", "건너뛴 행", "Skipped rows"),
    ("import.line", "행", "Line"),
    ("import.column", "열", "Column"),
    ("import.reason", "사유", "Reason"),
    (
        "import.skip_bad",
        "잘못된 행은 건너뛰고 가져오기",
        "Skip the bad rows",
    ),
    ("import.commit", "가져오기 확정", "Commit the import"),
    ("import.another", "다른 파일 가져오기", "Import another file"),
    (
        "import.refused_bad",
        "잘못된 행이 있어 아무것도 기록하지 않았습니다. 고쳐서 다시 올리거나 '잘못된 행은 건너뛰고 가져오기'를 선택하세요.",
        "There are bad rows, so nothing was written. Fix the file and upload it again, or tick \"Skip the bad rows\".",
    ),
    ("import.back_to_preview", "미리보기로", "Back to the preview"),
    ("import.written", "가져오기를 마쳤습니다.", "Imported."),
    (
        "import.nothing_changed",
        "모두 이미 있는 그대로여서 바뀐 것이 없습니다.",
        "Everything was already as in the file: nothing changed.",
    ),
    ("import.written_keys", "추가·변경된 항목", "Created and changed"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(owner: &str, age: Duration) -> Upload {
        Upload {
            owner: owner.into(),
            name: "x.csv".into(),
            bytes: Arc::new(b"a,b\n".to_vec()),
            kind: Kind::Customers,
            mapping: Arc::new(Mapping::default()),
            mapping_name: String::new(),
            encoding: None,
            at: Instant::now() - age,
            preview: Outcome::default(),
        }
    }

    #[test]
    fn uploads_are_bounded_expire_and_are_their_owners_only() {
        let store = Uploads::default();
        let first = store.put(upload("kim", Duration::from_secs(60)));
        assert_eq!(first.len(), 32, "a 128-bit id in hex");
        assert!(store.get(&first, "kim").is_some());
        assert!(
            store.get(&first, "lee").is_none(),
            "another person's upload"
        );
        let ids: Vec<String> = (0..MAX_UPLOADS)
            .map(|_| store.put(upload("kim", Duration::ZERO)))
            .collect();
        assert_eq!(store.len(), MAX_UPLOADS);
        assert!(store.get(&first, "kim").is_none(), "the oldest made room");
        assert!(ids.iter().all(|id| store.get(id, "kim").is_some()));
        let stale = store.put(upload("kim", UPLOAD_TTL + Duration::from_secs(1)));
        assert!(store.get(&stale, "kim").is_none(), "expired");
        // The stale one made room for itself (dropping the oldest), then expired.
        assert_eq!(store.len(), MAX_UPLOADS - 1);
        store.remove(&ids[1]);
        assert_eq!(store.len(), MAX_UPLOADS - 2);
    }

    #[test]
    fn the_shipped_korean_mapping_parses() {
        Mapping::parse(KOREAN_MAPPING, "korean.toml").unwrap();
    }
}
