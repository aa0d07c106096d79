//! Korean first, English second. One message table: each area keeps its
//! rows (`key`, Korean, English) beside its pages ([`COMMON`] here,
//! `ops::MESSAGES`, `clerk::MESSAGES`, `master::MESSAGES`) and [`TABLES`] lists them all.
//!
//! The language comes from the `ww_lang` cookie (the switch in the header),
//! else from the browser's `Accept-Language`, else Korean.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The language cookie's name.
pub const LANG_COOKIE: &str = "ww_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ko,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ko" => Some(Lang::Ko),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language to answer in: the cookie's choice, else the first of
    /// Korean or English in `Accept-Language` by quality, else Korean.
    pub fn choose(cookie: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(l) = cookie.and_then(Lang::parse) {
            return l;
        }
        let Some(header) = accept_language else {
            return Lang::Ko;
        };
        let mut best: Option<(f32, usize, Lang)> = None;
        for (i, part) in header.split(',').enumerate().take(32) {
            let mut fields = part.split(';');
            let tag = fields.next().unwrap_or("").trim().to_ascii_lowercase();
            let primary = tag.split('-').next().unwrap_or("");
            let Some(lang) = Lang::parse(primary) else {
                continue;
            };
            let q = fields
                .find_map(|f| f.trim().strip_prefix("q=").and_then(|v| v.parse().ok()))
                .unwrap_or(1.0f32);
            if q <= 0.0 {
                continue;
            }
            // Higher quality wins; on a tie the one listed first.
            if best.is_none_or(|(bq, _, _)| q > bq) {
                best = Some((q, i, lang));
            }
        }
        best.map(|(_, _, l)| l).unwrap_or(Lang::Ko)
    }
}

/// One row of the table: key, Korean, English.
pub type Msg = (&'static str, &'static str, &'static str);

/// Every area's rows. Keys must be unique across them (a test checks).
pub static TABLES: &[&[Msg]] = &[
    COMMON,
    crate::ops::MESSAGES,
    crate::clerk::MESSAGES,
    crate::master::MESSAGES,
    crate::master::import::MESSAGES,
    crate::master::check::MESSAGES,
    crate::sso::MESSAGES,
];

fn index() -> &'static HashMap<&'static str, (&'static str, &'static str)> {
    static INDEX: OnceLock<HashMap<&'static str, (&'static str, &'static str)>> = OnceLock::new();
    INDEX.get_or_init(|| {
        TABLES
            .iter()
            .flat_map(|t| t.iter())
            .map(|(k, ko, en)| (*k, (*ko, *en)))
            .collect()
    })
}

/// The message `key` in `lang`; an unknown key shows as itself (and a test
/// over the pages would show it), never a panic.
pub fn t(lang: Lang, key: &'static str) -> &'static str {
    match index().get(key) {
        Some((ko, en)) => match lang {
            Lang::Ko => ko,
            Lang::En => en,
        },
        None => {
            tracing::warn!(key, "missing message");
            key
        }
    }
}

pub static COMMON: &[Msg] = &[
    ("app.title", "상수도 관리 콘솔", "Waterworks console"),
    ("nav.ops", "운영", "Operations"),
    ("nav.clerk", "요금", "Billing"),
    ("nav.overview", "현황", "Overview"),
    ("nav.gateways", "게이트웨이", "Gateways"),
    ("nav.meters", "계량기", "Meters"),
    ("nav.alarms", "경보", "Alarms"),
    ("nav.runs", "요금 산정", "Billing runs"),
    ("nav.bills", "고지서", "Bills"),
    ("nav.reports", "보고서", "Reports"),
    ("nav.quote", "요금 계산기", "Tariff calculator"),
    ("nav.master", "기준정보", "Master data"),
    ("nav.master_premises", "수용가", "Premises"),
    ("nav.master_customers", "고객", "Customers"),
    ("nav.master_meters", "계량기 대장", "Meter register"),
    ("nav.master_import", "가져오기", "Import"),
    ("nav.master_check", "점검", "Check"),
    ("login.title", "로그인", "Sign in"),
    (
        "login.help",
        "발급받은 접근 토큰을 입력하세요.",
        "Enter the access token you were issued.",
    ),
    ("login.token", "접근 토큰", "Access token"),
    ("login.submit", "로그인", "Sign in"),
    (
        "login.bad_token",
        "토큰을 확인할 수 없습니다.",
        "The token was not recognised.",
    ),
    (
        "login.role_mismatch",
        "서비스마다 이 토큰의 역할이 다릅니다. 관리자에게 문의하세요.",
        "The services disagree on this token's role; ask an administrator.",
    ),
    ("logout", "로그아웃", "Sign out"),
    ("role", "역할", "Role"),
    ("role.viewer", "조회자", "viewer"),
    ("role.clerk", "요금 담당", "clerk"),
    ("role.operator", "운영자", "operator"),
    ("role.admin", "관리자", "admin"),
    ("error.forbidden.title", "권한이 없습니다", "Not allowed"),
    (
        "error.forbidden.body",
        "현재 역할로는 이 작업을 할 수 없습니다.",
        "Your role does not allow this.",
    ),
    ("error.not_found.title", "찾을 수 없습니다", "Not found"),
    (
        "error.bad_request.title",
        "요청을 처리할 수 없습니다",
        "Request refused",
    ),
    (
        "error.conflict.title",
        "처리할 수 없는 상태입니다",
        "Conflict",
    ),
    (
        "error.backend.title",
        "서비스에 연결할 수 없습니다",
        "A service is unavailable",
    ),
    (
        "error.backend.body",
        "잠시 후 다시 시도하세요.",
        "Please try again in a moment.",
    ),
    (
        "error.csrf",
        "다른 출처에서 보낸 요청은 받지 않습니다.",
        "Requests from another origin are refused.",
    ),
    ("back", "돌아가기", "Back"),
    ("search", "검색", "Search"),
    ("none", "없음", "none"),
    ("yes", "예", "yes"),
    ("no", "아니요", "no"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_choice() {
        assert_eq!(Lang::choose(None, None), Lang::Ko);
        assert_eq!(Lang::choose(Some("en"), Some("ko")), Lang::En);
        assert_eq!(Lang::choose(Some("xx"), Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(
            Lang::choose(None, Some("de-DE,en;q=0.5,ko;q=0.8")),
            Lang::Ko
        );
        assert_eq!(Lang::choose(None, Some("fr")), Lang::Ko);
        assert_eq!(Lang::choose(None, Some("en;q=0,ko;q=0.1")), Lang::Ko);
    }

    #[test]
    fn keys_are_unique_and_translated() {
        let mut seen = std::collections::HashSet::new();
        for (k, ko, en) in TABLES.iter().flat_map(|t| t.iter()) {
            assert!(seen.insert(*k), "duplicate message key {k}");
            assert!(!ko.is_empty() && !en.is_empty(), "empty message {k}");
        }
        assert_eq!(t(Lang::En, "nav.meters"), "Meters");
        assert_eq!(t(Lang::Ko, "nav.meters"), "계량기");
        assert_eq!(t(Lang::Ko, "no.such.key"), "no.such.key");
    }
}
