//! The page frame (header, nav by role, language switch), the error page,
//! and small view helpers every area shares: charts, numbers, times.
//! Everything goes through maud, which escapes every interpolated value.

use crate::web::{Ctx, PageError};
use chrono::{DateTime, FixedOffset, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;
use waterworks_service::auth::Role;

/// Versioned asset paths (cached for a year: a new version is a new path).
pub const HTMX_JS: &str = "/assets/htmx-2.0.11.min.js";
pub const UPLOT_JS: &str = "/assets/uPlot-1.6.32.iife.min.js";
pub const UPLOT_CSS: &str = "/assets/uPlot-1.6.32.min.css";
pub const CONSOLE_JS: &str = concat!("/assets/console-", env!("CARGO_PKG_VERSION"), ".js");
pub const CONSOLE_CSS: &str = concat!("/assets/console-", env!("CARGO_PKG_VERSION"), ".css");

struct NavItem {
    href: &'static str,
    key: &'static str,
    /// Shown only to roles allowing this.
    role: Role,
}

const OPS_NAV: &[NavItem] = &[
    NavItem {
        href: "/ops",
        key: "nav.overview",
        role: Role::Viewer,
    },
    NavItem {
        href: "/ops/gateways",
        key: "nav.gateways",
        role: Role::Viewer,
    },
    NavItem {
        href: "/ops/meters",
        key: "nav.meters",
        role: Role::Viewer,
    },
    NavItem {
        href: "/ops/alarms",
        key: "nav.alarms",
        role: Role::Viewer,
    },
];

const CLERK_NAV: &[NavItem] = &[
    NavItem {
        href: "/clerk/runs",
        key: "nav.runs",
        role: Role::Clerk,
    },
    NavItem {
        href: "/clerk/bills",
        key: "nav.bills",
        role: Role::Viewer,
    },
    NavItem {
        href: "/clerk/reports",
        key: "nav.reports",
        role: Role::Viewer,
    },
    NavItem {
        href: "/quote",
        key: "nav.quote",
        role: Role::Viewer,
    },
];

const MASTER_NAV: &[NavItem] = &[
    NavItem {
        href: "/master/premises",
        key: "nav.master_premises",
        role: Role::Viewer,
    },
    NavItem {
        href: "/master/customers",
        key: "nav.master_customers",
        role: Role::Viewer,
    },
    NavItem {
        href: "/master/meters",
        key: "nav.master_meters",
        role: Role::Viewer,
    },
    NavItem {
        href: "/master/import",
        key: "nav.master_import",
        role: Role::Admin,
    },
    NavItem {
        href: "/master/check",
        key: "nav.master_check",
        role: Role::Operator,
    },
];

fn role_key(role: Role) -> &'static str {
    match role {
        Role::Viewer => "role.viewer",
        Role::Clerk => "role.clerk",
        Role::Operator => "role.operator",
        Role::Admin => "role.admin",
    }
}

/// The whole HTML document around `body`.
pub fn page(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let other = match ctx.lang {
        crate::i18n::Lang::Ko => ("en", "English"),
        crate::i18n::Lang::En => ("ko", "한국어"),
    };
    let switch = format!(
        "/lang/{}{}",
        other.0,
        crate::backend::query(&[("next", Some(ctx.path.clone()))])
    );
    let nav = |items: &'static [NavItem]| {
        html! {
            @for item in items {
                @if ctx.session.as_ref().is_some_and(|s| s.role.allows(item.role)) {
                    a href=(item.href) class=[is_current(&ctx.path, item.href).then_some("current")] { (ctx.t(item.key)) }
                }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (ctx.t("app.title")) }
                link rel="stylesheet" href=(UPLOT_CSS);
                link rel="stylesheet" href=(CONSOLE_CSS);
                script src=(HTMX_JS) defer {}
                script src=(UPLOT_JS) defer {}
                script src=(CONSOLE_JS) defer {}
            }
            body {
                header class="top" {
                    a class="brand" href="/" { (ctx.t("app.title")) }
                    @if let Some(s) = &ctx.session {
                        nav {
                            span class="section" { (ctx.t("nav.ops")) }
                            (nav(OPS_NAV))
                            span class="section" { (ctx.t("nav.clerk")) }
                            (nav(CLERK_NAV))
                            span class="section" { (ctx.t("nav.master")) }
                            (nav(MASTER_NAV))
                        }
                        span class="who" {
                            (s.name) " · " span class="role" data-role=(s.role.as_str()) { (ctx.t(role_key(s.role))) }
                        }
                        form method="post" action="/logout" class="inline" {
                            button type="submit" id="logout" { (ctx.t("logout")) }
                        }
                    }
                    a class="lang" id="lang-switch" href=(switch) { (other.1) }
                }
                main { (body) }
            }
        }
    }
}

