//! The clerks' pages (clerk and admin act; a viewer reads bills and reports),
//! all over billing's `/api/v1` with the person's own token:
//!
//! - [`runs`]: billing runs: a dry-run preview (totals by usage type and
//!   component, held bills with reasons), commit in the background, progress;
//! - [`bills`]: search, a bill with its explained lines, reads and ledger
//!   entries; cancel, rebill, adjust and record a payment, each with a reason
//!   and a page of the ledger entries it made; the printable notice (고지서)
//!   and its PDF ([`notice_pdf`]);
//! - [`reports`]: receivables ageing and run summary, with CSV downloads;
//! - [`quote`]: the public tariff calculator (no sign-in).
//!
//! The notice's issuer, payment account and font come from the environment
//! ([`NoticeSettings`]).

pub mod bills;
pub mod notice_pdf;
pub mod quote;
pub mod reports;
pub mod runs;

use crate::i18n::Msg;
use crate::App;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;
use std::sync::{Arc, OnceLock};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/clerk", get(|| async { Redirect::to("/clerk/bills") }))
        .route("/clerk/runs", get(runs::page))
        .route("/clerk/runs/preview", post(runs::preview))
        .route("/clerk/runs/commit", post(runs::commit))
        .route("/clerk/runs/progress", get(runs::progress_page))
        .route("/clerk/runs/progress/frag", get(runs::progress_fragment))
        .route("/clerk/bills", get(bills::search))
        .route("/clerk/bills/{id}", get(bills::bill))
        .route("/clerk/bills/{id}/notice", get(bills::notice))
        .route("/clerk/bills/{id}/notice.pdf", get(bills::notice_pdf))
        .route("/clerk/bills/{id}/cancel", post(bills::cancel))
        .route("/clerk/bills/{id}/rebill", post(bills::rebill))
        .route("/clerk/bills/{id}/release", post(bills::release))
        .route("/clerk/bills/{id}/adjust", post(bills::adjust))
        .route("/clerk/bills/{id}/payment", post(bills::payment))
        .route("/clerk/reports", get(reports::page))
        .route("/clerk/reports/ageing.csv", get(reports::ageing_csv))
        .route("/clerk/reports/run-summary.csv", get(reports::summary_csv))
        .route("/quote", get(quote::page).post(quote::calculate))
}

/// What the printed notice needs beyond the bill: who issues it, where to
/// pay, and the Korean font of the PDF. From `CONSOLE_NOTICE_ISSUER`,
/// `CONSOLE_PAYMENT_ACCOUNT` and `CONSOLE_NOTICE_FONT` (default: Debian's
/// fonts-nanum `NanumGothic.ttf`); the font is read and checked once, at the
/// first PDF.
pub struct NoticeSettings {
    pub issuer: String,
    pub payment_account: String,
    pub font_path: String,
    font: OnceLock<Result<Arc<notice_pdf::NoticeFont>, String>>,
}

impl NoticeSettings {
    pub fn from_env() -> NoticeSettings {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        NoticeSettings {
            issuer: env("CONSOLE_NOTICE_ISSUER").unwrap_or_else(|| "상수도사업본부".into()),
            payment_account: env("CONSOLE_PAYMENT_ACCOUNT")
                .unwrap_or_else(|| "(납부계좌 미설정: CONSOLE_PAYMENT_ACCOUNT)".into()),
            font_path: env("CONSOLE_NOTICE_FONT")
                .unwrap_or_else(|| notice_pdf::DEFAULT_FONT.into()),
            font: OnceLock::new(),
        }
    }

    /// The font, or why it cannot be used (logged once).
    pub fn font(&self) -> Result<Arc<notice_pdf::NoticeFont>, String> {
        self.font
            .get_or_init(|| {
                notice_pdf::NoticeFont::load(std::path::Path::new(&self.font_path))
                    .map(Arc::new)
                    .map_err(|e| {
                        tracing::error!(path = %self.font_path, error = %e, "notice font unusable");
                        e.to_string()
                    })
            })
            .clone()
    }
}

/// The process's notice settings.
pub fn notice_settings() -> &'static NoticeSettings {
    static SETTINGS: OnceLock<NoticeSettings> = OnceLock::new();
    SETTINGS.get_or_init(NoticeSettings::from_env)
}

/// The clerks' few styles beyond the console's sheet (the CSP allows
/// inline styles, never inline scripts).
const CLERK_CSS: &str = "\
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 18px; margin: 8px 0 16px; }\
dl.facts dt { color: #556; } dl.facts dd { margin: 0; }\
table.blocks { margin: 2px 0; font-size: 90%; } table.blocks td { padding: 0 10px 0 0; border: 0; }\
td.explain { font-size: 92%; } .note { color: #665; }\
section.actions form { margin: 6px 0; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }\
section.actions b { min-width: 7em; }\
p.ok, div.ok { background: #d7f0d9; padding: 8px 12px; } p.error { background: #f8d7d6; padding: 8px 12px; }\
progress { width: 320px; height: 18px; }\
form.run-form, form#quote-form { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin: 8px 0; }\
";

