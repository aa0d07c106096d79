//! The operators' pages (operator and admin; a viewer sees the read-only
//! parts, never the quarantine's contents): overview, gateways, meters and
//! silent meters, alarms, a meter's page. Data comes from ingest's `/api/v1`
//! (including `/api/v1/dashboard/...`) and, for addresses, billing's account
//! search. Every answer of ingest is read as its type in
//! `waterworks_api::ingest`: a renamed field fails the console's build.

pub mod alarms;
pub mod gateways;
pub mod meters;
pub mod overview;

use crate::i18n::Msg;
use crate::App;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use waterworks_api::ingest::Alarm;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/ops", get(overview::page))
        .route("/ops/gateways", get(gateways::page))
        .route("/ops/meters", get(meters::search))
        .route("/ops/meters/silent", get(meters::silent))
        .route("/ops/meters/{id}", get(meters::meter))
        .route("/ops/meters/{id}/intervals", get(meters::intervals))
        .route("/ops/alarms", get(alarms::page))
}

/// The label of an alarm.
pub fn alarm_key(alarm: Alarm) -> &'static str {
    match alarm {
        Alarm::Leak => "alarm.leak",
        Alarm::Burst => "alarm.burst",
        Alarm::Backflow => "alarm.backflow",
        Alarm::Tamper => "alarm.tamper",
        Alarm::LowBattery => "alarm.low_battery",
        Alarm::EmptyPipe => "alarm.empty_pipe",
    }
}

pub static MESSAGES: &[Msg] = &[
    ("ops.readings_per_s", "초당 검침 수", "Readings per second"),
    ("ops.lag", "수집 지연", "Ingest lag"),
    ("ops.meters_total", "계량기", "Meters"),
    ("ops.silent_24h", "24시간 무응답", "Silent 24 h"),
    ("ops.gateways_online", "게이트웨이 연결", "Gateways online"),
    ("ops.active_alarms", "활성 경보", "Active alarms"),
    ("ops.last_hour", "최근 1시간", "Last hour"),
    ("ops.last_day", "최근 1일", "Last day"),
    ("ops.readings", "저장된 검침", "Readings stored"),
    ("ops.batches", "배치", "Batches"),
    ("ops.quarantined", "격리", "Quarantined"),
    ("ops.lag_max", "최대 지연", "Largest lag"),
    (
        "ops.quarantine_by_reason",
        "사유별 격리",
        "Quarantine by reason",
    ),
    ("ops.reason", "사유", "Reason"),
    ("ops.per_minute", "분당", "per minute"),
    ("ops.per_15min", "15분당", "per 15 minutes"),
    ("ops.gateway", "게이트웨이", "Gateway"),
    ("ops.status", "상태", "Status"),
    ("ops.online", "연결됨", "online"),
    ("ops.offline", "끊김", "offline"),
    ("ops.unknown", "알 수 없음", "unknown"),
    ("ops.status_at", "상태 시각", "Status since"),
    ("ops.last_batch", "마지막 배치", "Last batch"),
    ("ops.last_batch_seq", "배치 번호", "Batch seq"),
    ("ops.seq_gaps", "번호 누락", "Seq gaps"),
    ("ops.seq_resets", "번호 초기화", "Seq resets"),
    ("ops.meter", "계량기", "Meter"),
    ("ops.meter_id", "계량기 번호", "Meter id"),
    ("ops.profile", "기기 프로파일", "Profile"),
    ("ops.last_read", "마지막 검침", "Last reading"),
    ("ops.last_volume", "누적 사용량 (L)", "Totalizer (L)"),
    ("ops.alarms", "경보", "Alarms"),
    ("ops.since", "발생 시각", "Since"),
    ("ops.cleared", "해제 시각", "Cleared"),
    (
        "ops.search_help",
        "계량기 번호(앞부분) 또는 주소·고객명",
        "Meter id (prefix) or address / customer",
    ),
    ("ops.by_id", "계량기 번호로 찾음", "Found by meter id"),
    (
        "ops.by_address",
        "주소·고객으로 찾음 (요금 계정)",
        "Found by address / customer (billing accounts)",
    ),
    ("ops.account", "계정", "Account"),
    ("ops.customer", "고객", "Customer"),
    ("ops.address", "주소", "Address"),
    ("ops.silent", "무응답 계량기", "Silent meters"),
    (
        "ops.silent_hours",
        "시간 이상 검침 없음",
        "hours without a reading",
    ),
    ("ops.silent_total", "전체", "in all"),
    ("ops.never", "검침 없음", "never"),
    ("ops.all_alarms", "전체", "All"),
    (
        "ops.no_alarms",
        "활성 경보가 없습니다.",
        "No active alarms.",
    ),
    ("ops.no_results", "결과가 없습니다.", "Nothing found."),
    (
        "ops.consumption_15min",
        "15분 사용량 (마지막 검침까지 2일)",
        "15-minute consumption (2 days to the last reading)",
    ),
    (
        "ops.consumption_daily",
        "일 사용량 (마지막 검침까지 31일)",
        "Daily consumption (31 days to the last reading)",
    ),
    ("ops.litres", "리터", "litres"),
    (
        "ops.quarantined_readings",
        "격리된 검침",
        "Quarantined readings",
    ),
    ("ops.detail", "내용", "Detail"),
    ("ops.received", "수신 시각", "Received"),
    ("ops.reading_ts", "검침 시각", "Reading time"),
    (
        "ops.quarantine_operator_only",
        "격리 내용은 운영자만 볼 수 있습니다.",
        "Only operators see quarantined readings.",
    ),
    ("ops.day", "일자", "Day"),
    ("ops.quality", "품질", "Quality"),
    ("ops.reads", "검침 수", "Reads"),
    ("ops.hours", "시간", "hours"),
    ("alarm.leak", "누수", "leak"),
    ("alarm.burst", "파열", "burst"),
    ("alarm.backflow", "역류", "backflow"),
    ("alarm.tamper", "조작 의심", "tamper"),
    ("alarm.low_battery", "배터리 부족", "low battery"),
    ("alarm.empty_pipe", "빈 관", "empty pipe"),
];