fn is_current(path: &str, href: &str) -> bool {
    let p = path.split('?').next().unwrap_or(path);
    if href == "/ops" {
        p == "/ops"
    } else {
        p == href || p.starts_with(&format!("{href}/"))
    }
}

/// The page shown for a [`PageError`] (refusals, missing things, outages).
pub fn error_page(ctx: &Ctx, err: &PageError) -> Markup {
    let (title, detail): (&str, Option<String>) = match err {
        PageError::Forbidden(m) => (
            ctx.t("error.forbidden.title"),
            Some(
                m.clone()
                    .unwrap_or_else(|| ctx.t("error.forbidden.body").into()),
            ),
        ),
        PageError::NotFound(m) => (ctx.t("error.not_found.title"), Some(m.clone())),
        PageError::BadRequest(m) => (ctx.t("error.bad_request.title"), Some(m.clone())),
        PageError::Conflict(m) => (ctx.t("error.conflict.title"), Some(m.clone())),
        PageError::Unavailable(service) => (
            ctx.t("error.backend.title"),
            Some(format!("{service}: {}", ctx.t("error.backend.body"))),
        ),
        PageError::SignedOut => (ctx.t("login.title"), None),
    };
    let kind = match err {
        PageError::Forbidden(_) => "forbidden",
        PageError::NotFound(_) => "not-found",
        PageError::BadRequest(_) => "bad-request",
        PageError::Conflict(_) => "conflict",
        PageError::Unavailable(_) => "unavailable",
        PageError::SignedOut => "signed-out",
    };
    page(
        ctx,
        title,
        html! {
            section class="error" id="error" data-error=(kind) {
                h1 { (title) }
                @if let Some(d) = detail { p { (d) } }
                p { a href="/" { (ctx.t("back")) } }
            }
        },
    )
}

/// One series of a [`Chart`].
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub label: String,
    /// One value per x; `None` is a gap.
    pub values: Vec<Option<f64>>,
}

/// A uPlot chart drawn by `console.js` from a `data-chart` attribute (JSON),
/// so no inline script is needed (the CSP allows none).
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub id: String,
    pub title: String,
    /// Unix seconds (time axis) of each point.
    pub x: Vec<i64>,
    pub series: Vec<Series>,
    /// Bars instead of lines.
    pub bars: bool,
    /// Unit label of the y axis.
    pub unit: String,
}

impl Chart {
    pub fn render(&self) -> Markup {
        let spec = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        html! {
            figure class="chart" id=(self.id) data-chart=(spec) data-points=(self.x.len()) {
                figcaption { (self.title) }
            }
        }
    }
}

/// Korea Standard Time (no daylight saving).
pub fn kst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset")
}

/// `2026-11-25 19:24` in KST.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.with_timezone(&kst()).format("%Y-%m-%d %H:%M").to_string()
}

/// An optional time, or "—".
pub fn ts_opt(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(ts).unwrap_or_else(|| "—".into())
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Trusted static markup (only for constant strings written in this crate).
pub fn raw(s: &'static str) -> PreEscaped<&'static str> {
    PreEscaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        let t = DateTime::parse_from_rfc3339("2026-10-01T15:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ts(&t), "2026-10-02 00:30");
        assert!(is_current("/ops/meters/x?y", "/ops/meters"));
        assert!(!is_current("/ops/meters", "/ops"));
    }

    #[test]
    fn chart_spec_is_escaped_in_the_attribute() {
        let c = Chart {
            id: "c".into(),
            title: "<b>".into(),
            x: vec![1],
            series: vec![Series {
                label: "\"'<".into(),
                values: vec![Some(1.0)],
            }],
            bars: false,
            unit: "L".into(),
        };
        let html = c.render().into_string();
        assert!(!html.contains("<b>"));
        assert!(html.contains("&quot;"));
    }
}