/// `body` in the console's layout, with the clerks' styles.
pub(crate) fn page(ctx: &crate::web::Ctx, title: &str, body: maud::Markup) -> maud::Markup {
    ctx.page(
        title,
        maud::html! { style { (maud::PreEscaped(CLERK_CSS)) } (body) },
    )
}

/// Korean names of the tariff's usage types and bill components.
pub(crate) fn usage_type_ko(t: &str) -> &str {
    match t {
        "household" => "가정용",
        "general" => "일반용",
        "bathhouse" => "욕탕용",
        "industrial" => "산업용",
        "public" => "공공용",
        "business" => "영업용",
        other => other,
    }
}

pub static MESSAGES: &[Msg] = &[
    ("clerk.period", "기간(월)", "Period (month)"),
    ("clerk.group", "검침 그룹", "Billing group"),
    (
        "clerk.preview",
        "미리 보기 (모의 산정)",
        "Preview (dry run)",
    ),
    ("clerk.commit", "확정 (고지서 발행)", "Commit (issue bills)"),
    ("clerk.runs.recent", "최근 산정", "Recent runs"),
    ("clerk.runs.preview_title", "산정 미리 보기", "Run preview"),
    ("clerk.runs.progress_title", "산정 진행", "Run progress"),
    ("clerk.runs.started", "시작", "Started"),
    ("clerk.runs.finished", "종료", "Finished"),
    ("clerk.runs.status", "상태", "Status"),
    ("clerk.runs.accounts", "대상 고객", "Accounts"),
    ("clerk.runs.created", "발행", "Issued"),
    ("clerk.runs.existing", "기발행", "Already billed"),
    ("clerk.runs.held", "보류", "Held"),
    ("clerk.runs.estimated", "추정", "Estimated"),
    ("clerk.runs.written", "작성된 고지서", "Bills written"),
    (
        "clerk.runs.waiting",
        "산정을 시작하는 중…",
        "Starting the run…",
    ),
    (
        "clerk.runs.done",
        "산정이 완료되었습니다.",
        "The run is complete.",
    ),
    ("clerk.runs.failed", "산정 실패", "The run failed"),
    (
        "clerk.runs.busy",
        "진행 중인 산정이 너무 많습니다. 잠시 후 다시 시도하세요.",
        "Too many runs in progress; try again shortly.",
    ),
    (
        "clerk.runs.holds",
        "보류된 고지서와 사유",
        "Held bills and reasons",
    ),
    (
        "clerk.runs.by_type",
        "업종별·항목별 합계",
        "Totals by usage type and component",
    ),
    (
        "clerk.runs.see_bills",
        "이 기간의 고지서 보기",
        "See this period's bills",
    ),
    ("clerk.usage_type", "업종", "Usage type"),
    ("clerk.total", "합계", "Total"),
    ("clerk.water", "상수도요금", "Water"),
    ("clerk.sewer", "하수도요금", "Sewer"),
    ("clerk.base", "기본요금", "Base"),
    ("clerk.levy", "물이용부담금", "Levy"),
    ("clerk.reduction", "감면", "Reduction"),
    ("clerk.usage_m3", "사용량 (m³)", "Usage (m³)"),
    ("clerk.amount", "금액 (원)", "Amount (KRW)"),
    (
        "clerk.bills.search_help",
        "고지번호, 고객번호, 성명 또는 주소",
        "Bill number, account, name or address",
    ),
    (
        "clerk.bills.none",
        "찾은 고지서가 없습니다.",
        "No bills found.",
    ),
    ("clerk.bill", "고지서", "Bill"),
    ("clerk.bill_number", "고지번호", "Bill number"),
    ("clerk.account", "고객번호", "Account"),
    ("clerk.customer", "성명", "Customer"),
    ("clerk.address", "주소", "Address"),
    ("clerk.status", "상태", "Status"),
    ("clerk.status.issued", "발행", "issued"),
    ("clerk.status.held", "보류", "held"),
    ("clerk.status.cancelled", "취소", "cancelled"),
    ("clerk.tariff_version", "요금표 버전", "Tariff version"),
    (
        "clerk.lines",
        "요금 내역과 산출 근거",
        "Lines and how they were computed",
    ),
    ("clerk.blocks", "누진 구간", "Blocks"),
    ("clerk.rate", "단가", "Rate"),
    ("clerk.raw", "반올림 전", "Before rounding"),
    ("clerk.rounding", "끝수 처리", "Rounding"),
    ("clerk.proration", "일할 계산", "Proration"),
    ("clerk.reads", "계량기 지침", "Meter reads"),
    ("clerk.meter", "계량기", "Meter"),
    ("clerk.start_read", "전월 지침 (L)", "Start read (L)"),
    ("clerk.end_read", "당월 지침 (L)", "End read (L)"),
    ("clerk.read_count", "검침 수", "Reads"),
    ("clerk.entries", "원장 분개", "Ledger entries"),
    ("clerk.entry", "분개", "Entry"),
    ("clerk.source", "구분", "Source"),
    ("clerk.memo", "적요", "Memo"),
    ("clerk.by", "처리자", "By"),
    ("clerk.ledger_account", "계정", "Account"),
    ("clerk.part", "항목", "Part"),
    ("clerk.open", "미납액", "Open"),
    ("clerk.paid", "납부·조정", "Paid / adjusted"),
    ("clerk.due_on", "납기일", "Due date"),
    ("clerk.actions", "처리", "Actions"),
    ("clerk.reason", "사유", "Reason"),
    ("clerk.cancel", "고지 취소", "Cancel bill"),
    ("clerk.rebill", "재부과", "Rebill"),
    ("clerk.adjust", "조정", "Adjust"),
    ("clerk.payment", "수납 등록", "Record payment"),
    ("clerk.reference", "수납 참조번호", "Payment reference"),
    ("clerk.paid_on", "수납일", "Paid on"),
    ("clerk.result", "처리 결과", "Result"),
    (
        "clerk.result.entries",
        "이 처리로 기록된 원장 분개",
        "Ledger entries this made",
    ),
    (
        "clerk.result.no_entries",
        "이 고지서에 새 분개가 없습니다 (수납액은 오래된 고지서부터 충당됩니다).",
        "No new entries on this bill (payments settle the oldest bills first).",
    ),
    ("clerk.source.bill", "부과", "bill"),
    ("clerk.source.payment", "수납", "payment"),
    ("clerk.source.cancellation", "취소", "cancellation"),
    ("clerk.source.rebill", "재부과", "rebill"),
    ("clerk.source.adjustment", "조정", "adjustment"),
    ("clerk.source.credit", "선수금 충당", "credit"),
    ("clerk.acct.1010", "현금(수납계좌)", "Cash"),
    ("clerk.acct.1100", "미수금", "Receivables"),
    ("clerk.acct.2100", "물이용부담금 예수금", "Levy payable"),
    ("clerk.acct.2200", "선수금(과오납)", "Customer credit"),
    ("clerk.acct.4100", "상수도요금 수익", "Water revenue"),
    ("clerk.acct.4110", "기본요금 수익", "Base charge revenue"),
    ("clerk.acct.4200", "하수도요금 수익", "Sewer revenue"),
    ("clerk.acct.4800", "조정", "Adjustments"),
    ("clerk.acct.4900", "감면", "Reductions"),
    ("clerk.run_status.running", "진행 중", "running"),
    ("clerk.run_status.committed", "확정", "committed"),
    ("clerk.release", "검토 후 발행", "Release (issue)"),
    (
        "clerk.release.help",
        "보류 사유를 확인했으면 고지서를 발행합니다.",
        "Issue the bill once the hold reasons are checked.",
    ),
    ("clerk.new_bill", "새 고지서", "New bill"),
    ("clerk.notice", "고지서 인쇄", "Printable notice"),
    ("clerk.notice_pdf", "PDF 내려받기", "Download PDF"),
    ("clerk.print", "인쇄", "Print"),
    (
        "clerk.history",
        "최근 12개월 사용량",
        "Usage, last 12 months",
    ),
    ("clerk.payment_account", "납부계좌", "Pay into"),
    ("clerk.amount_due", "납부하실 금액", "Amount due"),
    ("clerk.issued_on", "발행일", "Issued on"),
    ("clerk.usage_dates", "사용기간", "Usage dates"),
    (
        "clerk.reports.ageing",
        "미수금 연령 분석",
        "Receivables ageing",
    ),
    ("clerk.reports.summary", "산정 요약", "Run summary"),
    ("clerk.reports.as_of", "기준일", "As of"),
    ("clerk.reports.csv", "CSV 내려받기", "Download CSV"),
    ("clerk.reports.current", "30일 이내", "0-30 days"),
    ("clerk.reports.d31", "31-60일", "31-60 days"),
    ("clerk.reports.d61", "61-90일", "61-90 days"),
    ("clerk.reports.d90", "90일 초과", "Over 90 days"),
    ("clerk.reports.issued", "발행", "Issued"),
    (
        "clerk.quote.title",
        "상수도 요금 계산기",
        "Water tariff calculator",
    ),
    (
        "clerk.quote.help",
        "사용량과 계량기 구경으로 한 달 요금을 계산합니다.",
        "Prices one month of water from usage and meter size.",
    ),
    (
        "clerk.quote.diameter",
        "계량기 구경 (mm)",
        "Meter diameter (mm)",
    ),
    ("clerk.quote.households", "세대수", "Households"),
    ("clerk.quote.sewer", "하수도 연결", "Connected to the sewer"),
    ("clerk.quote.calculate", "계산", "Calculate"),
];
